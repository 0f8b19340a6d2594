"""8-bit pixels and the model's space: scaling, uniform dequantisation and its inverse.

Pixels k in {0, ..., 255} map to x = LOW + RANGE (k + u) / 256 with u ~ U(0, 1) (uniform
dequantisation) and [LOW, LOW + RANGE] = [-1, 1]; ``bits.dequantization_offset(RANGE)``
converts densities of x back to 8-bit bins.  Samples go back by flooring into the 256 bins.
"""
from __future__ import annotations

import numpy as np

LOW, RANGE, LEVELS = -1.0, 2.0, 256


def to_uint8(x) -> np.ndarray:
    """Model space [-1, 1] -> 8-bit pixels (the inverse of the scaling, rounded to bins)."""
    y = (np.asarray(x, np.float64) - LOW) / RANGE * LEVELS
    return np.clip(np.floor(y), 0, LEVELS - 1).astype(np.uint8)


def dequantize(images, u):
    """uint8 k and uniform u in [0, 1) -> x = LOW + RANGE (k + u) / 256 (tensors or arrays)."""
    import tensorflow as tf
    return LOW + RANGE * (tf.cast(images, u.dtype) + u) / LEVELS


def to_model_space(arr, seed):
    """uint8 images -> uniformly dequantised, scaled float32 (u from the stateless ``seed``);
    toy vectors -> float32 as they are.  Graph-safe."""
    import tensorflow as tf
    from shortdiff_tf.seeds import as_seed
    arr = tf.convert_to_tensor(arr)
    if arr.dtype != tf.uint8:
        return tf.cast(arr, tf.float32)
    return dequantize(arr, tf.random.stateless_uniform(tf.shape(arr), as_seed(seed)))
