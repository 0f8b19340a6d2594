"""Views of a run survive the run's move: a view inside its run links to the run's checkpoints by a
relative path, a study's view outside it by an absolute one, a dangling link is made again, and a
stored view is found by name under the run wherever the run now is (also by ``--T auto``)."""
import json
import os
import shutil
from pathlib import Path

import pytest

from cli import checks
from shortdiff_tf.views import locate, make_view


@pytest.fixture()
def run(tmp_path):
    run = tmp_path / "runs" / "r"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "ckpt-1.index").write_text("weights")
    (run / "config.json").write_text('{"sde": {"T": 1.0}}')
    return run


def test_a_view_inside_its_run_moves_with_it(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    view = make_view("runs/r", "runs/r", 0.4)
    assert view == Path("runs/r/views/T0.4")
    assert os.readlink(view / "checkpoints") == os.path.join("..", "..", "checkpoints")
    assert (view / "config.json").read_text() == (run / "config.json").read_text()
    shutil.move(run, tmp_path / "moved")
    assert (tmp_path / "moved" / "views" / "T0.4" / "checkpoints" / "ckpt-1.index").read_text() == "weights"
    assert locate(tmp_path / "moved", str(view)) == tmp_path / "moved" / "views" / "T0.4"
    assert locate("moved", "/an/old/machine/runs/r/views/T0.4-ode") == Path("moved/views/T0.4-ode")


def test_a_study_view_outside_the_run_links_absolutely_and_a_dangling_link_is_made_again(run, tmp_path):
    view = make_view(run, tmp_path / "study", 0.2, "-ascent")
    assert os.readlink(view / "checkpoints") == str((run / "checkpoints").resolve())
    (view / "checkpoints").unlink()
    (view / "checkpoints").symlink_to(tmp_path / "gone", target_is_directory=True)   # an older version's moved link
    assert make_view(run, tmp_path / "study", 0.2, "-ascent") == view
    assert (view / "checkpoints" / "ckpt-1.index").read_text() == "weights"


def test_T_auto_finds_the_view_of_a_moved_run_and_names_a_missing_one(run, tmp_path):
    view = make_view(run, run, 0.4)
    (run / "choose_T.json").write_text(json.dumps({"view": str(view), "T_star": 0.4, "prior": "aux"}))
    shutil.move(run, tmp_path / "moved")
    moved = tmp_path / "moved"
    assert checks.chosen_T(moved, "auto") == (str(moved / "views" / "T0.4"), 0.4, "aux")
    assert checks.chosen_T(moved, "auto", "noise")[2] == "noise"
    shutil.rmtree(moved / "views")
    with pytest.raises(FileNotFoundError, match="is gone; rerun `shortdiff choose-T"):
        checks.chosen_T(moved, "auto")
