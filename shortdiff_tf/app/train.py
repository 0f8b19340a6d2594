"""Training a run: ``train(cfg, run_dir, strategy=None)`` trains (or resumes) the score model.

It writes ``config.json`` before the first step, resumes from the latest checkpoint, runs the
distributed step of ``training`` over the batches of ``pipeline`` and writes checkpoints,
``metrics.jsonl`` and TensorBoard summaries.  Everything random (data order, flips,
dequantisation, t, e and the dropout masks) is a stateless function of (seed, step, position in
the stream of examples), so a resumed run and a multi-replica run see exactly the examples and
the noise of an uninterrupted single-device run: in memory (``pipeline``) and for a streamed TFDS
set (``streaming``) alike.
"""
from __future__ import annotations

import dataclasses
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import tensorflow as tf

from shortdiff_tf import (checkpoints, data as data_lib, distribute, images, networks, pipeline, pixels, samplers,
                          streaming, training)
from shortdiff_tf.config import RunConfig
from shortdiff_tf.files import append_jsonl, truncate_jsonl
from shortdiff_tf.progress import Progress
from shortdiff_tf.runlock import RunLock

RESUME_FREE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_grid", "grad_accum", "lr", "jit")


def check_resumable(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """A run directory resumes only with the settings it was started with (the budget may grow,
    and the learning rate may be lowered after a non-finite loss); checkpoints without a readable
    config.json are never reused."""
    if not (run_dir / "config.json").exists():
        if any(checkpoints.checkpoint_dir(run_dir).glob("ckpt-*")):
            raise ValueError(f"{run_dir} holds checkpoints but no config.json, so its settings are unknown; "
                             f"restore {run_dir / 'config.json'} or use a new --workdir")
        return cfg
    saved = RunConfig.load(run_dir)
    free = {k: getattr(saved.train, k) for k in RESUME_FREE}
    same_budget = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **free))
    if same_budget != saved:
        diffs = _diff(dataclasses.asdict(saved), dataclasses.asdict(same_budget))
        raise ValueError(f"{run_dir} holds a run with other settings ({diffs}); use a new --workdir "
                         f"or the run's own options")
    return cfg


def _diff(a: dict, b: dict, prefix="") -> str:
    out = []
    for k in a:
        if isinstance(a[k], dict):
            out.append(_diff(a[k], b[k], f"{prefix}{k}."))
        elif a[k] != b[k] and not (isinstance(a[k], (list, tuple)) and list(a[k]) == list(b[k])):
            out.append(f"{prefix}{k}: {a[k]} there, {b[k]} asked")
    return ", ".join(x for x in out if x)


def prepare(cfg: RunConfig, run_dir: Path, strategy) -> tuple:
    """Every check that needs no writing: data, settings against the run's, batch divisibility.
    -> (cfg with the data shape, the training data: an array in memory, or a TFDS stream)."""
    d = cfg.data
    source = (data_lib.tfds_source(d.dataset, d.split, d.data_dir) if data_lib.is_tfds(d.dataset)
              else data_lib.load(d.dataset, d.split, d.data_dir).array)
    shape = source.shape if isinstance(source, streaming.TFDSSource) else source.shape[1:]
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(d, shape=tuple(shape)))
    cfg = check_resumable(cfg, run_dir)
    cfg.sde.build()                                   # validate T, eps before writing anything
    if cfg.train.random_flip and len(shape) != 3:
        raise ValueError("--flip applies to images; train toy data without it")
    n = source.num_examples if isinstance(source, streaming.TFDSSource) else len(source)
    if 0 <= n < cfg.train.batch_size:
        raise ValueError(f"batch size {cfg.train.batch_size} exceeds the {n} training examples; "
                         f"lower --batch-size")
    parts = strategy.num_replicas_in_sync * cfg.train.grad_accum
    if cfg.train.batch_size % parts:
        raise ValueError(f"batch size {cfg.train.batch_size} is not divisible by the {strategy.num_replicas_in_sync} "
                         f"replica(s) x {cfg.train.grad_accum} accumulation step(s); change --batch-size or --grad-accum")
    return cfg, source


