"""Monte Carlo means with their standard errors.

For n draws v_i, the standard error of the mean is sem = sd(v) / sqrt(n), with the unbiased
sample standard deviation sd(v) = sqrt(sum (v_i - mean)^2 / (n - 1)); it is 0 for one draw.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np


Z_ONE_SIDED_5 = 1.645       # the one-sided 5% normal quantile of every "cannot reject" rule here


def standard_error(values) -> float:
    """sd(v) / sqrt(n) over all entries of ``values`` (an array or a tensor)."""
    v = np.asarray(values, np.float64).reshape(-1)
    n = v.size
    if n < 2:
        return 0.0
    return float(v.std(ddof=1) / math.sqrt(n))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """A Monte Carlo mean and its standard error."""
    mean: float
    sem: float

    @staticmethod
    def of(values) -> "Estimate":
        v = np.asarray(values, np.float64).reshape(-1)
        return Estimate(float(v.mean()), standard_error(v))
