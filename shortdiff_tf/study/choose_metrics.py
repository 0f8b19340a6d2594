"""The quality metrics that ``choose-T`` can choose T on, measured at one T of a view.

  bpd    exact bits/dim by the PF-ODE of the same test images at every T (one dequantisation and
         Hutchinson probe per image, seeds independent of T): per image, under nu_phi and under
         p_noise from the same solves -- paired across T
  elbo   the ELBO's bits/dim bound -L_phi / (D ln 2) + offset per image (and -L under p_noise),
         ``draws`` (t, e, x_T) per image, seeds independent of T -- paired across T by image
  fid    FID of ``num_samples`` samples of ``sampler`` at ``nfe`` network evaluations (or the
         sampler's default budget) against the run's training images, in the features of
         ``extractor``; its standard error by a bootstrap over the samples (the reference fixed)
  kid    KID of the same samples, its standard error by the same bootstrap

FID and KID are not paired across T (each T draws its own x_T), so the rule judges them on both
errors.  Samples come from the prior the point's calibration chose (``calibration``).
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Optional

import numpy as np

from shortdiff_tf import bits, pixels, quality, samplers
from shortdiff_tf.app import sample
from shortdiff_tf.app.evaluate import evaluate_run
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.preemption import never

METRICS = ("bpd", "elbo", "fid", "kid")
PAIRED = ("bpd", "elbo")
ODE_SAMPLERS = ("ode", "heun", "dpm2m")          # the PF-ODE's solvers: they start where choose_ode_start says
BOOTSTRAP = 100                       # resamples for the FID/KID standard error


def bits_per_dim(log_prob, dim: int) -> list:
    """Per-image bits/dim of log-likelihoods or ELBOs (nats) of dequantised images (``bits``)."""
    return np.asarray(bits.bits_per_dim(np.asarray(log_prob, np.float64), dim, pixels.RANGE), np.float64).tolist()


def key(metric: str, cfg) -> str:
    """The stored entry of a metric: every setting that changes its value."""
    if metric == "bpd":
        return f"bpd:n={cfg.num_examples}:rtol={cfg.rtol:g}:atol={cfg.atol:g}"
    if metric == "elbo":
        return f"elbo:n={cfg.num_examples}:draws={cfg.elbo_draws}"
    start = ":start=ode" if cfg.sampler in ODE_SAMPLERS else ""          # choose_ode_start's start
    return f"samples:{cfg.sampler}:nfe={cfg.nfe or 'default'}:n={cfg.num_samples}:{cfg.extractor_name}{start}"


def likelihood(view, T: float, cfg, log=print, progress=False, strategy=None, should_stop=never) -> dict:
    """bpd: per-image bits/dim under nu_phi ("aux") and p_noise ("noise") from one set of solves."""
    ev = evaluate_run(view, dataset=test_data(view), num_examples=cfg.num_examples, batch_size=cfg.batch_size, rtol=cfg.rtol, atol=cfg.atol,
                      seed=cfg.seed, T=T, prior="aux", progress=progress, strategy=strategy, should_stop=should_stop,
                      per_example=True, with_elbo=False, log=log)
    return {"aux": bits_per_dim(ev["likelihood"]["log_prob_per_example"], ev["dim"]),
            "noise": bits_per_dim(ev["likelihood_noise"]["log_prob_per_example"], ev["dim"]),
            "nfe": ev["nfe_mean"], "seconds_per_example": ev["seconds"] / ev["num_examples"]}


def test_data(view) -> str:
    """The run's held-out data (``data.held_out``), else its own data set."""
    from shortdiff_tf import data as data_lib
    from shortdiff_tf.config import RunConfig
    dataset = RunConfig.load(view).data.dataset
    return data_lib.held_out(dataset) or dataset


