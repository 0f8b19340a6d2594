"""Sample quality without downloads: Fréchet distance (FID) and kernel distance (KID) on the
features of an injectable extractor.

  FD(N(mu1, C1), N(mu2, C2)) = |mu1 - mu2|² + tr C1 + tr C2 - 2 tr (C1^{1/2} C2 C1^{1/2})^{1/2}
  KID = unbiased MMD² with the cubic kernel k(a, b) = (a·b / d + 1)³, averaged over subsets
        (Bińkowski et al. 2018)

An extractor is any callable uint8 images [N, H, W, C] -> float features [N, F] with a ``name``;
the three of ``shortdiff_tf.extractors`` (the standard FID network, the offline classifier, Keras'
InceptionV3) are ``TensorExtractor``s, whose features a ``tf.distribute`` strategy computes a
share of each batch per replica.  Reference statistics use the original FID code's ``.npz``
format (``mu``, ``sigma``: ``save_stats``, ``load_stats``).

FIDs from different extractors or sample counts are not comparable, so every report carries both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from shortdiff_tf.extractors import TensorExtractor

Extractor = Callable[[np.ndarray], np.ndarray]


# ---- the two distances --------------------------------------------------------------------
def frechet_distance(mu1, cov1, mu2, cov2) -> float:
    """Fréchet (2-Wasserstein) distance² between two Gaussians; the matrix square root is taken
    through the symmetric form C1^{1/2} C2 C1^{1/2}, whose eigenvalues are real and >= 0."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    root1 = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    trace_cross = np.sum(np.sqrt(np.clip(cross, 0.0, None)))
    return float(np.sum((mu1 - mu2) ** 2) + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_cross)


