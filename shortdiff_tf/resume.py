"""When a run directory may be resumed: the settings a resumed run may change, and the
differences that stop it (imports nothing heavy: the CLI checks them before TensorFlow starts)."""
from __future__ import annotations

import dataclasses

from shortdiff_tf.config import RunConfig

# may change when a run resumes (lr: lowered after a divergence)
FREE = ("steps", "log_every", "checkpoint_every", "keep_checkpoints", "sample_grid", "sample_every", "grad_accum",
        "lr", "jit")


def differences(saved: RunConfig, asked: RunConfig) -> str:
    """'' when ``asked`` may resume the ``saved`` run, else its differences, e.g.
    "sde.T: 0.4 there, 0.5 asked"."""
    free = {k: getattr(saved.train, k) for k in FREE}
    same_budget = dataclasses.replace(asked, train=dataclasses.replace(asked.train, **free))
    return "" if same_budget == saved else _differences(dataclasses.asdict(saved), dataclasses.asdict(same_budget))


def _differences(a: dict, b: dict, prefix="") -> str:
    out = []
    for k in a:
        if isinstance(a[k], dict):
            out.append(_differences(a[k], b[k], f"{prefix}{k}."))
        elif a[k] != b[k] and not (isinstance(a[k], (list, tuple)) and list(a[k]) == list(b[k])):
            out.append(f"{prefix}{k}: {a[k]} there, {b[k]} asked")
    return ", ".join(x for x in out if x)
