"""Commands to suggest in error messages, rebuilt from what is known so that they reproduce the
settings they stand for (imports nothing heavy: the CLI uses it before TensorFlow starts)."""
from __future__ import annotations

import re
from pathlib import Path

DEFAULT_RUN_NAME = re.compile(r"^(?P<dataset>.+)-(?P<sde>vp|ve|subvp)-T(?P<T>[0-9.]+)$")


def train_command(run_dir) -> str:
    """``shortdiff train ... --workdir RUN``: with the data set, SDE and T that a default run name
    (``<dataset>-<sde>-T<T>``, what ``train`` picks without --workdir) stands for."""
    m = DEFAULT_RUN_NAME.match(Path(run_dir).name)
    if not m or not _valid_T(m["T"]):
        return f"shortdiff train --workdir {run_dir} (with the --dataset, --sde and --T you want)"
    dataset = "" if m["dataset"] == "digits" else f" --dataset {m['dataset']}"
    return f"shortdiff train{dataset} --sde {m['sde']} --T {m['T']} --workdir {run_dir}"


def _valid_T(text: str) -> bool:
    """A T that ``train --T`` takes, written as train names runs (``T0.4``, ``T1``; not ``T04``)."""
    try:
        return 0 < float(text) <= 1 and (text == "1" or text.startswith("0."))
    except ValueError:
        return False
