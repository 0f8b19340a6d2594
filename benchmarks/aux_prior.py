"""Standard (p_noise) vs ours (auxiliary Glow prior) at T = 1, 0.4, 0.2 on the same score budget.

For each T one score model is trained with the data set's preset (same steps, batch, network);
at T < 1 a Glow prior is fitted on the same run.  Each row reports, on that score model:
  * PF-ODE bits/dim on the first ``--num-examples`` test images (and the ELBO bound),
  * FID/KID of ``--num-samples`` samples from the EM and the ODE sampler against the training
    split, on the features of a classifier trained here on the labelled training split,
  * the samplers' NFE and wall time.

    python benchmarks/aux_prior.py [--dataset digits] [--workdir /tmp/auxbench] [--out FILE]

Runs are kept in ``--workdir``: a rerun reuses finished trainings and priors.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402

ROWS = (("standard", 1.0), ("standard", 0.4), ("ours", 0.4), ("standard", 0.2), ("ours", 0.2))


def train_runs(dataset: str, workdir: Path, Ts, steps) -> dict:
    from shortdiff_tf import config, data
    from shortdiff_tf.app.train import train
    shape = data.load(dataset, "train").shape
    runs = {}
    for T in Ts:
        tcfg = config.train_preset(dataset, shape)
        cfg = config.RunConfig(sde=config.SDEConfig(T=T), data=config.DataConfig(dataset=dataset, shape=shape),
                               model=config.model_preset(shape),
                               train=dataclasses.replace(tcfg, steps=steps or tcfg.steps))
        run_dir = workdir / f"{dataset}-vp-T{T:g}"
        start = time.perf_counter()
        train(cfg, run_dir, progress=False, log=print)
        runs[T] = {"run_dir": run_dir, "train_seconds": time.perf_counter() - start, "steps": cfg.train.steps}
    return runs


def fit_priors(runs: dict, prior_steps: int) -> dict:
    from shortdiff_tf.app.fit_prior import fit_prior
    from shortdiff_tf.config import PriorConfig
    fits = {}
    for T, info in runs.items():
        if T < 1.0:
            start = time.perf_counter()
            rep = fit_prior(info["run_dir"], PriorConfig(kind="glow", T=T, steps=prior_steps),
                                      progress=False, log=print)
            fits[T] = {"seconds": time.perf_counter() - start, "steps": prior_steps,
                       **{k: v for k, v in rep.items() if isinstance(v, (int, float, str))}}
    return fits


def measure_row(kind: str, T: float, run_dir: Path, extractor, reference, args) -> dict:
    import numpy as np
    from shortdiff_tf import quality
    from shortdiff_tf.app.evaluate import evaluate_run
    from shortdiff_tf.app.sample import sample_run
    prior = "aux" if kind == "ours" else "noise"
    ev = evaluate_run(run_dir, num_examples=args.num_examples, prior=prior)
    row = {"model": kind, "T": T, "prior": ev["prior"], "bpd": ev["likelihood"]["bpd"],
           "bpd_sem": ev["likelihood"]["bpd_sem"], "bpd_prior_T": ev["likelihood"]["bpd_prior_T"],
           "bpd_ode": ev["likelihood"]["bpd_ode"], "elbo_bpd_bound": ev["elbo"].get("bpd_bound"),
           "likelihood_nfe_mean": ev["nfe_mean"], "num_examples": ev["num_examples"]}
    for sampler in ("em", "ode"):
        s = sample_run(run_dir, sampler=sampler, num_samples=args.num_samples, seed=1, prior=prior,
                       out=str(Path(run_dir) / "bench" / f"{sampler}-{kind}"))
        with np.load(s["npz"]) as f:
            q = quality.sample_quality(f["images"], reference, extractor)
        row[sampler] = {"nfe": s["nfe"], "seconds": s["seconds"], "fid": q["fid"], "kid": q["kid"],
                        "kid_std": q["kid_std"], "num_samples": q["num_samples"]}
    print(f"{kind:8s} T={T:<4g} bpd {row['bpd']:.3f} ± {row['bpd_sem']:.3f}  "
          f"EM FID {row['em']['fid']:.2f} (NFE {row['em']['nfe']}, {row['em']['seconds']:.0f} s)  "
          f"ODE FID {row['ode']['fid']:.2f} (NFE {row['ode']['nfe']})", flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--workdir", default="/tmp/auxbench")
    ap.add_argument("--steps", type=int, default=0, help="score training steps (0: the data set's preset)")
    ap.add_argument("--prior-steps", type=int, default=2000)
    ap.add_argument("--num-examples", type=int, default=64, help="test images for bits/dim")
    ap.add_argument("--num-samples", type=int, default=512, help="samples per sampler for FID/KID")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    from shortdiff_tf import data, extractors, quality
    workdir = Path(args.workdir)
    runs = train_runs(args.dataset, workdir, sorted({T for _, T in ROWS}, reverse=True), args.steps)
    fits = fit_priors(runs, args.prior_steps)
    classifier = workdir / f"classifier-{args.dataset}.keras"
    cls = (extractors.train_classifier(args.dataset, classifier) if not classifier.exists()
           else {"out": str(classifier)})
    extractor = extractors.ClassifierFeatures(classifier)
    reference = quality.features(extractor, data.load(args.dataset, "train").array)    # once, for every row
    test = data.load(args.dataset, "test").array
    floor = quality.sample_quality(test, reference, extractor)
    print(f"data floor: FID(test, train) {floor['fid']:.2f} with {floor['num_samples']} test images")
    rows = [measure_row(kind, T, runs[T]["run_dir"], extractor, reference, args) for kind, T in ROWS]
    write("aux_prior", {"config": {**vars(args), "rows": ROWS}, "classifier": cls, "data_floor": floor,
                        "training": {str(T): {**v, "run_dir": str(v["run_dir"])} for T, v in runs.items()},
                        "prior_fits": {str(T): v for T, v in fits.items()}, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
