"""``shortdiff choose-T``: the shortest diffusion time whose quality (bits/dim, the ELBO, FID or KID)
is indistinguishable from the best."""
from __future__ import annotations

from pathlib import Path

import click

from cli import checks
from cli.errors import friendly, should_stop
from cli.options import ONE_MACHINE_STRATEGIES, POSITIVE, FiniteFloat, json_option, report
from cli.quiet import load_tensorflow


def parse_grid(ctx, param, value):
    if value is None:
        return ()
    try:
        grid = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r}: give comma-separated numbers, e.g. 0.2,0.4,1", ctx, param) from None
    if not grid or any(not (0 < T <= 1) or T != T for T in grid) or len(set(grid)) != len(grid):
        raise click.BadParameter(f"{value!r}: give distinct diffusion times in (0, 1]", ctx, param)
    return grid


@click.command("choose-T")
@click.option("--workdir", type=click.Path(file_okay=False), required=True,
              help="An image run trained at T_max (usually 1; an imported pretrained run too).")
@click.option("--T-grid", "T_grid", callback=parse_grid, default=None,
              help="The coarse grid of T  [default: T_max x 0.2, 0.4, 0.6, 0.8, 1].")
@click.option("--metric", type=click.Choice(["bpd", "elbo", "fid", "kid"]), default="bpd",
              help="What T is chosen on: exact bits/dim (PF-ODE), the ELBO's bound (L_phi), or FID/KID of "
                   "--sampler's samples.")
@click.option("--tolerance", type=POSITIVE, default=None,
              help="How far from the best T still counts as the best  [default: 0.01 bits/dim for bpd and elbo, "
                   "0.02 = 2% of the best for fid and kid].")
@click.option("--refine", type=click.IntRange(0, 20), default=2, help="Bisection steps after the grid.")
@click.option("--num-examples", type=click.IntRange(2), default=64, help="Test images (the same at every T).")
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per ODE solve.")
@click.option("--elbo-draws", type=click.IntRange(1, 4096), default=16, help="elbo: (t, e, x_T) draws per image.")
@click.option("--sampler", type=click.Choice(["em", "pc", "ode", "heun", "dpm2m"]), default="em",
              help="fid, kid: the sampler whose samples are scored.")
@click.option("--nfe", type=click.IntRange(1), default=None,
              help="fid, kid: network evaluations per sample at every T  [default: the sampler's own budget at "
                   "each T, e.g. 1000 T for em].")
@click.option("--num-samples", type=click.IntRange(4), default=256, help="fid, kid: samples per T.")
@click.option("--extractor", default=None,
              help="fid, kid: the features: a `shortdiff train-classifier` .keras file or fid-inception:PATH  "
                   "[default: classifiers/<dataset>.keras when it exists].")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance.")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@click.option("--seed", type=int, default=0, help="Seed of the Glow fits, dequantisation and probes.")
@click.option("--prior-steps", type=click.IntRange(1), default=2000, help="Glow optimisation steps per T.")
@click.option("--glow-levels", type=click.IntRange(0), default=0, help="Glow squeeze levels (0: by image size).")
@click.option("--glow-steps", type=click.IntRange(1), default=4, help="Glow flow steps per level.")
@click.option("--glow-hidden", type=click.IntRange(1), default=64, help="Glow coupling-network width.")
@click.option("--ode-fit-examples", type=click.IntRange(64), default=4096,
              help="ode, heun, dpm2m: training images (the first this many) whose PF-ODE image the second, "
                   "ode-target Glow at each T is fitted to (at least its batch of 64).")
@click.option("--check/--no-check", default=False,
              help="Re-apply the rule to T* and the best T on fresh draws (seed + 1) and, for bpd and elbo, the next "
                   "--num-examples test images: a held-out check of the choice.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100,
              help="Glow steps between checkpoints of each fit (a killed search resumes from the last).")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split each likelihood batch over the replicas.")
@click.option("--method", type=click.Choice(["search", "ascent"]), default="search",
              help="search: the rule on a grid refined by bisection; ascent: T as a trainable scalar ascending the "
                   "ELBO L_phi jointly with a Glow (the paper's App. H): --prior-steps steps of --batch-size images "
                   "from --T-init, one device.")
