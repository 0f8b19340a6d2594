"""Adaptive Dormand-Prince (RK45) on the device, step for step the algorithm of scipy's RK45.

ScoreSDE's likelihood integrates the probability-flow ODE with ``scipy.integrate.solve_ivp``
(RK45, rtol = atol = 1e-5) and a host round-trip per evaluation.  This is the same method in
the graph:

  stages     k_s = f(t + c_s h, y + h sum_j a_sj k_j),  s = 1..6, FSAL (k_7 = f(t + h, y_new))
  error      err = h sum_s e_s k_s,  ||err|| = RMS over every element of err / (atol + rtol max(|y|, |y_new|))
  control    accept when ||err|| < 1; h <- h min(10, 0.9 ||err||^(-1/5)) (at most 1 after a
             rejection in the same step), and on rejection h <- h max(0.2, 0.9 ||err||^(-1/5))
  first h    Hairer, Norsett and Wanner, Sec. II.4 (scipy's select_initial_step)

so it takes the same steps as scipy on the same problem (tested on closed-form ODEs).  The state
may be a nested structure of tensors; the error norm runs over all of it, as scipy's does over
the flat vector ScoreSDE passes.  ``fn`` is wrapped in one tf.function, so a network inside it
is traced once for all stages.  Its calls are inlined: kept as non-inlined calls they cost about
a third more per evaluation on this CPU, for a first call about 5 s shorter on the digits preset
(benchmarks/README.md, "Solver").
"""
from __future__ import annotations

import tensorflow as tf

from shortdiff_tf.timesteps import as_time

MAX_STEPS = 20_000          # step attempts of one solve: far beyond any non-stiff solve here
STEP_LIMIT = "max_num_steps exceeded"
NOT_FINITE = "the ODE state is not finite"

