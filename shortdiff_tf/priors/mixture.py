"""Gaussian mixtures: toy data, their exact diffused marginals, and mixture priors at T.

A mixture sum_k w_k N(mu_k, Sigma_k) pushed through a linear SDE stays a mixture:
p(x, t) = sum_k w_k N(x; m_t mu_k, m_t^2 Sigma_k + s_t I).  With Sigma_k = U_k diag(lam_k) U_k^T
the covariance at t is U_k diag(m_t^2 lam_k + s_t) U_k^T, so densities and scores at any
per-example time t [B] cost one rotation per component.
"""
from __future__ import annotations

import math

import numpy as np
import tensorflow as tf

from shortdiff_tf.seeds import as_seed, row_normal, row_uniform, split


def _as_covariances(covs, k: int, d: int) -> np.ndarray:
    covs = np.asarray(covs, np.float64)
    if covs.ndim == 1:                      # isotropic variances [K]
        return covs[:, None, None] * np.eye(d)[None]
    if covs.ndim == 2:                      # diagonal variances [K, D]
        return np.stack([np.diag(c) for c in covs])
    if covs.shape != (k, d, d):
        raise ValueError(f"covariances must have shape [K], [K, D] or [K, D, D]; got {covs.shape}")
    return covs


class GaussianMixture(tf.Module):
    """sum_k w_k N(mu_k, Sigma_k) over R^D; implements the prior interface."""

    def __init__(self, weights, means, covs, name="gaussian_mixture"):
        super().__init__(name=name)
        w = np.asarray(weights, np.float64)
        mu = np.atleast_2d(np.asarray(means, np.float64))
        if w.ndim != 1 or mu.shape[0] != w.shape[0]:
            raise ValueError(f"need weights [K] and means [K, D]; got {w.shape} and {mu.shape}")
        if np.any(w < 0) or not np.isclose(w.sum(), 1.0):
            raise ValueError("mixture weights must be non-negative and sum to 1")
        cov = _as_covariances(covs, *mu.shape)
        lam, U = np.linalg.eigh(cov)
        if np.any(lam <= 0):
            raise ValueError("mixture covariances must be positive definite")
        self.weights, self.means, self.covs = w, mu, cov
        self._lam, self._U = lam, U
        self.event_shape = [mu.shape[1]]
        self.dim = mu.shape[1]

    @property
    def num_components(self) -> int:
        return self.weights.shape[0]

    def diffused(self, m: float, s: float) -> "GaussianMixture":
        """The mixture of m x + sqrt(s) e: means m mu_k, covariances m^2 Sigma_k + s I."""
        return GaussianMixture(self.weights, m * self.means,
                               m**2 * self.covs + s * np.eye(self.dim)[None])

    def _log_components(self, x, m, s):
        """-> y = U^T (x - m mu) [B, K, D], lam_t [B, K, D], log w_k N_k(x) [B, K]."""
        dt = x.dtype
        m = tf.reshape(tf.cast(m, dt), [-1, 1, 1])
        s = tf.reshape(tf.cast(s, dt), [-1, 1, 1])
        mu, U = tf.constant(self.means, dt), tf.constant(self._U, dt)
        diff = x[:, None, :] - m * mu[None]                       # [B, K, D]
        y = tf.einsum("kji,bkj->bki", U, diff)                     # U^T diff
        lam_t = m**2 * tf.constant(self._lam, dt)[None] + s       # [B, K, D]
        log_n = -0.5 * tf.reduce_sum(y**2 / lam_t + tf.math.log(2 * math.pi * lam_t), -1)
        return y, lam_t, log_n + tf.math.log(tf.constant(self.weights, dt))[None]

    def log_prob(self, x, m=1.0, s=0.0):
        """log p(x) [B] of the mixture (or, with m and s [B] or scalars, of its diffusion)."""
        self._check(x)
        return tf.reduce_logsumexp(self._log_components(x, m, s)[2], axis=1)

    def score(self, x, m=1.0, s=0.0):
        """grad_x log p(x) [B, D] = sum_k r_k(x) (-Cov_k^-1 (x - m mu_k))."""
        self._check(x)
        y, lam_t, log_wn = self._log_components(x, m, s)
        resp = tf.nn.softmax(log_wn, axis=1)                       # [B, K]
        comp = -tf.einsum("kij,bkj->bki", tf.constant(self._U, x.dtype), y / lam_t)
        return tf.reduce_sum(resp[..., None] * comp, axis=1)

    def sample(self, n, seed, temperature: float = 1.0, dtype=tf.float32, first=0):
        """n draws: pick k ~ Cat(w) by inverting the weights' CDF at a uniform, then
        mu_k + U_k sqrt(lam_k) z (z scaled by temperature); draw j keyed by index first + j."""
        seed = as_seed(seed)
        u = row_uniform(n, [1], split(seed, 0), first, tf.float64)[:, 0]
        bounds = tf.constant(np.cumsum(self.weights)[None, :-1])
        k = tf.searchsorted(bounds, u[None], side="right")[0]                            # [n]
        z = row_normal(n, [self.dim], split(seed, 1), first, tf.float64)
        scale = tf.gather(tf.constant(self._U * np.sqrt(self._lam)[:, None, :]), k)
        x = tf.gather(tf.constant(self.means), k) + temperature * tf.einsum("nij,nj->ni", scale, z)
        return tf.cast(x, dtype)

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def covariance(self) -> np.ndarray:
        mu = self.mean()
        second = np.einsum("k,kij->ij", self.weights, self.covs + np.einsum("ki,kj->kij", self.means, self.means))
        return second - np.outer(mu, mu)

    def _check(self, x):
        if x.shape.rank is not None and (x.shape.rank != 2 or (x.shape[1] is not None and x.shape[1] != self.dim)):
            raise ValueError(f"input shape {x.shape.as_list()} does not match the mixture's "
                             f"event shape [{self.dim}] (expected [B, {self.dim}])")

    def get_config(self) -> dict:
        return {"kind": "gmm", "weights": self.weights.tolist(), "means": self.means.tolist(),
                "covs": self.covs.tolist()}
