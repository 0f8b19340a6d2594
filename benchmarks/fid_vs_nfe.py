"""Sample quality against cost: FID and KID against NFE, standard (p_noise at T) against ours
(the auxiliary prior at T), for every sampler, on trained runs at several T.

For each run (one T, one score budget) and each prior, every fixed-step sampler is run at about
3, 5, 10, 20, 50 and 100 network evaluations (em: steps = NFE; pc: a predictor and a corrector per
step; heun: 2 n + 1; dpm2m: n + 1), em and pc also at their default 1000 T, and the adaptive
ODE at several tolerances (its NFE is what the solver took).  FID and KID use an offline feature extractor (a classifier from
``shortdiff train-classifier``), against the run's training images.  Each finished point is
appended to ``OUT.partial.jsonl``, so an interrupted benchmark resumes.

The claim checked: with the same solver, ours at T = 0.4 reaches the best FID of standard T = 1
(over its budgets; the cheapest budget that gives it) with at most a third of the network
evaluations.  When standard T = 1's best already lies at its cheapest budget that ratio cannot
be below 1 whatever ours does, so dominance at matched NFE is reported too: at every budget
both ran (the same steps), whether ours has the lower FID, and by what factor.  The floor is the FID of the held-out test images against the same reference.

    python benchmarks/fid_vs_nfe.py --runs runs/digits-vp-T1.0,runs/digits-vp-T0.4,runs/digits-vp-T0.2 \\
        --classifier runs/classifier-digits.keras [--num-samples 1000] [--plot docs/figures/fid_vs_nfe.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write  # noqa: E402

SAMPLERS = ("em", "pc", "heun", "dpm2m", "ode")
BUDGETS = (3, 5, 10, 20, 50, 100)           # plus 1000 T for the SDE samplers (their default)
ODE_TOLERANCES = (1e-1, 1e-2, 1e-3, 1e-5)
CLAIM_T, REFERENCE_T, CLAIM_RATIO = 0.4, 1.0, 1 / 3


def steps_for(sampler: str, nfe: int) -> int:
    """Steps of a fixed-step sampler that spend at most ``nfe`` network evaluations (one at least)."""
    from shortdiff_tf.samplers import steps_for_nfe
    return steps_for_nfe(sampler, nfe)


def points(T: float, samplers=SAMPLERS):
    """(sampler, steps or None, rtol or None) of one run."""
    for sampler in samplers:
        if sampler == "ode":
            yield from (("ode", None, tol) for tol in ODE_TOLERANCES)
        else:
            budgets = {*BUDGETS, round(1000 * T)} if sampler in ("em", "pc") else set(BUDGETS)
            yield from ((sampler, steps_for(sampler, n), None) for n in sorted(budgets))


def measure(run, prior: str, sampler: str, steps, tol, num_samples: int, extractor, reference) -> dict:
    from shortdiff_tf import pixels, quality
    from shortdiff_tf.app import sample
    s = sample.draw(run, sampler=sampler, steps=steps, num_samples=num_samples, seed=1, prior=prior,
                    rtol=tol, atol=tol)
    q = quality.sample_quality(pixels.to_uint8(s.x), reference, extractor)
    r = s.report
    return {"T": r["T"], "prior": r["prior"], "sampler": sampler, "steps": r["steps"], "rtol": tol, "nfe": r["nfe"],
            "seconds": r["seconds"], "fid": q["fid"], "kid": q["kid"], "kid_std": q["kid_std"],
            "num_samples": q["num_samples"], "num_reference": q["num_reference"], "extractor": q["extractor"]}


def claim(rows) -> dict:
    """Per sampler: the NFE ours at CLAIM_T needs to reach standard REFERENCE_T's best FID, and the
    ratio to the NFE at which the standard model reached it."""
    out = {}
    for sampler in SAMPLERS:
        pick = lambda T, prior: sorted((r for r in rows if r["sampler"] == sampler and r["T"] == T
                                        and r["prior"].startswith(prior)), key=lambda r: r["nfe"])
        std, ours = pick(REFERENCE_T, "noise"), pick(CLAIM_T, "aux")
        if not std or not ours:
            continue
        target = min(std, key=lambda r: (r["fid"], r["nfe"]))
        reach = next((r for r in ours if r["fid"] <= target["fid"]), None)
        ratio = reach["nfe"] / target["nfe"] if reach else None
        out[sampler] = {"standard_nfe": target["nfe"], "standard_fid": target["fid"],
                        "ours_nfe": reach["nfe"] if reach else None, "ours_fid": reach["fid"] if reach else None,
                        "best_ours_fid": min(r["fid"] for r in ours), "nfe_ratio": ratio,
                        "holds": ratio is not None and ratio <= CLAIM_RATIO, **dominance(std, ours)}
    return out


def dominance(std, ours) -> dict:
    """At matched NFE (the same steps: both in the rows at one NFE): ours' FID against standard's at
    each, whether ours is lower at every one, and the smallest factor standard / ours."""
    by_nfe = {r["nfe"]: r for r in std}
    matched = [(by_nfe[r["nfe"]], r) for r in ours if r["nfe"] in by_nfe]
    if not matched:
        return {"matched": [], "dominates": None, "min_factor": None}
    rows = [{"nfe": o["nfe"], "standard_fid": s["fid"], "ours_fid": o["fid"], "factor": s["fid"] / o["fid"]}
            for s, o in matched]
    return {"matched": rows, "dominates": all(r["ours_fid"] < r["standard_fid"] for r in rows),
            "min_factor": min(r["factor"] for r in rows)}


def table(rows) -> str:
    """A markdown table: one line per (T, prior, sampler), 'FID (NFE)' per budget."""
    lines = ["| T | prior | sampler | FID (NFE) at each budget, cheapest first |", "|---|---|---|---|"]
    keys = sorted({(r["T"], r["prior"].split(":")[0], r["sampler"]) for r in rows},
                  key=lambda k: (-k[0], k[1], SAMPLERS.index(k[2])))
    for T, prior, sampler in keys:
        mine = sorted((r for r in rows if (r["T"], r["prior"].split(":")[0], r["sampler"]) == (T, prior, sampler)),
                      key=lambda r: r["nfe"])
        cells = ", ".join(f"{r['fid']:.2f} ({r['nfe']})" for r in mine)
        lines.append(f"| {T:g} | {'ours (aux)' if prior == 'aux' else 'standard (noise)'} | {sampler} | {cells} |")
    return "\n".join(lines)


def plot(rows, path: Path) -> None:
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(SAMPLERS), figsize=(4 * len(SAMPLERS), 3.6), sharey=True)
    for ax, sampler in zip(axes, SAMPLERS):
        for T in sorted({r["T"] for r in rows}, reverse=True):
            for prior, style in (("noise", "--"), ("aux", "-")):
                mine = sorted((r for r in rows if r["sampler"] == sampler and r["T"] == T
                               and r["prior"].startswith(prior)), key=lambda r: r["nfe"])
                if mine:
                    ax.plot([r["nfe"] for r in mine], [r["fid"] for r in mine], style, marker="o", ms=3,
                            label=f"T={T:g} {'ours' if prior == 'aux' else 'standard'}")
        ax.set_xscale("log"), ax.set_title(sampler), ax.set_xlabel("NFE")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axes[0].set_ylabel("FID (offline classifier)"), axes[0].set_yscale("log")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", required=True, help="Comma-separated trained run directories with a fitted prior.")
    ap.add_argument("--classifier", required=True, help="A .keras classifier (shortdiff train-classifier).")
    ap.add_argument("--num-samples", type=int, default=1000)
    ap.add_argument("--samplers", default=",".join(SAMPLERS))
    ap.add_argument("--plot")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from shortdiff_tf import extractors, quality
    from shortdiff_tf.app.runs import load_run
    from shortdiff_tf.study.images import reference_images

    out = Path(args.out) if args.out else Path(__file__).parent / "results" / "fid_vs_nfe.json"
    partial = out.with_suffix(".partial.jsonl")
    runs = args.runs.split(",")
    rows = [json.loads(line) for line in partial.read_text().splitlines()] if partial.exists() else []
    rows = [r for r in rows if r["run"] in runs]                # points of other runs are not this benchmark's
    extractor = extractors.load_extractor(args.classifier)
    floors, references = {}, {}
    for run_dir in runs:
        run = load_run(run_dir)
        data = run.cfg.data
        if data.dataset not in references:                     # features of a data set's images, once
            from shortdiff_tf import data as data_lib
            references[data.dataset] = quality.features(extractor, reference_images(run_dir))
            test = data_lib.load(data.dataset, "test", data.data_dir).array
            floors[data.dataset] = quality.sample_quality(test, references[data.dataset], extractor)
        reference = references[data.dataset]
        for prior in ("noise", "aux"):
            for sampler, steps, tol in points(run.cfg.sde.T, args.samplers.split(",")):
                key = (run.cfg.sde.T, prior, sampler, steps, tol)
                if any((r["T"], r["prior"].split(":")[0], r["sampler"], r["steps"], r["rtol"]) == key
                       and r["run"] == str(run_dir) for r in rows):
                    continue
                r = measure(run, prior, sampler, steps, tol, args.num_samples, extractor, reference)
                r["run"] = str(run_dir)
                rows.append(r)
                with partial.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                print(f"T={r['T']:g} {prior:5} {sampler:5} NFE {r['nfe']:5d}  FID {r['fid']:8.3f}  "
                      f"KID {r['kid']:.4f}  {r['seconds']:.1f} s", flush=True)
    verdict = claim(rows)
    for sampler, v in verdict.items():
        print(f"{sampler}: standard T={REFERENCE_T:g} FID {v['standard_fid']:.2f} at NFE {v['standard_nfe']}; "
              f"ours T={CLAIM_T:g} reaches it at NFE {v['ours_nfe']} (ratio {v['nfe_ratio']}); "
              f"claim {'holds' if v['holds'] else 'does not hold'}; at matched NFE "
              + ("none matched" if v["dominates"] is None else
                 f"ours is {'lower at every' if v['dominates'] else 'not lower at every'} budget "
                 f"(standard/ours >= {v['min_factor']:.2f})"))
    print(table(rows))
    if args.plot:
        plot(rows, Path(args.plot))
    for name, q in floors.items():
        print(f"floor: FID of the {q['num_samples']} {name} test images against the reference: {q['fid']:.3f}")
    write("fid_vs_nfe", {"config": vars(args), "claim": verdict, "floor": floors, "results": rows,
                         "table": table(rows)}, str(out))


if __name__ == "__main__":
    main()
