"""One point (T, seed) of the toy study: train s_theta on [eps, T], fit nu_phi at T, measure.

Every term of paper Eq. 8 is reported on the same trained model:

  L(s, T)      = E log p_noise(x_T) - I(s, T) + R(T)                       (Monte Carlo, sem)
  L_phi(s, T)  = E log nu_phi(x_T) - I(s, T) + R(T)                         (same draws)
               = E_{p_eps} log p_eps - G(s, T) - KL[p(x, T) || prior]
  KL[p(x,T) || p_noise], KL[p(x,T) || nu_phi], E log p_eps                  (quadrature)
  G(s, T) against the exact score of the mixture                            (Monte Carlo, sem)

plus the exact log-likelihood E log q(x0) of held-out points by the PF-ODE with the exact
divergence (both priors), the mean true log-density log p_data of SDE samples (paper Fig. 1),
the auxiliary model's effective number of components (Fig. 4), and NFE of both samplers.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from shortdiff_tf import config as config_lib, elbo as elbo_lib, likelihood, samplers, toy
from shortdiff_tf.app import fit_prior, train
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.files import atomic_write_json, read_json
from shortdiff_tf.prior_fit import mixtures, store
from shortdiff_tf.seeds import split
from shortdiff_tf.stats import standard_error
from shortdiff_tf.study import quadrature
from shortdiff_tf.study.config import StudyConfig

POINT_FILE = "study_point.json"


def run_config(cfg: StudyConfig, T: float, seed: int) -> config_lib.RunConfig:
    """The score model of one grid point: the toy preset with the study's small MLP."""
    shape = (toy.get_toy(cfg.dataset).dim,)
    base = config_lib.train_preset(cfg.dataset, shape)
    return config_lib.RunConfig(
        sde=config_lib.SDEConfig(kind=cfg.sde, T=T, eps=cfg.eps),
        data=config_lib.DataConfig(dataset=cfg.dataset, shape=shape),
        model=config_lib.ModelConfig(kind="mlp", width=cfg.width, depth=cfg.depth),
        train=dataclasses.replace(base, steps=cfg.train_steps, batch_size=cfg.batch_size, seed=seed,
                                  sample_grid=0))


def point_dir(study_dir, T: float, seed: int) -> Path:
    return Path(study_dir) / "runs" / f"T{T:g}-seed{seed}"


def run_point(cfg: StudyConfig, study_dir, T: float, seed: int, log=print) -> dict:
    """Train, fit and measure one (T, seed); resumes from what is on disk, and a finished point
    is read back from RUN/study_point.json."""
    run_dir = point_dir(study_dir, T, seed)
    done = run_dir / POINT_FILE
    if done.exists():
        return read_json(done, "delete it and rerun the study to measure that point again")
    start = time.perf_counter()
    train.train(run_config(cfg, T, seed), run_dir, progress=False, log=log)
    train_seconds = time.perf_counter() - start
    fit = _fit_prior(cfg, run_dir, T, seed)
    result = {"T": T, "seed": seed, "train_seconds": train_seconds, **fit,
              **measure(cfg, run_dir, seed)}
    atomic_write_json(done, result)
    return result


def _fit_prior(cfg: StudyConfig, run_dir: Path, T: float, seed: int) -> dict:
    pcfg = config_lib.PriorConfig(kind=cfg.prior, T=T, seed=seed, steps=cfg.prior_steps,
                                  num_fit_samples=cfg.prior_fit_samples)
    start = time.perf_counter()
    fit_prior.fit_prior(run_dir, pcfg, progress=False, log=lambda *a, **k: None)
    return {"prior_kind": cfg.prior, "prior_seconds": time.perf_counter() - start}


