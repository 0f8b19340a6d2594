"""Toy data: named Gaussian mixtures with the exact p(x, t) and score under any linear SDE.

The marginal of sum_k w_k N(mu_k, Sigma_k) at time t is the mixture
sum_k w_k N(m_t mu_k, m_t^2 Sigma_k + s_t I), so the density, the score, the exact p(x, T)
(an oracle auxiliary prior) and every ELBO term are available in closed form.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from shortdiff_tf import registry
from shortdiff_tf.priors.mixture import GaussianMixture

TOY = registry.Registry("toy data set")


def _rotation(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


@TOY.register("gmm1d")
def gmm1d() -> GaussianMixture:
    """Three well-separated, unequal 1-D components on roughly [-2, 2.5]."""
    return GaussianMixture([0.3, 0.5, 0.2], [[-1.5], [0.5], [2.0]], [0.2**2, 0.35**2, 0.25**2])


@TOY.register("gmm2d")
def gmm2d() -> GaussianMixture:
    """Six anisotropic components on a ring of radius 1.5, long axes along the ring."""
    angles = [2 * math.pi * k / 6 for k in range(6)]
    means = [[1.5 * math.cos(a), 1.5 * math.sin(a)] for a in angles]
    covs = [_rotation(a) @ np.diag([0.08**2, 0.3**2]) @ _rotation(a).T for a in angles]
    weights = np.array([3, 1, 2, 1, 2, 1], float)
    return GaussianMixture(weights / weights.sum(), means, covs)


def get_toy(name: str) -> GaussianMixture:
    return TOY.get(name)()


class ToyDiffusion:
    """A toy mixture under an SDE: exact log p(x, t), grad log p(x, t) and p(x, T)."""

    def __init__(self, data: GaussianMixture, sde):     # any linear SDE (toy data sit below sde.py)
        self.data, self.sde = data, sde

    def _coefs(self, t, dtype):
        t = tf.cast(t, dtype)
        return self.sde.mean_coef(t), self.sde.variance(t)

    def log_prob(self, x, t):
        """log p(x, t), t [B] or scalar."""
        m, s = self._coefs(t, x.dtype)
        return self.data.log_prob(x, m, s)

    def score(self, x, t):
        """grad_x log p(x, t): the exact score, usable wherever a network's score is."""
        m, s = self._coefs(t, x.dtype)
        return self.data.score(x, m, s)

    def marginal(self, t: float) -> GaussianMixture:
        """p(x, t) as a mixture; at t = T it is the oracle auxiliary prior."""
        t64 = tf.constant(t, tf.float64)
        return self.data.diffused(float(self.sde.mean_coef(t64)), float(self.sde.variance(t64)))
