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
