"""The ELBO and its decomposition (paper Sec. 2; docs/METHOD.md section 3).

  L(s, T) = E log prior(x_T) - I(s, T) + R(T)
  I(s, T) = 1/2 int_eps^T g^2 E|s(x_t, t) - grad log p(x_t | x_0)|^2 dt
  R(T)    = (D/2) log(s_T / s_eps)
  L(s, T) = E_{p_eps} log p_eps - G(s, T) - KL[p(x, T) || prior]            (Eq. 8)
  G(s, T) = 1/2 int_eps^T g^2 E_{p(x,t)} |s(x, t) - grad log p(x, t)|^2 dt

One implementation (``elbo_draws``) serves evaluation, the study and the T* ascent: T may be
a float64 tensor, and every draw is then a differentiable function of T.  With the auxiliary
model nu_phi as the prior this is L_phi.  Estimates come with their standard errors.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional

import tensorflow as tf

from shortdiff_tf import bits
from shortdiff_tf.sde import SDE, bcast
from shortdiff_tf.seeds import as_seed, split
from shortdiff_tf.stats import Estimate
from shortdiff_tf.timesteps import as_time, sample_time


@dataclasses.dataclass(frozen=True)
class Draws:
    """One draw of (t, e, e_T) per example: the prior-free part of the ELBO, float64.

    ``I`` [B] estimates I(s, T); ``R`` is R(T) (a scalar tensor); ``x_T`` [B, ...] is
    m_T x_0 + sqrt(s_T) e_T, a draw of p(x_T | x_0) at which each prior is scored.
    """
    I: tf.Tensor
    R: tf.Tensor
    x_T: tf.Tensor

    def elbo(self, prior_term):
        """Per-example L = prior term - I + R [B]."""
        return tf.cast(prior_term, tf.float64) - self.I + self.R


def elbo_draws(sde: SDE, score_fn, x0, seed, T=None, importance: bool = True) -> Draws:
    """I by Monte Carlo with a control variate, R in closed form, and x_T ~ p(x_T | x_0).

    |s + e/std|^2 = |s|^2 + 2 s.e/std + |e|^2/s_t, and the last part has the known integral
    I_0 = (D/2) int g^2 / s_t dt = R - D log(m_T / m_eps) (because R - I_0 = int div f dt =
    D log(m_T / m_eps)), so I = I_0 + 1/2 int g^2 E[|s|^2 + 2 s.e/std] dt with t drawn by
    ``timesteps`` (log rho_t uniform when ``importance``).
    """
    seed = as_seed(seed)
    x0 = tf.convert_to_tensor(x0)
    dim = math.prod(x0.shape[1:])
    T = as_time(sde.T if T is None else T)
    eps = tf.constant(sde.eps, tf.float64)
    t, w = sample_time(sde, tf.shape(x0)[0], split(seed, 0), importance, T, tf.float64)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    t_x = tf.cast(t, x0.dtype)
    s = score_fn(sde.perturb(x0, t_x, e), t_x)
    inner = tf.reduce_sum(tf.square(s) + 2.0 * s * e / bcast(sde.std(t_x), x0), axis=tf.range(1, tf.rank(x0)))
    R = 0.5 * dim * tf.math.log(sde.variance(T) / sde.variance(eps))
    log_mean_ratio = tf.math.log(sde.mean_coef(T) / sde.mean_coef(eps))
    I = 0.5 * w * sde.g2(t) * tf.cast(inner, tf.float64) + R - dim * log_mean_ratio
    e_T = tf.random.stateless_normal(tf.shape(x0), split(seed, 2), dtype=tf.float64)
    x_T = sde.mean_coef(T) * tf.cast(x0, tf.float64) + tf.sqrt(sde.variance(T)) * e_T
    return Draws(I, R, x_T)


def noise_log_prob(sde: SDE, x, T=None):
    """log p_noise(x) = log N(x; 0, v_T I) per example, float64, differentiable in a tensor T."""
    T = as_time(sde.T if T is None else T)
    x = tf.cast(x, tf.float64)
    v = sde.prior_variance_at(T)
    dim = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), tf.float64)
    return -0.5 * tf.reduce_sum(tf.square(x), axis=tf.range(1, tf.rank(x))) / v - 0.5 * dim * tf.math.log(2 * math.pi * v)


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

    @staticmethod
    def of(sde: SDE, draws: Draws, prior_term) -> "ELBO":
        L = draws.elbo(prior_term)
        return ELBO(Estimate.of(L), Estimate.of(prior_term), Estimate.of(draws.I), float(draws.R), sde.T, sde.eps,
                    math.prod(draws.x_T.shape[1:]), int(L.shape[0]))

    def as_dict(self) -> dict:
        return {"elbo": self.elbo.mean, "elbo_sem": self.elbo.sem, "prior_term": self.prior_term.mean,
                "prior_term_sem": self.prior_term.sem, "I": self.I.mean, "I_sem": self.I.sem,
                "R": self.R, "T": self.T, "eps": self.eps, "dim": self.dim, "num_samples": self.num_samples}

    def bits_per_dim(self, data_range: float = 2.0, bits_per_pixel: int = 8) -> float:
        """-L / (D ln 2) + offset: an upper bound on bits/dim (see ``bits``)."""
        return float(bits.bits_per_dim(self.elbo.mean, self.dim, data_range, bits_per_pixel))


def prior_terms(draws: Draws, priors: Dict[str, object], dtype=tf.float32) -> Dict[str, tf.Tensor]:
    """log prior(x_T) [B] for each named prior, at the same draws x_T."""
    return {name: tf.cast(p.log_prob(tf.cast(draws.x_T, dtype)), tf.float64) for name, p in priors.items()}


def elbos(sde: SDE, score_fn, priors: Dict[str, object], x0, seed=0, importance: bool = True,
          batch_size: Optional[int] = None) -> Dict[str, ELBO]:
    """The ELBO under each named prior from one set of draws (I and R are shared): a paired
    comparison.  With ``batch_size`` the examples go through in batches (memory bounded by the
    batch), batch i drawing from ``split(seed, i)``."""
    x0 = tf.convert_to_tensor(x0)
    n = int(x0.shape[0])
    starts = [0] if batch_size is None else range(0, n, batch_size)
    parts = [elbo_draws(sde, score_fn, x0[i: i + (batch_size or n)], seed if batch_size is None else split(seed, i),
                        importance=importance) for i in starts]
    draws = Draws(tf.concat([d.I for d in parts], 0), parts[0].R, tf.concat([d.x_T for d in parts], 0))
    return {name: ELBO.of(sde, draws, term) for name, term in prior_terms(draws, priors, x0.dtype).items()}


def elbo(sde: SDE, score_fn, prior, x0, seed=0, importance: bool = True) -> ELBO:
    """L(s, T) (or L_phi with the auxiliary prior) with one MC draw of (t, e) per example of x0."""
    return elbos(sde, score_fn, {"prior": prior}, x0, seed, importance)["prior"]


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
