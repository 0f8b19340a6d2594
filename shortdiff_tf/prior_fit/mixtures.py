"""Closed-form and scikit-learn fits of nu_phi to points at T.

  gaussian: the ML diagonal Gaussian, mean and standard deviation per dimension
  gmm:      an EM Gaussian mixture with full covariances
  dpgmm:    a variational Dirichlet-process mixture (paper Sec. 3, toy data); its effective
            number of components falls as T grows (paper Fig. 4)
"""
from __future__ import annotations

import warnings

import numpy as np

from shortdiff_tf.config import PriorConfig
from shortdiff_tf.priors import GaussianMixture, GaussianPrior


def fit_closed_form(pcfg: PriorConfig, points: np.ndarray):
    """-> (prior, info) for pcfg.kind in gaussian, gmm, dpgmm."""
    if pcfg.kind == "gaussian":
        return GaussianPrior(points.shape[1:], std=points.std(0) + 1e-6, mean=points.mean(0)), {}
    if points.ndim != 2:
        raise ValueError(f"the {pcfg.kind} prior is for toy vectors; use --prior glow or gaussian for images")
    from sklearn.exceptions import ConvergenceWarning
    with warnings.catch_warnings():                 # convergence is reported, not warned about
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = _fit_sklearn(pcfg, points)
    w = sk.weights_ / sk.weights_.sum()
    info = {"converged": bool(sk.converged_), "iterations": int(sk.n_iter_)}
    if pcfg.kind == "dpgmm":
        info["effective_components"] = effective_components(w, pcfg.weight_threshold)
    return GaussianMixture(w, sk.means_, sk.covariances_), info


def effective_components(weights, threshold: float) -> int:
    """Components of a mixture whose weight exceeds ``threshold`` (paper Fig. 4)."""
    return int(np.sum(np.asarray(weights) > threshold))


def _fit_sklearn(pcfg: PriorConfig, points: np.ndarray):
    from sklearn.mixture import BayesianGaussianMixture, GaussianMixture as SkGMM
    if pcfg.kind == "gmm":
        return SkGMM(pcfg.components, covariance_type="full", random_state=pcfg.seed).fit(points)
    # a converged variational fit: with sklearn's default tol/max_iter the unused components
    # are not pruned and the count does not reflect the data's complexity
    return BayesianGaussianMixture(n_components=pcfg.components, covariance_type="full", max_iter=2000, tol=1e-5,
                                   weight_concentration_prior_type="dirichlet_process",
                                   weight_concentration_prior=pcfg.dp_concentration,
                                   random_state=pcfg.seed).fit(points)
