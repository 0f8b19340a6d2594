"""The commands: each one parses options, calls one library function and prints its report."""
from __future__ import annotations

import json
from pathlib import Path

import click

from cli import checks
from cli.errors import friendly
from cli.options import NON_NEGATIVE, POSITIVE, T_RANGE, UNIT_INTERVAL, AliasedOption, FiniteFloat
from cli.quiet import load_tensorflow
from cli.reports import evaluate_lines

SDE_CHOICES = ["vp", "ve", "subvp"]
SAMPLER_CHOICES = ["em", "pc", "ode", "heun", "dpm2m"]          # samplers.PRESETS (tested)
STRATEGIES = ["auto", "default", "mirrored", "multiworker"]
ONE_MACHINE_STRATEGIES = STRATEGIES[:3]                       # evaluate and sample: no multi-worker
prior_option = click.option("--prior", "prior", type=click.Choice(["auto", "aux", "noise"]), default="auto",
                            help="Start from the fitted auxiliary prior (aux) or p_noise (noise); auto = aux when fitted.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last line of stdout.")
PRECISIONS = ["fp32", "bf16", "fp16"]                             # config.PRECISIONS (tested)
PRESETS = ["ddpmpp-cifar10", "ddpmpp-mnist"]                      # config.RUN_PRESETS (tested)
PRIOR_PRESETS = ["glow-cifar10", "glow-mnist"]                    # config.PRIOR_PRESETS (tested)
precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                                help="Compute dtype of the score network (weights, loss, SDE, ODE and prior stay fp32) "
                                     " [default: fp32; resuming: the run's].")
eval_precision_option = click.option("--precision", type=click.Choice(PRECISIONS), default="fp32",
                                     help="Compute dtype of the score network (the ODE, SDE and prior stay fp32).")


def default_workdir(dataset: str, sde: str, T: float) -> str:
    return str(Path("runs") / f"{Path(dataset).stem}-{sde}-T{T:g}")


def non_empty(ctx, param, value):
    if value is not None and not value.strip():
        raise click.BadParameter("is empty; give a data set name or path, e.g. digits", ctx, param)
    return value


def report(result: dict, as_json: bool, lines):
    for line in lines:
        click.echo(line)
    if as_json:
        click.echo(json.dumps(result, default=str))


@click.command()
@click.option("--sde", type=click.Choice(SDE_CHOICES), default="vp", help="Forward SDE.")
@click.option("--T", "T", type=T_RANGE, default=1.0, help="Diffusion time: the [0, 1] schedule is cut at T.")
@click.option("--eps", type=FiniteFloat(0, 1, min_open=True), default=1e-5, help="Smallest time.")
@click.option("--dataset", default="digits", callback=non_empty,
              help="digits | gmm1d | gmm2d | a TFDS name | a .npz file | an image folder.")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory.")
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
@click.option("--weighting", type=click.Choice(["variance", "likelihood"]), default=None, help="DSM weighting.")
@click.option("--importance/--no-importance", default=None, help="Importance-sample t (likelihood weighting).")
@click.option("--seed", type=int, default=None, help="Seed of weights, data order and noise.")
@click.option("--beta-0", type=POSITIVE, default=None, help="VP/sub-VP beta_0  [default: 0.1].")
@click.option("--beta-1", type=POSITIVE, default=None, help="VP/sub-VP beta_1  [default: 20].")
@click.option("--sigma-min", type=POSITIVE, default=None, help="VE sigma_min  [default: 0.01].")
@click.option("--sigma-max", type=POSITIVE, default=None, help="VE sigma_max  [default: 50].")
@click.option("--ch", type=click.IntRange(1), default=None, help="U-Net base channels  [default: preset by size].")
@click.option("--num-res-blocks", type=click.IntRange(1), default=None, help="U-Net residual blocks per level.")
@click.option("--dropout", type=FiniteFloat(0, 1, max_open=True), default=None, help="U-Net dropout.")
@click.option("--width", type=click.IntRange(1), default=None, help="MLP width (toy data).")
@click.option("--checkpoint-every", type=click.IntRange(1), default=None, help="Checkpoint interval  [default: 500].")
@click.option("--log-every", type=click.IntRange(1), default=None, help="Metrics interval  [default: 50].")
@click.option("--grad-accum", type=click.IntRange(1), default=None,
              help="Split each replica's batch into this many micro-batches (same update, less memory).")
