"""The progress line's ETA."""
import io
import math

import pytest

from shortdiff_tf.progress import Progress


def test_the_eta_leaves_out_the_first_traced_interval():
    """The first interval holds the tracing (50 s here); the ETA is the median time per step of the
    later intervals (0.1 s) times the steps left, 0 at the end, and unknown until it can be timed."""
    bar = Progress(100, 0, stream=io.StringIO())
    bar.marks = [(0, 0.0), (10, 50.0), (20, 51.0), (30, 52.0)]
    assert bar.eta(30) == pytest.approx(7.0) and bar.eta(100) == 0.0
    fresh = Progress(100, 0, stream=io.StringIO())
    fresh.update(10)
    assert math.isnan(fresh.eta(10))
