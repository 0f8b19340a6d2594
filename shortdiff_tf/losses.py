"""Denoising score matching with t ~ U(eps, T) or importance-sampled t (``timesteps``).

With x_t = m_t x_0 + sqrt(s_t) e, grad log p(x_t | x_0) = -e / sqrt(s_t), and

  variance weighting   (default):  lambda(t) = s_t,    loss = |sqrt(s_t) s_theta + e|^2 / 2
  likelihood weighting (Song et al. 2021b): lambda(t) = g(t)^2,
       loss = w(t) g^2 |s_theta + e / sqrt(s_t)|^2 / 2, an unbiased estimate of I(s, T)
       (docs/METHOD.md section 3), with w(t) = 1 / q(t) the weight of the time sampler.

``reduce_mean`` replaces |.|^2 / 2 by the mean of the squares over the D dimensions, |.|^2 / D
(ScoreSDE's ``training.reduce_mean``, on in its VP configs): the same minimiser, a loss and a
gradient D / 2 times smaller, which is what its gradient clip of 1 was tuned for.
"""
from __future__ import annotations

import tensorflow as tf

from shortdiff_tf.sde import SDE, bcast
from shortdiff_tf.seeds import split
from shortdiff_tf.timesteps import time_from_uniform

WEIGHTINGS = ("variance", "likelihood")


def dsm_loss_given(sde: SDE, score_fn, x0, u, e, weighting: str = "variance", importance: bool = False, T=None,
                   reduce_mean: bool = False):
    """Per-example denoising score-matching loss [B] at t = t(u) with noise e (given, not drawn);
    t lies on [eps, T] (``T`` defaults to ``sde.T`` and may be a tensor <= it).

    variance:   |sqrt(s_t) s_theta(x_t, t) + e|^2 / 2
    likelihood: w(t) g(t)^2 |s_theta + e / sqrt(s_t)|^2 / 2   (an unbiased estimate of I(s, T))
    with ``reduce_mean`` the mean of the squares in place of |.|^2 / 2.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")
    if importance and weighting != "likelihood":
        raise ValueError("importance sampling of t applies to the likelihood weighting only")
    t, w = time_from_uniform(sde, u, importance, T, x0.dtype)
    std = sde.std(t)
    residual = bcast(std, x0) * score_fn(sde.perturb(x0, t, e), t) + e
    axes = tf.range(1, tf.rank(x0))
    sq = 2.0 * tf.reduce_mean(tf.square(residual), axis=axes) if reduce_mean else tf.reduce_sum(tf.square(residual), axes)
    if weighting == "variance":
        return 0.5 * sq
    return 0.5 * w * sde.g2(t) * sq / tf.square(std)


def dsm_loss(sde: SDE, score_fn, x0, seed, weighting: str = "variance", importance: bool = False):
    """``dsm_loss_given`` with u and e drawn from a stateless seed."""
    u = tf.random.stateless_uniform(tf.shape(x0)[:1], split(seed, 0), dtype=tf.float64)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    return dsm_loss_given(sde, score_fn, x0, u, e, weighting, importance)
