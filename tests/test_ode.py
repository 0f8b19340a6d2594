"""The adaptive solver's guards: a step bound instead of a hang, a finite initial state, and the
one-line errors the commands print for them."""
import numpy as np
import pytest
import tensorflow as tf

from shortdiff_tf import ode


def test_the_solver_stops_at_its_step_bound_and_refuses_a_non_finite_start():
    """A vector field that keeps the adaptive solver busy ends with a FloatingPointError, not a hang."""
    stiff = lambda t, y: -1e9 * tf.sin(1e6 * t) * y
    with pytest.raises(tf.errors.InvalidArgumentError, match=ode.STEP_LIMIT) as info:
        ode.solve(stiff, 0.0, 1.0, tf.ones([2], tf.float64), max_steps=50)
    assert "gave up after" in str(ode.explain(info.value))
    with pytest.raises(tf.errors.InvalidArgumentError, match=ode.NOT_FINITE):
        ode.solve(lambda t, y: -y, 0.0, 1.0, tf.constant([np.nan], tf.float64))


def test_a_python_float_time_is_exact_in_float64():
    """tf.cast(0.4, float64) would be float32(0.4) = 0.4000000059604645."""
    from shortdiff_tf.timesteps import as_time
    assert float(as_time(0.4)) == 0.4 and as_time(0.4).dtype == tf.float64


PROBLEMS = {   # dy/dt = f(t, y) with a closed-form solution y(t)
    "gaussian decay": (lambda t, y: -2.0 * t * y, lambda t: np.exp(-t**2) * np.array([1.0, 0.5]), 0.0, 2.0),
    "backwards": (lambda t, y: -2.0 * t * y, lambda t: np.exp(4.0 - t**2) * np.array([1.0, 0.5]), 2.0, 0.1),
    "oscillator": (lambda t, y: tf.stack([y[1], -9.0 * y[0]]),
                   lambda t: np.array([np.cos(3 * t), -3 * np.sin(3 * t)]), 0.0, 3.0),
}


@pytest.mark.parametrize("tol", [1e-3, 1e-5, 1e-8])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_dormand_prince_takes_scipys_steps(name, tol):
    """The same NFE as scipy's RK45 (ScoreSDE's likelihood solver) at the same rtol = atol, the same
    solution to 1e-12, and the closed-form solution to the tolerance's order."""
    from scipy.integrate import solve_ivp
    f, exact, t0, t1 = PROBLEMS[name]
    y0 = exact(t0)
    ref = solve_ivp(lambda t, y: np.asarray(f(t, tf.constant(y))), (t0, t1), y0, method="RK45", rtol=tol, atol=tol)
    y, nfe = tf.function(lambda y: ode.solve(f, t0, t1, y, tol, tol))(tf.constant(y0))
    assert int(nfe) == ref.nfev
    np.testing.assert_allclose(y.numpy(), ref.y[:, -1], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y.numpy(), exact(t1), atol=200 * tol)


@pytest.mark.parametrize("tol", [1e-3, 1e-5])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_a_float32_state_takes_scipys_steps(name, tol):
    """The likelihood's state is float32; time, steps and the error norm stay float64, so the solve
    takes scipy's steps (the same NFE as scipy's RK45, which integrates in float64) and lands on
    scipy's solution to float32 precision."""
    from scipy.integrate import solve_ivp
    f, exact, t0, t1 = PROBLEMS[name]
    y0 = exact(t0)
    ref = solve_ivp(lambda t, y: np.asarray(f(t, tf.constant(y))), (t0, t1), y0, method="RK45", rtol=tol, atol=tol)
    y, nfe = tf.function(lambda y: ode.solve(f, t0, t1, y, tol, tol))(tf.constant(y0, tf.float32))
    assert y.dtype == tf.float32 and int(nfe) == ref.nfev
    np.testing.assert_allclose(y.numpy(), ref.y[:, -1], rtol=1e-5, atol=1e-6)


def test_dormand_prince_agrees_with_tfp_on_a_nested_state():
    """A nested state (as the likelihood's [x, log-density]) against TFP's Dormand-Prince."""
    import tensorflow_probability as tfp
    f = lambda t, s: (-0.5 * s[0] + tf.sin(t), tf.reduce_sum(s[0], -1))
    y0 = (tf.constant([[1.0, -2.0], [0.5, 0.0]], tf.float64), tf.zeros([2], tf.float64))
    mine, _ = ode.solve(f, 0.0, 1.5, y0, 1e-8, 1e-8)
    theirs = tfp.math.ode.DormandPrince(rtol=1e-8, atol=1e-8).solve(f, 0.0, y0, solution_times=[1.5]).states
    for a, b in zip(mine, theirs):
        np.testing.assert_allclose(a.numpy(), b[-1].numpy(), atol=1e-6)


def test_the_vector_field_is_traced_once_for_every_stage():
    """One copy of f serves every stage: the Python body of f runs once per solve's trace, so a
    network appears once in the graph (TFP's solver traced it at every stage: six copies)."""
    calls = []

    def f(t, y):
        calls.append(1)
        return -y

    tf.function(lambda y: ode.solve(f, 0.0, 1.0, y))(tf.ones([3], tf.float64))
    assert len(calls) == 1


def test_a_rejected_non_finite_attempt_does_not_poison_the_next():
    """A field that is NaN outside y >= 0 (reached only by too long trial steps, once the solution
    has decayed and steps have grown): the NaN attempt is rejected and shrunk, the next attempt
    starts clean, and the solve takes scipy's steps to scipy's answer."""
    from scipy.integrate import solve_ivp
    f = lambda t, y: tf.where(y >= 0, -y, tf.constant(np.nan, tf.float64))
    ref = solve_ivp(lambda t, y: np.where(y >= 0, -y, np.nan), (0.0, 60.0), [1.0], method="RK45", rtol=1e-3, atol=1e-6)
    y, nfe = tf.function(lambda y: ode.solve(f, 0.0, 60.0, y, 1e-3, 1e-6))(tf.constant([1.0], tf.float64))
    assert ref.status == 0 and np.isfinite(y.numpy()).all()
    assert int(nfe) == ref.nfev
    np.testing.assert_allclose(y.numpy(), ref.y[:, -1], rtol=1e-9, atol=1e-15)
