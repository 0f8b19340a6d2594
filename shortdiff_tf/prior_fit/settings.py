"""The settings of a run's auxiliary prior, RUN/prior/config.json, and when a stored prior may be
resumed.  Imports nothing heavy: the CLI checks these before TensorFlow starts."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from shortdiff_tf.config import PriorConfig
from shortdiff_tf.files import atomic_write_text

RESUME_FREE = ("steps", "checkpoint_every", "log_every", "jit")     # may change when a fit resumes


def prior_dir(run_dir) -> Path:
    return Path(run_dir) / "prior"


def save_config(run_dir, pcfg: PriorConfig) -> None:
    atomic_write_text(prior_dir(run_dir) / "config.json", pcfg.to_json())


def load_config(run_dir) -> Optional[PriorConfig]:
    """The stored PriorConfig, None when the run has no prior; a one-line error when unreadable."""
    path = prior_dir(run_dir) / "config.json"
    if not path.exists():
        return None
    try:
        text = path.read_text()
    except OSError as err:
        raise ValueError(f"cannot read {path} ({err.strerror}); fix its permissions or refit the prior") from None
    return PriorConfig.from_json(text, source=str(path))


def check_kind(pcfg: PriorConfig, shape) -> None:
    """The prior's kind fits the data: a Glow for images, the mixtures for toy vectors."""
    if pcfg.kind == "glow" and len(shape) != 3:
        raise ValueError("the Glow prior is for images; use --prior dpgmm, gmm or gaussian for toy data")
    if pcfg.kind in ("gmm", "dpgmm") and len(shape) != 1:
        raise ValueError(f"the {pcfg.kind} prior is for toy vectors; use --prior glow or gaussian for images")


def check_resumable(run_dir, pcfg: PriorConfig, check_score_step: bool = True) -> None:
    """A stored prior is resumed only with its own settings (the budget and intervals may change);
    an ode-target prior only with the score checkpoint that made its targets (``check_score_step``:
    False before the checkpoint is known)."""
    saved = load_config(run_dir)
    if saved is None:
        return
    free = {k: getattr(pcfg, k) for k in RESUME_FREE}
    if dataclasses.replace(saved, **free) == pcfg:
        return
    where = prior_dir(run_dir)
    if dataclasses.replace(saved, score_step=pcfg.score_step, **free) == pcfg:
        if not check_score_step:
            return
        raise ValueError(f"{where} was fitted on the PF-ODE image of the score checkpoint at step {saved.score_step}, "
                         f"and the run's newest checkpoint is at step {pcfg.score_step}; delete {where} to refit it")
    raise ValueError(f"{where} holds a {saved.kind} prior fitted at T={saved.T:g} with other settings "
                     f"({_differences(saved, pcfg)}); delete it to fit a new one, or give its settings")


def _differences(saved: PriorConfig, asked: PriorConfig) -> str:
    a, b = dataclasses.asdict(saved), dataclasses.asdict(asked)
    return ", ".join(f"{k}: {a[k]} there, {b[k]} asked" for k in a if k not in RESUME_FREE and k != "score_step"
                     and a[k] != b[k])
