"""The likelihood's adaptive solver against scipy's RK45 (ScoreSDE's recipe) and TFP's Dormand-Prince.

One problem for all three: the PF-ODE of a preset's U-Net (random weights; the VP SDE at T = 1)
augmented with the Hutchinson divergence for one fixed Rademacher probe, from eps = 1e-5 to T,
on one batch, at rtol = atol = 1e-5.  For each solver: NFE, seconds of the first call (tracing
and graph optimisation included) and the median of warm calls, and the final state's distance
to scipy's.  Targets: NFE <= 1.05 x scipy's; first call <= 1.3 x a warm call.

    python benchmarks/solver.py [--presets digits,mnist] [--batch 16] [--repeats 3] [--out FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import untrained_score, write  # noqa: E402

SHAPES = {"digits": (8, 8, 1), "mnist": (28, 28, 1)}
NFE_TARGET, FIRST_CALL_TARGET = 1.05, 1.3


def augmented(sde, score, z):
    """(t, (x, delta)) -> (dx/dt, d delta/dt): the likelihood ODE's right-hand side."""
    import tensorflow as tf
    from shortdiff_tf import likelihood
    from shortdiff_tf.sde import reverse_drift

    def rhs(t, state):
        x = state[0]
        ones = tf.ones(tf.shape(x)[:1], x.dtype)
        return likelihood.hutchinson_divergence(lambda y: reverse_drift(sde, score, y, t * ones, ode=True), x, z)

    return rhs


def timed_calls(fn, repeats: int):
    start = time.perf_counter()
    out = fn()
    first = time.perf_counter() - start
    warm = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        warm.append(time.perf_counter() - start)
    return out, first, warm


def ours(rhs, x, rtol, repeats):
    import tensorflow as tf
    from shortdiff_tf import ode
    solve = tf.function(lambda x: ode.solve(rhs, 1e-5, 1.0, (x, tf.zeros(tf.shape(x)[:1])), rtol, rtol),
                        autograph=False)                 # as the library's LikelihoodEstimator
    ((x_T, delta), nfe), first, warm = timed_calls(lambda: solve(x), repeats)
    return {"nfe": int(nfe), "first_call_s": first, "warm_s": warm, "x_T": x_T.numpy(), "delta": delta.numpy()}


def tfp_solver(rhs, x, rtol, repeats):
    import tensorflow as tf
    import tensorflow_probability as tfp

    @tf.function
    def solve(x):
        res = tfp.math.ode.DormandPrince(rtol=rtol, atol=rtol).solve(
            rhs, 1e-5, (x, tf.zeros(tf.shape(x)[:1])), solution_times=[1.0])
        return (res.states[0][-1], res.states[1][-1]), res.diagnostics.num_ode_fn_evaluations

    ((x_T, delta), nfe), first, warm = timed_calls(lambda: solve(x), repeats)
    return {"nfe": int(nfe), "first_call_s": first, "warm_s": warm, "x_T": x_T.numpy(), "delta": delta.numpy()}


def scipy_solver(rhs, x, rtol):
    """ScoreSDE's recipe: solve_ivp RK45 on the flattened state, one host round-trip per evaluation."""
    import numpy as np
    import tensorflow as tf
    from scipy.integrate import solve_ivp
    shape, n = x.shape, int(np.prod(x.shape))
    step = tf.function(lambda t, y: rhs(t, (tf.reshape(y[:n], shape), y[n:])))

    def fun(t, y):
        dx, div = step(tf.constant(t, tf.float32), tf.constant(y, tf.float32))
        return np.concatenate([dx.numpy().ravel(), div.numpy()]).astype(np.float64)

    y0 = np.concatenate([x.numpy().ravel(), np.zeros(shape[0])])
    start = time.perf_counter()
    sol = solve_ivp(fun, (1e-5, 1.0), y0, method="RK45", rtol=rtol, atol=rtol)
    return {"nfe": int(sol.nfev), "seconds": time.perf_counter() - start,
            "x_T": sol.y[:n, -1].reshape(shape), "delta": sol.y[n:, -1]}


def measure(preset: str, batch: int, repeats: int, rtol: float) -> dict:
    import numpy as np
    import tensorflow as tf
    from shortdiff_tf import likelihood
    shape = SHAPES[preset]
    sde, score, _ = untrained_score(preset, shape)
    x = tf.random.stateless_normal((batch,) + shape, [1, 2])
    rhs = augmented(sde, score, likelihood.probe_noise(tf.shape(x), tf.constant([3, 4])))
    ref = scipy_solver(rhs, x, rtol)
    row = {"preset": preset, "batch": batch, "rtol": rtol, "atol": rtol, "scipy_rk45": ref}
    for name, fn in (("ours", ours), ("tfp", tfp_solver)):
        r = fn(rhs, x, rtol, repeats)
        r["nfe_over_scipy"] = r["nfe"] / ref["nfe"]
        r["first_over_warm"] = r["first_call_s"] / statistics.median(r["warm_s"])
        r["max_abs_delta_vs_scipy"] = float(np.max(np.abs(r["delta"] - ref["delta"])))
        row[name] = r
    for r in (row["scipy_rk45"], row["ours"], row["tfp"]):
        r.pop("x_T"), r.pop("delta")
    row["meets_nfe_target"] = row["ours"]["nfe_over_scipy"] <= NFE_TARGET
    row["meets_first_call_target"] = row["ours"]["first_over_warm"] <= FIRST_CALL_TARGET
    return row


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="digits,mnist")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rtol", type=float, default=1e-5)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    rows = []
    for preset in args.presets.split(","):
        r = measure(preset, args.batch, args.repeats, args.rtol)
        rows.append(r)
        for name in ("ours", "tfp"):
            s = r[name]
            print(f"{preset}: {name} NFE {s['nfe']} ({s['nfe_over_scipy']:.3f} x scipy's {r['scipy_rk45']['nfe']}), "
                  f"first call {s['first_call_s']:.1f} s, warm {statistics.median(s['warm_s']):.1f} s "
                  f"({s['first_over_warm']:.2f} x), |delta - scipy| {s['max_abs_delta_vs_scipy']:.2e}")
        print(f"{preset}: scipy RK45 {r['scipy_rk45']['seconds']:.1f} s; targets: NFE <= {NFE_TARGET} x "
              f"{'met' if r['meets_nfe_target'] else 'NOT met'}, first call <= {FIRST_CALL_TARGET} x warm "
              f"{'met' if r['meets_first_call_target'] else 'NOT met'}")
    write("solver", {"config": vars(args), "results": rows}, args.out)


if __name__ == "__main__":
    main()
