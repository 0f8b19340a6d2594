"""Sampling a trained run: ``plan`` checks a request and builds its Sampler, ``chunks`` draws its
samples a call at a time (the same samples whatever the call size), ``draw`` keeps them in
memory and ``sample_run`` writes them to a PNG grid and an .npz, a call at a time."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np

from shortdiff_tf import data as data_lib, distribute, images, pixels, samplers
from shortdiff_tf.app.runs import Run, load_run, resolve_prior
from shortdiff_tf.progress import Progress


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


MAX_CALL = 1024             # samples a call unless asked otherwise (--batch-size)
GRID_MAX = 1024             # images in a sample grid (the .npz holds all)


@dataclasses.dataclass
class Plan:
    """A sampling run: the Sampler, its settings, how many calls of how many samples, the report."""
    sampler: samplers.Sampler
    method: str
    num_samples: int
    chunk: int
    seed: int
    ticker: Optional[Ticker]
    report: dict

    @property
    def calls(self) -> int:
        return -(-self.num_samples // self.chunk)


def plan(run: Run, sampler: str = "em", steps: Optional[int] = None, num_samples: int = 64, seed: int = 0,
         T: Optional[float] = None, snr: Optional[float] = None, prior: str = "auto",
         temperature: float = 1.0, eps: Optional[float] = None, rtol: Optional[float] = None,
         atol: Optional[float] = None, progress: bool = False, jit: bool = False, strategy=None,
         chunk: Optional[int] = None) -> Plan:
    """Check the request and build its Sampler: from T, starting at the auxiliary prior (``aux``)
    or p_noise (``noise``); with ``progress`` a progress line on stderr (a host callback per
    network evaluation, which XLA cannot compile: with ``jit`` there is none); ``chunk`` samples a
    call (default: all, at most ``MAX_CALL``)."""
    if num_samples < 1:
        raise ValueError(f"--num-samples must be >= 1; got {num_samples}")
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    sde = run.sde(T)
    cfg = samplers.preset(sampler, steps, snr, temperature, eps, rtol, atol)
    replicas = distribute.replica_count(strategy)
    chunk = min(chunk or MAX_CALL, num_samples)
    if chunk < replicas:
        raise ValueError(f"{chunk} samples a call are fewer than the {replicas} replicas; draw at least {replicas}")
    ticker = Ticker(sde.T) if progress and not jit and replicas == 1 else None
    smp = samplers.Sampler(sde, samplers.reporting(run.score_fn(T), ticker) if ticker else run.score_fn(T),
                           prior_obj, cfg, jit=jit, strategy=strategy)
    report = {"num_samples": num_samples, "sampler": sampler, "steps": None if cfg.method == "ode" else smp.default_steps(),
              "T": sde.T, "eps": smp.sde.eps, "seed": seed, "prior": prior_name, "temperature": temperature,
              "checkpoint_step": run.step, "precision": run.precision, "jit": jit, "replicas": replicas,
              "batch_size": chunk, **({"snr": cfg.snr} if cfg.corrector != "none" else {}),
              **({"rtol": cfg.rtol, "atol": cfg.atol} if cfg.method == "ode" else {})}
    return Plan(smp, cfg.method, num_samples, chunk, seed, ticker, report)


def chunks(p: Plan):
    """The samples of ``p``, a call at a time (every call of one shape, so the loop is traced
    once; the last cut), call i drawing samples i chunk, ..., (i + 1) chunk - 1 of the seed: the
    samples one call would draw.  Yields (x as NumPy, NFE); stops at the first non-finite value."""
    if p.ticker:
        planned = p.sampler.planned_nfe()
        p.ticker.expect(planned and planned * p.calls, p.sampler.sde.eps)
    start = time.perf_counter()
    for i in range(p.calls):
        r = p.sampler(p.chunk, p.seed, first=i * p.chunk)
        x = r.x.numpy()[: p.num_samples - i * p.chunk]
        if not np.all(np.isfinite(x)):
            raise FloatingPointError("the sampler produced non-finite values; try more --steps or the ode sampler "
                                     "(or check the run's training loss)")
        yield x, r.nfe
    if p.ticker:
        p.ticker.close()
    p.report["seconds"] = time.perf_counter() - start


def draw(run: Run, sampler: str = "em", steps: Optional[int] = None, num_samples: int = 64, seed: int = 0,
         T: Optional[float] = None, snr: Optional[float] = None, prior: str = "auto",
         temperature: float = 1.0, eps: Optional[float] = None, rtol: Optional[float] = None,
         atol: Optional[float] = None, progress: bool = False, jit: bool = False, strategy=None,
         chunk: Optional[int] = None) -> Samples:
    """``num_samples`` samples in memory (``plan``, ``chunks``)."""
    p = plan(run, sampler, steps, num_samples, seed, T, snr, prior, temperature, eps, rtol, atol, progress, jit,
             strategy, chunk)
    parts = list(chunks(p))
    return Samples(np.concatenate([x for x, _ in parts]), {**p.report, "nfe": max(n for _, n in parts)})


def in_chunks(smp: samplers.Sampler, num_samples: int, seed, chunk: int):
    """``num_samples`` samples from one Sampler, ``chunk`` per call (``chunks``).
    -> (samples as NumPy, the largest NFE of a call)."""
    p = Plan(smp, smp.config.method, num_samples, chunk, seed, None, {})
    parts = list(chunks(p))
    return np.concatenate([x for x, _ in parts]), max(n for _, n in parts)


def sample_run(run_dir, sampler: str = "em", steps: Optional[int] = None, num_samples: int = 64, seed: int = 0,
               T: Optional[float] = None, out: Optional[str] = None, snr: Optional[float] = None,
               prior: str = "auto", temperature: float = 1.0, eps: Optional[float] = None,
               rtol: Optional[float] = None, atol: Optional[float] = None, progress: bool = False,
               precision: str = "fp32", jit: bool = False, strategy=None, batch_size: Optional[int] = None) -> dict:
    """Draw samples of a run, ``batch_size`` a call, and write ``out``.png (a grid of the first
    1,024, or a scatter plot) and ``out``.npz, a call at a time: memory holds one call's samples."""
    run = load_run(run_dir, precision)
    p = plan(run, sampler, steps, num_samples, seed, T, snr, prior, temperature, eps, rtol, atol, progress, jit,
             strategy, batch_size)
    stem = Path(out) if out else run.run_dir / "samples" / default_stem(p.report)
    files, nfe = write(run, chunks(p), stem, num_samples)
    return {**files, **p.report, "nfe": nfe}


