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
