"""``fit_prior(run_dir, pcfg)``: fit the auxiliary prior nu_phi of a trained run at T and store it
under RUN/prior (docs/METHOD.md section 4).

phi and theta share no term, so this runs after (or beside) score training, on the same run
directory.  ``T`` may be shorter than the run's T (the paper's "varying T"): sampling and
evaluation then run from that T.  The Glow fit resumes like training; the closed-form fits
(gaussian, gmm, dpgmm) take seconds and are redone.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import tensorflow as tf

from shortdiff_tf import calibration, data as data_lib, distribute
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write_json
from shortdiff_tf.prior_fit import glow, mixtures, store, targets
from shortdiff_tf.prior_fit.settings import check_kind, check_resumable
from shortdiff_tf.preemption import never
from shortdiff_tf.runlock import RunLock


def fit_prior(run_dir, pcfg: PriorConfig, strategy=None, progress: bool = True, log=print,
              stop_after: Optional[int] = None, should_stop=never, warm_start: Optional[str] = None,
              calibrate: bool = True) -> dict:
    """Fit nu_phi at pcfg.T on the run's training data and store it; -> a summary dict.
    The writer holds ``RUN/prior/.lock`` (score training of the same run may go on beside it).
    ``warm_start``: a Glow checkpoint (of the same architecture, fitted at another T) whose flow
    weights a new fit starts from instead of its initialisation (``choose-T``).  ``calibrate``:
    measure the finished fit's calibration (``calibrate_fitted``; off when the caller does it)."""
    strategy = strategy or tf.distribute.get_strategy()
    run = load_run(run_dir, pcfg.precision)
    sde = run.sde(pcfg.T)                                           # T <= the run's T, before writing
    check_kind(pcfg, run.shape)
    if pcfg.target == "ode":                                       # the targets are this checkpoint's flow
        pcfg = dataclasses.replace(pcfg, score_step=run.step)
    check_resumable(run_dir, pcfg)
    if not distribute.is_chief(strategy):
        return _fit(run, sde, pcfg, run_dir, strategy, progress, log, stop_after, should_stop, warm_start)
    with RunLock(store.prior_dir(run_dir) / ".lock", "shortdiff fit-prior"):
        result = _fit(run, sde, pcfg, run_dir, strategy, progress, log, stop_after, should_stop, warm_start)
        if calibrate and (stop_after is None or result.get("step", pcfg.steps) >= pcfg.steps):
            result["calibration"] = calibrate_fitted(run, sde, run_dir, log)
        return result


def calibrate_fitted(run, sde, run_dir, log=print) -> dict:
    """The stored prior's calibration on held-out points of its own target (``calibration``: x_T,
    or for an ode-target prior the PF-ODE image of held-out data), kept in
    RUN/prior/calibration.json and logged in one line."""
    x0, what = calibration.held_out_images(run.cfg.data)
    prior, pcfg = store.load_prior(run_dir, run.shape)
    score_fn = run.score_fn(sde.T) if pcfg.target == "ode" else None
    c = calibration.calibrate(sde, prior, x0, held_out=what, target=pcfg.target, score_fn=score_fn)
    atomic_write_json(store.prior_dir(run_dir) / "calibration.json", c)
    log(calibration.summary_line(c))
    return c


def _fit(run, sde, pcfg: PriorConfig, run_dir, strategy, progress, log, stop_after, should_stop=never,
         warm_start=None) -> dict:
    d = run.cfg.data
    if pcfg.kind == "glow" and pcfg.target == "sde" and data_lib.is_tfds(d.dataset):       # streamed
        return glow.fit_glow(sde, data_lib.tfds_source(d.dataset, "train", d.data_dir), run.shape, pcfg, run_dir,
                             strategy, progress, log, stop_after, should_stop, warm_start=warm_start)
    array = data_lib.load(d.dataset, "train", d.data_dir).array
    if pcfg.target == "ode":                        # the first num_fit_samples examples through the PF-ODE
        array = array[: pcfg.num_fit_samples]
    source = _ode_targets(run, sde, pcfg, array, run_dir, log) if pcfg.target == "ode" else array
    if pcfg.kind == "glow":
        return glow.fit_glow(sde, source, run.shape, pcfg, run_dir, strategy, progress, log, stop_after, should_stop,
                             warm_start=warm_start)
    return _fit_closed_form(sde, source, pcfg, run_dir)


def _ode_targets(run, sde, pcfg: PriorConfig, array, run_dir, log):
    """The PF-ODE image of the training data at T under the run's checkpoint, computed once and
    kept in RUN/prior (a resumed fit reads them instead of solving again)."""
    cached = store.load_targets(run_dir, pcfg.score_step, len(array))
    if cached is not None:
        log(f"read the PF-ODE targets of checkpoint step {pcfg.score_step} from {store.targets_path(run_dir)}")
        return cached
    log(f"pushing {len(array)} training examples through the PF-ODE to T={sde.T:g}")
    points = targets.ode_targets(sde, run.score_fn(pcfg.T), array, pcfg.seed)
    store.save_targets(run_dir, points, pcfg.score_step)
    return points


def _fit_closed_form(sde, source, pcfg: PriorConfig, run_dir) -> dict:
    start = time.perf_counter()
    points = source if pcfg.target == "ode" else targets.diffused_sample(sde, source, pcfg.num_fit_samples, pcfg.seed)
    prior, extra = mixtures.fit_closed_form(pcfg, points)
    store.save_mixture(run_dir, prior)
    store.save_config(run_dir, pcfg)
    ll = float(tf.reduce_mean(prior.log_prob(tf.constant(points[:5000], tf.float64))))
    return {"kind": pcfg.kind, "T": pcfg.T, "target": pcfg.target, "log_prob": ll, **extra,
            "seconds": time.perf_counter() - start, "prior_dir": str(store.prior_dir(run_dir))}
