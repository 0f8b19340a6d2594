"""Denoising score matching with t ~ U(eps, T), and the importance sampler of t.

With x_t = m_t x_0 + sqrt(s_t) e, grad log p(x_t | x_0) = -e / sqrt(s_t), and

  variance weighting   (default):  lambda(t) = s_t,    loss = |sqrt(s_t) s_theta + e|^2
  likelihood weighting (Song et al. 2021b): lambda(t) = g(t)^2,
       loss = g^2 |s_theta + e / sqrt(s_t)|^2, whose integral (T - eps) E[...] / 2 is I(s, T).

Importance sampling (for the likelihood weighting) draws the log inverse signal-to-noise ratio
log rho_t = log(s_t / m_t^2) uniformly on [log rho_eps, log rho_T].  Since
d log rho_t / dt = g^2 / s_t for any linear SDE, q(t) = (g^2 / s_t) / log(rho_T / rho_eps) and
the likelihood weight becomes a constant, w(t) g^2 / s_t = log(rho_T / rho_eps): no 1/t blow-up
near eps and no exp(B) blow-up near T.
"""
from __future__ import annotations

import math

import tensorflow as tf

from shortdiff_tf.sde import SDE, bcast
from shortdiff_tf.seeds import split

WEIGHTINGS = ("variance", "likelihood")


def time_from_uniform(sde: SDE, u, importance: bool = False, dtype=tf.float32):
    """Map u ~ U(0, 1) [n] to t on [eps, T] and the weight w(t) = 1 / q(t) (E_q[w h] = int h dt)."""
    u = tf.cast(u, tf.float64)
    if not importance:
        t = sde.eps + (sde.T - sde.eps) * u
        return tf.cast(t, dtype), tf.cast(tf.fill(tf.shape(u), sde.T - sde.eps), dtype)
    rho = lambda t: float(sde.noise_ratio(tf.constant(t, tf.float64)))
    log_ratio = math.log(rho(sde.T) / rho(sde.eps))
    t = sde.time_at_noise_ratio(rho(sde.eps) * tf.exp(u * log_ratio))
    t = tf.clip_by_value(t, sde.eps, sde.T)
    w = log_ratio * sde.variance(t) / sde.g2(t)                     # 1 / q(t)
    return tf.cast(t, dtype), tf.cast(w, dtype)


def sample_time(sde: SDE, n, seed, importance: bool = False, dtype=tf.float32):
    """t [n] on [eps, T] and its weight w(t), from a stateless seed."""
    return time_from_uniform(sde, tf.random.stateless_uniform([n], seed, dtype=tf.float64), importance, dtype)


def dsm_loss_given(sde: SDE, score_fn, x0, u, e, weighting: str = "variance", importance: bool = False):
    """Per-example denoising score-matching loss [B] at t = t(u) with noise e (given, not drawn).

    variance:   |sqrt(s_t) s_theta(x_t, t) + e|^2 / 2
    likelihood: w(t) g(t)^2 |s_theta + e / sqrt(s_t)|^2 / 2   (an unbiased estimate of I(s, T))
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if importance and weighting != "likelihood":
        raise ValueError("importance sampling of t applies to the likelihood weighting only")
    t, w = time_from_uniform(sde, u, importance, x0.dtype)
    std = sde.std(t)
    residual = bcast(std, x0) * score_fn(sde.perturb(x0, t, e), t) + e
    sq = tf.reduce_sum(tf.square(residual), axis=tf.range(1, tf.rank(x0)))
    if weighting == "variance":
        return 0.5 * sq
    return 0.5 * w * sde.g2(t) * sq / tf.square(std)


def dsm_loss(sde: SDE, score_fn, x0, seed, weighting: str = "variance", importance: bool = False):
    """``dsm_loss_given`` with u and e drawn from a stateless seed."""
    u = tf.random.stateless_uniform(tf.shape(x0)[:1], split(seed, 0), dtype=tf.float64)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    return dsm_loss_given(sde, score_fn, x0, u, e, weighting, importance)
