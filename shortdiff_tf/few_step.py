"""Few-step deterministic solvers of the probability-flow ODE from T: EDM's Heun and
DPM-Solver++(2M), for every linear SDE, from any prior at T.

In the scaled variable x^ = x / m_t and the noise level sigma = sqrt(s_t) / m_t (so sigma^2 is
the inverse signal-to-noise ratio rho_t), the PF-ODE of every linear SDE is the same ODE

  dx^/dsigma = (x^ - D(x^; sigma)) / sigma,   D(x^; sigma) = x^ + sigma^2 m_t s_theta(m_t x^, t(sigma)),

with D Tweedie's denoiser and t(sigma) = time_at_noise_ratio(sigma^2) (Karras et al. 2022, EDM,
eqs. 4 and 6 with s(t) = m_t).  Both solvers walk EDM's grid (eq. 5, rho = 7)

  sigma_i = (sigma_max^(1/rho) + i/n (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho,  i = 0..n,

from sigma_max = sigma(T) to sigma_min = sigma(eps) in n steps; with ``denoise`` a last Euler
step to sigma = 0 returns D(x^; sigma_min), the denoised sample (EDM's final step).

  heun   (EDM Alg. 1)   d_i = (x^_i - D(x^_i; sigma_i)) / sigma_i,  x~ = x^_i + (sigma_{i+1} - sigma_i) d_i,
                        x^_{i+1} = x^_i + (sigma_{i+1} - sigma_i)(d_i + d~)/2;  NFE = 2n (+1 to denoise)
  dpm2m  (Lu et al. 2022, DPM-Solver++(2M), data prediction; h_i = log(sigma_i / sigma_{i+1}))
                        x^_{i+1} = (sigma_{i+1}/sigma_i) x^_i + (1 - sigma_{i+1}/sigma_i) D~_i,
                        D~_i = (1 + 1/(2 q)) D_i - 1/(2 q) D_{i-1},  q = h_{i-1}/h_i  (first step: D_0);
                        NFE = n (+1 to denoise)
"""
from __future__ import annotations

import tensorflow as tf

from shortdiff_tf.sde import SDE

RHO = 7.0
NFE_PER_STEP = {"heun": 2, "dpm2m": 1}               # plus one for the final denoising


def sigma_of(sde: SDE, t):
    """sigma(t) = sqrt(s_t) / m_t = sqrt(rho_t)."""
    return tf.sqrt(sde.noise_ratio(tf.cast(t, tf.float64)))


def sigma_grid(sde: SDE, n, rho: float = RHO):
    """n + 1 noise levels from sigma(T) down to sigma(eps), EDM's rho-spaced grid (float64)."""
    hi = sigma_of(sde, tf.constant(sde.T, tf.float64)) ** (1.0 / rho)
    lo = sigma_of(sde, tf.constant(sde.eps, tf.float64)) ** (1.0 / rho)
    frac = tf.cast(tf.range(n + 1), tf.float64) / tf.cast(n, tf.float64)
    return (hi + frac * (lo - hi)) ** rho


def denoiser(sde: SDE, score_fn):
    """D(x^; sigma) = x^ + sigma^2 m_t s_theta(m_t x^, t(sigma)) for a scalar float64 sigma."""
    def D(x_hat, sigma):
        t = sde.time_at_noise_ratio(tf.square(sigma))
        m = tf.cast(sde.mean_coef(t), x_hat.dtype)
        ones = tf.ones(tf.shape(x_hat)[:1], x_hat.dtype)
        s = score_fn(m * x_hat, tf.cast(t, x_hat.dtype) * ones)
        return x_hat + tf.cast(tf.square(sigma), x_hat.dtype) * m * s
    return D


def _start(sde: SDE, x_T):
    return x_T / tf.cast(sde.mean_coef(tf.constant(sde.T, tf.float64)), x_T.dtype)


def _finish(sde: SDE, D, x_hat, sigma_min, denoise: bool):
    """Denoise (a last Euler step to sigma = 0) or map x^ back to x at eps. -> (x, extra NFE)."""
    if denoise:
        return D(x_hat, sigma_min), 1
    return x_hat * tf.cast(sde.mean_coef(tf.constant(sde.eps, tf.float64)), x_hat.dtype), 0


def heun(sde: SDE, score_fn, x_T, steps, denoise: bool = True):
    """EDM's deterministic Heun sampler from x_T at T. -> (x, NFE int32)."""
    D = denoiser(sde, score_fn)
    sigmas = sigma_grid(sde, steps)
    x = _start(sde, x_T)
    for i in tf.range(steps):
        s0, s1 = sigmas[i], sigmas[i + 1]
        ds = tf.cast(s1 - s0, x.dtype)
        d = (x - D(x, s0)) / tf.cast(s0, x.dtype)
        x_euler = x + ds * d
        d_next = (x_euler - D(x_euler, s1)) / tf.cast(s1, x.dtype)
        x = x + ds * 0.5 * (d + d_next)
    x, extra = _finish(sde, D, x, sigmas[-1], denoise)
    return x, NFE_PER_STEP["heun"] * tf.cast(steps, tf.int32) + extra


def dpm_solver_2m(sde: SDE, score_fn, x_T, steps, denoise: bool = True):
    """DPM-Solver++(2M) (multistep, data prediction) from x_T at T. -> (x, NFE int32)."""
    D = denoiser(sde, score_fn)
    sigmas = sigma_grid(sde, steps)
    x = _start(sde, x_T)
    d_prev, h_prev = tf.zeros_like(x), tf.constant(0.0, tf.float64)
    for i in tf.range(steps):
        s0, s1 = sigmas[i], sigmas[i + 1]
        d = D(x, s0)
        h = tf.math.log(s0 / s1)
        half_inv_q = tf.cast(tf.where(i > 0, h / (2.0 * tf.maximum(h_prev, 1e-300)), 0.0), x.dtype)
        d_mix = (1.0 + half_inv_q) * d - half_inv_q * d_prev
        ratio = tf.cast(s1 / s0, x.dtype)
        x = ratio * x + (1.0 - ratio) * d_mix
        d_prev, h_prev = d, h
    x, extra = _finish(sde, D, x, sigmas[-1], denoise)
    return x, NFE_PER_STEP["dpm2m"] * tf.cast(steps, tf.int32) + extra


SOLVERS = {"heun": heun, "dpm2m": dpm_solver_2m}
DEFAULT_STEPS = {"heun": 18, "dpm2m": 20}           # NFE 37 (EDM's 35 on CIFAR-10) and 21
