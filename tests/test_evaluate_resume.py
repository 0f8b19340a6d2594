"""Evaluation kept batch by batch under the run directory: a killed evaluation resumes to the
summary an uninterrupted one gives, and --repeats averages passes per example."""
import shutil
from pathlib import Path

import numpy as np
import pytest

KW = dict(num_examples=6, batch_size=2, rtol=1e-2, atol=1e-2, elbo_draws=2, repeats=2)


def _same(a: dict, b: dict):
    for key in ("likelihood", "likelihood_noise", "elbo_noise", "elbo_aux"):
        for name, value in a[key].items():
            assert value == pytest.approx(b[key][name], rel=1e-6, abs=1e-9), (key, name)


def test_a_killed_evaluation_resumes_to_the_uninterrupted_summary_and_repeats_average(glow_run, tmp_path,
                                                                                       monkeypatch):
    from shortdiff_tf.app import evaluate
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    shutil.copytree(glow_run[0], killed)
    shutil.copytree(glow_run[0], whole)
    full = evaluate.evaluate_run(whole, **KW)
    assert full["resumed_batches"] == 0 and full["repeats"] == 2
    real, calls = evaluate.padded_call, []

    def dies_in_the_fourth_batch(*args, **kwargs):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "padded_call", dies_in_the_fourth_batch)
    with pytest.raises(KeyboardInterrupt):
        evaluate.evaluate_run(killed, **KW)
    calls.clear()
    monkeypatch.setattr(evaluate, "padded_call", lambda *a, **k: calls.append(1) or real(*a, **k))
    resumed = evaluate.evaluate_run(killed, **KW)
    assert resumed["resumed_batches"] == 3 and len(calls) == 3          # 2 passes x 3 batches in all
    _same(resumed, full)
    stored = sorted(Path(resumed["store"]).glob("r*-b*.npz"))       # this evaluation's batches
    assert len(stored) == 6 and all(set(np.load(f).files) == {"x_T", "delta_logp", "nfe"} for f in stored)
    # no prior density is stored: a refitted prior is scored afresh at the stored x_T
    # --repeats: pass 1 uses the evaluation's seed, so one pass is pass 1 of the two, loaded from the
    # store; the two-pass value per example is the mean of both passes, and pass 2 differs
    one = evaluate.evaluate_run(killed, **{**KW, "repeats": 1})
    assert one["resumed_batches"] == 3 and len(calls) == 3
    second_only = 2 * full["likelihood"]["log_prob"] - one["likelihood"]["log_prob"]
    assert np.isfinite(second_only) and second_only != pytest.approx(one["likelihood"]["log_prob"], rel=1e-9)
    with pytest.raises(ValueError, match="--repeats"):
        evaluate.evaluate_run(killed, **{**KW, "repeats": 0})


def test_evaluation_on_two_replicas_equals_one(glow_run):
    """Each likelihood batch split over 2 mirrored replicas, with the probes one device would use:
    the same bits/dim per example within the solver's tolerance (rtol = atol = 1e-5: 1e-3
    relative on log p), an odd example count padded to a multiple of the replicas; the ELBO's
    batches of 2 run one per replica (the last, of 1, on one device): the same draws, so the same
    ELBO to 1e-6."""
    from shortdiff_tf.app.evaluate import evaluate_run
    from tests.conftest import two_replicas
    kw = dict(num_examples=5, batch_size=2, rtol=1e-5, atol=1e-5, elbo_draws=2, prior="noise", seed=3)
    one = evaluate_run(glow_run[0], **kw)
    two = evaluate_run(glow_run[0], **kw, strategy=two_replicas())
    assert (one["replicas"], two["replicas"]) == (1, 2) and one["store"] != two["store"]
    for key in ("log_prob", "prior_logp", "delta_logp"):
        assert two["likelihood"][key] == pytest.approx(one["likelihood"][key], rel=1e-3), key
    for key in ("elbo", "I", "R", "prior_term", "elbo_sem"):       # the ELBO's batches, one per replica
        assert two["elbo_noise"][key] == pytest.approx(one["elbo_noise"][key], rel=1e-6, abs=1e-9), key
    assert two["likelihood"]["bpd"] == pytest.approx(one["likelihood"]["bpd"], rel=1e-4)
    with pytest.raises(ValueError, match="not divisible by the 2 replicas"):
        evaluate_run(glow_run[0], **{**kw, "batch_size": 3}, strategy=two_replicas())
