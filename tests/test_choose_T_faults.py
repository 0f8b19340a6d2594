"""`kill -9` of `shortdiff choose-T` inside a Glow fit, then a rerun (the helpers of
`tests/test_faults.py`; a file of its own so that pytest-xdist runs it beside them)."""
import json
import shutil

import pytest

from shortdiff_tf import checkpoints
from tests.test_faults import assert_same_weights, invoke, kill_after

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)

CHOOSE = ["choose-T", "--T-grid", "0.2,0.4", "--refine", "0", "--num-examples", "4", "--batch-size", "4",
          "--rtol", "1e-2", "--atol", "1e-2", "--prior-steps", "10", "--glow-levels", "0", "--glow-steps", "1",
          "--glow-hidden", "8", "--checkpoint-every", "1", "--no-progress", "--json"]


def test_kill_9_of_choose_T_in_a_fit_resumes_to_the_uninterrupted_search(glow_run, tmp_path):
    """SIGKILL while the second T's Glow is being fitted (the first T finished and stored): the rerun
    keeps the first point, resumes the second fit from its checkpoint and ends with the report of a
    search that was never interrupted."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    for d in (full, cut):
        shutil.copytree(glow_run[0], d, ignore=shutil.ignore_patterns("prior", "evaluations", "samples"))
    expected = json.loads(invoke(*CHOOSE, "--workdir", full).output.strip().splitlines()[-1])
    kill_after([*CHOOSE, "--workdir", cut], cut / "views" / "T0.4" / "prior" / "checkpoints", at_step=3)
    assert (cut / "views" / "T0.2" / "choose_T_point.json").is_file()
    assert not (cut / "views" / "T0.4" / "choose_T_point.json").exists() or "metrics" not in json.loads(
        (cut / "views" / "T0.4" / "choose_T_point.json").read_text())
    done = checkpoints.complete(cut / "views" / "T0.4" / "prior" / "checkpoints")[-1][0]
    r = invoke(*CHOOSE, "--workdir", cut)
    assert f"steps {done} to 10" in r.output and r.output.count("fitting a Glow") == 1, r.output
    got = json.loads(r.output.strip().splitlines()[-1])
    assert_same_weights(checkpoints.latest(full / "views" / "T0.4" / "prior"),
                        checkpoints.latest(cut / "views" / "T0.4" / "prior"))
    for a, b in zip(expected["points"], got["points"]):
        keys = ("T", "value", "value_aux", "value_noise", "difference", "passes")     # value_aux: under the Glow
        assert [a[k] for k in keys] == [b[k] for k in keys] and a["calibration"] == b["calibration"]
    assert got["T_star"] == expected["T_star"]
