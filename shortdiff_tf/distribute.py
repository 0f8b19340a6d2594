"""Choosing a tf.distribute strategy by name (the existing engine, never a home-made one)."""
from __future__ import annotations

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored")


def get(name: str = "auto") -> tf.distribute.Strategy:
    """auto: MirroredStrategy over the GPUs when there are several, else the default strategy."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()
