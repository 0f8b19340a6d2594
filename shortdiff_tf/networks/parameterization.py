"""How a score network's output becomes the score:  s_theta(x, t) = net(x, c(t)) / sigma(t).

The network predicts -e for x_t = m_t x_0 + sigma(t) e (Song et al. 2021).  Two choices:

  embedding   "fourier":     c(t) = log std(t)  (ours: Fourier features of the noise level)
              "positional":  c(t) = (N - 1) t   (ScoreSDE's and DDPM's label, N = num_scales)
  std         "sde":         sigma(t) = std(t) of the SDE's marginal (continuous models)
              "scoresde":    the same std as ScoreSDE computes it, in float32 from
                             log m_t = -t^2 (beta_1 - beta_0) / 4 - t beta_0 / 2: VP sqrt(1 - exp(2 log m_t)),
                             sub-VP 1 - exp(2 log m_t) (without expm1 it keeps about 1e-7 of
                             1 - m_t^2: 0.6% off at t = 1e-5, and an imported model's score is
                             the reference's only with the reference's rounding)
              "discrete":    sigma(t) = sqrt(1 - alphabar_k), k = floor((N - 1) t), of the N-step
                             VP discretisation beta_i = linspace(beta_0 / N, beta_1 / N, N),
                             alphabar_k = prod_{i <= k} (1 - beta_i): ScoreSDE's rule for its
                             discrete VP models, which diffusers' DDPM models follow as well.

Both labels are functions of t on the [0, 1] schedule, so they hold for any truncation T <= 1.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

EMBEDDINGS = ("fourier", "positional")
STDS = ("sde", "scoresde", "discrete")


@dataclasses.dataclass(frozen=True)
class Parameterization:
    embedding: str = "fourier"
    std: str = "sde"
    num_scales: int = 1000

    def __post_init__(self):
        if self.embedding not in EMBEDDINGS:
            raise ValueError(f"unknown embedding {self.embedding!r}; choose one of {', '.join(EMBEDDINGS)}")
        if self.std not in STDS:
            raise ValueError(f"unknown score std {self.std!r}; choose one of {', '.join(STDS)}")
        if self.num_scales < 2:
            raise ValueError(f"num_scales must be >= 2; got {self.num_scales}")

    def label(self, t):
        """(N - 1) t in float32, as the reference computes it [B]."""
        return tf.cast(t, tf.float32) * float(self.num_scales - 1)

    def conditioning(self, sde, t, std):
        """c(t) [B] fed to the network (``std``: sigma(t) already computed)."""
        return self.label(t) if self.embedding == "positional" else tf.math.log(tf.cast(std, tf.float32))

    def sigma(self, sde, t):
        """sigma(t) [B] float32."""
        t = tf.cast(t, tf.float32)
        if self.std == "sde":
            return sde.std(t)
        if self.std == "scoresde":
            return scoresde_std(sde, t)
        table = tf.constant(discrete_std(sde, self.num_scales), tf.float32)
        return tf.gather(table, tf.cast(tf.floor(self.label(t)), tf.int32))


def scoresde_std(sde, t):
    """ScoreSDE's VP / sub-VP ``marginal_prob`` std in float32 (see the module docstring)."""
    hyper = sde.hyperparameters()
    if sde.name not in ("vp", "subvp"):
        raise ValueError(f"ScoreSDE's std is imported for VP and sub-VP; this run's SDE is {sde.name}")
    b0, b1 = float(hyper["beta_0"]), float(hyper["beta_1"])
    log_mean = -0.25 * t**2 * (b1 - b0) - 0.5 * t * b0
    one_minus = 1.0 - tf.exp(2.0 * log_mean)
    return tf.sqrt(one_minus) if sde.name == "vp" else one_minus


def discrete_std(sde, num_scales: int) -> np.ndarray:
    """sqrt(1 - alphabar_k), k = 0..N-1, of the N-step discretisation of a VP schedule, in float32
    arithmetic as the references compute it (near k = 0, 1 - alphabar ~ 1e-4 keeps only about
    four float32 digits, and the score inherits them)."""
    hyper = sde.hyperparameters()
    if sde.name != "vp" or "beta_0" not in hyper:
        raise ValueError(f"the discrete score std is defined for the VP SDE only; this run's SDE is {sde.name}")
    betas = float32_linspace(hyper["beta_0"] / num_scales, hyper["beta_1"] / num_scales, num_scales)
    return np.sqrt(np.float32(1.0) - np.cumprod(np.float32(1.0) - betas, dtype=np.float32))


def float32_linspace(start: float, end: float, n: int) -> np.ndarray:
    """torch.linspace(start, end, n) in float32: start + step i over the first half, end - step
    (n - 1 - i) over the second, every operation rounded to float32."""
    start, end = np.float32(start), np.float32(end)
    step = (end - start) / np.float32(n - 1)
    i = np.arange(n)
    first = start + step * i.astype(np.float32)
    second = end - step * (n - 1 - i).astype(np.float32)
    return np.where(i < n // 2, first, second).astype(np.float32)
