"""Gaussian and mixture priors, and the toy mixtures' exact marginals and scores."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import stats

from shortdiff_tf import toy
from shortdiff_tf.priors import GaussianMixture, GaussianPrior
from tests.conftest import SDE_NAMES, make_sde


def test_gaussian_prior_log_prob_matches_scipy():
    prior = GaussianPrior([2, 3], std=1.7)
    x = tf.random.normal([5, 2, 3], dtype=tf.float64)
    want = stats.norm(0, 1.7).logpdf(x.numpy()).reshape(5, -1).sum(1)
    np.testing.assert_allclose(prior.log_prob(x), want, rtol=1e-12)


def test_gaussian_prior_samples_and_seed_prefix():
    prior = GaussianPrior([4], std=2.0)
    x = prior.sample(20000, 3).numpy()
    assert abs(x.std() - 2.0) < 0.02 and abs(x.mean()) < 0.02
    np.testing.assert_array_equal(prior.sample(7, 3), x[:7])
    np.testing.assert_allclose(prior.sample(5, 3, temperature=0.5), 0.5 * x[:5], rtol=1e-6)


def test_prior_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"input shape \[3\] does not match.*\[4\]"):
        GaussianPrior([4]).log_prob(tf.zeros([2, 3]))
    with pytest.raises(ValueError, match="does not match the mixture"):
        toy.get_toy("gmm2d").log_prob(tf.zeros([2, 3]))


@pytest.mark.parametrize("name", ["gmm1d", "gmm2d"])
def test_mixture_log_prob_matches_scipy_and_samples_match_moments(name):
    mix = toy.get_toy(name)
    x = mix.sample(40000, 0, dtype=tf.float64).numpy()
    want = np.log(sum(w * stats.multivariate_normal(m, c).pdf(x)
                      for w, m, c in zip(mix.weights, mix.means, mix.covs)))
    np.testing.assert_allclose(mix.log_prob(tf.constant(x[:500])), want[:500], rtol=1e-9, atol=1e-9)
    se = np.sqrt(np.diag(mix.covariance()) / len(x))
    assert np.all(np.abs(x.mean(0) - mix.mean()) < 5 * se)
    np.testing.assert_allclose(np.cov(x.T).reshape(mix.dim, mix.dim), mix.covariance(), rtol=0.03, atol=0.01)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_exact_score_is_the_gradient_of_the_exact_marginal(name):
    sde = make_sde(name, 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x = tf.random.normal([64, 2], dtype=tf.float64) * 2
    t = tf.random.uniform([64], 1e-4, 0.4, dtype=tf.float64)
    with tf.GradientTape() as tape:
        tape.watch(x)
        lp = diff.log_prob(x, t)
    np.testing.assert_allclose(diff.score(x, t), tape.gradient(lp, x), rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_marginal_mixture_is_the_diffused_data(name):
    """p(x, t) as a mixture equals the law of m_t x0 + sqrt(s_t) e (densities and a KS test)."""
    sde = make_sde(name, 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm1d"), sde)
    p_T = diff.marginal(0.4)
    x = tf.random.normal([100, 1], dtype=tf.float64)
    np.testing.assert_allclose(p_T.log_prob(x), diff.log_prob(x, 0.4), rtol=1e-7)
    x0 = diff.data.sample(20000, 1, dtype=tf.float64)
    x_T = sde.perturb(x0, tf.fill([20000], tf.constant(0.4, tf.float64)),
                      tf.random.stateless_normal([20000, 1], [2, 2], dtype=tf.float64)).numpy()[:, 0]
    cdf = lambda v: sum(w * stats.norm(m[0], math.sqrt(c[0, 0])).cdf(v)
                        for w, m, c in zip(p_T.weights, p_T.means, p_T.covs))
    assert stats.kstest(x_T, cdf).pvalue > 1e-3   # false-alarm rate 0.1%


def test_mixture_validation():
    with pytest.raises(ValueError, match="sum to 1"):
        GaussianMixture([0.5, 0.6], [[0.0], [1.0]], [1.0, 1.0])
    with pytest.raises(ValueError, match="positive definite"):
        GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]])
    with pytest.raises(ValueError, match="unknown toy data set 'moons'"):
        toy.get_toy("moons")
