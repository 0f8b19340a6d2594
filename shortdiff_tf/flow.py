"""The probability-flow ODE as a map between two times (Song et al. 2021, eq. 13):

  dx/dt = f(x, t) - g(t)^2 s_theta(x, t) / 2,

integrated from t_from to t_to (either direction) by the adaptive solver of ``ode``.  From T down
to eps it is the deterministic sampler; from eps up to T it is Phi_theta, the flow whose image of
the data is the "(S)" target of the auxiliary prior (docs/METHOD.md section 4).  The likelihood
integrates the same drift together with its divergence (``likelihood``).
"""
from __future__ import annotations

import tensorflow as tf

from shortdiff_tf import ode
from shortdiff_tf.sde import SDE, reverse_drift


def push(sde: SDE, score_fn, x, t_from: float, t_to: float, rtol: float = 1e-5, atol: float = 1e-5):
    """x at t_from -> (x at t_to, NFE) along the probability-flow ODE."""
    ones = tf.ones(tf.shape(x)[:1], x.dtype)

    def drift(t, y):
        return reverse_drift(sde, score_fn, y, t * ones, ode=True)

    return ode.solve(drift, t_from, t_to, x, rtol, atol)