@click.option("--T-init", "T_init", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
              help="ascent: where T starts  [default: T_max / 2].")
@click.option("--lr-T", "lr_T", type=POSITIVE, default=0.01,
              help="ascent: Adam's learning rate for u, T = eps + (T_max - eps) sigmoid(u).")
@click.option("--no-progress", is_flag=True, help="No progress lines.")
@json_option
@friendly
def choose_T(workdir, T_grid, metric, tolerance, refine, num_examples, batch_size, elbo_draws, sampler, nfe, num_samples,
             extractor, rtol, atol, seed, prior_steps, glow_levels, glow_steps, glow_hidden, ode_fit_examples, check,
             checkpoint_every, strategy, method, T_init, lr_T, no_progress, as_json):
    """The shortest T whose quality (--metric, under the prior each T's calibration chose) is within
    --tolerance of the best searched T; its prior in RUN/views/T<T*>.  For the ODE samplers (ode,
    heun, dpm2m) each T also fits an ode-target Glow (RUN/views/T<T>-ode) and starts from the Glow,
    temperature or p_noise that match the PF-ODE image of held-out images best.
    e.g.  shortdiff choose-T --workdir runs/c10-pretrained --metric fid --sampler heun --nfe 20"""
    cfg = checks.trained_run(workdir)
    if len(cfg["data"]["shape"]) != 3:
        raise ValueError(f"choose-T scores images by bits/dim; {workdir} holds {cfg['data']['shape']} vectors "
                         f"(for toy data use `shortdiff study`)")
    for T in T_grid:
        checks.run_T(cfg, T, workdir)
    if method == "ascent":
        if T_init is not None and T_init >= cfg["sde"]["T"]:
            raise click.UsageError(f"--T-init {T_init:g}: start below the run's T_max = {cfg['sde']['T']:g}")
        return ascent(workdir, dict(T_init=T_init, steps=prior_steps, batch_size=batch_size, lr_T=lr_T, seed=seed,
                                    glow_levels=glow_levels, glow_steps_per_level=glow_steps, glow_hidden=glow_hidden,
                                    checkpoint_every=checkpoint_every), as_json)
    if metric in ("fid", "kid"):
        extractor = sample_metric_checks(cfg, metric, sampler, nfe, extractor)
    checks.writable_dir(Path(workdir) / "views")
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.study.choose_T import ChooseTConfig, choose_T as search
    config = ChooseTConfig(T_grid=T_grid, metric=metric, tolerance=tolerance, refine=refine, num_examples=num_examples,
                           batch_size=batch_size, elbo_draws=elbo_draws, sampler=sampler, nfe=nfe,
                           num_samples=num_samples, extractor=extractor, rtol=rtol, atol=atol, seed=seed,
                           prior_steps=prior_steps, glow_levels=glow_levels, glow_steps_per_level=glow_steps,
                           glow_hidden=glow_hidden, checkpoint_every=checkpoint_every, ode_fit_examples=ode_fit_examples)
    r = search(workdir, config, log=lambda m: click.echo(m, err=True), progress=not no_progress,
               strategy=distribute.get(strategy), should_stop=should_stop(), check=check)
    report(r, as_json, summary_lines(r))


def ascent(workdir, settings: dict, as_json) -> None:
    """``--method ascent`` (``study/choose_ascent.py``): T* by ascent, beside the search's when there is one."""
    checks.writable_dir(Path(workdir) / "views")
    load_tensorflow()
    from shortdiff_tf.study.choose_ascent import AscentConfig, ascend
    r = ascend(workdir, AscentConfig(**settings), log=lambda m: click.echo(m, err=True), should_stop=should_stop())
    s = r["search"]
    lines = [f"T* by ascent = {r['T_star']:.4f} ± {r['T_star_std']:.4f} (the mean and spread of T over the last quarter of "
             f"{r['steps']} steps from T = {r['T_init']:g}; T ended at {r['T_end']:g})",
             f"the search's T* = {s['T_star']:g} ({s['metric']})" if s else
             f"no search to compare with: `shortdiff choose-T --workdir {workdir}`",
             f"wrote {r['summary']}; the Glow where T ended is in {r['view']} (calibration: use {r['calibration']['use']})"]
    report(r, as_json, lines)


