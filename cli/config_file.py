"""``--config FILE`` of train and fit-prior: a config.json that shortdiff wrote (a run's, or a
prior's RUN/prior/config.json), or a hand-written subset of one, as the base; the options given
on the command line go on top, with the same validation as flags.  Read before TensorFlow."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from shortdiff_tf import config as config_lib

RUN_SECTIONS = {"sde": config_lib.SDEConfig, "data": config_lib.DataConfig, "model": config_lib.ModelConfig,
                "train": config_lib.TrainConfig}


def _load(path) -> dict:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"--config {p} is unreadable or not JSON ({type(err).__name__}); give a config.json "
                         f"written by shortdiff, or a subset of one") from None
    if not isinstance(raw, dict):
        raise ValueError(f"--config {p} holds {type(raw).__name__}, not an object of settings")
    return raw


def _check_fields(path, where: str, cls, values) -> dict:
    if not isinstance(values, dict):
        raise ValueError(f"--config {path}: {where} must be an object of settings")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"--config {path}: unknown {where} settings {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


def run_settings(path) -> dict:
    """{section: {field: value}} of a run config file (every name checked)."""
    raw = _load(path)
    unknown = sorted(set(raw) - set(RUN_SECTIONS))
    if unknown:
        raise ValueError(f"--config {path}: unknown sections {', '.join(unknown)}; a run config has "
                         f"{', '.join(RUN_SECTIONS)}")
    return {name: _check_fields(path, f"'{name}'", RUN_SECTIONS[name], values) for name, values in raw.items()}


def prior_settings(path) -> dict:
    """{field: value} of a prior config file (every name checked)."""
    return _check_fields(path, "prior", config_lib.PriorConfig, _load(path))


def apply_run(cfg: config_lib.RunConfig, settings: dict) -> config_lib.RunConfig:
    """``cfg`` with the file's settings in place of its own."""
    return dataclasses.replace(cfg, **{name: dataclasses.replace(getattr(cfg, name), **values)
                                       for name, values in settings.items()})
