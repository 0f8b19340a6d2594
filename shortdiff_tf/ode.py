"""Adaptive ODE solves on the device (TFP Dormand-Prince, RK45) in either time direction."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from shortdiff_tf.timesteps import as_time


MAX_STEPS = 20_000          # accepted + rejected steps of one solve: far beyond any non-stiff solve here
STEP_LIMIT = "max_num_steps exceeded"
NOT_FINITE = "the ODE state is not finite"


def solve(fn, t0: float, t1: float, y0, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = MAX_STEPS):
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either order) -> (y(t1), NFE).

    TFP integrates forward in time, so for t1 < t0 we substitute tau = -t:
    dy/dtau = -fn(-tau, y) on [-t0, -t1].  ``y0`` may be a nested structure of tensors.
    The tolerances default to ScoreSDE's 1e-5 (TFP's own default is looser).

    TFP's last step overshoots the final time and interpolates back, so ``fn`` would be called
    outside [t0, t1] (for VP at t < 0, s_t < 0).  Time is frozen at the ends instead: the
    solution on [t0, t1] is unchanged and the vector field stays defined beyond it.

    A non-finite initial state fails at once (``NOT_FINITE``), and a solve that needs more than
    ``max_steps`` steps fails with TFP's ``STEP_LIMIT`` message instead of running for ever; in a
    graph (an exported signature) both are InvalidArgumentErrors.  ``checked_solve`` turns them
    into one-line Python errors.
    """
    sign = 1.0 if t1 >= t0 else -1.0
    dtype = tf.nest.flatten(y0)[0].dtype
    t0, t1 = as_time(t0, dtype), as_time(t1, dtype)

    lo, hi = tf.minimum(t0, t1), tf.maximum(t0, t1)

    def rhs(tau, y):
        t = tf.clip_by_value(sign * tau, lo, hi)
        return tf.nest.map_structure(lambda d: sign * d, fn(t, y))

    checks = [tf.debugging.assert_all_finite(y, NOT_FINITE) for y in tf.nest.flatten(y0)]
    with tf.control_dependencies(checks):
        y0 = tf.nest.map_structure(tf.identity, y0)
    solver = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol, max_num_steps=max_steps)
    res = solver.solve(rhs, initial_time=sign * t0, initial_state=y0,
                       solution_times=[sign * t1])
    y1 = tf.nest.map_structure(lambda s: s[-1], res.states)
    return y1, res.diagnostics.num_ode_fn_evaluations


def explain(err: tf.errors.InvalidArgumentError) -> Exception:
    """A solver failure as a one-line FloatingPointError naming the cause, or ``err`` itself."""
    text = str(err)
    if NOT_FINITE in text:
        return FloatingPointError("the input of the ODE solve holds NaN or infinite values; pass finite data")
    if STEP_LIMIT in text:
        return FloatingPointError(f"the ODE solver gave up after {MAX_STEPS} steps (a stiff or non-finite drift); "
                                  f"loosen --rtol/--atol, or check the model for NaN weights")
    return err
