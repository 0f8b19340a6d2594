"""Views of a run: ``BASE/views/T<T><suffix>``, where BASE is the run itself (``choose-T``) or a
study directory (``study --reuse-score``).  A view holds the run's config.json, a link to the
run's checkpoints and a prior of its own, so it is an ordinary run directory for ``sample``,
``evaluate`` and ``export``, and the run's own files are never written.

Run directories move: to another machine, under a container's mount point, or are named from
another working directory.  So a view inside its run links to the run's checkpoints by a relative
path (``../../checkpoints``), and a view named in a stored file (``choose_T.json``, a point file)
is found again by its name under BASE/views, never by the path stored when it was written.
``locate`` imports nothing: the checks made before TensorFlow starts use it.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

FOLDER = "views"


def locate(base, stored) -> Path:
    """The view a file stored as ``stored`` (any path ending in its name), under ``base``."""
    return Path(base) / FOLDER / Path(stored).name


def make_view(run_dir, base, T: float, suffix: str = "") -> Path:
    """BASE/views/T<T><suffix> with RUN's config and a link to RUN's checkpoints (created once;
    a link left dangling by a move is made again)."""
    from shortdiff_tf.checkpoints import checkpoint_dir
    run_dir = Path(run_dir).resolve()
    view = Path(base) / FOLDER / f"T{T:g}{suffix}"
    view.mkdir(parents=True, exist_ok=True)
    link = checkpoint_dir(view)
    if link.is_symlink() and not link.exists():
        link.unlink()
    if not link.exists():
        link.symlink_to(_link_target(checkpoint_dir(run_dir), view), target_is_directory=True)
    if not (view / "config.json").exists():
        shutil.copyfile(run_dir / "config.json", view / "config.json.tmp")
        (view / "config.json.tmp").replace(view / "config.json")
    return view


def _link_target(target: Path, view: Path) -> str:
    """``target`` relative to ``view`` when the view lies inside the run (they move together),
    else absolute (a study directory may move apart from the run it reuses)."""
    view = view.resolve()
    if view.is_relative_to(target.parent):
        return os.path.relpath(target, view)
    return str(target)
