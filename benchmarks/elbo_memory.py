"""Peak memory of the ELBO against the number of examples, with a Glow prior.

Each N runs in a fresh process (peak RSS is monotone): the ELBO of N random images of
``--shape`` under p_noise and an untrained Glow (the prior terms batch by batch, p_noise as the
control variate), K draws per example, in batches of ``--batch-size``.  The score is the exact
score of a standard normal data set (x -> -x at every t is close enough for memory: the
network's activations are a constant per batch, and the ELBO's own memory is what grows with N).
Target: the peak at N = 4,096 within 10% of the peak at N = 64.

    python benchmarks/elbo_memory.py [--shape 32,32,3] [--sizes 64,512,4096,16384] [--draws 16] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402

ONE = """
import json, resource, sys, time
import tensorflow as tf
from shortdiff_tf import elbo, sde as sde_lib
from shortdiff_tf.priors.glow import GlowPrior
n, shape, draws, batch, levels, steps, hidden = json.loads(sys.argv[1])
sde = sde_lib.VPSDE(T=0.4)
glow = GlowPrior(shape, levels=levels, steps_per_level=steps, hidden=hidden)
glow.initialize(tf.random.stateless_uniform([8] + shape, [0, 1], -1, 1))
x0 = tf.random.stateless_uniform([n] + shape, [0, n], -1, 1)
start = time.perf_counter()
e = elbo.elbos(sde, lambda x, t: -x, {"noise": sde.prior(shape), "aux": glow}, x0, seed=0, batch_size=batch,
               draws=draws)
print(json.dumps({"n": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": time.perf_counter() - start, "paired_sem": e["aux"].minus(e["noise"]).sem,
                  "elbo_sem": e["aux"].elbo.sem}))
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="32,32,3")
    ap.add_argument("--sizes", default="64,512,4096,16384")
    ap.add_argument("--draws", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--glow-levels", type=int, default=3)
    ap.add_argument("--glow-steps", type=int, default=4)
    ap.add_argument("--glow-hidden", type=int, default=64)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    shape = [int(d) for d in args.shape.split(",")]
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        spec = json.dumps([n, shape, args.draws, args.batch_size, args.glow_levels, args.glow_steps, args.glow_hidden])
        out = subprocess.run([sys.executable, "-c", ONE, spec], capture_output=True, text=True,
                             env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
        if out.returncode:
            raise SystemExit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"N = {n:6d}: peak RSS {rows[-1]['peak_rss_mb']:.0f} MB, {rows[-1]['seconds']:.1f} s")
    ratio = rows[-1]["peak_rss_mb"] / rows[0]["peak_rss_mb"]
    print(f"peak at N = {rows[-1]['n']} / peak at N = {rows[0]['n']}: {ratio:.3f}")
    write("elbo_memory", {"config": vars(args), "rows": rows, "peak_ratio_largest_to_smallest": ratio,
                          "target": "peak at N = 4,096 within 10% of the peak at N = 64"}, args.out)


if __name__ == "__main__":
    main()
