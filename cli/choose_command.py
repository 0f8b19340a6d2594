"""``shortdiff choose-T``: the shortest diffusion time whose bits/dim is indistinguishable from the best."""
from __future__ import annotations

from pathlib import Path

import click

from cli import checks
from cli.errors import friendly, should_stop
from cli.options import ONE_MACHINE_STRATEGIES, POSITIVE, json_option, report
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
@click.option("--tolerance", type=POSITIVE, default=0.01, help="Bits/dim within which T counts as the best.")
@click.option("--refine", type=click.IntRange(0, 20), default=2, help="Bisection steps after the grid.")
@click.option("--num-examples", type=click.IntRange(2), default=64, help="Test images (the same at every T).")
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Images per ODE solve.")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance.")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@click.option("--seed", type=int, default=0, help="Seed of the Glow fits, dequantisation and probes.")
@click.option("--prior-steps", type=click.IntRange(1), default=2000, help="Glow optimisation steps per T.")
@click.option("--glow-levels", type=click.IntRange(0), default=0, help="Glow squeeze levels (0: by image size).")
@click.option("--glow-steps", type=click.IntRange(1), default=4, help="Glow flow steps per level.")
@click.option("--glow-hidden", type=click.IntRange(1), default=64, help="Glow coupling-network width.")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split each likelihood batch over the replicas.")
@click.option("--no-progress", is_flag=True, help="No progress lines.")
@json_option
@friendly
def choose_T(workdir, T_grid, tolerance, refine, num_examples, batch_size, rtol, atol, seed, prior_steps, glow_levels,
             glow_steps, glow_hidden, strategy, no_progress, as_json):
    """The shortest T whose exact bits/dim (auxiliary prior) is within --tolerance of the best
    searched T, judged on paired differences; its prior in RUN/views/T<T*>.
    e.g.  shortdiff choose-T --workdir runs/c10-pretrained"""
    cfg = checks.trained_run(workdir)
    if len(cfg["data"]["shape"]) != 3:
        raise ValueError(f"choose-T scores images by bits/dim; {workdir} holds {cfg['data']['shape']} vectors "
                         f"(for toy data use `shortdiff study`)")
    for T in T_grid:
        checks.run_T(cfg, T, workdir)
    checks.writable_dir(Path(workdir) / "views")
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.study.choose_T import ChooseTConfig, choose_T as search
    config = ChooseTConfig(T_grid=T_grid, tolerance=tolerance, refine=refine, num_examples=num_examples,
                           batch_size=batch_size, rtol=rtol, atol=atol, seed=seed, prior_steps=prior_steps,
                           glow_levels=glow_levels, glow_steps_per_level=glow_steps, glow_hidden=glow_hidden)
    r = search(workdir, config, log=lambda m: click.echo(m, err=True), progress=not no_progress,
               strategy=distribute.get(strategy), should_stop=should_stop())
    lines = [f"T={p['T']:g}: {p['bpd']:.4f} bits/dim (p_noise {p['bpd_noise']:.4f}), {p['difference']:+.4f} ± "
             f"{p['difference_sem']:.4f} from the best: {'passes' if p['passes'] else 'fails'}" for p in r["points"]]
    s = r["saving"]
    lines += [f"T* = {r['T_star']:g} (best T = {r['T_best']:g}, tolerance {tolerance:g} bits/dim): the SDE sampler "
              f"takes {s['em_nfe_at_T_star']} network evaluations instead of {s['em_nfe_at_T_max']} at T = {r['T_max']:g}",
              f"wrote {r['summary']} and {r['figure']}; its prior is in {r['view']}",
              f"next: shortdiff sample --workdir {r['view']}"]
    report(r, as_json, lines)
