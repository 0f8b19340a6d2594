"""What nu_phi is fitted to at T (docs/METHOD.md section 4).

  target "sde":  x_T = m_T x_0 + sqrt(s_T) e, fresh e every batch     max_phi E log nu_phi(x_T)
  target "ode":  z = Phi_theta(x_0), the PF-ODE image of the data at T  max_phi E log nu_phi(z)
                 (our reading of the paper's (S) rows: the exact likelihood's prior term)

Images are dequantised first, x_0 = LOW + RANGE (k + u) / 256.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from shortdiff_tf import pixels, flow


def ode_targets(sde, score_fn, array: np.ndarray, seed: int, batch: int = 256, rtol: float = 1e-5,
                atol: float = 1e-5) -> np.ndarray:
    """z = Phi_theta(x_0): the PF-ODE from eps to T applied to (dequantised) data, in batches."""
    push = tf.function(lambda x: flow.push(sde, score_fn, x, sde.eps, sde.T, rtol, atol)[0],  # one trace, every batch
                       input_signature=[tf.TensorSpec((None,) + array.shape[1:], tf.float32)])
    out = []
    for i in range(0, len(array), batch):
        chunk = array[i: i + batch]
        x = pixels.to_model_space(chunk, tf.constant([seed, i]))
        out.append(push(x).numpy())
    return np.concatenate(out)


def diffused_sample(sde, array: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n points x_T = m_T x_0 + sqrt(s_T) e (x_0 drawn with replacement, dequantised)."""
    idx = np.random.RandomState(seed).randint(0, len(array), n)
    x0 = pixels.to_model_space(array[idx], tf.constant([seed, 1]))
    e = tf.random.stateless_normal(tf.shape(x0), [seed, 2])
    return sde.perturb(x0, tf.fill([n], sde.T), e).numpy()
