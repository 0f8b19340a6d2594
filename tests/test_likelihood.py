"""PF-ODE likelihood, Hutchinson divergence and bits/dim against closed forms."""
import math

import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf import likelihood, toy
from tests.conftest import SDE_NAMES, TS, make_sde


@pytest.mark.parametrize("data", ["gmm1d", "gmm2d"])
@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", TS)
def test_ode_likelihood_with_exact_score_matches_exact_density(data, name, T):
    """log q(x) from the PF-ODE (exact divergence, exact prior p(x,T)) = log p(x, eps), 0.02 nats."""
    sde = make_sde(name, T)
    diff = toy.ToyDiffusion(toy.get_toy(data), sde)
    x0 = diff.data.sample(32, 3, dtype=tf.float64)
    ll = likelihood.ode_log_likelihood(sde, diff.score, diff.marginal(T), x0, divergence="exact")
    np.testing.assert_allclose(ll.log_prob, diff.log_prob(x0, sde.eps), atol=0.02)
    assert ll.nfe > 0 and ll.T == T and ll.rtol == 1e-5


def test_hutchinson_averages_to_the_exact_divergence():
    """Mean of z^T J z over 4000 Rademacher probes is within 5 SE of tr J, on the PF-ODE drift."""
    sde = make_sde("vp", 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x = tf.tile(diff.data.sample(1, 0, dtype=tf.float64), [4000, 1])
    t = tf.fill([4000], tf.constant(0.05, tf.float64))
    from shortdiff_tf.sde import reverse_drift
    fn = lambda y: reverse_drift(sde, diff.score, y, t, ode=True)
    _, exact = likelihood.exact_divergence(fn, x)
    for probe in likelihood.PROBES:
        z = likelihood.probe_noise(tf.shape(x), [1, 2], probe, tf.float64)
        _, est = likelihood.hutchinson_divergence(fn, x, z)
        est = est.numpy()
        assert abs(est.mean() - exact[0]) < 5 * est.std() / math.sqrt(len(est)) + 1e-9


def test_hutchinson_is_exact_for_a_diagonal_map_with_rademacher_probes():
    d = tf.constant([[0.5, -2.0, 3.0, 1.5]], tf.float64)
    fn = lambda y: d * y
    x = tf.random.normal([16, 4], dtype=tf.float64)
    z = likelihood.probe_noise([16, 4], [4, 4], "rademacher", tf.float64)
    _, est = likelihood.hutchinson_divergence(fn, x, z)
    np.testing.assert_allclose(est, np.full(16, 3.0), rtol=1e-12)


def test_hutchinson_likelihood_is_unbiased_over_examples():
    sde = make_sde("vp", 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    x0 = diff.data.sample(256, 4, dtype=tf.float64)
    ll = likelihood.ode_log_likelihood(sde, diff.score, diff.marginal(0.4), x0, seed=9)
    err = (ll.log_prob - diff.log_prob(x0, sde.eps)).numpy()
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(len(err)) + 0.02


class ImageGaussian:
    """N(mu, sigma^2 I) on [H, W, C] images, with its exact marginal and score at any t."""

    def __init__(self, shape, mu, sigma, sde):
        self.shape, self.mu, self.sigma, self.sde = shape, mu, sigma, sde

    def moments(self, t, dtype):
        t = tf.cast(t, dtype)
        m, s = self.sde.mean_coef(t), self.sde.variance(t)
        return m * self.mu, tf.sqrt(m**2 * self.sigma**2 + s)

    def score(self, x, t):
        mean, std = self.moments(t, x.dtype)
        return -(x - tf.reshape(mean, [-1, 1, 1, 1])) / tf.reshape(std, [-1, 1, 1, 1]) ** 2

    def log_prob(self, x, t):
        mean, std = self.moments(t, x.dtype)
        d = x - tf.reshape(mean, [-1, 1, 1, 1])
        D = math.prod(self.shape)
        return (-0.5 * tf.reduce_sum(d**2, [1, 2, 3]) / std**2 - D * tf.math.log(std)
                - 0.5 * D * math.log(2 * math.pi))


class PriorFromDensity:
    def __init__(self, fn, shape):
        self.log_prob, self.event_shape = fn, shape


@pytest.mark.parametrize("name, T", [("vp", 1.0), ("vp", 0.3), ("ve", 1.0), ("ve", 0.3)])
def test_bits_per_dim_terms_of_a_gaussian_equal_their_closed_forms(name, T):
    """Dequantised 8-bit images scaled to [-1, 1] under x ~ N(mu, sigma^2 I), the exact score and
    the exact p(x, T) as the prior.  The PF-ODE of a Gaussian is affine,
    x_T = m_T mu + (std_T / std_eps)(x - m_eps mu), so each term has a closed form:
    prior_T = -log p(x_T, T) / (D ln 2), ode = -(log p(x, eps) - log p(x_T, T)) / (D ln 2), and the
    total -log p(x, eps) / (D ln 2) + 7 (each within 2e-3 bits/dim)."""
    shape = [2, 2, 3]
    sde = make_sde(name, T)
    g = ImageGaussian(shape, mu=0.1, sigma=0.5, sde=sde)
    k = tf.random.stateless_uniform([8] + shape, [1, 1], 0, 256, dtype=tf.int32)
    u = tf.random.stateless_uniform([8] + shape, [2, 2], dtype=tf.float64)
    x = -1.0 + 2.0 * (tf.cast(k, tf.float64) + u) / 256.0
    prior = PriorFromDensity(lambda y: g.log_prob(y, T), shape)
    ll = likelihood.ode_log_likelihood(sde, g.score, prior, x, divergence="hutchinson")
    bpd = likelihood.bits_per_dim(ll, data_range=2.0)
    (m_eps, std_eps), (m_T, std_T) = g.moments([sde.eps], tf.float64), g.moments([T], tf.float64)
    x_T = m_T + std_T / std_eps * (x - m_eps)
    D, nats = math.prod(shape), lambda v: -v.numpy() / (math.prod(shape) * math.log(2))
    np.testing.assert_allclose(ll.x_T, x_T, atol=2e-3)
    np.testing.assert_allclose(bpd.prior_T, nats(g.log_prob(x_T, T)), atol=2e-3)
    np.testing.assert_allclose(bpd.ode, nats(g.log_prob(x, sde.eps) - g.log_prob(x_T, T)), atol=2e-3)
    np.testing.assert_allclose(bpd.total, nats(g.log_prob(x, sde.eps)) + 7.0, atol=2e-3)
    s = bpd.summary()
    assert bpd.offset == 7.0 and bpd.dim == D
    assert s["num_examples"] == 8 and s["nfe"] == ll.nfe and s["eps"] == sde.eps


def test_likelihood_bad_input():
    sde = make_sde("vp", 0.4)
    diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
    with pytest.raises(ValueError, match=r"data shape \[3\] does not match the model's shape \[2\]"):
        likelihood.ode_log_likelihood(sde, diff.score, diff.marginal(0.4), tf.zeros([4, 3], tf.float64))
    with pytest.raises(ValueError, match="unknown divergence"):
        likelihood.LikelihoodEstimator(sde, diff.score, None, divergence="skilling")
    with pytest.raises(ValueError, match="rtol"):
        likelihood.LikelihoodEstimator(sde, diff.score, None, rtol=0)
