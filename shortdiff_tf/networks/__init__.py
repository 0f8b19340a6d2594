"""Score networks (Keras 3) and the wrapper that turns them into score functions of (x, t)."""
from __future__ import annotations

import tensorflow as tf

from shortdiff_tf.networks import precision as precision_lib
from shortdiff_tf.networks.dropout import NoiseKey
from shortdiff_tf.networks.embeddings import FourierTime, NoiseEmbedding, PositionalTime
from shortdiff_tf.networks.mlp import ScoreMLP
from shortdiff_tf.networks.parameterization import Parameterization
from shortdiff_tf.networks.unet import AttnBlock, ResBlock, ScoreUNet
from shortdiff_tf.sde import bcast

__all__ = ["FourierTime", "PositionalTime", "NoiseEmbedding", "NoiseKey", "Parameterization", "ScoreMLP",
           "ScoreUNet", "ResBlock", "AttnBlock", "score_function", "count_params"]


def score_function(net, sde, training: bool = False):
    """s_theta(x, t) = net(x, c(t)) / sigma(t), with c and sigma from the network's
    ``parameterization`` (default: c = log std(t), sigma = std(t)); the network predicts -e
    (Song et al. 2021).  The score takes ``noise``, the ``NoiseKey`` of a training pass."""
    param = getattr(net, "parameterization", Parameterization())

    def score(x, t, noise=None):
        sigma = param.sigma(sde, t)
        keyed = {} if noise is None else {"noise": noise}
        out = net([x, param.conditioning(sde, t, sigma)], training=training, **keyed)
        return tf.cast(out, x.dtype) / bcast(tf.cast(sigma, x.dtype), x)

    return score


def count_params(net) -> int:
    return int(sum(int(tf.size(v)) for v in net.trainable_variables))


def _unet(cfg, shape):
    if len(shape) != 3 or shape[0] != shape[1]:
        raise ValueError(f"the U-Net needs square images [H, H, C]; got data of shape {list(shape)}")
    return ScoreUNet(image_size=shape[0], channels=shape[2], ch=cfg.ch, ch_mult=cfg.ch_mult,
                     num_res_blocks=cfg.num_res_blocks, attn_resolutions=cfg.attn_resolutions,
                     dropout=cfg.dropout, fourier_scale=cfg.fourier_scale, layout=cfg.layout, embedding=cfg.embedding,
                     skip_rescale=cfg.skip_rescale, norm_groups=cfg.norm_groups, up_attention=cfg.up_attention,
                     name="score_unet")


def _mlp(cfg, shape):
    if len(shape) != 1:
        raise ValueError(f"the MLP takes vectors [D]; got data of shape {list(shape)}")
    return ScoreMLP(shape[0], width=cfg.width, depth=cfg.depth, fourier_scale=cfg.fourier_scale,
                    embedding=cfg.embedding, name="score_mlp")


BUILDERS = {"unet": _unet, "mlp": _mlp}


def build_score_net(cfg, shape, precision: str = "fp32"):
    """Build (and create the weights of) the score network of a ModelConfig for data of ``shape``,
    computing in ``precision`` (fp32, bf16 or fp16; weights in fp32)."""
    if cfg.kind not in BUILDERS:
        raise ValueError(f"unknown model kind {cfg.kind!r}; choose one of {', '.join(sorted(BUILDERS))}")
    with precision_lib.policy(precision):             # every weight from the shapes alone (no call)
        net = BUILDERS[cfg.kind](cfg, tuple(shape))
        net.build([(None,) + tuple(shape), (None,)])
    net.parameterization = Parameterization(cfg.embedding, cfg.score_std, cfg.num_scales)
    return net
