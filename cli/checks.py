"""Cheap checks that run before TensorFlow is imported: paths, existing outputs, run directories.

Each failure is a ValueError or FileNotFoundError whose one line names the problem and the fix
(``cli.errors.friendly`` prints it), so a typo costs a second, not a minute of start-up.
"""
from __future__ import annotations

import difflib
import json
import tempfile
from pathlib import Path
from typing import Optional

from shortdiff_tf import hints, views

LOCAL_DATASETS = ("digits", "gmm1d", "gmm2d")        # data.TOY_NAMES and the bundled digits (tested)


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
        near = did_you_mean(p.name, [q.name for q in _runs_beside(p)])
        fix = f"did you mean {p.parent / near}?" if near else f"train one with `{hints.train_command(p)}`"
        raise FileNotFoundError(f"run directory {p} does not exist; {fix}")
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


def chief_task() -> bool:
    """Whether this process is the chief of the TF_CONFIG cluster (its "chief" task, else worker 0),
    or runs alone: only the chief takes a run's lock (shortdiff_tf.app.train)."""
    import json
    import os
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = tf_config.get("task") or {}, tf_config.get("cluster") or {}
        chief = "chief" if "chief" in cluster else "worker"
        return not task or (task.get("type") == chief and int(task.get("index", 0)) == 0)
    except (ValueError, TypeError, AttributeError):
        return True                                  # malformed: the strategy's own check reports it


def train_workdir(workdir, strategy: str = "auto") -> None:
    """A new or resumable run directory: writable, not in use (the lock checked by the chief alone,
    which holds it while the other workers run), and never checkpoints without their config."""
    writable_dir(workdir)
    p = Path(workdir)
    if strategy != "multiworker" or chief_task():
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


def did_you_mean(name: str, candidates) -> Optional[str]:
    """The candidate closest to a mistyped ``name`` (difflib), or None."""
    near = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return near[0] if near else None


def _runs_beside(path: Path) -> list:
    parent = path.parent if str(path.parent) else Path(".")
    try:
        return [q for q in parent.iterdir() if (q / "config.json").is_file()]
    except OSError:
        return []


def run_T(cfg: dict, T: Optional[float], workdir) -> float:
    """``--T`` is within the T the run's score model was trained at; -> the T to run at."""
    trained = float(cfg["sde"]["T"])
    if T is not None and T > trained + 1e-12:
        raise ValueError(f"--T {T:g} is beyond the T = {trained:g} that the score model of {workdir} was trained at "
                         f"(it never saw the times between); pass --T {trained:g} or less, or train a run at T = {T:g} "
                         f"(`shortdiff train --T {T:g} --workdir NEW_RUN`)")
    return trained if T is None else T


def prior_for(workdir, prior: str, T: Optional[float]) -> Optional[float]:
    """The chosen prior exists and was fitted at ``T`` (after ``run_T``, so refitting at T works);
    -> the T of the auxiliary prior the command will use, or None (p_noise)."""
    from shortdiff_tf.prior_fit.settings import load_config, prior_dir
    if prior == "noise":
        return None
    saved = load_config(workdir)
    at = f" --T {T:g}" if T is not None else ""
    if saved is None:
        if prior == "aux":
            raise FileNotFoundError(f"{workdir} has no auxiliary prior; fit one with `shortdiff fit-prior --workdir "
                                    f"{workdir}{at}` or use --prior noise")
        return None
    if T is not None and abs(T - saved.T) > 1e-12:
        raise ValueError(f"the auxiliary prior of {workdir} was fitted at T={saved.T:g}, not T={T:g}; pass --T "
                         f"{saved.T:g}, use --prior noise, or refit it at T={T:g} (delete {prior_dir(workdir)}, then "
                         f"`shortdiff fit-prior --workdir {workdir} --T {T:g}`)")
    return saved.T


