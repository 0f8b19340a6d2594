"""The study and its helper: ``shortdiff study`` (how much T is enough) and ``train-classifier``
(the offline feature extractor for FID/KID)."""
from __future__ import annotations

import math
from pathlib import Path

import click

from cli import checks
from cli.options import ONE_MACHINE_STRATEGIES, SDE_CHOICES, json_option, report
from cli.errors import friendly, should_stop
from cli.options import POSITIVE
from cli.quiet import load_tensorflow


def default_classifier(dataset: str) -> Path:
    """Where ``train-classifier`` saves the classifier of ``dataset`` by default."""
    return Path("classifiers") / f"{Path(dataset).stem}.keras"


@click.command("train-classifier")
@click.option("--dataset", default="digits", help="A labelled image data set (digits, a TFDS name, a .npz with labels).")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory.")
@click.option("--out", type=click.Path(dir_okay=False), default=None,
              help="Where to save it  [default: classifiers/<dataset>.keras].")
@click.option("--epochs", type=click.IntRange(1), default=30, help="Training epochs.")
@click.option("--seed", type=int, default=0, help="Seed of weights and data order.")
@json_option
@friendly(resumable=False)
def train_classifier(dataset, data_dir, out, epochs, seed, as_json):
    """The offline feature extractor for FID/KID: a small CNN on the labelled training split.
    e.g.  shortdiff train-classifier --dataset digits"""
    load_tensorflow()
    from shortdiff_tf.extractors import train_classifier as train_fn
    out = out or str(default_classifier(dataset))
    r = train_fn(dataset, out, epochs=epochs, seed=seed, data_dir=data_dir, log=lambda *_: None)
    report(r, as_json, [f"classifier on {dataset}: test accuracy {r['test_accuracy']:.4f} "
                        f"({r['test_examples']} images) -> {r['out']}"])


def _T_grid(ctx, param, value):
    try:
        grid = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        grid = (math.nan,)
    if not all(math.isfinite(T) for T in grid):
        raise click.BadParameter(f"{value!r} is not a comma-separated list of times, e.g. 0.2,0.4,1.0")
    twice = sorted({T for T in grid if grid.count(T) > 1})
    if twice:
        raise click.BadParameter(f"lists {', '.join(f'{T:g}' for T in twice)} more than once; give each T once "
                                 f"(--seeds repeats a toy point)")
    return grid


@click.command()
@click.option("--dataset", default="gmm1d", help="gmm1d | gmm2d (trains per point) | an image set with --reuse-score.")
@click.option("--sde", type=click.Choice(SDE_CHOICES), default="vp", help="Forward SDE (toy studies).")
@click.option("--T-grid", "T_grid", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0", callback=_T_grid,
              help="Comma-separated diffusion times in (eps, 1].")
@click.option("--seeds", type=click.IntRange(1), default=3, help="Seeds per T (toy): median and 95% band.")
@click.option("--width", type=click.IntRange(1), default=16, help="Toy score MLP width (small on purpose).")
@click.option("--depth", type=click.IntRange(1), default=2, help="Toy score MLP hidden layers.")
@click.option("--steps", type=click.IntRange(1), default=2000, help="Score training steps per toy point.")
@click.option("--prior", "prior", type=click.Choice(["dpgmm", "gmm", "gaussian", "glow"]), default=None,
              help="Auxiliary prior  [default: dpgmm for toy data, glow for images].")
@click.option("--prior-steps", type=click.IntRange(1), default=2000, help="Glow fitting steps per T.")
@click.option("--num-eval", type=click.IntRange(2), default=20000, help="Toy: x0 draws for the ELBO terms and G.")
@click.option("--num-ll", type=click.IntRange(2), default=256, help="Toy: points for the exact PF-ODE likelihood.")
@click.option("--num-samples", type=click.IntRange(2), default=1024, help="Samples per prior and sampler.")
@click.option("--num-examples", type=click.IntRange(1), default=64, help="Images: test images for bits/dim.")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="PF-ODE relative tolerance.")
@click.option("--atol", type=POSITIVE, default=1e-5, help="PF-ODE absolute tolerance.")
@click.option("--samplers", default="em,ode", help="Samplers to measure (comma-separated: em, pc, ode, heun, dpm2m).")
@click.option("--glow-hidden", type=click.IntRange(1), default=64, help="Images: Glow coupling width.")
@click.option("--glow-steps", type=click.IntRange(1), default=4, help="Images: Glow steps per level.")
@click.option("--reuse-score", type=click.Path(), default=None,
              help="Images: a run trained at T = 1, reused on [eps, T] at every T of the grid  "
                   "[default: none: a score model trained per point].")
