"""What warm-starting the Glow saves in ``choose-T``: a fit at T from the flow fitted at a nearby
T against a cold fit, on the bundled digits, with the default Glow (4 steps per level, width 64).

    python benchmarks/warm_start.py [--steps 2000] [--source-T 0.4] [--T 0.3] [--within 0.01]

The "sde" target x_T = m_T x0 + s_T e does not involve the score network, so a one-step run is
enough.  Reported: each fit's NLL (nats/dim) at every logged step, and the first logged step at
which each comes within ``--within`` nats/dim of the cold fit's final NLL.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402


def fit(run: Path, view: str, T: float, steps: int, warm=None) -> list:
    from shortdiff_tf import checkpoints
    from shortdiff_tf.app.fit_prior import fit_prior
    from shortdiff_tf.config import PriorConfig
    from shortdiff_tf.study.images import make_view
    where = make_view(run, run / view, T)
    fit_prior(where, PriorConfig(kind="glow", T=T, steps=steps), progress=False, log=lambda *_: None, warm_start=warm)
    rows = [json.loads(line) for line in (where / "prior" / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["nll_per_dim"]) for r in rows], checkpoints.newest_complete(where / "prior" / "checkpoints")


def first_within(curve, target: float, within: float):
    return next((s for s, nll in curve if nll <= target + within), None)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--source-T", type=float, default=0.4)
    ap.add_argument("--T", type=float, default=0.3)
    ap.add_argument("--within", type=float, default=0.01)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from shortdiff_tf import config
    from shortdiff_tf.app.train import train
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cfg = config.RunConfig(sde=config.SDEConfig(T=max(args.source_T, args.T)),
                               data=config.DataConfig(dataset="digits", shape=(8, 8, 1)),
                               train=config.TrainConfig(steps=1, batch_size=8, sample_grid=0))
        train(cfg, run, progress=False, log=lambda *_: None)
        _, source = fit(run, "source", args.source_T, args.steps)
        cold, _ = fit(run, "cold", args.T, args.steps)
        warm, _ = fit(run, "warm", args.T, args.steps, warm=source)
    target = cold[-1][1]
    result = {"config": vars(args), "cold_final_nll": target, "warm_final_nll": warm[-1][1],
              "cold_steps_to_within": first_within(cold, target, args.within),
              "warm_steps_to_within": first_within(warm, target, args.within), "cold": cold, "warm": warm}
    print(f"T={args.T:g}: within {args.within} nats/dim of the cold fit's final {target:.4f} after "
          f"{result['cold_steps_to_within']} steps cold, {result['warm_steps_to_within']} warm from T={args.source_T:g}")
    write("warm_start", result, args.out)


if __name__ == "__main__":
    main()
