"""Resolving a RunConfig from presets, an existing run directory and explicitly given options."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from cli.config_file import apply_run
from shortdiff_tf import config as config_lib, data as data_lib

# option name -> (config section, field)
FIELDS = {
    "sde": ("sde", "kind"), "T": ("sde", "T"), "eps": ("sde", "eps"), "beta_0": ("sde", "beta_0"),
    "beta_1": ("sde", "beta_1"), "sigma_min": ("sde", "sigma_min"), "sigma_max": ("sde", "sigma_max"),
    "dataset": ("data", "dataset"), "data_dir": ("data", "data_dir"),
    "steps": ("train", "steps"), "batch_size": ("train", "batch_size"), "lr": ("train", "lr"),
    "warmup": ("train", "warmup"), "ema_decay": ("train", "ema_decay"), "grad_clip": ("train", "grad_clip"),
    "weighting": ("train", "weighting"), "importance": ("train", "importance"), "seed": ("train", "seed"),
    "reduce_mean": ("train", "reduce_mean"), "random_flip": ("train", "random_flip"),
    "embedding": ("model", "embedding"),
    "checkpoint_every": ("train", "checkpoint_every"), "log_every": ("train", "log_every"),
    "sample_grid": ("train", "sample_grid"), "sample_every": ("train", "sample_every"), "grad_accum": ("train", "grad_accum"),
    "ch": ("model", "ch"), "num_res_blocks": ("model", "num_res_blocks"), "dropout": ("model", "dropout"),
    "width": ("model", "width"), "precision": ("train", "precision"), "jit": ("train", "jit"),
}


def _explicit(ctx, opts: dict) -> dict:
    """Options the user gave (not Click defaults), plus non-None preset overrides."""
    from click.core import ParameterSource
    out = {}
    for name, value in opts.items():
        if name not in FIELDS or value is None:
            continue
        if ctx is not None and ctx.get_parameter_source(name) == ParameterSource.DEFAULT and name in ("sde", "T", "eps", "dataset"):
            continue
        out[name] = value
    return out


def _apply(cfg: config_lib.RunConfig, values: dict) -> config_lib.RunConfig:
    sections = {name: getattr(cfg, name) for name in ("sde", "data", "model", "train")}
    for name, value in values.items():
        section, field = FIELDS[name]
        sections[section] = dataclasses.replace(sections[section], **{field: value})
    return config_lib.RunConfig(**sections)


def resolve_train_config(workdir, ctx, opts: dict, file: dict = None) -> config_lib.RunConfig:
    """An existing run's config (resume) or presets for the data, then a --config file's settings
    (``file``: ``config_file.run_settings``), then the given options on top."""
    given, file = _explicit(ctx, opts), file or {}
    if (Path(workdir) / "config.json").exists():
        saved = config_lib.RunConfig.load(workdir)
        preset = opts.get("preset")
        if preset and preset != saved.train.preset:
            raise ValueError(f"{workdir} holds a run started {'from ' + saved.train.preset if saved.train.preset else 'without a preset'}"
                             f", not from {preset}; use a new --workdir")
        return _apply(apply_run(saved, file), given)
    if opts.get("preset"):
        return _from_preset(opts["preset"], opts, given)
    dataset = given.get("dataset", file.get("data", {}).get("dataset", opts["dataset"]))
    if opts.get("download") and data_lib.is_tfds(dataset):
        data_lib.download(dataset, opts.get("data_dir"))       # prepared on disk, never read into memory
    same_data = file.get("data", {}).get("dataset", dataset) == dataset
    shape = tuple(file.get("data", {}).get("shape") or () if same_data else ()) or \
        data_lib.shape_of(dataset, "train", opts.get("data_dir"))
    if not same_data:                                     # --dataset over the file's: that data's shape
        file = {**file, "data": {k: v for k, v in file["data"].items() if k != "shape"}}
    base = config_lib.RunConfig(data=config_lib.DataConfig(dataset=dataset, shape=shape),
                                model=config_lib.model_preset(shape),
                                train=config_lib.train_preset(dataset, shape))
    base = _apply(base, {k: opts[k] for k in ("sde", "T", "eps") if opts.get(k) is not None})
    return _apply(apply_run(base, file), given)


def _from_preset(name: str, opts: dict, given: dict) -> config_lib.RunConfig:
    """A named preset (its data set and shape, with no data read), then the given options; another
    --dataset takes its shape from the data."""
    base = config_lib.run_preset(name)
    if "dataset" in given and given["dataset"] != base.data.dataset:
        shape = data_lib.shape_of(given["dataset"], "train", opts.get("data_dir"))
        base = dataclasses.replace(base, data=dataclasses.replace(base.data, shape=shape))
    return _apply(base, given)
