"""Choosing a tf.distribute strategy by name (the existing engine, never a home-made one).

Several machines: ``multiworker`` is MultiWorkerMirroredStrategy, configured by TF_CONFIG on
each worker.  Every worker runs the same command; the chief (worker 0, or the task of type
"chief") writes the run directory, and the others write their (required) checkpoint saves to a
private temporary directory that is deleted at the end.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")
TF_CONFIG_HELP = ('set TF_CONFIG on every worker, e.g. {"cluster": {"worker": ["host1:port", "host2:port"]}, '
                  '"task": {"type": "worker", "index": 0}} (index 1 on the second machine)')


def get(name: str = "auto") -> tf.distribute.Strategy:
    """auto: MirroredStrategy over the GPUs when there are several, else the default strategy."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")
    if name == "multiworker":
        return multi_worker()
    gpus = tf.config.list_logical_devices("GPU")
    if name == "mirrored" or (name == "auto" and len(gpus) > 1):
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def multi_worker() -> tf.distribute.Strategy:
    """MultiWorkerMirroredStrategy over the cluster that TF_CONFIG describes."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ValueError(f"--strategy multiworker needs TF_CONFIG: {TF_CONFIG_HELP}")
    try:
        cfg = json.loads(raw)
        workers, task = cfg["cluster"]["worker"], cfg["task"]
        if not 0 <= int(task["index"]) < len(workers) + len(cfg["cluster"].get("chief", [])):
            raise ValueError
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"TF_CONFIG is not a valid cluster description: {TF_CONFIG_HELP}") from None
    return tf.distribute.MultiWorkerMirroredStrategy()


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True unless this process is a non-chief worker of a multi-worker strategy."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True
    resolver = strategy.cluster_resolver
    if resolver.task_type == "chief":
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def write_dir(run_dir, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: the run directory (chief) or a private temporary directory."""
    if is_chief(strategy):
        return Path(run_dir)
    task = strategy.cluster_resolver
    return Path(tempfile.mkdtemp(prefix=f"shortdiff-{task.task_type}{task.task_id}-"))


def any_worker(strategy, signum):
    """``signum`` (a signal number or None) of the workers of a multi-worker strategy that got
    one (their mean when they differ): every worker must call this at the same step (a
    collective of two numbers).  With one machine, ``signum`` itself."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return signum
    flag = float(signum or 0)
    value = strategy.run(lambda: tf.stack([tf.constant(flag), tf.constant(float(bool(signum)))]))
    total = strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None).numpy()   # (sum of numbers, count)
    return int(round(total[0] / total[1])) if total[1] else None


def replica_count(strategy) -> int:
    """The replicas of ``strategy`` (1 without one)."""
    return strategy.num_replicas_in_sync if strategy is not None else 1


def multi_replica(strategy):
    """``strategy`` if it has several replicas, else None (one device: no splitting)."""
    return strategy if replica_count(strategy) > 1 else None


def rounded_up(size: int, strategy) -> int:
    """``size`` rounded up to a multiple of ``strategy``'s replicas (each gets an equal share)."""
    r = replica_count(strategy)
    return -(-size // r) * r


def pad_rows(x, size: int):
    """x [n, ...] with copies of its last row appended up to ``size`` rows (a tensor); the caller
    cuts the results back to n."""
    x = tf.convert_to_tensor(x)
    n = int(x.shape[0])
    return x if n >= size else tf.concat([x, tf.repeat(x[-1:], size - n, axis=0)], 0)


def run_per_replica(strategy, fn, args: list) -> list:
    """``fn(*args[k])`` on replica k, all at once; -> [the tuple fn returned on replica k].  The
    data-parallel step of evaluation and sampling: each replica gets its own share of the work."""
    values = strategy.experimental_distribute_values_from_function(lambda ctx: args[ctx.replica_id_in_sync_group])
    out = strategy.run(lambda a: tuple(fn(*a)), args=(values,))
    local = [strategy.experimental_local_results(o) for o in out]
    return [tuple(v[k] for v in local) for k in range(len(args))]


class AllReduceCounter:
    """Counts the cross-replica all-reduces traced while it is active (a diagnostic for tests and
    benchmarks): ``calls`` holds the number of tensors of each ``ReplicaContext.all_reduce``.

        with AllReduceCounter() as counter:
            step(batch)                       # traces the step
        counter.calls                         # e.g. [42]: one all-reduce of 42 gradients
    """

    def __enter__(self):
        self.calls = []
        self._original = tf.distribute.ReplicaContext.all_reduce
        original, calls = self._original, self.calls

        def counting(context, reduce_op, value, options=None):
            calls.append(len(tf.nest.flatten(value)))
            return original(context, reduce_op, value, options)

        tf.distribute.ReplicaContext.all_reduce = counting
        return self

    def __exit__(self, *exc):
        tf.distribute.ReplicaContext.all_reduce = self._original
        return False
