"""Two MultiWorkerMirroredStrategy workers on localhost train the same tiny model as one process.

Each worker is a `shortdiff train --strategy multiworker` process with its own TF_CONFIG (free
127.0.0.1 ports); both are killed if the test fails or overruns.
"""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from shortdiff_tf import checkpoints
from shortdiff_tf.app.runs import load_run

TRAIN = ["train", "--dataset", "gmm2d", "--T", "0.5", "--steps", "4", "--batch-size", "32", "--width", "16",
         "--log-every", "1", "--checkpoint-every", "2", "--no-progress", "--sample-grid", "0", "--json"]
TIMEOUT = 300


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def shortdiff(*args, env=None):
    code = "import sys; from cli.main import cli; sys.exit(cli())"
    return [sys.executable, "-c", code, *map(str, args)], {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}


def last_json(text):
    return json.loads(text.strip().splitlines()[-1])


def run_workers(workdir, n=2):
    hosts = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    try:
        for i in range(n):
            tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            cmd, env = shortdiff(*TRAIN, "--strategy", "multiworker", "--workdir", workdir, env={"TF_CONFIG": tf_config})
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    return [last_json(out) for out, _ in outs]


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
    import time
    root, _, _ = runs
    hosts = [f"127.0.0.1:{p}" for p in free_ports(2)]
    args = [a if a != "4" else "100000" for a in TRAIN[:-1]]                 # no --json
    procs = []
    try:
        for i in range(2):
            tf_config = json.dumps({"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}})
            cmd, env = shortdiff(*args, "--strategy", "multiworker", "--workdir", root / "multi",
                                 env={"TF_CONFIG": tf_config})
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        metrics = root / "multi" / "metrics.jsonl"
        start = time.time()
        while time.time() - start < TIMEOUT and len(metrics.read_text().splitlines()) < 10:
            time.sleep(0.05)
        procs[0].send_signal(signal.SIGTERM)
        outs = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert [p.returncode for p in procs] == [75, 75], [err[-2000:] for _, err in outs]
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
