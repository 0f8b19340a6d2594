"""Run safety: damaged checkpoints are recovered or refused (never a silent restart), nothing
non-finite is written, one writer per run, logs without duplicate rows, bad input as one line."""
import json
import re
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import checkpoints, files
from shortdiff_tf.runlock import RunLock, RunLockedError

TINY = ["--T", "0.4", "--batch-size", "8", "--ch", "8", "--log-every", "2", "--checkpoint-every", "2",
        "--no-progress", "--sample-grid", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def steps_logged(run):
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def run6(tmp_path_factory):
    """A tiny digits run trained to step 6 with checkpoints at 4 and 6."""
    run = tmp_path_factory.mktemp("safety") / "run"
    r = invoke("train", *TINY, "--steps", "6", "--workdir", run)
    assert r.exit_code == 0, r.output
    return run


def copy(run, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(run, dst)
    return dst


@pytest.mark.parametrize("damage", ["garbled", "missing", "dangling", "behind"])
def test_a_damaged_index_is_rebuilt_from_the_checkpoint_files(run6, tmp_path, damage):
    """garbled, missing, or naming a checkpoint that is not there; "behind": a kill between writing
    ckpt-6 and its index entry leaves the index at ckpt-4.  Either way the newest complete
    checkpoint is found, the index rewritten for the manager, and _temp leftovers removed."""
    ckpts = copy(run6, tmp_path) / "checkpoints"
    index = ckpts / "checkpoint"
    if damage == "garbled":
        index.write_text("junk")
    elif damage == "missing":
        index.unlink()
    elif damage == "dangling":
        index.write_text('model_checkpoint_path: "ckpt-99"\n')
    else:
        checkpoints.write_index(ckpts, [str(ckpts / "ckpt-4")])
    (ckpts / "ckpt-8_temp").mkdir()                                  # a write killed half-way
    said = []
    assert checkpoints.recover(ckpts, said.append) == str(ckpts / "ckpt-6")
    assert "recovered checkpoint ckpt-6" in said[0] and not list(ckpts.glob("*_temp*"))
    import tensorflow as tf
    state = tf.train.get_checkpoint_state(str(ckpts))
    assert state.model_checkpoint_path.endswith("ckpt-6")
    assert [p.rsplit("/", 1)[-1] for p in state.all_model_checkpoint_paths] == ["ckpt-4", "ckpt-6"]


def test_train_resumes_through_a_garbled_index(run6, tmp_path):
    run = copy(run6, tmp_path)
    (run / "checkpoints" / "checkpoint").write_text("junk")
    r = invoke("train", "--workdir", run, "--steps", "8", "--no-progress")
    assert r.exit_code == 0, r.output
    assert "recovered checkpoint ckpt-6" in r.output and "from step 6 to 8" in r.output
    assert steps_logged(run) == [2, 4, 6, 8]


def test_incomplete_checkpoints_are_refused_not_restarted_from_step_0(run6, tmp_path):
    run = copy(run6, tmp_path)
    for f in (run / "checkpoints").glob("*.index"):
        f.unlink()
    r = invoke("train", "--workdir", run, "--steps", "8", "--no-progress")
    assert r.exit_code == 1 and "no complete checkpoint" in r.output and "Traceback" not in r.output
    assert steps_logged(run) == [2, 4, 6]


def test_checkpoints_without_config_are_refused(run6, tmp_path):
    run = copy(run6, tmp_path)
    (run / "config.json").unlink()
    r = invoke("train", "--workdir", run, "--T", "0.5", "--steps", "8")
    assert r.exit_code == 1 and "holds checkpoints but no config.json" in r.output


def test_non_finite_loss_keeps_the_newest_finite_checkpoint_and_resumes_with_a_lower_lr(run6, tmp_path):
    run = copy(run6, tmp_path)
    r = invoke("train", "--workdir", run, "--steps", "12", "--lr", "1e30", "--no-progress")
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert re.search(r"nothing from step \d+ on was kept", r.output) and "ckpt-6 (step 6)" in r.output
    assert "--lr" in r.output
    import tensorflow as tf
    for _, prefix in checkpoints.complete(run / "checkpoints"):
        reader = tf.train.load_checkpoint(prefix)
        for name, _ in tf.train.list_variables(prefix):
            value = reader.get_tensor(name)
            if np.issubdtype(np.asarray(value).dtype, np.floating):
                assert np.all(np.isfinite(value)), (prefix, name)
    r = invoke("train", "--workdir", run, "--steps", "10", "--lr", "1e-4", "--no-progress", "--json")
    assert r.exit_code == 0 and "from step 6 to 10" in r.output, r.output
    assert json.loads((run / "config.json").read_text())["train"]["lr"] == 1e-4
    assert steps_logged(run) == [2, 4, 6, 8, 10]


def test_metrics_are_cut_back_to_the_restored_step_and_a_cut_line_is_dropped(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 2}\n{"step": 4}\n{"step": 6}\n{"step": 8, "lo')
    assert files.truncate_jsonl(path, 4) == 2
    assert path.read_text() == '{"step": 2}\n{"step": 4}\n'


HOLD = """
import sys, time
from shortdiff_tf.runlock import RunLock
with RunLock(sys.argv[1], "shortdiff train"):
    print("held", flush=True)
    time.sleep(120)
"""


def hold(path):
    """A process that holds the lock at ``path`` (started, and holding, on return)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_is_refused_with_the_holders_name_and_a_killed_holder_releases(run6, tmp_path):
    """A live holder's lock refuses train in one line naming it (before TensorFlow starts); once the
    holder is killed with SIGKILL the kernel has released its flock and the lock is taken at once."""
    holder = hold(run6 / ".lock")
    try:
        r = invoke("train", "--workdir", run6, "--steps", "8", "--no-progress")
        assert r.exit_code == 1 and f"in use by `shortdiff train` (pid {holder.pid}" in r.output
        assert steps_logged(run6) == [2, 4, 6]
    finally:
        holder.kill()
        holder.wait()
    with RunLock(run6 / ".lock", "test") as lock:          # no PID judged: the kernel released it
        assert lock.holder()["pid"] == os.getpid()
        with pytest.raises(RunLockedError, match="in use by `test`"):
            RunLock(run6 / ".lock", "other").acquire()
    assert RunLock(run6 / ".lock", "x").holder() == {}      # released: no holder described


def test_fit_prior_refuses_a_damaged_prior_config_in_one_line(run6, tmp_path):
    run = copy(run6, tmp_path)
    r = invoke("fit-prior", "--workdir", run, "--prior", "gaussian", "--fit-samples", "100")
    assert r.exit_code == 0, r.output
    cfg = run / "prior" / "config.json"
    good = cfg.read_text()
    cfg.write_text(json.dumps({**json.loads(good), "bogus": 1}))
    r = invoke("sample", "--workdir", run, "--num-samples", "2", "--steps", "2")
    assert r.exit_code == 1 and f"{cfg} is not a valid prior config (unknown PriorConfig fields: bogus)" in r.output
    cfg.write_text(good[:20])
    r = invoke("evaluate", "--workdir", run, "--num-examples", "2")
    assert r.exit_code == 1 and f"{cfg} is not a valid prior config" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize("make, message", [
    (lambda d: np.savez(d / "x.npz", images=np.random.rand(20, 8, 8).astype(np.float32)),
     "expected 8-bit pixels (integers 0..255), found float32 values in"),
    (lambda d: np.savez(d / "x.npz", images=np.full((20, 8, 8), np.nan, np.float32)), "must be finite numbers"),
    (lambda d: np.savez(d / "x.npz", images=np.zeros((0, 8, 8), np.uint8)), "holds no images"),
    (lambda d: (d / "x.npz").write_text("not an npz"), "cannot read"),
])
def test_bad_npz_data_is_refused_with_how_to_fix_it(tmp_path, make, message):
    make(tmp_path)
    r = invoke("train", "--dataset", tmp_path / "x.npz", "--workdir", tmp_path / "run")
    assert r.exit_code == 1 and message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "run").exists()


def test_integer_valued_float_pixels_are_taken_as_8_bit():
    from shortdiff_tf.data import _as_images
    out = _as_images(np.array([[[0.0, 255.0]]]), "x")
    assert out.dtype == np.uint8 and out.tolist() == [[[[0], [255]]]]


def test_an_unreadable_image_in_a_folder_is_named(tmp_path):
    from PIL import Image
    (tmp_path / "imgs").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "imgs" / "a.png")
    (tmp_path / "imgs" / "b.png").write_text("not a png")
    r = invoke("train", "--dataset", tmp_path / "imgs", "--workdir", tmp_path / "run")
    assert r.exit_code == 1 and "cannot read the image" in r.output and "b.png" in r.output


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", ""], "'--dataset': is empty"),
    (["train", "--workdir", "/sys/shortdiff-test-run"], "cannot write to /sys"),
    (["train", "--lr", "nan"], "'nan' is not a finite number"),
    (["train", "--sigma-max", "inf"], "'inf' is not a finite number"),
])
def test_bad_options_and_paths_are_one_line(args, message):
    r = invoke(*args)
    assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output


def test_the_hint_for_a_missing_run_reproduces_its_settings(tmp_path):
    r = invoke("sample", "--workdir", tmp_path / "runs" / "digits-ve-T0.2")
    assert r.exit_code == 1
    assert f"shortdiff train --sde ve --T 0.2 --workdir {tmp_path / 'runs' / 'digits-ve-T0.2'}" in r.output


CHEAP = """
import sys
from cli.main import cli
try:
    cli({args!r}, standalone_mode=False)
except Exception as err:
    print("ERROR", " ".join(str(err).split()))
print("TF", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize("args, message", [
    (["sample", "--workdir", "missing-run"], "does not exist"),
    (["evaluate", "--workdir", "missing-run"], "does not exist"),
    (["fit-prior", "--workdir", "missing-run"], "does not exist"),
    (["export", "--workdir", "{run}", "--out", "{run}"], "already exists"),
    (["train", "--workdir", "{bare}"], "holds checkpoints but no config.json"),
])
def test_cheap_checks_come_before_tensorflow_is_imported(run6, tmp_path, args, message):
    bare = copy(run6, tmp_path, "bare")
    (bare / "config.json").unlink()
    args = [a.format(run=run6, bare=bare) for a in args]
    out = subprocess.run([sys.executable, "-c", CHEAP.format(args=args)], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert message in out.stdout and "TF False" in out.stdout, out.stdout + out.stderr
