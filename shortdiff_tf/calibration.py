"""How well a fitted prior nu_phi matches p(x, T), measured on held-out draws, and whether to use it.

Held-out x_T = m_T x_0 + sqrt(s_T) e: x_0 from held-out data (the test split when there is one,
else the training data with a fresh dequantisation) and e fresh, from seeds the fit never uses.

  NLL         -log nu_phi(x_T) / D and -log p_noise(x_T) / D on the same x_T; their paired
              difference (nats/dim) with its standard error
  RMS         per-sample root mean square sqrt(|x|^2 / D): quantiles 5, 50, 95, 99% of samples
              of nu_phi, of p_noise and of the true x_T
  tails       the fraction of values beyond +-4
  distance    sliced Wasserstein-2 between prior samples and true x_T (random unit directions;
              per direction the W2 of the sorted projections), with the distance between two
              independent sets of true x_T as its noise floor

Verdict.  nu_phi is used when its held-out NLL is below p_noise's by more than 1.645 standard
errors of the paired difference AND its samples are no further from the true x_T than p_noise's
(sliced W2, within the noise floor); otherwise p_noise, and the reason is stated.  A prior that
fits its training draws but is over-dispersed (samples the ODE samplers do not forgive) fails the
second test even when it wins the first.
"""
from __future__ import annotations

import math
import numpy as np
import tensorflow as tf

from shortdiff_tf import pixels
from shortdiff_tf.stats import Z_ONE_SIDED_5, Estimate

QUANTILES = (0.05, 0.5, 0.95, 0.99)
TAIL = 4.0
HELD_OUT_SEED = 0x5EED_CA1           # the held-out draws' seed stream, apart from the fit's
BATCH = 128                          # x_T per prior call


def held_out_x_T(sde, x0: np.ndarray, seed: int = HELD_OUT_SEED) -> np.ndarray:
    """x_T = m_T x_0 + sqrt(s_T) e for held-out x_0 (uint8 images are dequantised first)."""
    x = pixels.to_model_space(x0, tf.constant([seed, 0])) if x0.dtype == np.uint8 else tf.constant(x0, tf.float32)
    e = tf.random.stateless_normal(tf.shape(x), [seed, 1])
    return sde.perturb(x, tf.fill(tf.shape(x)[:1], tf.cast(sde.T, x.dtype)), e).numpy()


def rms(x: np.ndarray) -> np.ndarray:
    """Per-sample sqrt(|x|^2 / D)."""
    flat = np.asarray(x, np.float64).reshape(len(x), -1)
    return np.sqrt(np.mean(flat ** 2, 1))


def sample_stats(x: np.ndarray) -> dict:
    r = rms(x)
    return {"rms_quantiles": {f"{q:g}": float(np.quantile(r, q)) for q in QUANTILES},
            "beyond_4": float(np.mean(np.abs(np.asarray(x)) > TAIL))}


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, directions: int = 256, seed: int = 0) -> float:
    """Sliced W2 between two equal-sized sets: sqrt of the mean over random unit directions of the
    squared W2 of the 1-D projections (sorted and matched)."""
    a, b = (np.asarray(v, np.float64).reshape(len(v), -1) for v in (a, b))
    if len(a) != len(b):
        raise ValueError(f"sliced Wasserstein needs sets of one size; got {len(a)} and {len(b)}")
    w = np.random.RandomState(seed).standard_normal((a.shape[1], directions))
    w /= np.linalg.norm(w, axis=0, keepdims=True)
    pa, pb = np.sort(a @ w, 0), np.sort(b @ w, 0)
    return float(np.sqrt(np.mean((pa - pb) ** 2)))


