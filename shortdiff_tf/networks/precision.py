"""Mixed precision for the score networks: ``--precision fp32 | bf16 | fp16``.

The networks are built under Keras' mixed policy (weights in fp32, matmuls and convolutions in
bf16 or fp16); the normalisation statistics, the Fourier features of the noise level and the
attention softmax stay in fp32 (their layers say so), and the score wrapper returns fp32.  The
SDE coefficients, the loss, the ODE state, the prior's log-density and the EMA never leave fp32.
fp16 training scales the loss dynamically (``optim.adam``).
"""
from __future__ import annotations

import contextlib

import keras

POLICIES = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
FP32 = "float32"            # the dtype of the layers that stay in fp32 under a mixed policy


@contextlib.contextmanager
def policy(precision: str):
    """Build layers under the Keras dtype policy of ``precision``; the previous policy is restored
    on exit (layers keep the policy they were built with)."""
    if precision not in POLICIES:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(POLICIES)}")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(POLICIES[precision])
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)
