"""How much is enough: the shortest diffusion time T whose quality is statistically
indistinguishable from the best searched T, for a stated metric (``choose_metrics``: exact
bits/dim, the ELBO's bound L_phi, FID or KID of a sampler at a budget), for a run trained at T_max
(an imported pretrained run too).  The score model is reused on [eps, T] for every T (the paper's
"varying T"); only a Glow nu_phi is fitted at each T, and its calibration on held-out x_T
(``calibration``) decides whether T is scored with nu_phi or with p_noise.  For the ODE samplers
an ode-target Glow is fitted too, and the start is chosen on the PF-ODE image of held-out images
(``choose_ode_start``).

Rule.  For bits/dim and the ELBO every T is scored on the same test images with seeds that do not
depend on T, so per-image values are paired across T.  With b_T(i) the value of image i at T and
T_best the T of the lowest mean, the paired difference d_T(i) = b_T(i) - b_best(i) has mean m_T
and standard error s_T.  FID and KID are not paired (each T draws its own samples): m_T is the
difference of the two values and s_T = sqrt(se_T^2 + se_best^2) from their bootstrap errors.  Then

    T passes  <=>  m_T - z s_T <= tolerance        (z = 1.645)

that is, a one-sided 5% test cannot reject "T is within ``tolerance`` of the best" (bits/dim for
bpd and elbo; a fraction of the best value for fid and kid).  T* is the smallest passing T.
Quality need not be monotone in T, so every searched T gets a verdict and T* is read off all of them.

Search.  A coarse grid of T, then bisection between the smallest passing T and the largest
failing T below it (``refine`` times).  Each new T's Glow is warm-started from the flow fitted at
the nearest T already done (its optimiser starts afresh).  Each T lives in RUN/views/T<T>/ (the
run's config, a link to its checkpoints, its own prior/): ready for ``sample``, ``evaluate`` and
``export``; RUN's own checkpoints are never written.  Every finished fit and every measured metric
is stored in its view (``choose_T_point.json``), so a rerun resumes, and a rerun with another
metric reuses the fits.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from shortdiff_tf.config import RunConfig
from shortdiff_tf.files import atomic_write_json
from shortdiff_tf.preemption import never
from shortdiff_tf.study import choose_metrics as metrics
from shortdiff_tf.study.choose_points import FIT_SETTINGS, Measurer, held_out_check, prior_at
from shortdiff_tf.study.choose_rule import Z_ONE_SIDED_5, chosen, next_T, verdicts, verdicts_unpaired
from shortdiff_tf.views import locate


@dataclasses.dataclass(frozen=True)
class ChooseTConfig:
    T_grid: Tuple[float, ...] = ()          # () -> T_max x (0.2, 0.4, 0.6, 0.8, 1)
    metric: str = "bpd"                     # choose_metrics.METRICS
    tolerance: Optional[float] = None       # None -> 0.01 bits/dim (bpd, elbo), 2% of the best (fid, kid)
    refine: int = 2                         # bisection steps after the grid
    num_examples: int = 64                  # test images (bpd, elbo)
    batch_size: int = 32
    rtol: float = 1e-5
    atol: float = 1e-5
    elbo_draws: int = 16
    sampler: str = "em"                     # fid, kid
    nfe: Optional[int] = None               # None: the sampler's default budget at each T
    num_samples: int = 256
    extractor: Optional[str] = None         # fid, kid: extractors.load_extractor's spec
    seed: int = 0
    prior_steps: int = 2000
    glow_levels: int = 0
    glow_steps_per_level: int = 4
    glow_hidden: int = 64
    checkpoint_every: int = 100             # Glow steps between checkpoints (does not change the fit)
    ode_fit_examples: int = 4096            # ODE samplers: training images the ode-target Glow is fitted on

    def __post_init__(self):
        if self.metric not in metrics.METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; choose one of {', '.join(metrics.METRICS)}")
        if self.metric not in metrics.PAIRED and not self.extractor:
            raise ValueError(metrics.no_extractor(self.metric, "<dataset>"))

    def grid(self, T_max: float) -> Tuple[float, ...]:
        return tuple(sorted(self.T_grid or (round(T_max * f, 6) for f in (0.2, 0.4, 0.6, 0.8, 1.0))))

    @property
    def tol(self) -> float:
        return metrics.default_tolerance(self.metric) if self.tolerance is None else self.tolerance

    @property
    def extractor_name(self) -> str:
        return Path(self.extractor.split(":", 1)[-1]).name if self.extractor else ""

    def fit_settings(self) -> dict:
        """The settings a stored fit was made with (a rerun must match them)."""
        return {k: getattr(self, k) for k in FIT_SETTINGS}


def rule(cfg: ChooseTConfig, done: Dict[float, dict]) -> Tuple[float, dict]:
    """The rule for cfg.metric on the stored points, each under the prior its calibration chose."""
    k = metrics.key(cfg.metric, cfg)
    vals = {T: metrics.value(cfg.metric, p["metrics"][k], prior_at(p, cfg)) for T, p in done.items()}
    if cfg.metric in metrics.PAIRED:
        return verdicts(vals, cfg.tol)
    return verdicts_unpaired(vals, cfg.tol, metrics.is_relative(cfg.metric))


def choose_T(run_dir, cfg: ChooseTConfig = ChooseTConfig(), log=print, progress: bool = False, strategy=None,
             should_stop=never, check: bool = False) -> dict:
    """Search T (grid, then bisection), apply the rule, write RUN/choose_T.json and its figure;
    ``check``: re-apply the rule to T* and the best T on fresh draws (``held_out_check``)."""
    run_dir = Path(run_dir)
    T_max = RunConfig.load(run_dir).sde.T
    measure = Measurer(run_dir, cfg, log, progress, strategy, should_stop)
    done: Dict[float, dict] = {}
    for T in cfg.grid(T_max):
        done[T] = measure(T, done)
    for _ in range(cfg.refine):
        T = next_T(rule(cfg, done)[1])
        if T is None or T in done:
            break
        log(f"refining between the grid's points: T={T:g}")
        done[T] = measure(T, done)
    checked = None
    if check:
        best, verdict = rule(cfg, done)
        log(f"held-out check: T*={chosen(verdict):g} against the best T={best:g} on fresh draws")
        checked = held_out_check(measure, done, chosen(verdict), best)
    return _report(run_dir, cfg, done, T_max, checked)


def _point_row(run_dir: Path, cfg: ChooseTConfig, p: dict, v: dict) -> dict:
    """One T of the report: the verdict, the value under the prior used (and p_noise's for the
    paired metrics), the calibration's choice and its reason, the costs; its view under ``run_dir``."""
    entry, prior = p["metrics"][metrics.key(cfg.metric, cfg)], prior_at(p, cfg)
    c = p["calibration"]
    row = {**{k: p.get(k) for k in ("T", "warm_start_from", "prior_nll_per_dim", "prior_seconds")}, **v,
           "prior": entry.get("prior", prior), "calibration": {k: c[k] for k in ("use", "reason", "nll_gain_per_dim",
                                                                                "nll_gain_sem", "sliced_w2")},
           "em_nfe": int(round(1000 * p["T"])), "view": str(locate(run_dir, entry.get("view", p["view"]))),
           "temperature": entry.get("temperature", 1.0)}
    if "ode_start" in p and "view" in entry:                  # an ODE sampler's start (choose_ode_start)
        o = p["ode_start"]
        row["ode_start"] = {"use": o["use"], "reason": o["reason"], "temperature": o["temperature"],
                            **{f"{k}_glow": {"use": c["use"], "nll_gain_per_dim": c["nll_gain_per_dim"],
                                             "nll_gain_sem": c["nll_gain_sem"], "sliced_w2": c["sliced_w2"]}
                               for k, c in o["calibrations"].items()}}
    if cfg.metric in metrics.PAIRED:
        noise = np.asarray(entry["noise"], np.float64)
        mine = np.asarray(entry[prior], np.float64)
        row.update(value_sem=float(mine.std(ddof=1) / math.sqrt(len(mine))), value_noise=float(noise.mean()),
                   value_noise_sem=float(noise.std(ddof=1) / math.sqrt(len(noise))),
                   value_aux=float(np.mean(entry["aux"])))
        row.update({cfg.metric: row["value"], f"{cfg.metric}_noise": row["value_noise"]})
    else:
        row.update(fid=entry["fid"], kid=entry["kid"], seconds_per_sample=entry["seconds_per_sample"])
    row.update({k: entry[k] for k in ("nfe", "seconds_per_example") if k in entry})
    return row