@click.option("--sample-grid", type=click.IntRange(0), default=None, help="EMA samples in TensorBoard at the end (0: none)  [default: 16].")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto",
              help="tf.distribute strategy: auto = mirrored when several GPUs are visible; multiworker = "
                   "several machines, configured by TF_CONFIG (see README).")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="A paper setup: ddpmpp-cifar10 (ScoreSDE's DDPM++ cont. VP on CIFAR-10), ddpmpp-mnist. "
                   "[default: sized by the data]")
@precision_option
@click.option("--jit/--no-jit", default=None, help="XLA-compile the train step's forward and backward pass.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and its parameter count, and exit.")
@json_option
@friendly
def train(dry_run, as_json, no_progress, strategy, workdir, **opts):
    """Train a score model.  e.g.  shortdiff train --sde vp --T 0.4"""
    workdir = workdir or default_workdir(opts["dataset"], opts["sde"], opts["T"])
    checks.train_workdir(workdir)
    from cli.resolve import resolve_train_config
    if dry_run:
        cfg = resolve_train_config(workdir, click.get_current_context(), opts)
        load_tensorflow()
        from shortdiff_tf import networks
        count = networks.count_params(networks.build_score_net(cfg.model, cfg.data.shape))
        return click.echo(json.dumps({**json.loads(cfg.to_json()), "parameters": count}, indent=2, sort_keys=True))
    load_tensorflow()
    from shortdiff_tf import distribute
    strat = distribute.get(strategy)                          # multiworker: before any other TF op
    cfg = resolve_train_config(workdir, click.get_current_context(), opts)
    from shortdiff_tf.app.train import train as train_run
    click.echo(f"run directory: {workdir}")
    result = train_run(cfg, workdir, strategy=strat, progress=not no_progress, log=click.echo)
    report(result, as_json, [f"trained to step {result['step']}; checkpoint {result.get('checkpoint')}"])


@click.command()
@click.option("--workdir", type=click.Path(), required=True, help="A trained run directory.")
@click.option("--sampler", type=click.Choice(SAMPLER_CHOICES), default="em",
              help="em: Euler-Maruyama; pc: reverse diffusion + Langevin; ode: probability flow (adaptive RK45); "
                   "heun: EDM's 2nd-order Heun; dpm2m: DPM-Solver++(2M) (both few-step, on the PF-ODE).")
@click.option("--steps", type=click.IntRange(1, 100_000), default=None,
              help="Steps  [default: em/pc 1000 T, heun 18 (NFE 37), dpm2m 20 (NFE 21)].")
@click.option("--sample-eps", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
              help="Where sampling stops  [default: 1e-3 for vp/subvp, 1e-5 for ve, as ScoreSDE].")
@click.option("--num-samples", "--num", "num_samples", cls=AliasedOption, hidden_aliases=("--num",),
              type=click.IntRange(1), default=64, help="Number of samples.")
@click.option("--seed", type=int, default=0, help="Sampling seed (same seed, same images at any --num-samples).")
@click.option("--snr", type=POSITIVE, default=None, help="Langevin signal-to-noise (pc).")
@click.option("--T", "T", type=T_RANGE, default=None, help="Sample from a shorter T than trained.")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Output stem (.png and .npz).")
@click.option("--temperature", type=FiniteFloat(0, 10, min_open=True), default=1.0, help="Scale of the prior's noise.")
@click.option("--rtol", type=POSITIVE, default=None, help="ODE relative tolerance (ode sampler)  [default: 1e-5].")
@click.option("--atol", type=POSITIVE, default=None, help="ODE absolute tolerance (ode sampler)  [default: 1e-5].")
@prior_option
@eval_precision_option
@click.option("--jit", is_flag=True, help="XLA-compile the sampling loop (the ode sampler: its score function); "
                                          "no progress line then.")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split the samples over the replicas: auto = mirrored when several GPUs are visible.")
