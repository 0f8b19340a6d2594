"""Where the ODE samplers (ode, heun, dpm2m) start at one T of a ``choose-T`` search.

The probability-flow ODE maps the PF-ODE image of the data, z = Phi_theta(x_0), back to the data;
p(x, T) only where the score is exact.  So an ODE sampler needs a prior that matches z (the
paper's (S) target), while the SDE samplers, which forgive a small mismatch, need p(x, T).  At
each T the candidates are

  sde    the point's Glow, fitted on x_T (RUN/views/T<T>)
  ode    a Glow fitted on the PF-ODE image of the first ``ode_fit_examples`` training images,
         warm-started from the sde Glow at the same T (RUN/views/T<T>-ode)
  noise  p_noise

Both Glows are calibrated (``calibration.calibrate_on``) on the PF-ODE image of held-out images;
of those that pass, the one with the lower held-out NLL is used, at the sampling temperature that
brings its samples closest to that image (``calibration.temperature``: chosen on one half,
confirmed on a fresh half, else 1).  When neither passes, p_noise, and the reason is kept.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from shortdiff_tf import calibration, checkpoints
from shortdiff_tf.app.fit_prior import fit_prior
from shortdiff_tf.app.runs import load_run
from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write_json
from shortdiff_tf.prior_fit import store
from shortdiff_tf.preemption import never
from shortdiff_tf.study.choose_metrics import ODE_SAMPLERS, PAIRED
from shortdiff_tf.views import make_view

SUFFIX = "-ode"


def applies(cfg) -> bool:
    """A sample metric of an ODE sampler."""
    return cfg.metric not in PAIRED and cfg.sampler in ODE_SAMPLERS


def fit_ode_prior(run_dir, view: Path, pcfg: PriorConfig, examples: int, log=print, progress=False,
                  should_stop=never) -> dict:
    """The ode-target Glow at pcfg.T in RUN/views/T<T>-ode, warm-started from ``view``'s Glow."""
    ode_view = make_view(run_dir, Path(run_dir), pcfg.T, SUFFIX)
    warm = checkpoints.newest_complete(store.prior_dir(view) / "checkpoints")
    start = time.perf_counter()
    fit = fit_prior(ode_view, dataclasses.replace(pcfg, target="ode", num_fit_samples=examples), progress=progress,
                    log=log, should_stop=should_stop, warm_start=warm, calibrate=False)    # choose_start does
    return {"view": str(ode_view), "examples": examples, "prior_nll_per_dim": fit.get("nll_per_dim"),
            "prior_seconds": time.perf_counter() - start}


def choose_start(view: Path, ode_view: Path, T: float, log=print, rtol: float = 1e-5, atol: float = 1e-5) -> dict:
    """The module docstring's choice at T: the view, the prior (aux or noise) and the temperature
    the ODE samplers start from, with every candidate's calibration on held-out PF-ODE images
    (pushed with tolerances ``rtol``, ``atol``)."""
    run = load_run(view)
    sde = run.sde(T)
    x0, what = calibration.held_out_images(run.cfg.data)
    log(f"T={T:g}: the PF-ODE image of held-out images, for the ODE samplers' start")
    points = calibration.reference_points(sde, calibration.held_out_subset(x0), "ode", run.score_fn(T), rtol=rtol,
                                          atol=atol)
    noise = sde.prior(run.shape)
    priors = {name: store.load_prior(v, run.shape)[0] for name, v in (("sde", view), ("ode", ode_view))}
    cal = {name: calibration.calibrate_on(points, p, noise, what, "ode") | {"T": T} for name, p in priors.items()}
    atomic_write_json(store.prior_dir(ode_view) / "calibration.json", cal["ode"])      # as fit-prior would
    for name, c in cal.items():
        log(f"the {name}-target Glow: " + calibration.summary_line(c))
    passing = [name for name in cal if cal[name]["use"] == "aux"]
    if not passing:
        return {"use": "noise", "prior": "noise", "view": str(view), "temperature": 1.0, "calibrations": cal,
                "reason": "neither Glow is better than p_noise on held-out PF-ODE images"}
    use = min(passing, key=lambda name: cal[name]["nll_per_dim"]["aux"])
    tau = calibration.temperature(priors[use], points)
    log(f"the {use}-target Glow starts the ODE samplers at temperature {tau['use']:g} ({tau['reason']})")
    return {"use": use, "prior": "aux", "view": str(view if use == "sde" else ode_view), "temperature": tau["use"],
            "temperature_search": tau, "calibrations": cal,
            "reason": f"the {use}-target Glow has the lower held-out NLL of those better than p_noise"}
