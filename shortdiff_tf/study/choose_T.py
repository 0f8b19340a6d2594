"""How much is enough: the shortest diffusion time T whose exact bits/dim under the auxiliary
prior is statistically indistinguishable from the best searched T, for a run trained at T_max
(an imported pretrained run too).  The score model is reused on [eps, T] for every T (the
paper's "varying T"); only a Glow nu_phi is fitted at each T.

Rule.  Every T is scored on the same test images with the same dequantisation and Hutchinson
probe per image (``evaluate``'s seeds do not depend on T), so per-image bits/dim are paired
across T.  With b_T(i) the bits/dim of image i under nu_phi at T and T_best the T of the lowest
mean, the paired difference d_T(i) = b_T(i) - b_best(i) has mean m_T and standard error s_T, and

    T passes  <=>  m_T - z s_T <= tolerance        (z = 1.645)

that is, a one-sided 5% test cannot reject "T is within ``tolerance`` bits/dim of the best".
T* is the smallest passing T.  Quality need not be monotone in T, so every searched T gets a
verdict and T* is read off all of them.

Search.  A coarse grid of T, then bisection between the smallest passing T and the largest
failing T below it (``refine`` times).  Each new T's Glow is warm-started from the flow fitted at
the nearest T already done (its optimiser starts afresh).  Each T lives in RUN/views/T<T>/ (the
run's config, a link to its checkpoints, its own prior/): ready for ``sample``, ``evaluate`` and
``export``; RUN's own checkpoints are never written.  Every finished point is stored in its view,
so a rerun resumes.
"""
from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path
from typing import Dict, Optional, Tuple

import numpy as np

from shortdiff_tf import checkpoints
from shortdiff_tf.app.evaluate import evaluate_run
from shortdiff_tf.app.fit_prior import fit_prior
from shortdiff_tf.config import PriorConfig, RunConfig
from shortdiff_tf.files import atomic_write_json, read_json
from shortdiff_tf.preemption import never
from shortdiff_tf.study.images import make_view

Z_ONE_SIDED_5 = 1.645
POINT_FILE = "choose_T_point.json"


@dataclasses.dataclass(frozen=True)
class ChooseTConfig:
    T_grid: Tuple[float, ...] = ()          # () -> T_max x (0.2, 0.4, 0.6, 0.8, 1)
    tolerance: float = 0.01                 # bits/dim
    refine: int = 2                         # bisection steps after the grid
    num_examples: int = 64
    batch_size: int = 32
    rtol: float = 1e-5
    atol: float = 1e-5
    seed: int = 0
    prior_steps: int = 2000
    glow_levels: int = 0
    glow_steps_per_level: int = 4
    glow_hidden: int = 64

    def grid(self, T_max: float) -> Tuple[float, ...]:
        return tuple(sorted(self.T_grid or (round(T_max * f, 6) for f in (0.2, 0.4, 0.6, 0.8, 1.0))))

    def point_settings(self) -> dict:
        """The settings a stored point was measured with (a rerun must match them)."""
        return {k: getattr(self, k) for k in ("num_examples", "batch_size", "rtol", "atol", "seed", "prior_steps",
                                              "glow_levels", "glow_steps_per_level", "glow_hidden")}


def bits_per_dim(log_prob, dim: int, offset: float) -> np.ndarray:
    """Per-image bits/dim from PF-ODE log-likelihoods (nats): -log p / (D ln 2) + offset."""
    return -np.asarray(log_prob, np.float64) / (dim * math.log(2.0)) + offset


def verdicts(bpd: Dict[float, np.ndarray], tolerance: float, z: float = Z_ONE_SIDED_5) -> Tuple[float, dict]:
    """The rule (module docstring) at every T: -> (T_best, {T: mean, difference, its standard
    error and whether T passes}); ``bpd`` maps T to per-image bits/dim of the same images."""
    means = {T: float(np.mean(b)) for T, b in bpd.items()}
    best = min(means, key=means.get)
    out = {}
    for T, b in bpd.items():
        d = np.asarray(b, np.float64) - np.asarray(bpd[best], np.float64)
        sem = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
        m = float(d.mean())
        out[T] = {"bpd": means[T], "difference": m, "difference_sem": sem, "passes": m - z * sem <= tolerance}
    return best, out


def chosen(verdict: dict) -> float:
    """T*: the smallest passing T."""
    return min(T for T, v in verdict.items() if v["passes"])


def next_T(verdict: dict) -> Optional[float]:
    """The bisection point between T* and the largest failing T below it, or None."""
    star = chosen(verdict)
    below = [T for T, v in verdict.items() if not v["passes"] and T < star]
    return round((max(below) + star) / 2, 6) if below else None