def _psd_sqrt(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((c + c.T) / 2.0)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_stats(features: np.ndarray):
    """Mean and (unbiased) covariance of features [N, F]."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features must be [N >= 2, F]; got shape {f.shape}")
    return f.mean(0), np.atleast_2d(np.cov(f, rowvar=False))


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    return frechet_distance(*gaussian_stats(f1), *gaussian_stats(f2))


def kernel_distance(f1: np.ndarray, f2: np.ndarray, subsets: int = 10, subset_size: int = 1000,
                    seed: int = 0):
    """KID: unbiased MMD² with the cubic polynomial kernel, mean and std over random subsets
    (of half the smaller set when that is below ``subset_size``, so that the subsets differ)."""
    f1, f2 = np.asarray(f1, np.float64), np.asarray(f2, np.float64)
    m = min(subset_size, len(f1) // 2, len(f2) // 2)
    if m < 2:
        raise ValueError("KID needs at least 2 samples on each side")
    rng = np.random.RandomState(seed)
    vals = [_mmd2(f1[rng.choice(len(f1), m, replace=False)], f2[rng.choice(len(f2), m, replace=False)])
            for _ in range(subsets)]
    return float(np.mean(vals)), float(np.std(vals))


def _mmd2(a: np.ndarray, b: np.ndarray) -> float:
    d, m = a.shape[1], a.shape[0]
    kaa, kbb, kab = ((a @ a.T) / d + 1) ** 3, ((b @ b.T) / d + 1) ** 3, ((a @ b.T) / d + 1) ** 3
    off = lambda k: (k.sum() - np.trace(k)) / (m * (m - 1))
    return float(off(kaa) + off(kbb) - 2.0 * kab.mean())


def sample_quality(samples: np.ndarray, reference_features: np.ndarray, extractor: Extractor,
                   batch_size: int = 256, strategy=None) -> dict:
    """FID and KID of uint8 ``samples`` against the reference images' features [M, F] (``features``
    of the same extractor, computed once for every set of samples scored against them), with what
    they rest on (the samples' features split over the replicas of ``strategy``)."""
    f_s = features(extractor, samples, batch_size, strategy)
    if f_s.shape[1] != reference_features.shape[1]:
        raise ValueError(f"the reference has {reference_features.shape[1]} features, the extractor gives "
                         f"{f_s.shape[1]}; compute them with the same network")
    kid, kid_std = kernel_distance(f_s, reference_features)
    return {"fid": fid_from_features(f_s, reference_features), "kid": kid, "kid_std": kid_std,
            "num_samples": len(samples), "num_reference": len(reference_features),
            "extractor": getattr(extractor, "name", type(extractor).__name__), "feature_dim": int(f_s.shape[1])}


def features(extractor: Extractor, images: np.ndarray, batch_size: int = 256, strategy=None) -> np.ndarray:
    """Features of ``images`` [N, H, W, C] in batches of ``batch_size``.  With a multi-replica
    ``strategy`` and a ``TensorExtractor``, each batch is split over the replicas (padded with its
    last image to a multiple of them): the features one device gives, per image."""
    from shortdiff_tf import distribute
    strategy = distribute.multi_replica(strategy) if isinstance(extractor, TensorExtractor) else None
    return np.concatenate([_batch_features(extractor, images[i: i + batch_size], strategy)
                           for i in range(0, len(images), batch_size)], 0)


def _batch_features(extractor: Extractor, batch: np.ndarray, strategy) -> np.ndarray:
    """One batch's features: on one device, or a share per replica of ``strategy``."""
    import tensorflow as tf
    from shortdiff_tf import distribute
    if strategy is None:
        return np.asarray(extractor(batch))
    extractor.check(batch)
    n, r = len(batch), distribute.replica_count(strategy)
    padded = distribute.pad_rows(np.asarray(batch, np.float32), distribute.rounded_up(n, strategy))
    out = distribute.run_per_replica(strategy, lambda x: (extractor.tensor_fn(x),),
                                     [(share,) for share in tf.split(padded, r)])
    return np.concatenate([np.asarray(o[0], np.float64) for o in out])[:n]


def save_stats(path, features: np.ndarray) -> Path:
    """Reference statistics of features [N, F] in the original FID code's format (mu, sigma)."""
    from shortdiff_tf.files import atomic_write
    mu, sigma = gaussian_stats(features)

    def write(tmp: Path):
        with open(tmp, "wb") as f:                          # a file object: np.savez adds no suffix
            np.savez(f, mu=mu, sigma=sigma, num_examples=len(features))

    return atomic_write(Path(path), write)


def load_stats(path):
    """-> (mu [F], sigma [F, F]) from an .npz with ``mu`` and ``sigma`` (the original FID code's)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FID statistics {path} not found; give an .npz with mu and sigma")
    try:
        with np.load(path) as f:
            mu, sigma = np.asarray(f["mu"], np.float64), np.asarray(f["sigma"], np.float64)
    except (OSError, ValueError, KeyError, EOFError):
        raise ValueError(f"{path} is not an .npz with arrays mu and sigma (the FID statistics format)") from None
    if mu.ndim != 1 or sigma.shape != (len(mu), len(mu)) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise ValueError(f"{path}: mu must be [F] and sigma [F, F], finite; got {list(mu.shape)} and "
                         f"{list(sigma.shape)}")
    return mu, sigma


def fid_against_stats(samples: np.ndarray, stats, extractor: Extractor, batch_size: int = 256,
                      strategy=None) -> dict:
    """FID of uint8 ``samples`` against reference statistics (mu, sigma) of the same extractor."""
    f_s = features(extractor, samples, batch_size, strategy)
    mu, sigma = stats
    if f_s.shape[1] != len(mu):
        raise ValueError(f"the statistics have {len(mu)} features, the extractor gives {f_s.shape[1]}; "
                         f"compute them with the same network")
    return {"fid": frechet_distance(*gaussian_stats(f_s), mu, sigma), "num_samples": len(samples),
            "extractor": getattr(extractor, "name", type(extractor).__name__), "feature_dim": int(f_s.shape[1])}
