"""The commands that write a run: ``train`` (the score model) and ``fit-prior`` (nu_phi at T)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli import checks
from cli.errors import friendly, reclaim_signals, should_stop
from cli.options import (NON_NEGATIVE, POSITIVE, PRESETS, PRIOR_PRESETS, SDE_CHOICES, STRATEGIES, T_OR_AUTO, T_RANGE,
                         UNIT_INTERVAL, FiniteFloat,
                         default_workdir, eval_precision_option, json_option, non_empty, precision_option, report)
from cli.quiet import load_tensorflow


@click.command()
@click.option("--sde", type=click.Choice(SDE_CHOICES), default="vp", help="Forward SDE.")
@click.option("--T", "T", type=T_OR_AUTO, default=1.0,
              help="Diffusion time: the [0, 1] schedule is cut at T. auto: train at T = 1, then run `shortdiff "
                   "choose-T` with its defaults (bits/dim, tolerance 0.01, grid 0.2-1 with 2 bisection steps, a "
                   "2,000-step Glow per T).")
@click.option("--eps", type=FiniteFloat(0, 1, min_open=True), default=1e-5, help="Smallest time.")
@click.option("--dataset", default="digits", callback=non_empty,
              help="digits | gmm1d | gmm2d | a TFDS name | a .npz file | an image folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory  [default: TFDS's, ~/tensorflow_datasets].")
@click.option("--download", is_flag=True, help="Let TFDS download and prepare the data set.")
@click.option("--workdir", type=click.Path(file_okay=False), default=None,
              help="Run directory  [default: runs/<dataset>-<sde>-T<T>]. An existing run resumes.")
@click.option("--steps", type=click.IntRange(1), default=None, help="Training steps  [default: preset by data].")
@click.option("--batch-size", type=click.IntRange(1), default=None, help="Global batch  [default: preset].")
@click.option("--lr", type=POSITIVE, default=None,
              help="Adam learning rate  [default: preset]; may be lowered when resuming.")
@click.option("--warmup", type=click.IntRange(0), default=None, help="Linear warm-up steps  [default: preset].")
@click.option("--ema-decay", type=UNIT_INTERVAL, default=None, help="EMA decay  [default: preset].")
@click.option("--grad-clip", type=NON_NEGATIVE, default=None, help="Global-norm clip (0: off)  [default: 1].")
@click.option("--weighting", type=click.Choice(["variance", "likelihood"]), default=None,
              help="DSM weighting  [default: variance; the run's when resuming].")
@click.option("--importance/--no-importance", default=None, help="Importance-sample t (likelihood weighting).")
@click.option("--reduce-mean/--no-reduce-mean", default=None,
              help="Average the squared error over the pixels, as ScoreSDE's VP configs (else half its sum)  "
                   "[default: on for the presets, off otherwise].")
@click.option("--flip/--no-flip", "random_flip", default=None,
              help="Flip each training image left-right with probability 1/2  [default: on for ddpmpp-cifar10].")
@click.option("--embedding", type=click.Choice(["fourier", "positional"]), default=None,
              help="Noise-level embedding: fourier (of log std(t)) or positional (ScoreSDE's sinusoids of 999 t)  "
                   "[default: positional for the presets, fourier otherwise].")
@click.option("--seed", type=int, default=None, help="Seed of weights, data order and noise  [default: 0].")
@click.option("--beta-0", type=POSITIVE, default=None, help="VP/sub-VP beta_0  [default: 0.1].")
@click.option("--beta-1", type=POSITIVE, default=None, help="VP/sub-VP beta_1  [default: 20].")
@click.option("--sigma-min", type=POSITIVE, default=None, help="VE sigma_min  [default: 0.01].")
@click.option("--sigma-max", type=POSITIVE, default=None, help="VE sigma_max  [default: 50].")
@click.option("--ch", type=click.IntRange(1), default=None, help="U-Net base channels  [default: preset by size].")
@click.option("--num-res-blocks", type=click.IntRange(1), default=None, help="U-Net residual blocks per level  [default: preset by size].")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), default=None, help="U-Net dropout  [default: preset by size: 0 up to 16x16, 0.1 above].")
@click.option("--width", type=click.IntRange(1), default=None, help="MLP width (toy data)  [default: 128].")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, help="Checkpoint interval  [default: 500].")
@click.option("--log-every", type=click.IntRange(1), default=None, help="Metrics interval  [default: 50].")
@click.option("--grad-accum", type=click.IntRange(1), default=None,
              help="Split each replica's batch into this many micro-batches (same update, less memory)  "
                   "[default: 1].")
@click.option("--sample-grid", type=click.IntRange(0), default=None,
              help="EMA samples per TensorBoard grid (0: none)  [default: 16].")
@click.option("--sample-every", type=click.IntRange(0), default=None,
              help="Steps between TensorBoard sample grids, besides the one at the end (0: only that)  [default: 500].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto",
              help="tf.distribute strategy: auto = mirrored when several GPUs are visible; multiworker = "
                   "several machines, configured by TF_CONFIG (see README).")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="A paper setup: ddpmpp-cifar10 (ScoreSDE's DDPM++ cont. VP on CIFAR-10), ddpmpp-mnist. "
                   "[default: sized by the data]")
@precision_option
@click.option("--jit/--no-jit", default=None,
              help="XLA-compile the train step's forward and backward pass  [default: no; the run's when resuming].")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and its parameter count, and exit.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A config.json (a run's, or a subset of one) as the base; options given override it  "
                   "[default: none: presets by data].")
@json_option
@friendly
def train(dry_run, as_json, no_progress, strategy, workdir, config_path, **opts):
    """Train a score model.  e.g.  shortdiff train --sde vp --T 0.4"""
    from cli.config_file import run_settings
    from cli.resolve import resolve_train_config
    file = run_settings(config_path) if config_path else {}
    ctx = click.get_current_context()
    choose = opts["T"] == "auto"
    if choose:                                              # T_max = 1, then choose-T
        opts["T"] = 1.0
        if opts["dataset"] in checks.LOCAL_DATASETS[1:]:                      # the toys
            raise click.UsageError("--T auto chooses T on images; for toy data compare T with `shortdiff study`")
    named = {k: (opts[k] if ctx.get_parameter_source(k) != click.core.ParameterSource.DEFAULT
                 else file.get(section, {}).get(field, opts[k]))
             for k, (section, field) in (("dataset", ("data", "dataset")), ("sde", ("sde", "kind")), ("T", ("sde", "T")))}
    workdir = workdir or default_workdir(named["dataset"], named["sde"], named["T"])
    checks.train_workdir(workdir, strategy)
    if (Path(workdir) / "config.json").exists():           # a resume: its settings, before TensorFlow
        checks.resumable(workdir, resolve_train_config(workdir, ctx, opts, file))
    else:
        checks.dataset(named["dataset"], opts.get("data_dir"))
    if dry_run:
        cfg = resolve_train_config(workdir, ctx, opts, file)
        load_tensorflow()
        from shortdiff_tf import networks
        count = networks.count_params(networks.build_score_net(cfg.model, cfg.data.shape))
        return click.echo(json.dumps({**json.loads(cfg.to_json()), "parameters": count}, indent=2, sort_keys=True))
    load_tensorflow()
    from shortdiff_tf import distribute
    strat = distribute.get(strategy)                          # multiworker: before any other TF op
    reclaim_signals()
    cfg = resolve_train_config(workdir, ctx, opts, file)
    from shortdiff_tf.app.train import train as train_run
    click.echo(f"run directory: {workdir}")
    result = train_run(cfg, workdir, strategy=strat, progress=not no_progress, log=click.echo, should_stop=should_stop())
    report(result, as_json, [f"trained to step {result['step']}; checkpoint {result.get('checkpoint')}"])
    if choose:
        from cli.choose_command import choose_T
        click.echo(f"--T auto: choosing T on {workdir} (`shortdiff choose-T` with its defaults)")
        args = ["--workdir", str(workdir), *(["--no-progress"] if no_progress else []), *(["--json"] if as_json else [])]
        with choose_T.make_context("choose-T", args, parent=ctx) as sub:      # its defaults, as parsed from a command line
            return choose_T.invoke(sub)
    if not as_json:
        next_steps(f"shortdiff fit-prior --workdir {workdir}", f"tensorboard --logdir {Path(workdir) / 'tb'}")


@click.command("fit-prior")
@click.option("--workdir", type=click.Path(file_okay=False), required=True, help="A trained run directory.")
@click.option("--prior", "kind", type=click.Choice(["glow", "gaussian", "gmm", "dpgmm"]), default=None,
              help="Auxiliary model  [default: glow for images, dpgmm for toy data].")
@click.option("--T", "T", type=T_RANGE, default=None, help="Fit at this T <= the run's T  [default: the run's T].")
@click.option("--target", type=click.Choice(["sde", "ode"]), default="sde",
              help="sde: x_T = m_T x0 + sqrt(s_T) e; ode: the PF-ODE image of the data (our reading of (S)).")
@click.option("--steps", type=click.IntRange(1), default=2000, help="Glow optimisation steps.")
@click.option("--batch-size", type=click.IntRange(1), default=64, help="Glow batch size.")
@click.option("--lr", type=POSITIVE, default=1e-3, help="Glow Adam learning rate.")
@click.option("--seed", type=int, default=0, help="Seed of data order, noise and initialisation.")
@click.option("--preset", type=click.Choice(PRIOR_PRESETS), default=None,
              help="Glow architecture: glow-cifar10 (Kingma & Dhariwal: 3 levels x 32 steps, width 512), "
                   "glow-mnist (2 x 16, width 256); --glow-* options given override it  [default: none: the "
                   "--glow-* options].")
@click.option("--glow-levels", type=click.IntRange(0), default=0, help="Glow squeeze levels (0: by image size).")
@click.option("--glow-steps", type=click.IntRange(1), default=4, help="Glow flow steps per level.")
@click.option("--glow-hidden", type=click.IntRange(1), default=64, help="Glow coupling-network width.")
@click.option("--components", type=click.IntRange(1), default=10, help="Mixture components (dpgmm: truncation).")
@click.option("--fit-samples", type=click.IntRange(10), default=20000,
              help="sde target: the diffused draws gaussian/gmm/dpgmm are fitted to (a Glow draws fresh ones each "
                   "step); ode target: the first this many training examples through the PF-ODE (every kind).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100, help="Glow checkpoint interval (steps).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto",
              help="tf.distribute strategy of the Glow fit (as for train; multiworker reads TF_CONFIG).")
@eval_precision_option
@click.option("--jit/--no-jit", default=False, help="XLA-compile the Glow fit's forward and backward pass.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A prior config.json (RUN/prior/config.json, or a subset) as the base; options given override it  "
                   "[default: none].")
@json_option
@friendly
def fit_prior(workdir, kind, T, target, steps, batch_size, lr, seed, preset, glow_levels, glow_steps, glow_hidden,
              components, fit_samples, checkpoint_every, strategy, precision, jit, no_progress, config_path, as_json):
    """Fit the auxiliary prior nu_phi on the diffused data at T.  e.g.  shortdiff fit-prior --workdir runs/digits-vp-T0.4"""
    run_cfg = checks.trained_run(workdir)
    checks.unlocked(Path(workdir) / "prior" / ".lock")
    from shortdiff_tf.config import PriorConfig
    kind = kind or ("glow" if len(run_cfg["data"]["shape"]) == 3 else "dpgmm")
    architecture = _glow_architecture(preset, glow_levels, glow_steps, glow_hidden)
    pcfg = PriorConfig(kind=kind, T=run_cfg["sde"]["T"] if T is None else T, target=target, steps=steps,
                       batch_size=batch_size, lr=lr, seed=seed, components=components, num_fit_samples=fit_samples,
                       checkpoint_every=checkpoint_every, precision=precision, jit=jit, **architecture)
    if config_path:
        pcfg = _with_file(pcfg, config_path)
        T = pcfg.T
    checks.run_T(run_cfg, T, workdir)
    checks.prior_fit(workdir, pcfg, run_cfg["data"]["shape"])
    load_tensorflow()
    from shortdiff_tf import distribute
    strat = distribute.get(strategy)                           # multiworker: before any other TF op
    reclaim_signals()
    from shortdiff_tf.app.fit_prior import fit_prior as fit
    r = fit(workdir, pcfg, strategy=strat, progress=not no_progress, log=click.echo, should_stop=should_stop())
    extra = f", {r['effective_components']} effective components" if "effective_components" in r else ""
    report(r, as_json, [f"fitted a {r['kind']} prior at T={r['T']:g} ({r['target']} target){extra}; "
                        f"saved in {r['prior_dir']}"])
    if not as_json:
        at = "" if T is None else f" --T {T:g}"
        next_steps(f"shortdiff sample --workdir {workdir}{at}", f"shortdiff evaluate --workdir {workdir}{at}",
                   f"tensorboard --logdir {Path(workdir) / 'prior' / 'tb'}")


# PriorConfig field -> the fit-prior option that sets it
PRIOR_OPTIONS = {"kind": "kind", "T": "T", "target": "target", "steps": "steps", "batch_size": "batch_size", "lr": "lr",
                 "seed": "seed", "components": "components", "num_fit_samples": "fit_samples",
                 "checkpoint_every": "checkpoint_every", "precision": "precision", "jit": "jit", "preset": "preset",
                 "levels": "glow_levels", "steps_per_level": "glow_steps", "hidden": "glow_hidden"}


def _with_file(pcfg, path):
    """The file's settings in place of every option not given on the command line."""
    import dataclasses
    from click.core import ParameterSource
    from cli.config_file import prior_settings
    ctx = click.get_current_context()
    given = {field for field, option in PRIOR_OPTIONS.items() if ctx.get_parameter_source(option) != ParameterSource.DEFAULT}
    return dataclasses.replace(pcfg, **{k: v for k, v in prior_settings(path).items() if k not in given})


def next_steps(*commands) -> None:
    """What to run next, on stderr (not with --json, whose object stays the last line)."""
    click.echo("next: " + "   |   ".join(commands), err=True)


def _glow_architecture(preset, levels, steps, hidden) -> dict:
    """The Glow's levels, steps and width: a preset's, with the --glow-* options given on top."""
    from click.core import ParameterSource
    from shortdiff_tf.config import prior_preset
    given = {"levels": ("glow_levels", levels), "steps_per_level": ("glow_steps", steps), "hidden": ("glow_hidden", hidden)}
    base = prior_preset(preset) if preset else {}
    ctx = click.get_current_context()
    explicit = {k: v for k, (name, v) in given.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    return {**{k: v for k, (_, v) in given.items()}, **base, **explicit}
