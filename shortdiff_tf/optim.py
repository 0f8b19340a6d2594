"""The optimiser pieces shared by score training and the Glow fit: ScoreSDE's linear warm-up and
one clipped, replica-aware update.

  lr_n = lr min(1, (n + 1) / warmup)
  g <- g min(1, c / |g_total|),  |g_total| the global norm of the gradients summed over replicas
"""
from __future__ import annotations

import keras
import tensorflow as tf


@keras.saving.register_keras_serializable(package="shortdiff")
class WarmUp(keras.optimizers.schedules.LearningRateSchedule):
    """lr * min(1, (step + 1) / warmup)  (ScoreSDE's linear warm-up)."""

    def __init__(self, lr: float, warmup: int):
        self.lr, self.warmup = float(lr), int(warmup)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        return self.lr * tf.minimum(1.0, (step + 1.0) / max(self.warmup, 1))

    def get_config(self):
        return {"lr": self.lr, "warmup": self.warmup}


def adam(lr: float, warmup: int) -> keras.optimizers.Optimizer:
    return keras.optimizers.Adam(WarmUp(lr, warmup))


def clipped_apply(optimizer, grads, variables, clip_norm: float):
    """In a replica context: clip this replica's gradients by the global norm of the gradients
    summed over all replicas (``clip_norm`` <= 0: no clipping) and apply them. -> that norm.

    Each replica's gradient is its share of the global-batch loss
    (``tf.nn.compute_average_loss``), so the summed gradient is the full batch's and every
    replica scales by the same factor.
    """
    total = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
    norm = tf.linalg.global_norm(total)
    factor = tf.minimum(1.0, clip_norm / (norm + 1e-12)) if clip_norm > 0 else 1.0
    optimizer.apply_gradients(zip([g * factor for g in grads], variables))
    return norm
