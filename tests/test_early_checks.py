"""Errors that a run's own files can answer come before TensorFlow is imported, in an order where
every suggested fix passes the check that suggested it, with "did you mean" for typos.

Each command runs in a subprocess in which ``import tensorflow`` fails (``sys.modules`` untouched): an error that names the
problem therefore came before TensorFlow, and a command whose checks all pass ends in that
ImportError instead.  The runs are copies of the suite's shared digits run (conftest's glow_run)."""
import re
import shutil
import subprocess
import sys

import pytest


NO_TF = """
import importlib.abc, importlib.machinery, sys
class Halt(importlib.abc.Loader):
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        raise ImportError("import of tensorflow halted")
class NoTensorFlow:             # found (so probes say it is installed), but importing it fails
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, Halt())
sys.meta_path.insert(0, NoTensorFlow())
from cli.main import cli
sys.exit(cli())
"""


def without_tf(*args, cwd=None):
    """-> (exit code, output, whether it got as far as importing TensorFlow)."""
    r = subprocess.run([sys.executable, "-c", NO_TF, *map(str, args)], capture_output=True, text=True, timeout=120,
                       cwd=cwd)
    out = r.stdout + r.stderr
    return r.returncode, out, "import of tensorflow halted" in out


@pytest.fixture(scope="module")
def runs(glow_run, tmp_path_factory):
    """runs/digits-vp-T0.4 (T = 0.4, no prior) and runs/with-prior (its Glow prior fitted at 0.4)."""
    root = tmp_path_factory.mktemp("early") / "runs"
    shutil.copytree(glow_run[0], root / "digits-vp-T0.4", ignore=shutil.ignore_patterns("prior"))
    shutil.copytree(glow_run[0], root / "with-prior")
    return root


def fix_of(out: str) -> list:
    """The arguments of the `shortdiff ...` command an error suggests between backticks."""
    return out.split("`shortdiff ", 1)[1].split("`", 1)[0].split()


@pytest.mark.parametrize("command", ["sample", "evaluate", "export"])
def test_a_T_beyond_the_runs_is_refused_before_tensorflow_and_the_suggested_T_passes(runs, command):
    run = runs / "with-prior"
    code, out, reached_tf = without_tf(command, "--workdir", run, "--T", "0.8")
    assert code == 1 and not reached_tf and "--T 0.8 is beyond the T = 0.4" in out and "Traceback" not in out
    suggested = re.search(r"pass --T ([0-9.]+) or less", out).group(1)
    code, out, reached_tf = without_tf(command, "--workdir", run, "--T", suggested)
    assert reached_tf and "beyond" not in out, out[-500:]


def test_the_prior_is_checked_after_the_score_models_T_and_each_fix_works(runs):
    run = runs / "with-prior"
    code, out, reached_tf = without_tf("sample", "--workdir", run, "--T", "0.3")
    assert code == 1 and not reached_tf and "fitted at T=0.4, not T=0.3" in out
    for fix in (["--T", "0.4"], ["--T", "0.3", "--prior", "noise"]):
        assert without_tf("sample", "--workdir", run, *fix)[2]
    refit = fix_of(out)                                       # fit-prior --workdir RUN --T 0.3, after deleting prior/
    assert refit[:2] == ["fit-prior", "--workdir"] and refit[-2:] == ["--T", "0.3"] and f"delete {run / 'prior'}" in out
    code, out, reached_tf = without_tf(*refit)               # refused while the old prior is there ...
    assert code == 1 and not reached_tf and "T: 0.4 there, 0.3 asked" in out
    moved = runs / "prior-moved"
    shutil.move(run / "prior", moved)
    try:
        assert without_tf(*refit)[2]                         # ... and passes once it is deleted
    finally:
        shutil.move(moved, run / "prior")


def test_a_missing_prior_and_fit_prior_beyond_the_run_are_refused_before_tensorflow(runs):
    run = runs / "digits-vp-T0.4"
    code, out, reached_tf = without_tf("sample", "--workdir", run, "--prior", "aux")
    assert code == 1 and not reached_tf and "has no auxiliary prior" in out
    assert without_tf(*fix_of(out))[2]                        # shortdiff fit-prior --workdir RUN
    code, out, reached_tf = without_tf("fit-prior", "--workdir", run, "--T", "0.6")
    assert code == 1 and not reached_tf and "--T 0.6 is beyond the T = 0.4" in out


def test_train_with_other_settings_on_a_run_is_refused_before_tensorflow(runs):
    code, out, reached_tf = without_tf("train", "--workdir", runs / "digits-vp-T0.4", "--T", "0.5")
    assert code == 1 and not reached_tf and "sde.T: 0.4 there, 0.5 asked" in out


def test_did_you_mean_for_a_mistyped_run_directory(runs):
    code, out, reached_tf = without_tf("sample", "--workdir", runs / "digits-vp-T04")
    assert code == 1 and not reached_tf and f"did you mean {runs / 'digits-vp-T0.4'}?" in out
    code, out, _ = without_tf("sample", "--workdir", runs / "elsewhere-vp-T04")      # nothing near: how to train
    assert "did you mean" not in out and "shortdiff train --workdir" in out and "--T 04" not in out


@pytest.mark.parametrize("command, data, message", [
    ("train", "mnsit", "unknown data set 'mnsit'; did you mean mnist?"),
    ("train", "digts", "did you mean digits?"),
    ("train", "./missing.npz", "--dataset ./missing.npz does not exist"),
    ("train", "{tmp}/digit.npz", "did you mean {tmp}/digits.npz?"),
    ("evaluate", "cifar1O", "did you mean cifar10?"),
])
def test_data_set_names_and_paths_are_checked_before_tensorflow(runs, tmp_path, command, data, message):
    (tmp_path / "digits.npz").write_bytes(b"")
    where = ["--workdir", tmp_path / "new"] if command == "train" else ["--workdir", runs / "digits-vp-T0.4"]
    code, out, reached_tf = without_tf(command, "--dataset", data.replace("{tmp}", str(tmp_path)), *where,
                                       cwd=tmp_path)
    assert code == 1 and not reached_tf and message.replace("{tmp}", str(tmp_path)) in out, out[-400:]
    assert "Traceback" not in out and not (tmp_path / "new").exists()


def test_a_known_data_set_passes_the_early_check(tmp_path):
    for data in ("digits", "gmm2d", "mnist"):
        assert without_tf("train", "--dataset", data, "--workdir", tmp_path / data, "--steps", "1")[2]


def test_checks_name_the_local_data_sets_the_library_knows():
    from cli import checks
    from shortdiff_tf import data
    assert set(checks.LOCAL_DATASETS) == {"digits", *data.TOY_NAMES}
