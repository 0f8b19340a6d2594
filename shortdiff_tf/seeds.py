"""Stateless seeds: every random draw in shortdiff is a pure function of an int32 [2] seed.

Draws over examples are keyed by row (``row_bits``, ``row_uniform``, ``row_normal``): row j of
a draw depends on (seed, first + j) alone, so a batch split over replicas, or drawn in chunks,
gets exactly the values one draw of the whole would give.
"""
from __future__ import annotations

import math

import tensorflow as tf


def as_seed(seed) -> tf.Tensor:
    """An int, a pair, or an int32 [2] tensor -> an int32 [2] tensor for tf.random.stateless_*."""
    if isinstance(seed, tf.Tensor):
        seed = tf.cast(seed, tf.int32)
        return seed if seed.shape.rank == 1 else tf.stack([seed, tf.zeros_like(seed)])
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int32)
    return tf.constant(list(seed), tf.int32)


def split(seed, i) -> tf.Tensor:
    """The i-th child of ``seed`` (``i`` may be a loop tensor)."""
    return tf.random.experimental.stateless_fold_in(as_seed(seed), tf.cast(i, tf.int32))


# ---- draws keyed by row: row j of a draw is a function of (seed, first + j) alone ------------------
PHILOX = 1                          # tf.random.Algorithm.PHILOX
WORDS_PER_BLOCK = 4                 # 32-bit words per Philox counter block


def row_bits(rows, words: int, seed, first=0) -> tf.Tensor:
    """uint32 [rows, words]: row j holds the first ``words`` words of the Philox stream of row
    first + j under ``seed`` (each row owns ceil(words / 4) counter blocks).  So the rows a
    replica or a chunk draws for itself are exactly the rows one draw of the whole would give,
    in TF's kernels and under XLA alike (tested)."""
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=as_seed(seed))
    blocks = -(-int(words) // WORDS_PER_BLOCK)
    start = tf.bitcast(tf.cast(first, tf.int64) * blocks, tf.uint64)
    bits = tf.raw_ops.StatelessRandomUniformFullIntV2(
        shape=tf.stack([tf.cast(rows, tf.int32), blocks * WORDS_PER_BLOCK]), key=key,
        counter=tf.stack([start, counter[1]]), alg=PHILOX, dtype=tf.uint32)
    return bits[:, :words]


def _per_block(dtype) -> int:
    """Values of ``dtype`` one Philox counter block gives TF's kernels: 4 of 32 bits, 2 of 64."""
    return WORDS_PER_BLOCK // (tf.as_dtype(dtype).size // 4)


def _rows(op, rows, row_shape, seed, first, dtype) -> tf.Tensor:
    """[rows, *row_shape] from TF's stateless kernel ``op``, row j starting at the counter block
    of row first + j (rows padded to whole blocks)."""
    n = math.prod(int(d) for d in row_shape)
    blocks = -(-n // _per_block(dtype))
    key, counter = tf.raw_ops.StatelessRandomGetKeyCounter(seed=as_seed(seed))
    start = tf.bitcast(tf.cast(first, tf.int64) * blocks, tf.uint64)
    values = op(shape=tf.stack([tf.cast(rows, tf.int32), blocks * _per_block(dtype)]), key=key,
                counter=tf.stack([start, counter[1]]), alg=PHILOX, dtype=dtype)
    return tf.reshape(values[:, :n], tf.concat([[rows], tf.constant(list(row_shape), tf.int32)], 0))


def row_uniform(rows, row_shape, seed, first=0, dtype=tf.float32) -> tf.Tensor:
    """Uniforms on [0, 1) [rows, *row_shape], keyed by row: TF's stateless uniforms, bit for bit
    the same for a row wherever it sits (not under XLA, whose generator lays the values out
    otherwise)."""
    return _rows(tf.raw_ops.StatelessRandomUniformV2, rows, row_shape, seed, first, dtype)


def row_normal(rows, row_shape, seed, first=0, dtype=tf.float32) -> tf.Tensor:
    """Standard normals [rows, *row_shape], keyed by row: TF's stateless normals, bit for bit the
    same for a row wherever it sits (not under XLA)."""
    return _rows(tf.raw_ops.StatelessRandomNormalV2, rows, row_shape, seed, first, dtype)