def sample_metric_checks(cfg: dict, metric: str, sampler: str, nfe, extractor):
    """FID/KID: an extractor that exists (default classifiers/<dataset>.keras) and a budget the
    sampler can take; -> the extractor's spec."""
    if nfe is not None and sampler == "ode":
        raise click.UsageError("--nfe: the ode sampler chooses its own steps; drop --nfe or use em, pc, heun or dpm2m")
    if extractor is None:
        from cli.study import default_classifier
        default = default_classifier(cfg["data"]["dataset"])
        if not default.is_file():
            raise click.UsageError(f"--metric {metric} needs --extractor: train one with `shortdiff train-classifier "
                                   f"--dataset {cfg['data']['dataset']}` (writes {default}) or pass fid-inception:PATH")
        return str(default)
    if not Path(extractor.split(":", 1)[-1]).is_file():
        raise click.UsageError(f"--extractor {extractor}: no such file; train one with `shortdiff train-classifier`")
    return extractor


def summary_lines(r: dict) -> list:
    """Every T's verdict, T* and its saving, the files written and the next command."""
    unit = "bits/dim" if r["metric"] in ("bpd", "elbo") else r["metric"].upper()
    name = {"bpd": "bits/dim", "elbo": "ELBO bits/dim bound"}.get(r["metric"], r["metric"].upper())
    lines = []
    for p in r["points"]:
        noise = f" (p_noise {p['value_noise']:.4f})" if "value_noise" in p else f" ± {p['value_sem']:.4f}"
        lines.append(f"T={p['T']:g}: {p['value']:.4f} {name}{noise} with the {p['prior']} prior, "
                     f"{p['difference']:+.4f} ± {p['difference_sem']:.4f} from the best: "
                     f"{'passes' if p['passes'] else 'fails'}"
                     + start_note(p))
    s = r["saving"]
    tol = f"{r['tolerance']:g} x the best" if r["tolerance_relative"] else f"{r['tolerance']:g} {unit}"
    at_max = (f"; {name} {s['value_at_T_star']:.4f} against {s['value_at_T_max']:.4f} at T = {r['T_max']:g}"
              if s["value_at_T_max"] is not None else "")
    cost = (f"{r['sampler']} takes {s['nfe_at_T_star']} network evaluations per sample"
            + (f" instead of {s['nfe_at_T_max']} at T = {r['T_max']:g}" if s["nfe_at_T_max"] is not None else "")
            if "nfe_at_T_star" in s else
            f"the SDE sampler takes {s['em_nfe_at_T_star']} network evaluations instead of {s['em_nfe_at_T_max']} "
            f"at T = {r['T_max']:g}") + at_max
    c = r.get("held_out_check")
    if c:
        lines.append("held-out check: " + (c["note"] if "note" in c else
                     f"T*={c['T_star']:g} against T={c['T_best']:g} on {c['images']} (seed {c['seed']}): "
                     f"{c['difference']:+.4f} ± {c['difference_sem']:.4f}, allowed {c['allowed']:.4f}: "
                     f"{'within the tolerance' if c['within_tolerance'] else 'NOT within the tolerance'}"))
    tau = f" at temperature {r['temperature']:g}" if r.get("temperature", 1.0) != 1.0 else ""
    return lines + [f"T* = {r['T_star']:g} (best T = {r['T_best']:g}, tolerance {tol}, prior {r['prior']}{tau}): {cost}",
                    f"wrote {r['summary']} and {r['figure']}; its prior is in {r['view']}",
                    f"next: shortdiff sample --workdir {r['run']} --T auto"
                    + (f" --sampler {r['sampler']}" if r["sampler"] else "")]


def start_note(p: dict) -> str:
    """Where a T's samples or likelihoods start when it is not the sde-target Glow at temperature 1."""
    o = p.get("ode_start")
    if o:
        if o["use"] == "noise":
            return f" [p_noise: {o['reason']}]"
        return (f" [the {o['use']}-target Glow" + (f" at temperature {o['temperature']:g}" if o["temperature"] != 1 else "")
                + "]" if (o["use"], o["temperature"]) != ("sde", 1.0) else "")
    return "" if p["calibration"]["use"] == "aux" else f" [p_noise: {p['calibration']['reason']}]"
