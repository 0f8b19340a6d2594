"""The score model's training state and its distributed step (denoising score matching).

``build_state`` creates the network (in the run's precision), Adam with warm-up, the EMA and the
step counter under ``strategy.scope()``; ``make_train_step`` returns one ``tf.function`` that
runs a global batch: each replica's DSM loss is its share of the global-batch mean
(``tf.nn.compute_average_loss``), gradients are summed over replicas once, clipped by their
global norm and applied, then each device updates its own copy of the EMA from its own copy of
the weights (``strategy.extended.update``: no cross-device traffic).  The dropout masks of a
batch are keyed by its examples' stream positions (``NoiseKey``), so R replicas draw what one
device draws.  ``jit`` compiles each replica's forward and backward pass with XLA.
The run-level loop (run directory, checkpoints, metrics) is ``app.train``.
"""
from __future__ import annotations

import dataclasses
import hashlib

import keras
import numpy as np
import tensorflow as tf

from shortdiff_tf import checkpoints, losses, networks, optim
from shortdiff_tf.config import RunConfig


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
        net = networks.build_score_net(cfg.model, shape, cfg.train.precision)
        opt = optim.adam(cfg.train.lr, cfg.train.warmup, cfg.train.precision)
        opt.build(net.trainable_variables)
        ema = checkpoints.EMA(net.trainable_variables, cfg.train.ema_decay)
        step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        ckpt = tf.train.Checkpoint(params=checkpoints.variable_dict(net.variables), ema=ema, optimizer=opt, step=step)
    return State(net, opt, ema, step, ckpt)


def make_train_step(cfg: RunConfig, state: State, strategy):
    """batch -> (loss, gradient norm): one distributed step, then the EMA and the step counter."""
    sde = cfg.sde.build()
    score = networks.score_function(state.net, sde, training=True)
    variables = state.net.trainable_variables
    tc = cfg.train
    dropout_seed = tf.constant([tc.seed, 3], tf.int32)

    def loss_and_grads(batch):
        noise = networks.NoiseKey(dropout_seed, batch["index"][0])
        keyed = lambda x, t: score(x, t, noise=noise)
        with tf.GradientTape() as tape:
            per_ex = losses.dsm_loss_given(sde, keyed, batch["x0"], batch["u"], batch["e"], tc.weighting, tc.importance,
                                           reduce_mean=tc.reduce_mean)
            loss = tf.nn.compute_average_loss(per_ex, global_batch_size=tc.batch_size)
            scaled = loss * optim.loss_scale(state.optimizer)       # fp16: loss scaling (else 1)
        return loss, tape.gradient(scaled, variables)

    if tc.jit:      # XLA for the forward and backward pass; the all-reduce and the update stay outside
        loss_and_grads = tf.function(loss_and_grads, jit_compile=True)

    def replica_step(batch):
        loss, grads = (loss_and_grads(batch) if tc.grad_accum == 1
                       else accumulate(loss_and_grads, batch, tc.grad_accum, variables))
        return loss, optim.clipped_apply(state.optimizer, grads, variables, tc.grad_clip)

    @tf.function
    def train_step(batch):
        loss, norm = strategy.run(replica_step, args=(batch,))
        loss = strategy.reduce(tf.distribute.ReduceOp.SUM, loss, axis=None)
        norm = strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None)
        state.ema.update(variables, state.step, strategy)
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


def weights_digest(net) -> str:
    """SHA-256 of the trained (non-EMA) weights: equal on every worker after a multi-worker run."""
    h = hashlib.sha256()
    for v in net.trainable_variables:
        h.update(np.ascontiguousarray(v.numpy()).tobytes())
    return h.hexdigest()[:16]
