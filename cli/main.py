"""The ``shortdiff`` command line: thin Click commands over ``shortdiff_tf``.

TensorFlow is imported inside the commands, so ``shortdiff --help`` answers at once.  The
library raises ``ValueError`` (bad input) and ``FileNotFoundError`` (missing data or run);
``cli.errors`` turns them into one-line errors with a non-zero exit.
"""
from __future__ import annotations

import os

import click

from cli import choose_command, commands, import_command, quiet, runs_command, study


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="shortdiff")
@click.option("--verbose", is_flag=True, help=f"Show TensorFlow's start-up logs (or set {quiet.VERBOSE_ENV}=1).")
def cli(verbose):
    """shortdiff: score-based diffusion with a short diffusion time T and an auxiliary prior at T.

    \b
    Typical session:
      shortdiff train --sde vp --T 0.4                  # the bundled 8x8 digits
      shortdiff fit-prior --workdir runs/digits-vp-T0.4 # the auxiliary prior at T
      shortdiff sample --workdir runs/digits-vp-T0.4
      shortdiff evaluate --workdir runs/digits-vp-T0.4
      shortdiff export --workdir runs/digits-vp-T0.4
      tensorboard --logdir runs/digits-vp-T0.4          # losses, sample grids, the prior's NLL
      shortdiff runs                                    # every run, its T, prior, bits/dim
    """
    if verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"


commands.register(cli)
cli.add_command(study.study)
cli.add_command(study.train_classifier)
cli.add_command(import_command.import_command)
cli.add_command(runs_command.runs_command)
cli.add_command(choose_command.choose_T)
