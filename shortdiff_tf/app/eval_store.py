"""Per-batch results of an evaluation, kept under the run directory as they finish, so that a
killed evaluation resumes where it stopped and gives the summary an uninterrupted one gives.

    RUN/evaluations/<key>/settings.json          what was asked (the key is its hash)
    RUN/evaluations/<key>/r<repeat>-b<start>.npz  one PF-ODE batch: x_T, delta log p, NFE

Every random draw of a batch is a function of (seed, repeat, batch start), so a stored batch and
a recomputed one are the same numbers.  The prior's log-density at x_T is not stored but
recomputed on loading, so a refitted prior is never scored from a stale file.  Files are
written atomically; the directory is locked while an evaluation runs in it.
"""
from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from shortdiff_tf import likelihood
from shortdiff_tf.files import atomic_write, atomic_write_json

FIELDS = ("x_T", "delta_logp")


class EvalStore:
    """The batches of one evaluation under ``root`` (RUN/evaluations, or ``--store DIR``)."""

    def __init__(self, root, settings: dict, log=print):
        text = json.dumps(settings, sort_keys=True)
        self.settings, self.log = settings, log
        self.dir = Path(root) / hashlib.sha256(text.encode()).hexdigest()[:16]

    def open(self) -> "EvalStore":
        atomic_write_json(self.dir / "settings.json", self.settings)
        return self

    def _path(self, repeat: int, start: int) -> Path:
        return self.dir / f"r{repeat}-b{start:06d}.npz"

    def load(self, repeat: int, start: int, est: likelihood.LikelihoodEstimator
             ) -> Optional[likelihood.LogLikelihood]:
        """The stored batch as ``est`` would return it, or None; a damaged or empty file is reported
        and counts as missing (it is recomputed and rewritten)."""
        path = self._path(repeat, start)
        if not path.exists():
            return None
        try:
            with np.load(path) as f:
                a = {k: tf.constant(f[k]) for k in FIELDS}
                nfe = int(f["nfe"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
            self.log(f"{path} is damaged ({type(err).__name__}); computing that batch again")
            return None
        prior_logp = tf.cast(est.prior.log_prob(a["x_T"]), a["delta_logp"].dtype)
        return likelihood.LogLikelihood(prior_logp + a["delta_logp"], prior_logp, a["delta_logp"], a["x_T"],
                                        nfe, est.sde.T, est.sde.eps, est.rtol, est.atol, est.divergence)

    def save(self, repeat: int, start: int, ll: likelihood.LogLikelihood) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, nfe=ll.nfe, **{k: getattr(ll, k).numpy() for k in FIELDS})
        atomic_write(self._path(repeat, start), lambda p: p.write_bytes(buffer.getvalue()))
