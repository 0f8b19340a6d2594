"""Group normalisation (Wu & He 2018) with a hand-written gradient, for NHWC images.

For x [B, H, W, C] in G groups of C/G channels, with the mean mu and inverse standard deviation
r = (var + eps)^(-1/2) of each (example, group) over H, W and the group's channels,

    y = gamma * (x - mu) r + beta  =  x * a + (beta - mu a),   a = gamma r   (per example, channel).

The statistics are reduced per channel first ([B, C], where the reduction runs over the
contiguous rows of the tensor, held as [B, G, C/G]) and then per group ([B, G, 1], which
broadcasts back over the group), and y is one multiply-add with [B, 1, 1, C] coefficients: Keras' GroupNormalization reshapes to [B, H, W, G, C/G] and broadcasts along an
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


class _Layout:
    """The shapes one GroupNorm call moves between, as constants built once per call (a small
    graph traces and instantiates fast): per-channel values [B, C] are held grouped as
    [B, G, C/G], where a group's mean is one reduction that broadcasts back over its channels,
    and are applied to x [B, H, W, C] as [B, 1, 1, C]."""

    def __init__(self, x, groups: int):
        c = x.shape[-1]
        self.grouped = tf.constant([-1, groups, c // groups])
        self.image = tf.constant([-1, 1, 1, c])
        self.channels = tf.constant([c])
        self.spatial = tf.constant([1, 2])
        self.group_axis = tf.constant(-1)
        self.ones = tf.ones([1, groups, c // groups], x.dtype)
        self.hw = _pixels(x)

    def channel_mean(self, v):
        """[B, H, W, C] -> the mean over H, W of each channel, grouped [B, G, C/G]."""
        return tf.reshape(tf.reduce_mean(v, self.spatial), self.grouped)

    def group_mean(self, v):
        """[B, G, C/G] -> the mean over each group [B, G, 1] (it broadcasts over the group)."""
        return tf.reduce_mean(v, self.group_axis, keepdims=True)

    def to_image(self, v):
        """[B, G, C/G] -> [B, 1, 1, C]."""
        return tf.reshape(v, self.image)

    def spread(self, v):
        """[B, G, 1] -> [B, 1, 1, C]: a group's value on each of its channels."""
        return self.to_image(v * self.ones)

    def per_channel(self, v):
        """[B, G, C/G] per-example channel means -> their sum over the batch and the H x W pixels, [C]
        (a weight's gradient)."""
        return tf.reshape(tf.reduce_sum(v, 0) * self.hw, self.channels)


def _pixels(x):
    """H * W of x [B, H, W, C] as x's dtype: a constant when the shape is static."""
    if x.shape[1] is not None and x.shape[2] is not None:
        return tf.constant(x.shape[1] * x.shape[2], x.dtype)
    return tf.cast(tf.shape(x)[1] * tf.shape(x)[2], x.dtype)


def _forward(x, gamma, beta, epsilon, silu, k: _Layout):
    """-> (output, mu [B, G, 1], r [B, G, 1], a [B, G, C/G], gamma [1, G, C/G], sigmoid(z) or
    None), z = x a + (beta - mu a), a = gamma r; two passes over x for the moments."""
    mean = k.group_mean(k.channel_mean(x))
    r = tf.math.rsqrt(k.group_mean(k.channel_mean(tf.math.squared_difference(x, k.spread(mean)))) + epsilon)
    gamma = tf.reshape(gamma, k.grouped)
    a = r * gamma                                                     # [B, G, C/G]
    z = x * k.to_image(a) + k.to_image(tf.reshape(beta, k.grouped) - mean * a)
    if not silu:
        return z, mean, r, a, gamma, None
    s = tf.sigmoid(z)
    return z * s, mean, r, a, gamma, s


def group_norm(x, gamma, beta, groups: int, epsilon: float = 1e-6, silu: bool = False):
    """GroupNorm of x [B, H, W, C], then SiLU(z) = z sigmoid(z) if ``silu``, with the
    closed-form gradient of the module docstring (SiLU'(z) = s + y (1 - s), s = sigmoid(z))."""
    k = _Layout(x, groups)

    @tf.custom_gradient
    def norm(x, gamma, beta):
        y, mean, r, a, gamma_g, s = _forward(x, gamma, beta, epsilon, silu, k)

        def grad(dy):
            # the forward's own tensors: every tape active during the forward recorded how they
            # depend on x, so an outer tape differentiates this gradient too (second derivatives,
            # Hessian-vector products: tested), and tracing builds the forward once, not twice
            if silu:
                dy = dy * (s + y * (1.0 - s))
            mean_dy = k.channel_mean(dy)                                        # [B, G, C/G]
            mean_dy_xhat = (k.channel_mean(dy * x) - mean * mean_dy) * r
            m1, m2 = k.group_mean(mean_dy * gamma_g), k.group_mean(mean_dy_xhat * gamma_g)   # [B, G, 1]
            q = -r * r * m2
            dx = dy * k.to_image(a) + (x * k.spread(q) + k.spread(-r * m1 - mean * q))
            return dx, k.per_channel(mean_dy_xhat), k.per_channel(mean_dy)

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
