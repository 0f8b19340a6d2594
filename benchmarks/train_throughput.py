"""Training-step throughput and peak memory of the presets, and bits/dim of T = 1 vs T = 0.4.

Throughput: images/s is the median over ``--repeats`` timed windows of ``--window`` compiled steps
(after a warm-up), at batch 64 and 128 (``--batch`` to choose), with the parameter count, under
the run's strategy (``auto``: mirrored over several GPUs), with ``--precision`` and ``--jit`` as
in ``shortdiff train``.  ``--preset`` picks the networks: digits, mnist, cifar10 (the by-size
presets) or a named preset (ddpmpp-cifar10, ddpmpp-mnist).  Each row also holds the device, its
measured matmul peak in the compute dtype (a 4096 x 4096 product), the fraction of it reached,
the device allocator's peak memory during a step, and the all-reduces traced in the step.  FLOPs count convolutions and
matrix products only: the forward pass's, from TF's per-op FLOP statistics
of the traced graph, times 3 for forward + backward (each convolution's input and filter
gradients cost one forward each).  Target: >= 150 GFLOP/s for the MNIST preset at its batch.

Memory: the peak bytes held by TF's CPU allocator during one compiled training step (after a
warm-up step), for the MNIST and CIFAR-10 presets at their batch size, with --grad-accum 1 and 4,
and the bytes of the state (weights, Adam moments, EMA).

``--bpd-steps`` > 0 also trains digits at T = 1 and T = 0.4 with the same budget and reports
PF-ODE bits/dim on the test split.

    python benchmarks/train_throughput.py [--preset mnist ...] [--precision bf16] [--jit] [--repeats 5]
        [--bpd-steps 2500] [--out FILE]
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

TARGET_GFLOP_S = 150.0
COUNTED_OPS = ("Conv2D", "MatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum")
PRESETS = {"digits": (8, 8, 1), "mnist": (28, 28, 1), "cifar10": (32, 32, 3)}


def forward_flops(net, shape) -> float:
    """Convolution and matmul FLOPs of one forward pass per image (TF's per-op FLOP statistics)."""
    import tensorflow as tf
    from tensorflow.python.framework import ops as ops_lib
    fn = tf.function(lambda x, c: net([x, c]))
    graph = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(shape)), tf.TensorSpec((1,))).graph
    total = 0
    for op in graph.get_operations():
        if op.type in COUNTED_OPS:
            total += ops_lib.get_stats_for_node_def(graph, op.node_def, "flops").value or 0
    return float(total)


def preset_batch(preset: str) -> int:
    from shortdiff_tf import config
    return config.train_preset(preset, PRESETS[preset]).batch_size


def preset_config(preset: str, batch: int, grad_accum: int = 1, precision: str = "fp32", jit: bool = False):
    from shortdiff_tf import config
    if preset in config.RUN_PRESETS:
        base = config.run_preset(preset)
    else:
        shape = PRESETS[preset]
        base = config.RunConfig(data=config.DataConfig(dataset=preset, shape=shape),
                                model=config.model_preset(shape), train=config.train_preset(preset, shape))
    train = dataclasses.replace(base.train, batch_size=batch, grad_accum=grad_accum, precision=precision, jit=jit)
    return dataclasses.replace(base, train=train)


def compiled_step(cfg, num_batches: int, strategy=None):
    """-> (state, step, batches): a built training step and some distributed global batches of
    random images."""
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf import pipeline, training
    shape, batch = cfg.data.shape, cfg.train.batch_size
    strategy = strategy or tf.distribute.get_strategy()
    state = training.build_state(cfg, shape, strategy)
    step = training.make_train_step(cfg, state, strategy)
    array = np.random.RandomState(0).randint(0, 256, (max(4 * batch, 512),) + tuple(shape)).astype(np.uint8)
    batch_fn = pipeline.make_batch_fn(array, batch, 0, True)
    return state, step, list(pipeline.distributed_batches(batch_fn, 0, num_batches, strategy))


def device() -> str:
    import tensorflow as tf
    return "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"