def measure(cfg: StudyConfig, run_dir, seed: int) -> dict:
    """Every reported quantity of one trained point (see the module docstring)."""
    run = load_run(run_dir)
    sde = run.sde()
    nu_phi, pcfg = store.load_prior(run_dir, run.shape)
    diffusion = toy.ToyDiffusion(toy.get_toy(cfg.dataset), sde)
    priors = {"noise": sde.prior(run.shape), "aux": nu_phi}
    score = run.score_fn()
    out = {"dim": int(run.shape[0]), "aux_components": mixtures.effective_components(nu_phi.weights, pcfg.weight_threshold),
           "aux_perplexity": weight_perplexity(nu_phi)}
    out.update(decomposition(sde, score, diffusion, priors, cfg.num_eval, seed))
    for name, prior in priors.items():
        out.update(_suffix(exact_log_likelihood(sde, score, prior, diffusion, cfg, seed), name))
        out.update(_suffix(sample_terms(sde, score, prior, diffusion, cfg, seed), name))
    return out


def _suffix(d: dict, name: str) -> dict:
    return {f"{k}_{name}": v for k, v in d.items()}


def weight_perplexity(prior) -> float:
    """exp(entropy of the mixture weights): a threshold-free count of the components in use."""
    w = np.asarray(prior.weights, np.float64)
    w = w[w > 0]
    return float(np.exp(-np.sum(w * np.log(w))))


def decomposition(sde, score, diffusion: toy.ToyDiffusion, priors: dict, n: int, seed: int) -> dict:
    """ELBO terms of each prior on the same (x0, t, e) draws, G against the exact score, and the
    quadrature terms; ``eq8_gap_*`` = L - (E log p_eps - G - KL) is zero up to Monte Carlo error."""
    x0 = tf.cast(diffusion.data.sample(n, split(seed, 100)), tf.float32)
    true_score = lambda x, t: tf.cast(diffusion.score(tf.cast(x, tf.float64), t), x.dtype)
    G = elbo_lib.score_gap(sde, score, true_score, x0, seed=split(seed, 101))
    p_T = diffusion.marginal(sde.T)
    out = {"G": G.mean, "G_sem": G.sem, "neg_entropy_eps": quadrature.neg_entropy(diffusion.marginal(sde.eps))}
    for name, e in elbo_lib.elbos(sde, score, priors, x0, seed=split(seed, 102)).items():
        kl = quadrature.kl(p_T, priors[name].log_prob)
        out.update({f"elbo_{name}": e.elbo.mean, f"elbo_{name}_sem": e.elbo.sem, f"kl_{name}": kl,
                    f"prior_term_{name}": e.prior_term.mean, f"prior_term_{name}_sem": e.prior_term.sem, "I": e.I.mean, "I_sem": e.I.sem, "R": e.R,
                    f"eq8_gap_{name}": e.elbo.mean - (out["neg_entropy_eps"] - G.mean - kl),
                    f"eq8_gap_{name}_sem": math.hypot(e.elbo.sem, G.sem)})
    return out


def exact_log_likelihood(sde, score, prior, diffusion, cfg: StudyConfig, seed: int) -> dict:
    """E log q(x0) by the PF-ODE with the exact divergence on ``num_ll`` fresh data points."""
    x0 = tf.cast(diffusion.data.sample(cfg.num_ll, split(seed, 200)), tf.float32)
    est = likelihood.LikelihoodEstimator(sde, score, prior, cfg.rtol, cfg.atol, "exact")
    ll = est(x0, seed=split(seed, 201))
    lp = ll.log_prob.numpy().astype(np.float64)
    true = diffusion.data.log_prob(tf.cast(x0, tf.float64)).numpy()
    return {"log_lik": float(lp.mean()), "log_lik_sem": standard_error(lp),
            "log_lik_true": float(true.mean()), "likelihood_nfe": int(ll.nfe)}


def sample_terms(sde, score, prior, diffusion, cfg: StudyConfig, seed: int) -> dict:
    """Mean true log-density log p_data of ``num_samples`` Euler-Maruyama samples (paper Fig. 1)
    and the NFE of the SDE (1000 T steps) and the adaptive ODE sampler (``cfg.samplers``)."""
    out = {}
    for name in cfg.samplers:
        res = samplers.Sampler(sde, score, prior, samplers.PRESETS[name])(cfg.num_samples, split(seed, 300))
        logp = diffusion.data.log_prob(tf.cast(res.x, tf.float64)).numpy()
        out.update({f"sample_logp_{name}": float(np.mean(logp)),
                    f"sample_logp_{name}_median": float(np.median(logp)), f"nfe_{name}": res.nfe})
    return out
