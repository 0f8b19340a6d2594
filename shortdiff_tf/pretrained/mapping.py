"""Reference weights onto our Keras U-Net, by name and shape: every tensor of the source is used
once, every variable of ours gets one, or a one-line error names the first that does not fit
(never a partial load).

Our network's layers are walked in the reference's module order (``modules``): the noise
embedding's two dense layers, the input conv, the way down (residual blocks, attention,
resampling), the middle, the way up, the output norm and conv.  A naming (``scoresde_names``,
``diffusers_names``) gives each of those layers the reference's prefix, and each kind of layer
knows the reference's parameter names and layouts:

  conv   torch [out, in, kh, kw] -> Keras [kh, kw, in, out]
  dense  torch Linear [out, in]  -> [in, out];   NIN (ScoreSDE) [in, out] as it is
  norm   GroupNorm weight, bias  -> gamma, beta
  attn   q, k, v (three [C, C])  -> one [C, 3C] kernel; the output projection
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Tuple

import numpy as np


class MappingError(ValueError):
    """A source tensor or one of our variables without a counterpart, or of another shape."""


class Source:
    """The source's tensors by name; ``take`` marks one used, ``check_all_used`` refuses leftovers."""

    def __init__(self, tensors: Dict[str, np.ndarray], what: str):
        self.tensors, self.what, self.used = dict(tensors), what, set()

    def take(self, name: str) -> np.ndarray:
        if name not in self.tensors:
            raise MappingError(f"{self.what}: the file has no tensor {name}, so it is not this config's network; "
                               f"pass the config it was trained with (and --set for fields trained otherwise)")
        self.used.add(name)
        return np.asarray(self.tensors[name], np.float32)

    def has(self, name: str) -> bool:
        return name in self.tensors

    def check_all_used(self) -> None:
        left = [n for n in self.tensors if n not in self.used]
        if left:
            raise MappingError(f"{self.what} holds {len(left)} tensor(s) this network has no place for, e.g. {left[0]}: "
                               f"a checkpoint of a larger network or of another config")


def modules(net) -> Iterator[Tuple[str, object]]:
    """(kind, our layer) in the reference's module order; kind: dense, conv, norm, res, attn, and
    resample (the DDPM layout's strided or upsampling conv)."""
    yield "dense", net.embed.dense_0
    yield "dense", net.embed.dense_1
    yield "conv", net.conv_in
    for kind, layer, attn in net.down:
        yield ("res" if kind in ("res", "resample") else "resample"), layer
        if attn is not None:
            yield "attn", attn
    yield "res", net.mid[0]
    yield "attn", net.mid[1]
    yield "res", net.mid[2]
    for kind, layer, attn in net.up:
        yield ("res" if kind in ("res", "resample") else "resample"), layer
        if attn is not None:
            yield "attn", attn
    yield "norm", net.norm_out
    yield "conv", net.conv_out


# ---- tensor layouts --------------------------------------------------------------------------
def conv(src: Source, prefix: str, layer) -> List[tuple]:
    w = src.take(f"{prefix}.weight")
    kernel = w.transpose(2, 3, 1, 0) if w.ndim == 4 else w[None, None]          # NIN [in, out] as a 1x1 conv
    return [(layer.kernel, kernel, f"{prefix}.weight"), (layer.bias, src.take(f"{prefix}.bias"), f"{prefix}.bias")]


def dense(src: Source, prefix: str, layer, nin: bool = False) -> List[tuple]:
    key = "W" if nin else "weight"
    w = src.take(f"{prefix}.{key}")
    return [(layer.kernel, w if nin else w.T, f"{prefix}.{key}"),
            (layer.bias, src.take(f"{prefix}.{'b' if nin else 'bias'}"), f"{prefix}.bias")]


def norm(src: Source, prefix: str, layer) -> List[tuple]:
    return [(layer.gamma, src.take(f"{prefix}.weight"), f"{prefix}.weight"),
            (layer.beta, src.take(f"{prefix}.bias"), f"{prefix}.bias")]


def qkv(src: Source, names: List[str], layer, nin: bool) -> List[tuple]:
    """Three projections into our single [C, 3C] q|k|v kernel."""
    parts = [dense(src, n, layer, nin) for n in names]
    kernel = np.concatenate([p[0][1] for p in parts], axis=1)
    bias = np.concatenate([p[1][1] for p in parts])
    return [(layer.kernel, kernel, f"{names[0]} .. {names[-1]}"), (layer.bias, bias, f"{names[0]} .. {names[-1]} bias")]


def assign(pairs: List[tuple], what: str) -> None:
    """Check every (our variable, array, source name) pair's shape, then assign them all."""
    for var, value, name in pairs:
        if tuple(var.shape) != tuple(value.shape):
            raise MappingError(f"{what}: {name} has shape {list(value.shape)}, this network's {var.path} needs "
                               f"{list(var.shape)} (a checkpoint of another config: check --config and --set)")
    for var, value, _ in pairs:
        var.assign(value)
