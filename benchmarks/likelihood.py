"""Cost of the exact likelihood: one network forward and one VJP per ODE evaluation.

For each preset's U-Net (random weights; cost does not depend on them), at one batch:
seconds of a plain forward and of a forward + VJP (the Hutchinson term), each in a graph loop
and as single calls (the smaller is the baseline), and of the PF-ODE likelihood solve divided
by its NFE.  The number of network calls traced
in one right-hand-side evaluation is counted.  Target: one forward and
one VJP per evaluation, never a second forward: seconds/NFE <= 1.05 x (forward + VJP).
The cost per NFE does not depend on the tolerance, so the default rtol = atol = 1e-3 keeps the
run short (evaluation uses 1e-5).

    python benchmarks/likelihood.py [--batch 16] [--repeats 5] [--out FILE]
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


def counting(score):
    """score_fn that counts its calls; traced once, the right-hand side of the likelihood ODE
    (``hutchinson_divergence`` of the PF-ODE drift, as the estimator builds it) calls it once."""
    calls = []

    def fn(x, t):
        calls.append(1)
        return score(x, t)

    return fn, calls


def measure(preset: str, batch: int, repeats: int, calls: int, rtol: float) -> dict:
    import tensorflow as tf
    from shortdiff_tf import likelihood
    from shortdiff_tf.priors.gaussian import GaussianPrior
    from shortdiff_tf.sde import reverse_drift
    shape = SHAPES[preset]
    sde, score, _ = untrained_score(preset, shape)
    x = tf.random.stateless_normal((batch,) + shape, [1, 2])
    t = tf.fill([batch], 0.5)
    z = likelihood.probe_noise(tf.shape(x), tf.constant([3, 4]))
    drift = lambda y: reverse_drift(sde, score, y, t, ode=True)
    fwd, fwd_times = per_call_seconds(lambda y: y - 1e-3 * drift(y), x, calls, repeats)

    def with_vjp(y):
        dx, div = likelihood.hutchinson_divergence(drift, y, z)
        return y - 1e-3 * dx + 1e-9 * div[:, None, None, None]

    vjp, vjp_times = per_call_seconds(with_vjp, x, calls, repeats)
    counted, traced = counting(score)
    tf.function(lambda y: likelihood.hutchinson_divergence(
        lambda v: reverse_drift(sde, counted, v, t, ode=True), y, z)).get_concrete_function(x)
    est = likelihood.LikelihoodEstimator(sde, score, GaussianPrior(shape, 1.0), rtol=rtol, atol=rtol)
    est(x, seed=0)                                   # compile
    per_nfe = []
    for _ in range(repeats):
        start = time.perf_counter()
        ll = est(x, seed=0)
        per_nfe.append((time.perf_counter() - start) / ll.nfe)
    solve = statistics.median(per_nfe)
    ratio = solve / vjp
    return {"preset": preset, "batch": batch, "nfe": ll.nfe, "network_forwards_per_evaluation": len(traced),
            "forward_seconds": fwd, "forward_seconds_all": fwd_times, "forward_vjp_seconds": vjp,
            "forward_vjp_seconds_all": vjp_times, "vjp_over_forward": vjp / fwd,
            "solve_seconds_per_nfe": solve, "solve_seconds_per_nfe_all": per_nfe,
            "per_nfe_over_forward_vjp": ratio, "target_ratio": TARGET_RATIO,
            "meets_target": len(traced) == 1 and ratio <= TARGET_RATIO}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--calls", type=int, default=10, help="network calls per timed graph loop")
    ap.add_argument("--rtol", type=float, default=1e-3)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    for preset in SHAPES:
        r = measure(preset, args.batch, args.repeats, args.calls, args.rtol)
        rows.append(r)
        print(f"{preset} batch {args.batch}: forward {r['forward_seconds'] * 1e3:.1f} ms, forward+VJP "
              f"{r['forward_vjp_seconds'] * 1e3:.1f} ms, solve {r['solve_seconds_per_nfe'] * 1e3:.1f} ms/NFE "
              f"(NFE {r['nfe']}, {r['network_forwards_per_evaluation']} network forward per evaluation): "
              f"{r['per_nfe_over_forward_vjp']:.3f} x forward+VJP (target <= {TARGET_RATIO}: "
              f"{'met' if r['meets_target'] else 'NOT met'})")
    write("likelihood", {"config": vars(args), "results": rows}, args.out)


if __name__ == "__main__":
    main()