@click.option("--extractor", default=None,
              help="Images: FID/KID features: fid-inception:classify_image_graph_def.pb (the standard FID network), "
                   "a `shortdiff train-classifier` .keras file, or inception:WEIGHTS.h5 (Keras InceptionV3)  "
                   "[default: none: no FID/KID].")
@click.option("--fid-samples", type=click.IntRange(2), default=None,
              help="Images: samples per FID  [default: 50,000 with fid-inception, else --num-samples].")
@click.option("--fid-stats", type=click.Path(dir_okay=False), default=None,
              help="Images: reference statistics of the extractor (.npz with mu, sigma, the original FID code's "
                   "format)  [default: the training images' features].")
@click.option("--optimize-T", "optimize", type=click.Choice(["joint", "after"]), default=None,
              help="Also ascend the ELBO in T (toy): joint = with the score fit, after = on the largest-T model  "
                   "[default: no ascent].")
@click.option("--optimize-steps", type=click.IntRange(1), default=2000, help="Ascent steps for --optimize-T.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Study directory  [default: studies/<dataset>-<sde>]. An existing study resumes.")
@click.option("--no-progress", is_flag=True, help="Images: no progress lines within a point (Glow fit, bits/dim, sampling).")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Images: split the bits/dim batches, the samples and the FID features over the replicas: "
                   "auto = mirrored when several GPUs are visible.")
@json_option
@friendly
def study(dataset, sde, T_grid, seeds, width, depth, steps, prior, prior_steps, num_eval, num_ll, num_samples,
          num_examples, rtol, atol, samplers, glow_hidden, glow_steps, reuse_score, extractor, fid_samples, fid_stats,
          optimize, optimize_steps, workdir, no_progress, strategy, as_json):
    """How much T is enough: the ELBO terms, likelihood, sample quality and NFE against T.
    e.g.  shortdiff study --dataset gmm1d --T-grid 0.2,0.4,0.6,0.8,1.0 --optimize-T joint"""
    workdir = workdir or str(Path("studies") / f"{Path(dataset).stem}-{sde}")
    checks.writable_dir(workdir)
    checks.unlocked(Path(workdir) / ".lock")
    if reuse_score:
        checks.trained_run(reuse_score)
    load_tensorflow()
    from shortdiff_tf.study import StudyConfig, run_study
    from shortdiff_tf import toy
    is_toy = dataset in toy.TOY.names()
    cfg = StudyConfig(dataset=dataset, sde=sde, T_grid=T_grid, seeds=seeds if is_toy else 1, width=width,
                      depth=depth, train_steps=steps, prior=prior or ("dpgmm" if is_toy else "glow"),
                      prior_steps=prior_steps, num_eval=num_eval, num_ll=num_ll, num_samples=num_samples,
                      num_examples=num_examples, samplers=tuple(s.strip() for s in samplers.split(",") if s.strip()),
                      rtol=rtol, atol=atol, glow_hidden=glow_hidden, glow_steps_per_level=glow_steps,
                      reuse_score=reuse_score,
                      extractor=extractor, fid_samples=fid_samples, fid_stats=fid_stats)
    click.echo(f"study directory: {workdir}")
    from shortdiff_tf import distribute
    r = run_study(cfg, workdir, optimize=optimize, optimize_steps=optimize_steps, log=click.echo,
                  progress=not no_progress, strategy=distribute.get(strategy), should_stop=should_stop())
    lines = [f"grid optimum of {k}: T={v['T']:g} ({v['value']:.4f})" for k, v in r["grid_optimum"].items()]
    if "optimize_T" in r:
        lines += [f"T* by ascent ({m}): {v['T_star']:.3f}" for m, v in r["optimize_T"].items()]
    lines.append(f"wrote {Path(workdir) / 'study.json'} and {', '.join(Path(f).name for f in r['figures'].values())}")
    report({k: v for k, v in r.items() if k != "points"}, as_json, lines)
