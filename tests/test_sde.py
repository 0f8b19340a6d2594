"""SDEs against closed forms and simulated paths; T truncates the [0, 1] schedule."""
import math

import numpy as np
import pytest
import tensorflow as tf
from scipy import integrate

from shortdiff_tf import sde as sde_lib
from tests.conftest import SDE_NAMES, TS, make_sde


def f64(t):
    return tf.constant(t, tf.float64)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", TS)
def test_simulated_paths_match_marginal_moments(name, T):
    """Euler-Maruyama paths of dx = a x dt + g dw from x0 = 1 (4000 steps, 20000 paths) have the
    closed-form mean m_T x0 and variance s_T: |mean error| < 5 SE + 1e-2 |m|, var within 3%."""
    sde = make_sde(name, T)
    n_paths, n_steps, x0 = 20000, 4000, 1.0
    ts = np.linspace(0.0, T, n_steps + 1)
    rng = np.random.default_rng(1)
    x = np.full(n_paths, x0)
    tm, dt = f64(0.5 * (ts[1:] + ts[:-1])), np.diff(ts)
    a, g = sde.drift_coef(tm).numpy() * np.ones(n_steps), np.sqrt(sde.g2(tm).numpy())
    for i in range(n_steps):
        x = x + a[i] * x * dt[i] + g[i] * math.sqrt(dt[i]) * rng.standard_normal(n_paths)
    m, s = float(sde.mean_coef(f64(T))), float(sde.variance(f64(T)))
    assert abs(x.mean() - m * x0) < 5 * math.sqrt(s / n_paths) + 1e-2 * abs(m)
    assert abs(x.var() / s - 1) < 0.03


@pytest.mark.parametrize("name", SDE_NAMES)
def test_T_truncates_the_schedule(name):
    """The same t gives the same coefficients whatever T is; nothing is rescaled."""
    full, short = make_sde(name, 1.0), make_sde(name, 0.4)
    t = f64([0.01, 0.2, 0.4])
    np.testing.assert_allclose(full.variance(t), short.variance(t), rtol=1e-12)
    np.testing.assert_allclose(full.mean_coef(t), short.mean_coef(t), rtol=1e-12)
    grid = short.time_grid(400).numpy()
    assert grid[0] == pytest.approx(0.4) and grid[-1] == pytest.approx(1e-5) and len(grid) == 401
    assert short.default_steps() == 400 and full.default_steps() == 1000


def test_vp_at_T_04_matches_the_method_numbers():
    sde = sde_lib.VPSDE(T=0.4)
    assert float(sde.B(0.4)) == pytest.approx(1.632)
    assert float(sde.mean_coef(f64(0.4))) == pytest.approx(math.exp(-0.816), rel=1e-12)
    assert float(sde.variance(f64(0.4))) == pytest.approx(1 - math.exp(-1.632), rel=1e-12)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_drift_and_diffusion_follow_the_marginal_ode(name):
    """dm/dt = a m and ds/dt = 2 a s + g^2 (the moment equations of a linear SDE), by autodiff."""
    sde = make_sde(name, 1.0)
    t = f64([0.05, 0.3, 0.7, 0.95])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(t)
        m, s = sde.mean_coef(t), sde.variance(t)
    a = sde.drift_coef(t)
    np.testing.assert_allclose(tape.gradient(m, t, unconnected_gradients="zero"), a * m, rtol=1e-10)
    np.testing.assert_allclose(tape.gradient(s, t), 2 * a * s + sde.g2(t), rtol=1e-10)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_transition_composes_to_the_marginal(name):
    sde = make_sde(name, 1.0)
    t0, t1 = f64(0.2), f64(0.35)
    alpha, G2 = sde.transition(t0, t1)
    np.testing.assert_allclose(alpha * sde.mean_coef(t0), sde.mean_coef(t1), rtol=1e-12)
    np.testing.assert_allclose(alpha**2 * sde.variance(t0) + G2, sde.variance(t1), rtol=1e-12)


@pytest.mark.parametrize("name", SDE_NAMES)
def test_time_at_noise_ratio_inverts_the_noise_ratio(name):
    """rho_t = s_t / m_t^2 is inverted, and d log rho / dt = g^2 / s_t (the importance density)."""
    sde = make_sde(name, 1.0)
    t = f64([1e-5, 0.01, 0.4, 1.0])
    np.testing.assert_allclose(sde.time_at_noise_ratio(sde.noise_ratio(t)), t, rtol=1e-6)
    with tf.GradientTape() as tape:
        tape.watch(t)
        log_rho = tf.math.log(sde.noise_ratio(t))
    np.testing.assert_allclose(tape.gradient(log_rho, t), sde.g2(t) / sde.variance(t), rtol=1e-8)


@pytest.mark.parametrize("name", SDE_NAMES)
@pytest.mark.parametrize("T", TS)
def test_R_is_the_closed_form_of_its_integral(name, T):
    """R(T) = 1/2 int E[g^2 |grad log p(x_t|x_0)|^2 + 2 div f] dt = (D/2) log(s_T/s_eps),
    with E|grad log p(x_t|x_0)|^2 = D / s_t, by adaptive quadrature (rel. 1e-6)."""
    sde, D = make_sde(name, T), 3
    integrand = lambda t: 0.5 * (float(sde.g2(f64(t))) * D / float(sde.variance(f64(t)))
                                 + 2 * D * float(sde.drift_coef(f64(t))))
    pts = np.geomspace(sde.eps, T, 30)
    quad = sum(integrate.quad(integrand, a, b, epsabs=0, epsrel=1e-10)[0] for a, b in zip(pts[:-1], pts[1:]))
    assert sde.R(D) == pytest.approx(quad, rel=1e-6)


def test_ve_prior_depends_on_T():
    short, full = sde_lib.VESDE(T=0.2), sde_lib.VESDE(T=1.0)
    assert short.prior_variance() == pytest.approx(0.01**2 * ((50 / 0.01) ** 0.4 - 1))
    assert full.prior_variance() == pytest.approx(50**2 - 0.01**2)
    assert sde_lib.VPSDE(T=0.4).prior_variance() == 1.0


@pytest.mark.parametrize("kwargs, word", [
    ({"T": 0.0}, "T"), ({"T": 1.5}, "T"), ({"T": -0.1}, "T"), ({"T": 0.4, "eps": 0.0}, "eps"),
    ({"T": 0.4, "eps": -1e-3}, "eps"), ({"T": 0.4, "eps": 0.4}, "eps"), ({"T": 1e-6, "eps": 1e-5}, "eps"),
])
def test_bad_time_interval_raises_value_error_naming_it(kwargs, word):
    with pytest.raises(ValueError, match=rf"\b{word}\b.*(\(|>|smaller)"):
        sde_lib.get_sde("vp", **kwargs)


def test_unknown_sde_and_bad_hyperparameters():
    with pytest.raises(ValueError, match="unknown SDE 'cld'; choose one of subvp, ve, vp"):
        sde_lib.get_sde("cld")
    with pytest.raises(ValueError, match="sigma_min"):
        sde_lib.VESDE(sigma_min=2.0, sigma_max=1.0)
    with pytest.raises(ValueError, match="beta_0"):
        sde_lib.VPSDE(beta_0=-1.0)
    with pytest.raises(ValueError, match="steps"):
        sde_lib.VPSDE().time_grid(0)
