"""Exact log-likelihood by the probability-flow ODE, and bits/dim with every term.

  d/dt [x, l] = [f~(x, t), div f~(x, t)],  f~ = f - g^2 s_theta / 2,   integrated eps -> T,
  log q(x_0) = log prior(x_T) + int_eps^T div f~ dt          (Song et al. 2021, eq. 39)

The divergence is exact (Jacobian trace; low dimension) or the Hutchinson-Skilling estimate
z^T (df~/dx) z with one probe z per solve, from one forward pass and one vector-Jacobian
product (``tape.gradient(f~, x, output_gradients=z)``).
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from shortdiff_tf import bits, distribute, ode
from shortdiff_tf.sde import SDE, reverse_drift
from shortdiff_tf.seeds import as_seed
from shortdiff_tf.stats import standard_error

DIVERGENCES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")


@dataclasses.dataclass(frozen=True)
class LogLikelihood:
    """log q(x_0) = prior_logp + delta_logp, per example, with how it was computed."""
    log_prob: tf.Tensor      # [B]
    prior_logp: tf.Tensor    # [B]  log prior(x_T)
    delta_logp: tf.Tensor    # [B]  int_eps^T div f~ dt
    x_T: tf.Tensor
    nfe: int
    T: float
    eps: float
    rtol: float
    atol: float
    divergence: str


def probe_noise(shape, seed, kind: str = "rademacher", dtype=tf.float32):
    """Hutchinson probes: Rademacher (+-1) or standard Gaussian; E[z z^T] = I."""
    if kind == "rademacher":
        return tf.cast(tf.random.stateless_uniform(shape, seed, 0, 2, dtype=tf.int32) * 2 - 1, dtype)
    if kind == "gaussian":
        return tf.random.stateless_normal(shape, seed, dtype=dtype)
    raise ValueError(f"unknown probe {kind!r}; choose one of {', '.join(PROBES)}")


def hutchinson_divergence(fn, x, z):
    """-> (fn(x), z^T J_fn(x) z [B]) from one forward pass and one vector-Jacobian product (with
    respect to x only: the network's weights are not watched, so no weight gradients are built)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        y = fn(x)
    vjp = tape.gradient(y, x, output_gradients=z)
    return y, tf.reduce_sum(vjp * z, axis=tf.range(1, tf.rank(x)))


def exact_divergence(fn, x):
    """-> (fn(x), tr J_fn(x) [B]) by the full Jacobian: D vector-Jacobian products."""
    shape = tf.shape(x)
    flat = tf.reshape(x, [shape[0], -1])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(flat)
        y = fn(tf.reshape(flat, shape))
        y_flat = tf.reshape(y, [shape[0], -1])
    jac = tape.batch_jacobian(y_flat, flat, experimental_use_pfor=False)
    return y, tf.linalg.trace(jac)


class LikelihoodEstimator:
    """Compiled PF-ODE likelihood for one (sde, score, prior) triple; retraces only on new shapes."""

    def __init__(self, sde: SDE, score_fn, prior, rtol: float = 1e-5, atol: float = 1e-5,
                 divergence: str = "hutchinson", probe: str = "rademacher", jit: bool = False, strategy=None,
                 on_evaluation=None):
        """``jit``: XLA-compile the ODE's right-hand side (the drift and its divergence).
        ``strategy``: split each batch over its replicas (``_replicated``).  ``on_evaluation(nfe, t)``:
        a host call after each network evaluation (``ode.observed``: progress; results unchanged;
        never in an exported graph)."""
        if divergence not in DIVERGENCES:
            raise ValueError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
        if probe not in PROBES:
            raise ValueError(f"unknown probe {probe!r}; choose one of {', '.join(PROBES)}")
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"rtol and atol must be > 0; got rtol={rtol}, atol={atol}")
        self.sde, self.score_fn, self.prior = sde, score_fn, prior
        self.rtol, self.atol, self.divergence, self.probe, self.jit = rtol, atol, divergence, probe, jit
        self.strategy = distribute.multi_replica(strategy)
        self.on_evaluation = on_evaluation
        self._solve = tf.function(self._solve_impl, autograph=False)     # no Python control flow: no conversion cost

    def __call__(self, x0, seed=0) -> LogLikelihood:
        x0 = tf.convert_to_tensor(x0)
        if hasattr(self.prior, "event_shape") and x0.shape[1:].as_list() != list(self.prior.event_shape):
            raise ValueError(f"data shape {x0.shape[1:].as_list()} does not match the model's "
                             f"shape {list(self.prior.event_shape)}")
        try:
            x_T, prior_logp, delta, nfe = self.terms(x0, seed)
        except tf.errors.InvalidArgumentError as err:
            raise ode.explain(err) from None
        return LogLikelihood(prior_logp + delta, prior_logp, delta, x_T, int(nfe), self.sde.T,
                             self.sde.eps, self.rtol, self.atol, self.divergence)

    def terms(self, x0, seed):
        """Graph-safe: -> (x_T, log prior(x_T), delta log p, nfe) as tensors."""
        z = probe_noise(tf.shape(x0), as_seed(seed), self.probe, x0.dtype)
        x_T, delta, nfe = self._solve(x0, z) if self.strategy is None else self._replicated(x0, z)
        return x_T, tf.cast(self.prior.log_prob(x_T), x0.dtype), delta, nfe

    def _replicated(self, x0, z):
        """Data parallel: replica k solves rows k B/R .. (k + 1) B/R - 1 of the batch with the same
        probes as one device would use; -> the rows in order, and the largest replica NFE."""
        r = self.strategy.num_replicas_in_sync
        x_T, delta, nfe = zip(*distribute.run_per_replica(self.strategy, self._solve,
                                                          list(zip(tf.split(x0, r), tf.split(z, r)))))
        return tf.concat(x_T, 0), tf.concat(delta, 0), tf.reduce_max(tf.stack(nfe))

    def _solve_impl(self, x0, z):
        ones = tf.ones(tf.shape(x0)[:1], x0.dtype)

        def fn(t, state):
            x, _ = state
            drift = lambda y: reverse_drift(self.sde, self.score_fn, y, t * ones, ode=True)
            if self.divergence == "exact":
                dx, div = exact_divergence(drift, x)
            else:
                dx, div = hutchinson_divergence(drift, x, z)
            return dx, div

        if self.jit:
            fn = tf.function(fn, jit_compile=True, autograph=False)
        (x_T, delta), nfe = ode.solve(fn, self.sde.eps, self.sde.T, (x0, tf.zeros_like(ones)),
                                      self.rtol, self.atol, on_evaluation=self.on_evaluation)
        return x_T, delta, nfe


