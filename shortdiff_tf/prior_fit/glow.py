"""The Glow fit of nu_phi: maximum likelihood on the targets at T under a tf.distribute strategy,
resumable, with a NaN guard.

  min_phi E[-log nu_phi(x) / D]   (nats per dimension), x the "sde" or "ode" target at T

Each step draws a global batch from ``pipeline`` (stateless in (seed, step)) and, for the "sde"
target, fresh noise e; replicas split it, and the clipped update is ``optim.clipped_apply``.
A non-finite loss restores the state of the last logged step and goes on.  Checkpoints hold the
flow, the optimiser and the step, so a rerun continues where the last one stopped.  Each logged
step goes to RUN/prior/metrics.jsonl and to TensorBoard in RUN/prior/tb (NLL, bits/dim at T,
learning rate), with a grid of nu_phi's samples x_T at the end.
"""
from __future__ import annotations

import math
import shutil
import time
from pathlib import Path
from typing import Optional

import tensorflow as tf

from shortdiff_tf import checkpoints, distribute, images, optim, pipeline, pixels, streaming
from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import append_jsonl, truncate_jsonl
from shortdiff_tf.prior_fit import store
from shortdiff_tf.preemption import Preempted, never
from shortdiff_tf.progress import Progress


def fit_glow(sde, source, shape, pcfg: PriorConfig, run_dir, strategy, progress: bool = True, log=print,
             stop_after: Optional[int] = None, should_stop=never, warm_start: Optional[str] = None) -> dict:
    """Fit (or resume fitting) a Glow prior on ``source`` (uint8 data or ODE targets in memory, or
    a TFDS stream) at sde.T.  A new fit with ``warm_start`` (a Glow checkpoint of the same
    architecture) starts from its flow weights; the optimiser and the step start afresh."""
    out = store.prior_dir(run_dir)
    prior, opt, step = _glow_state(pcfg, shape, strategy)
    ckpt = tf.train.Checkpoint(prior=prior, optimizer=opt, step=step)
    first, batches = _targets(sde, source, pcfg, strategy)
    with strategy.scope():
        prior.initialize(first)                                       # data-dependent ActNorm
        opt.build(prior.trainable_variables)
    write = distribute.write_dir(out, strategy)          # RUN/prior, or a non-chief worker's scratch
    latest = (checkpoints.recover(out / "checkpoints", log) if write == out      # every worker: the chief's
              else checkpoints.newest_complete(out / "checkpoints"))
    manager = tf.train.CheckpointManager(ckpt, str(write / "checkpoints"), max_to_keep=2)
    if latest:
        checkpoints.restore(ckpt, latest, what="prior")
    elif warm_start:
        checkpoints.restore(tf.train.Checkpoint(prior=prior), warm_start, partial=True, what="prior")
        log(f"warm start from {warm_start}")
    if write == out:
        store.save_config(run_dir, pcfg)
        truncate_jsonl(out / "metrics.jsonl", int(step.numpy()))
    step_fn = _make_step(prior, opt, step, pcfg, strategy)
    try:
        result = _loop(prior, opt, step, manager, step_fn, batches, pcfg, write, progress, log, stop_after,
                       should_stop, strategy)
    finally:
        if write != out:
            shutil.rmtree(write, ignore_errors=True)
    return {**result, "prior_dir": str(out)}


def _targets(sde, source, pcfg: PriorConfig, strategy):
    """-> (a first global batch of targets at T, (start, stop) -> the distributed batches of
    those steps): computed from the step in memory (``pipeline``), read from the stream's
    position for a TFDS set (``streaming``), as in score training (``app.train``)."""
    seed = pcfg.seed + 7919

    def at_T(b):
        if pcfg.target == "ode":
            return b["x0"]
        return sde.perturb(b["x0"], tf.fill(tf.shape(b["x0"])[:1], sde.T), b["e"])   # fresh e every batch

    if isinstance(source, streaming.TFDSSource):
        first = at_T(next(iter(streaming.dataset(source, pcfg.batch_size, seed, True, buffer=pcfg.batch_size))))
        return first, lambda start, stop: streaming.distributed_batches(source, pcfg.batch_size, seed, True, strategy,
                                                                        start, stop, map_fn=at_T)
    batch_fn = pipeline.make_batch_fn(source, pcfg.batch_size, seed, dequantize=True)
    target = lambda step: at_T(batch_fn(step))
    return target(tf.constant(0, tf.int64)), lambda start, stop: pipeline.distributed_batches(target, start, stop,
                                                                                              strategy)


def _glow_state(pcfg: PriorConfig, shape, strategy):
    import keras
    with strategy.scope():
        keras.utils.set_random_seed(pcfg.seed)          # the coupling networks' initial weights
        prior = store.build_glow(pcfg, shape)
        opt = optim.adam(pcfg.lr, pcfg.warmup)
        step = tf.Variable(0, dtype=tf.int64, trainable=False)
    return prior, opt, step


