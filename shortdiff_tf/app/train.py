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
import shutil
from pathlib import Path
from typing import Callable, Optional

import tensorflow as tf

from shortdiff_tf import checkpoints, data as data_lib, distribute, networks, pipeline, resume, streaming, training
from shortdiff_tf.app.train_loop import run_loop
from shortdiff_tf.config import RunConfig
from shortdiff_tf.files import truncate_jsonl
from shortdiff_tf.preemption import never
from shortdiff_tf.runlock import RunLock


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
    diffs = resume.differences(saved, cfg)
    if diffs:
        raise ValueError(f"{run_dir} holds a run with other settings ({diffs}); use a new --workdir "
                         f"or the run's own options")
    return cfg


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
          progress: bool = True, stop_after: Optional[int] = None, log: Callable = print,
          should_stop: Callable = never) -> dict:
    """Train (or resume) the score model in ``run_dir``; -> summary dict.

    The chief holds ``RUN/.lock`` while it writes.  ``stop_after`` ends the session early after
    that many steps, as an interruption would; ``should_stop()`` returning a signal number ends
    it after the step in flight, with a checkpoint, by ``preemption.Preempted``.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = Path(run_dir)
    cfg, data = prepare(cfg, run_dir, strategy)
    if not distribute.is_chief(strategy):
        return _train(cfg, run_dir, data, strategy, progress, stop_after, log, should_stop)
    with RunLock(run_dir / ".lock", "shortdiff train"):
        return _train(cfg, run_dir, data, strategy, progress, stop_after, log, should_stop)


def _train(cfg, run_dir: Path, data, strategy, progress, stop_after, log, should_stop) -> dict:
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
        result = run_loop(cfg, out, state, manager, strategy, start, stop, batches, progress, should_stop)
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
