"""The standard Gaussian prior p_noise = N(0, std^2 I) at T."""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from shortdiff_tf.seeds import row_normal


def event_axes(x, event_rank: int):
    """The trailing ``event_rank`` axes of x, which log-densities sum over."""
    return tf.range(tf.rank(x) - event_rank, tf.rank(x))


def check_event_shape(x, event_shape) -> None:
    """ValueError when the static trailing shape of x differs from the prior's event shape."""
    shape = x.shape[1:]
    if shape.rank is not None and list(shape) != list(event_shape) and None not in shape:
        raise ValueError(f"input shape {list(shape)} does not match the prior's event shape "
                         f"{list(event_shape)}")


def expected_log_normal(mean, variance, loc, scale_sq):
    """E_{x ~ N(mean, variance I)} log N(x; loc, diag(scale_sq)) per example [B] (mean [B, ...]):

      -1/2 sum_i [((mean_i - loc_i)^2 + variance) / scale_sq_i + log(2 pi scale_sq_i)].
    """
    variance, loc, scale_sq = (tf.cast(v, mean.dtype) for v in (variance, loc, scale_sq))
    terms = (tf.square(mean - loc) + variance) / scale_sq + tf.math.log(2 * math.pi * scale_sq)
    return -0.5 * tf.reduce_sum(terms + tf.zeros_like(mean), axis=tf.range(1, tf.rank(mean)))


class GaussianPrior(tf.Module):
    """log N(x; mean, diag(std^2)) = -sum((x - mean)^2 / (2 std^2)) - sum(log std) - D/2 log(2 pi).

    With scalar mean 0 and std it is p_noise; with per-dimension arrays it is the maximum-likelihood
    diagonal Gaussian, the simplest auxiliary prior (its family contains p_noise, Proposition 1).
    """

    def __init__(self, event_shape, std=1.0, mean=0.0, name="gaussian_prior"):
        super().__init__(name=name)
        self.event_shape = [int(d) for d in event_shape]
        self.std = np.broadcast_to(np.asarray(std, np.float64), self.event_shape).copy()
        self.mean = np.broadcast_to(np.asarray(mean, np.float64), self.event_shape).copy()
        if not np.all(self.std > 0):
            raise ValueError("the prior std must be > 0")
        self.dim = int(math.prod(self.event_shape))
        self._norm = -float(np.sum(np.log(self.std))) - 0.5 * self.dim * math.log(2 * math.pi)

    def log_prob(self, x):
        """x [B, *event_shape] -> [B]."""
        check_event_shape(x, self.event_shape)
        z = (x - tf.constant(self.mean, x.dtype)) / tf.constant(self.std, x.dtype)
        return -0.5 * tf.reduce_sum(tf.square(z), axis=event_axes(x, len(self.event_shape))) + self._norm

    def expected_log_prob(self, mean, variance):
        """E log p(x) for x ~ N(mean, variance I) [B], in closed form (``expected_log_normal``)."""
        return expected_log_normal(mean, variance, tf.constant(self.mean, mean.dtype),
                                   tf.constant(np.square(self.std), mean.dtype))

    def sample(self, n, seed, temperature: float = 1.0, dtype=tf.float32, first=0):
        """n draws of shape event_shape, draw j keyed by index first + j (``seeds.row_normal``);
        ``temperature`` scales the std."""
        z = row_normal(n, self.event_shape, seed, first, dtype)
        return tf.constant(self.mean, dtype) + z * tf.constant(self.std * temperature, dtype)

    def get_config(self) -> dict:
        return {"kind": "gaussian", "event_shape": self.event_shape, "std": self.std.tolist(),
                "mean": self.mean.tolist()}
