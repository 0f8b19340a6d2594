"""The commands that read a run: ``sample``, ``evaluate`` and ``export``; ``register`` adds every command."""
from __future__ import annotations

from pathlib import Path

import click

from cli import checks
from cli.errors import friendly, should_stop
from cli.options import (ONE_MACHINE_STRATEGIES, POSITIVE, SAMPLER_CHOICES, T_OR_AUTO, AliasedOption, FiniteFloat,
                         eval_precision_option, json_option, prior_option, report)
from cli.quiet import load_tensorflow
from cli.reports import evaluate_lines

@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), required=True, help="A trained run directory.")
@click.option("--sampler", type=click.Choice(SAMPLER_CHOICES), default="em",
              help="em: Euler-Maruyama; pc: reverse diffusion + Langevin; ode: probability flow (adaptive RK45); "
                   "heun: EDM's 2nd-order Heun; dpm2m: DPM-Solver++(2M) (both few-step, on the PF-ODE).")
@click.option("--steps", type=click.IntRange(1, 100_000), default=None,
              help="Steps  [default: em/pc 1000 T, heun 18 (NFE 37), dpm2m 20 (NFE 21)].")
@click.option("--sample-eps", type=FiniteFloat(0, 1, min_open=True, max_open=True), default=None,
              help="Where sampling stops  [default: 1e-3 for vp/subvp, 1e-5 for ve, as ScoreSDE].")
@click.option("--num-samples", "--num", "num_samples", cls=AliasedOption, hidden_aliases=("--num",),
              type=click.IntRange(1), default=64, help="Number of samples.")
@click.option("--batch-size", type=click.IntRange(1), default=None,
              help="Samples per call, written as they come (memory holds one call; the samples do not change)  "
                   "[default: all, at most 1,024].")
@click.option("--seed", type=int, default=0, help="Sampling seed (same seed, same images at any --num-samples).")
@click.option("--snr", type=POSITIVE, default=None, help="Langevin signal-to-noise (pc)  [default: 0.16, as ScoreSDE].")
@click.option("--T", "T", type=T_OR_AUTO, default=None,
              help="Sample from a shorter T than trained; auto: choose-T's T* and its prior  "
                   "[default: the prior's T, else the run's].")
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="Output stem (.png and .npz)  [default: RUN/samples/<every setting>].")
@click.option("--temperature", type=FiniteFloat(0, 10, min_open=True), default=None,
              help="Scale of the prior's noise  [default: 1; with --T auto and choose-T's sampler, the temperature "
                   "choose-T measured].")
@click.option("--rtol", type=POSITIVE, default=None, help="ODE relative tolerance (ode sampler)  [default: 1e-5].")
@click.option("--atol", type=POSITIVE, default=None, help="ODE absolute tolerance (ode sampler)  [default: 1e-5].")
@prior_option
@eval_precision_option
@click.option("--jit/--no-jit", default=False, help="XLA-compile the sampling loop (the ode sampler: its score function); "
                                          "no progress line then.")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split the samples over the replicas: auto = mirrored when several GPUs are visible.")
@click.option("--no-progress", is_flag=True, help="No progress line (NFE, ETA) while sampling.")
@json_option
@friendly(resumable=False)
def sample(workdir, sampler, steps, sample_eps, num_samples, batch_size, seed, snr, T, out, temperature, rtol, atol,
           prior, precision, jit, strategy, no_progress, as_json):
    """Sample a trained run to a PNG grid and an .npz.  e.g.  shortdiff sample --workdir runs/digits-vp-T0.4"""
    temperature = checks.chosen_temperature(workdir, T, temperature, sampler)
    workdir, T, prior = checks.chosen_T(workdir, T, prior)
    checks.run_T(checks.trained_run(workdir), T, workdir)
    checks.prior_for(workdir, prior, T)
    checks.writable_dir(Path(out).parent if out else Path(workdir) / "samples", "--out")
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.app.sample import sample_run
    r = sample_run(workdir, sampler=sampler, steps=steps, num_samples=num_samples, seed=seed, T=T, out=out, snr=snr,
                   prior=prior, temperature=temperature, eps=sample_eps, rtol=rtol, atol=atol,
                   progress=not no_progress, precision=precision, jit=jit, strategy=distribute.get(strategy),
                   batch_size=batch_size)
    report(r, as_json, [f"{r['num_samples']} samples ({r['sampler']}, T={r['T']:g}, prior {r['prior']}, NFE {r['nfe']}) "
                        f"in {r['seconds']:.1f} s",
                        f"wrote {r['png']} and {r['npz']}"])


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), required=True, help="A trained run directory.")
@click.option("--dataset", default=None, help="Data to evaluate on  [default: the training data set].")
@click.option("--data-dir", type=click.Path(file_okay=False), default=None, help="TFDS data directory  [default: TFDS's, ~/tensorflow_datasets].")
@click.option("--split", "split_name", default="test", help="Split to evaluate.")
@click.option("--num-examples", type=click.IntRange(1), default=64, help="Examples (the ODE is costly).")
@click.option("--batch-size", type=click.IntRange(1), default=32, help="Examples per ODE solve.")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance.")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@click.option("--divergence", type=click.Choice(["hutchinson", "exact"]), default="hutchinson",
              help="Divergence of the PF-ODE drift: Hutchinson-Skilling or exact (low dimension).")
@click.option("--seed", type=int, default=0, help="Seed of dequantisation, probes and ELBO draws.")
@click.option("--T", "T", type=T_OR_AUTO, default=None,
              help="Evaluate with a shorter T than trained; auto: choose-T's T* and its prior  "
                   "[default: the prior's T, else the run's].")
