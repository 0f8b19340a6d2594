"""Stateless seeds: every random draw in shortdiff is a pure function of an int32 [2] seed."""
from __future__ import annotations

import tensorflow as tf


def as_seed(seed) -> tf.Tensor:
    """An int, a pair, or an int32 [2] tensor -> an int32 [2] tensor for tf.random.stateless_*."""
    if isinstance(seed, tf.Tensor):
        seed = tf.cast(seed, tf.int32)
        return seed if seed.shape.rank == 1 else tf.stack([seed, tf.zeros_like(seed)])
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.constant(list(seed), tf.int32)


def split(seed, i) -> tf.Tensor:
    """The i-th child of ``seed`` (``i`` may be a loop tensor)."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), tf.cast(i, tf.int32))
