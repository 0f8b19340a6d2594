"""``shortdiff runs [DIR]``: one line per run directory under DIR, read from its files alone
(config.json, checkpoint names, prior/config.json, evaluations/*/summary.json); no TensorFlow."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Optional

import click

from cli.errors import friendly
from cli.options import json_option

CHECKPOINT = re.compile(r"^ckpt-(\d+)\.index$")


def run_dirs(root: Path, depth: int = 3) -> list:
    """Directories holding a config.json with an ``sde`` section, at most ``depth`` levels down."""
    found = []
    for here, dirs, files in os.walk(root):
        level = len(Path(here).relative_to(root).parts)
        if "config.json" in files and _read(Path(here) / "config.json", "sde"):
            found.append(Path(here))
            dirs[:] = []                                    # a run's own folders hold no runs
        elif level >= depth:
            dirs[:] = []
        dirs.sort()
    return found


def _read(path: Path, key: Optional[str] = None) -> Optional[dict]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) and (key is None or isinstance(value.get(key), dict)) else None


def describe(run: Path) -> dict:
    """The facts of one run: data, SDE, T, newest checkpoint step, prior, newest evaluation, size."""
    cfg = _read(run / "config.json") or {}
    steps = [int(m.group(1)) for p in (run / "checkpoints").glob("ckpt-*.index") if (m := CHECKPOINT.match(p.name))]
    prior = _read(run / "prior" / "config.json")
    summaries = sorted((run / "evaluations").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    latest = _read(summaries[-1]) if summaries else None
    size = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
    return {"run": str(run), "dataset": cfg.get("data", {}).get("dataset"), "sde": cfg.get("sde", {}).get("kind"),
            "T": cfg.get("sde", {}).get("T"), "step": max(steps) if steps else None,
            "imported": (run / "import.json").is_file(),
            "prior": prior.get("kind") if prior else None, "prior_T": prior.get("T") if prior else None,
            "evaluation": None if latest is None else {
                "bpd": latest.get("likelihood", {}).get("bpd"), "T": latest.get("T"), "prior": latest.get("prior"),
                "num_examples": latest.get("num_examples"), "summary": str(summaries[-1])},
            "bytes": size}


def line(r: dict) -> str:
    prior = f"{r['prior']} at T={r['prior_T']:g}" if r["prior"] else "no prior"
    ev = r["evaluation"]
    bpd = ("not evaluated" if ev is None else
           f"{ev['bpd']:.4f} bits/dim ({ev['num_examples']} examples, T={ev['T']:g}, {ev['prior']})" if ev["bpd"]
           is not None else f"evaluated ({ev['num_examples']} examples, T={ev['T']:g})")
    step = "no checkpoint" if r["step"] is None else f"step {r['step']}"
    T = f"T={r['T']:g}" if isinstance(r["T"], (int, float)) else "T=?"
    return (f"{r['run']}  {r['dataset']}  {r['sde']}  {T}  {step}{'  (imported)' if r['imported'] else ''}  "
            f"{prior}  {bpd}  {r['bytes'] / 2**20:.1f} MiB")


@click.command("runs")
@click.argument("directory", type=click.Path(file_okay=False), default="runs")
@json_option
@friendly(resumable=False)
def runs_command(directory, as_json):
    """List the runs under DIRECTORY: data, SDE, T, step, prior and its T, newest bits/dim, size.
    e.g.  shortdiff runs runs"""
    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a directory; give the folder that holds your runs (default: runs)")
    found = [describe(p) for p in run_dirs(root)]
    if as_json:
        return click.echo(json.dumps({"directory": str(root), "runs": found}))
    if not found:
        return click.echo(f"no runs under {root} (train one with `shortdiff train --sde vp --T 0.4`)")
    for r in found:
        click.echo(line(r))
