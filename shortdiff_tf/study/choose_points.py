"""The points of a ``choose-T`` search: at each T its view, a Glow warm-started from the nearest
fitted T, the fit's calibration on held-out x_T and the chosen metric, each stored in the view's
``choose_T_point.json`` as soon as it is done (a rerun resumes; another metric reuses the fits);
and the held-out check of a choice on fresh draws and images."""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Dict

import numpy as np

from shortdiff_tf import checkpoints
from shortdiff_tf.app.fit_prior import fit_prior
from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write_json, read_json
from shortdiff_tf.preemption import never
from shortdiff_tf.study import choose_metrics as metrics, choose_ode_start as ode_start
from shortdiff_tf.study.choose_rule import Z_ONE_SIDED_5
from shortdiff_tf.views import locate, make_view

POINT_FILE = "choose_T_point.json"
FIT_SETTINGS = ("seed", "prior_steps", "glow_levels", "glow_steps_per_level", "glow_hidden")


def prior_at(point: dict, cfg) -> str:
    """aux or noise: what the point's calibration chose (samples: what they were drawn from)."""
    if cfg.metric not in metrics.PAIRED:
        return "aux"                                      # value() ignores it for fid and kid
    return point.get("calibration", {}).get("use", "aux")


class Measurer:
    """Measures points of one search: the view's fit (warm-started), its calibration and the
    metric, each stored in the view's point file as soon as it is done."""

    def __init__(self, run_dir, cfg, log=print, progress=False, strategy=None, should_stop=never):
        self.run_dir, self.cfg, self.log, self.progress = Path(run_dir), cfg, log, progress
        self.strategy, self.should_stop = strategy, should_stop
        self.extractor = None
        if cfg.metric not in metrics.PAIRED:
            from shortdiff_tf import extractors
            from shortdiff_tf.study.images import fid_reference
            self.extractor = extractors.load_extractor(cfg.extractor)
            self.reference = functools.cache(lambda: fid_reference(self.run_dir, None, self.extractor, strategy))

    def __call__(self, T: float, done: Dict[float, dict]) -> dict:
        view = make_view(self.run_dir, self.run_dir, T)
        path = view / POINT_FILE
        point = self._stored(path, T) if path.exists() else {"T": T, "view": str(view), "settings": self.cfg.fit_settings()}
        if "prior_seconds" not in point:
            point.update(self._fit(view, T, done))
            atomic_write_json(path, point)
        if "calibration" not in point:                 # a point fitted before calibrations were kept
            point["calibration"] = self._calibrate(view, T)
            atomic_write_json(path, point)
        if ode_start.applies(self.cfg):
            self._ode_start(view, T, point, path)
        k = metrics.key(self.cfg.metric, self.cfg)
        if k not in point.setdefault("metrics", {}):
            point["metrics"][k] = self._metric(view, T, point)
            atomic_write_json(path, point)
        return point

    def _stored(self, path: Path, T: float) -> dict:
        point = read_json(path, f"delete {path} to measure T={T:g} again")
        settings = {k: point.get("settings", {}).get(k) for k in FIT_SETTINGS}
        if settings != self.cfg.fit_settings():
            raise ValueError(f"{path} was fitted with other settings ({settings}); rerun with them "
                             f"or delete {path} to measure T={T:g} again")
        return point

    def _fit(self, view: Path, T: float, done: Dict[float, dict]) -> dict:
        """A Glow at T warm-started from the nearest done T; its calibration on held-out x_T."""
        warm = _warm_start(self.run_dir, done, T)
        start = time.perf_counter()
        fit = fit_prior(view, self._prior_config(T), progress=self.progress, log=self.log, should_stop=self.should_stop,
                        warm_start=warm[1] if warm else None)
        return {"warm_start_from": warm[0] if warm else None, "prior_nll_per_dim": fit.get("nll_per_dim"),
                "prior_seconds": time.perf_counter() - start, "calibration": fit["calibration"]}

    def _ode_start(self, view: Path, T: float, point: dict, path: Path) -> None:
        """The ode-target Glow at T and the ODE samplers' start (``choose_ode_start``), each stored."""
        examples = self.cfg.ode_fit_examples
        if "ode_fit" in point and point["ode_fit"]["examples"] != examples:
            raise ValueError(f"{path}: the ode-target Glow at T={T:g} was fitted on {point['ode_fit']['examples']} "
                             f"examples; rerun with --ode-fit-examples {point['ode_fit']['examples']} or delete "
                             f"{locate(self.run_dir, point['ode_fit']['view'])} and its entries in {path}")
        if "ode_fit" not in point:
            point["ode_fit"] = ode_start.fit_ode_prior(self.run_dir, view, self._prior_config(T), examples, self.log,
                                                       self.progress, self.should_stop)
            atomic_write_json(path, point)
        if "ode_start" not in point:
            ode_view = locate(self.run_dir, point["ode_fit"]["view"])
            point["ode_start"] = ode_start.choose_start(view, ode_view, T, self.log, self.cfg.rtol, self.cfg.atol)
            atomic_write_json(path, point)

    def _prior_config(self, T: float) -> PriorConfig:
        cfg = self.cfg
        return PriorConfig(kind="glow", T=T, steps=cfg.prior_steps, levels=cfg.glow_levels,
                           steps_per_level=cfg.glow_steps_per_level, hidden=cfg.glow_hidden, seed=cfg.seed,
                           checkpoint_every=cfg.checkpoint_every)

    def _calibrate(self, view: Path, T: float) -> dict:
        from shortdiff_tf.app.fit_prior import calibrate_fitted
        from shortdiff_tf.app.runs import load_run
        run = load_run(view)
        return calibrate_fitted(run, run.sde(T), view, self.log)

    def _metric(self, view: Path, T: float, point: dict, cfg=None) -> dict:
        """cfg.metric at T (``cfg``: the search's settings unless given)."""
        cfg = cfg or self.cfg
        if cfg.metric == "bpd":
            return metrics.likelihood(view, T, cfg, self.log, self.progress, self.strategy, self.should_stop)
        if cfg.metric == "elbo":
            return metrics.elbo(view, T, cfg, self.log, self.strategy)
        start = point.get("ode_start") if ode_start.applies(cfg) else None
        start = start or {"view": str(view), "prior": point["calibration"]["use"], "temperature": 1.0}
        return metrics.samples_quality(locate(self.run_dir, start["view"]), T, cfg, start["prior"], self.extractor,
                                       self.reference,
                                       self.log, self.strategy, start["temperature"])

    def held_out(self, T: float, point: dict) -> dict:
        """The metric at T on fresh draws (seed + 1) and, for bpd and elbo, the next
        ``num_examples`` test images; stored in the point beside the searched value."""
        cfg, n = self.cfg, self.cfg.num_examples
        fresh = dataclasses.replace(cfg, seed=cfg.seed + 1, num_examples=2 * n)
        k = metrics.key(cfg.metric, cfg) + ":held-out"
        if k not in point["metrics"]:
            view = locate(self.run_dir, point["view"])
            if cfg.metric in metrics.PAIRED:
                entry = self._metric(view, T, point, fresh)
                entry = {name: entry[name][n:] for name in ("aux", "noise")}           # the images not searched on
                if len(entry["aux"]) < 2:
                    raise ValueError(f"the held-out check needs 2 x --num-examples = {2 * n} test images and more "
                                     f"than {n + 1}; lower --num-examples")
            else:
                entry = self._metric(view, T, point, dataclasses.replace(cfg, seed=cfg.seed + 1))
            point["metrics"][k] = entry
            atomic_write_json(view / POINT_FILE, point)
        return point["metrics"][k]


