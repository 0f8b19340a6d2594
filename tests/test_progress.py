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


def test_sampling_progress_counts_every_evaluation_and_leaves_the_samples_alone():
    """The host callback sees each score evaluation (the planned NFE of every fixed-step sampler,
    the reported NFE of the adaptive ODE), its last line shows the total, and the samples are the
    same as without it."""
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf import samplers, sde as sde_lib, toy
    from shortdiff_tf.app.sample import Ticker
    sde = sde_lib.get_sde("vp", T=0.5, eps=1e-3)
    diff = toy.ToyDiffusion(toy.get_toy("gmm1d"), sde)
    for name, steps in (("em", 7), ("pc", 4), ("heun", 3), ("dpm2m", 5), ("ode", None)):
        cfg = samplers.preset(name, steps, rtol=1e-3, atol=1e-3)
        plain = samplers.Sampler(sde, diff.score, diff.marginal(0.5), cfg)
        stream = io.StringIO()
        ticker = Ticker(sde.T, stream=stream, every=0.0)
        watched = samplers.Sampler(sde, samplers.reporting(diff.score, ticker), diff.marginal(0.5), cfg)
        ticker.expect(watched.planned_nfe(), watched.sde.eps)
        a, b = plain(16, 3), watched(16, 3)
        assert ticker.nfe == b.nfe == a.nfe and (plain.planned_nfe() in (None, a.nfe)), name
        np.testing.assert_array_equal(a.x.numpy(), b.x.numpy())
        last = stream.getvalue().splitlines()[-1]
        assert (f"NFE {a.nfe}" in last) if name == "ode" else (f"{a.nfe}/{a.nfe} NFE" in last), (name, last)
        assert tf.reduce_all(tf.math.is_finite(b.x))
