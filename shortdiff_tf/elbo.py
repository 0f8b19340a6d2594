"""The ELBO and its decomposition (paper Sec. 2; docs/METHOD.md section 3).

  L(s, T) = E log prior(x_T) - I(s, T) + R(T)
  I(s, T) = 1/2 int_eps^T g^2 E|s(x_t, t) - grad log p(x_t | x_0)|^2 dt
  R(T)    = (D/2) log(s_T / s_eps)
  L(s, T) = E_{p_eps} log p_eps - G(s, T) - KL[p(x, T) || prior]            (Eq. 8)
  G(s, T) = 1/2 int_eps^T g^2 E_{p(x,t)} |s(x, t) - grad log p(x, t)|^2 dt

One implementation (``elbo_draws``) serves evaluation, the study and the T* ascent: T may be
a float64 tensor, and every draw is then a differentiable function of T.  With the auxiliary
model nu_phi as the prior this is L_phi.  Estimates come with their standard errors.

Prior terms E log prior(x_T) are computed batch by batch (``prior_terms``), so memory does not
grow with the number of examples: in closed form for Gaussian priors, and for a prior without
one (the Glow) with the closed-form p_noise term as a control variate on the same K draws,

  E log nu(x_T) ~ E log p_noise(x_T) [closed form] + mean_k [log nu(x_T^k) - log p_noise(x_T^k)],

which is unbiased and makes L_phi - L = mean_k [log nu - log p_noise](x_T^k) exactly paired.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import tensorflow as tf

from shortdiff_tf import bits, distribute
from shortdiff_tf.priors.gaussian import expected_log_normal
from shortdiff_tf.sde import SDE, bcast
from shortdiff_tf.seeds import as_seed, split
from shortdiff_tf.stats import Estimate
from shortdiff_tf.timesteps import as_time, sample_time, time_from_uniform


CONTROL_VARIATES = ("optimal", "on", "off")
DEFAULT_DRAWS = 16          # (t, e, x_T) draws per example in evaluation (benchmarks/elbo.py)


@dataclasses.dataclass(frozen=True)
class Draws:
    """K draws of (t, e, e_T) per example: the prior-free part of the ELBO, float64.

    Per example, averaged over its K draws: ``Y`` [B], the plain estimate of I(s, T)
    (1/2 w g^2 |s + e/std|^2), and ``C`` [B], the control variate 1/2 w g^2 |e|^2 / s_t whose
    mean ``I0`` is known exactly.  I = Y - beta (C - I0) for any fixed beta; ``beta`` is the one
    chosen (``control``).  ``R`` is R(T); ``x_T`` [K, B, ...] are draws of p(x_T | x_0) =
    N(``mean_T``, ``var_T`` I), mean_T = m_T x_0, at which a prior without a closed form is scored.
    """
    Y: tf.Tensor
    C: tf.Tensor
    I0: tf.Tensor
    beta: tf.Tensor
    R: tf.Tensor
    x_T: tf.Tensor
    mean_T: tf.Tensor
    var_T: tf.Tensor

    @property
    def I(self):
        """Per-example estimate of I(s, T) [B]."""
        return self.Y - self.beta * (self.C - self.I0)

    def elbo(self, prior_term):
        """Per-example L = prior term - I + R [B]."""
        return tf.cast(prior_term, tf.float64) - self.I + self.R


def control_coefficient(Y, C, control: str = "optimal"):
    """beta of I = Y - beta (C - I0): 1 ("on"), 0 ("off"), or ("optimal") the variance-minimising
    Cov(Y, C) / Var(C) over the examples, held constant for gradients (an O(1/B) bias).

    C takes out the |e|^2 / s_t part of |s + e/std|^2, which helps where s is far from -e/std
    (smooth densities); on near-discrete data a good score nearly cancels e/std at small t, C and
    Y move in opposite directions and beta = 1 adds a chi-squared term of about sqrt(2D).
    """
    if control not in CONTROL_VARIATES:
        raise ValueError(f"unknown control variate {control!r}; choose one of {', '.join(CONTROL_VARIATES)}")
    if control != "optimal":
        return tf.constant(1.0 if control == "on" else 0.0, tf.float64)
    Yc, Cc = Y - tf.reduce_mean(Y), C - tf.reduce_mean(C)
    var = tf.reduce_mean(tf.square(Cc))
    return tf.stop_gradient(tf.math.divide_no_nan(tf.reduce_mean(Yc * Cc), var))


def stratified_time(sde: SDE, n, draws: int, seed, importance: bool = True, T=None):
    """``draws`` times per example [draws n], draw-major: draw k of every example takes its uniform
    from the stratum [k/K, (k+1)/K), so each example's K times cover [eps, T] evenly (under the
    importance density when ``importance``); each draw keeps the weight w(t) = 1/q(t)."""
    u = tf.random.stateless_uniform([draws * n], seed, dtype=tf.float64)
    stratum = tf.cast(tf.repeat(tf.range(draws), n), tf.float64)
    return time_from_uniform(sde, (stratum + u) / draws, importance, T, tf.float64)


def elbo_draws(sde: SDE, score_fn, x0, seed, T=None, importance: bool = True, draws: int = 1,
               control: str = "optimal") -> Draws:
    """I by Monte Carlo over ``draws`` (t, e) per example (t stratified) with a control variate,
    R in closed form, and ``draws`` x_T ~ p(x_T | x_0) per example.

    |s + e/std|^2 = |s|^2 + 2 s.e/std + |e|^2/s_t, and the last part has the known integral
    I_0 = (D/2) int g^2 / s_t dt = R - D log(m_T / m_eps) (because R - I_0 = int div f dt =
    D log(m_T / m_eps)); t is drawn by ``timesteps`` (log rho_t uniform when ``importance``).
    """
    if draws < 1:
        raise ValueError(f"--elbo-draws must be >= 1; got {draws}")
    seed = as_seed(seed)
    x0 = tf.convert_to_tensor(x0)
    dim = math.prod(x0.shape[1:])
    T = as_time(sde.T if T is None else T)
    eps = tf.constant(sde.eps, tf.float64)
    xk = tf.tile(x0, tf.concat([[draws], tf.ones_like(tf.shape(x0)[1:])], 0))       # [K B, ...], draw-major
    t, w = stratified_time(sde, tf.shape(x0)[0], draws, split(seed, 0), importance, T)
    e = tf.random.stateless_normal(tf.shape(xk), split(seed, 1), dtype=x0.dtype)
    t_x = tf.cast(t, x0.dtype)
    s = score_fn(sde.perturb(xk, t_x, e), t_x)
    axes = tf.range(1, tf.rank(x0))
    weight = 0.5 * w * sde.g2(t)
    per_example = lambda v: tf.reduce_mean(tf.reshape(v, [draws, -1]), 0)
    Y = per_example(weight * tf.cast(tf.reduce_sum(tf.square(s + e / bcast(sde.std(t_x), x0)), axes), tf.float64))
    C = per_example(weight * tf.cast(tf.reduce_sum(tf.square(e), axes), tf.float64) / sde.variance(t))
    R = 0.5 * dim * tf.math.log(sde.variance(T) / sde.variance(eps))
    I0 = R - dim * tf.math.log(sde.mean_coef(T) / sde.mean_coef(eps))
    mean_T = sde.mean_coef(T) * tf.cast(x0, tf.float64)
    e_T = tf.random.stateless_normal(tf.concat([[draws], tf.shape(x0)], 0), split(seed, 2), dtype=tf.float64)
    x_T = mean_T + tf.sqrt(sde.variance(T)) * e_T
    return Draws(Y, C, I0, control_coefficient(Y, C, control), R, x_T, mean_T, sde.variance(T))


def noise_prior_term(sde: SDE, draws: Draws, T=None):
    """E_{x_T ~ p(x_T | x_0)} log p_noise(x_T) in closed form [B], differentiable in a tensor T:
    -(|m_T x_0|^2 + D s_T) / (2 v_T) - (D/2) log(2 pi v_T)."""
    T = as_time(sde.T if T is None else T)
    return expected_log_normal(draws.mean_T, draws.var_T, 0.0, sde.prior_variance_at(T))


@dataclasses.dataclass(frozen=True)
class ELBO:
    """L = prior_term - I + R in nats per example, with the terms and the setting."""
    elbo: Estimate
    prior_term: Estimate
    I: Estimate
    R: float
    T: float
    eps: float
    dim: int
    num_samples: int
    draws: int = 1
    beta: float = 1.0
    values: Optional[tf.Tensor] = dataclasses.field(default=None, repr=False)     # per-example L [B]
    prior_values: Optional[tf.Tensor] = dataclasses.field(default=None, repr=False)   # per-example prior term [B]

    @staticmethod
    def of(sde: SDE, draws: Draws, prior_term, dim: int, k: int) -> "ELBO":
        L = draws.elbo(prior_term)
        return ELBO(Estimate.of(L), Estimate.of(prior_term), Estimate.of(draws.I), float(draws.R), sde.T, sde.eps,
                    dim, int(L.shape[0]), k, float(draws.beta), L, tf.cast(prior_term, tf.float64))

    def minus(self, other: "ELBO") -> Estimate:
        """L - L_other per example, paired (the same draws): its standard error is that of the
        difference, far below either ELBO's when only the prior term differs."""
        return Estimate.of(self.values - other.values)

    def as_dict(self) -> dict:
        return {"elbo": self.elbo.mean, "elbo_sem": self.elbo.sem, "prior_term": self.prior_term.mean,
                "prior_term_sem": self.prior_term.sem, "I": self.I.mean, "I_sem": self.I.sem,
                "R": self.R, "T": self.T, "eps": self.eps, "dim": self.dim, "num_samples": self.num_samples,
                "draws_per_example": self.draws, "control_beta": self.beta}

    def bits_per_dim(self, data_range: float = 2.0, bits_per_pixel: int = 8) -> float:
        """-L / (D ln 2) + offset: an upper bound on bits/dim (see ``bits``)."""
        return float(bits.bits_per_dim(self.elbo.mean, self.dim, data_range, bits_per_pixel))


