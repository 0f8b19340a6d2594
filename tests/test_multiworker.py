"""Two MultiWorkerMirroredStrategy workers on localhost train the same tiny model as one process.

Each worker is a `shortdiff train --strategy multiworker` process with its own TF_CONFIG (free
127.0.0.1 ports); both are killed if the test fails or overruns.
"""
import json
import os
import random
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from shortdiff_tf import checkpoints
from shortdiff_tf.app.runs import load_run

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

TRAIN = ["train", "--dataset", "gmm2d", "--T", "0.5", "--steps", "4", "--batch-size", "32", "--width", "16",
         "--log-every", "1", "--checkpoint-every", "2", "--no-progress", "--sample-grid", "0", "--json"]
TIMEOUT = 300


def free_ports(n):
    """n ports free now, below the kernel's ephemeral range: a port the kernel hands out (port 0)
    can be handed to another process's outgoing connection between this test closing it and the
    worker binding it, and then the workers never meet."""
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0]) if os.path.exists(
        "/proc/sys/net/ipv4/ip_local_port_range") else 32768
    ports, rng = [], random.Random(os.getpid() ^ time.time_ns())
    while len(ports) < n:
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


def shortdiff(*args, env=None):
    code = "import sys; from cli.main import cli; sys.exit(cli())"
    return [sys.executable, "-c", code, *map(str, args)], {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def start_workers(workdir, args, n=2):
    """n worker processes; their output goes to files beside the run (a pipe nobody reads while
    the test waits would fill and stop a worker, and with it every worker in the collective)."""
    hosts = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
        cmd, env = shortdiff(*args, "--strategy", "multiworker", "--workdir", workdir, env={"TF_CONFIG": tf_config})
        logs = [open(f"{workdir}.worker{i}.{name}", "w+") for name in ("out", "err")]
        procs.append((subprocess.Popen(cmd, env=env, stdout=logs[0], stderr=logs[1], text=True), logs))
    return procs


def finish_workers(procs):
    """Wait for the workers (all killed if one overruns TIMEOUT); -> [(returncode, stdout, stderr)]."""
    deadline, outs = time.time() + TIMEOUT, []
    try:
        for p, _ in procs:
            p.wait(timeout=max(1.0, deadline - time.time()))
    finally:
        for p, logs in procs:
            p.kill()
            p.wait()
            outs.append((p.returncode, *(f.seek(0) or f.read() for f in logs)))
            for f in logs:
                f.close()
    return outs


def run_workers(workdir, n=2):
    outs = finish_workers(start_workers(workdir, TRAIN, n))
    for code, _, err in outs:
        assert code == 0, err[-3000:]
    return [last_json(out) for _, out, _ in outs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("mw")
    workers = run_workers(root / "multi")
    cmd, env = shortdiff(*TRAIN, "--strategy", "default", "--workdir", root / "single")
    single = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert single.returncode == 0, single.stderr[-3000:]
    return root, workers, last_json(single.stdout)


def test_two_workers_hold_identical_weights_and_match_one_process(runs):
    """Same global batch per step: the loss agrees with one process within 1e-5 relative, and
    the weights (and their EMA, in the chief's checkpoint) within 1e-5 absolute."""
    root, (w0, w1), single = runs
    assert w0["chief"] and not w1["chief"]
    assert w0["weights_digest"] == w1["weights_digest"]
    assert w0["step"] == w1["step"] == single["step"] == 4
    assert w0["loss"] == pytest.approx(single["loss"], rel=1e-5) and w1["loss"] == w0["loss"]
    multi, one = load_run(root / "multi"), load_run(root / "single")
    for a, b in zip(multi.net.variables, one.net.variables):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_only_the_chief_writes_the_run_directory(runs):
    root, (w0, w1), _ = runs
    assert w1["run_dir"] == w0["run_dir"] == str(root / "multi")
    ckpts = sorted(p.name for p in (root / "multi" / "checkpoints").glob("ckpt-*.index"))
    assert ckpts == ["ckpt-2.index", "ckpt-4.index"]
    rows = [json.loads(line) for line in (root / "multi" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]                    # one writer, not two


def test_workers_resume_from_the_chiefs_checkpoint_and_stop_together_on_sigterm(runs):
    """Both workers restarted with a larger budget continue from step 4 (the chief's checkpoint);
    SIGTERM to the chief alone stops both at the same step (they agree at a log step): the chief
    saves that step, the other worker says the chief saved it, both exit with status 75."""
    import signal
    root, _, _ = runs
    args = [a if a != "4" else "100000" for a in TRAIN[:-1]]                 # no --json
    procs = start_workers(root / "multi", args)
    metrics, start, failed = root / "multi" / "metrics.jsonl", time.time(), None
    try:
        while len(metrics.read_text().splitlines()) < 10:
            codes = [p.poll() for p, _ in procs]
            if time.time() - start >= TIMEOUT or any(c is not None for c in codes):
                failed = f"the workers did not reach step 10: exit codes {codes}"
                break
            time.sleep(0.05)
        if failed is None:
            procs[0][0].send_signal(signal.SIGTERM)
    finally:
        if failed is not None:                  # a worker that died leaves the other waiting: end it at once,
            for p, _ in procs:                  # so that the failure below shows both workers' stderr
                p.kill()
        outs = finish_workers(procs)
    assert failed is None, (failed, [err[-2000:] for _, _, err in outs])
    assert [code for code, _, _ in outs] == [75, 75], [err[-2000:] for _, _, err in outs]
    outs = [(out, err) for _, out, err in outs]
    assert "from step 4 to 100000" in outs[0][0]
    step = int(checkpoints.latest(root / "multi").rsplit("-", 1)[1])
    assert f"saved ckpt-{step} (step {step})" in outs[0][1] and f"the chief saved the checkpoint of step {step}" in outs[1][1]
    rows = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert rows == list(range(1, step + 1))


def test_multiworker_without_tf_config_is_a_one_line_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    cmd, _ = shortdiff(*TRAIN, "--strategy", "multiworker", "--workdir", tmp_path / "x")
    r = subprocess.run(cmd, env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"}, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode != 0 and "needs TF_CONFIG" in r.stderr + r.stdout and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()