def write(run: Run, parts, stem: Path, num_samples: int):
    """Write ``parts`` (an iterable of (samples, NFE), ``num_samples`` in all) as they come:
    images to ``stem``.npz (uint8 ``images`` and model-space ``x``) and a PNG grid of the first
    1,024; toy vectors to an .npz with ``x`` and a scatter plot (or histogram) over the test data.
    -> ({"png": ..., "npz": ...}, the largest NFE)."""
    png, npz = Path(f"{stem}.png"), Path(f"{stem}.npz")     # T0.4 is not a suffix
    image = len(run.shape) == 3
    specs = {"images": (run.shape, np.uint8), "x": (run.shape, np.float32)} if image else {"x": (run.shape, np.float32)}
    shown, kept, nfe = [], 0, 0
    with images.NpzStream(npz, num_samples, **specs) as f:
        for x, n in parts:
            f.append(**({"images": pixels.to_uint8(x), "x": x} if image else {"x": x}))
            room = (GRID_MAX if image else num_samples) - kept
            if room > 0:
                shown.append(x[:room].copy())                 # a copy: a view would keep the whole call alive
                kept += len(shown[-1])
            nfe = max(nfe, n)
    shown = np.concatenate(shown)
    if image:
        images.save_png_grid(pixels.to_uint8(shown), png)
    else:
        images.save_scatter(shown, png, reference=data_lib.load(run.cfg.data.dataset, "test").array)
    return {"png": str(png), "npz": str(npz)}, nfe


def default_stem(r: dict) -> str:
    """RUN/samples/<stem>, named by every setting that changes the samples, so no sampling
    overwrites another's: sampler, T, prior, seed, count, steps (SDE and few-step samplers),
    the sampling eps, the checkpoint step, and when they apply the Langevin snr, the ODE
    tolerances, a temperature other than 1, and a precision other than fp32 or XLA.
    e.g. ``em-T0.4-aux-glow-seed0-n64-steps400-eps0.001-ckpt2500``"""
    parts = [r["sampler"], f"T{r['T']:g}", r["prior"].replace(":", "-"), f"seed{r['seed']}", f"n{r['num_samples']}"]
    parts += [f"steps{r['steps']}"] if r.get("steps") else [f"rtol{r['rtol']:g}", f"atol{r['atol']:g}"]
    parts += [f"snr{r['snr']:g}"] if "snr" in r else []
    parts += [f"eps{r['eps']:g}"] + ([f"temp{r['temperature']:g}"] if r["temperature"] != 1.0 else [])
    parts += ([r["precision"]] if r["precision"] != "fp32" else []) + (["xla"] if r["jit"] else [])
    return "-".join(parts + [f"ckpt{r['checkpoint_step']}"])
