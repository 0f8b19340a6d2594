"""Bits per dimension of 8-bit data from a density of the scaled, dequantised data.

Pixels k in {0, ..., 2^bits - 1} are dequantised to y = (k + u) / 2^bits in [0, 1), u ~ U(0, 1),
and scaled to x = low + data_range * y (``data``: [-1, 1], range 2).  The probability of a bin
is P(k) = p_y(y) 2^-bits per dimension (exactly for the dequantised density, a bound for the
model's), and p_y = p_x data_range^D, so

  bits/dim = -log2 P(k) / D = -log p_x(x) / (D ln 2) + bits - log2(data_range),

an offset of 7 for [-1, 1] and 8 for [0, 1] (ScoreSDE's "+ 8 - log2 scale" convention).
Everything here is graph-safe (tensors in, tensors out).
"""
from __future__ import annotations

import math


def dequantization_offset(data_range: float, bits: int = 8) -> float:
    """bits - log2(data_range): from nats of scaled continuous data to 2^bits-level bins."""
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0; got {data_range}")
    return bits - math.log2(data_range)


def nats_to_bits_per_dim(log_density, dim: int):
    """-log p / (D ln 2): a (part of a) log-density in nats as bits per dimension."""
    return -log_density / (dim * math.log(2.0))


def bits_per_dim(log_density, dim: int, data_range: float, bits: int = 8):
    """-log p_x(x) / (D ln 2) + bits - log2(data_range)."""
    return nats_to_bits_per_dim(log_density, dim) + dequantization_offset(data_range, bits)
