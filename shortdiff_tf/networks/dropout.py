"""Dropout keyed by (seed, layer, global example index), from half as many random bits, with a
one-multiply gradient.

y = x m,  m = keep / (1 - rate_q),  keep = [u >= rate_q],  u uniform on {0, ..., 2^16 - 1} / 2^16,

where rate_q = round(2^16 rate) / 2^16 is the rate on a grid of 2^-16 (|rate_q - rate| <= 2^-17),
so E[y] = x exactly.  Each 32 random bits give the keep decisions of two elements.

The bits of example j of a batch are row j of ``seeds.row_bits`` under the layer's key from
(seed, layer): an example's mask depends on its position j in the stream of examples, not on
where it sits in a replica's share of the batch.  So R replicas, each drawing only its own rows,
draw exactly the masks one device draws for the whole batch (TF and XLA alike: tested).
"""
from __future__ import annotations

import dataclasses
import math
import zlib

import keras
import tensorflow as tf

from shortdiff_tf.seeds import row_bits

RESOLUTION = 2**16


@dataclasses.dataclass(frozen=True)
class NoiseKey:
    """What a training forward pass draws its dropout masks from: a stateless ``seed`` (int32 [2])
    and the stream position ``first`` (int64 []) of the batch's first row (rows are consecutive)."""
    seed: tf.Tensor
    first: tf.Tensor


def quantized_rate(rate: float) -> float:
    """The drop probability actually used: ``rate`` rounded to a multiple of 2^-16."""
    return round(rate * RESOLUTION) / RESOLUTION


def dropout_mask(rows, example_shape, rate: float, seed, first=0, dtype=tf.float32):
    """m of the module docstring, [rows, *example_shape], for the examples first, ..., first + rows - 1."""
    n = math.prod(int(d) for d in example_shape)
    bits = row_bits(rows, (n + 1) // 2, seed, first)
    halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1, 2 * ((n + 1) // 2)])[:, :n]
    threshold = int(quantized_rate(rate) * RESOLUTION)
    keep = tf.reshape(halves >= tf.constant(threshold, tf.uint16), tf.concat([[rows], list(example_shape)], 0))
    return tf.where(keep, tf.constant(1.0 / (1.0 - quantized_rate(rate)), dtype), tf.constant(0.0, dtype))


def layer_salt(name: str) -> int:
    """A stable 31-bit number of a layer's name: its masks' key is (seed, salt)."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


@keras.saving.register_keras_serializable(package="shortdiff")
class Dropout(keras.layers.Layer):
    """Inverted dropout at ``rate`` (on the 2^-16 grid) while training, its masks keyed by
    ``noise`` (a ``NoiseKey``) and ``salt`` (a stable number of the layer); the identity otherwise."""

    def __init__(self, rate: float, salt: int = 0, **kw):
        super().__init__(**kw)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1); got {rate}")
        self.rate, self.salt = float(rate), int(salt)

    def call(self, x, training=None, noise=None):
        if not training or quantized_rate(self.rate) == 0.0:
            return x
        if noise is None:
            raise ValueError("dropout while training needs a NoiseKey (the seed and the batch's stream position)")
        seed = tf.random.experimental.stateless_fold_in(tf.cast(noise.seed, tf.int32), self.salt)
        return x * dropout_mask(tf.shape(x)[0], tuple(x.shape[1:]), self.rate, seed, noise.first, x.dtype)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "salt": self.salt}