def _saving(cfg: ChooseTConfig, at: Dict[float, dict], star: float, T_max: float) -> dict:
    """What T* saves against T_max: the SDE sampler's 1000 T steps; with a sample metric, the
    chosen sampler's NFE and seconds per sample at both (when T_max was searched)."""
    top = at.get(T_max)
    s = {"em_nfe_at_T_star": at[star]["em_nfe"], "em_nfe_at_T_max": int(round(1000 * T_max)),
         "value_at_T_star": at[star]["value"], "value_at_T_max": top["value"] if top else None}
    if cfg.metric in metrics.PAIRED:
        s.update(likelihood_nfe_at_T_star=at[star].get("nfe") if cfg.metric == "bpd" else None,
                 likelihood_nfe_at_T_max=top.get("nfe") if top and cfg.metric == "bpd" else None)
    else:
        s.update(sampler=cfg.sampler, nfe_at_T_star=at[star]["nfe"], nfe_at_T_max=top["nfe"] if top else None,
                 seconds_per_sample_at_T_star=at[star]["seconds_per_sample"],
                 seconds_per_sample_at_T_max=top["seconds_per_sample"] if top else None)
    return s


def _report(run_dir: Path, cfg: ChooseTConfig, done: Dict[float, dict], T_max: float, checked=None) -> dict:
    best, verdict = rule(cfg, done)
    star = chosen(verdict)
    points = [_point_row(run_dir, cfg, done[T], verdict[T]) for T in sorted(done)]
    at = {p["T"]: p for p in points}
    unit = metrics.unit(cfg.metric)
    tol = f"{cfg.tol:g} x the best {unit}" if metrics.is_relative(cfg.metric) else f"{cfg.tol:g} {unit}"
    pairing = ("paired over the same images and probes" if cfg.metric in metrics.PAIRED
               else "SE = sqrt(se_T^2 + se_best^2), bootstrap errors")
    report = {"run": str(run_dir), "T_max": T_max, "T_star": star, "T_best": best, "metric": cfg.metric,
              "tolerance": cfg.tol, "tolerance_relative": metrics.is_relative(cfg.metric),
              **({"tolerance_bpd": cfg.tol} if cfg.metric in metrics.PAIRED else {}),
              "sampler": cfg.sampler if cfg.metric not in metrics.PAIRED else None, "nfe": cfg.nfe,
              "rule": f"T passes when mean(m_T - m_best) - {Z_ONE_SIDED_5} SE <= {tol} ({pairing}); "
                      f"T* = the smallest passing T",
              "view": at[star]["view"], "prior": at[star]["prior"], "temperature": at[star]["temperature"],
              "points": points,
              "num_examples": cfg.num_examples, "saving": _saving(cfg, at, star, T_max),
              **({"held_out_check": checked} if checked else {})}
    report["figure"] = figure(report, run_dir / "choose_T.png")
    atomic_write_json(run_dir / "choose_T.json", report)
    report["summary"] = str(run_dir / "choose_T.json")
    return report


