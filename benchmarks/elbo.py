"""The ELBO's standard error against the exact log-likelihood's, on the same test images.

For a trained run: the PF-ODE log-likelihood of ``--num-examples`` test images (one
dequantisation and one probe each) and, on the same dequantised images, the ELBO with p_noise
and with the run's auxiliary prior for each estimator setting: the control variate (on: beta =
1, off: beta = 0, optimal: the variance-minimising beta), K (t, e, x_T) draws per example, and
the Gaussian prior term in closed form or by one Monte Carlo draw (the estimator before this
benchmark: control on, K = 1, Monte Carlo).  Target: the ELBO's standard error over examples at
most 2 x the exact log-likelihood's.

    python benchmarks/elbo.py --workdir RUN [--dataset TEST] [--num-examples 64] [--draws 1,4,16] [--out FILE]

``--dataset``: the test images when the run's data set has no test split of its own (an .npz of
training images, as ``benchmarks/mnist_subset.py`` writes: pass its ``test.npz``).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402

TARGET = 2.0
CONTROLS = ("on", "off", "optimal")


class MonteCarloOnly:
    """A prior seen only through log_prob: its term is estimated at the drawn x_T."""

    def __init__(self, prior):
        self.log_prob = prior.log_prob


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--dataset", default=None, help="test images  [default: the run's data set, test split]")
    ap.add_argument("--num-examples", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--draws", default="1,4,16")
    ap.add_argument("--controls", default=",".join(CONTROLS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from shortdiff_tf import pixels, elbo
    from shortdiff_tf.app.evaluate import evaluate_run, load_eval_data
    from shortdiff_tf.app.runs import load_run, resolve_prior
    from shortdiff_tf.seeds import split

    run = load_run(args.workdir)
    start = time.perf_counter()                # the exact likelihood, as `shortdiff evaluate` (resumable)
    report = evaluate_run(args.workdir, dataset=args.dataset, num_examples=args.num_examples,
                          batch_size=args.batch_size, seed=args.seed,
                          prior="aux", elbo_draws=1)
    exact = {"noise": report["likelihood_noise"], "aux": report["likelihood"]}
    exact_sem = {k: v["log_prob_sem"] for k, v in exact.items()}
    print(f"exact log-likelihood ({time.perf_counter() - start:.0f} s): "
          + ", ".join(f"{k} {v['log_prob']:.2f} +- {v['log_prob_sem']:.2f}" for k, v in exact.items()))
    x = pixels.to_model_space(load_eval_data(run, args.dataset, "test", args.num_examples), split(args.seed, 0))
    aux, T, aux_name = resolve_prior(run, "aux")
    sde, score = run.sde(T), run.score_fn(T)
    noise = sde.prior(run.shape)
    rows = []
    settings = [("on", 1, "monte carlo")] + [(c, int(k), "closed form") for c in args.controls.split(",")
                                              for k in args.draws.split(",")]
    for control, draws, term in settings:
        priors = {"noise": MonteCarloOnly(noise) if term == "monte carlo" else noise, "aux": aux}
        start = time.perf_counter()
        res = elbo.elbos(sde, score, priors, x, split(args.seed, 10**6), batch_size=args.batch_size,
                         draws=draws, control=control)
        row = {"control": control, "draws": draws, "noise_term": term, "seconds": time.perf_counter() - start}
        for name, e in res.items():
            row[name] = {**e.as_dict(), "sem_over_exact": e.elbo.sem / exact_sem[name]}
        gain = res["aux"].minus(res["noise"])
        row["aux_minus_noise"] = {"mean": gain.mean, "sem": gain.sem}
        rows.append(row)
        print(f"control {control:7} K={draws:<3} p_noise term {term:11}: " + ", ".join(
            f"{name} ELBO {row[name]['elbo']:.2f} +- {row[name]['elbo_sem']:.2f} (I +- {row[name]['I_sem']:.2f}, "
            f"{row[name]['sem_over_exact']:.2f} x exact's)" for name in res) + f", beta {row['noise']['control_beta']:.3f}")
    write("elbo", {"config": vars(args), "T": T, "aux_prior": aux_name, "num_examples": len(x),
                   "exact": {k: {"mean": v["log_prob"], "sem": v["log_prob_sem"]} for k, v in exact.items()},
                   "nfe": report["nfe_mean"], "target_sem_ratio": TARGET, "results": rows}, args.out)


if __name__ == "__main__":
    main()
