"""Embeddings of the noise level: Gaussian Fourier features of c = log std(t).

The networks are conditioned on the noise level log sqrt(s_t), never on a hard-coded 999 t,
so a network trained at T = 1 can be reused on [eps, T2] for any T2 <= 1 (and any SDE).
"""
from __future__ import annotations

import math

import keras
from keras import ops

from shortdiff_tf.networks.precision import FP32


@keras.saving.register_keras_serializable(package="shortdiff")
class FourierTime(keras.layers.Layer):
    """c [B] -> [sin(2 pi w c), cos(2 pi w c)] [B, dim], w ~ N(0, scale^2) fixed (Tancik et al.)."""

    def __init__(self, dim: int = 128, scale: float = 16.0, **kw):
        super().__init__(**kw)
        if dim < 2 or dim % 2:
            raise ValueError(f"FourierTime dim must be an even number >= 2; got {dim}")
        self.dim, self.scale = int(dim), float(scale)

    def build(self, c_shape):
        init = keras.initializers.RandomNormal(stddev=self.scale, seed=0)
        self.w = self.add_weight(shape=(self.dim // 2,), initializer=init, trainable=False, name="w")

    def call(self, c):
        proj = 2.0 * math.pi * ops.expand_dims(c, -1) * self.w      # [B, dim/2]
        return ops.concatenate([ops.sin(proj), ops.cos(proj)], axis=-1)

    def compute_output_shape(self, c_shape):
        return tuple(c_shape) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "scale": self.scale}


@keras.saving.register_keras_serializable(package="shortdiff")
class NoiseEmbedding(keras.layers.Layer):
    """c [B] -> ``features`` Fourier features -> Dense -> SiLU -> Dense: the conditioning vector
    [B, dim] (dim = 4 ch; ``features`` defaults to dim, DDPM++ uses ch)."""

    def __init__(self, dim: int, fourier_scale: float = 16.0, features: int = 0, **kw):
        super().__init__(**kw)
        self.dim, self.fourier_scale = int(dim), float(fourier_scale)
        self.features = int(features) or self.dim
        # sin(2 pi w c) with |2 pi w c| up to hundreds: in bf16 it would be noise
        self.fourier = FourierTime(self.features, self.fourier_scale, name="fourier", dtype=FP32)
        self.dense_0 = keras.layers.Dense(self.dim, name="dense_0")
        self.dense_1 = keras.layers.Dense(self.dim, name="dense_1")

    def build(self, c_shape):
        self.fourier.build(c_shape)
        self.dense_0.build(tuple(c_shape) + (self.features,))
        self.dense_1.build(tuple(c_shape) + (self.dim,))

    def call(self, c):
        return self.dense_1(ops.silu(self.dense_0(self.fourier(c))))

    def compute_output_shape(self, c_shape):
        return tuple(c_shape) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "fourier_scale": self.fourier_scale,
                "features": self.features}