def prior_terms(draws: Draws, priors: Dict[str, object], dtype=tf.float32, reference: Optional[str] = None
                ) -> Dict[str, tf.Tensor]:
    """E log prior(x_T) [B] for each named prior, from one batch's draws: in closed form for a
    Gaussian prior (p_noise, or a fitted diagonal Gaussian: ``expected_log_prob``); for another,
    the closed form of ``reference`` (a named prior that has one) plus the mean over the K draws
    x_T of log prior - log reference (the control variate), or without a reference the plain
    mean over the K draws."""
    closed = {name: tf.cast(p.expected_log_prob(draws.mean_T, draws.var_T), tf.float64)
              for name, p in priors.items() if hasattr(p, "expected_log_prob")}
    if reference is not None and reference not in closed:
        raise ValueError(f"the control variate's prior {reference!r} has no closed-form term")
    out = dict(closed)
    for name, p in priors.items():
        if name in closed:
            continue
        logp = draw_log_prob(p, draws.x_T, dtype)
        if reference is None:
            out[name] = tf.reduce_mean(logp, 0)
        else:
            logp_ref = draw_log_prob(priors[reference], draws.x_T, tf.float64)
            out[name] = closed[reference] + tf.reduce_mean(logp - logp_ref, 0)
    return out


def draw_log_prob(prior, x_T, dtype):
    """log prior(x_T^k) [K, B] of the draws x_T [K, B, ...], scored in ``dtype``."""
    k, flat = tf.shape(x_T)[0], tf.reshape(x_T, tf.concat([[-1], tf.shape(x_T)[2:]], 0))
    return tf.reshape(tf.cast(prior.log_prob(tf.cast(flat, dtype)), tf.float64), [k, -1])


