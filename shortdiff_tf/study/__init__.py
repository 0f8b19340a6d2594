"""The diffusion-time study (paper Sec. 2-3, App. H; docs/METHOD.md sections 3 and 4).

``run.run_study`` sweeps T (and seeds): on toy mixtures it trains a small score model per point
and reports every term of the ELBO decomposition against the exact quantities; on images it
reuses one score model and fits a new prior per T.  ``optimal_T`` ascends the ELBO in T.
"""
from shortdiff_tf.study.config import DEFAULT_GRID, StudyConfig
from shortdiff_tf.study.run import run_study

__all__ = ["DEFAULT_GRID", "StudyConfig", "run_study"]