def dataset(name: Optional[str], data_dir=None, option: str = "--dataset") -> None:
    """A data set that can be found: a bundled name, an existing .npz file or image folder, or a
    TFDS name in its registry (no data are read; TFDS's registry is listed without TensorFlow)."""
    if name is None:
        return
    if not name.strip():
        raise ValueError(f"{option} is empty; give digits, gmm1d, gmm2d, a TFDS name, a .npz file or an image folder")
    if name in LOCAL_DATASETS:
        return
    path = Path(name).expanduser()
    if name.endswith(".npz") or "/" in name or name.startswith((".", "~")):
        if path.is_dir() or (name.endswith(".npz") and path.is_file()):
            return
        try:
            near = did_you_mean(path.name, [q.name for q in (path.parent if str(path.parent) else Path(".")).iterdir()])
        except OSError:
            near = None
        fix = f"did you mean {path.parent / near}?" if near else "give an existing .npz file or image folder"
        raise FileNotFoundError(f"{option} {name} does not exist; {fix}")
    import tensorflow_datasets as tfds                    # lazy: imports no TensorFlow
    known = tfds.list_builders(with_community_datasets=False)
    base = name.split(":")[0].split("/")[0]
    if base not in known:
        near = did_you_mean(base, [*LOCAL_DATASETS, *known])
        raise ValueError(f"unknown data set {name!r}" + (f"; did you mean {near}?" if near else "")
                         + " (give digits, gmm1d, gmm2d, a .npz file, an image folder or a TFDS name)")


def resumable(workdir, cfg) -> None:
    """An existing run resumes only with its own settings (``resume.differences``)."""
    from shortdiff_tf import resume
    from shortdiff_tf.config import RunConfig
    diffs = resume.differences(RunConfig.load(workdir), cfg)
    if diffs:
        raise ValueError(f"{workdir} holds a run with other settings ({diffs}); use a new --workdir "
                         f"or the run's own options")


def prior_fit(workdir, pcfg, shape) -> None:
    """The prior's kind fits the data, then a stored prior resumes only with its own settings
    (``prior_fit.settings``): in this order, as deleting a stored prior cannot fix a wrong kind."""
    from shortdiff_tf.prior_fit.settings import check_kind, check_resumable
    check_kind(pcfg, shape)
    check_resumable(workdir, pcfg, check_score_step=False)


def chosen_T(workdir, T, prior: str = "auto"):
    """``--T auto``: (the view of T* that ``choose-T`` left, T*, the prior its calibration chose
    when ``prior`` is auto); any other T: (workdir, T, prior)."""
    if T != "auto":
        return workdir, T, prior
    report = choose_T_report(workdir)
    chosen_prior = report.get("prior", "aux") if prior == "auto" else prior
    return str(views.locate(workdir, report["view"])), float(report["T_star"]), chosen_prior


def chosen_temperature(workdir, T, temperature, sampler=None):
    """The prior's sampling temperature: ``temperature`` when given; with ``--T auto`` the one
    ``choose-T`` measured for its sampler (for ``sampler``, or for that sampler when None); else 1."""
    if temperature is not None:
        return temperature
    if T != "auto":
        return 1.0
    report = choose_T_report(workdir)
    return float(report.get("temperature", 1.0)) if sampler in (None, report.get("sampler")) else 1.0


def choose_T_report(workdir) -> dict:
    """RUN/choose_T.json, its view checked; one-line errors when it is missing or unreadable."""
    path = Path(workdir) / "choose_T.json"
    try:
        report = json.loads(path.read_text())
        view = views.locate(workdir, report["view"])
        float(report["T_star"])
    except FileNotFoundError:
        raise FileNotFoundError(f"--T auto needs {path}; choose T first with `shortdiff choose-T --workdir {workdir}`") \
            from None
    except (OSError, ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is unreadable; rerun `shortdiff choose-T --workdir {workdir}` (it resumes)") from None
    if not (view / "config.json").is_file():
        raise FileNotFoundError(f"the view {view} that {path} names is gone; rerun `shortdiff choose-T --workdir "
                                f"{workdir}` (it resumes)")
    return report
