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
    leftovers = sorted(p.name for p in Path(directory).glob("ckpt-*")) if Path(directory).is_dir() else []
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


def all_finite(variables) -> bool:
    """True when every value of every variable is finite (checked before a checkpoint is written)."""
    checks = [tf.reduce_all(tf.math.is_finite(v)) for v in variables if tf.as_dtype(v.dtype).is_floating]
    return bool(tf.reduce_all(tf.stack(checks))) if checks else True          # one read from the device


def restore(ckpt: tf.train.Checkpoint, path: str, partial: bool = False):
    """Restore or raise a one-line ValueError naming the checkpoint and the fix."""
    try:
        status = ckpt.restore(path)
        if partial:
            status.expect_partial()
        else:
            status.assert_existing_objects_matched()
        return status
    except Exception as err:  # noqa: BLE001  (corrupt files raise OpError, IndexError, ValueError, ...)
        first = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot restore checkpoint {path}: it is corrupt or from another model ({first}); "
                         f"delete it to fall back to an earlier one, or train a new run") from None
