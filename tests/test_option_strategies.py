"""The strategy options of train, fit-prior, evaluate and sample (`tests/test_options.py`'s
STRATEGY_RUNS), run in one fresh process: MultiWorkerMirroredStrategy must come first in a
process, so these cannot share the option tests' process (a file of their own lets pytest-xdist
run them beside the rest)."""
import os
import subprocess
import sys
import textwrap

import pytest

from tests.test_options import STRATEGIES, STRATEGY_RUNS

pytestmark = pytest.mark.long          # scheduled first (tests/conftest.py)


def test_strategy_runs_in_a_fresh_process(tmp_path):
    """multiworker (a one-worker cluster on localhost) and mirrored, for train and then fit-prior;
    evaluate and sample of the mirrored run under mirrored."""
    runs = []
    for i, (command, args) in enumerate(STRATEGY_RUNS):
        workdir = str(tmp_path / f"run{min(i // 2, 1)}")         # evaluate: the mirrored run
        runs.append([command, *[workdir if a == "{new}" else a for a in args]]
                    + ([] if "--workdir" in args else ["--workdir", workdir]))
    env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(STRATEGIES.format(runs=runs))], capture_output=True,
                         text=True, timeout=300, env=env)
    exits = [line for line in out.stdout.splitlines() if line.startswith("EXIT")]
    assert len(exits) == 6 and all(line.startswith("EXIT 0") for line in exits), out.stdout + out.stderr[-2000:]
    assert "trained to step 2" in exits[0] and "fitted a glow prior" in exits[1]

