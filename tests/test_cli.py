"""Every command through Click's CliRunner on tiny configs, and bad input as one-line errors."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli

TINY_TRAIN = ["--steps", "4", "--batch-size", "8", "--ch", "8", "--log-every", "2", "--no-progress", "--sample-grid", "0"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def last_json(result):
    return json.loads(result.output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "digits"
    r = invoke("train", "--sde", "vp", "--T", "0.4", "--workdir", run, *TINY_TRAIN[:-2], "--sample-grid", "4", "--json")
    assert r.exit_code == 0, r.output
    assert last_json(r)["step"] == 4
    return run


def test_help_is_instant_and_lists_commands():
    out = subprocess.run([sys.executable, "-c", "import sys, cli.main; cli.main.cli(['--help'], standalone_mode=False);"
                          "print('TF loaded' if 'tensorflow' in sys.modules else 'no TF')"],
                         capture_output=True, text=True, timeout=60)
    assert "no TF" in out.stdout and "train" in out.stdout and "evaluate" in out.stdout


def test_train_writes_the_run_directory(digits_run):
    cfg = json.loads((digits_run / "config.json").read_text())
    assert cfg["sde"]["T"] == 0.4 and cfg["data"]["shape"] == [8, 8, 1]
    assert (digits_run / "checkpoints" / "checkpoint").exists()
    rows = [json.loads(l) for l in (digits_run / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and np.isfinite(rows[-1]["loss"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(digits_run / "tb"), size_guidance={"tensors": 0}).Reload()
    assert {"loss", "learning_rate", "samples_em_p_noise"} <= set(events.Tags()["tensors"])


def test_train_resumes_with_a_larger_budget(digits_run, tmp_path):
    import shutil
    run = tmp_path / "copy"
    shutil.copytree(digits_run, run)
    r = invoke("train", "--workdir", run, "--steps", "6", "--no-progress", "--sample-grid", "0", "--json")
    assert r.exit_code == 0, r.output
    assert "from step 4 to 6" in r.output and last_json(r)["step"] == 6


def test_evaluate_reports_bits_per_dim_and_elbo_terms_with_both_priors(glow_run):
    r = invoke("evaluate", "--workdir", glow_run[0], "--num-examples", "4", "--batch-size", "4",
               "--rtol", "1e-2", "--atol", "1e-2", "--json")
    assert r.exit_code == 0, r.output
    rep = last_json(r)
    ll = rep["likelihood"]
    D = 64                                                           # bits/dim from the nats it reports
    assert ll["bpd"] == pytest.approx(-ll["log_prob"] / (D * math.log(2)) + 7.0, rel=1e-5)
    assert ll["bpd_ode"] == pytest.approx(-ll["delta_logp"] / (D * math.log(2)), rel=1e-5)
    assert ll["bpd_offset"] == 7.0 and rep["nfe_mean"] > 0 and rep["rtol"] == 1e-2
    assert np.isfinite(rep["elbo"]["elbo"]) and "bits/dim" in r.output
    assert rep["prior"] == "aux:glow" and "elbo_aux" in rep and "elbo_noise" in rep        # the run has a prior
    assert rep["elbo_aux"]["I"] == rep["elbo_noise"]["I"]            # same draws, different prior term
    assert "L_phi (aux)" in r.output and "L (p_noise)" in r.output
    ln = rep["likelihood_noise"]                                     # the same ODE solves under p_noise
    assert ln["bpd_ode"] == ll["bpd_ode"] and ln["delta_logp"] == ll["delta_logp"]
    assert ln["log_prob"] - ll["log_prob"] == pytest.approx(ln["prior_logp"] - ll["prior_logp"], abs=1e-4)
    assert "same ODE solves with p_noise" in r.output


def test_dry_run_writes_nothing(tmp_path):
    r = invoke("train", "--T", "0.4", "--workdir", tmp_path / "dry", "--dry-run")
    assert r.exit_code == 0 and json.loads(r.output)["sde"]["T"] == 0.4
    assert not (tmp_path / "dry").exists()


@pytest.mark.parametrize("args, message", [
    (["train", "--dataset", "no_such_set"], "unknown data set 'no_such_set'"),
    (["train", "--T", "1.5"], "Invalid value for '--T'"),
    (["train", "--T", "0.4", "--eps", "0.5"], "eps must be smaller than T"),
    (["train", "--sde", "cld"], "Invalid value for '--sde'"),
    (["sample", "--workdir", "{tmp}/missing"], "does not exist"),
    (["evaluate", "--workdir", "{tmp}/missing"], "does not exist"),
])
def test_bad_input_is_one_line_no_traceback_nothing_written(args, message, tmp_path):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if args[0] == "train":
        args += ["--workdir", str(tmp_path / "new")]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0
    assert message in r.output and "Traceback" not in r.output
    assert not (tmp_path / "new").exists()


def test_evaluate_on_data_of_another_shape(digits_run):
    r = CliRunner().invoke(cli, ["evaluate", "--workdir", str(digits_run), "--dataset", "gmm2d"])
    assert r.exit_code == 1 and "do not fit the model trained on [8, 8, 1]" in r.output


def test_resume_with_conflicting_options(digits_run):
    r = CliRunner().invoke(cli, ["train", "--workdir", str(digits_run), "--T", "1.0"])
    assert r.exit_code == 1 and "sde.T: 0.4 there, 1.0 asked" in r.output


def test_corrupt_checkpoint_is_a_one_line_error(digits_run, tmp_path):
    import shutil
    run = tmp_path / "corrupt"
    shutil.copytree(digits_run, run)
    for f in (run / "checkpoints").glob("*.data-*"):
        f.write_bytes(b"garbage" * 10)
    r = CliRunner().invoke(cli, ["sample", "--workdir", str(run), "--num-samples", "2", "--steps", "2"])
    assert r.exit_code == 1 and "cannot restore checkpoint" in r.output and "Traceback" not in r.output
    assert not (run / "samples").exists()
