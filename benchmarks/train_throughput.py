"""Training-step throughput of the digits and MNIST presets, and bits/dim of T = 1 vs T = 0.4.

Images/s is the median over ``--repeats`` timed windows of ``--window`` compiled steps (after a
warm-up), at batch 64 and 128, with the parameter count and an estimate of the FLOPs of a step
(convolution and matmul FLOPs of the forward pass from TF's profiler, times 3 for forward +
backward).  ``--bpd-steps`` > 0 also trains digits at T = 1 and T = 0.4 with the same budget and
reports PF-ODE bits/dim on the test split.

    python benchmarks/train_throughput.py [--repeats 5] [--bpd-steps 2500] [--out FILE]
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402


def forward_flops(net, shape, batch) -> float:
    """FLOPs of one forward pass from the TF profiler (float ops of the traced graph)."""
    import tensorflow as tf
    from tensorflow.python.profiler import model_analyzer, option_builder
    fn = tf.function(lambda x, c: net([x, c]))
    concrete = fn.get_concrete_function(tf.TensorSpec((batch,) + tuple(shape)), tf.TensorSpec((batch,)))
    opts = option_builder.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    info = model_analyzer.profile(concrete.graph, options=opts)
    return float(info.total_float_ops)


def throughput(preset: str, shape, batch: int, repeats: int, window: int) -> dict:
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf import config, networks, training
    cfg = config.RunConfig(data=config.DataConfig(dataset=preset, shape=shape), model=config.model_preset(shape),
                           train=dataclasses.replace(config.train_preset(preset, shape), batch_size=batch))
    strategy = tf.distribute.get_strategy()
    state = training.build_state(cfg, shape, strategy)
    step = training.make_train_step(cfg, state, strategy)
    array = np.random.RandomState(0).randint(0, 256, (max(4 * batch, 512),) + tuple(shape)).astype(np.uint8)
    batches = [training.make_batch_fn(array, batch, 0, True)(tf.constant(i, tf.int64)) for i in range(window)]
    for b in batches[:3]:
        step(b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            loss, _ = step(b)
        float(loss)
        rates.append(window * batch / (time.perf_counter() - start))
    fwd = forward_flops(state.net, shape, batch) / batch
    rate = statistics.median(rates)
    return {"preset": preset, "shape": list(shape), "batch": batch, "params": networks.count_params(state.net),
            "images_per_s_median": rate, "images_per_s": rates, "gflop_per_image_fwd_bwd": 3 * fwd / 1e9,
            "gflop_per_s": 3 * fwd * rate / 1e9, "seconds_per_step": batch / rate}


def bpd_against_T(steps: int, num_examples: int) -> list:
    from shortdiff_tf import config, training
    from shortdiff_tf.evaluation import evaluate_run
    rows = []
    for T in (1.0, 0.4):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config.RunConfig(sde=config.SDEConfig(T=T), data=config.DataConfig(dataset="digits"),
                                   train=dataclasses.replace(config.train_preset("digits", (8, 8, 1)), steps=steps))
            start = time.perf_counter()
            training.train(cfg, tmp, progress=False, log=lambda *_: None)
            train_s = time.perf_counter() - start
            r = evaluate_run(tmp, num_examples=num_examples)
            rows.append({"T": T, "steps": steps, "train_seconds": train_s, "likelihood": r["likelihood"],
                         "elbo": r["elbo"], "nfe_mean": r["nfe_mean"], "num_examples": r["num_examples"]})
            print(f"T={T}: bpd {r['likelihood']['bpd']:.3f} ± {r['likelihood']['bpd_sem']:.3f}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--bpd-steps", type=int, default=2500)
    ap.add_argument("--bpd-examples", type=int, default=128)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    for preset, shape in (("digits", (8, 8, 1)), ("mnist", (28, 28, 1))):
        for batch in (64, 128):
            row = throughput(preset, shape, batch, args.repeats, args.window)
            rows.append(row)
            print(f"{preset} batch {batch}: {row['images_per_s_median']:.0f} img/s, "
                  f"{row['gflop_per_s']:.1f} GFLOP/s, {row['params']:,} params")
    bpd = bpd_against_T(args.bpd_steps, args.bpd_examples) if args.bpd_steps > 0 else []
    write("train_throughput", {"config": vars(args), "throughput": rows, "bpd_against_T": bpd}, args.out)


if __name__ == "__main__":
    main()
