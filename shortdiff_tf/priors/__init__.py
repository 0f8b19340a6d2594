"""Priors at T: any object with ``log_prob(x) -> [B]`` and ``sample(n, seed) -> [n, *event_shape]``.

The Gaussian p_noise, the Gaussian mixtures (toy data) and the Glow are interchangeable in
samplers, likelihoods and export.
"""
from shortdiff_tf.priors.gaussian import GaussianPrior
from shortdiff_tf.priors.mixture import GaussianMixture

__all__ = ["GaussianPrior", "GaussianMixture"]