def ode_log_likelihood(sde, score_fn, prior, x0, seed=0, **options) -> LogLikelihood:
    """One-shot ``LikelihoodEstimator(sde, score_fn, prior, **options)(x0, seed)``."""
    return LikelihoodEstimator(sde, score_fn, prior, **options)(x0, seed)


def concatenate(parts) -> LogLikelihood:
    """Join the per-batch results of one evaluation (NFE: the mean over batches)."""
    cat = lambda name: tf.concat([getattr(p, name) for p in parts], 0)
    first = parts[0]
    return dataclasses.replace(first, log_prob=cat("log_prob"), prior_logp=cat("prior_logp"),
                               delta_logp=cat("delta_logp"), x_T=cat("x_T"),
                               nfe=int(round(sum(p.nfe for p in parts) / len(parts))))


# ---- bits per dimension -----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class BitsPerDim:
    """bits/dim = prior_T + ode + offset, per example; with NFE, eps, T and solver tolerances."""
    total: tf.Tensor      # [B]
    prior_T: tf.Tensor    # [B]  -log prior(x_T) / (D ln 2)
    ode: tf.Tensor        # [B]  -int div f~ dt / (D ln 2)
    offset: float         # bits - log2(data range), from the data scaling (``bits``)
    nfe: int
    T: float
    eps: float
    rtol: float
    atol: float
    dim: int

    def summary(self) -> dict:
        """Means and the standard error of the mean, as plain floats."""
        return {"bpd": float(tf.reduce_mean(self.total)), "bpd_sem": standard_error(self.total),
                "prior_T": float(tf.reduce_mean(self.prior_T)), "ode": float(tf.reduce_mean(self.ode)),
                "offset": self.offset, "nfe": self.nfe, "T": self.T, "eps": self.eps,
                "rtol": self.rtol, "atol": self.atol, "num_examples": int(self.total.shape[0])}


def bits_per_dim(ll: LogLikelihood, data_range: float = 2.0, bits_per_pixel: int = 8) -> BitsPerDim:
    """Convert a PF-ODE log-likelihood of scaled, dequantised data to bits/dim (see ``bits``)."""
    dim = math.prod(ll.x_T.shape[1:])
    return BitsPerDim(bits.bits_per_dim(ll.log_prob, dim, data_range, bits_per_pixel),
                      bits.nats_to_bits_per_dim(ll.prior_logp, dim), bits.nats_to_bits_per_dim(ll.delta_logp, dim),
                      bits.dequantization_offset(data_range, bits_per_pixel), ll.nfe, ll.T, ll.eps, ll.rtol, ll.atol,
                      dim)