@click.option("--no-progress", is_flag=True, help="No progress line (NFE, ETA) while sampling.")
@json_option
@friendly
def sample(workdir, sampler, steps, sample_eps, num_samples, seed, snr, T, out, temperature, rtol, atol, prior,
           precision, jit, strategy, no_progress, as_json):
    """Sample a trained run to a PNG grid and an .npz.  e.g.  shortdiff sample --workdir runs/digits-vp-T0.4"""
    checks.trained_run(workdir)
    if out:
        checks.writable_dir(Path(out).parent, "--out")
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.app.sample import sample_run
    r = sample_run(workdir, sampler=sampler, steps=steps, num_samples=num_samples, seed=seed, T=T, out=out, snr=snr,
                   prior=prior, temperature=temperature, eps=sample_eps, rtol=rtol, atol=atol,
                   progress=not no_progress, precision=precision, jit=jit, strategy=distribute.get(strategy))
    report(r, as_json, [f"{r['num_samples']} samples ({r['sampler']}, T={r['T']:g}, prior {r['prior']}, NFE {r['nfe']}) "
                        f"in {r['seconds']:.1f} s",
                        f"wrote {r['png']} and {r['npz']}"])


@click.command()
@click.option("--workdir", type=click.Path(), required=True, help="A trained run directory.")
@click.option("--dataset", default=None, help="Data to evaluate on  [default: the training data set].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory.")
@click.option("--split", "split_name", default="test", help="Split to evaluate.")
@click.option("--num-examples", type=click.IntRange(1), default=64, help="Examples (the ODE is costly).")
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Examples per ODE solve.")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance.")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@click.option("--divergence", type=click.Choice(["hutchinson", "exact"]), default="hutchinson",
              help="Divergence of the PF-ODE drift: Hutchinson-Skilling or exact (low dimension).")
@click.option("--seed", type=int, default=0, help="Seed of dequantisation, probes and ELBO draws.")
@click.option("--T", "T", type=T_RANGE, default=None, help="Evaluate with a shorter T than trained.")
@click.option("--repeats", type=click.IntRange(1, 1000), default=1,
              help="Likelihood passes per example (new dequantisation and probe each), averaged per example.")
@click.option("--elbo-draws", type=click.IntRange(1, 4096), default=16,
              help="ELBO: (t, e, x_T) draws per example, t stratified.  [default: 16]")
@click.option("--control-variate", type=click.Choice(["optimal", "on", "off"]), default="optimal",
              help="ELBO: the |e|^2/s_t control variate of I with the variance-minimising coefficient, "
                   "or with coefficient 1 (on) or 0 (off).  [default: optimal]")
@prior_option
@eval_precision_option
@click.option("--jit", is_flag=True, help="XLA-compile the ODE's right-hand side (drift and divergence).")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split each likelihood batch over the replicas: auto = mirrored when several GPUs are visible.")
@click.option("--no-progress", is_flag=True, help="No progress line per batch.")
@json_option
@friendly
def evaluate(workdir, dataset, data_dir, split_name, num_examples, batch_size, rtol, atol, divergence, seed, T,
             repeats, elbo_draws, control_variate, prior, precision, jit, strategy, no_progress, as_json):
    """Bits/dim by the probability-flow ODE, and the ELBO, with their terms.
    e.g.  shortdiff evaluate --workdir runs/digits-vp-T0.4 --num-examples 64"""
    checks.trained_run(workdir)
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.app.evaluate import evaluate_run
    r = evaluate_run(workdir, dataset, split_name, num_examples, batch_size, rtol, atol, divergence, seed, T,
                     data_dir, prior, progress=not no_progress, elbo_draws=elbo_draws, control=control_variate,
                     repeats=repeats, precision=precision, jit=jit, strategy=distribute.get(strategy))
    report(r, as_json, evaluate_lines(r))


@click.command("fit-prior")
@click.option("--workdir", type=click.Path(), required=True, help="A trained run directory.")
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
                   "glow-mnist (2 x 16, width 256); --glow-* options given override it.")
