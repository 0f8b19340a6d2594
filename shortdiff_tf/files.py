"""Files that are never half-written: atomic replacement and JSON-lines logs.

A writer writes to ``NAME.tmp`` beside the target, flushes it to disk and renames it over the
target (``os.replace`` is atomic on POSIX), so a reader (or a rerun after ``kill -9``) sees the
old file or the new one, never a mixture.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Callable


def atomic_write(path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp)`` and rename ``tmp`` over ``path``; the parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path, obj, indent: int = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent))


def read_json(path, fix: str):
    """The JSON object in ``path``; a damaged file is a one-line ValueError naming it and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is damaged or unreadable ({type(err).__name__}); {fix}") from None


def append_jsonl(path, row: dict) -> None:
    """One JSON object a line, appended."""
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def truncate_jsonl(path, last_step: int) -> int:
    """Keep the rows of a JSON-lines log with ``step <= last_step`` (a resumed run logs the rest
    again), drop a cut last line, and rewrite the file atomically. -> rows kept."""
    path = Path(path)
    if not path.exists():
        return 0
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:                          # a line cut by a kill
            continue
        if isinstance(row, dict) and row.get("step", 0) <= last_step:
            rows.append(line)
    atomic_write_text(path, "".join(r + "\n" for r in rows))
    return len(rows)
