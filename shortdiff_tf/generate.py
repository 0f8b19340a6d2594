"""Sampling a trained run to files: ``sample_run(run_dir, ...)`` -> PNG grid + .npz + a report."""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import data as data_lib, images, samplers
from shortdiff_tf.aux_prior import resolve_prior
from shortdiff_tf.runs import load_run


def sampler_config(name: str, steps: Optional[int] = None, snr: Optional[float] = None,
                   temperature: float = 1.0) -> samplers.SamplerConfig:
    """A named preset (em, pc, ode) with overrides."""
    if name not in samplers.PRESETS:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(samplers.PRESETS)}")
    cfg = dataclasses.replace(samplers.PRESETS[name], steps=steps, temperature=temperature)
    return dataclasses.replace(cfg, snr=snr) if snr is not None else cfg


def sample_run(run_dir, sampler: str = "em", steps: Optional[int] = None, num: int = 64, seed: int = 0,
               T: Optional[float] = None, out: Optional[str] = None, snr: Optional[float] = None,
               prior: str = "auto", temperature: float = 1.0) -> dict:
    """Draw ``num`` samples, starting at T from the auxiliary prior (``aux``) or p_noise (``noise``)."""
    if num < 1:
        raise ValueError(f"--num must be >= 1; got {num}")
    run = load_run(run_dir)
    prior_obj, T, prior_name = resolve_prior(run, prior, T)
    sde = run.sde(T)
    cfg = sampler_config(sampler, steps, snr, temperature)
    smp = samplers.Sampler(sde, run.score_fn(T), prior_obj, cfg)
    start = time.perf_counter()
    res = smp(num, seed)
    seconds = time.perf_counter() - start
    x = res.x.numpy()
    if not np.all(np.isfinite(x)):
        raise FloatingPointError("the sampler produced non-finite values; try more --steps or the ode sampler")
    stem = Path(out) if out else run.run_dir / "samples" / f"{sampler}-T{sde.T:g}-{prior_name.replace(':', '-')}-seed{seed}"
    return {**_write(run, x, stem), "num": num, "sampler": sampler, "nfe": res.nfe, "seconds": seconds,
            "steps": None if cfg.method == "ode" else (steps or smp.default_steps()), "T": sde.T,
            "eps": sde.eps, "seed": seed, "prior": prior_name, "temperature": temperature,
            "checkpoint_step": run.step}


def _write(run, x: np.ndarray, stem: Path) -> dict:
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
