"""The paper's "varying T" experiment on images: one score model trained at T_run (usually 1) is
reused unchanged on [eps, T] for each T of the grid, and a new Glow prior is fitted at each T.

Per T this reports, with p_noise and with the auxiliary prior: PF-ODE bits/dim (split into the
prior-at-T, ODE and offset terms; one set of ODE solves scored with both priors, so the two are
paired) with its NFE, the ELBO bound, and the FID/KID (on an
injectable extractor, named next to every figure) and NFE of the SDE and ODE samplers.

Each T gets a view of the run, ``STUDY/views/T<T>``: the run's config.json copied and its
checkpoints linked, so the prior of that T lives in ``STUDY/views/T<T>/prior`` and the trained
run itself is never written to.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import numpy as np

from shortdiff_tf import checkpoints, data as data_lib, pixels, extractors, quality
from shortdiff_tf.app import sample
from shortdiff_tf.app.evaluate import evaluate_run
from shortdiff_tf.app.fit_prior import fit_prior
from shortdiff_tf.preemption import never
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.config import PriorConfig, RunConfig
from shortdiff_tf.files import atomic_write_json, read_json
from shortdiff_tf.study.config import StudyConfig
from shortdiff_tf.views import make_view

POINT_FILE = "study_point.json"


def check_reusable(run_dir, T_grid) -> None:
    """From the run's config alone (the network is loaded by each measurement)."""
    cfg = RunConfig.load(run_dir)
    if checkpoints.latest(run_dir) is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint yet; train it first")
    if len(cfg.data.shape) != 3:
        raise ValueError(f"--reuse-score expects an image run; {run_dir} holds {list(cfg.data.shape)} vectors "
                         f"(toy studies train their own models: drop --reuse-score)")
    too_long = [T for T in T_grid if T > cfg.sde.T + 1e-12]
    if too_long:
        raise ValueError(f"--T-grid values {too_long} exceed the T={cfg.sde.T:g} the score model of "
                         f"{run_dir} was trained at; use T <= {cfg.sde.T:g}")


def image_point(cfg: StudyConfig, study_dir, T: float, extractor, reference, log=print,
                progress: bool = False, strategy=None, should_stop=never) -> dict:
    """One T of the image study: each stage is logged as it starts, with a progress line per
    Glow step, likelihood batch and sampler evaluation when ``progress``.  ``reference()``: the FID
    reference (``fid_reference``; called only when ``extractor`` is set).  ``strategy``: the
    likelihood, the samples and the FID features split over its replicas (the Glow fit runs on one
    device)."""
    view = make_view(cfg.reuse_score, study_dir, T)
    done = view / POINT_FILE
    if done.exists():
        return read_json(done, "delete it and rerun the study to measure that point again")
    start = time.perf_counter()
    # fits, resumes an interrupted Glow, or finds it finished
    pcfg = PriorConfig(kind=cfg.prior, T=T, steps=cfg.prior_steps, hidden=cfg.glow_hidden,
                       steps_per_level=cfg.glow_steps_per_level)
    fit_prior(view, pcfg, progress=progress, log=log, should_stop=should_stop)
    result = {"T": T, "seed": 0, "prior_kind": cfg.prior, "prior_seconds": time.perf_counter() - start}
    result.update(_measure(cfg, view, T, extractor, reference, log, progress, strategy, should_stop))
    atomic_write_json(done, result)
    return result


