"""What a run directory's checkpoints hold, how they are found after any interruption, and how
they are restored.

Keras 3 models are not tracked as children of ``tf.train.Checkpoint``, so the network's
variables are tracked explicitly, by their Keras path.  A checkpoint holds the network, its
EMA, the optimizer and the step; the step also fixes the RNG and data position (all random
draws are stateless functions of the step).
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import tensorflow as tf

from shortdiff_tf.files import atomic_write_text


def variable_dict(variables) -> dict:
    """{path: tf.Variable} for Keras variables (the path is stable across processes)."""
    out = {}
    for v in variables:
        key = v.path.replace("/", ".")
        if key in out:
            raise ValueError(f"duplicate variable path {v.path}")
        out[key] = v.value if hasattr(v, "value") and isinstance(v.value, tf.Variable) else v
    return out


class EMA(tf.Module):
    """Exponential moving average of variables, with ScoreSDE-PyTorch's warm-up:
    decay_n = min(decay, (1 + n) / (10 + n)),  shadow <- decay_n shadow + (1 - decay_n) v."""

    def __init__(self, variables, decay: float):
        super().__init__(name="ema")
        self.decay = float(decay)
        self.shadow = {k: tf.Variable(v.read_value(), trainable=False, name=k.replace(":", "_"))
                       for k, v in variable_dict(variables).items()}

    def update(self, variables, step, strategy=None):
        """In cross-replica context: every device updates its copy of each shadow from its own copy
        of the variable (``strategy.extended.update`` unwraps mirrored values per device)."""
        strategy = strategy or tf.distribute.get_strategy()
        n = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        blend = lambda s, v: s.assign(decay * s + (1.0 - decay) * tf.cast(v, s.dtype))
        for k, v in variable_dict(variables).items():
            strategy.extended.update(self.shadow[k], blend, args=(v,), group=False)

    def copy_to(self, variables):
        for k, v in variable_dict(variables).items():
            v.assign(self.shadow[k])


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir):
    """The newest complete checkpoint of a run (read-only; see ``newest_complete``)."""
    return newest_complete(checkpoint_dir(run_dir))


def complete(directory) -> list:
    """[(step, prefix)] of the complete ``ckpt-N`` checkpoints in ``directory``, by step.

    Complete: ``ckpt-N.index`` and every data shard it names are on disk, and the index reads.
    A write killed half-way leaves a ``ckpt-N_temp`` folder or a checkpoint without its index.
    """
    directory = Path(directory)
    found = []
    for index in directory.glob("ckpt-*.index"):
        m = re.fullmatch(r"ckpt-(\d+)\.index", index.name)
        if not m:
            continue
        prefix = str(directory / f"ckpt-{m.group(1)}")
        shards = list(directory.glob(f"ckpt-{m.group(1)}.data-*-of-*"))
        if not shards or len(shards) != int(shards[0].name.rsplit("-of-", 1)[1]):
            continue
        try:
            tf.train.load_checkpoint(prefix)
        except Exception:  # noqa: BLE001  (a truncated index raises DataLossError, OpError, ...)
            continue
        found.append((int(m.group(1)), prefix))
    return sorted(found)


def newest_complete(directory, found=None):
    """The prefix of the newest complete checkpoint (of ``found``, default ``complete(directory)``),
    or None when there is none at all; a one-line ValueError when checkpoint files exist but none
    is complete (never a silent start from step 0)."""
    found = complete(directory) if found is None else found
    if found:
        return found[-1][1]
    # a write in progress (ckpt-N_temp) is no checkpoint yet; a writer removes a killed one first (``recover``)
    leftovers = (sorted(p.name for p in Path(directory).glob("ckpt-*") if "_temp" not in p.name)
                 if Path(directory).is_dir() else [])
    if leftovers:
        raise ValueError(f"{directory} holds checkpoint files ({', '.join(leftovers[:3])}) but no complete "
                         f"checkpoint; move them away to start the run over")
    return None


def recover(directory, log=print):
    """Before a writer starts: remove the ``_temp`` folders of interrupted writes, find the newest
    complete checkpoint and, when the ``checkpoint`` index is missing, unreadable or points
    elsewhere (a kill between writing a checkpoint and its index), rewrite the index to it.
    -> its prefix, or None for a fresh run."""
    directory = Path(directory)
    for temp in directory.glob("*_temp*"):
        shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink()
    found = complete(directory)
    newest = newest_complete(directory, found)
    if newest is None:
        return None
    indexed = _indexed(directory)
    if indexed != newest:
        log(f"recovered checkpoint {Path(newest).name} from the checkpoint files (the index "
            f"{'pointed to ' + Path(indexed).name if indexed else 'was missing or unreadable'})")
        write_index(directory, [p for _, p in found])
    return newest


def remove_from(directory, step: int) -> list:
    """Delete the checkpoints ``ckpt-N`` with N >= ``step`` (a diverged run's) and point the index
    at the newest one left.  -> the names removed."""
    directory = Path(directory)
    found = complete(directory)
    gone = [(n, p) for n, p in found if n >= step]
    for _, prefix in gone:
        for f in directory.glob(f"{Path(prefix).name}.*"):
            f.unlink(missing_ok=True)
    left = [p for n, p in found if n < step]
    if left:
        write_index(directory, left)
    else:
        (directory / "checkpoint").unlink(missing_ok=True)
    return [Path(p).name for _, p in gone]


def _indexed(directory: Path):
    """The checkpoint the ``checkpoint`` index names, or None when it is missing or unreadable."""
    try:
        m = re.search(r'^model_checkpoint_path: "([^"]+)"$', (directory / "checkpoint").read_text(), re.M)
    except (OSError, UnicodeDecodeError):
        return None
    return str(directory / Path(m.group(1)).name) if m else None


def write_index(directory, prefixes) -> None:
    """The ``checkpoint`` index that tf.train.CheckpointManager reads, naming ``prefixes`` (oldest
    first; the last is the latest) with their files' times, so the manager keeps pruning them."""
    lines = [f'model_checkpoint_path: "{Path(prefixes[-1]).name}"']
    lines += [f'all_model_checkpoint_paths: "{Path(p).name}"' for p in prefixes]
    times = [Path(f"{p}.index").stat().st_mtime for p in prefixes]
    lines += [f"all_model_checkpoint_timestamps: {t:.6f}" for t in times]
    lines.append(f"last_preserved_timestamp: {min(times) - 1:.6f}")
    atomic_write_text(Path(directory) / "checkpoint", "\n".join(lines) + "\n")


def save(manager: tf.train.CheckpointManager, step: int) -> str:
    """``manager.save`` at ``step``; a full disk is an OSError(ENOSPC) naming the folder, and the
    half-written ``ckpt-N_temp`` it left is removed at once."""
    import errno
    try:
        return manager.save(checkpoint_number=step)
    except tf.errors.OpError as err:
        if "No space left on device" not in str(err):
            raise
        for temp in Path(manager.directory).glob(f"ckpt-{step}_temp*"):
            shutil.rmtree(temp, ignore_errors=True) if temp.is_dir() else temp.unlink()
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(manager.directory) / f"ckpt-{step}")) from None