@click.option("--repeats", type=click.IntRange(1, 1000), default=1,
              help="Likelihood passes per example (new dequantisation and probe each), averaged per example.")
@click.option("--elbo-draws", type=click.IntRange(1, 4096), default=16,
              help="ELBO: (t, e, x_T) draws per example, t stratified.")
@click.option("--control-variate", type=click.Choice(["optimal", "on", "off"]), default="optimal",
              help="ELBO: the |e|^2/s_t control variate of I with the variance-minimising coefficient, "
                   "or with coefficient 1 (on) or 0 (off).")
@prior_option
@eval_precision_option
@click.option("--jit/--no-jit", default=False, help="XLA-compile the ODE's right-hand side (drift and divergence).")
@click.option("--strategy", type=click.Choice(ONE_MACHINE_STRATEGIES), default="auto",
              help="Split each likelihood batch over the replicas: auto = mirrored when several GPUs are visible.")
@click.option("--store", "store_dir", type=click.Path(file_okay=False), default=None,
              help="Where finished likelihood batches are kept (a rerun resumes from them)  [default: RUN/evaluations; "
                   "another folder for a read-only run].")
@click.option("--no-progress", is_flag=True, help="No progress line per batch.")
@json_option
@friendly
def evaluate(workdir, dataset, data_dir, split_name, num_examples, batch_size, rtol, atol, divergence, seed, T,
             repeats, elbo_draws, control_variate, prior, precision, jit, strategy, store_dir, no_progress, as_json):
    """Bits/dim by the probability-flow ODE, and the ELBO, with their terms.
    e.g.  shortdiff evaluate --workdir runs/digits-vp-T0.4 --num-examples 64"""
    workdir, T, prior = checks.chosen_T(workdir, T, prior)
    cfg = checks.trained_run(workdir)
    at = checks.run_T(cfg, T, workdir)
    at = checks.prior_for(workdir, prior, T) or at
    checks.dataset(dataset, data_dir)
    checks.writable_dir(store_dir or Path(workdir) / "evaluations", "--store")
    click.echo(f"evaluate {workdir}: {num_examples} examples of {dataset or cfg['data']['dataset']}/{split_name} at "
               f"T={at:g}, rtol {rtol:g}, atol {atol:g}, {repeats} pass(es), ELBO with {elbo_draws} draws per example; "
               f"starting TensorFlow", err=True)
    load_tensorflow()
    from shortdiff_tf import distribute
    from shortdiff_tf.app.evaluate import evaluate_run
    r = evaluate_run(workdir, dataset, split_name, num_examples, batch_size, rtol, atol, divergence, seed, T,
                     data_dir, prior, progress=not no_progress, elbo_draws=elbo_draws, control=control_variate,
                     repeats=repeats, precision=precision, jit=jit, strategy=distribute.get(strategy),
                     should_stop=should_stop(), store_dir=store_dir, log=lambda m: click.echo(m, err=True))
    report(r, as_json, evaluate_lines(r))


@click.command()
@click.option("--workdir", type=click.Path(file_okay=False), required=True, help="A trained run directory.")
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="SavedModel directory  [default: saved_models/<run name>/<next version>].")
@click.option("--T", "T", type=T_OR_AUTO, default=None,
              help="Export with a shorter T than trained (p_noise prior); auto: choose-T's T* and its prior  "
                   "[default: the prior's T, else the run's].")
@click.option("--rtol", type=POSITIVE, default=1e-5, help="ODE relative tolerance (bpd, ode sampler).")
@click.option("--atol", type=POSITIVE, default=1e-5, help="ODE absolute tolerance.")
@click.option("--temperature", type=FiniteFloat(0, 10, min_open=True), default=None,
              help="Scale of the prior's noise in every sampler  [default: 1; with --T auto, the temperature "
                   "choose-T measured, for its sampler].")
@prior_option
@json_option
@friendly(resumable=False)
def export(workdir, out, T, rtol, atol, temperature, prior, as_json):
    """One SavedModel for TF Serving with sample, bpd, log_prob, score and metadata signatures.
    e.g.  shortdiff export --workdir runs/digits-vp-T0.4"""
    temperatures = export_temperatures(workdir, T, temperature)
    workdir, T, prior = checks.chosen_T(workdir, T, prior)
    checks.run_T(checks.trained_run(workdir), T, workdir)
    checks.prior_for(workdir, prior, T)
    if out:
        checks.new_output(out)
    load_tensorflow()
    from shortdiff_tf.app.export import export_run
    r = export_run(workdir, out, prior, T, rtol, atol, log=lambda m: click.echo(m, err=True), temperatures=temperatures)
    report(r, as_json, [f"exported {workdir} (step {r['checkpoint_step']}, T={r['T']:g}, prior {r['prior']}) "
                        f"in {r['seconds']:.0f} s",
                        f"wrote {r['out']} with signatures {', '.join(r['signatures'])} and "
                        f"{r['warmup_requests']} TF Serving warm-up requests"])


def register(group):
    from cli.train_commands import fit_prior, train
    for cmd in (train, fit_prior, sample, evaluate, export):
        group.add_command(cmd)
    return group


def export_temperatures(workdir, T, temperature) -> dict:
    """sampler -> temperature: ``temperature`` for every sampler; with --T auto, choose-T's for its
    sampler; else none (1 everywhere)."""
    if temperature is not None:
        return {name: temperature for name in SAMPLER_CHOICES}
    if T != "auto":
        return {}
    sampler = checks.choose_T_report(workdir).get("sampler")
    return {sampler: checks.chosen_temperature(workdir, T, None)} if sampler else {}