def control_prior(priors: Dict[str, object]) -> Optional[str]:
    """The control variate of priors without a closed form: "noise" (p_noise) when it is one of them."""
    return "noise" if "noise" in priors and hasattr(priors["noise"], "expected_log_prob") else None

def elbos(sde: SDE, score_fn, priors: Dict[str, object], x0, seed=0, importance: bool = True,
          batch_size: Optional[int] = None, draws: int = 1, control: str = "optimal",
          strategy=None) -> Dict[str, ELBO]:
    """The ELBO under each named prior from one set of draws (I and R are shared): a paired
    comparison.  ``draws`` (t, e, x_T) per example; with ``batch_size`` the examples go through in
    batches, batch i drawing from ``split(seed, i)``, each batch's prior terms computed at once
    (memory bounded by the batch times ``draws``, whatever the number of examples); with a
    ``strategy`` of R replicas, R full batches at a time run one per replica."""
    x0 = tf.convert_to_tensor(x0)
    n = int(x0.shape[0])
    starts = [0] if batch_size is None else list(range(0, n, batch_size))
    batches = [(x0[i: i + (batch_size or n)], seed if batch_size is None else split(seed, i)) for i in starts]
    names, reference = list(priors), control_prior(priors)

    def one(x, s):
        d = elbo_draws(sde, score_fn, x, s, importance=importance, draws=draws, control=control)
        terms = prior_terms(d, priors, x0.dtype, reference)
        return (d.Y, d.C, d.I0, d.R, *(terms[k] for k in names))

    parts = replicated_batches(strategy, one, batches)
    Y, C = (tf.concat([p[i] for p in parts], 0) for i in (0, 1))
    d = Draws(Y, C, parts[0][2], control_coefficient(Y, C, control), parts[0][3], None, None, None)
    terms = [tf.concat([p[4 + j] for p in parts], 0) for j in range(len(names))]
    return {name: ELBO.of(sde, d, term, math.prod(x0.shape[1:]), draws) for name, term in zip(names, terms)}


