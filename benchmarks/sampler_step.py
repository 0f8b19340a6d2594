"""Cost of a sampler step against a network forward of the same batch.

For each preset's U-Net (random weights; cost does not depend on them), at one batch: seconds
of one score evaluation (in a graph loop and as single calls; the smaller is the baseline), and
of one step of the Euler-Maruyama and predictor-corrector (two score evaluations per step)
samplers, each from the difference of a ``--steps``-step and a 1-step run (so prior draws and
compilation cancel).
Target: seconds per score evaluation of a sampler <= 1.05 x a forward.

    python benchmarks/sampler_step.py [--batch 64] [--steps 11] [--repeats 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import per_call_seconds, untrained_score, write  # noqa: E402

TARGET_RATIO = 1.05
SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1)}


def per_step_seconds(sampler, batch: int, steps: int, repeats: int):
    """Median over repeats of (t(steps) - t(1)) / (steps - 1), runs interleaved."""
    for n in (1, steps):
        sampler(batch, 0, steps=n)                 # compile both
    diffs = []
    for _ in range(repeats):
        start = time.perf_counter()
        sampler(batch, 0, steps=1).x.numpy()
        one = time.perf_counter() - start
        start = time.perf_counter()
        sampler(batch, 0, steps=steps).x.numpy()
        many = time.perf_counter() - start
        diffs.append((many - one) / (steps - 1))
    return statistics.median(diffs), diffs


def measure(preset: str, batch: int, steps: int, repeats: int) -> list:
    import tensorflow as tf
    from shortdiff_tf import samplers
    from shortdiff_tf.priors.gaussian import GaussianPrior
    shape = SHAPES[preset]
    sde, score, _ = untrained_score(preset, shape)
    x = tf.random.stateless_normal((batch,) + shape, [1, 2])
    t = tf.fill([batch], 0.5)
    fwd, fwd_all = per_call_seconds(lambda y: y - 1e-3 * score(y, t), x, steps, repeats)
    rows = []
    for name in ("em", "pc"):
        cfg = samplers.PRESETS[name]
        smp = samplers.Sampler(sde, score, GaussianPrior(shape, 1.0), cfg)
        step, step_all = per_step_seconds(smp, batch, steps, repeats)
        per_eval = step / cfg.nfe_per_step()
        rows.append({"preset": preset, "batch": batch, "sampler": name, "nfe_per_step": cfg.nfe_per_step(),
                     "forward_seconds": fwd, "forward_seconds_all": fwd_all, "step_seconds": step,
                     "step_seconds_all": step_all, "seconds_per_evaluation_over_forward": per_eval / fwd,
                     "target_ratio": TARGET_RATIO, "meets_target": per_eval / fwd <= TARGET_RATIO})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=11)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    for preset in SHAPES:
        for r in measure(preset, args.batch, args.steps, args.repeats):
            rows.append(r)
            print(f"{preset} batch {args.batch} {r['sampler']}: forward {r['forward_seconds'] * 1e3:.1f} ms, step "
                  f"{r['step_seconds'] * 1e3:.1f} ms ({r['nfe_per_step']} evaluations): "
                  f"{r['seconds_per_evaluation_over_forward']:.3f} x forward per evaluation "
                  f"(target <= {TARGET_RATIO}: {'met' if r['meets_target'] else 'NOT met'})")
    write("sampler_step", {"config": vars(args), "results": rows}, args.out)


if __name__ == "__main__":
    main()
