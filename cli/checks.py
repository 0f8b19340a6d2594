"""Cheap checks that run before TensorFlow is imported: paths, existing outputs, run directories.

Each failure is a ValueError or FileNotFoundError whose one line names the problem and the fix
(``cli.errors.friendly`` prints it), so a typo costs a second, not a minute of start-up.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from shortdiff_tf import hints


def writable_dir(path, option: str = "--workdir") -> None:
    """``path`` is (or can be created as) a directory this process may write to."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ValueError(f"{option} {p} is a file, not a directory; choose another {option}")
    base = p
    while not base.exists() and base != base.parent:
        base = base.parent
    try:
        if not base.is_dir():
            raise NotADirectoryError
        with tempfile.TemporaryFile(dir=base):        # the only proof: root passes os.access checks
            pass
    except OSError as err:
        raise ValueError(f"cannot write to {base} (for {option} {p}): {err.strerror or 'not a directory'}; "
                         f"choose another {option}") from None


def _config(run_dir: Path) -> dict:
    path = run_dir / "config.json"
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is unreadable or not valid JSON ({type(err).__name__}); restore it or "
                         f"train a new run") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("sde"), dict):
        raise ValueError(f"{path} is not a shortdiff run config; restore it or train a new run")
    return cfg


def _has_checkpoint_files(run_dir: Path) -> bool:
    return any((run_dir / "checkpoints").glob("ckpt-*"))


def trained_run(workdir) -> dict:
    """A run directory with a config and a checkpoint. -> its config as a dict."""
    p = Path(workdir)
    if not p.is_dir():
        raise FileNotFoundError(f"run directory {p} does not exist; train one with `{hints.train_command(p)}`")
    if not (p / "config.json").is_file():
        raise FileNotFoundError(f"{p} is not a run: {p / 'config.json'} is missing; train one with "
                                f"`{hints.train_command(p)}`")
    cfg = _config(p)
    if not any((p / "checkpoints").glob("ckpt-*.index")):
        raise FileNotFoundError(f"{p} has no checkpoint yet; run `shortdiff train --workdir {p}` first")
    return cfg


def unlocked(lock_path) -> None:
    """No other process holds the lock at ``lock_path`` (``runlock.check_free``)."""
    from shortdiff_tf.runlock import check_free
    check_free(lock_path)


def train_workdir(workdir) -> None:
    """A new or resumable run directory: writable, not in use, and never checkpoints without their config."""
    writable_dir(workdir)
    p = Path(workdir)
    unlocked(p / ".lock")
    if (p / "config.json").exists():
        _config(p)
    elif _has_checkpoint_files(p):
        raise ValueError(f"{p} holds checkpoints but no config.json, so its settings are unknown; restore "
                         f"{p / 'config.json'} or use a new --workdir")


def new_output(out, option: str = "--out") -> None:
    """An output directory that does not exist yet, in a writable place."""
    p = Path(out)
    if p.exists():
        raise FileExistsError(f"{p} already exists; pass another {option} or remove it first")
    writable_dir(p.parent, option)
