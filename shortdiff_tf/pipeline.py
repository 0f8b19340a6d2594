"""The tf.data input pipeline of score training and prior fitting: batches as pure functions of
(seed, step).

Epoch k visits the n examples in a stateless permutation of (seed, k); the global batch of step
i holds positions i B, ..., i B + B - 1 of that endless sequence (``index``: the dropout masks
are keyed by it), with its flips, dequantisation noise u, the diffusion-time uniforms and the
noise e drawn from ``fold_in(seed, i)``.  The strategy splits each global batch over its
replicas, so a resumed run, a run on several replicas and an uninterrupted single-device run see
the same batches.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from shortdiff_tf import pixels
from shortdiff_tf.seeds import split


def epoch_order(n: int, epoch, seed: int):
    """The permutation of the n examples in a given epoch (stateless)."""
    keys = tf.random.stateless_uniform([n], split(tf.constant([seed, 1]), epoch))
    return tf.argsort(keys)


def make_batch_fn(array: np.ndarray, batch_size: int, seed: int, dequantize: bool, flip: bool = False):
    """step -> {x0, u, e, index}: the global batch of a step and its noise, all stateless in (seed, step).

    Images (uint8) are flipped left-right with probability 1/2 each when ``flip``, and dequantised,
    x0 = LOW + RANGE (k + u) / 256, with u ~ U(0, 1) (or 1/2 when ``dequantize`` is off); ``u`` [B]
    are the uniforms of the diffusion times; ``e`` the noise; ``index`` [B] the positions.
    """
    n = array.shape[0]
    if batch_size > n:
        raise ValueError(f"batch size {batch_size} exceeds the {n} training examples; lower --batch-size")
    source = tf.constant(array)

    def batch(step):
        j = step * batch_size + tf.range(batch_size, dtype=tf.int64)
        epoch = j // n
        first = epoch[0]
        orders = tf.stack([epoch_order(n, first, seed), epoch_order(n, first + 1, seed)])
        idx = tf.gather_nd(orders, tf.stack([epoch - first, j % n], axis=1))
        noise_seed = split(tf.constant([seed, 2]), step)
        x = tf.gather(source, idx)
        if flip:
            x = random_flip(x, split(noise_seed, 3))
        return {**with_noise(x, noise_seed, dequantize), "index": j}

    return batch


def random_flip(x, seed):
    """Each image of x [B, H, W, C] reversed left-right with probability 1/2 (ScoreSDE's random_flip)."""
    flip = tf.random.stateless_uniform(tf.shape(x)[:1], seed) < 0.5
    return tf.where(flip[:, None, None, None], tf.reverse(x, [2]), x)


def with_noise(x, seed, dequantize: bool) -> dict:
    """A batch x (uint8 images or float vectors) -> {x0, u, e} with its noise from ``seed``:
    images dequantised (u ~ U(0, 1), or 1/2 without ``dequantize``) and scaled, the uniforms u
    [B] of the diffusion times, and e ~ N(0, I)."""
    if x.dtype == tf.uint8:
        u_pix = tf.random.stateless_uniform(tf.shape(x), split(seed, 0)) if dequantize else 0.5
        x = pixels.dequantize(x, u_pix * tf.ones(tf.shape(x)))
    x = tf.cast(x, tf.float32)
    return {"x0": x, "u": tf.random.stateless_uniform(tf.shape(x)[:1], split(seed, 1), dtype=tf.float64),
            "e": tf.random.stateless_normal(tf.shape(x), split(seed, 2))}


def step_dataset(batch_fn: Callable, start: int, stop: int) -> tf.data.Dataset:
    """The batches of steps start, ..., stop - 1, computed ahead in parallel, in order."""
    ds = tf.data.Dataset.range(start, stop).map(batch_fn, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(2)


def distributed_batches(batch_fn: Callable, start: int, stop: int, strategy: tf.distribute.Strategy):
    """``step_dataset`` with each global batch split across the strategy's replicas (and workers)."""
    return strategy.experimental_distribute_dataset(step_dataset(batch_fn, start, stop))