def held_out_check(measure: Measurer, done: Dict[float, dict], star: float, best: float) -> dict:
    """The rule re-applied to T* against the best T on fresh draws and images (``Measurer.held_out``):
    is T*'s quality still within the tolerance of the best's?"""
    cfg = measure.cfg
    if star == best:
        return {"T_star": star, "T_best": best, "within_tolerance": True, "note": "T* is the best searched T"}
    entries = {T: measure.held_out(T, done[T]) for T in (star, best)}
    if cfg.metric in metrics.PAIRED:
        vals = {T: np.asarray(entries[T][prior_at(done[T], cfg)], np.float64) for T in entries}
        d = vals[star] - vals[best]
        m, sem, allowed = float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)), cfg.tol
    else:
        (a, sa), (b, sb) = (metrics.value(cfg.metric, entries[T], "aux") for T in (star, best))
        m, sem = a - b, math.hypot(sa, sb)
        allowed = cfg.tol * abs(b) if metrics.is_relative(cfg.metric) else cfg.tol
    return {"T_star": star, "T_best": best, "difference": m, "difference_sem": sem, "allowed": allowed,
            "within_tolerance": m - Z_ONE_SIDED_5 * sem <= allowed, "seed": cfg.seed + 1,
            "images": (f"test images {cfg.num_examples + 1}-{2 * cfg.num_examples}" if cfg.metric in metrics.PAIRED
                       else f"{cfg.num_samples} fresh samples")}


def _warm_start(run_dir: Path, done: Dict[float, dict], T: float):
    """(T, newest Glow checkpoint) of the done T nearest to ``T``, or None."""
    for near in sorted(done, key=lambda t: abs(t - T)):
        ckpt = checkpoints.newest_complete(locate(run_dir, done[near]["view"]) / "prior" / "checkpoints")
        if ckpt:
            return near, ckpt
    return None