def _measure(cfg: StudyConfig, view: Path, T: float, extractor, reference, log=print, progress=False,
             strategy=None, should_stop=never) -> dict:
    """Bits/dim of both priors from one set of PF-ODE solves, then each prior's samples."""
    log(f"T={T:g}: bits/dim of {cfg.num_examples} test images by the PF-ODE (both priors)")
    ev = evaluate_run(view, num_examples=cfg.num_examples, prior="aux", T=T, rtol=cfg.rtol, atol=cfg.atol,
                      progress=progress, strategy=strategy, should_stop=should_stop)
    out = {"num_examples": ev["num_examples"], "likelihood_nfe": ev["nfe_mean"], "rtol": cfg.rtol, "atol": cfg.atol}
    for prior, lk in (("noise", ev["likelihood_noise"]), ("aux", ev["likelihood"])):
        out.update({f"bpd_{prior}": lk["bpd"], f"bpd_sem_{prior}": lk["bpd_sem"],
                    f"bpd_prior_T_{prior}": lk["bpd_prior_T"], f"bpd_ode_{prior}": lk["bpd_ode"],
                    f"elbo_bpd_bound_{prior}": ev[f"elbo_{prior}"].get("bpd_bound")})
    run = load_run(view)
    for prior in ("noise", "aux"):
        out.update(_samples(cfg, run, T, prior, extractor, reference, log, progress, strategy))
    return out


def _samples(cfg: StudyConfig, run, T: float, prior: str, extractor, reference, log=print, progress=False,
             strategy=None) -> dict:
    """Each sampler's NFE, time and FID/KID; the samples are kept in RUN/samples for a look."""
    out = {}
    for sampler in cfg.samplers:
        log(f"T={T:g}: {cfg.num_samples} samples with {sampler} from the {prior} prior")
        s = sample.draw(run, sampler=sampler, num_samples=cfg.num_samples, seed=1, prior=prior, T=T,
                        progress=progress, strategy=strategy)
        sample.write(run, [(s.x, s.report["nfe"])], run.run_dir / "samples" / f"{sampler}-{prior}", len(s.x))
        out.update({f"nfe_{sampler}_{prior}": s.report["nfe"], f"seconds_{sampler}_{prior}": s.report["seconds"]})
        if extractor is not None:
            imgs = fid_images(cfg, run, sampler, prior, T, pixels.to_uint8(s.x), extractor, log, strategy)
            ref = reference()
            if isinstance(ref, tuple):                                # (mu, sigma): no KID without features
                q = quality.fid_against_stats(imgs, ref, extractor, strategy=strategy)
            else:
                q = quality.sample_quality(imgs, ref, extractor, strategy=strategy)
                out.update({f"kid_{sampler}_{prior}": q["kid"], f"kid_std_{sampler}_{prior}": q["kid_std"]})
            out.update({f"fid_{sampler}_{prior}": q["fid"], "fid_num_samples": q["num_samples"],
                        "fid_extractor": q["extractor"]})
    return out


def fid_samples(cfg: StudyConfig, extractor) -> int:
    """Samples per FID: --fid-samples, else 50,000 with the standard network (as in the
    literature), else --num-samples."""
    if cfg.fid_samples:
        return cfg.fid_samples
    return extractors.STANDARD_FID_SAMPLES if extractors.is_standard(extractor) else cfg.num_samples


def fid_images(cfg: StudyConfig, run, sampler: str, prior: str, T: float, first: np.ndarray, extractor,
               log=print, strategy=None) -> np.ndarray:
    """uint8 samples for the FID: the ``first`` batch (seed 1), then the rest from one sampler in
    batches of --num-samples (seed (1, 1) and its children)."""
    n = fid_samples(cfg, extractor)
    if n <= len(first):
        return first[:n]
    log(f"T={T:g}: drawing {n - len(first)} more samples with {sampler} from the {prior} prior for the FID")
    rest = sample.draw(run, sampler=sampler, num_samples=n - len(first), seed=(1, 1), prior=prior, T=T,
                       chunk=cfg.num_samples, strategy=strategy)
    return np.concatenate([first, pixels.to_uint8(rest.x)])


def reference_images(run_dir) -> np.ndarray:
    """The run's training images (uint8), the FID reference when no statistics file is given."""
    data = RunConfig.load(run_dir).data
    return data_lib.load(data.dataset, "train", data.data_dir).array


def fid_reference(run_dir, stats: Optional[str], extractor, strategy=None):
    """The FID reference of a study, computed once: statistics (mu, sigma) from ``stats``, else the
    features of the run's training images."""
    if stats:
        return quality.load_stats(stats)
    return quality.features(extractor, reference_images(run_dir), strategy=strategy)
