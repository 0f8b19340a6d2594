"""Strategy-aware training of the score model by denoising score matching.

``train(cfg, run_dir, strategy=None)``: builds the network and Adam under ``strategy.scope()``,
writes ``config.json`` before the first step, resumes from the latest checkpoint, and runs
one ``tf.function`` step per global batch.  Everything random (data order, dequantisation, t
and e) is a stateless function of (seed, step) computed in the input pipeline for the global
batch, so a resumed run and a multi-replica run see exactly the examples of an uninterrupted
single-device run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable, Optional

import keras
import numpy as np
import tensorflow as tf

from shortdiff_tf import checkpoints, data as data_lib, distribute, losses, networks
from shortdiff_tf.config import RunConfig
from shortdiff_tf.progress import Progress
from shortdiff_tf.seeds import split


@keras.saving.register_keras_serializable(package="shortdiff")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """lr * min(1, step / warmup)  (ScoreSDE's linear warm-up)."""

    def __init__(self, lr: float, warmup: int):
        self.lr, self.warmup = float(lr), int(warmup)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        return self.lr * tf.minimum(1.0, (step + 1.0) / max(self.warmup, 1))

    def get_config(self):
        return {"lr": self.lr, "warmup": self.warmup}


def epoch_order(n: int, epoch, seed: int):
    """The permutation of the n examples in a given epoch (stateless)."""
    keys = tf.random.stateless_uniform([n], split(tf.constant([seed, 1]), epoch))
    return tf.argsort(keys)


def make_batch_fn(array: np.ndarray, batch_size: int, seed: int, dequantize: bool):
    """step -> {x0, u, e}: the global batch of a step and its noise, all stateless in (seed, step)."""
    n = array.shape[0]
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training examples; lower --batch-size")
    source = tf.constant(array)
    is_image = array.dtype == np.uint8

    def batch(step):
        j = step * batch_size + tf.range(batch_size, dtype=tf.int64)
        epoch = j // n
        first = epoch[0]
        orders = tf.stack([epoch_order(n, first, seed), epoch_order(n, first + 1, seed)])
        idx = tf.gather_nd(orders, tf.stack([epoch - first, j % n], axis=1))
        x = tf.gather(source, idx)
        s = split(tf.constant([seed, 2]), step)
        if is_image:
            u_pix = tf.random.stateless_uniform(tf.shape(x), split(s, 0)) if dequantize else 0.5
            x = data_lib.dequantize(x, u_pix * tf.ones(tf.shape(x)))
        x = tf.cast(x, tf.float32)
        return {"x0": x, "u": tf.random.stateless_uniform([batch_size], split(s, 1), dtype=tf.float64),
                "e": tf.random.stateless_normal(tf.shape(x), split(s, 2))}

    return batch


def make_dataset(array, cfg: RunConfig, start: int, stop: int) -> tf.data.Dataset:
    fn = make_batch_fn(array, cfg.train.batch_size, cfg.train.seed, cfg.train.dequantize)
    ds = tf.data.Dataset.range(start, stop).map(fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(2)


@dataclasses.dataclass
class State:
    """The trainable pieces of a run and the checkpoint that holds them."""
    net: keras.Model
    optimizer: keras.optimizers.Optimizer
    ema: checkpoints.EMA
    step: tf.Variable
    ckpt: tf.train.Checkpoint


def build_state(cfg: RunConfig, shape, strategy) -> State:
    with strategy.scope():
        keras.utils.set_random_seed(cfg.train.seed)
        net = networks.build_score_net(cfg.model, shape)
        opt = keras.optimizers.Adam(WarmUp(cfg.train.lr, cfg.train.warmup))
        opt.build(net.trainable_variables)
        ema = checkpoints.EMA(net.trainable_variables, cfg.train.ema_decay)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        ckpt = tf.train.Checkpoint(params=checkpoints.variable_dict(net.variables), ema=ema, optimizer=opt, step=step)
    return State(net, opt, ema, step, ckpt)


def make_train_step(cfg: RunConfig, state: State, strategy):
    """One distributed step: per-replica DSM loss averaged over the global batch, gradients
    clipped by their global norm across replicas, Adam, then the EMA."""
    sde = cfg.sde.build()
    score = networks.score_function(state.net, sde, training=True)
    variables = state.net.trainable_variables
    tc = cfg.train

    def loss_and_grads(batch):
        with tf.GradientTape() as tape:
            per_ex = losses.dsm_loss_given(sde, score, batch["x0"], batch["u"], batch["e"], tc.weighting, tc.importance)
            loss = tf.nn.compute_average_loss(per_ex, global_batch_size=tc.batch_size)
        return loss, tape.gradient(loss, variables)

    def replica_step(batch):
        loss, grads = (loss_and_grads(batch) if tc.grad_accum == 1
                       else accumulate(loss_and_grads, batch, tc.grad_accum, variables))
        total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
        norm = tf.linalg.global_norm(total)
        factor = tf.minimum(1.0, tc.grad_clip / (norm + 1e-12)) if tc.grad_clip > 0 else 1.0
        state.optimizer.apply_gradients(zip([g * factor for g in grads], variables))
        return loss, norm

    @tf.function
    def train_step(batch):
        loss, norm = strategy.run(replica_step, args=(batch,))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None)
        state.ema.update(variables, state.step)
        state.step.assign_add(1)
        return loss, norm

    return train_step


def accumulate(loss_and_grads, batch: dict, k: int, variables):
    """Sum of the losses and gradients of k equal micro-batches, one after another (a while
    loop run one iteration at a time, so only one micro-batch's activations are alive): with
    each micro-batch's loss divided by the *global* batch size, the sums equal the full batch's
    loss and gradient."""
    m = tf.shape(batch["x0"])[0] // k
    loss, grads = tf.constant(0.0), [tf.zeros_like(v) for v in variables]
    for i in tf.range(k):
        # the default runs up to 10 iterations at once: their forward passes do not depend on
        # each other, so several micro-batches' activations would be alive together
        tf.autograph.experimental.set_loop_options(parallel_iterations=1)
        micro = {key: value[i * m:(i + 1) * m] for key, value in batch.items()}
        l_i, g_i = loss_and_grads(micro)
        loss, grads = loss + l_i, [a + b for a, b in zip(grads, g_i)]
    return loss, grads


RESUME_FREE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_grid", "grad_accum")


def check_resumable(cfg: RunConfig, run_dir: Path) -> RunConfig:
    """A run directory resumes only with the settings it was started with (the budget may grow)."""
    if not (run_dir / "config.json").exists():
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


def train(cfg: RunConfig, run_dir, strategy: Optional[tf.distribute.Strategy] = None,
          progress: bool = True, stop_after: Optional[int] = None, log: Callable = print) -> dict:
    """Train (or resume) the score model in ``run_dir``; -> summary dict.

    ``stop_after`` ends the session early after that many steps, as an interruption would.
    """
    strategy = strategy or tf.distribute.get_strategy()
    run_dir = Path(run_dir)
    array = data_lib.load(cfg.data.dataset, cfg.data.split, cfg.data.data_dir).array
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, shape=tuple(array.shape[1:])))
    cfg = check_resumable(cfg, run_dir)
    cfg.sde.build()                                   # validate T, eps before writing anything
    if cfg.train.batch_size > len(array):
        raise ValueError(f"batch size {cfg.train.batch_size} exceeds the {len(array)} training examples; "
                         f"lower --batch-size")
    parts = strategy.num_replicas_in_sync * cfg.train.grad_accum
    if cfg.train.batch_size % parts:
        raise ValueError(f"batch size {cfg.train.batch_size} is not divisible by the {strategy.num_replicas_in_sync} "
                         f"replica(s) x {cfg.train.grad_accum} accumulation step(s); change --batch-size or --grad-accum")
    state = build_state(cfg, array.shape[1:], strategy)
    out = distribute.write_dir(run_dir, strategy)      # the run directory, or a non-chief's scratch
    manager = tf.train.CheckpointManager(state.ckpt, str(checkpoints.checkpoint_dir(out)),
                                         max_to_keep=cfg.train.keep_checkpoints)
    if out == run_dir:
        cfg.save(run_dir)
    latest = tf.train.latest_checkpoint(str(checkpoints.checkpoint_dir(run_dir)))   # every worker: the chief's
    if latest:
        checkpoints.restore(state.ckpt, latest)
    start = int(state.step.numpy())
    stop = cfg.train.steps if stop_after is None else min(cfg.train.steps, start + stop_after)
    if start >= stop:
        log(f"{run_dir}: already trained for {start} steps")
        return {"step": start, "run_dir": str(run_dir)}
    log(f"training {run_dir} from step {start} to {stop} ({networks.count_params(state.net):,} parameters, "
        f"{strategy.num_replicas_in_sync} replica(s))")
    try:
        result = _loop(cfg, out, state, manager, strategy, start, stop, array, progress)
    finally:
        if out != run_dir:
            shutil.rmtree(out, ignore_errors=True)
    return {**result, "run_dir": str(run_dir), "chief": out == run_dir, "weights_digest": weights_digest(state.net)}


