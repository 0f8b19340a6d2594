"""The rule of ``choose-T`` (the docstring of ``choose_T``): T passes when its quality cannot be
told from being within the tolerance of the best searched T's, by a one-sided 5% test on the
paired differences (bits/dim, the ELBO) or on both errors (FID, KID); T* is the smallest passing T."""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import numpy as np

from shortdiff_tf.stats import Z_ONE_SIDED_5


def verdicts(values: Dict[float, np.ndarray], tolerance: float, z: float = Z_ONE_SIDED_5) -> Tuple[float, dict]:
    """The rule on paired values (module docstring) at every T: -> (T_best, {T: mean, difference,
    its standard error and whether T passes}); ``values`` maps T to per-image values of the same
    images (lower is better)."""
    means = {T: float(np.mean(b)) for T, b in values.items()}
    best = min(means, key=means.get)
    out = {}
    for T, b in values.items():
        d = np.asarray(b, np.float64) - np.asarray(values[best], np.float64)
        sem = float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else 0.0
        m = float(d.mean())
        out[T] = {"value": means[T], "difference": m, "difference_sem": sem, "passes": m - z * sem <= tolerance}
    return best, out


def verdicts_unpaired(estimates: Dict[float, Tuple[float, float]], tolerance: float, relative: bool = True,
                      z: float = Z_ONE_SIDED_5) -> Tuple[float, dict]:
    """The rule on unpaired (value, standard error) at every T: the difference from the best with
    both errors; ``relative``: the tolerance is a fraction of the best value."""
    best = min(estimates, key=lambda T: estimates[T][0])
    m_best, s_best = estimates[best]
    allowed = tolerance * abs(m_best) if relative else tolerance
    out = {}
    for T, (m, s) in estimates.items():
        sem = 0.0 if T == best else math.hypot(s, s_best)
        out[T] = {"value": m, "value_sem": s, "difference": m - m_best, "difference_sem": sem,
                  "passes": (m - m_best) - z * sem <= allowed}
    return best, out


def chosen(verdict: dict) -> float:
    """T*: the smallest passing T."""
    return min(T for T, v in verdict.items() if v["passes"])


def next_T(verdict: dict) -> Optional[float]:
    """The bisection point between T* and the largest failing T below it, or None."""
    star = chosen(verdict)
    below = [T for T, v in verdict.items() if not v["passes"] and T < star]
    return round((max(below) + star) / 2, 6) if below else None
