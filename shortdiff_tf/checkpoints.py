"""What a run directory's checkpoints hold, and how they are restored.

Keras 3 models are not tracked as children of ``tf.train.Checkpoint``, so the network's
variables are tracked explicitly, by their Keras path.  A checkpoint holds the network, its
EMA, the optimizer and the step; the step also fixes the RNG and data position (all random
draws are stateless functions of the step).
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf


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
    decay_n = min(decay, (1 + n) / (10 + n))."""

    def __init__(self, variables, decay: float):
        super().__init__(name="ema")
        self.decay = float(decay)
        self.shadow = {k: tf.Variable(v.read_value(), trainable=False, name=k.replace(":", "_"))
                       for k, v in variable_dict(variables).items()}

    def update(self, variables, step):
        n = tf.cast(step, tf.float32)
        decay = tf.minimum(self.decay, (1.0 + n) / (10.0 + n))
        for k, v in variable_dict(variables).items():
            s = self.shadow[k]
            s.assign(decay * s + (1.0 - decay) * tf.cast(v, s.dtype))

    def copy_to(self, variables):
        for k, v in variable_dict(variables).items():
            v.assign(self.shadow[k])


def checkpoint_dir(run_dir) -> Path:
    return Path(run_dir) / "checkpoints"


def latest(run_dir):
    return tf.train.latest_checkpoint(str(checkpoint_dir(run_dir)))


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