def train(cfg: RunConfig, run_dir, strategy: Optional[tf.distribute.Strategy] = None,
          progress: bool = True, stop_after: Optional[int] = None, log: Callable = print) -> dict:
    """Train (or resume) the score model in ``run_dir``; -> summary dict.

    The chief holds ``RUN/.lock`` while it writes.  ``stop_after`` ends the session early after
    that many steps, as an interruption would.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = Path(run_dir)
    cfg, data = prepare(cfg, run_dir, strategy)
    if not distribute.is_chief(strategy):
        return _train(cfg, run_dir, data, strategy, progress, stop_after, log)
    with RunLock(run_dir / ".lock", "shortdiff train"):
        return _train(cfg, run_dir, data, strategy, progress, stop_after, log)


def _train(cfg, run_dir: Path, data, strategy, progress, stop_after, log) -> dict:
    state = training.build_state(cfg, cfg.data.shape, strategy)
    batches = _batches(cfg, data, strategy)
    out = distribute.write_dir(run_dir, strategy)      # the run directory, or a non-chief's scratch
    ckpt_dir = checkpoints.checkpoint_dir(run_dir)
    latest = (checkpoints.recover(ckpt_dir, log) if out == run_dir      # every worker: the chief's
              else checkpoints.newest_complete(ckpt_dir))
    manager = tf.train.CheckpointManager(state.ckpt, str(checkpoints.checkpoint_dir(out)),
                                         max_to_keep=cfg.train.keep_checkpoints)
    if latest:
        checkpoints.restore(state.ckpt, latest)
    start = int(state.step.numpy())
    if out == run_dir:
        cfg.save(run_dir)
        truncate_jsonl(run_dir / "metrics.jsonl", start)             # rows past the restored step go
    stop = cfg.train.steps if stop_after is None else min(cfg.train.steps, start + stop_after)
    if start >= stop:
        log(f"{run_dir}: already trained for {start} steps")
        return {"step": start, "run_dir": str(run_dir), "checkpoint": latest}
    log(f"training {run_dir} from step {start} to {stop} ({networks.count_params(state.net):,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s))")
    try:
        result = _loop(cfg, out, state, manager, strategy, start, stop, batches, progress)
    finally:
        if out != run_dir:
            shutil.rmtree(out, ignore_errors=True)
    return {**result, "run_dir": str(run_dir), "chief": out == run_dir, "weights_digest": training.weights_digest(state.net)}


def _batches(cfg, data, strategy):
    """start, stop -> the distributed batches of those steps: computed from the step in memory
    (``pipeline``), read from the stream's position for a TFDS set (``streaming``)."""
    tc = cfg.train
    if isinstance(data, streaming.TFDSSource):
        return lambda start, stop: streaming.distributed_batches(data, tc.batch_size, tc.seed, tc.dequantize, strategy,
                                                                 start, stop, tc.random_flip)
    batch_fn = pipeline.make_batch_fn(data, tc.batch_size, tc.seed, tc.dequantize, tc.random_flip)
    return lambda start, stop: pipeline.distributed_batches(batch_fn, start, stop, strategy)


