"""``shortdiff import``: a pretrained score model another codebase wrote, as an ordinary run at T = 1.

  ScoreSDE:   checkpoint_N.pth + the name of its config (``pretrained.scoresde``)
  diffusers:  a UNet2DModel folder with its DDPMScheduler (``pretrained.diffusers_unet``)

RUN gets config.json (the matching SDE, network, score parameterisation and data shape), one
checkpoint at the source's step holding its EMA weights (what the references evaluate with) as
the network, the EMA and a fresh Adam state, and ``import.json`` (the source file, its SHA-256,
its format and config, the step).  Every command then works on RUN as on a trained run:
``fit-prior --T 0.4`` reuses the score on [eps, 0.4] (the paper's "varying T"), ``train --steps``
trains further from the imported weights.  RUN is written in a folder beside it and renamed into
place at the end: a failed import leaves nothing.
"""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import tensorflow as tf

from shortdiff_tf import checkpoints, data as data_lib, networks, training
from shortdiff_tf.config import RunConfig
from shortdiff_tf.files import atomic_write_json
from shortdiff_tf.pretrained import diffusers_unet, mapping, scoresde, torch_file

FORMATS = ("score_sde_pytorch", "diffusers")


def source_format(source) -> str:
    """score_sde_pytorch for a file, diffusers for a folder."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; give a ScoreSDE checkpoint_N.pth or a diffusers UNet folder")
    return "diffusers" if path.is_dir() else "score_sde_pytorch"


def import_run(source, workdir, config_name: Optional[str] = None, overrides: Dict[str, object] = (),
               dataset: Optional[str] = None, log=print) -> dict:
    """Write RUN from ``source`` (see the module docstring); -> a report."""
    source, workdir = Path(source), Path(workdir)
    if workdir.exists() and any(workdir.iterdir()):
        raise FileExistsError(f"{workdir} exists and is not empty; import into a new --workdir")
    kind = source_format(source)
    cfg, weights, step, record = (_scoresde(source, config_name, overrides, dataset) if kind == "score_sde_pytorch"
                                  else _diffusers(source, dataset))
    _check_dataset(cfg, dataset)
    staging = workdir.with_name(f".{workdir.name}.importing")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        params = _write_run(cfg, weights, step, staging, source, record["config"])
        atomic_write_json(staging / "import.json", {**record, "source": str(source.resolve()), "step": step,
                                                    "sha256": digest(source), "imported": time.strftime("%Y-%m-%dT%H:%M:%S"),
                                                    "weights": "the EMA (shadow) weights", "optimizer": "fresh Adam"})
        if workdir.exists():
            workdir.rmdir()
        staging.replace(workdir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"imported {source} ({record['format']}, step {step}, {params:,} parameters) into {workdir}")
    return {"run_dir": str(workdir), "step": step, "parameters": params, **record,
            "run": {"sde": cfg.sde.kind, "T": cfg.sde.T, "shape": list(cfg.data.shape), "dataset": cfg.data.dataset}}


def _scoresde(source: Path, name: Optional[str], overrides, dataset):
    if not name:
        raise ValueError(f"a ScoreSDE checkpoint needs --config, the config it was trained with: one of "
                         f"{', '.join(scoresde.CONFIGS)}")
    c = scoresde.config(name, {**dict(overrides), **({"data.dataset": dataset} if dataset else {})})
    checkpoint = torch_file.load(source)
    sde, data, model, train = scoresde.run_sections(c)
    weights = scoresde.ema_weights(checkpoint, source)
    step = int(checkpoint["step"])
    pairs = lambda net, src: scoresde.pairs(net, src, c["model.name"] == "ddpm")
    return RunConfig(sde=sde, data=data, model=model, train=_budget(train, step)), (weights, pairs), step, \
        {**scoresde.describe(name, overrides), "ema_decay": float(checkpoint["ema"].get("decay", 0.0)),
         "ema_updates": int(checkpoint["ema"].get("num_updates", 0))}


def _diffusers(source: Path, dataset):
    unet_dir, scheduler_path = diffusers_unet.folders(source)
    unet = diffusers_unet.read_config(unet_dir / "config.json", "UNet2DModel config")
    scheduler = diffusers_unet.read_config(scheduler_path, "scheduler config")
    diffusers_unet.check(unet, scheduler, unet_dir)
    default = "cifar10" if (unet.get("sample_size"), unet.get("in_channels")) == (32, 3) else None
    if not (dataset or default):
        raise ValueError(f"{source} is a {unet['sample_size']}x{unet['sample_size']} model: pass --dataset, the data "
                         f"set it was trained on (a TFDS name or a local folder or .npz)")
    sde, data, model, train = diffusers_unet.run_sections(unet, scheduler, dataset or default)
    weights = diffusers_unet.weights(unet_dir)
    pairs = lambda net, src: diffusers_unet.pairs(net, src, unet)
    record = {"format": "diffusers", "config": str(unet_dir / "config.json"), "scheduler": str(scheduler_path)}
    return RunConfig(sde=sde, data=data, model=model, train=_budget(train, 0)), (weights, pairs), 0, record


def _budget(train, step: int):
    return dataclasses.replace(train, steps=max(step, 1), sample_grid=0)


def _check_dataset(cfg: RunConfig, dataset: Optional[str]) -> None:
    """The data set's images must have the model's shape (checked when it can be read offline)."""
    if not dataset:
        return
    try:
        shape = tuple(data_lib.shape_of(dataset, "train", None))
    except FileNotFoundError:
        return                                   # a TFDS set not prepared here: fit-prior will say so
    if shape != tuple(cfg.data.shape):
        raise ValueError(f"--dataset {dataset} holds {list(shape)} images; the model takes {list(cfg.data.shape)}")


def _write_run(cfg: RunConfig, weights, step: int, run_dir: Path, source: Path, what: str) -> int:
    """The run's state with the source's weights: network and EMA equal, fresh Adam, the step."""
    tensors, pairs = weights
    state = training.build_state(cfg, cfg.data.shape, tf.distribute.get_strategy())
    src = mapping.Source(tensors, f"{source} ({what})")
    mapping.assign(pairs(state.net, src), str(source))
    src.check_all_used()
    state.net.conv_out.kernel.assign(-state.net.conv_out.kernel)   # they predict e; ours predicts -e
    state.net.conv_out.bias.assign(-state.net.conv_out.bias)
    for k, v in checkpoints.variable_dict(state.net.trainable_variables).items():
        state.ema.shadow[k].assign(v)
    state.step.assign(step)
    run_dir.mkdir(parents=True)
    cfg.save(run_dir)
    checkpoints.save(tf.train.CheckpointManager(state.ckpt, str(checkpoints.checkpoint_dir(run_dir)), max_to_keep=2),
                     step)
    return networks.count_params(state.net)


def digest(path: Path) -> str:
    """SHA-256 of a file, or of a folder's files (names and bytes, in sorted order)."""
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