def weights_digest(net) -> str:
    """SHA-256 of the trained (non-EMA) weights: equal on every worker after a multi-worker run."""
    h = hashlib.sha256()
    for v in net.trainable_variables:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]


def _loop(cfg, run_dir, state, manager, strategy, start, stop, array, progress) -> dict:
    step_fn = make_train_step(cfg, state, strategy)
    dist = strategy.experimental_distribute_dataset(make_dataset(array, cfg, start, stop))
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
                    raise FloatingPointError(f"loss is {loss} at step {step}; lower --lr (the last good "
                                             f"checkpoint is kept in {manager.directory})")
                lr = float(state.optimizer.learning_rate)
                _log_metrics(metrics_path, writer, step, loss, float(norm_t), lr, rate, time.perf_counter() - t0)
                bar.update(step, f"loss {loss:.4f}  {rate:.0f} img/s")
            if step % cfg.train.checkpoint_every == 0:
                manager.save(checkpoint_number=step)
    finally:
        step = int(state.step.numpy())
        if manager.latest_checkpoint is None or not manager.latest_checkpoint.endswith(f"-{step}"):
            manager.save(checkpoint_number=step)
        bar.close()
        writer.flush()
    if step == cfg.train.steps and len(array.shape) == 4 and cfg.train.sample_grid > 0:
        _log_sample_grid(cfg, state, writer, step)
    return {"step": step, "loss": loss, "run_dir": str(run_dir), "checkpoint": manager.latest_checkpoint,
            "seconds": time.perf_counter() - t0}


