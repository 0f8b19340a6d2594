"""ScoreSDE (yang-song/score_sde_pytorch): its checkpoints and the configs they were trained with.

``checkpoint_N.pth`` as ``utils.save_checkpoint`` writes it: ``model`` (the state dict of
``torch.nn.DataParallel(model)``: keys ``module.all_modules.<i>...``, the buffer ``sigmas``),
``ema`` (``decay``, ``num_updates``, ``shadow_params``: the parameters in the order of
``model.parameters()``), ``optimizer`` and ``step``.  The configs are data (``CONFIGS``): the
fields of each config module that shape the network and the score, with ScoreSDE's names.
The score is its ``get_score_fn(sde, model, train=False, continuous)``: -model(x, (N - 1) t) /
std(t), std of the SDE (continuous) or of the N-step VP chain at floor((N - 1) t) (discrete).
"""
from __future__ import annotations

from typing import Dict

import numpy as np

from shortdiff_tf.config import DataConfig, ModelConfig, SDEConfig, TrainConfig, SCORESDE_OPTIMISER
from shortdiff_tf.pretrained import mapping

CIFAR10 = {"data.dataset": "cifar10", "data.image_size": 32, "data.num_channels": 3, "data.centered": True,
           "data.random_flip": True, "model.beta_min": 0.1, "model.beta_max": 20.0, "model.num_scales": 1000,
           "model.dropout": 0.1, "model.ema_rate": 0.9999, "training.reduce_mean": True}
DDPMPP = {**CIFAR10, "model.name": "ncsnpp", "model.nf": 128, "model.ch_mult": (1, 2, 2, 2),
          "model.num_res_blocks": 4, "model.attn_resolutions": (16,), "model.resblock_type": "biggan",
          "model.skip_rescale": True, "model.embedding_type": "positional", "model.fir": False,
          "model.progressive": "none", "model.progressive_input": "none", "model.scale_by_sigma": False}
CONFIGS: Dict[str, dict] = {
    "vp/cifar10_ddpmpp_continuous": {**DDPMPP, "training.sde": "vpsde", "training.continuous": True},
    "vp/cifar10_ddpmpp_deep_continuous": {**DDPMPP, "training.sde": "vpsde", "training.continuous": True,
                                          "model.num_res_blocks": 8},
    "subvp/cifar10_ddpmpp_continuous": {**DDPMPP, "training.sde": "subvpsde", "training.continuous": True},
    "subvp/cifar10_ddpmpp_deep_continuous": {**DDPMPP, "training.sde": "subvpsde", "training.continuous": True,
                                             "model.num_res_blocks": 8},
    "vp/cifar10_ddpmpp": {**DDPMPP, "training.sde": "vpsde", "training.continuous": False},
    "vp/ddpm/cifar10_continuous": {**CIFAR10, "training.sde": "vpsde", "training.continuous": True,
                                   "model.name": "ddpm", "model.nf": 128, "model.ch_mult": (1, 2, 2, 2),
                                   "model.num_res_blocks": 2, "model.attn_resolutions": (16,),
                                   "model.scale_by_sigma": False},
}
SETTABLE = ("model.nf", "model.ch_mult", "model.num_res_blocks", "model.attn_resolutions", "model.dropout",
            "model.beta_min", "model.beta_max", "model.num_scales", "data.image_size", "data.num_channels",
            "data.dataset")
BUFFERS = ("sigmas",)


def config(name: str, overrides: Dict[str, object] = ()) -> dict:
    """The named config with ``--set`` overrides (ScoreSDE's ``--config.model.nf=...``)."""
    if name not in CONFIGS:
        raise ValueError(f"unknown ScoreSDE config {name!r}; this version imports {', '.join(CONFIGS)}")
    overrides = dict(overrides)
    bad = [k for k in overrides if k not in SETTABLE]
    if bad:
        raise ValueError(f"--set {bad[0]} cannot be changed; settable: {', '.join(SETTABLE)}")
    return {**CONFIGS[name], **overrides}


