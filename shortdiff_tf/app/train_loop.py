"""The loop of a training session: steps, checkpoints, logs, and the three ways it stops early.

  - a non-finite or diverging loss (``divergence``): nothing insane is kept.  The losses of every
    step are read at each log and checkpoint step (no device read per step), a checkpoint is
    written only after its steps passed the rule, and when the rule fires the checkpoints of
    the diverging steps are removed; the error names the step and the newest sane checkpoint;
  - a signal (``preemption``): the step in flight finishes, a checkpoint of it is written and
    ``Preempted`` names it.  On several machines the workers agree at each log step (one small
    all-reduce) and all stop at the same step;
  - ``stop_after`` steps (tests), as an interruption would.
"""
from __future__ import annotations

import time
from pathlib import Path

import tensorflow as tf

from shortdiff_tf import checkpoints, distribute, training
from shortdiff_tf.app.summaries import TrainSummaries
from shortdiff_tf.divergence import DivergenceMonitor
from shortdiff_tf.preemption import Preempted, never
from shortdiff_tf.progress import Progress


class Diverged(FloatingPointError):
    """The loss diverged or is not finite; the newest sane checkpoint is kept."""


def run_loop(cfg, out: Path, state, manager, strategy, start: int, stop: int, batches, progress: bool,
             should_stop=never) -> dict:
    """Steps start .. stop - 1 of ``batches``; -> the session's summary."""
    step_fn = training.make_train_step(cfg, state, strategy)
    logs, bar = TrainSummaries(cfg, state, out, start), Progress(stop, start, enabled=progress)
    monitor, pending, loss, step, signum, diverged = DivergenceMonitor(), [], float("nan"), start, None, False
    multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    try:
        for batch in batches(start, stop):
            loss_t, norm_t = step_fn(batch)
            step += 1                                   # no device read per step
            pending.append((step, loss_t))
            at_log = step % cfg.train.log_every == 0 or step == stop
            if at_log or step % cfg.train.checkpoint_every == 0:
                _judge(cfg, monitor, pending, manager)
            if at_log:
                loss = float(loss_t)
                bar.update(step, f"loss {loss:.4f}  {logs.log(step, loss, float(norm_t)):.0f} img/s")
            if step % cfg.train.checkpoint_every == 0:
                save_if_finite(manager, state, step)
            if logs.wants_grid(step, final=step == cfg.train.steps):
                logs.grid(step)
            signum = distribute.any_worker(strategy, should_stop()) if (at_log or not multi) else None
            if signum:
                break
    except Diverged:
        diverged = True
        raise
    finally:
        step = int(state.step.numpy())
        if not diverged and not _diverging(pending, monitor):
            _save_interrupted(manager, state, step)
        bar.close()
        logs.close()
    if signum:
        name = Path(manager.latest_checkpoint).name if manager.latest_checkpoint else "nothing"
        saved = (f"saved {name} (step {step}) in {Path(manager.directory)}" if distribute.is_chief(strategy)
                 else f"the chief saved the checkpoint of step {step}")
        raise Preempted(int(signum), f"{saved}; rerun the same command to resume")
    return {"step": step, "loss": loss, "run_dir": str(out), "checkpoint": manager.latest_checkpoint,
            "seconds": time.perf_counter() - logs.t0}


def _judge(cfg, monitor: DivergenceMonitor, pending: list, manager) -> None:
    """Read the pending per-step losses and apply the divergence rule; raise ``Diverged`` after
    removing the checkpoints of the diverging steps."""
    found = monitor.add((s, float(l)) for s, l in pending)
    pending.clear()
    if found is None:
        return
    removed = checkpoints.remove_from(Path(manager.directory), found.first)
    kept = checkpoints.newest_complete(Path(manager.directory))
    where = (f"the newest sane checkpoint, {Path(kept).name} (step {kept.rsplit('-', 1)[1]}), is kept" if kept
             else "no sane checkpoint was written yet")
    dropped = f" (removed {', '.join(removed)}, written as it diverged)" if removed else ""
    raise Diverged(f"{found.describe()}; nothing from step {found.first} on was kept and {where}{dropped}; resume "
                   f"with a lower learning rate: shortdiff train --workdir {Path(manager.directory).parent} "
                   f"--lr {cfg.train.lr / 10:.3g}")


def _diverging(pending: list, monitor: DivergenceMonitor) -> bool:
    """True when the steps not yet judged (an interruption between log steps) break the rule:
    then no checkpoint of them is written."""
    try:
        return monitor.add((s, float(l)) for s, l in pending) is not None
    finally:
        pending.clear()


def _state_variables(state) -> list:
    return list(state.net.trainable_variables) + list(state.ema.shadow.values()) + list(state.optimizer.variables)


def save_if_finite(manager, state, step: int) -> None:
    """Write a checkpoint, unless a value is not finite: then nothing is written and the run stops."""
    if not checkpoints.all_finite(_state_variables(state)):
        kept = manager.latest_checkpoint
        raise Diverged(f"the weights are not finite at step {step}; nothing non-finite was written"
                       + (f" and {Path(kept).name} is kept" if kept else ""))
    checkpoints.save(manager, step)


def _save_interrupted(manager, state, step: int) -> None:
    """An interruption keeps its step (when it is sane and not saved yet)."""
    if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
        if checkpoints.all_finite(_state_variables(state)):
            checkpoints.save(manager, step)
