"""Score U-Nets in Keras 3: the DDPM layout (Ho et al. 2020) and ScoreSDE's DDPM++ (Song et al.
2021, App. H).

Residual blocks (GroupNorm, SiLU, 3x3 conv, the noise embedding added between the convs, the
sum with the skip rescaled by 1/sqrt(2) when ``skip_rescale``) and self-attention at the listed
resolutions, in two layouts:

- ``ddpm``: strided-conv down- and nearest+conv up-sampling, attention after every block;
- ``ddpmpp`` (DDPM++): BigGAN residual blocks that resample inside the block (2x2 average
  pooling down, nearest up, a 1x1 conv on the skip), attention after every block on the way down
  and once per resolution on the way up, and a noise embedding of ch features (ScoreSDE's
  ``resblock_type='biggan'``, ``fir=False``, ``progressive='none'``, ``skip_rescale=True``).

``ddpm`` with ``skip_rescale=False``, ``norm_groups=32`` and the positional embedding is Ho et
al.'s network as ScoreSDE's ``models/ddpm.py`` and diffusers' ``UNet2DModel`` build it.

Input (x [B, H, W, C], c [B], the noise level's label: ``parameterization``) -> [B, H, W, C];
the score wrapper divides the output by std(t).  While training, ``noise`` (a
``dropout.NoiseKey``) keys the dropout masks.
"""
from __future__ import annotations

import math

import keras
from keras import ops

from shortdiff_tf.networks.embeddings import NoiseEmbedding
from shortdiff_tf.networks.dropout import Dropout, layer_salt
from shortdiff_tf.networks.groupnorm import GroupNorm
from shortdiff_tf.networks.precision import FP32

SKIP_SCALE = 1.0 / math.sqrt(2.0)