def elbo(view, T: float, cfg, log=print, strategy=None) -> dict:
    """elbo: per-image bits/dim bounds under nu_phi (L_phi) and p_noise (L) from the same draws."""
    from shortdiff_tf import data as data_lib, elbo as elbo_lib
    from shortdiff_tf.app.runs import resolve_prior
    from shortdiff_tf.seeds import split
    run = load_run(view)
    x = data_lib.load(test_data(view), "test", run.cfg.data.data_dir).array[: cfg.num_examples]
    prior, T, _ = resolve_prior(run, "aux", T)
    sde = run.sde(T)
    log(f"T={T:g}: the ELBO of {len(x)} test images ({cfg.elbo_draws} draws each) under both priors")
    start = time.perf_counter()
    xs = pixels.to_model_space(x, split(cfg.seed, 0))
    e = elbo_lib.elbos(sde, run.score_fn(T), {"noise": sde.prior(run.shape), "aux": prior}, xs,
                       split(cfg.seed, 10**6), batch_size=cfg.batch_size, draws=cfg.elbo_draws, strategy=strategy)
    dim = math.prod(run.shape)
    return {name: bits_per_dim(e[name].values.numpy(), dim) for name in ("aux", "noise")} | {
        "seconds_per_example": (time.perf_counter() - start) / len(x)}


def samples_quality(view, T: float, cfg, prior: str, extractor, reference, log=print, strategy=None,
                    temperature: float = 1.0) -> dict:
    """fid and kid: ``cfg.num_samples`` samples of ``cfg.sampler`` (``cfg.nfe`` evaluations, or its
    default budget) from ``view``'s ``prior`` at ``temperature``, scored against ``reference()`` features."""
    run = load_run(view)
    steps = samplers.steps_for_nfe(cfg.sampler, cfg.nfe) if cfg.nfe else None
    log(f"T={T:g}: {cfg.num_samples} samples with {cfg.sampler}{f' at {cfg.nfe} NFE' if cfg.nfe else ''} "
        f"from the {prior} prior of {Path(view).name}{f' at temperature {temperature:g}' if temperature != 1 else ''} "
        f"for FID/KID")
    s = sample.draw(run, sampler=cfg.sampler, steps=steps, num_samples=cfg.num_samples, seed=(cfg.seed, 1),
                    prior=prior, T=T, temperature=temperature, strategy=strategy)
    feats = quality.features(extractor, pixels.to_uint8(s.x), strategy=strategy)
    ref = reference()
    fid, kid = bootstrap(feats, ref, cfg.seed)
    return {"prior": prior, "view": str(view), "temperature": temperature,
            "fid": quality.fid_from_features(feats, ref), "fid_sem": fid,
            "kid": quality.kernel_distance(feats, ref)[0], "kid_sem": kid, "nfe": s.report["nfe"],
            "seconds_per_sample": s.report["seconds"] / cfg.num_samples, "num_samples": cfg.num_samples,
            "extractor": cfg.extractor_name}


def bootstrap(feats: np.ndarray, ref: np.ndarray, seed: int = 0, resamples: int = BOOTSTRAP):
    """Standard errors of FID and KID: the spread over resamples (with replacement) of the
    samples' features, the reference fixed."""
    rng = np.random.RandomState(seed)
    fids, kids = [], []
    for _ in range(resamples):
        f = feats[rng.randint(0, len(feats), len(feats))]
        fids.append(quality.fid_from_features(f, ref))
        kids.append(quality.kernel_distance(f, ref, subsets=2, seed=int(rng.randint(2**31)))[0])
    return float(np.std(fids, ddof=1)), float(np.std(kids, ddof=1))


def value(metric: str, entry: dict, prior: str):
    """The metric's per-image values (paired metrics) or (value, standard error)."""
    if metric in PAIRED:
        return np.asarray(entry[prior], np.float64)
    return entry[metric], entry[f"{metric}_sem"]


def default_tolerance(metric: str) -> float:
    """0.01 bits/dim for bpd and elbo; 2% of the best for fid and kid."""
    return 0.01 if metric in PAIRED else 0.02


def is_relative(metric: str) -> bool:
    return metric not in PAIRED


def unit(metric: str) -> str:
    return "bits/dim" if metric in PAIRED else metric.upper()


def no_extractor(metric: str, dataset: str) -> Optional[str]:
    """The one-line error of a sample metric without an extractor."""
    return (f"--metric {metric} needs --extractor (a classifier from `shortdiff train-classifier --dataset "
            f"{dataset}`, or fid-inception:PATH)")