def _log_sample_grid(cfg, state, writer, step):
    """A grid of EMA samples (Euler-Maruyama from p_noise, 1000 T steps) in TensorBoard at the end."""
    from shortdiff_tf import images, samplers
    shadow = [v.numpy() for v in state.net.trainable_variables]
    state.ema.copy_to(state.net.trainable_variables)
    sde = cfg.sde.build()
    res = samplers.Sampler(sde, networks.score_function(state.net, sde), sde.prior(cfg.data.shape),
                           samplers.PRESETS["em"])(cfg.train.sample_grid, cfg.train.seed)
    for v, value in zip(state.net.trainable_variables, shadow):
        v.assign(value)
    grid = images.grid(data_lib.to_uint8(res.x.numpy()))
    with writer.as_default(step=step):
        tf.summary.image("samples_em_p_noise", grid[None], step=step)
    writer.flush()


def _rate(cfg, last, step) -> float:
    dt = max(time.perf_counter() - last[1], 1e-9)
    return (step - last[0]) * cfg.train.batch_size / dt


def _log_metrics(path: Path, writer, step, loss, grad_norm, lr, rate, wall):
    row = {"step": step, "loss": loss, "grad_norm": grad_norm, "lr": lr, "images_per_s": rate, "wall_time": wall}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")
    with writer.as_default(step=step):
        tf.summary.scalar("loss", loss)
        tf.summary.scalar("learning_rate", lr)
        tf.summary.scalar("grad_norm", grad_norm)