def matmul_peak(precision: str, n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product in the compute dtype of ``precision`` on ``device()``
    (median of ``repeats``): the peak that the step's GFLOP/s is set against."""
    import tensorflow as tf
    dtype = {"fp32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[precision]
    with tf.device(device()):
        a = tf.random.normal([n, n], dtype=tf.float32)
        a = tf.cast(a, dtype)
        fn = tf.function(lambda x: tf.reduce_sum(tf.cast(tf.matmul(x, x), tf.float32)))
        fn(a).numpy()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(a).numpy()
            times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def throughput(preset: str, batch: int, repeats: int, window: int, precision: str = "fp32", jit: bool = False,
               strategy_name: str = "auto", peak: float = float("nan")) -> dict:
    import tensorflow as tf
    from shortdiff_tf import distribute, networks
    cfg = preset_config(preset, batch, precision=precision, jit=jit)
    strategy = distribute.get(strategy_name)
    state, step, batches = compiled_step(cfg, window, strategy)
    with distribute.AllReduceCounter() as counter:
        step(batches[0])                                    # traces the step
    for b in batches[1:3]:
        step(b)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for b in batches:
            loss, _ = step(b)
        float(loss)
        rates.append(window * batch / (time.perf_counter() - start))
    tf.config.experimental.reset_memory_stats(device())
    float(step(batches[0])[0])
    peak_mib = tf.config.experimental.get_memory_info(device())["peak"] / 2**20
    gflop = 3 * forward_flops(state.net, cfg.data.shape) / 1e9
    rate = statistics.median(rates)
    replicas = strategy.num_replicas_in_sync
    row = {"preset": preset, "shape": list(cfg.data.shape), "batch": batch, "precision": precision, "jit": jit,
           "device": device(), "replicas": replicas, "params": networks.count_params(state.net),
           "images_per_s_median": rate, "images_per_s": rates, "gflop_per_image_fwd_bwd": gflop,
           "gflop_per_s": gflop * rate, "device_matmul_peak_gflop_per_s": peak,
           "fraction_of_peak": gflop * rate / (peak * replicas), "peak_memory_mib": peak_mib,
           "all_reduces_per_replica": len(counter.calls) // replicas, "tensors_per_all_reduce": counter.calls[:1],
           "seconds_per_step": batch / rate}
    if preset == "mnist" and batch == preset_batch(preset) and precision == "fp32" and not jit:
        row.update(target_gflop_per_s=TARGET_GFLOP_S, meets_target=gflop * rate >= TARGET_GFLOP_S)
    return row


def peak_memory(preset: str, grad_accum: int) -> dict:
    """Peak bytes of TF's CPU allocator during one training step at the preset's batch size."""
    import tensorflow as tf
    from shortdiff_tf import networks
    cfg = preset_config(preset, preset_batch(preset), grad_accum)
    state, step, batches = compiled_step(cfg, 2)
    float(step(batches[0])[0])
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    start = time.perf_counter()
    float(step(batches[1])[0])
    seconds = time.perf_counter() - start
    peak = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    params = networks.count_params(state.net)
    return {"preset": preset, "batch": cfg.train.batch_size, "grad_accum": grad_accum, "params": params,
            "state_mib": 4 * params * 4 / 2**20, "allocated_before_step_mib": before / 2**20,
            "peak_during_step_mib": peak / 2**20, "step_working_set_mib": (peak - before) / 2**20,
            "seconds_per_step": seconds}


def bpd_against_T(steps: int, num_examples: int) -> list:
    from shortdiff_tf import config
    from shortdiff_tf.app.evaluate import evaluate_run
    from shortdiff_tf.app.train import train
    rows = []
    for T in (1.0, 0.4):
        with tempfile.TemporaryDirectory() as tmp:
            cfg = config.RunConfig(sde=config.SDEConfig(T=T), data=config.DataConfig(dataset="digits"),
                                   train=dataclasses.replace(config.train_preset("digits", (8, 8, 1)), steps=steps))
            start = time.perf_counter()
            train(cfg, tmp, progress=False, log=lambda *_: None)
            train_s = time.perf_counter() - start
            r = evaluate_run(tmp, num_examples=num_examples)
            rows.append({"T": T, "steps": steps, "train_seconds": train_s, "likelihood": r["likelihood"],
                         "elbo": r["elbo"], "nfe_mean": r["nfe_mean"], "num_examples": r["num_examples"]})
            print(f"T={T}: bpd {r['likelihood']['bpd']:.3f} ± {r['likelihood']['bpd_sem']:.3f}")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", nargs="+", default=["digits", "mnist"],
                    help="digits, mnist, cifar10 (by-size presets), ddpmpp-cifar10, ddpmpp-mnist")
    ap.add_argument("--batch", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    ap.add_argument("--jit", action="store_true", help="XLA for the train step, as shortdiff train --jit")
    ap.add_argument("--strategy", default="auto", help="as shortdiff train --strategy")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--window", type=int, default=10)
    ap.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--bpd-steps", type=int, default=2500)
    ap.add_argument("--bpd-examples", type=int, default=128)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    peak = matmul_peak(args.precision)
    print(f"{device()}: matmul peak {peak:.0f} GFLOP/s in {args.precision}")
    for preset in args.preset:
        for batch in args.batch:
            row = throughput(preset, batch, args.repeats, args.window, args.precision, args.jit, args.strategy, peak)
            rows.append(row)
            target = (f" (target >= {TARGET_GFLOP_S:.0f}: {'met' if row['meets_target'] else 'NOT met'})"
                      if "meets_target" in row else "")
            print(f"{preset} batch {batch} {args.precision}{' jit' if args.jit else ''}: "
                  f"{row['images_per_s_median']:.1f} img/s, {row['gflop_per_s']:.1f} GFLOP/s "
                  f"({100 * row['fraction_of_peak']:.0f}% of peak){target}, {row['params']:,} params, "
                  f"peak {row['peak_memory_mib']:.0f} MiB, {row['all_reduces_per_replica']} all-reduce(s) per step")
    memory = []
    for preset in ("mnist", "cifar10") if args.memory else ():
        for accum in (1, 4):
            m = peak_memory(preset, accum)
            memory.append(m)
            print(f"{preset} batch {m['batch']} grad-accum {accum}: peak {m['peak_during_step_mib']:.0f} MiB "
                  f"(step working set {m['step_working_set_mib']:.0f} MiB, state {m['state_mib']:.0f} MiB)")
    bpd = bpd_against_T(args.bpd_steps, args.bpd_examples) if args.bpd_steps > 0 else []
    write("train_throughput", {"config": vars(args), "flops_counted": "conv + matmul, forward x 3",
                               "throughput": rows, "peak_memory": memory, "bpd_against_T": bpd}, args.out)


if __name__ == "__main__":
    main()
