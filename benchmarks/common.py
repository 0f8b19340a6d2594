"""Helpers shared by the benchmark scripts: machine/version facts, medians, JSON output."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path


def machine() -> dict:
    import numpy as np
    import tensorflow as tf
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(), "tensorflow": tf.__version__,
            "numpy": np.__version__, "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on)")}
    try:
        import tensorflow_probability as tfp
        import keras
        info.update(tensorflow_probability=tfp.__version__, keras=keras.__version__)
    except ImportError:
        pass
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return info


def timed(fn, repeats: int):
    """Call fn() once to warm up (compile), then ``repeats`` times; -> (median s, all times, last result)."""
    result = fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), times, result


def write(name: str, payload: dict, out: str | None = None) -> Path:
    path = Path(out) if out else Path(__file__).parent / "results" / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"benchmark": name, "machine": machine(), "date": time.strftime("%Y-%m-%dT%H:%M:%S"), **payload}
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
    return path


def untrained_score(preset: str, shape):
    """(sde, score_fn, net) of a preset's U-Net with random weights everywhere (the zero-initialised
    output layer too, so the ODE sees a non-trivial field); costs do not depend on training."""
    import keras
    import tensorflow as tf
    from shortdiff_tf import config, networks
    keras.utils.set_random_seed(0)                   # the same network in every process
    net = networks.build_score_net(config.model_preset(shape), shape)
    for v in net.trainable_variables:
        if "conv_out" in v.path and "kernel" in v.path:
            v.assign(tf.random.stateless_normal(v.shape, [0, 1], stddev=0.05))
    sde = config.SDEConfig().build()
    return sde, networks.score_function(net, sde), net


def per_call_seconds(step_fn, x, calls: int, repeats: int):
    """Seconds of one call of ``step_fn(x) -> x``, measured two ways: ``calls`` calls in one graph
    loop (as the samplers run them) and single compiled calls (median of ``repeats`` each).
    -> (the smaller, i.e. the stricter baseline for a ratio, {"loop": [...], "single": [...]})."""
    import tensorflow as tf

    @tf.function
    def loop(x):
        for _ in tf.range(calls):
            x = step_fn(x)
        return x

    single = tf.function(step_fn)
    loop_median, loop_times, _ = timed(lambda: loop(x).numpy(), repeats)
    single_median, single_times, _ = timed(lambda: single(x).numpy(), repeats)
    return min(loop_median / calls, single_median), {"loop": [t / calls for t in loop_times], "single": single_times}
