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
the flat vector ScoreSDE passes.

One evaluation of ``f`` per loop iteration.  Every evaluation -- the two that choose the first
step and the six stages of each attempt -- is a row of one table (c, a): the iteration forms
t + c h and y + h sum_j a_j K_j from the stored stages K, calls ``f`` once and files the result.
So the graph holds a single copy of ``f`` (a network's forward pass and its VJP): tracing and
graph optimisation, the cost of a first call, are those of one evaluation rather than eight
(what that costs against six stages in one graph: benchmarks/README.md, "Solver").

Time, step sizes and the error norm are float64 whatever the state's dtype (scipy's are float64
too): a float32 state (the likelihood's) rounds the stages and the solution, not the step
control, so it takes scipy's steps on the same problem (tested).  ``f`` gets t in the state's dtype.

The loop state (``Loop``), one row per iteration of the while loop:

  row   the evaluation row this iteration computes: 0 f(t0, y0), 1 the probe of the first step,
        2..6 the stages k_2..k_6 of an attempt, 7 its last stage k_7 = f(t + h, y_new)
  t     where the current attempt starts;  t_new = t + h, where it ends;  h the signed step
  y     the solution at t;  K [7, ...] the attempt's stages (K_0 = k_1, from the last attempt)
  rejected: the previous attempt was;  nfe, attempts: counts;  done: t reached t1
"""
from __future__ import annotations

from typing import NamedTuple

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

# Evaluation rows: 0 = f(t0, y0); 1 = f(t0 + h0, y0 + h0 f0), the probe of the first step size;
# 2..7 = the stages k_2..k_7 of an attempt (k_1 = K_0 is the previous step's last stage).
FIRST_STAGE, LAST_STAGE = 2, 7
ROW_C = (0.0, 1.0) + C[1:]
ROW_A = ((), (1.0,)) + A[1:]


TIME = tf.float64           # time, step sizes and the error norm


class Loop(NamedTuple):
    """The while loop's state (the module docstring's table)."""
    row: tf.Tensor
    t: tf.Tensor
    t_new: tf.Tensor
    h: tf.Tensor
    y: object
    K: object
    rejected: tf.Tensor
    nfe: tf.Tensor
    attempts: tf.Tensor
    done: tf.Tensor


def _rms(parts):
    squares = tf.add_n([tf.reduce_sum(tf.square(p)) for p in parts])
    count = tf.add_n([tf.cast(tf.size(p), TIME) for p in parts])
    return tf.sqrt(squares / count)


def _norm(ys, scale):
    """RMS of ys / scale over every element, in float64."""
    return _rms([tf.cast(y, TIME) / s for y, s in zip(tf.nest.flatten(ys), tf.nest.flatten(scale))])


def _weighted(coefficients, K, dtype=None):
    """sum_j c_j K_j over the stacked stages K [7, ...] of each leaf (in ``dtype``, default K's)."""
    return tf.nest.map_structure(lambda k: tf.tensordot(tf.cast(coefficients, dtype or k.dtype),
                                                        tf.cast(k, dtype or k.dtype), 1), K)


def solve(fn, t0: float, t1: float, y0, rtol: float = 1e-5, atol: float = 1e-5, max_steps: int = MAX_STEPS,
          on_evaluation=None):
    """Integrate dy/dt = fn(t, y) from t0 to t1 (either direction) -> (y(t1), NFE int32).

    ``fn`` is only evaluated at times in [t0, t1], and traced once.  ``on_evaluation(nfe, t)``, if
    given, is called on the host after each evaluation (``observed``); a host callback cannot be
    saved, so exported graphs never pass one.  A non-finite initial state
    fails at once (``NOT_FINITE``); a solve that needs more than ``max_steps`` step attempts, or
    whose step underflows, fails with ``STEP_LIMIT`` instead of running for ever.  In a graph (an
    exported signature) both are InvalidArgumentErrors; ``explain`` turns them into one-line errors.
    """
    if tf.executing_eagerly():
        return tf.function(lambda y: _solve(fn, t0, t1, y, rtol, atol, max_steps, on_evaluation),
                           autograph=False)(y0)
    return _solve(fn, t0, t1, y0, rtol, atol, max_steps, on_evaluation)


def observed(nfe, t, k, on_evaluation):
    """``nfe`` passed through a host call ``on_evaluation(nfe, t)`` that runs once the evaluation
    ``k`` exists.  The call reads only the counter and the time and feeds nothing back into the
    state: the network's ops and inputs are those of the unobserved solve, so are its results
    (tested bit for bit)."""
    with tf.control_dependencies(tf.nest.flatten(k)):
        call = tf.py_function(lambda n, t_: (on_evaluation(int(n), float(t_)), 0)[1], [nfe, t], tf.int32)
    with tf.control_dependencies([call]):
        return tf.identity(nfe)


def _solve(fn, t0, t1, y0, rtol, atol, max_steps, on_evaluation=None):
    dtype = tf.nest.flatten(y0)[0].dtype
    t0, t1 = as_time(t0, TIME), as_time(t1, TIME)
    checks = [tf.debugging.assert_all_finite(y, NOT_FINITE) for y in tf.nest.flatten(y0)]
    with tf.control_dependencies(checks):
        y0 = tf.nest.map_structure(tf.identity, y0)
    table_c = tf.constant(ROW_C, TIME)
    table_a = tf.constant([list(a) + [0.0] * (7 - len(a)) for a in ROW_A], dtype)
    update = _Update(t1, tf.sign(t1 - t0), tf.abs(t1 - t0), rtol, atol, max_steps)

    def body(*state):
        s = Loop(*state)
        h = tf.cast(s.h, dtype)
        y_eval = tf.nest.map_structure(lambda y_, w: y_ + h * w, s.y, _weighted(tf.gather(table_a, s.row), s.K))
        t_eval = s.t + tf.gather(table_c, s.row) * s.h
        k = fn(tf.cast(t_eval, dtype), y_eval)
        nfe = s.nfe + 1
        s = s._replace(nfe=nfe if on_evaluation is None else observed(nfe, t_eval, k, on_evaluation))
        branch = tf.minimum(s.row, FIRST_STAGE) + tf.cast(s.row == LAST_STAGE, tf.int32)    # init, probe, stage, last
        return tf.switch_case(branch, [lambda: update.init(s, k), lambda: update.probe(s, k),
                                       lambda: update.stage(s, k), lambda: update.last(s, k, y_eval)])

    K0 = tf.nest.map_structure(lambda y: tf.zeros(tf.concat([[7], tf.shape(y)], 0), dtype), y0)
    zero = tf.constant(0, tf.int32)
    state = Loop(zero, t0, t0, tf.zeros([], TIME), y0, K0, tf.constant(False), zero, zero, tf.equal(t0, t1))
    out = Loop(*tf.while_loop(lambda *s: tf.logical_not(s[-1]), body, tuple(state), parallel_iterations=1))
    return out.y, out.nfe


class _Update:
    """What each kind of evaluation row does with its result k; every method returns the loop
    state as a tuple (``Loop``).  Step control is float64 (``TIME``)."""

    def __init__(self, t1, direction, length, rtol, atol, max_steps):
        self.t1, self.direction, self.length = t1, direction, length
        self.rtol, self.atol, self.max_steps = rtol, atol, max_steps

    def _scale(self, *ys):
        """atol + rtol max |y| over the given states, elementwise, in float64."""
        leaves = [tf.nest.flatten(y) for y in ys]
        return [self.atol + self.rtol * tf.reduce_max(tf.stack([tf.abs(tf.cast(v, TIME)) for v in vs]), 0)
                for vs in zip(*leaves)]

    def init(self, s: Loop, k):
        """k = f(t0, y0): file it as K_0 and pick the probe step h0 (Hairer-Norsett-Wanner)."""
        scale = self._scale(s.y)
        d0, d1 = _norm(s.y, scale), _norm(k, scale)
        h0 = tf.where((d0 < 1e-5) | (d1 < 1e-5), tf.constant(1e-6, TIME), 0.01 * d0 / d1)
        h0 = tf.minimum(h0, self.length)
        K = tf.nest.map_structure(lambda K_, k_: tf.tensor_scatter_nd_update(K_, [[0]], k_[None]), s.K, k)
        return tuple(s._replace(row=s.row + 1, h=h0 * self.direction, K=K))

    def probe(self, s: Loop, k):
        """k = f(t0 + h0, y0 + h0 f0): the first step size, then the first attempt."""
        scale, f0, h0 = self._scale(s.y), tf.nest.map_structure(lambda K_: K_[0], s.K), tf.abs(s.h)
        d1 = _norm(f0, scale)
        diff = tf.nest.map_structure(lambda a, b: tf.cast(a, TIME) - tf.cast(b, TIME), k, f0)
        d2 = _norm(diff, scale) / h0
        h1 = tf.where((d1 <= 1e-15) & (d2 <= 1e-15), tf.maximum(tf.constant(1e-6, TIME), h0 * 1e-3),
                      tf.pow(0.01 / tf.maximum(d1, d2), 1.0 / 5.0))
        h_abs = tf.minimum(tf.minimum(100.0 * h0, h1), self.length)
        return self._attempt(s._replace(K=s.K), s.t, h_abs, s.y, f0)

    def stage(self, s: Loop, k):
        """k = k_s of the current attempt (rows 2..6 hold s = 2..6): file it as K_{s-1}."""
        K = tf.nest.map_structure(lambda K_, k_: tf.tensor_scatter_nd_update(K_, [[s.row - 1]], k_[None]), s.K, k)
        return tuple(s._replace(row=s.row + 1, K=K))

    def last(self, s: Loop, k, y_new):
        """k = f(t + h, y_new) = k_7: the error estimate, accept or reject, the next step size."""
        K = tf.nest.map_structure(lambda K_, k_: tf.tensor_scatter_nd_update(K_, [[6]], k_[None]), s.K, k)
        err = _norm(tf.nest.map_structure(lambda e: s.h * e, _weighted(tf.constant(E, TIME), K, TIME)),
                    self._scale(s.y, y_new))
        accepted = err < 1.0                                          # False for NaN: rejected
        factor = SAFETY * tf.pow(err, EXPONENT)
        grow = tf.where(err == 0.0, tf.constant(MAX_FACTOR, TIME), tf.minimum(factor, MAX_FACTOR))
        grow = tf.where(s.rejected, tf.minimum(grow, 1.0), grow)
        shrink = tf.where(tf.math.is_finite(err), tf.maximum(factor, MIN_FACTOR), tf.constant(MIN_FACTOR, TIME))
        pick = lambda a, b: tf.nest.map_structure(lambda u, v: tf.where(accepted, u, v), a, b)
        first = tf.nest.map_structure(lambda K_: tf.where(accepted, K_[6], K_[0]), K)        # FSAL
        t = tf.where(accepted, s.t_new, s.t)
        h_abs = tf.abs(s.h) * tf.where(accepted, grow, shrink)
        s = s._replace(K=K, rejected=tf.logical_not(accepted), attempts=s.attempts + 1,
                       done=self.direction * (self.t1 - t) <= 0)
        return self._attempt(s, t, h_abs, pick(y_new, s.y), first)

    def _attempt(self, s: Loop, t, h_abs, y, first):
        """Start an attempt of size h_abs from t (clipped at t1) with K_0 = ``first`` and the other
        stages cleared (a rejected attempt's NaN must not reach the next through a zero
        coefficient); or stop."""
        tiny = 10.0 * tf.abs(tf.math.nextafter(t, t + self.direction) - t)
        checks = [tf.debugging.Assert(s.done | (s.attempts < self.max_steps), [STEP_LIMIT]),
                  tf.debugging.Assert(s.done | (h_abs >= tiny), [f"{STEP_LIMIT}: step size underflow"])]
        with tf.control_dependencies(checks):
            t_new = tf.where(self.direction * (t + h_abs * self.direction - self.t1) > 0, self.t1,
                             t + h_abs * self.direction)
        K = tf.nest.map_structure(lambda K_, k0: tf.concat([k0[None], tf.zeros_like(K_[1:])], 0), s.K, first)
        return tuple(s._replace(row=tf.constant(FIRST_STAGE), t=t, t_new=t_new, h=t_new - t, y=y, K=K))


def explain(err: tf.errors.InvalidArgumentError) -> Exception:
    """A solver failure as a one-line FloatingPointError naming the cause, or ``err`` itself."""
    text = str(err)
    if NOT_FINITE in text:
        return FloatingPointError("the input of the ODE solve holds NaN or infinite values; pass finite data")
    if STEP_LIMIT in text:
        return FloatingPointError(f"the ODE solver gave up after {MAX_STEPS} steps or a vanishing step (a stiff or "
                                  f"non-finite drift); loosen --rtol/--atol, or check the model for NaN weights")
    return err
