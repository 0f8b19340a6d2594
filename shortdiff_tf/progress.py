"""A dependency-free progress line: redrawn in place on a terminal, a line per update otherwise.

The ETA is the median time per step over the recent updates times the steps left.  The first
interval is left out (``skip_first``): it holds the tracing and graph optimisation of the
compiled step, which would make the first estimates far too long.  Where each update is a long
unit of work (an evaluation's ODE batch) the first interval is kept, so the ETA is known after it.
"""
from __future__ import annotations

import statistics
import sys
import time


class Progress:
    RECENT = 10

    def __init__(self, total: int, start: int = 0, enabled: bool = True, stream=None, unit: str = "",
                 show_eta: bool = True, skip_first: bool = True):
        self.total, self.start, self.enabled, self.unit, self.show_eta = total, start, enabled, unit, show_eta
        self.skip_first = skip_first
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.marks = [(start, time.perf_counter())]

    def eta(self, step: int) -> float:
        """Seconds left, or NaN until a step (after the first, traced, interval with ``skip_first``)
        has been timed."""
        if step >= self.total:
            return 0.0
        k = int(self.skip_first)
        per_step = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(self.marks[k:], self.marks[k + 1:]) if s1 > s0]
        if not per_step:
            return float("nan")
        return statistics.median(per_step[-self.RECENT:]) * (self.total - step)

    def update(self, step: int, text: str = ""):
        self.marks.append((step, time.perf_counter()))
        if not self.enabled:
            return
        frac = (step - self.start) / max(self.total - self.start, 1)
        eta = self.eta(step)
        bar = "#" * int(24 * frac)
        left = "eta ?" if eta != eta or not self.show_eta else f"eta {eta:.0f}s"
        line = f"[{bar:<24}] {step}/{self.total}{self.unit}  {text}  {left}"
        self.stream.write(("\r" + line) if self.tty else (line + "\n"))
        self.stream.flush()

    def close(self):
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()


class BatchTicker:
    """Progress inside one long unit of work (an evaluation's ODE batch): the solver reports each
    network evaluation (``ode.observed``: the NFE so far and the solver's t), and a line is
    written at most every ``every`` seconds with those, the seconds so far and, once a batch has
    been solved (``finish``), an ETA for the whole evaluation: the median seconds of the solved
    batches times the batches left, less the current batch's seconds so far."""

    EVERY = 5.0

    def __init__(self, enabled: bool = True, stream=None, every: float = None):
        self.enabled, self.stream = enabled, stream or sys.stderr
        self.every = self.EVERY if every is None else every
        self.solved = []                              # seconds of each solved batch
        self.start("")

    def start(self, label: str, batches_after: int = 0) -> None:
        """A new batch to solve: its label and how many batches follow it."""
        self.label, self.nfe, self.t0 = label, 0, time.perf_counter()
        self.last, self.batches_after = self.t0, batches_after

    def finish(self) -> None:
        self.solved.append(time.perf_counter() - self.t0)

    def eta(self, now: float) -> float:
        """Seconds left in the evaluation, or NaN before a batch was solved."""
        if not self.solved:
            return float("nan")
        per = statistics.median(self.solved)
        return max(per - (now - self.t0), 0.0) + self.batches_after * per

    def __call__(self, nfe: int, t: float) -> None:
        self.nfe = max(self.nfe, nfe)                 # replicas report their own counts
        now = time.perf_counter()
        if self.enabled and now - self.last >= self.every:
            self.last = now
            eta = self.eta(now)
            left = "eta ?" if eta != eta else f"eta {eta:.0f}s"
            self.stream.write(f"  {self.label}: NFE {self.nfe}, t = {t:.3g}, {now - self.t0:.0f}s  {left}\n")
            self.stream.flush()
