"""diffusers: a ``UNet2DModel`` folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
with the ``DDPMScheduler`` it was trained with (``scheduler_config.json``).

The DDPM layout (Ho et al.; google/ddpm-cifar10-32, -celebahq-256, -church-256, ...): down blocks
``DownBlock2D`` / ``AttnDownBlock2D``, up blocks ``UpBlock2D`` / ``AttnUpBlock2D``, single-head
attention after every block of an attention level, residual sums without rescaling, GroupNorm
with ``norm_num_groups`` groups, the positional embedding of the timestep.  The model predicts
the noise e at integer timesteps 0 .. N - 1 of the linear beta schedule; it is mapped to the VP
SDE with beta_0 = N beta_start and beta_1 = N beta_end by ScoreSDE's rule for its discrete VP
models (label (N - 1) t, std of the chain at floor((N - 1) t)): s = -e / std.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict

import numpy as np

from shortdiff_tf.config import DataConfig, ModelConfig, SDEConfig, TrainConfig, SCORESDE_OPTIMISER
from shortdiff_tf.pretrained import mapping

WEIGHTS = "diffusion_pytorch_model.safetensors"
DOWN, UP = ("DownBlock2D", "AttnDownBlock2D"), ("UpBlock2D", "AttnUpBlock2D")
REQUIRED = {"act_fn": "silu", "center_input_sample": False, "downsample_padding": 0, "flip_sin_to_cos": False,
            "freq_shift": 1, "mid_block_scale_factor": 1, "resnet_time_scale_shift": "default",
            "time_embedding_type": "positional", "class_embed_type": None, "num_class_embeds": None,
            "attention_head_dim": None, "add_attention": True}


def folders(source) -> tuple:
    """(the UNet folder, the scheduler config) of a pipeline folder or of a UNet folder itself."""
    source = Path(source)
    unet = source / "unet" if (source / "unet" / "config.json").exists() else source
    if not (unet / "config.json").is_file():
        raise FileNotFoundError(f"{source} has no config.json (a diffusers UNet2DModel folder holds config.json and "
                                f"{WEIGHTS}); pass the pipeline folder or its unet/ folder")
    if not (unet / WEIGHTS).is_file():
        raise FileNotFoundError(f"{unet} has config.json but no {WEIGHTS}; download the weights too "
                                f"(the .bin of older pipelines: re-save it with save_pretrained)")
    for candidate in (source / "scheduler" / "scheduler_config.json", unet.parent / "scheduler" / "scheduler_config.json",
                      unet / "scheduler_config.json"):
        if candidate.is_file():
            return unet, candidate
    raise FileNotFoundError(f"no scheduler/scheduler_config.json beside {unet}: the DDPMScheduler fixes the noise "
                            f"schedule the model was trained with; copy the pipeline's scheduler folder")


def read_config(path: Path, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable {what} ({type(err).__name__})") from None


def check(unet: dict, scheduler: dict, where) -> None:
    """Refuse what this version cannot reproduce, naming it."""
    if unet.get("_class_name", "UNet2DModel") != "UNet2DModel":
        raise ValueError(f"{where} is a {unet['_class_name']}; this version imports UNet2DModel (DDPM) models")
    for key, want in REQUIRED.items():
        if unet.get(key, want) != want:
            what = "a conditional (class-label) model" if key in ("class_embed_type", "num_class_embeds") else \
                "a VE (Fourier-embedded) model" if key == "time_embedding_type" else f"{key} = {unet[key]!r}"
            raise ValueError(f"{where}: {what} is not supported (this version imports DDPM UNet2DModels with "
                             f"{key} = {want!r})")
    for kind in unet.get("down_block_types", []) + unet.get("up_block_types", []):
        if kind not in DOWN + UP:
            raise ValueError(f"{where}: block type {kind} is not supported; supported: {', '.join(DOWN + UP)}")
    if scheduler.get("_class_name", "DDPMScheduler") not in ("DDPMScheduler", "DDIMScheduler"):
        raise ValueError(f"{where}: a {scheduler['_class_name']}; the DDPM noise schedule is needed")
    for key, want in (("beta_schedule", "linear"), ("prediction_type", "epsilon"), ("trained_betas", None)):
        if scheduler.get(key, want) != want:
            raise ValueError(f"{where}: scheduler {key} = {scheduler[key]!r} is not supported ({want!r} is)")


def attention_resolutions(unet: dict) -> tuple:
    """The resolutions of the attention levels, checked to be the same on the way down and up."""
    size, channels = int(unet["sample_size"]), list(unet["block_out_channels"])
    down = {size // 2**i for i, kind in enumerate(unet["down_block_types"]) if kind == "AttnDownBlock2D"}
    up = {size // 2**(len(channels) - 1 - i) for i, kind in enumerate(unet["up_block_types"]) if kind == "AttnUpBlock2D"}
    if down != up:
        raise ValueError(f"attention at {sorted(down)} on the way down but {sorted(up)} on the way up is not supported")
    return tuple(sorted(down, reverse=True))


def run_sections(unet: dict, scheduler: dict, dataset: str):
    """-> (SDEConfig, DataConfig, ModelConfig, TrainConfig) of the model at T = 1."""
    channels = [int(c) for c in unet["block_out_channels"]]
    base, size, n = channels[0], int(unet["sample_size"]), int(scheduler["num_train_timesteps"])
    if any(c % base for c in channels) or unet.get("in_channels") != unet.get("out_channels", unet.get("in_channels")):
        raise ValueError("block_out_channels must be multiples of the first, and in_channels equal out_channels")
    sde = SDEConfig(kind="vp", T=1.0, eps=1e-5, beta_0=n * float(scheduler["beta_start"]),
                    beta_1=n * float(scheduler["beta_end"]))
    data = DataConfig(dataset=dataset, shape=(size, size, int(unet["in_channels"])))
    model = ModelConfig(kind="unet", layout="ddpm", ch=base, ch_mult=tuple(c // base for c in channels),
                        num_res_blocks=int(unet["layers_per_block"]), attn_resolutions=attention_resolutions(unet),
                        dropout=float(unet.get("dropout", 0.0)), embedding="positional", skip_rescale=False,
                        norm_groups=int(unet.get("norm_num_groups", 32)), up_attention="every", num_scales=n,
                        score_std="discrete")
    if float(unet.get("norm_eps", 1e-6)) != 1e-6:
        raise ValueError(f"norm_eps = {unet['norm_eps']} is not supported (1e-6 is)")
    return sde, data, model, TrainConfig(steps=800_000, **SCORESDE_OPTIMISER)


def weights(unet_dir: Path) -> Dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(unet_dir / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{unet_dir / WEIGHTS} is not a readable safetensors file ({str(err)[:80]}); "
                         f"download it again") from None


def pairs(net, src: mapping.Source, unet: dict) -> list:
    """(our variable, array, name) for every parameter, naming our layers as diffusers does."""
    return [p for kind, layer, prefix in _named(net, unet) for p in _layer(src, kind, layer, prefix)]


def _named(net, unet: dict):
    """(kind, our layer, diffusers prefix) in our module order."""
    levels, blocks = len(unet["block_out_channels"]), int(unet["layers_per_block"])
    names = ["time_embedding.linear_1", "time_embedding.linear_2", "conv_in"]
    for i in range(levels):
        for j in range(blocks):
            names += [f"down_blocks.{i}.resnets.{j}"] + ([f"down_blocks.{i}.attentions.{j}"]
                                                         if unet["down_block_types"][i] == "AttnDownBlock2D" else [])
        names += [f"down_blocks.{i}.downsamplers.0.conv"] if i < levels - 1 else []
    names += ["mid_block.resnets.0", "mid_block.attentions.0", "mid_block.resnets.1"]
    for i in range(levels):
        for j in range(blocks + 1):
            names += [f"up_blocks.{i}.resnets.{j}"] + ([f"up_blocks.{i}.attentions.{j}"]
                                                       if unet["up_block_types"][i] == "AttnUpBlock2D" else [])
        names += [f"up_blocks.{i}.upsamplers.0.conv"] if i < levels - 1 else []
    names += ["conv_norm_out", "conv_out"]
    ours = list(mapping.modules(net))
    if len(ours) != len(names):
        raise mapping.MappingError(f"the UNet has {len(names)} layers, our network {len(ours)}: not a DDPM UNet")
    return [(kind, layer, name) for (kind, layer), name in zip(ours, names)]


def _layer(src: mapping.Source, kind: str, layer, p: str) -> list:
    if kind == "dense":
        return mapping.dense(src, p, layer)
    if kind in ("conv", "resample"):
        return mapping.conv(src, p, layer)
    if kind == "norm":
        return mapping.norm(src, p, layer)
    if kind == "attn":
        return (mapping.norm(src, f"{p}.group_norm", layer.norm)
                + mapping.qkv(src, [f"{p}.to_q", f"{p}.to_k", f"{p}.to_v"], layer.qkv, nin=False)
                + mapping.dense(src, f"{p}.to_out.0", layer.proj))
    out = (mapping.norm(src, f"{p}.norm1", layer.norm_0) + mapping.conv(src, f"{p}.conv1", layer.conv_0)
           + mapping.dense(src, f"{p}.time_emb_proj", layer.emb_proj) + mapping.norm(src, f"{p}.norm2", layer.norm_1)
           + mapping.conv(src, f"{p}.conv2", layer.conv_1))
    return out + (mapping.conv(src, f"{p}.conv_shortcut", layer.skip) if layer.skip is not None else [])
