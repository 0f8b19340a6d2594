"""The fitted auxiliary prior on disk, under RUN/prior:

  config.json    the PriorConfig it was fitted with (written first for a Glow fit, so a fit resumes)
  checkpoints/   Glow: tf.train checkpoints of the flow and its optimiser
  mixture.json   gaussian / gmm / dpgmm: the fitted parameters
  metrics.jsonl  Glow: NLL per logged step
  ode_targets.npz  the ode target: the PF-ODE image of the training data and the score
                 checkpoint step that made it (a resumed fit reads it)
"""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Optional, Tuple

import numpy as np

from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write, atomic_write_json
from shortdiff_tf.prior_fit.settings import load_config, prior_dir, save_config  # noqa: F401 (re-exported)
from shortdiff_tf.priors import GaussianMixture, GaussianPrior


def targets_path(run_dir) -> Path:
    return prior_dir(run_dir) / "ode_targets.npz"


def save_targets(run_dir, points, score_step: int) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, points=points, score_step=score_step)
    atomic_write(targets_path(run_dir), lambda p: p.write_bytes(buffer.getvalue()))


def load_targets(run_dir, score_step: int, count: int):
    """The stored ode targets of ``count`` examples made at checkpoint ``score_step``, else None
    (missing, damaged, or from another checkpoint: they are computed again)."""
    try:
        with np.load(targets_path(run_dir)) as f:
            points, step = f["points"], int(f["score_step"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    return points if step == score_step and len(points) == count else None


def save_mixture(run_dir, prior) -> None:
    atomic_write_json(prior_dir(run_dir) / "mixture.json", prior.get_config(), indent=None)


def prior_from_config(cfg: dict):
    kind = cfg.get("kind")
    if kind == "gaussian":
        return GaussianPrior(cfg["event_shape"], std=cfg["std"], mean=cfg["mean"])
    if kind == "gmm":
        return GaussianMixture(cfg["weights"], cfg["means"], cfg["covs"])
    raise ValueError(f"unknown stored prior kind {kind!r}")


def build_glow(pcfg: PriorConfig, shape):
    from shortdiff_tf.priors.glow import GlowPrior
    return GlowPrior(shape, pcfg.levels, pcfg.steps_per_level, pcfg.hidden)


def load_prior(run_dir, shape) -> Optional[Tuple[object, PriorConfig]]:
    """-> (prior, PriorConfig) of the fitted auxiliary prior, or None when the run has none."""
    pcfg = load_config(run_dir)
    if pcfg is None:
        return None
    out = prior_dir(run_dir)
    if pcfg.kind != "glow":
        path = out / "mixture.json"
        try:
            return prior_from_config(json.loads(path.read_text())), pcfg
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"cannot read the prior {path} ({type(err).__name__}); refit it with "
                             f"`shortdiff fit-prior`") from None
    import tensorflow as tf
    from shortdiff_tf import checkpoints
    prior = build_glow(pcfg, shape)
    path = checkpoints.restore_newest(tf.train.Checkpoint(prior=prior), out / "checkpoints", partial=True,
                                      what="prior")                       # also through a damaged index
    if path is None:
        raise FileNotFoundError(f"{out} has no Glow checkpoint; refit it with `shortdiff fit-prior`")
    return prior, pcfg
