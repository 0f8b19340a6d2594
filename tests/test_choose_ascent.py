"""`choose-T --method ascent` (the paper's App. H at image scale) on the suite's digits run: T moves
along the gradient of L_phi, a stopped ascent resumes to the uninterrupted one bit for bit, the
Glow where T ended is a ready view, and bad input is one line."""
import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from cli.main import cli
from shortdiff_tf.preemption import Preempted
from shortdiff_tf.study.choose_ascent import AscentConfig, ascend

TINY = dict(T_init=0.2, steps=6, batch_size=8, glow_levels=0, glow_steps_per_level=1, glow_hidden=8, checkpoint_every=3,
            record_every=1, lr_T=0.05)


def copy(glow_run, path):
    shutil.copytree(glow_run[0], path, ignore=shutil.ignore_patterns("prior", "evaluations", "samples"))
    return path


def test_choose_T_method_ascent_writes_a_ready_view_and_a_stopped_ascent_resumes_to_it(glow_run, tmp_path):
    run = copy(glow_run, tmp_path / "run")
    args = ["choose-T", "--workdir", str(run), "--method", "ascent", "--T-init", "0.2", "--lr-T", "0.05",
            "--prior-steps", "6", "--batch-size", "8", "--glow-steps", "1", "--glow-hidden", "8", "--glow-levels", "0",
            "--checkpoint-every", "3", "--seed", "0", "--json"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    full = json.loads(r.output.strip().splitlines()[-1])
    assert full["method"] == "ascent" and full["T_init"] == 0.2 and full["lr_T"] == 0.05 and full["steps"] == 6
    assert full["search"] is None and "no search to compare with" in r.output
    assert [p[0] for p in full["path"]] == [6]                    # recorded every 10th step, and at the end
    view = run / "views" / f"T{full['T_end']:g}-ascent"
    assert full["view"] == str(view) and json.loads((view / "prior" / "config.json").read_text())["T"] == full["T_end"]
    assert json.loads((view / "prior" / "calibration.json").read_text())["use"] == full["calibration"]["use"]
    assert json.loads((run / "choose_T_ascent.json").read_text())["T_star"] == full["T_star"]
    r = CliRunner().invoke(cli, ["sample", "--workdir", str(view), "--num-samples", "2", "--steps", "2", "--json"])
    assert r.exit_code == 0 and json.loads(r.output.strip().splitlines()[-1])["T"] == full["T_end"], r.output
    for bad, message in ((["--T-init", "0.4"], "start below the run's T_max"), (["--T-init", "1.5"], "--T-init"),
                         (["--lr-T", "0"], "--lr-T")):
        r = CliRunner().invoke(cli, ["choose-T", "--workdir", str(run), "--method", "ascent", *bad])
        assert r.exit_code != 0 and message in r.output and "Traceback" not in r.output, r.output
    # the same ascent in the library, SIGTERM after step 3, then resumed: the CLI's T at every step
    cut = copy(glow_run, tmp_path / "cut")
    cfg = AscentConfig(**TINY)
    calls = iter(range(100))
    with pytest.raises(Preempted, match="step 3"):
        ascend(cut, cfg, log=lambda *_: None, should_stop=lambda: 15 if next(calls) == 2 else 0)
    lines = []
    again = ascend(cut, cfg, log=lines.append)
    assert any("resuming the ascent" in m for m in lines)
    assert again["path"][-1] == full["path"][-1] and again["T_end"] == full["T_end"]
    steps = again["path"]
    assert [p[0] for p in steps] == list(range(1, 7)) and len({p[1] for p in steps}) == 6       # T moves every step
    assert all(0 < p[1] < 0.4 and np.isfinite(p[2]) for p in steps)
    with pytest.raises(ValueError, match="other settings"):
        ascend(cut, AscentConfig(**{**TINY, "lr_T": 0.1}), log=lambda *_: None)
