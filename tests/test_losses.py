"""Denoising score matching and the sampling of t, against closed forms.

For data N(mu, sigma^2 I) in D dimensions the exact score at t is -(x - m_t mu) / c_t with
c_t = m_t^2 sigma^2 + s_t, and the residual sqrt(s_t) s(x_t) + e has E|.|^2 = D m_t^2 sigma^2 / c_t,
so the variance-weighted loss has E[loss | t] = D m_t^2 sigma^2 / (2 c_t) and the
likelihood-weighted one integrates g^2 / s_t times that over [eps, T].
"""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate

from shortdiff_tf import losses, timesteps
from tests.conftest import SDE_NAMES, make_sde

MU, SIGMA, D = 0.3, 0.5, 4


def exact_score(sde):
    def score(x, t):
        m, s = sde.mean_coef(t), sde.variance(t)
        c = tf.reshape(m**2 * SIGMA**2 + s, [-1, 1])
        return -(x - tf.reshape(m, [-1, 1]) * MU) / c
    return score


def per_t_loss(sde, t: float) -> float:
    """E[variance-weighted loss | t] = D m_t^2 sigma^2 / (2 (m_t^2 sigma^2 + s_t))."""
    t = tf.constant(t, tf.float64)
    m2s2 = float(sde.mean_coef(t)) ** 2 * SIGMA**2
    return 0.5 * D * m2s2 / (m2s2 + float(sde.variance(t)))


def data(n, seed):
    return MU + SIGMA * tf.random.stateless_normal([n, D], [seed, 0], dtype=tf.float64)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", [1.0, 0.4])
def test_importance_sampled_t_inverts_the_noise_ratio_cdf(name, T):
    """q(t) = (g^2 / s_t) / log(rho_T / rho_eps), so F(t(u)) = log(rho_t / rho_eps) / log(rho_T /
    rho_eps) = u (1e-6), t lies in [eps, T], and w g^2 / s_t = log(rho_T / rho_eps) exactly."""
    sde = make_sde(name, T)
    u = tf.constant(np.linspace(0.0, 1.0, 101), tf.float64)
    t, w = timesteps.time_from_uniform(sde, u, importance=True, dtype=tf.float64)
    rho = sde.noise_ratio
    log_ratio = math.log(float(rho(tf.constant(T, tf.float64)) / rho(tf.constant(sde.eps, tf.float64))))
    F = np.log(rho(t).numpy() / float(rho(tf.constant(sde.eps, tf.float64)))) / log_ratio
    np.testing.assert_allclose(F, u.numpy(), atol=1e-6)
    assert t.numpy().min() >= sde.eps and t.numpy().max() <= T
    np.testing.assert_allclose(w * sde.g2(t) / sde.variance(t), log_ratio, rtol=1e-9)


@pytest.mark.parametrize("importance", [False, True])
@pytest.mark.parametrize("name", SDE_NAMES)
def test_weighted_time_samples_integrate_a_known_function(name, importance):
    """E_q[w(t) h(t)] = int_eps^T h dt for h(t) = t^2 + beta-free g^2-weighted term (5 SE)."""
    sde = make_sde(name, 0.6)
    h = lambda t: t**2 + 0.1 * tf.cos(5.0 * t)
    want = integrate.quad(lambda t: t**2 + 0.1 * math.cos(5.0 * t), sde.eps, 0.6)[0]
    t, w = timesteps.sample_time(sde, 200_000, [3, 4], importance, dtype=tf.float64)
    v = (w * h(t)).numpy()
    assert abs(v.mean() - want) < 5 * v.std() / math.sqrt(v.size)


def test_time_sampling_takes_a_tensor_T_inside_a_graph():
    """T as a float64 tensor (the T* ascent): the same draws as the float T, and dt/dT exists."""
    sde = make_sde("vp", 0.8)
    u = tf.constant([0.1, 0.5, 0.9], tf.float64)

    @tf.function
    def draw(T):
        with tf.GradientTape() as tape:
            tape.watch(T)
            t, w = timesteps.time_from_uniform(sde, u, importance=True, T=T, dtype=tf.float64)
        return t, w, tape.gradient(t, T)

    t, w, dt_dT = draw(tf.constant(0.5, tf.float64))
    t_ref, w_ref = timesteps.time_from_uniform(make_sde("vp", 0.5), u, importance=True, dtype=tf.float64)
    np.testing.assert_allclose(t, t_ref, rtol=1e-12)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)
    assert np.isfinite(dt_dT.numpy()) and dt_dT.numpy() > 0


@pytest.mark.parametrize("name", SDE_NAMES)
def test_variance_weighted_loss_at_a_fixed_t_equals_its_closed_form(name):
    sde = make_sde(name, 0.4)
    n = 20_000
    u = tf.fill([n], tf.constant(0.3, tf.float64))                    # t = eps + 0.3 (T - eps)
    e = tf.random.stateless_normal([n, D], [1, 1], dtype=tf.float64)
    loss = losses.dsm_loss_given(sde, exact_score(sde), data(n, 2), u, e, "variance").numpy()
    want = per_t_loss(sde, sde.eps + 0.3 * (0.4 - sde.eps))
    assert abs(loss.mean() - want) < 5 * loss.std() / math.sqrt(n)


@pytest.mark.parametrize("importance", [False, True])
@pytest.mark.parametrize("name", ["vp", "ve"])
def test_likelihood_weighted_loss_estimates_its_time_integral(name, importance):
    """E[likelihood-weighted loss] = int_eps^T (g^2 / s_t) E[variance loss | t] dt (quadrature), with
    uniform or importance-sampled t (5 SE); importance sampling has the smaller spread."""
    sde = make_sde(name, 0.4)
    n = 100_000

    def integrand(t):
        tt = tf.constant(t, tf.float64)
        return float(sde.g2(tt) / sde.variance(tt)) * per_t_loss(sde, t)

    want = integrate.quad(integrand, sde.eps, 0.4, limit=200, points=[1e-4, 1e-3, 1e-2])[0]
    u = tf.random.stateless_uniform([n], [5, 5], dtype=tf.float64)
    e = tf.random.stateless_normal([n, D], [6, 6], dtype=tf.float64)
    loss = losses.dsm_loss_given(sde, exact_score(sde), data(n, 7), u, e, "likelihood", importance).numpy()
    assert abs(loss.mean() - want) < 5 * loss.std() / math.sqrt(n), (loss.mean(), want)


def test_importance_sampling_reduces_the_likelihood_loss_variance():
    sde = make_sde("vp", 1.0)
    n = 50_000
    u = tf.random.stateless_uniform([n], [5, 5], dtype=tf.float64)
    e = tf.random.stateless_normal([n, D], [6, 6], dtype=tf.float64)
    spread = [losses.dsm_loss_given(sde, exact_score(sde), data(n, 7), u, e, "likelihood", imp).numpy().std()
              for imp in (False, True)]
    assert spread[1] < 0.5 * spread[0]


def test_bad_weighting_options():
    sde = make_sde("vp", 0.4)
    x = tf.zeros([2, D], tf.float64)
    with pytest.raises(ValueError, match="unknown weighting"):
        losses.dsm_loss(sde, exact_score(sde), x, [0, 0], "snr")
    with pytest.raises(ValueError, match="likelihood weighting only"):
        losses.dsm_loss(sde, exact_score(sde), x, [0, 0], "variance", importance=True)