def num_groups(channels: int, fixed: int = 0, max_groups: int = 32) -> int:
    """``fixed`` when given (it must divide channels), else the largest group count <=
    min(32, channels/4) that divides channels (ScoreSDE's DDPM++ rule, min(C // 4, 32))."""
    if fixed:
        if channels % fixed:
            raise ValueError(f"GroupNorm with {fixed} groups needs channels divisible by {fixed}; got {channels}")
        return fixed
    g = max(1, min(max_groups, channels // 4))
    while channels % g:
        g -= 1
    return g


def _conv(ch, name, stride=1, zero=False, kernel=3):
    init = keras.initializers.VarianceScaling(1e-10 if zero else 1.0, "fan_avg", "uniform", seed=None)
    return keras.layers.Conv2D(ch, kernel, strides=stride, padding="same", kernel_initializer=init, name=name)


LAYOUTS = ("ddpm", "ddpmpp")
UP_ATTENTION = ("", "every", "last")        # "": every block (ddpm), the last block of a level (ddpmpp)
RESAMPLE = {None: lambda x: x,
            "up": lambda x: ops.repeat(ops.repeat(x, 2, axis=1), 2, axis=2),
            "down": lambda x: ops.average_pool(x, 2, 2, "valid")}


def resampled(shape, resample) -> tuple:
    """The shape [B, H, W, C] after RESAMPLE[resample] (None: unchanged)."""
    b, h, w, c = shape
    scale = {None: lambda n: n, "up": lambda n: 2 * n, "down": lambda n: n // 2}[resample]
    return (b, scale(h), scale(w), c)


@keras.saving.register_keras_serializable(package="shortdiff")
class ResBlock(keras.layers.Layer):
    """h = conv(R(SiLU(GN(x)))) + Dense(SiLU(emb)); h = conv(dropout(SiLU(GN(h))));
    (skip(R(x)) + h) / sqrt 2 (or the plain sum without ``skip_rescale``), with R the block's
    resampling (none, "up" or "down": BigGAN's block) and skip a 1x1 conv when the channels
    change or the block resamples."""

    def __init__(self, out_ch: int, dropout: float = 0.0, resample=None, skip_rescale: bool = True,
                 norm_groups: int = 0, **kw):
        super().__init__(**kw)
        if resample not in RESAMPLE:
            raise ValueError(f"ResBlock resample must be None, 'up' or 'down'; got {resample!r}")
        self.out_ch, self.dropout, self.resample = int(out_ch), float(dropout), resample
        self.skip_rescale, self.norm_groups = bool(skip_rescale), int(norm_groups)
        self.conv_0 = _conv(self.out_ch, "conv_0")
        self.conv_1 = _conv(self.out_ch, "conv_1", zero=True)
        self.emb_proj = keras.layers.Dense(self.out_ch, name="emb_proj")
        self.norm_1 = GroupNorm(num_groups(self.out_ch, self.norm_groups), epsilon=1e-6, silu=True, name="norm_1",
                                dtype=FP32)
        self.drop = Dropout(self.dropout, salt=layer_salt(self.name), name="dropout")

    def build(self, x_shape, emb_shape=None):
        """Every weight from the shapes alone (the embedding's when ``emb_shape`` is given)."""
        in_ch = x_shape[-1]
        self.norm_0 = GroupNorm(num_groups(in_ch, self.norm_groups), epsilon=1e-6, silu=True, name="norm_0", dtype=FP32)
        needs_skip = in_ch != self.out_ch or self.resample is not None
        self.skip = _conv(self.out_ch, "skip", kernel=1) if needs_skip else None
        out_shape = resampled(x_shape, self.resample)
        h_shape = out_shape[:-1] + (self.out_ch,)
        for layer, shape in ((self.norm_0, x_shape), (self.conv_0, out_shape), (self.skip, out_shape),
                             (self.norm_1, h_shape), (self.drop, h_shape), (self.conv_1, h_shape),
                             (self.emb_proj, emb_shape)):
            if layer is not None and shape is not None:
                layer.build(shape)

    def call(self, x, emb, training=None, noise=None):
        resample = RESAMPLE[self.resample]
        h = self.conv_0(resample(self.norm_0(x)))
        h = h + self.emb_proj(ops.silu(emb))[:, None, None, :]
        h = self.conv_1(self.drop(self.norm_1(h), training=training, noise=noise))
        skip = resample(x) if self.skip is None else self.skip(resample(x))
        return (skip + h) * SKIP_SCALE if self.skip_rescale else skip + h

    def get_config(self):
        return {**super().get_config(), "out_ch": self.out_ch, "dropout": self.dropout, "resample": self.resample,
                "skip_rescale": self.skip_rescale, "norm_groups": self.norm_groups}


@keras.saving.register_keras_serializable(package="shortdiff")
class AttnBlock(keras.layers.Layer):
    """Single-head self-attention over the H*W positions, the residual sum rescaled by 1/sqrt 2
    when ``skip_rescale``."""

    def __init__(self, skip_rescale: bool = True, norm_groups: int = 0, **kw):
        super().__init__(**kw)
        self.skip_rescale, self.norm_groups = bool(skip_rescale), int(norm_groups)

    def build(self, x_shape):
        ch = x_shape[-1]
        self.norm = GroupNorm(num_groups(ch, self.norm_groups), epsilon=1e-6, name="norm", dtype=FP32)
        self.qkv = keras.layers.Dense(3 * ch, name="qkv")
        self.proj = keras.layers.Dense(ch, kernel_initializer=keras.initializers.VarianceScaling(1e-10), name="proj")
        self.norm.build(x_shape)
        self.qkv.build(tuple(x_shape))
        self.proj.build(tuple(x_shape))

    def call(self, x):
        shape = ops.shape(x)
        ch = x.shape[-1]
        q, k, v = ops.split(self.qkv(self.norm(x)), 3, axis=-1)
        flat = lambda y: ops.reshape(y, (shape[0], -1, ch))
        logits = ops.einsum("bic,bjc->bij", flat(q), flat(k)) / math.sqrt(ch)
        w = ops.cast(ops.softmax(ops.cast(logits, FP32), axis=-1), v.dtype)      # softmax in fp32
        h = ops.reshape(ops.einsum("bij,bjc->bic", w, flat(v)), shape)
        return (x + self.proj(h)) * SKIP_SCALE if self.skip_rescale else x + self.proj(h)

    def get_config(self):
        return {**super().get_config(), "skip_rescale": self.skip_rescale, "norm_groups": self.norm_groups}


@keras.saving.register_keras_serializable(package="shortdiff")
class ScoreUNet(keras.Model):
    """(x [B, H, W, C], c [B]) -> [B, H, W, C], channels ch * ch_mult[level] at each resolution."""

    def __init__(self, image_size: int, channels: int, ch: int = 64, ch_mult=(1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions=(7,), dropout: float = 0.1,
                 fourier_scale: float = 16.0, layout: str = "ddpm", embedding: str = "fourier",
                 skip_rescale: bool = True, norm_groups: int = 0, up_attention: str = "", **kw):
        super().__init__(**kw)
        self.layout, self.embedding = layout, embedding
        self.image_size, self.channels, self.ch = int(image_size), int(channels), int(ch)
        self.ch_mult, self.num_res_blocks = tuple(int(m) for m in ch_mult), int(num_res_blocks)
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self.dropout, self.fourier_scale = float(dropout), float(fourier_scale)
        self.skip_rescale, self.norm_groups = bool(skip_rescale), int(norm_groups)
        self.up_attention = up_attention or ("last" if layout == "ddpmpp" else "every")
        self._check()
        # DDPM++ and every positional embedding: ch sinusoids (ScoreSDE, diffusers); ours: 4 ch
        features = self.ch if self.layout == "ddpmpp" or embedding == "positional" else 4 * self.ch
        self.embed = NoiseEmbedding(4 * self.ch, self.fourier_scale, features=features, kind=embedding, name="embed")
        self.conv_in = _conv(self.ch, "conv_in")
        self._make_down(), self._make_mid(), self._make_up()
        self.norm_out = GroupNorm(num_groups(self.ch, self.norm_groups), epsilon=1e-6, silu=True, name="norm_out",
                                  dtype=FP32)
        self.conv_out = _conv(self.channels, "conv_out", zero=True)

    def _check(self):
        if self.image_size < 1 or self.channels < 1 or self.ch < 1 or not self.ch_mult:
            raise ValueError("ScoreUNet needs image_size, channels, ch >= 1 and a non-empty ch_mult")
        if self.up_attention not in UP_ATTENTION[1:]:
            raise ValueError(f"unknown up_attention {self.up_attention!r}; choose one of {', '.join(UP_ATTENTION[1:])}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"unknown U-Net layout {self.layout!r}; choose one of {', '.join(LAYOUTS)}")
        if self.image_size % 2 ** (len(self.ch_mult) - 1):
            # 'same' strided convs round up (28 -> 14 -> 7 -> 4) and the upsampling would not match
            raise ValueError(f"image_size {self.image_size} is not divisible by 2^{len(self.ch_mult) - 1}; "
                             f"use fewer levels in ch_mult")

    def _resolutions(self):
        return [self.image_size // 2**i for i in range(len(self.ch_mult))]

    def _make_down(self):
        self.down = []
        for i, (res, mult) in enumerate(zip(self._resolutions(), self.ch_mult)):
            for r in range(self.num_res_blocks):
                attn = self._attn(f"down_{i}_attn_{r}") if res in self.attn_resolutions else None
                self.down.append(("res", self._res(self.ch * mult, f"down_{i}_res_{r}"), attn))
            if i < len(self.ch_mult) - 1:
                self.down.append(self._resampler("down", i, mult))

    def _make_mid(self):
        top = self.ch * self.ch_mult[-1]
        self.mid = [self._res(top, "mid_res_0"), self._attn("mid_attn"), self._res(top, "mid_res_1")]

    def _make_up(self):
        self.up = []
        for i in reversed(range(len(self.ch_mult))):
            res, mult = self._resolutions()[i], self.ch_mult[i]
            for r in range(self.num_res_blocks + 1):
                attended = res in self.attn_resolutions and (self.up_attention == "every" or r == self.num_res_blocks)
                attn = self._attn(f"up_{i}_attn_{r}") if attended else None
                self.up.append(("res", self._res(self.ch * mult, f"up_{i}_res_{r}"), attn))
            if i > 0:
                self.up.append(self._resampler("up", i, mult))

    def _res(self, out_ch: int, name: str, resample=None) -> ResBlock:
        return ResBlock(out_ch, self.dropout, resample=resample, skip_rescale=self.skip_rescale,
                        norm_groups=self.norm_groups, name=name)

    def _attn(self, name: str) -> AttnBlock:
        return AttnBlock(skip_rescale=self.skip_rescale, norm_groups=self.norm_groups, name=name)

    def _resampler(self, direction: str, level: int, mult: int):
        """(kind, layer, None): a BigGAN block (ddpmpp), a strided conv or nearest + conv (ddpm)."""
        name = f"{direction}_{level}_resample"
        if self.layout == "ddpmpp":
            return "resample", self._res(self.ch * mult, name, resample=direction), None
        return direction, _conv(self.ch * mult, name, stride=2 if direction == "down" else 1), None

    def build(self, inputs_shape):
        """Every weight from the shapes alone, walking the layout as ``call`` does (Keras would
        otherwise trace the whole network symbolically to find them)."""
        x_shape, c_shape = (tuple(s) for s in inputs_shape)
        self.embed.build(c_shape)
        emb = self.embed.compute_output_shape(c_shape)
        at = lambda shape, ch: tuple(shape[:-1]) + (ch,)
        self.conv_in.build(x_shape)
        shape = at(x_shape, self.ch)
        skips = [shape]
        for kind, layer, attn in self.down:
            shape = self._build_step(kind, layer, shape, emb)
            if attn is not None:
                attn.build(shape)
            skips.append(shape)
        for layer in self.mid:
            shape = self._build_step("res" if isinstance(layer, ResBlock) else "attn", layer, shape, emb)
        for kind, layer, attn in self.up:
            if kind == "res":
                shape = at(shape, shape[-1] + skips.pop()[-1])
            shape = self._build_step(kind, layer, shape, emb)
            if attn is not None:
                attn.build(shape)
        self.norm_out.build(shape)
        self.conv_out.build(shape)

    @staticmethod
    def _build_step(kind: str, layer, shape: tuple, emb: tuple) -> tuple:
        """Build one layer of the layout on input ``shape``; -> its output shape."""
        if kind in ("res", "resample"):
            layer.build(shape, emb)
            return resampled(shape, layer.resample)[:-1] + (layer.out_ch,)
        if kind == "attn":
            layer.build(shape)
            return shape
        shape = resampled(shape, "up") if kind == "up" else shape          # nearest, then the conv
        layer.build(shape)
        return layer.compute_output_shape(shape)

    def call(self, inputs, training=None, noise=None):
        x, c = inputs
        emb = self.embed(c)
        h = self.conv_in(x)
        hs = [h]
        for kind, layer, attn in self.down:
            h = layer(h, emb, training=training, noise=noise) if kind in ("res", "resample") else layer(h)
            h = attn(h) if attn is not None else h
            hs.append(h)
        h = self.mid[0](h, emb, training=training, noise=noise)
        h = self.mid[2](self.mid[1](h), emb, training=training, noise=noise)
        for kind, layer, attn in self.up:
            if kind == "res":
                h = layer(ops.concatenate([h, hs.pop()], axis=-1), emb, training=training, noise=noise)
                h = attn(h) if attn is not None else h
            elif kind == "resample":
                h = layer(h, emb, training=training, noise=noise)
            else:
                h = layer(RESAMPLE["up"](h))
        return self.conv_out(self.norm_out(h))

    def get_config(self):
        return {**super().get_config(), "image_size": self.image_size, "channels": self.channels,
                "ch": self.ch, "ch_mult": list(self.ch_mult), "num_res_blocks": self.num_res_blocks,
                "attn_resolutions": list(self.attn_resolutions), "dropout": self.dropout,
                "fourier_scale": self.fourier_scale, "layout": self.layout, "embedding": self.embedding,
                "skip_rescale": self.skip_rescale, "norm_groups": self.norm_groups, "up_attention": self.up_attention}
