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


def reference_ddpmpp_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels) -> int:
    """The trainable parameters of ScoreSDE's NCSNpp with resblock_type 'biggan', progressive
    'none', positional embedding and conditional=True, counted layer by layer from its module
    list (independently of our Keras code)."""
    block = lambda i, o, resample=False: (gn(i) + conv(3, i, o) + dense(4 * nf, o) + gn(o) + conv(3, o, o)
                                          + (conv(1, i, o) if i != o or resample else 0))
    attn = lambda c: gn(c) + 4 * dense(c, c)                      # GroupNorm_0, NIN_0..3
    res = [image_size // 2**i for i in range(len(ch_mult))]
    total = dense(nf, 4 * nf) + dense(4 * nf, 4 * nf) + conv(3, channels, nf)
    hs, ch = [nf], nf
    for i, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            total, ch = total + block(ch, nf * mult), nf * mult
            total += attn(ch) if res[i] in attn_resolutions else 0
            hs.append(ch)
        if i < len(ch_mult) - 1:
            total += block(ch, ch, resample=True)
            hs.append(ch)
    total += 2 * block(ch, ch) + attn(ch)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            total, ch = total + block(ch + hs.pop(), nf * ch_mult[i]), nf * ch_mult[i]
        total += attn(ch) if res[i] in attn_resolutions else 0
        total += block(ch, ch, resample=True) if i > 0 else 0
    return total + gn(ch) + conv(3, ch, channels)



def reference_ddpm_count(nf, ch_mult, num_res_blocks, attn_resolutions, image_size, channels) -> int:
    """ScoreSDE's DDPM (models/ddpm.py): ResnetBlockDDPM with a NIN shortcut when the channels
    change, AttnBlock, strided-conv Downsample and conv Upsample, attention once per level on
    the way up."""
    block = lambda i, o: gn(i) + conv(3, i, o) + dense(4 * nf, o) + gn(o) + conv(3, o, o) + (dense(i, o) if i != o else 0)
    attn = lambda c: gn(c) + 4 * dense(c, c)
    res = [image_size // 2**i for i in range(len(ch_mult))]
    total = dense(nf, 4 * nf) + dense(4 * nf, 4 * nf) + conv(3, channels, nf)
    hs, ch = [nf], nf
    for i, mult in enumerate(ch_mult):
        for _ in range(num_res_blocks):
            total, ch = total + block(ch, nf * mult), nf * mult
            total += attn(ch) if res[i] in attn_resolutions else 0
            hs.append(ch)
        if i < len(ch_mult) - 1:
            total += conv(3, ch, ch)
            hs.append(ch)
    total += 2 * block(ch, ch) + attn(ch)
    for i in reversed(range(len(ch_mult))):
        for _ in range(num_res_blocks + 1):
            total, ch = total + block(ch + hs.pop(), nf * ch_mult[i]), nf * ch_mult[i]
        total += attn(ch) if res[i] in attn_resolutions else 0
        total += conv(3, ch, ch) if i > 0 else 0
    return total + gn(ch) + conv(3, ch, channels)