def run_sections(c: dict):
    """-> (SDEConfig, DataConfig, ModelConfig, TrainConfig) of a ScoreSDE config at T = 1."""
    kind = {"vpsde": "vp", "subvpsde": "subvp"}[c["training.sde"]]
    sde = SDEConfig(kind=kind, T=1.0, eps=1e-5, beta_0=float(c["model.beta_min"]), beta_1=float(c["model.beta_max"]))
    data = DataConfig(dataset=c["data.dataset"], shape=(c["data.image_size"],) * 2 + (c["data.num_channels"],))
    ddpm = c["model.name"] == "ddpm"
    model = ModelConfig(kind="unet", layout="ddpm" if ddpm else "ddpmpp", ch=int(c["model.nf"]),
                        ch_mult=tuple(c["model.ch_mult"]), num_res_blocks=int(c["model.num_res_blocks"]),
                        attn_resolutions=tuple(c["model.attn_resolutions"]), dropout=float(c["model.dropout"]),
                        embedding="positional", skip_rescale=not ddpm, norm_groups=32 if ddpm else 0,
                        up_attention="last", num_scales=int(c["model.num_scales"]),
                        score_std="scoresde" if c["training.continuous"] else "discrete")
    train = TrainConfig(steps=1_300_000, **{**SCORESDE_OPTIMISER, "ema_decay": float(c["model.ema_rate"])},
                        reduce_mean=bool(c["training.reduce_mean"]), random_flip=bool(c["data.random_flip"]))
    return sde, data, model, train


def ema_weights(checkpoint: dict, path) -> Dict[str, np.ndarray]:
    """The EMA's shadow parameters by name (the model's parameter names, in order, without the
    DataParallel prefix and the buffers)."""
    for key in ("model", "ema", "step"):
        if key not in checkpoint:
            raise ValueError(f"{path} is not a ScoreSDE checkpoint (no {key!r}; utils.save_checkpoint writes "
                             f"optimizer, model, ema and step)")
    state = checkpoint["model"]
    names = [k[len("module."):] if k.startswith("module.") else k for k in state]
    params = [n for n in names if n.rsplit(".", 1)[-1] not in BUFFERS]
    shadow = checkpoint["ema"].get("shadow_params", [])
    if len(shadow) != len(params):
        raise ValueError(f"{path}: the EMA holds {len(shadow)} tensors for {len(params)} parameters; the file is "
                         f"damaged or not a ScoreSDE checkpoint")
    out = {}
    for name, value, raw in zip(params, shadow, (state[k] for k in state if k.rsplit(".", 1)[-1] not in BUFFERS)):
        if np.shape(value) != np.shape(raw):
            raise ValueError(f"{path}: the EMA's tensor for {name} has shape {list(np.shape(value))}, the parameter "
                             f"{list(np.shape(raw))}; the file is damaged")
        out[name] = np.asarray(value)
    return out


def pairs(net, src: mapping.Source, ddpm: bool) -> list:
    """(our variable, array, name) for every parameter, walking ``all_modules`` in order."""
    out = []
    for i, (kind, layer) in enumerate(mapping.modules(net)):
        p = f"all_modules.{i}"
        if kind == "dense":
            out += mapping.dense(src, p, layer)
        elif kind == "conv":
            out += mapping.conv(src, p, layer)
        elif kind == "resample":
            out += mapping.conv(src, f"{p}.Conv_0", layer)
        elif kind == "norm":
            out += mapping.norm(src, p, layer)
        elif kind == "attn":
            out += mapping.norm(src, f"{p}.GroupNorm_0", layer.norm)
            out += mapping.qkv(src, [f"{p}.NIN_{j}" for j in range(3)], layer.qkv, nin=True)
            out += mapping.dense(src, f"{p}.NIN_3", layer.proj, nin=True)
        else:
            out += _res(src, p, layer, ddpm)
    return out


def _res(src: mapping.Source, p: str, layer, ddpm: bool) -> list:
    out = (mapping.norm(src, f"{p}.GroupNorm_0", layer.norm_0) + mapping.conv(src, f"{p}.Conv_0", layer.conv_0)
           + mapping.dense(src, f"{p}.Dense_0", layer.emb_proj) + mapping.norm(src, f"{p}.GroupNorm_1", layer.norm_1)
           + mapping.conv(src, f"{p}.Conv_1", layer.conv_1))
    if layer.skip is not None:
        if ddpm:
            w = src.take(f"{p}.NIN_0.W")
            out += [(layer.skip.kernel, w[None, None], f"{p}.NIN_0.W"),
                    (layer.skip.bias, src.take(f"{p}.NIN_0.b"), f"{p}.NIN_0.b")]
        else:
            out += mapping.conv(src, f"{p}.Conv_2", layer.skip)
    return out


def describe(name: str, overrides) -> dict:
    return {"format": "score_sde_pytorch", "config": name, "overrides": dict(overrides)}