def all_finite(variables) -> bool:
    """True when every value of every variable is finite (checked before a checkpoint is written)."""
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all(tf.stack(checks))) if checks else True          # one read from the device


class CheckpointGone(Exception):
    """A checkpoint disappeared while it was being read (a writer beside the reader rotated it)."""


READ_TRIES = 5               # a reader beside a writer that rotates checkpoints tries this many


def restore(ckpt: tf.train.Checkpoint, path: str, partial: bool = False, what: str = "run"):
    """Restore or raise: ``CheckpointGone`` when its files vanished meanwhile, else a one-line
    ValueError naming the checkpoint and a fix that works (``what``: "run" or "prior")."""
    try:
        status = ckpt.restore(path)
        if partial:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
        return status
    except Exception as err:  # noqa: BLE001  (corrupt files raise OpError, IndexError, ValueError, ...)
        if _vanished(path, err):
            raise CheckpointGone(path) from None
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        fix = _restore_fix(path, what)
        if _vanished(path, err):                          # removed while the fix was being worked out
            raise CheckpointGone(path) from None
        raise ValueError(f"cannot restore checkpoint {path}: {fix} ({first})") from None


def _vanished(path: str, err: BaseException) -> bool:
    """The checkpoint (or one of its files) is gone, as a writer's rotation removes it, rather
    than damaged: no longer among the complete checkpoints, or its files not found."""
    missing = isinstance(err, tf.errors.NotFoundError) or "Failed to find any matching files" in str(err)
    return missing or path not in [p for _, p in complete(Path(path).parent)]


def _restore_fix(path: str, what: str) -> str:
    """Why a readable-looking checkpoint did not restore, and what to do."""
    refit = "refit the prior with `shortdiff fit-prior` (after deleting its folder)" if what == "prior" else \
        "train a new run, or restore the run's own config.json"
    try:
        reader = tf.train.load_checkpoint(path)
        names = set(n for n, _ in tf.train.list_variables(path))
        for name in names:                           # the error path only: every value must read
            reader.get_tensor(name)
    except Exception:  # noqa: BLE001
        return "it is unreadable (damaged); delete it to fall back to an earlier checkpoint" if _earlier(path) \
            else f"it is unreadable (damaged) and there is no earlier one; {refit}"
    earlier = _earlier(path)
    try:
        other = set(n for n, _ in tf.train.list_variables(earlier)) if earlier else names
    except Exception:  # noqa: BLE001  (rotated away meanwhile)
        other = names
    if other != names:
        return f"it does not match this model; delete it to fall back to {Path(earlier).name}"
    return f"every checkpoint in {Path(path).parent} is from another model (other variables); {refit}"


def _earlier(path: str):
    """The newest complete checkpoint before ``path`` in its folder, or None."""
    found = [p for n, p in complete(Path(path).parent) if p != path and n < int(path.rsplit("-", 1)[1])]
    return found[-1] if found else None


def restore_newest(ckpt: tf.train.Checkpoint, directory, partial: bool = False, what: str = "run"):
    """Restore the newest complete checkpoint of ``directory``; if a writer rotates it away while it
    is read, the new newest, up to ``READ_TRIES`` times.  -> its prefix, or None for none."""
    for _ in range(READ_TRIES):
        path = newest_complete(directory)
        if path is None:
            return None
        try:
            restore(ckpt, path, partial, what)
            return path
        except CheckpointGone:
            continue
    raise ValueError(f"the checkpoints in {directory} were replaced {READ_TRIES} times while being read; "
                     f"retry when the writer saves less often (--checkpoint-every)")
