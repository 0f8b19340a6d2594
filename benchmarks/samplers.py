"""Sampler cost against T on the 2-D toy mixture, with the exact score and the exact p(x, T).

SDE samplers take a fixed step of 1e-3, so their steps (and NFE) are linear in T; the adaptive
probability-flow ODE's NFE falls with T, less than linearly.  Wall time is the median of
``--repeats`` runs after one compile run.

    python benchmarks/samplers.py [--num 1000] [--repeats 5] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import timed, write  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--Ts", default="1.0,0.6,0.4,0.2")
    ap.add_argument("--sde", default="vp")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    import tensorflow as tf
    from shortdiff_tf import samplers, sde as sde_lib, toy

    rows = []
    for T in [float(v) for v in args.Ts.split(",")]:
        sde = sde_lib.get_sde(args.sde, T=T, eps=1e-3)
        diff = toy.ToyDiffusion(toy.get_toy("gmm2d"), sde)
        for preset in ("em", "pc", "ode"):
            sampler = samplers.Sampler(sde, diff.score, diff.marginal(T), samplers.PRESETS[preset])
            median, times, res = timed(lambda: sampler(args.num, 0), args.repeats)
            rows.append({"T": T, "sampler": preset, "steps": None if preset == "ode" else sampler.default_steps(),
                         "nfe": res.nfe, "seconds_median": median, "seconds": times,
                         "finite": bool(tf.reduce_all(tf.math.is_finite(res.x)))})
            print(f"T={T:<4} {preset:<4} nfe={res.nfe:<5} {median:.3f}s")
    write("samplers", {"config": {"data": "gmm2d", "sde": args.sde, "eps": 1e-3, "num_samples": args.num,
                                  "repeats": args.repeats, "score": "exact", "prior": "exact p(x,T)",
                                  "ode_rtol": 1e-5, "ode_atol": 1e-5, "sde_step": 1e-3},
                       "results": rows}, args.out)


if __name__ == "__main__":
    main()
