"""Fault injection: `kill -9` of train and fit-prior in real processes, and the states a kill during
a checkpoint write leaves, then a rerun: the weights of an uninterrupted run and one metrics row
per logged step."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import checkpoints

TRAIN = ["train", "--T", "0.4", "--steps", "10", "--batch-size", "8", "--ch", "8", "--log-every", "1",
         "--checkpoint-every", "1", "--no-progress", "--sample-grid", "0"]
# resume does not depend on the network: an MLP, with enough (fast) steps to be killed in the middle
TOY_STEPS = 30
TOY_TRAIN = [*TRAIN[:3], "--steps", str(TOY_STEPS), *TRAIN[5:], "--dataset", "gmm2d", "--width", "16"]
FIT = ["fit-prior", "--steps", "10", "--glow-steps", "1", "--glow-hidden", "8", "--batch-size", "16",
       "--checkpoint-every", "1", "--no-progress"]


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return r


def newest_step(checkpoint_dir) -> int:
    return max((int(p.name[5:-6]) for p in checkpoint_dir.glob("ckpt-*.index")), default=0)


def kill_after(args, checkpoint_dir, at_step: int, timeout: float = 120):
    """Run `shortdiff ARGS` in a process and SIGKILL it once a checkpoint of ``at_step`` exists."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}      # a user's default
    proc = subprocess.Popen([sys.executable, "-c", "from cli.main import cli; cli()", *map(str, args)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    start = time.time()
    while time.time() - start < timeout and proc.poll() is None:
        if newest_step(checkpoint_dir) >= at_step:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the process ended before it could be killed"
    return proc.stderr.read().decode()


def weights(prefix: str) -> dict:
    import tensorflow as tf
    reader = tf.train.load_checkpoint(prefix)
    values = {n: np.asarray(reader.get_tensor(n)) for n, _ in tf.train.list_variables(prefix)}
    return {n: v for n, v in values.items() if np.issubdtype(v.dtype, np.number) and "save_counter" not in n}


def assert_same_weights(a: str, b: str):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        np.testing.assert_allclose(wa[name], wb[name], rtol=1e-5, atol=1e-6, err_msg=name)


def rows(path):
    return [json.loads(line)["step"] for line in path.read_text().splitlines()]


def test_kill_9_of_train_and_of_a_checkpoint_write_resume_to_the_uninterrupted_weights(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    invoke(*TOY_TRAIN, "--workdir", full)
    stderr = kill_after([*TOY_TRAIN, "--workdir", cut], cut / "checkpoints", at_step=3)
    assert "oneDNN" not in stderr and "cuInit" not in stderr          # quiet start-up by default
    ckpts = cut / "checkpoints"
    newest = checkpoints.complete(ckpts)[-1][0]
    # the states a kill inside the next checkpoint write leaves: its data without an index, a
    # _temp folder, and an index entry that is not there yet
    (ckpts / f"ckpt-{newest + 1}_temp").mkdir()
    shutil.copy(ckpts / f"ckpt-{newest}.data-00000-of-00001", ckpts / f"ckpt-{newest + 1}.data-00000-of-00001")
    with open(cut / "metrics.jsonl", "a") as f:
        f.write('{"step": 99, "lo')                                       # a row cut by the kill
    r = invoke(*TOY_TRAIN, "--workdir", cut)
    assert f"from step {newest} to {TOY_STEPS}" in r.output
    assert_same_weights(checkpoints.latest(full), checkpoints.latest(cut))
    assert rows(cut / "metrics.jsonl") == list(range(1, TOY_STEPS + 1))
    assert not list(ckpts.glob("*_temp*"))


def test_kill_9_of_fit_prior_resumes_to_the_uninterrupted_fit(glow_run, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    for d in (full, cut):                                   # the suite's digits run, without its prior
        shutil.copytree(glow_run[0], d, ignore=shutil.ignore_patterns("prior", "evaluations"))
    invoke(*FIT, "--workdir", full)
    kill_after([*FIT, "--workdir", cut], cut / "prior" / "checkpoints", at_step=3)
    done = checkpoints.complete(cut / "prior" / "checkpoints")[-1][0]
    assert 0 < done < 10
    r = invoke(*FIT, "--workdir", cut)
    assert f"steps {done} to 10" in r.output and "fitted to step 10" in r.output
    assert_same_weights(checkpoints.latest(full / "prior"), checkpoints.latest(cut / "prior"))
    logged = rows(cut / "prior" / "metrics.jsonl")
    assert logged == sorted(set(logged)) and logged[-1] == 10
