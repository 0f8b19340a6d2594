"""How well a fitted prior nu_phi matches the distribution its sampler starts from, measured on
held-out draws, and whether to use it (and at which sampling temperature).

The reference points are held out: x_0 from held-out data (the test split when there is one, else
the training data with a fresh dequantisation), pushed to T with seeds the fit never uses, by

  target "sde"  x_T = m_T x_0 + sqrt(s_T) e, e fresh: draws of p(x, T), what the SDE samplers
                start from (and what an "sde"-target prior is fitted to)
  target "ode"  z = Phi_theta(x_0), the PF-ODE image of x_0 at T under the score model: what the
                probability-flow ODE maps back to the data, so what the ODE samplers need at T
                (the paper's (S); what an "ode"-target prior is fitted to)

  NLL         -log nu_phi(x) / D and -log p_noise(x) / D on the same reference points x;
              their paired difference (nats/dim) with its standard error
  RMS         per-sample root mean square sqrt(|x|^2 / D): quantiles 5, 50, 95, 99% of samples
              of nu_phi, of p_noise and of the reference points
  tails       the fraction of values beyond +-4
  distance    sliced Wasserstein-2 between prior samples and reference points (random unit
              directions; per direction the W2 of the sorted projections), with the distance
              between two independent sets of reference points as its noise floor

Verdict.  nu_phi is used when its held-out NLL is below p_noise's by more than 1.645 standard
errors of the paired difference AND its samples are no further from the reference points than
p_noise's (sliced W2, within the noise floor); otherwise p_noise, and the reason is stated.  A
prior that fits its training draws but is over-dispersed (samples the ODE samplers do not
forgive) fails the second test even when it wins the first.

Temperature (``temperature``).  Samples x = Glow(tau z), z ~ N(0, I).  tau is chosen from
``TEMPERATURES`` by the sliced W2 to one half of the reference points (samples of one seed), and
kept only when a fresh half (other reference points, samples of another seed) confirms that it is
closer than tau = 1; otherwise tau = 1.  Measured, never assumed.
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
TEMPERATURES = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0, 1.05, 1.1, 1.2)
AGAINST = {"sde": "p(x, T)", "ode": "the PF-ODE image of the held-out data at T"}


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


def reference_points(sde, x0: np.ndarray, target: str = "sde", score_fn=None, seed: int = HELD_OUT_SEED,
                     rtol: float = 1e-5, atol: float = 1e-5) -> np.ndarray:
    """The held-out reference points of ``target`` at sde.T (module docstring) for held-out x_0
    (``rtol``, ``atol``: the PF-ODE's tolerances)."""
    if target == "sde":
        return held_out_x_T(sde, x0, seed)
    if score_fn is None:
        raise ValueError("the ode target's reference points need the score model (score_fn)")
    from shortdiff_tf.prior_fit.targets import ode_targets
    return ode_targets(sde, score_fn, x0, seed, rtol=rtol, atol=atol)


def held_out_subset(x0_held_out: np.ndarray, num: int = 512, seed: int = HELD_OUT_SEED) -> np.ndarray:
    """An even number (at most ``num``) of held-out x_0 in a seeded random order."""
    n = min(num, len(x0_held_out) // 2 * 2)
    if n < 4:
        raise ValueError(f"the calibration needs at least 4 held-out examples; got {len(x0_held_out)}")
    return x0_held_out[np.random.RandomState(seed).permutation(len(x0_held_out))[:n]]


def calibrate(sde, prior, x0_held_out: np.ndarray, num: int = 512, held_out: str = "test split",
              seed: int = HELD_OUT_SEED, target: str = "sde", score_fn=None) -> dict:
    """The module docstring's measurements and verdict for ``prior`` at sde.T against ``target``'s
    reference points (``num`` held-out x_0; ``held_out`` says what x_0 is)."""
    points = reference_points(sde, held_out_subset(x0_held_out, num, seed), target, score_fn, seed)
    return calibrate_on(points, prior, sde.prior(points.shape[1:]), held_out, target, seed) | {"T": float(sde.T)}


def calibrate_on(points: np.ndarray, prior, noise, held_out: str = "test split", target: str = "sde",
                 seed: int = HELD_OUT_SEED) -> dict:
    """The measurements and verdict of ``prior`` against p_noise (``noise``) on held-out reference
    points of ``target`` (an even number: half are the truth the samples are compared with, half
    the noise floor's second set)."""
    n, dim = len(points), math.prod(points.shape[1:])
    nll = {name: -_log_prob(p, points) / dim for name, p in (("aux", prior), ("noise", noise))}
    gain = Estimate.of(nll["noise"] - nll["aux"])                # > 0: nu_phi is better
    half = n // 2
    draws = {name: _sample(p, half, [seed, k + 2]) for k, (name, p) in enumerate((("aux", prior), ("noise", noise)))}
    truth, other = points[:half], points[half:2 * half]
    distance = {name: sliced_wasserstein(d, truth) for name, d in draws.items()}
    floor = sliced_wasserstein(other, truth)
    better_nll = gain.mean - Z_ONE_SIDED_5 * gain.sem > 0
    not_worse = distance["aux"] <= max(distance["noise"], floor)
    reason = ("its held-out NLL is lower and its samples are no further from the reference than p_noise's"
              if better_nll and not_worse else "its held-out NLL is not lower than p_noise's" if not better_nll
              else "its samples are further from the reference than p_noise's")
    return {"num_held_out": n, "held_out": held_out, "target": target, "against": AGAINST[target],
            "nll_per_dim": {k: float(v.mean()) for k, v in nll.items()},
            "nll_gain_per_dim": gain.mean, "nll_gain_sem": gain.sem,
            "samples": {name: sample_stats(d) for name, d in draws.items()}, "reference": sample_stats(truth),
            "sliced_w2": {**distance, "floor": floor},
            "use": "aux" if better_nll and not_worse else "noise", "reason": reason}


def temperature(prior, points: np.ndarray, grid=TEMPERATURES, seed: int = HELD_OUT_SEED) -> dict:
    """The sampling temperature of ``prior`` for the reference ``points`` (module docstring): chosen
    on the first half, confirmed against tau = 1 on the second half with fresh samples."""
    half = len(points) // 2
    select, confirm = points[:half], points[half:2 * half]
    w2 = lambda tau, truth, k: sliced_wasserstein(_sample(prior, half, [seed, k], tau), truth)
    selection = {f"{tau:g}": w2(tau, select, 10) for tau in grid}
    best = float(min(grid, key=lambda tau: selection[f"{tau:g}"]))
    checked = {"1": w2(1.0, confirm, 11)} | ({} if best == 1.0 else {f"{best:g}": w2(best, confirm, 11)})
    keep = best != 1.0 and checked[f"{best:g}"] < checked["1"]
    return {"grid": list(grid), "sliced_w2_selection": selection, "selected": best, "sliced_w2_confirmation": checked,
            "use": best if keep else 1.0,
            "reason": ("tau = 1 is the closest on the selection half" if best == 1.0 else
                       f"tau = {best:g} is closer than tau = 1 on the fresh half too" if keep else
                       f"tau = {best:g} was not closer than tau = 1 on the fresh half")}


def _log_prob(prior, x: np.ndarray, batch: int = BATCH) -> np.ndarray:
    return np.concatenate([np.asarray(prior.log_prob(tf.constant(x[i: i + batch])), np.float64)
                           for i in range(0, len(x), batch)])


def _sample(prior, n: int, seed, temperature: float = 1.0, batch: int = BATCH) -> np.ndarray:
    """n samples, ``batch`` a call (sample i is the same whatever the batch: ``first``)."""
    kw = {} if temperature == 1.0 else {"temperature": temperature}
    return np.concatenate([np.asarray(prior.sample(min(batch, n - i), tf.constant(seed), first=i, **kw))
                           for i in range(0, n, batch)])


def summary_line(c: dict) -> str:
    """One line for the terminal."""
    q = lambda s: s["rms_quantiles"]
    mine, ref = q(c["samples"]["aux"]), q(c["reference"])
    what = "x_T" if c["target"] == "sde" else "PF-ODE images"
    return (f"held-out {what} ({c['num_held_out']}, {c['held_out']}): NLL {c['nll_per_dim']['aux']:.4f} nats/dim "
            f"against p_noise's {c['nll_per_dim']['noise']:.4f} (gain {c['nll_gain_per_dim']:+.4f} ± "
            f"{c['nll_gain_sem']:.4f}); RMS median/p99 {mine['0.5']:.3f}/{mine['0.99']:.3f} against the reference's "
            f"{ref['0.5']:.3f}/{ref['0.99']:.3f}; sliced W2 {c['sliced_w2']['aux']:.4f} (p_noise "
            f"{c['sliced_w2']['noise']:.4f}, floor {c['sliced_w2']['floor']:.4f}): use {c['use']} ({c['reason']})")


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
