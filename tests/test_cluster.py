"""What a cluster does to a run: pre-emption signals (also as PID 1 in a container), locks that
the kernel releases, readers beside a writer, divergence, a full disk, damaged stores and
read-only runs.  Signals, containers and filesystems go through real processes, `unshare` and
tmpfs mounts where this machine allows them (skipped with the reason where not)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf import checkpoints
from shortdiff_tf.runlock import RunLock, RunLockedError

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

TOY = ["train", "--dataset", "gmm1d", "--T", "0.4", "--batch-size", "8", "--width", "8", "--sample-grid", "0",
       "--no-progress"]
CLI = [sys.executable, "-c", "import sys; from cli.main import cli; sys.exit(cli())"]
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def rows(run: Path) -> list:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []


def wait_for(condition, proc, timeout=120):
    start = time.time()
    while time.time() - start < timeout and proc.poll() is None and not condition():
        time.sleep(0.05)
    assert proc.poll() is None, "the process ended before the signal"


# The container, full-disk and read-only tests need unshare's PID and user+mount namespaces (Linux;
# available here and on CI): they run, never skip.


# ---- pre-emption ---------------------------------------------------------------------------
def test_a_pre_empted_train_saves_its_step_releases_the_lock_and_says_so(tmp_path, signum=signal.SIGTERM):
    """SIGTERM (Kubernetes, Slurm, docker stop) after about 12 metrics rows: the step in flight
    finishes, a checkpoint of it is written, the lock is free, one line names the saved step, the
    exit status is 75; the rerun resumes from that step."""
    run = tmp_path / "t"
    proc = subprocess.Popen([*CLI, *TOY, "--steps", "3000", "--checkpoint-every", "50", "--log-every", "10",
                             "--workdir", run], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: len(rows(run)) >= 12, proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, out + err
    saved = checkpoints.latest(run)
    step = int(saved.rsplit("-", 1)[1])
    assert step % 50 and step >= 120                   # the signal's step, not the last periodic checkpoint
    assert err.strip().splitlines()[-1] == (f"pre-empted by {signal.Signals(signum).name}: saved ckpt-{step} "
                                            f"(step {step}) in {run / 'checkpoints'}; rerun the same command to resume")
    with RunLock(run / ".lock", "test"):                 # released
        pass
    r = invoke(*TOY, "--steps", step + 5, "--workdir", run)
    assert r.exit_code == 0 and f"from step {step} to {step + 5}" in r.output, r.output


def test_a_pre_empted_glow_fit_saves_its_step(glow_run, tmp_path):
    """SIGUSR1 (Slurm's --signal) to fit-prior in its Glow loop: the same, for RUN/prior."""
    run = tmp_path / "g"
    shutil.copytree(glow_run[0], run, ignore=shutil.ignore_patterns("prior"))
    proc = subprocess.Popen([*CLI, "fit-prior", "--workdir", run, "--steps", "100000", "--glow-steps", "1",
                             "--glow-hidden", "8", "--batch-size", "16", "--checkpoint-every", "1000", "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: len(rows(run / "prior")) >= 2, proc)
    proc.send_signal(signal.SIGUSR1)
    out, err = proc.communicate(timeout=60)
    step = int(checkpoints.newest_complete(run / "prior" / "checkpoints").rsplit("-", 1)[1])
    assert proc.returncode == 75 and step % 1000 and f"pre-empted by SIGUSR1: saved ckpt-{step} (step {step})" in err
    with RunLock(run / "prior" / ".lock", "test"):
        pass


def test_as_pid_1_in_a_container_sigterm_saves_and_a_restart_is_not_refused(tmp_path):
    """shortdiff as PID 1 of its own PID namespace (what a container's entry point is): SIGTERM,
    which the kernel drops for a namespace's PID 1 without a handler, stops it with a checkpoint;
    the same command started again (PID 1 again, the same hostname) takes the lock at once."""
    run = tmp_path / "c"
    args = [*TOY, "--steps", "3000", "--checkpoint-every", "1000", "--log-every", "10", "--workdir", run]
    proc = subprocess.Popen(["unshare", "-fp", "--mount-proc", *CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)
    wait_for(lambda: len(rows(run)) >= 5, proc)
    inner = int(Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()[0])
    os.kill(inner, signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert "pre-empted by SIGTERM: saved ckpt-" in err, out + err
    assert json.loads((run / ".lock").read_text() or "{}") == {}
    step = int(checkpoints.latest(run).rsplit("-", 1)[1])
    again = subprocess.run(["unshare", "-fp", "--mount-proc", *CLI, *map(str, [*args[:-6], "--steps", step + 3,
                                                                                  "--workdir", run])],
                           capture_output=True, text=True, env=ENV, timeout=300)
    assert again.returncode == 0 and f"from step {step} to {step + 3}" in again.stdout, again.stdout + again.stderr


# ---- locks -------------------------------------------------------------------------------------
RACE = """
import sys, time
from shortdiff_tf.runlock import RunLock, RunLockedError
try:
    with RunLock(sys.argv[1], "racer"):
        print("HELD", flush=True)
        time.sleep(2)
except RunLockedError:
    print("REFUSED", flush=True)
"""


@pytest.mark.parametrize("mode", ["flock", "heartbeat"])
def test_two_concurrent_takeovers_of_a_stale_lock_leave_exactly_one_holder(tmp_path, mode):
    """A lock left behind (a dead holder's description, with the heartbeat fallback a heartbeat
    older than the stale time), and two processes that race for it: exactly one holds it."""
    import socket
    lock = tmp_path / ".lock"
    lock.write_text(json.dumps({"pid": 1, "host": socket.gethostname(), "command": "shortdiff train",
                                "heartbeat": time.time() - 3600, "boot_id": "", "start_time": "", "token": "old"}))
    env = {**ENV, "SHORTDIFF_LOCK": mode}
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(lock)], stdout=subprocess.PIPE, text=True, env=env)
              for _ in range(2)]
    outcomes = sorted(p.communicate(timeout=60)[0].strip() for p in racers)
    assert outcomes == ["HELD", "REFUSED"], outcomes


def test_a_live_holder_on_another_host_is_refused_and_a_dead_one_is_taken_over(tmp_path, monkeypatch):
    """With the heartbeat fallback (filesystems without flock): a holder on another host with a
    fresh heartbeat is refused by name; once its heartbeat is older than the stale time its lock
    is taken over.  (With flock, the other host's kernel holds the lock: refused the same way.)"""
    monkeypatch.setenv("SHORTDIFF_LOCK", "heartbeat")
    lock = tmp_path / ".lock"
    holder = {"pid": 4242, "host": "node-17", "command": "shortdiff train", "since": "then", "heartbeat": time.time(),
              "boot_id": "other", "start_time": "1", "token": "theirs"}
    lock.write_text(json.dumps(holder))
    with pytest.raises(RunLockedError, match=r"in use by `shortdiff train` \(pid 4242 on node-17"):
        RunLock(lock, "me").acquire()
    lock.write_text(json.dumps({**holder, "heartbeat": time.time() - 3600}))
    with RunLock(lock, "me") as mine:
        assert mine.holder()["pid"] == os.getpid()
    assert not lock.exists()


# ---- readers beside a writer -------------------------------------------------------------------
def test_readers_beside_a_writer_that_rotates_every_step_succeed(tmp_path):
    """`train --checkpoint-every 1` (keeping 2) in one process; 12 loads of the run in this one while
    it rotates: every load succeeds (a checkpoint that vanished while it was read is not called
    corrupt: the reader takes the new newest)."""
    from shortdiff_tf.app.runs import load_run
    run = tmp_path / "rw"
    proc = subprocess.Popen([*CLI, *TOY, "--steps", "100000", "--checkpoint-every", "1", "--log-every", "50",
                             "--workdir", run], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        wait_for(lambda: checkpoints.latest(run) is not None, proc)
        steps = [load_run(run).step for _ in range(12)]
    finally:
        proc.kill()
        proc.wait()
    assert len(steps) == 12 and steps == sorted(steps) and steps[-1] > steps[0]


# ---- divergence ------------------------------------------------------------------------------
def test_a_diverging_run_stops_naming_the_step_and_keeps_only_sane_checkpoints(tmp_path):
    """--lr 10 without warm-up: the run stops with one line naming the step the loss diverged at and
    the newest sane checkpoint; no checkpoint of a diverged step is kept, and every kept one has
    finite weights."""
    run = tmp_path / "lr10"
    r = invoke(*TOY, "--steps", "60", "--lr", "10", "--warmup", "0", "--checkpoint-every", "10", "--log-every", "10",
               "--workdir", run)
    assert r.exit_code == 1 and "Traceback" not in r.output, r.output
    line = r.output.strip().splitlines()[-1]
    assert "the loss diverged at step" in line or "the loss is nan" in line, line
    first = int(line.split("at step ")[1].split()[0].strip("(,;"))
    kept = [n for n, _ in checkpoints.complete(run / "checkpoints")]
    assert all(n < first for n in kept), (kept, first)
    if kept:
        assert f"ckpt-{kept[-1]} (step {kept[-1]}), is kept" in line


# ---- full disks and damaged stores -------------------------------------------------------
FULL_DISK = """
set -e
mount -t tmpfs -o size={size} tmpfs {mnt}
cd {cwd}
{cli} {args} --workdir {mnt}/run > {out}/first.txt 2>&1 || echo "EXIT $?" >> {out}/first.txt
mount -o remount,size=64m {mnt}
{cli} {args} --workdir {mnt}/run > {out}/second.txt 2>&1 || echo "EXIT $?" >> {out}/second.txt
"""


def test_a_full_disk_is_one_line_naming_the_path_and_the_rerun_resumes(tmp_path):
    """train on a tmpfs too small for its checkpoints: one line naming the file and how to go on,
    no traceback, exit 1; with space again the same command runs to the end (nothing half-written
    blocks it)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    args = " ".join(map(str, [*TOY, "--width", "512", "--steps", "20", "--checkpoint-every", "5"]))
    script = FULL_DISK.format(size="600k", mnt=mnt, cwd=os.getcwd(), out=tmp_path,
                              cli=" ".join(f"'{c}'" for c in CLI), args=args)
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600, env=ENV)
    first, second = (tmp_path / "first.txt").read_text(), (tmp_path / "second.txt").read_text()
    assert "EXIT 1" in first and "Traceback" not in first, first
    assert first.strip().splitlines()[-2].startswith(f"Error: no space left on device while writing {mnt}/run/"), first
    assert "EXIT" not in second and "trained to step 20" in second, second


def test_a_damaged_or_empty_evaluation_batch_is_named_and_recomputed(tmp_path):
    """evaluate stores a file per finished batch; one garbled and one emptied are reported by
    name, computed again, and the rerun prints the uninterrupted summary."""
    run = tmp_path / "e"
    assert invoke(*TOY, "--steps", "3", "--workdir", run).exit_code == 0
    ev = ["evaluate", "--workdir", run, "--num-examples", "6", "--batch-size", "2", "--rtol", "1e-3", "--atol", "1e-3",
          "--elbo-draws", "1", "--no-progress", "--json"]
    first = json.loads(invoke(*ev).output.strip().splitlines()[-1])
    files = sorted(Path(first["store"]).glob("r0-b*.npz"))
    files[0].write_bytes(b"not a zip file")
    files[1].write_bytes(b"")
    r = invoke(*ev)
    assert r.exit_code == 0 and "Aborted" not in r.output, r.output
    for f in files[:2]:
        assert f"{f} is damaged" in r.output
    again = json.loads(r.output.strip().splitlines()[-1])
    assert again["likelihood"] == first["likelihood"] and again["resumed_batches"] == 1


def test_study_files_damaged_and_a_repeated_T_are_one_line(tmp_path):
    """A garbled study_config.json is named; --T-grid 0.5,0.5 is refused (it would run one point and
    report two seeds of it)."""
    study = tmp_path / "s"
    study.mkdir()
    (study / "study_config.json").write_text("{ not json")
    r = invoke("study", "--dataset", "gmm1d", "--T-grid", "0.5", "--seeds", "1", "--workdir", study)
    assert r.exit_code == 1 and f"{study / 'study_config.json'} is damaged" in r.output, r.output
    r = invoke("study", "--dataset", "gmm1d", "--T-grid", "0.5,0.5", "--workdir", tmp_path / "t")
    assert r.exit_code == 2 and "lists 0.5 more than once" in r.output



READ_ONLY = """
set -e
mount --bind {run} {run}
mount -o remount,bind,ro {run}
cd {cwd}
for name in sample evaluate evaluate_store; do :; done
{cli} sample --workdir {run} --num-samples 2 --steps 2 --out {out}/s > {out}/sample.txt 2>&1 || echo "EXIT $?" >> {out}/sample.txt
{cli} evaluate --workdir {run} --num-examples 2 > {out}/evaluate.txt 2>&1 || echo "EXIT $?" >> {out}/evaluate.txt
{cli} evaluate --workdir {run} --num-examples 2 --rtol 1e-3 --atol 1e-3 --elbo-draws 1 --store {out}/store \\
    > {out}/store.txt 2>&1 || echo "EXIT $?" >> {out}/store.txt
"""


def test_a_read_only_run_samples_elsewhere_and_evaluates_with_its_store_elsewhere(tmp_path):
    """On a read-only run directory: sample --out elsewhere works; evaluate refuses at once (before
    TensorFlow starts) naming --store; evaluate --store DIR works."""
    run = tmp_path / "ro"
    assert invoke(*TOY, "--steps", "3", "--workdir", run).exit_code == 0
    script = READ_ONLY.format(run=run, cwd=os.getcwd(), out=tmp_path, cli=" ".join(f"'{c}'" for c in CLI))
    subprocess.run(["unshare", "-rm", "sh", "-c", script], check=True, timeout=600, env=ENV)
    sample, evaluate, store = ((tmp_path / f"{n}.txt").read_text() for n in ("sample", "evaluate", "store"))
    assert "EXIT" not in sample and (tmp_path / "s.npz").exists(), sample
    assert "EXIT 1" in evaluate and "--store" in evaluate and "Read-only file system" in evaluate, evaluate
    assert "EXIT" not in store and any((tmp_path / "store").iterdir()), store


def test_what_a_killed_export_left_is_removed_by_the_next_one_unless_it_runs(tmp_path):
    """`.<name>.partial` folders: one whose export was killed (its lock free) is removed, one that a
    running export holds is kept."""
    from shortdiff_tf.app.export import remove_stale_partials
    from tests.test_run_safety import hold
    for name in ("1", "2"):
        (tmp_path / f".{name}.partial" / "variables").mkdir(parents=True)
    holder = hold(tmp_path / ".2.partial.lock")
    try:
        assert remove_stale_partials(tmp_path) == [".1.partial"]
        assert not (tmp_path / ".1.partial").exists() and (tmp_path / ".2.partial").exists()
    finally:
        holder.kill()
        holder.wait()


def test_restore_errors_say_what_to_do(tmp_path):
    """A checkpoint that does not match the model, with an earlier one that does: delete it to fall
    back; every checkpoint from another model: train a new run (a prior: refit it); an unreadable
    one: delete it."""
    import tensorflow as tf
    folder = tmp_path / "checkpoints"
    mine, other = tf.Variable([1.0]), tf.Variable([1.0, 2.0])
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=mine), str(folder), max_to_keep=5)
    manager.save(checkpoint_number=1)
    tf.train.CheckpointManager(tf.train.Checkpoint(w=other), str(folder), max_to_keep=5).save(checkpoint_number=2)
    reader = tf.train.Checkpoint(v=mine)
    with pytest.raises(ValueError, match="does not match this model; delete it to fall back to ckpt-1"):
        checkpoints.restore(reader, str(folder / "ckpt-2"))
    with pytest.raises(ValueError, match="every checkpoint in .* is from another model .*refit the prior"):
        checkpoints.restore(tf.train.Checkpoint(u=tf.Variable([0.0, 0.0, 0.0])), str(folder / "ckpt-1"), what="prior")
    for f in folder.glob("ckpt-2.data-*"):
        f.write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"unreadable \(damaged\); delete it to fall back"):
        checkpoints.restore(tf.train.Checkpoint(w=other), str(folder / "ckpt-2"))