def figure(report: dict, path: Path) -> str:
    """The metric with standard errors against T (and p_noise's for the paired metrics), T* marked;
    the SDE sampler's NFE (1000 T), or the chosen sampler's, on the right axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts, metric = report["points"], report["metric"]
    Ts = [p["T"] for p in pts]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.errorbar(Ts, [p["value"] for p in pts], [p["value_sem"] for p in pts], marker="o", ms=4, capsize=2,
                color="tab:blue", label="the prior used at T (calibration)")
    if "value_noise" in pts[0]:
        ax.errorbar(Ts, [p["value_noise"] for p in pts], [p["value_noise_sem"] for p in pts], marker="s", ms=3,
                    capsize=2, color="tab:red", label="p_noise, same draws")
    ax.axvline(report["T_star"], color="k", ls="--", lw=1, label=f"T* = {report['T_star']:g}")
    ax.set(xlabel="diffusion time T", ylabel={"bpd": "bits/dim", "elbo": "ELBO bound, bits/dim"}.get(metric, metric.upper()))
    ax.legend(fontsize=7)
    right = ax.twinx()
    sampled = "nfe" in pts[0] and report["sampler"]
    right.plot(Ts, [p["nfe"] if sampled else p["em_nfe"] for p in pts], color="0.6", lw=1)
    right.set_ylabel(f"{report['sampler']} NFE" if sampled else "SDE sampler NFE (1000 T)", color="0.4")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
