"""Sampling a trained run: ``draw(run, ...)`` returns the samples in memory, ``sample_run`` writes
them to a PNG grid and an .npz and returns a report."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np

from shortdiff_tf import data as data_lib, distribute, images, samplers
from shortdiff_tf.app.runs import Run, load_run, resolve_prior
from shortdiff_tf.progress import Progress
from shortdiff_tf.seeds import as_seed, split


class Ticker:
    """Counts score evaluations on the host and redraws a progress line at most every ``every`` s:
    in NFE against the planned total, or for the adaptive ODE (no total) in thousandths of the
    way from T to eps, with the NFE so far and no ETA (its steps crowd near eps)."""

    def __init__(self, T: float, enabled: bool = True, every: float = 1.0, stream=None):
        self.T, self.enabled, self.every, self.stream = T, enabled, every, stream
        self.nfe, self.last, self.t, self.shown = 0, 0.0, T, 0

    def expect(self, planned_nfe: Optional[int], eps: float) -> "Ticker":
        """What the sampler will do: its NFE (None for the adaptive ODE) and where it stops."""
        self.planned, self.eps = planned_nfe, eps
        unit = " NFE" if planned_nfe else " of the way T -> eps"
        self.bar = Progress(planned_nfe or 1000, enabled=self.enabled, unit=unit, stream=self.stream,
                            show_eta=bool(planned_nfe))
        return self

    def __call__(self, t: float):
        self.nfe, self.t = self.nfe + 1, t
        now = time.perf_counter()
        if now - self.last >= self.every or self.nfe == self.planned:
            self.last = now
            self._draw()

    def _draw(self):
        self.shown = self.nfe
        if self.planned:
            self.bar.update(self.nfe, "sampling")
        else:
            self.bar.update(round(1000 * (self.T - self.t) / (self.T - self.eps)), f"sampling, NFE {self.nfe}")

    def close(self):
        """Draw the final count if the last evaluation was not drawn, and end the line."""
        if self.shown != self.nfe:
            self._draw()
        self.bar.close()


@dataclasses.dataclass(frozen=True)
class Samples:
    """Samples at eps in model space, and how they were drawn."""
    x: np.ndarray
    report: dict


def draw(run: Run, sampler: str = "em", steps: Optional[int] = None, num_samples: int = 64, seed: int = 0,
         T: Optional[float] = None, snr: Optional[float] = None, prior: str = "auto",
         temperature: float = 1.0, eps: Optional[float] = None, rtol: Optional[float] = None,
         atol: Optional[float] = None, progress: bool = False, jit: bool = False, strategy=None,
         chunk: Optional[int] = None) -> Samples:
    """``num_samples`` samples, starting at T from the auxiliary prior (``aux``) or p_noise (``noise``);
    with ``progress`` a progress line on stderr (a host callback per network evaluation, which XLA
    cannot compile: with ``jit`` there is none).  ``jit``: XLA (``samplers.Sampler``).  ``chunk``:
    draw them ``chunk`` at a time (``in_chunks``)."""
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1; got {num_samples}")
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    sde = run.sde(T)
    cfg = samplers.preset(sampler, steps, snr, temperature, eps, rtol, atol)
    replicas = distribute.replica_count(strategy)
    if num_samples < replicas:
        raise ValueError(f"--num-samples {num_samples} is fewer than the {replicas} replicas; draw at least {replicas}")
    ticker = Ticker(sde.T) if progress and not jit and replicas == 1 else None
    smp = samplers.Sampler(sde, samplers.reporting(run.score_fn(T), ticker) if ticker else run.score_fn(T),
                           prior_obj, cfg, jit=jit, strategy=strategy)
    chunk = min(chunk or num_samples, num_samples)
    calls = -(-num_samples // chunk)
    if ticker:
        ticker.expect(smp.planned_nfe() and smp.planned_nfe() * calls, smp.sde.eps)
    start = time.perf_counter()
    x, nfe = in_chunks(smp, num_samples, seed, chunk)
    seconds = time.perf_counter() - start
    if ticker:
        ticker.close()
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("the sampler produced non-finite values; try more --steps or the ode sampler")
    report = {"num_samples": num_samples, "sampler": sampler, "nfe": nfe, "seconds": seconds,
              "steps": None if cfg.method == "ode" else smp.default_steps(), "T": sde.T, "eps": smp.sde.eps,
              "seed": seed, "prior": prior_name, "temperature": temperature, "checkpoint_step": run.step,
              "precision": run.precision, "jit": jit, "replicas": replicas}
    if cfg.method == "ode":
        report.update(rtol=cfg.rtol, atol=cfg.atol)
    return Samples(x, report)


def in_chunks(smp: samplers.Sampler, num_samples: int, seed, chunk: int):
    """``num_samples`` samples from one Sampler, ``chunk`` per call (every call of one shape, so
    it is traced once), call i from the i-th child of ``seed`` (call 0 from ``seed`` itself).
    -> (samples [num_samples, ...] as NumPy, the largest NFE of a call)."""
    results = [smp(chunk, seed if i == 0 else split(as_seed(seed), i)) for i in range(-(-num_samples // chunk))]
    return np.concatenate([r.x.numpy() for r in results])[:num_samples], max(r.nfe for r in results)


def sample_run(run_dir, sampler: str = "em", steps: Optional[int] = None, num_samples: int = 64, seed: int = 0,
               T: Optional[float] = None, out: Optional[str] = None, snr: Optional[float] = None,
               prior: str = "auto", temperature: float = 1.0, eps: Optional[float] = None,
               rtol: Optional[float] = None, atol: Optional[float] = None, progress: bool = False,
               precision: str = "fp32", jit: bool = False, strategy=None) -> dict:
    """Draw samples of a run and write ``out``.png and ``out``.npz (default: RUN/samples/...)."""
    run = load_run(run_dir, precision)
    s = draw(run, sampler, steps, num_samples, seed, T, snr, prior, temperature, eps, rtol, atol, progress, jit,
             strategy)
    r = s.report
    stem = Path(out) if out else (run.run_dir / "samples" /
                                  f"{sampler}-T{r['T']:g}-{r['prior'].replace(':', '-')}-seed{seed}")
    return {**write(run, s.x, stem), **r}


def write(run: Run, x: np.ndarray, stem: Path) -> dict:
    """Images: a PNG grid and an .npz with uint8 ``images`` and model-space ``x``; toy vectors: a
    scatter plot (or histogram) over the test data and an .npz with ``x``."""
    png, npz = Path(f"{stem}.png"), Path(f"{stem}.npz")     # T0.4 is not a suffix
    if len(run.shape) == 3:
        pixels = data_lib.to_uint8(x)
        images.save_png_grid(pixels, png)
        images.save_npz(npz, images=pixels, x=x)
    else:
        ref = data_lib.load(run.cfg.data.dataset, "test").array
        images.save_scatter(x, png, reference=ref)
        images.save_npz(npz, x=x)
    return {"png": str(png), "npz": str(npz)}