def _make_step(prior, opt, step, pcfg: PriorConfig, strategy):
    variables = prior.trainable_variables

    def loss_and_grads(x):
        with tf.GradientTape() as tape:
            nll = -prior.log_prob(x) / prior.dim                         # nats per dimension
            loss = tf.nn.compute_average_loss(nll, global_batch_size=pcfg.batch_size)
        return loss, tape.gradient(loss, variables)

    if pcfg.jit:        # XLA for the flow's forward and backward pass; the update stays outside
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

    def replica_step(x):
        loss, grads = loss_and_grads(x)
        optim.clipped_apply(opt, grads, variables, pcfg.grad_clip)
        return loss

    @tf.function
    def fn(x):
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica_step, args=(x,)), axis=None)
        step.assign_add(1)
        return loss

    return fn


def _loop(prior, opt, step, manager, step_fn, batches, pcfg, out: Path, progress, log, stop_after, should_stop,
          strategy):
    begin = int(step.numpy())
    stop = pcfg.steps if stop_after is None else min(pcfg.steps, begin + stop_after)
    log(f"fitting a Glow prior ({sum(int(tf.size(v)) for v in prior.trainable_variables):,} parameters) at "
        f"T={pcfg.T:g} on the {pcfg.target} target, steps {begin} to {stop}")
    bar, t0 = Progress(stop, begin, enabled=progress), time.perf_counter()
    board = tf.summary.create_file_writer(str(out / "tb"))
    good, restores, loss, signum = _snapshot(prior, opt), 0, float("nan"), None
    multi = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    try:
        for i, x in zip(range(begin, stop), batches(begin, stop)):
            loss = float(step_fn(x))
            if not math.isfinite(loss):                               # NaN guard: back to the last good state
                _restore(prior, opt, good)
                step.assign(i + 1)
                restores += 1
                log(f"non-finite loss at step {i + 1}; restored the state of the last good step")
                continue
            if (i + 1) % pcfg.log_every == 0 or i + 1 == stop:
                good = _snapshot(prior, opt)
                append_jsonl(out / "metrics.jsonl", {"step": i + 1, "nll_per_dim": loss,
                                                     "bits_per_dim_at_T": loss / math.log(2.0),
                                                     "wall_time": time.perf_counter() - t0, "restores": restores})
                with board.as_default(step=i + 1):
                    tf.summary.scalar("nll_per_dim", loss)
                    tf.summary.scalar("bits_per_dim_at_T", loss / math.log(2.0))
                    tf.summary.scalar("learning_rate", float(opt.learning_rate))
                bar.update(i + 1, f"nll {loss:.4f} nats/dim")
            if (i + 1) % pcfg.checkpoint_every == 0 and checkpoints.all_finite(_variables(prior, opt)):
                checkpoints.save(manager, i + 1)
            logged = (i + 1) % pcfg.log_every == 0 or i + 1 == stop
            signum = distribute.any_worker(strategy, should_stop()) if (logged or not multi) else None
            if signum:
                break
    finally:
        final = int(step.numpy())
        if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{final}"):
            if checkpoints.all_finite(_variables(prior, opt)):
                checkpoints.save(manager, final)
        bar.close()
        board.flush()
    if not signum:
        _sample_grid(prior, board, pcfg, final)
    if signum:
        raise Preempted(int(signum), f"saved {Path(manager.latest_checkpoint).name} (step {final}) in "
                                     f"{Path(manager.directory)}; rerun the same command to resume")
    log(f"fitted to step {final}: {loss:.4f} nats/dim ({loss / math.log(2.0):.4f} bits/dim at T)")
    return {"kind": "glow", "T": pcfg.T, "target": pcfg.target, "step": final, "nll_per_dim": loss,
            "restores": restores, "seconds": time.perf_counter() - t0}


GRID_SIZE, GRID_SIDE = 16, 128     # samples in the TensorBoard grid; pixels a side of each, at least


def _sample_grid(prior, board, pcfg: PriorConfig, step: int) -> None:
    """A grid of nu_phi's samples x_T (clipped to the pixel range) in TensorBoard."""
    x = prior.sample(GRID_SIZE, seed=tf.constant([pcfg.seed, 7], tf.int32)).numpy()
    upscale = max(1, -(-GRID_SIDE // x.shape[1]))
    with board.as_default(step=step):
        tf.summary.image("prior_samples_x_T", images.grid(pixels.to_uint8(x), upscale)[None], step=step)
    board.flush()


def _variables(prior, opt) -> list:
    return list(prior.trainable_variables) + list(opt.variables)


def _snapshot(prior, opt):
    return [v.numpy() for v in _variables(prior, opt)]


def _restore(prior, opt, values):
    for v, val in zip(_variables(prior, opt), values):
        v.assign(val)
