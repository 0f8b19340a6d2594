"""Across seeds: the median and the central 95% band of every reported quantity at each T
(paper Fig. 1 plots the median and the band over seeds), and the grid optimum of the ELBO."""
from __future__ import annotations

from collections import defaultdict

import numpy as np

BAND = (2.5, 97.5)


def by_T(points: list) -> dict:
    """{T: {quantity: {"median", "lo", "hi", "values"}}} for every numeric quantity of the points.
    With few seeds the band is the range spanned by them (np.percentile interpolates)."""
    grouped = defaultdict(list)
    for p in points:
        grouped[float(p["T"])].append(p)
    out = {}
    for T in sorted(grouped):
        rows = grouped[T]
        keys = [k for k, v in rows[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)
                and k not in ("T", "seed")]
        out[T] = {k: _stats([r[k] for r in rows]) for k in keys}
        out[T]["num_seeds"] = len(rows)
    return out


def _stats(values) -> dict:
    v = np.asarray(values, np.float64)
    lo, hi = np.percentile(v, BAND)
    return {"median": float(np.median(v)), "lo": float(lo), "hi": float(hi), "values": v.tolist()}


def grid_optimum(summary: dict, key: str = "elbo_noise", best: str = "max") -> dict:
    """The grid T with the largest (``best="max"``) or smallest median ``key``."""
    Ts = sorted(summary)
    medians = [summary[T][key]["median"] for T in Ts]
    i = int(np.argmax(medians) if best == "max" else np.argmin(medians))
    return {"quantity": key, "best": best, "T": Ts[i], "value": medians[i]}


def curve(summary: dict, key: str):
    """(Ts, median, lo, hi) arrays of one quantity, for plotting."""
    Ts = sorted(T for T in summary if key in summary[T])
    pick = lambda s: np.array([summary[T][key][s] for T in Ts])
    return np.array(Ts), pick("median"), pick("lo"), pick("hi")
