"""The ELBO and its decomposition (paper Sec. 2, METHOD.md section 3).

  L(s, T) = E log prior(x_T) - I(s, T) + R(T)
  I(s, T) = 1/2 int_eps^T g^2 E|s(x_t, t) - grad log p(x_t | x_0)|^2 dt
  R(T)    = (D/2) log(s_T / s_eps)
  L(s, T) = E_{p_eps} log p_eps - G(s, T) - KL[p(x, T) || prior]            (Eq. 8)
  G(s, T) = 1/2 int_eps^T g^2 E_{p(x,t)} |s(x, t) - grad log p(x, t)|^2 dt

I and G are estimated by Monte Carlo with log s_t uniform (``losses.sample_time``); every
estimate comes with its standard error.  With ``prior`` the auxiliary model nu_phi this is L_phi.
"""
from __future__ import annotations

import dataclasses
import math

import tensorflow as tf

from shortdiff_tf.losses import sample_time
from shortdiff_tf.sde import SDE, bcast
from shortdiff_tf.seeds import as_seed, split


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean and its standard error."""
    mean: float
    sem: float

    @staticmethod
    def of(values) -> "Estimate":
        v = tf.cast(tf.reshape(values, [-1]), tf.float64)
        n = int(v.shape[0])
        return Estimate(float(tf.reduce_mean(v)), float(tf.math.reduce_std(v)) / math.sqrt(max(n - 1, 1)))


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

    def as_dict(self) -> dict:
        d = {"elbo": self.elbo.mean, "elbo_sem": self.elbo.sem, "prior_term": self.prior_term.mean,
             "prior_term_sem": self.prior_term.sem, "I": self.I.mean, "I_sem": self.I.sem,
             "R": self.R, "T": self.T, "eps": self.eps, "dim": self.dim, "num_samples": self.num_samples}
        return d

    def bits_per_dim(self, data_range: float = 2.0, bits: int = 8) -> float:
        """-L / (D ln 2) + offset: an upper bound on bits/dim (see likelihood.dequantization_offset)."""
        return -self.elbo.mean / (self.dim * math.log(2.0)) + bits - math.log2(data_range)


def elbo(sde: SDE, score_fn, prior, x0, seed=0, importance: bool = True) -> ELBO:
    """One MC draw of (t, e) per example of x0; each example contributes log prior(x_T) - I + R.

    I is estimated with a control variate: |s + e/std|^2 = |s|^2 + 2 s.e/std + |e|^2/s_t, and the
    last part has the known integral I_0 = (D/2) int g^2 / s_t dt = R - D log(m_T / m_eps)
    (because R - I_0 = int div f dt = D log(m_T / m_eps)).  So
    I = I_0 + 1/2 int g^2 E[|s|^2 + 2 s.e/std] dt, whose estimate has far less variance near eps.
    """
    seed = as_seed(seed)
    x0 = tf.convert_to_tensor(x0)
    dim = int(math.prod(x0.shape[1:]))
    n = tf.shape(x0)[0]
    t, w = sample_time(sde, n, split(seed, 0), importance, x0.dtype)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    s = score_fn(sde.perturb(x0, t, e), t)
    axes = tf.range(1, tf.rank(x0))
    inner = tf.reduce_sum(tf.square(s) + 2.0 * s * e / bcast(sde.std(t), x0), axis=axes)
    R = sde.R(dim)
    i_term = 0.5 * w * sde.g2(t) * inner + (R - dim * log_mean_ratio(sde))    # [B]
    e_T = tf.random.stateless_normal(tf.shape(x0), split(seed, 2), dtype=x0.dtype)
    T = tf.fill(tf.shape(x0)[:1], tf.constant(sde.T, x0.dtype))
    prior_term = tf.cast(prior.log_prob(sde.perturb(x0, T, e_T)), x0.dtype)
    return ELBO(Estimate.of(prior_term - i_term + R), Estimate.of(prior_term), Estimate.of(i_term),
                R, sde.T, sde.eps, dim, int(x0.shape[0]))


def log_mean_ratio(sde: SDE) -> float:
    """log(m_T / m_eps) = int_eps^T a(t) dt."""
    m = lambda t: float(sde.mean_coef(tf.constant(t, tf.float64)))
    return math.log(m(sde.T) / m(sde.eps))


def score_gap(sde: SDE, score_fn, true_score_fn, x0, seed=0, importance: bool = True) -> Estimate:
    """G(s, T) = 1/2 int g^2 E_{p(x,t)} |s - grad log p(x,t)|^2 dt, against a known true score."""
    seed = as_seed(seed)
    x0 = tf.convert_to_tensor(x0)
    n = tf.shape(x0)[0]
    t, w = sample_time(sde, n, split(seed, 0), importance, x0.dtype)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    x_t = sde.perturb(x0, t, e)
    diff = score_fn(x_t, t) - true_score_fn(x_t, t)
    sq = tf.reduce_sum(tf.square(diff), axis=tf.range(1, tf.rank(x0)))
    return Estimate.of(0.5 * w * sde.g2(t) * sq)


def kl_divergence(p_log_prob, q_log_prob, x_from_p) -> Estimate:
    """KL[p || q] = E_p[log p - log q], by Monte Carlo on samples of p."""
    return Estimate.of(p_log_prob(x_from_p) - q_log_prob(x_from_p))
