"""The optimal diffusion time T* by gradient ascent on the ELBO in T (paper App. H, docs/METHOD.md section 4).

T is a parameter, T = eps + (T_max - eps) sigmoid(u), and u ascends an unbiased estimate of

  L(s, T) = E log p_noise(x_T) - I(s, T) + R(T)

(``elbo.elbo_draws`` with a tensor T), in which t is drawn with log rho_t uniform on
[log rho_eps, log rho_T] and x_T = m_T x0 + sqrt(s_T) e, so every draw is a differentiable
function of T.  Its gradient is the paper's balance
dL/dT = -1/2 g(T)^2 E_{p_T}|s - grad log p_T|^2 - dKL[p(x,T) || p_noise]/dT.

mode "joint": each iteration one score-matching step of s_theta on t ~ U(eps, T) and one
ascent step of T; mode "after": s_theta is a trained model (fixed) and only T moves.
"""
from __future__ import annotations

import math

import keras
import numpy as np
import tensorflow as tf

from shortdiff_tf import elbo as elbo_lib, losses, networks
from shortdiff_tf.sde import SDE
from shortdiff_tf.stats import standard_error
from shortdiff_tf.seeds import split

MODES = ("joint", "after")


def T_of(u, eps: float, T_max: float):
    return eps + (T_max - eps) * tf.sigmoid(u)


def u_of(T: float, eps: float, T_max: float) -> float:
    p = (T - eps) / (T_max - eps)
    return math.log(p / (1.0 - p))


def elbo_in_T(sde: SDE, score, x0, T, seed):
    """Per-example estimate of L(s, T) with p_noise [B], differentiable in the scalar tensor T."""
    draws = elbo_lib.elbo_draws(sde, score, x0, seed, T=T, importance=True)
    return draws.elbo(elbo_lib.noise_prior_term(sde, draws, T))


def optimize_T(sde: SDE, score, variables, data, mode: str = "joint", steps: int = 2000, T_init: float = 0.5,
               batch_size: int = 1024, lr_T: float = 0.02, lr_score: float = 1e-3, seed: int = 0,
               record_every: int = 20) -> dict:
    """Ascend L in T (and, in "joint" mode, fit the score's ``variables`` on [eps, T] as well).

    ``sde`` sets eps and T_max (its T); ``score(x, t)`` is s_theta (any callable: a network's
    ``networks.score_function`` or, in tests, an exact score); ``data`` is a toy mixture.
    In joint mode start high (T_init near T_max): the score is untrained beyond the current T, so
    an ascent started low stays low (measured on gmm1d: from T = 0.5 the path settled at 0.32).
    -> {"path": [[step, T, L], ...], "T_star": mean T over the last quarter of the path, ...}
    """
    if mode not in MODES:
        raise ValueError(f"unknown --optimize-T mode {mode!r}; choose one of {', '.join(MODES)}")
    if not sde.eps < T_init < sde.T:
        raise ValueError(f"the initial T={T_init} must lie in (eps, T_max={sde.T:g})")
    u = tf.Variable(u_of(T_init, sde.eps, sde.T), dtype=tf.float64, name="u")
    opt_T = keras.optimizers.Adam(lr_T)
    opt_T.build([u])
    opt_s = keras.optimizers.Adam(lr_score)
    variables = list(variables) if mode == "joint" else []
    if variables:
        opt_s.build(variables)
    step_fn = _make_step(sde, score, variables, u, opt_T, opt_s)
    path = []
    for i in range(steps):
        x0 = tf.cast(data.sample(batch_size, split(seed, 2 * i)), tf.float32)
        L = step_fn(x0, split(seed, 2 * i + 1))
        if i % record_every == 0 or i == steps - 1:
            path.append([i, float(T_of(u, sde.eps, sde.T)), float(L)])
    tail = [T for _, T, _ in path[len(path) * 3 // 4:]]
    return {"mode": mode, "T_star": float(np.mean(tail)), "T_star_std": float(np.std(tail)), "T_init": T_init,
            "T_max": sde.T, "steps": steps, "batch_size": batch_size, "lr_T": lr_T, "path": path}


def elbo_curve(sde: SDE, score, data, Ts, n: int = 20000, seed: int = 7) -> list:
    """[[T, L, sem]] of the same score model on a grid of T (common random numbers): the
    objective the ascent climbs, to check its T* against a grid of that objective."""
    x0 = tf.cast(data.sample(n, split(seed, 0)), tf.float32)
    rows = []
    for T in Ts:
        L = elbo_in_T(sde, score, x0, tf.constant(T, tf.float64), split(seed, 1)).numpy()
        rows.append([float(T), float(L.mean()), standard_error(L)])
    return rows


def _make_step(sde, score, variables, u, opt_T, opt_s):

    @tf.function
    def step(x0, seed):
        T = T_of(u, sde.eps, sde.T)
        if variables:
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(_dsm_on(sde, score, x0, tf.stop_gradient(T), split(seed, 0)))
            grads = tape.gradient(loss, variables)
            opt_s.apply_gradients(zip(grads, variables))
        with tf.GradientTape() as tape:
            L = tf.reduce_mean(elbo_in_T(sde, score, x0, T_of(u, sde.eps, sde.T), split(seed, 1)))
        opt_T.apply_gradients([(-tape.gradient(L, u), u)])
        return L

    return step


def _dsm_on(sde, score, x0, T, seed):
    """Variance-weighted denoising score matching with t ~ U(eps, T) for a tensor T <= sde.T."""
    u = tf.random.stateless_uniform(tf.shape(x0)[:1], split(seed, 0), dtype=tf.float64)
    e = tf.random.stateless_normal(tf.shape(x0), split(seed, 1), dtype=x0.dtype)
    return losses.dsm_loss_given(sde, score, x0, u, e, "variance", False, T=T)


def fresh_score_net(model_cfg, dim: int, seed: int):
    keras.utils.set_random_seed(seed)
    return networks.build_score_net(model_cfg, (dim,))
