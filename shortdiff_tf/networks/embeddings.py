"""Embeddings of the noise level c: Gaussian Fourier features, or ScoreSDE's sinusoids.

  fourier (ours):          c = log std(t), features [sin(2 pi w c), cos(2 pi w c)], w ~ N(0, 16^2)
  positional (ScoreSDE):   c = (N - 1) t with N = 1000 (the label ScoreSDE and DDPM feed their
                           networks), features [sin(c f_k), cos(c f_k)], f_k = 10000^(-k / (d/2 - 1))

Either way the label is a function of t on the [0, 1] schedule, so a network trained at T = 1
is reused unchanged on [eps, T2] for any T2 <= 1; ``parameterization`` turns t into c.
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
class PositionalTime(keras.layers.Layer):
    """c [B] -> [sin(c f_k), cos(c f_k)] [B, dim], f_k = max_positions^(-k / (dim/2 - 1)), k < dim/2:
    the sinusoidal embedding of DDPM and ScoreSDE (``get_timestep_embedding``)."""

    def __init__(self, dim: int = 128, max_positions: int = 10000, **kw):
        super().__init__(**kw)
        if dim < 4 or dim % 2:
            raise ValueError(f"PositionalTime dim must be an even number >= 4; got {dim}")
        self.dim, self.max_positions = int(dim), int(max_positions)

    def call(self, c):
        half = self.dim // 2
        freqs = ops.exp(ops.arange(half, dtype="float32") * (-math.log(self.max_positions) / (half - 1)))
        arg = ops.expand_dims(ops.cast(c, "float32"), -1) * freqs               # [B, dim/2]
        return ops.concatenate([ops.sin(arg), ops.cos(arg)], axis=-1)

    def compute_output_shape(self, c_shape):
        return tuple(c_shape) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "max_positions": self.max_positions}


EMBEDDINGS = ("fourier", "positional")


@keras.saving.register_keras_serializable(package="shortdiff")
class NoiseEmbedding(keras.layers.Layer):
    """c [B] -> ``features`` Fourier or sinusoidal features -> Dense -> SiLU -> Dense: the
    conditioning vector [B, dim] (dim = 4 ch; ``features`` defaults to dim, DDPM++ uses ch)."""

    def __init__(self, dim: int, fourier_scale: float = 16.0, features: int = 0, kind: str = "fourier", **kw):
        super().__init__(**kw)
        if kind not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {kind!r}; choose one of {', '.join(EMBEDDINGS)}")
        self.dim, self.fourier_scale, self.kind = int(dim), float(fourier_scale), kind
        self.features = int(features) or self.dim
        # sin(2 pi w c) with |2 pi w c| up to hundreds: in bf16 it would be noise
        self.sinusoids = (FourierTime(self.features, self.fourier_scale, name="fourier", dtype=FP32) if kind == "fourier"
                        else PositionalTime(self.features, name="positional", dtype=FP32))
        self.dense_0 = keras.layers.Dense(self.dim, name="dense_0")
        self.dense_1 = keras.layers.Dense(self.dim, name="dense_1")

    def build(self, c_shape):
        self.sinusoids.build(c_shape)
        self.dense_0.build(tuple(c_shape) + (self.features,))
        self.dense_1.build(tuple(c_shape) + (self.dim,))

    def call(self, c):
        return self.dense_1(ops.silu(self.dense_0(self.sinusoids(c))))

    def compute_output_shape(self, c_shape):
        return tuple(c_shape) + (self.dim,)

    def get_config(self):
        return {**super().get_config(), "dim": self.dim, "fourier_scale": self.fourier_scale,
                "features": self.features, "kind": self.kind}
