"""Telling a diverging training run from a noisy one, on the per-step losses.

The rule: the run has diverged when the median loss of ``window`` (5) consecutive steps exceeds
``factor`` (100) times the best the run has shown, the smallest of its first loss and of every
earlier ``window``-step median (and when a loss is not finite).  It is named by the first step
of that window above ``factor`` times the best.  Medians, not single losses: with the likelihood
weighting a single batch's loss may legitimately be thousands of times the typical one
(w g^2 / s_t near eps), while a run that diverges (a learning rate far too large) stays far above
its best for many steps in a row.  The first loss counts, so a run that diverges from its
second step is caught too.
"""
from __future__ import annotations

import dataclasses
import math
import statistics
from typing import List, Optional, Tuple

WINDOW, FACTOR = 5, 100.0


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where the rule fired: the first diverged step, the window's last step, its median, the best."""
    first: int
    last: int
    median: float
    best: float

    def describe(self) -> str:
        if not math.isfinite(self.median):
            return f"the loss is {self.median} at step {self.last}"
        return (f"the loss diverged at step {self.first} (the median of the 5 steps to {self.last} is "
                f"{self.median:.3g}, above {FACTOR:g} x the run's best {self.best:.3g})")


class DivergenceMonitor:
    """Feed it (step, loss) pairs in order; ``add`` returns the first ``Divergence`` it sees."""

    def __init__(self, window: int = WINDOW, factor: float = FACTOR):
        self.window, self.factor = window, factor
        self.recent: List[Tuple[int, float]] = []
        self.best = math.inf

    def add(self, pairs) -> Optional[Divergence]:
        for step, loss in pairs:
            if not math.isfinite(loss):
                return Divergence(step, step, loss, self.best)
            self.best = min(self.best, loss) if math.isinf(self.best) else self.best     # the first loss
            self.recent = (self.recent + [(step, float(loss))])[-self.window:]
            if len(self.recent) < self.window:
                continue
            median = statistics.median(l for _, l in self.recent)
            if median > self.factor * max(self.best, 1e-30):
                first = next(s for s, l in self.recent if l > self.factor * self.best)
                return Divergence(first, step, median, self.best)
            self.best = min(self.best, median)
        return None