C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
A = ((),
     (1 / 5,),
     (3 / 40, 9 / 40),
     (44 / 45, -56 / 15, 32 / 9),
     (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
     (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
     (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84))      # the 5th-order weights B
E = (-71 / 57600, 0.0, 71 / 16695, -71 / 1920, 17253 / 339200, -22 / 525, 1 / 40)
SAFETY, MIN_FACTOR, MAX_FACTOR, EXPONENT = 0.9, 0.2, 10.0, -1 / 5


def _rms(parts):
    squares = tf.add_n([tf.reduce_sum(tf.square(p)) for p in parts])
    count = tf.add_n([tf.cast(tf.size(p), parts[0].dtype) for p in parts])
    return tf.sqrt(squares / count)


def _combine(y, h, coefficients, ks):
    """y + h sum_j c_j k_j over a nested state (zero coefficients skipped)."""
    terms = [(c, k) for c, k in zip(coefficients, ks) if c != 0.0]
    return tf.nest.map_structure(lambda y_, *k_: y_ + h * tf.add_n([c * kj for (c, _), kj in zip(terms, k_)]),
                                 y, *[k for _, k in terms])


def solve(fn, t0: float, t1: float, y0, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = MAX_STEPS):
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either direction) -> (y(t1), NFE int32).

    ``fn`` is only evaluated at times in [t0, t1].  A non-finite initial state fails at once
    (``NOT_FINITE``); a solve that needs more than ``max_steps`` step attempts, or whose step
    underflows, fails with ``STEP_LIMIT`` instead of running for ever.  In a graph (an exported
    signature) both are InvalidArgumentErrors; ``explain`` turns them into one-line errors.
    """
    dtype = tf.nest.flatten(y0)[0].dtype
    t0, t1 = as_time(t0, dtype), as_time(t1, dtype)
    checks = [tf.debugging.assert_all_finite(y, NOT_FINITE) for y in tf.nest.flatten(y0)]
    with tf.control_dependencies(checks):
        y0 = tf.nest.map_structure(tf.identity, y0)
    f = tf.function(fn)               # traced once, inlined at each call (see the module docstring)
    norm = lambda ys, scale: _rms([y / s for y, s in zip(tf.nest.flatten(ys), tf.nest.flatten(scale))])
    direction = tf.sign(t1 - t0)
    f0 = f(t0, y0)
    h_abs = _initial_step(f, t0, t1, y0, f0, direction, norm, rtol, atol)

    def attempt(t, y, k0, h):
        ks = [k0]
        for s in range(1, 7):
            ks.append(f(t + C[s] * h, _combine(y, h, A[s], ks)))
        y_new = _combine(y, h, A[6], ks)
        scale = tf.nest.map_structure(lambda a, b: atol + rtol * tf.maximum(tf.abs(a), tf.abs(b)), y, y_new)
        err = tf.nest.map_structure(lambda *k_: h * tf.add_n([e * kj for e, kj in zip(E, k_) if e != 0.0]), *ks)
        return y_new, ks[6], norm(err, scale)

    def step(t, y, k0, h_abs, rejected, nfe, attempts):
        tiny = 10.0 * tf.abs(tf.math.nextafter(t, t + direction) - t)
        ok = tf.debugging.assert_less(attempts, max_steps, STEP_LIMIT)
        ok2 = tf.debugging.assert_greater_equal(h_abs, tiny, f"{STEP_LIMIT}: step size underflow")
        with tf.control_dependencies([ok, ok2]):
            t_new = tf.where(direction * (t + h_abs * direction - t1) > 0, t1, t + h_abs * direction)
        h = t_new - t
        y_new, k_new, err = attempt(t, y, k0, h)
        accepted = err < 1.0                                          # False for NaN: rejected
        factor = SAFETY * tf.pow(err, EXPONENT)
        grow = tf.where(err == 0.0, tf.constant(MAX_FACTOR, dtype), tf.minimum(factor, MAX_FACTOR))
        grow = tf.where(rejected, tf.minimum(grow, 1.0), grow)
        shrink = tf.where(tf.math.is_finite(err), tf.maximum(factor, MIN_FACTOR), tf.constant(MIN_FACTOR, dtype))
        pick = lambda a, b: tf.nest.map_structure(lambda u, v: tf.where(accepted, u, v), a, b)
        return (tf.where(accepted, t_new, t), pick(y_new, y), pick(k_new, k0),
                tf.abs(h) * tf.where(accepted, grow, shrink), tf.logical_not(accepted), nfe + 6, attempts + 1)

    loop = (t0, y0, f0, h_abs, tf.constant(False), tf.constant(2, tf.int32), tf.constant(0, tf.int32))
    _, y1, _, _, _, nfe, _ = tf.while_loop(lambda t, *_: direction * (t1 - t) > 0, step, loop,
                                           parallel_iterations=1)
    return y1, nfe


def _initial_step(f, t0, t1, y0, f0, direction, norm, rtol, atol):
    """Hairer, Norsett and Wanner's first step (scipy's select_initial_step), within [t0, t1]."""
    length = tf.abs(t1 - t0)
    scale = tf.nest.map_structure(lambda y: atol + rtol * tf.abs(y), y0)
    d0, d1 = norm(y0, scale), norm(f0, scale)
    h0 = tf.minimum(tf.where((d0 < 1e-5) | (d1 < 1e-5), tf.constant(1e-6, d0.dtype), 0.01 * d0 / d1), length)
    y1 = tf.nest.map_structure(lambda y, k: y + h0 * direction * k, y0, f0)
    f1 = f(t0 + h0 * direction, y1)
    d2 = norm(tf.nest.map_structure(tf.subtract, f1, f0), scale) / h0
    h1 = tf.where((d1 <= 1e-15) & (d2 <= 1e-15), tf.maximum(tf.constant(1e-6, d0.dtype), h0 * 1e-3),
                  tf.pow(0.01 / tf.maximum(d1, d2), 1.0 / 5.0))
    return tf.minimum(tf.minimum(100.0 * h0, h1), length)


def explain(err: tf.errors.InvalidArgumentError) -> Exception:
    """A solver failure as a one-line FloatingPointError naming the cause, or ``err`` itself."""
    text = str(err)
    if NOT_FINITE in text:
        return FloatingPointError("the input of the ODE solve holds NaN or infinite values; pass finite data")
    if STEP_LIMIT in text:
        return FloatingPointError(f"the ODE solver gave up after {MAX_STEPS} steps or a vanishing step (a stiff or "
                                  f"non-finite drift); loosen --rtol/--atol, or check the model for NaN weights")
    return err