def replicated_batches(strategy, one, batches) -> list:
    """``one(x, seed)`` -> a tuple of tensors for every (x, seed) of ``batches``, in order: groups
    of R batches of the first batch's size run one per replica (the same draws as one device);
    the rest, and everything without a strategy of several replicas, on one device."""
    r = distribute.replica_count(strategy)
    size = int(batches[0][0].shape[0])
    full = len([b for b in batches if int(b[0].shape[0]) == size]) // r * r if r > 1 else 0
    parts = [values for g in range(0, full, r) for values in distribute.run_per_replica(strategy, one, batches[g: g + r])]
    return parts + [tuple(one(x, s)) for x, s in batches[full:]]

def elbo(sde: SDE, score_fn, prior, x0, seed=0, importance: bool = True, draws: int = 1,
         control: str = "optimal") -> ELBO:
    """L(s, T) (or L_phi with the auxiliary prior) with ``draws`` MC draws of (t, e) per example of x0."""
    return elbos(sde, score_fn, {"prior": prior}, x0, seed, importance, draws=draws, control=control)["prior"]


def score_gap(sde: SDE, score_fn, true_score_fn, x0, seed=0, importance: bool = True) -> Estimate:
    """G(s, T) = 1/2 int g^2 E_{p(x,t)} |s - grad log p(x,t)|^2 dt, against a known true score."""
    seed = as_seed(seed)
    x0 = tf.convert_to_tensor(x0)
    t, w = sample_time(sde, tf.shape(x0)[0], split(seed, 0), importance, dtype=x0.dtype)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    x_t = sde.perturb(x0, t, e)
    diff = score_fn(x_t, t) - true_score_fn(x_t, t)
    sq = tf.reduce_sum(tf.square(diff), axis=tf.range(1, tf.rank(x0)))
    return Estimate.of(0.5 * w * sde.g2(t) * sq)


def kl_divergence(p_log_prob, q_log_prob, x_from_p) -> Estimate:
    """KL[p || q] = E_p[log p - log q], by Monte Carlo on samples of p."""
    return Estimate.of(p_log_prob(x_from_p) - q_log_prob(x_from_p))
