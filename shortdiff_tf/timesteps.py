"""Sampling the diffusion time t on [eps, T] for Monte Carlo estimates of time integrals.

Every estimator of an integral int_eps^T h(t) dt here draws u ~ U(0, 1), maps it to t(u) with
density q(t), and weighs h by w(t) = 1 / q(t), so that E_q[w h] = int_eps^T h dt.

  uniform:     t = eps + (T - eps) u,  w = T - eps
  importance:  log rho_t uniform on [log rho_eps, log rho_T], with rho_t = s_t / m_t^2 the
               inverse signal-to-noise ratio.  Since d log rho_t / dt = g^2 / s_t for every
               linear SDE, q(t) = (g^2 / s_t) / log(rho_T / rho_eps) and
               w(t) = log(rho_T / rho_eps) s_t / g^2, which makes the likelihood weight
               w g^2 / s_t a constant: no 1/t blow-up near eps, no exp(B) blow-up near T.

T may be a Python float or a float64 tensor (the T* ascent differentiates through it); all
of this is graph-safe.
"""
from __future__ import annotations

import tensorflow as tf

SCHEMES = ("uniform", "importance")


def as_time(T, dtype=tf.float64):
    """A time as a tensor of ``dtype``: Python floats are converted exactly (``tf.cast`` of a Python
    float would round it to float32 first), tensors cast."""
    if isinstance(T, (tf.Tensor, tf.Variable)):
        return tf.cast(T, dtype)
    return tf.constant(T, dtype)


def time_from_uniform(sde, u, importance: bool = False, T=None, dtype=tf.float32):
    """u ~ U(0, 1) [n] -> (t [n] on [eps, T], w(t) = 1 / q(t) [n]), computed in float64.

    ``T`` defaults to ``sde.T``; a tensor T keeps both t and w differentiable in T.
    """
    u = tf.cast(u, tf.float64)
    T = as_time(sde.T if T is None else T)
    eps = tf.constant(sde.eps, tf.float64)
    if not importance:
        t = eps + (T - eps) * u
        return tf.cast(t, dtype), tf.cast((T - eps) * tf.ones_like(u), dtype)
    rho_eps = sde.noise_ratio(eps)
    log_ratio = tf.math.log(sde.noise_ratio(T) / rho_eps)
    t = tf.clip_by_value(sde.time_at_noise_ratio(rho_eps * tf.exp(u * log_ratio)), eps, T)
    w = log_ratio * sde.variance(t) / sde.g2(t)
    return tf.cast(t, dtype), tf.cast(w, dtype)


def sample_time(sde, n, seed, importance: bool = False, T=None, dtype=tf.float32):
    """t [n] on [eps, T] and its weight w(t), from a stateless seed."""
    u = tf.random.stateless_uniform([n], seed, dtype=tf.float64)
    return time_from_uniform(sde, u, importance, T, dtype)