@click.option("--glow-levels", type=click.IntRange(0), default=0, help="Glow squeeze levels (0: by image size).")
@click.option("--glow-steps", type=click.IntRange(1), default=4, help="Glow flow steps per level.")
@click.option("--glow-hidden", type=click.IntRange(1), default=64, help="Glow coupling-network width.")
@click.option("--components", type=click.IntRange(1), default=10, help="Mixture components (dpgmm: truncation).")
@click.option("--fit-samples", type=click.IntRange(10), default=20000, help="Diffused points for gaussian/gmm/dpgmm.")
@click.option("--checkpoint-every", type=click.IntRange(1), default=100, help="Glow checkpoint interval (steps).")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto",
              help="tf.distribute strategy of the Glow fit (as for train; multiworker reads TF_CONFIG).")
@eval_precision_option
@click.option("--jit", is_flag=True, help="XLA-compile the Glow fit's forward and backward pass.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@json_option
@friendly
def fit_prior(workdir, kind, T, target, steps, batch_size, lr, seed, preset, glow_levels, glow_steps, glow_hidden,
              components, fit_samples, checkpoint_every, strategy, precision, jit, no_progress, as_json):
    """Fit the auxiliary prior nu_phi on the diffused data at T.  e.g.  shortdiff fit-prior --workdir runs/digits-vp-T0.4"""
    run_cfg = checks.trained_run(workdir)
    from shortdiff_tf.config import PriorConfig
    kind = kind or ("glow" if len(run_cfg["data"]["shape"]) == 3 else "dpgmm")
    architecture = _glow_architecture(preset, glow_levels, glow_steps, glow_hidden)
    pcfg = PriorConfig(kind=kind, T=run_cfg["sde"]["T"] if T is None else T, target=target, steps=steps,
                       batch_size=batch_size, lr=lr, seed=seed, components=components, num_fit_samples=fit_samples,
                       checkpoint_every=checkpoint_every, precision=precision, jit=jit, **architecture)
    load_tensorflow()
    from shortdiff_tf import distribute
    strat = distribute.get(strategy)                           # multiworker: before any other TF op
    from shortdiff_tf.app.fit_prior import fit_prior as fit
    r = fit(workdir, pcfg, strategy=strat, progress=not no_progress, log=click.echo)
    extra = f", {r['effective_components']} effective components" if "effective_components" in r else ""
    report(r, as_json, [f"fitted a {r['kind']} prior at T={r['T']:g} ({r['target']} target){extra}; "
                        f"saved in {r['prior_dir']}"])


def _glow_architecture(preset, levels, steps, hidden) -> dict:
    """The Glow's levels, steps and width: a preset's, with the --glow-* options given on top."""
    from click.core import ParameterSource
    from shortdiff_tf.config import prior_preset
    given = {"levels": ("glow_levels", levels), "steps_per_level": ("glow_steps", steps), "hidden": ("glow_hidden", hidden)}
    base = prior_preset(preset) if preset else {}
    ctx = click.get_current_context()
    explicit = {k: v for k, (name, v) in given.items() if ctx.get_parameter_source(name) != ParameterSource.DEFAULT}
    return {**{k: v for k, (_, v) in given.items()}, **base, **explicit}


@click.command()
@click.option("--workdir", type=click.Path(), required=True, help="A trained run directory.")
@click.option("--out", type=click.Path(), default=None,
              help="SavedModel directory  [default: saved_models/<run name>/<next version>].")
@click.option("--T", "T", type=T_RANGE, default=None, help="Export with a shorter T than trained (p_noise prior).")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance (bpd, ode sampler).")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@prior_option
@json_option
@friendly
def export(workdir, out, T, rtol, atol, prior, as_json):
    """One SavedModel for TF Serving with sample, bpd, log_prob, score and metadata signatures.
    e.g.  shortdiff export --workdir runs/digits-vp-T0.4"""
    checks.trained_run(workdir)
    if out:
        checks.new_output(out)
    load_tensorflow()
    from shortdiff_tf.app.export import export_run
    r = export_run(workdir, out, prior, T, rtol, atol, log=lambda m: click.echo(m, err=True))
    report(r, as_json, [f"exported {workdir} (step {r['checkpoint_step']}, T={r['T']:g}, prior {r['prior']}) "
                        f"in {r['seconds']:.0f} s",
                        f"wrote {r['out']} with signatures {', '.join(r['signatures'])} and "
                        f"{r['warmup_requests']} TF Serving warm-up requests"])


def register(group):
    for cmd in (train, fit_prior, sample, evaluate, export):
        group.add_command(cmd)
    return group
