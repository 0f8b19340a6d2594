"""Group normalisation (Wu & He 2018) with a hand-written gradient, for NHWC images.

For x [B, H, W, C] in G groups of C/G channels, with the mean mu and inverse standard deviation
r = (var + eps)^(-1/2) of each (example, group) over H, W and the group's channels,

    y = gamma * (x - mu) r + beta  =  x * a + (beta - mu a),   a = gamma r   (per example, channel).

The statistics are reduced per channel first ([B, C], where the reduction runs over the
contiguous rows of the tensor) and then per group, and y is one multiply-add with [B, 1, 1, C]
coefficients: Keras' GroupNormalization reshapes to [B, H, W, G, C/G] and broadcasts along an
innermost axis of C/G (often 4) elements, which is several times slower on CPU.

The gradient is the closed form (x_hat = (x - mu) r; <.> the mean over a group)

    dx = r (gamma dy - <gamma dy> - x_hat <gamma dy x_hat>),
    dgamma = sum_{b,h,w} dy x_hat,   dbeta = sum_{b,h,w} dy,

written as dx = dy p + x q + k with [B, C] coefficients p, q, k, after the two per-channel
reductions of dy and dy x.
"""
from __future__ import annotations

import keras
import tensorflow as tf


def _bcast(v):
    """[B, C] -> [B, 1, 1, C] (static shapes only: a graph of few ops traces fast)."""
    return tf.reshape(v, [-1, 1, 1, v.shape[-1]])


def group_mean(per_channel, groups: int):
    """[B, C] per-channel means -> the mean over each channel's group, repeated to [B, C]."""
    c = per_channel.shape[-1]
    g = tf.reduce_mean(tf.reshape(per_channel, [-1, groups, c // groups]), -1, keepdims=True)
    return tf.reshape(tf.tile(g, [1, 1, c // groups]), [-1, c])


def _pixels(x):
    """H * W of x [B, H, W, C] as x's dtype: a constant when the shape is static."""
    if x.shape[1] is not None and x.shape[2] is not None:
        return tf.constant(x.shape[1] * x.shape[2], x.dtype)
    return tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)


def group_moments(x, groups: int, epsilon: float):
    """-> (mu, r) [B, C]: each channel's group mean and (var + eps)^(-1/2), two passes over x."""
    mean = group_mean(tf.reduce_mean(x, [1, 2]), groups)
    var = group_mean(tf.reduce_mean(tf.math.squared_difference(x, _bcast(mean)), [1, 2]), groups)
    return mean, tf.math.rsqrt(var + epsilon)


def _forward(x, gamma, beta, groups, epsilon, silu):
    """-> (output, mu, r, a, sigmoid(z) or None), z = x a + (beta - mu a)."""
    mean, r = group_moments(x, groups, epsilon)
    a = r * gamma
    z = x * _bcast(a) + _bcast(beta - mean * a)
    if not silu:
        return z, mean, r, a, None
    s = tf.sigmoid(z)
    return z * s, mean, r, a, s


def group_norm(x, gamma, beta, groups: int, epsilon: float = 1e-6, silu: bool = False):
    """GroupNorm of x [B, H, W, C], then SiLU(z) = z sigmoid(z) if ``silu``, with the
    closed-form gradient of the module docstring (SiLU'(z) = s + y (1 - s), s = sigmoid(z))."""

    @tf.custom_gradient
    def norm(x, gamma, beta):
        y, mean, r, a, s = _forward(x, gamma, beta, groups, epsilon, silu)

        def grad(dy):
            # the forward's own tensors: every tape active during the forward recorded how they
            # depend on x, so an outer tape differentiates this gradient too (second derivatives,
            # Hessian-vector products: tested), and tracing builds the forward once, not twice
            if silu:
                dy = dy * (s + y * (1.0 - s))
            mean_dy = tf.reduce_mean(dy, [1, 2])                               # [B, C]
            mean_dy_xhat = (tf.reduce_mean(dy * x, [1, 2]) - mean * mean_dy) * r
            m1, m2 = group_mean(mean_dy * gamma, groups), group_mean(mean_dy_xhat * gamma, groups)
            q = -r * r * m2
            dx = dy * _bcast(a) + (x * _bcast(q) + _bcast(-r * m1 - mean * q))
            hw = _pixels(x)
            return dx, tf.reduce_sum(mean_dy_xhat, 0) * hw, tf.reduce_sum(mean_dy, 0) * hw

        return y, grad

    return norm(x, gamma, beta)


@keras.saving.register_keras_serializable(package="shortdiff")
class GroupNorm(keras.layers.Layer):
    """GroupNorm over the last axis of NHWC images, optionally followed by SiLU (``silu=True``,
    one fused op); weights ``gamma`` and ``beta`` as in Keras' GroupNormalization."""

    def __init__(self, groups: int, epsilon: float = 1e-6, silu: bool = False, **kw):
        super().__init__(**kw)
        self.groups, self.epsilon, self.silu = int(groups), float(epsilon), bool(silu)

    def build(self, x_shape):
        channels = int(x_shape[-1])
        if len(x_shape) != 4 or channels % self.groups:
            raise ValueError(f"GroupNorm needs [B, H, W, C] with C divisible by {self.groups}; got {x_shape}")
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, x):
        return group_norm(x, tf.convert_to_tensor(self.gamma), tf.convert_to_tensor(self.beta),
                          self.groups, self.epsilon, self.silu)

    def compute_output_shape(self, x_shape):
        return x_shape

    def get_config(self):
        return {**super().get_config(), "groups": self.groups, "epsilon": self.epsilon, "silu": self.silu}