def _loop(cfg, run_dir, state, manager, strategy, start, stop, batches, progress) -> dict:
    step_fn = training.make_train_step(cfg, state, strategy)
    dist = batches(start, stop)
    writer = tf.summary.create_file_writer(str(run_dir / "tb"))
    bar = Progress(stop, start, enabled=progress)
    metrics_path, t0, last = run_dir / "metrics.jsonl", time.perf_counter(), (start, time.perf_counter())
    loss, step = float("nan"), start
    try:
        for batch in dist:
            loss_t, norm_t = step_fn(batch)
            step += 1                               # no device read per step
            if step % cfg.train.log_every == 0 or step == stop:
                loss, rate, last = float(loss_t), _rate(cfg, last, step), (step, time.perf_counter())
                if not math.isfinite(loss):
                    raise non_finite(cfg, manager, step, f"the loss is {loss} at step {step}")
                lr = float(state.optimizer.learning_rate)
                _log_metrics(metrics_path, writer, step, loss, float(norm_t), lr, rate, time.perf_counter() - t0)
                bar.update(step, f"loss {loss:.4f}  {rate:.0f} img/s")
            if step % cfg.train.checkpoint_every == 0:
                save_if_finite(cfg, manager, state, step)
    finally:
        step = int(state.step.numpy())
        if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
            if checkpoints.all_finite(_state_variables(state)):      # an interruption keeps its step
                manager.save(checkpoint_number=step)
        bar.close()
        writer.flush()
    if step == cfg.train.steps and len(cfg.data.shape) == 3 and cfg.train.sample_grid > 0:
        if progress:
            bar.stream.write(f"sampling {cfg.train.sample_grid} EMA images for TensorBoard (--sample-grid 0 skips it)\n")
        _log_sample_grid(cfg, state, writer, step)
    return {"step": step, "loss": loss, "run_dir": str(run_dir), "checkpoint": manager.latest_checkpoint,
            "seconds": time.perf_counter() - t0}


def _state_variables(state) -> list:
    return list(state.net.trainable_variables) + list(state.ema.shadow.values()) + list(state.optimizer.variables)


def save_if_finite(cfg, manager, state, step: int) -> None:
    """Write a checkpoint, unless a value is not finite: then nothing is written and the run stops."""
    if not checkpoints.all_finite(_state_variables(state)):
        raise non_finite(cfg, manager, step, f"the weights are not finite at step {step}")
    manager.save(checkpoint_number=step)


def non_finite(cfg, manager, step: int, what: str) -> FloatingPointError:
    """The one-line error after a non-finite loss or weight: which checkpoint is kept, and the
    command that resumes from it with a lower learning rate."""
    kept = manager.latest_checkpoint
    where = (f"the newest checkpoint, {Path(kept).name} (step {kept.rsplit('-', 1)[1]}), is kept" if kept
             else "no checkpoint was written yet")
    return FloatingPointError(f"{what}; nothing non-finite was written and {where}; resume with a lower learning "
                              f"rate: shortdiff train --workdir {Path(manager.directory).parent} "
                              f"--lr {cfg.train.lr / 10:.3g}")


def _log_sample_grid(cfg, state, writer, step):
    """A grid of EMA samples (Euler-Maruyama from p_noise, 1000 T steps) in TensorBoard at the end."""
    shadow = [v.numpy() for v in state.net.trainable_variables]
    state.ema.copy_to(state.net.trainable_variables)
    sde = cfg.sde.build()
    res = samplers.Sampler(sde, networks.score_function(state.net, sde), sde.prior(cfg.data.shape),
                           samplers.PRESETS["em"])(cfg.train.sample_grid, cfg.train.seed)
    for v, value in zip(state.net.trainable_variables, shadow):
        v.assign(value)
    grid = images.grid(pixels.to_uint8(res.x.numpy()))
    with writer.as_default(step=step):
        tf.summary.image("samples_em_p_noise", grid[None], step=step)
    writer.flush()


def _rate(cfg, last, step) -> float:
    dt = max(time.perf_counter() - last[1], 1e-9)
    return (step - last[0]) * cfg.train.batch_size / dt


def _log_metrics(path: Path, writer, step, loss, grad_norm, lr, rate, wall):
    row = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr, "images_per_s": rate, "wall_time": wall}
    append_jsonl(path, row)
    with writer.as_default(step=step):
        tf.summary.scalar("loss", loss)
        tf.summary.scalar("learning_rate", lr)
        tf.summary.scalar("grad_norm", grad_norm)
