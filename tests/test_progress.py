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


def test_an_evaluation_batch_reports_its_network_evaluations_as_it_solves(glow_run, capsys, monkeypatch, tmp_path):
    """Within one ODE batch the evaluation writes the network evaluations so far, the solver's t and
    the seconds (every 5 s; here at every call), and the result is the one without the callback."""
    from shortdiff_tf import progress
    from shortdiff_tf.app.evaluate import evaluate_run
    kw = dict(num_examples=2, batch_size=2, rtol=1e-2, atol=1e-2, elbo_draws=1, with_elbo=False)
    quiet = evaluate_run(glow_run[0], progress=False, store_dir=tmp_path / "quiet", **kw)
    monkeypatch.setattr(progress.BatchTicker, "EVERY", 0.0)
    loud = evaluate_run(glow_run[0], progress=True, store_dir=tmp_path / "loud", **kw)
    lines = [line for line in capsys.readouterr().err.splitlines() if "network evaluations" in line]
    assert lines and lines[0].startswith("  pass 1, examples 1-2 of 2: 1 network evaluations, t = ")
    counts = [int(line.split(": ")[1].split()[0]) for line in lines]
    assert counts == list(range(1, len(counts) + 1)) and counts[-1] >= loud["nfe_mean"]
    assert loud["likelihood"]["bpd"] == pytest.approx(quiet["likelihood"]["bpd"], rel=1e-6)