def measure(run_dir, T: float, cfg: ChooseTConfig, done: Dict[float, dict], log=print, progress=False,
            strategy=None, should_stop=never) -> dict:
    """One T: its view, a Glow at T (warm-started from the nearest done T), the exact likelihood
    of the test images under nu_phi and p_noise from one set of ODE solves; stored in the view."""
    view = make_view(run_dir, run_dir, T)
    path = view / POINT_FILE
    if path.exists():
        point = read_json(path, f"delete {path} to measure T={T:g} again")
        if point.get("settings") != cfg.point_settings():
            raise ValueError(f"{path} was measured with other settings ({point.get('settings')}); rerun with them "
                             f"or delete {view / POINT_FILE} to measure T={T:g} again")
        return point
    warm = _warm_start(done, T)
    pcfg = PriorConfig(kind="glow", T=T, steps=cfg.prior_steps, levels=cfg.glow_levels,
                       steps_per_level=cfg.glow_steps_per_level, hidden=cfg.glow_hidden, seed=cfg.seed)
    start = time.perf_counter()
    fit = fit_prior(view, pcfg, progress=progress, log=log, should_stop=should_stop,
                    warm_start=warm[1] if warm else None)
    fit_seconds = time.perf_counter() - start
    ev = evaluate_run(view, num_examples=cfg.num_examples, batch_size=cfg.batch_size, rtol=cfg.rtol, atol=cfg.atol,
                      seed=cfg.seed, T=T, prior="aux", progress=progress, strategy=strategy, should_stop=should_stop,
                      per_example=True, with_elbo=False, log=log)
    offset = ev["likelihood"]["bpd_offset"]
    point = {"T": T, "view": str(view), "settings": cfg.point_settings(), "warm_start_from": warm[0] if warm else None,
             "prior_nll_per_dim": fit.get("nll_per_dim"), "prior_seconds": fit_seconds,
             "likelihood_nfe": ev["nfe_mean"], "likelihood_seconds_per_example": ev["seconds"] / ev["num_examples"],
             "bpd_aux": bits_per_dim(ev["likelihood"]["log_prob_per_example"], ev["dim"], offset).tolist(),
             "bpd_noise": bits_per_dim(ev["likelihood_noise"]["log_prob_per_example"], ev["dim"], offset).tolist()}
    atomic_write_json(path, point)
    return point


def _warm_start(done: Dict[float, dict], T: float):
    """(T, newest Glow checkpoint) of the done T nearest to ``T``, or None."""
    for near in sorted(done, key=lambda t: abs(t - T)):
        ckpt = checkpoints.newest_complete(Path(done[near]["view"]) / "prior" / "checkpoints")
        if ckpt:
            return near, ckpt
    return None


def choose_T(run_dir, cfg: ChooseTConfig = ChooseTConfig(), log=print, progress: bool = False, strategy=None,
             should_stop=never) -> dict:
    """Search T (grid, then bisection), apply the rule, write RUN/choose_T.json and its figure."""
    run_dir = Path(run_dir)
    T_max = RunConfig.load(run_dir).sde.T
    done: Dict[float, dict] = {}
    for T in cfg.grid(T_max):
        done[T] = measure(run_dir, T, cfg, done, log, progress, strategy, should_stop)
    for _ in range(cfg.refine):
        T = next_T(verdicts({t: np.array(p["bpd_aux"]) for t, p in done.items()}, cfg.tolerance)[1])
        if T is None or T in done:
            break
        log(f"refining between the grid's points: T={T:g}")
        done[T] = measure(run_dir, T, cfg, done, log, progress, strategy, should_stop)
    return _report(run_dir, cfg, done, T_max)


def _report(run_dir: Path, cfg: ChooseTConfig, done: Dict[float, dict], T_max: float) -> dict:
    best, verdict = verdicts({T: np.array(p["bpd_aux"]) for T, p in done.items()}, cfg.tolerance)
    star = chosen(verdict)
    points = []
    for T in sorted(done):
        p, v = done[T], verdict[T]
        noise = np.array(p["bpd_noise"])
        points.append({**{k: p[k] for k in ("T", "view", "warm_start_from", "prior_nll_per_dim", "prior_seconds",
                                            "likelihood_nfe", "likelihood_seconds_per_example")},
                       **v, "bpd_sem": float(np.std(p["bpd_aux"], ddof=1) / math.sqrt(len(noise))),
                       "bpd_noise": float(noise.mean()), "bpd_noise_sem": float(noise.std(ddof=1) / math.sqrt(len(noise))),
                       "em_nfe": int(round(1000 * T))})
    at = {p["T"]: p for p in points}
    report = {"run": str(run_dir), "T_max": T_max, "T_star": star, "T_best": best, "tolerance_bpd": cfg.tolerance,
              "rule": f"T passes when mean(b_T - b_best) - {Z_ONE_SIDED_5} SE <= {cfg.tolerance:g} bits/dim (paired over "
                      f"the same images and probes); T* = the smallest passing T",
              "view": at[star]["view"], "points": points, "num_examples": cfg.num_examples,
              "saving": {"em_nfe_at_T_star": at[star]["em_nfe"], "em_nfe_at_T_max": int(round(1000 * T_max)),
                         "likelihood_nfe_at_T_star": at[star]["likelihood_nfe"],
                         "likelihood_nfe_at_T_max": at[max(at)]["likelihood_nfe"] if max(at) == T_max else None,
                         "likelihood_seconds_per_example_at_T_star": at[star]["likelihood_seconds_per_example"]}}
    report["figure"] = figure(report, run_dir / "choose_T.png")
    atomic_write_json(run_dir / "choose_T.json", report)
    report["summary"] = str(run_dir / "choose_T.json")
    return report


def figure(report: dict, path: Path) -> str:
    """Bits/dim under nu_phi and p_noise with standard errors against T, T* marked; the SDE
    sampler's NFE (1000 T) on the right axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    pts = report["points"]
    Ts = [p["T"] for p in pts]
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    ax.errorbar(Ts, [p["bpd"] for p in pts], [p["bpd_sem"] for p in pts], marker="o", ms=4, capsize=2,
                color="tab:blue", label="auxiliary prior (ours)")
    ax.errorbar(Ts, [p["bpd_noise"] for p in pts], [p["bpd_noise_sem"] for p in pts], marker="s", ms=3, capsize=2,
                color="tab:red", label="p_noise, same ODE solves")
    ax.axvline(report["T_star"], color="k", ls="--", lw=1, label=f"T* = {report['T_star']:g}")
    ax.set(xlabel="diffusion time T", ylabel="bits/dim")
    ax.legend(fontsize=7)
    right = ax.twinx()
    right.plot(Ts, [p["em_nfe"] for p in pts], color="0.6", lw=1)
    right.set_ylabel("SDE sampler NFE (1000 T)", color="0.4")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)
