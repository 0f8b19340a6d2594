"""The optimiser pieces shared by score training and the Glow fit: ScoreSDE's linear warm-up and
one clipped, replica-aware update with a single all-reduce of the gradients.

  lr_n = lr min(1, (n + 1) / warmup)
  g = sum_r g_r,  g <- g min(1, c / |g|)   (|g| the global norm of the summed gradient)
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


@keras.saving.register_keras_serializable(package="shortdiff")
class ReducedAdam(keras.optimizers.Adam):
    """Adam for gradients that are already summed over replicas: Keras' TensorFlow optimizer
    all-reduces the gradients again inside ``apply_gradients`` in a replica context; here that
    second all-reduce is the identity (``clipped_apply`` has done the one reduction)."""

    def _all_reduce_sum_gradients(self, grads_and_vars):
        return list(grads_and_vars)

    def update_step(self, gradient, variable, learning_rate):
        """Keras' Adam step as one fused kernel per variable (``ResourceApplyAdam``, the same
        arithmetic: m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2),
        w -= lr sqrt(1 - b2^n) / (1 - b1^n) m / (sqrt(v) + eps)) instead of a dozen ops."""
        if self.amsgrad:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        n = tf.cast(self.iterations + 1, dtype)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        i = self._get_variable_index(variable)
        m, v = (tf_variable(slot[i]) for slot in (self._momentums, self._velocities))
        tf.raw_ops.ResourceApplyAdam(var=tf_variable(variable).handle, m=m.handle, v=v.handle,
                                     beta1_power=tf.pow(beta_1, n), beta2_power=tf.pow(beta_2, n),
                                     lr=tf.cast(learning_rate, dtype), beta1=beta_1, beta2=beta_2,
                                     epsilon=tf.cast(self.epsilon, dtype),
                                     grad=tf.cast(tf.convert_to_tensor(gradient), dtype))        # dense


def tf_variable(variable):
    """The TensorFlow variable behind a Keras one (its replica's copy inside ``strategy.update``)."""
    return variable.value if isinstance(variable, keras.Variable) else variable


ADAM_EPSILON = 1e-8          # ScoreSDE's optim.eps (Keras' default is 1e-7)


def adam(lr: float, warmup: int, precision: str = "fp32") -> keras.optimizers.Optimizer:
    """Adam (beta 0.9, 0.999, epsilon 1e-8: ScoreSDE's) with warm-up; for fp16, inside Keras'
    dynamic loss scaling (a step whose gradients are not finite is skipped and the scale halved;
    2000 finite steps double it)."""
    inner = ReducedAdam(WarmUp(lr, warmup), epsilon=ADAM_EPSILON)
    return keras.optimizers.LossScaleOptimizer(inner) if precision == "fp16" else inner


def loss_scale(optimizer):
    """The factor the loss is multiplied by before differentiating (1 without loss scaling)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return optimizer.dynamic_scale if optimizer.built else optimizer.initial_scale
    return 1.0


def clipped_apply(optimizer, grads, variables, clip_norm: float):
    """In a replica context: sum the gradients over replicas (the step's one all-reduce), clip the
    sum by its global norm (``clip_norm`` <= 0: no clipping) and apply it. -> that norm.

    Each replica's gradient is its share of the global-batch loss
    (``tf.nn.compute_average_loss``), so the summed gradient is the full batch's.  ``optimizer``
    is from ``adam``: it applies the reduced gradient without reducing it again.  With fp16 loss
    scaling, ``grads`` are of the scaled loss and the norm is the unscaled gradient's.
    """
    context = tf.distribute.get_replica_context()
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, grads)
    norm = tf.linalg.global_norm(total) / loss_scale(optimizer)       # of the unscaled gradient
    factor = tf.minimum(1.0, clip_norm / (norm + 1e-12)) if clip_norm > 0 else 1.0
    optimizer.apply_gradients(zip([g * factor for g in total], variables))   # a loss scale optimiser unscales
    return norm
