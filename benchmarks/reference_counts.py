"""Trainable parameters of ScoreSDE's networks, counted layer by layer from their module lists
(score_sde_pytorch's models/ncsnpp.py and models/ddpm.py), independently of our Keras code: the
reference figures the presets and the imported configs are checked against."""
from __future__ import annotations


def conv(k, i, o):
    return k * k * i * o + o


def dense(i, o):
    return i * o + o


def gn(c):
    return 2 * c


def attention(c):
    return gn(c) + 4 * dense(c, c)                                # GroupNorm_0, NIN_0..3


def unet_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels, block, resample) -> int:
    """The module list both references share: embedding MLP, input conv, ``num_res_blocks`` blocks
    (attention at ``attn_resolutions``) and a ``resample(ch)`` per level down, two blocks around an
    attention in the middle, ``num_res_blocks + 1`` blocks on the skips, one attention and a
    resampling per level up, and GroupNorm + output conv."""
    res = [image_size // 2**i for i in range(len(ch_mult))]
    total = dense(nf, 4 * nf) + dense(4 * nf, 4 * nf) + conv(3, channels, nf)
    hs, ch = [nf], nf
    for i, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            total, ch = total + block(ch, nf * mult), nf * mult
            total += attention(ch) if res[i] in attn_resolutions else 0
            hs.append(ch)
        if i < len(ch_mult) - 1:
            total += resample(ch)
            hs.append(ch)
    total += 2 * block(ch, ch) + attention(ch)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            total, ch = total + block(ch + hs.pop(), nf * ch_mult[i]), nf * ch_mult[i]
        total += attention(ch) if res[i] in attn_resolutions else 0
        total += resample(ch) if i > 0 else 0
    return total + gn(ch) + conv(3, ch, channels)


def reference_ddpmpp_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels) -> int:
    """ScoreSDE's NCSNpp with resblock_type 'biggan', progressive 'none', positional embedding and
    conditional=True: BigGAN blocks with a 1x1 shortcut when the channels change or the block
    resamples, and resampling inside such a block."""
    block = lambda i, o, resample=False: (gn(i) + conv(3, i, o) + dense(4 * nf, o) + gn(o) + conv(3, o, o)
                                          + (conv(1, i, o) if i != o or resample else 0))
    return unet_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels, block,
                      lambda c: block(c, c, resample=True))


def reference_ddpm_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels) -> int:
    """ScoreSDE's DDPM (models/ddpm.py): ResnetBlockDDPM with a NIN shortcut when the channels
    change, AttnBlock, strided-conv Downsample and conv Upsample."""
    block = lambda i, o: gn(i) + conv(3, i, o) + dense(4 * nf, o) + gn(o) + conv(3, o, o) + (dense(i, o) if i != o else 0)
    return unet_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels, block,
                      lambda c: conv(3, c, c))
