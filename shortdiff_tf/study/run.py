"""``shortdiff study``: the grid over T (and seeds), T* by ascent, figures, and study.json.

  STUDY/study_config.json        the settings (a rerun must ask for the same study)
  STUDY/runs/T<T>-seed<s>/       toy: one trained run per point, with its prior and study_point.json
  STUDY/views/T<T>/              images (--reuse-score): a view of the reused run per T
  STUDY/study.json               every point, the median/95% band over seeds, T* (grid, ascent)
  STUDY/*.png                    figures (Fig. 1, 2, 4 and NFE)

Every finished point is on disk, so an interrupted study resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Optional

from shortdiff_tf import networks, toy
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.files import atomic_write_text, read_json
from shortdiff_tf.preemption import Preempted, never
from shortdiff_tf.runlock import RunLock
from shortdiff_tf.study import images, optimal_T, plots, summary, toy_grid
from shortdiff_tf.study.config import StudyConfig


def run_study(cfg: StudyConfig, study_dir, optimize: Optional[str] = None, optimize_steps: int = 2000,
              log=print, progress: bool = False, strategy=None, should_stop=never) -> dict:
    """Run (or resume) the study; -> the study.json report.  ``progress``: progress lines (stderr)
    within each image point's Glow fit, likelihood batches and sampling.  ``strategy``: images only,
    the likelihood, sampling and FID features of each point split over its replicas.
    ``should_stop()`` (a signal) stops it between points, or within an image point's Glow fit or
    likelihood batches, everything finished kept (``Preempted``)."""
    study_dir = Path(study_dir)
    is_toy = cfg.dataset in toy.TOY.names()
    if not is_toy and cfg.reuse_score is None:
        raise ValueError(f"studies on {cfg.dataset!r} reuse one trained score model: pass --reuse-score RUN "
                         f"(a run trained at T = 1 with `shortdiff train --dataset {cfg.dataset}`)")
    if cfg.reuse_score is not None:
        images.check_reusable(cfg.reuse_score, cfg.T_grid)
    if optimize and not is_toy:
        raise ValueError("--optimize-T needs the toy data's exact draws; run it with --dataset gmm1d or gmm2d")
    with RunLock(study_dir / ".lock", "shortdiff study"):
        return _run(cfg, study_dir, is_toy, optimize, optimize_steps, log, progress, strategy, should_stop)


def _run(cfg: StudyConfig, study_dir: Path, is_toy: bool, optimize, optimize_steps: int, log,
         progress: bool = False, strategy=None, should_stop=never) -> dict:
    cfg.save(study_dir)
    start = time.perf_counter()
    points = (_toy_points(cfg, study_dir, log, should_stop) if is_toy
              else _image_points(cfg, study_dir, log, progress, strategy, should_stop))
    table = summary.by_T(points)
    report = {"config": dataclasses.asdict(cfg), "points": points,
              "summary": {str(T): v for T, v in table.items()},
              "grid_optimum": _grid_optima(table)}
    if optimize:
        _write_json(study_dir / f"optimize_T-{optimize}.json", _optimize(cfg, study_dir, optimize, optimize_steps, log))
    found = {m: read_json(study_dir / f"optimize_T-{m}.json", "delete it and rerun with --optimize-T") for m in optimal_T.MODES
             if (study_dir / f"optimize_T-{m}.json").exists()}
    if found:
        report["optimize_T"] = found
    report["figures"] = _figures(table, study_dir, report)
    report["seconds"] = time.perf_counter() - start
    _write_json(study_dir / "study.json", report)
    return report


TOY_LINE = (("ELBO", "elbo"), ("KL", "kl"), ("G", "G"), ("exact log-lik", "log_lik"),
            ("sample log p", "sample_logp_em"), ("components", "aux_components"))
IMAGE_LINE = (("bits/dim", "bpd"), ("EM FID", "fid_em"), ("ODE FID", "fid_ode"), ("NFE EM", "nfe_em"),
              ("NFE ODE", "nfe_ode"))


def _line(p: dict, fields) -> str:
    """'name a / b' for p_noise / auxiliary prior, for the fields the point has."""
    parts = []
    for label, key in fields:
        pair = [p[f"{key}_{n}"] for n in ("noise", "aux") if f"{key}_{n}" in p]
        values = pair or ([p[key]] if key in p else [])
        if values:
            parts.append(f"{label} " + " / ".join(f"{v:.4g}" for v in values))
    fid = f" ({p['fid_extractor']}, {p['fid_num_samples']} samples)" if "fid_extractor" in p else ""
    return ", ".join(parts) + " (p_noise / aux)" + fid


def _stop_between_points(study_dir: Path, should_stop) -> None:
    signum = should_stop()
    if signum:
        raise Preempted(signum, f"every finished point is in {study_dir}; rerun the same command to resume")


def _toy_points(cfg, study_dir, log, should_stop=never) -> list:
    points = []
    for T in cfg.T_grid:
        for seed in range(cfg.seeds):
            _stop_between_points(study_dir, should_stop)
            p = toy_grid.run_point(cfg, study_dir, T, seed, log=lambda *a, **k: None)
            log(f"T={T:<4g} seed {seed}: " + _line(p, TOY_LINE))
            points.append(p)
    return points


def _image_points(cfg, study_dir, log, progress=False, strategy=None, should_stop=never) -> list:
    from shortdiff_tf import extractors
    extractor = extractors.load_extractor(cfg.extractor) if cfg.extractor else None
    # the reference's features are computed at their first use, once (a finished study needs none)
    reference = functools.cache(lambda: images.fid_reference(cfg.reuse_score, cfg.fid_stats, extractor, strategy))
    points = []
    for T in cfg.T_grid:
        _stop_between_points(study_dir, should_stop)
        p = images.image_point(cfg, study_dir, T, extractor, reference, log=log, progress=progress,
                               strategy=strategy, should_stop=should_stop)
        log(f"T={T:<4g}: " + _line(p, IMAGE_LINE))
        points.append(p)
    return points


OPTIMA = (("elbo_noise", "max"), ("elbo_aux", "max"), ("log_lik_noise", "max"), ("log_lik_aux", "max"),
          ("bpd_noise", "min"), ("bpd_aux", "min"))


def _grid_optima(table: dict) -> dict:
    first = next(iter(table.values()))
    return {k: summary.grid_optimum(table, k, best) for k, best in OPTIMA if k in first}


def _optimize(cfg: StudyConfig, study_dir: Path, mode: str, steps: int, log) -> dict:
    """T* by ascent: 'joint' trains a fresh model of the study's size while T moves; 'after' moves
    T on the seed-0 model trained at the largest grid T."""
    data = toy.get_toy(cfg.dataset)
    T_max = max(cfg.T_grid)
    if mode == "after":
        run = load_run(toy_grid.point_dir(study_dir, T_max, 0))
        net, sde, T_init = run.net, run.sde(), 0.5 * T_max
    else:
        rc = toy_grid.run_config(cfg, T_max, 0)
        net = optimal_T.fresh_score_net(rc.model, data.dim, seed=0)
        sde, T_init = rc.sde.build(), 0.9 * T_max
    score = networks.score_function(net, sde, training=mode == "joint")
    result = optimal_T.optimize_T(sde, score, net.trainable_variables, data, mode, steps=steps, T_init=T_init, seed=0)
    curve = optimal_T.elbo_curve(sde, score, data, sorted(cfg.T_grid), n=cfg.num_eval)
    best = max(curve, key=lambda row: row[1])
    result.update({"curve_of_final_model": curve, "curve_argmax": best[0]})
    log(f"T* by ascent ({mode}): {result['T_star']:.3f} ± {result['T_star_std']:.3f} (from T={T_init:g}); "
        f"the same model's ELBO on the grid peaks at T={best[0]:g}")
    return result


def _figures(table: dict, study_dir: Path, report: dict) -> dict:
    markers = []
    if "elbo_noise" in report["grid_optimum"]:
        markers.append(("grid T* (p_noise)", report["grid_optimum"]["elbo_noise"]["T"], "--"))
    for mode, res in report.get("optimize_T", {}).items():
        markers.append((f"ascent T* ({mode})", res["T_star"], ":" if mode == "joint" else "-."))
    first = next(iter(table.values()))
    figs = {"nfe": plots.nfe(table, study_dir / "nfe.png")}
    if "kl_noise" in first:
        figs["fig1_sample_logp"] = plots.sample_quality(table, study_dir / "fig1_sample_logp.png")
        figs["fig2_elbo_terms"] = plots.elbo_terms(table, study_dir / "fig2_elbo_terms.png", markers)
        figs["fig4_complexity"] = plots.complexity(table, study_dir / "fig4_complexity.png")
    else:
        figs["bpd"] = plots.sample_quality(table, study_dir / "bpd.png", key="bpd", ylabel="bits/dim (PF-ODE)")
        if "fid_em_noise" in first:
            figs["fid"] = plots.sample_quality(table, study_dir / "fid.png", key="fid_em", ylabel="FID (EM samples)")
    return figs


def _write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))
