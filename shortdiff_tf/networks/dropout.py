"""Dropout from half as many random bits, with a one-multiply gradient.

y = x m,  m = keep / (1 - rate_q),  keep = [u >= rate_q],  u uniform on {0, ..., 2^16 - 1} / 2^16,

where rate_q = round(2^16 rate) / 2^16 is the rate on a grid of 2^-16 (|rate_q - rate| <= 2^-17),
so E[y] = x exactly.  Each Philox draw of 32 bits gives the keep decisions of two elements (the
stock dropout draws a float per element), and y = x m is one multiply, whose gradient dy m is
one more (Keras' dropout is a multiply and a select).
"""
from __future__ import annotations

import keras
import tensorflow as tf

RESOLUTION = 2**16


def quantized_rate(rate: float) -> float:
    """The drop probability actually used: ``rate`` rounded to a multiple of 2^-16."""
    return round(rate * RESOLUTION) / RESOLUTION


def dropout_mask(shape, rate: float, seed, dtype=tf.float32):
    """m of the module docstring: 0 with probability rate_q, else 1 / (1 - rate_q)."""
    n = tf.reduce_prod(shape)
    bits = tf.random.stateless_uniform([(n + 1) // 2], seed, minval=None, maxval=None, dtype=tf.int32)
    halves = tf.reshape(tf.bitcast(bits, tf.uint16), [-1])[:n]
    threshold = int(quantized_rate(rate) * RESOLUTION)
    keep = tf.reshape(halves >= tf.constant(threshold, tf.uint16), shape)
    return tf.where(keep, tf.constant(1.0 / (1.0 - quantized_rate(rate)), dtype), tf.constant(0.0, dtype))


@keras.saving.register_keras_serializable(package="shortdiff")
class Dropout(keras.layers.Layer):
    """Inverted dropout at ``rate`` (on the 2^-16 grid) while training; the identity otherwise."""

    def __init__(self, rate: float, seed=None, **kw):
        super().__init__(**kw)
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate must be in [0, 1); got {rate}")
        self.rate, self.seed = float(rate), seed

    def build(self, x_shape):
        # created here, under the layer's name, so that its state has a stable path and is
        # checkpointed with the network (Keras' Dropout makes it in __init__, as
        # "seed_generator_<n>", a number that differs between processes, which breaks resume)
        if quantized_rate(self.rate) > 0.0:
            self.seed_generator = keras.random.SeedGenerator(self.seed, name="seed_generator")

    def call(self, x, training=None):
        if not training or quantized_rate(self.rate) == 0.0:
            return x
        seed = tf.cast(tf.math.floormod(self.seed_generator.next(), tf.int32.max - 1), tf.int32)
        return x * dropout_mask(tf.shape(x), self.rate, seed, x.dtype)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}
