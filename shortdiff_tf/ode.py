"""Adaptive ODE solves on the device (TFP Dormand-Prince, RK45) in either time direction."""
from __future__ import annotations

import tensorflow as tf
import tensorflow_probability as tfp

from shortdiff_tf.timesteps import as_time


def solve(fn, t0: float, t1: float, y0, rtol: float = 1e-5, atol: float = 1e-5):
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either order) -> (y(t1), NFE).

    TFP integrates forward in time, so for t1 < t0 we substitute tau = -t:
    dy/dtau = -fn(-tau, y) on [-t0, -t1].  ``y0`` may be a nested structure of tensors.
    The tolerances default to ScoreSDE's 1e-5 (TFP's own default is looser).

    TFP's last step overshoots the final time and interpolates back, so ``fn`` would be called
    outside [t0, t1] (for VP at t < 0, s_t < 0).  Time is frozen at the ends instead: the
    solution on [t0, t1] is unchanged and the vector field stays defined beyond it.
    """
    sign = 1.0 if t1 >= t0 else -1.0
    dtype = tf.nest.flatten(y0)[0].dtype
    t0, t1 = as_time(t0, dtype), as_time(t1, dtype)

    lo, hi = tf.minimum(t0, t1), tf.maximum(t0, t1)

    def rhs(tau, y):
        t = tf.clip_by_value(sign * tau, lo, hi)
        return tf.nest.map_structure(lambda d: sign * d, fn(t, y))

    solver = tfp.math.ode.DormandPrince(rtol=rtol, atol=atol)
    res = solver.solve(rhs, initial_time=sign * t0, initial_state=y0,
                       solution_times=[sign * t1])
    y1 = tf.nest.map_structure(lambda s: s[-1], res.states)
    return y1, res.diagnostics.num_ode_fn_evaluations