def calibrate(sde, prior, x0_held_out: np.ndarray, num: int = 512, held_out: str = "test split",
              seed: int = HELD_OUT_SEED) -> dict:
    """The module docstring's measurements and verdict for ``prior`` at sde.T (``num`` held-out
    draws; ``held_out`` says what x_0 is)."""
    n = min(num, len(x0_held_out) // 2 * 2)
    if n < 4:
        raise ValueError(f"the calibration needs at least 4 held-out examples; got {len(x0_held_out)}")
    x0 = x0_held_out[np.random.RandomState(seed).permutation(len(x0_held_out))[:n]]
    x_T = held_out_x_T(sde, x0, seed)
    noise = sde.prior(x_T.shape[1:])
    dim = math.prod(x_T.shape[1:])
    nll = {name: -_log_prob(p, x_T) / dim for name, p in (("aux", prior), ("noise", noise))}
    gain = Estimate.of(nll["noise"] - nll["aux"])                # > 0: nu_phi is better
    half = n // 2
    draws = {name: _sample(p, half, [seed, k + 2]) for k, (name, p) in enumerate((("aux", prior), ("noise", noise)))}
    truth, other = x_T[:half], x_T[half:]
    distance = {name: sliced_wasserstein(d, truth) for name, d in draws.items()}
    floor = sliced_wasserstein(other, truth)
    better_nll = gain.mean - Z_ONE_SIDED_5 * gain.sem > 0
    not_worse = distance["aux"] <= max(distance["noise"], floor)
    reason = ("its held-out NLL is lower and its samples are no further from the true x_T" if better_nll and not_worse
              else "its held-out NLL is not lower than p_noise's" if not better_nll
              else "its samples are further from the true x_T than p_noise's")
    return {"T": float(sde.T), "num_held_out": n, "held_out": held_out, "against": "p(x, T)",
            "nll_per_dim": {k: float(v.mean()) for k, v in nll.items()},
            "nll_gain_per_dim": gain.mean, "nll_gain_sem": gain.sem,
            "samples": {name: sample_stats(d) for name, d in draws.items()}, "true_x_T": sample_stats(truth),
            "sliced_w2": {**distance, "floor": floor},
            "use": "aux" if better_nll and not_worse else "noise", "reason": reason}


def _log_prob(prior, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    return np.concatenate([np.asarray(prior.log_prob(tf.constant(x[i: i + batch])), np.float64)
                           for i in range(0, len(x), batch)])


def _sample(prior, n: int, seed, batch: int = BATCH) -> np.ndarray:
    """n samples, ``batch`` a call (sample i is the same whatever the batch: ``first``)."""
    return np.concatenate([np.asarray(prior.sample(min(batch, n - i), tf.constant(seed), first=i))
                           for i in range(0, n, batch)])


def summary_line(c: dict) -> str:
    """One line for the terminal."""
    q = lambda s: s["rms_quantiles"]
    return (f"held-out x_T ({c['num_held_out']}, {c['held_out']}): NLL {c['nll_per_dim']['aux']:.4f} nats/dim against "
            f"p_noise's {c['nll_per_dim']['noise']:.4f} (gain {c['nll_gain_per_dim']:+.4f} ± {c['nll_gain_sem']:.4f}); "
            f"RMS median/p99 {q(c['samples']['aux'])['0.5']:.3f}/{q(c['samples']['aux'])['0.99']:.3f} against the "
            f"true {q(c['true_x_T'])['0.5']:.3f}/{q(c['true_x_T'])['0.99']:.3f}; sliced W2 {c['sliced_w2']['aux']:.4f} "
            f"(p_noise {c['sliced_w2']['noise']:.4f}, floor {c['sliced_w2']['floor']:.4f}): use {c['use']} ({c['reason']})")


def held_out_images(data_cfg):
    """(x_0 for the calibration, what they are): the held-out split (``data.held_out``), else the
    training data with a fresh dequantisation and noise."""
    from shortdiff_tf import data as data_lib
    name = data_lib.held_out(data_cfg.dataset)
    if name is not None:
        try:
            return data_lib.load(name, "test", data_cfg.data_dir).array, f"{name} test split"
        except (ValueError, FileNotFoundError, OSError):
            pass
    return (data_lib.load(data_cfg.dataset, "train", data_cfg.data_dir).array,
            "training data, fresh dequantisation and noise")
