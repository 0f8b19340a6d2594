"""The exported SavedModel against the library: load time, and images/s of ``sample`` at the same
sampler, steps, batch and seed (target: the exported sampler within 10% of the library's); and
after load, the first call of the ``sample`` and ``bpd`` signatures against a warm call (target:
at most 1.3 x), in two loaders:
  - ``tf.saved_model.load`` (TF2, Python);
  - TF Serving's: the TF1 session loader, cold, and after replaying the export's warm-up requests
    (assets.extra/tf_serving_warmup_requests) as TF Serving does at load; the replay's seconds
    are reported as load time.

    python benchmarks/export.py --workdir RUN [--num 64] [--steps 100] [--repeats 5] [--out FILE]

RUN is a trained run (with or without a fitted prior); it is exported to a temporary directory.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import timed, write  # noqa: E402

FIRST_CALL_TARGET = 1.3


def first_and_warm(fn, repeats: int) -> dict:
    """Seconds of the first call (graph optimisation included) and the median of warm calls."""
    start = time.perf_counter()
    fn()
    first = time.perf_counter() - start
    warm, _, _ = timed(fn, repeats)
    return {"first_call_s": first, "warm_s": warm, "first_over_warm": first / warm,
            "meets_target": first / warm <= FIRST_CALL_TARGET}


def session_first_calls(export_dir: str, sample_in: dict, bpd_in: dict, repeats: int, warm_up: bool) -> dict:
    """TF Serving's path: a TF1 session on the SavedModel, the warm-up records replayed (or not),
    then the first and warm calls of ``sample`` and ``bpd``, each run as a Predict request is."""
    import tensorflow as tf
    from shortdiff_tf.app import warmup
    graph = tf.Graph()
    sess = tf.compat.v1.Session(graph=graph)
    with graph.as_default():
        meta = tf.compat.v1.saved_model.loader.load(sess, ["serve"], export_dir)

    def predict(signature, inputs):
        sig = meta.signature_def[signature]
        return sess.run({k: v.name for k, v in sig.outputs.items()}, {sig.inputs[k].name: v for k, v in inputs.items()})

    start = time.perf_counter()
    if warm_up:
        for signature, inputs in warmup.read(export_dir):
            predict(signature, inputs)
    out = {"warm_up_replay_s": time.perf_counter() - start if warm_up else None,
           "sample": first_and_warm(lambda: predict("sample", sample_in), repeats),
           "bpd": first_and_warm(lambda: predict("bpd", bpd_in), repeats)}
    sess.close()
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--sampler", default="em", choices=["em", "pc"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--bpd-batch", type=int, default=16, help="test images per call of the bpd signature")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf import data as data_lib, samplers
    from shortdiff_tf.app import export
    from shortdiff_tf.app.runs import load_run, resolve_prior

    run = load_run(args.workdir)
    prior, T, prior_name = resolve_prior(run, "auto")
    smp = samplers.Sampler(run.sde(T), run.score_fn(T), prior, samplers.preset(args.sampler))
    lib_s, lib_times, lib = timed(lambda: smp(args.num, (1, 2), steps=args.steps).x.numpy(), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        rep = export.export_run(args.workdir, out=str(Path(tmp) / "m" / "1"))
        loads = []
        for _ in range(3):
            start = time.perf_counter()
            model = tf.saved_model.load(rep["out"])
            loads.append(time.perf_counter() - start)
        sig = model.signatures["sample"]
        inputs = dict(num_samples=tf.constant(args.num), seed=tf.constant([1, 2]), steps=tf.constant(args.steps),
                      sampler=tf.constant(args.sampler))
        images = data_lib.load(run.cfg.data.dataset, "test", run.cfg.data.data_dir).array[:args.bpd_batch]
        first_calls = {"sample": first_and_warm(lambda: sig(**inputs)["x"].numpy(), args.repeats),
                       "bpd": first_and_warm(lambda: model.signatures["bpd"](
                           images=tf.constant(images), seed=tf.constant([1, 2]))["bpd"].numpy(), args.repeats)}
        exp_s, exp_times, exp = timed(lambda: sig(**inputs)["x"].numpy(), args.repeats)
        as_numpy = {k: v.numpy() for k, v in inputs.items()}
        bpd_in = {"images": images, "seed": np.array([1, 2], np.int32)}
        serving = {"cold": session_first_calls(rep["out"], as_numpy, bpd_in, args.repeats, warm_up=False),
                   "after_warm_up": session_first_calls(rep["out"], as_numpy, bpd_in, args.repeats, warm_up=True)}
    max_diff = float(abs(exp - lib).max())
    ratio = exp_s / lib_s
    print(f"library {args.num / lib_s:.1f} img/s, exported {args.num / exp_s:.1f} img/s, "
          f"time ratio {ratio:.3f} (target <= 1.10), load {statistics.median(loads):.1f} s, "
          f"max |diff| {max_diff:.2e}")
    for name, r in first_calls.items():
        print(f"exported {name}: first call {r['first_call_s']:.1f} s, warm {r['warm_s']:.1f} s "
              f"({r['first_over_warm']:.2f} x; target <= {FIRST_CALL_TARGET}: {'met' if r['meets_target'] else 'NOT met'})")
    for state, r in serving.items():
        for name in ("sample", "bpd"):
            print(f"TF Serving's loader, {state.replace('_', ' ')}: {name} first call {r[name]['first_call_s']:.1f} s, "
                  f"warm {r[name]['warm_s']:.1f} s ({r[name]['first_over_warm']:.2f} x)")
    write("export", {"config": vars(args), "prior": prior_name, "T": T, "export_seconds": rep["seconds"],
                     "load_seconds_median": statistics.median(loads), "load_seconds": loads,
                     "library_seconds_median": lib_s, "library_seconds": lib_times,
                     "exported_seconds_median": exp_s, "exported_seconds": exp_times,
                     "library_images_per_s": args.num / lib_s, "exported_images_per_s": args.num / exp_s,
                     "time_ratio_exported_over_library": ratio, "target_time_ratio": 1.10,
                     "meets_target": ratio <= 1.10, "max_abs_difference": max_diff,
                     "first_calls_after_load": first_calls, "tf_serving_session_loader": serving}, args.out)


if __name__ == "__main__":
    main()
