"""Option types shared by the commands."""
from __future__ import annotations

import json
import math
from pathlib import Path

import click


class AliasedOption(click.Option):
    """An option whose old spellings (``hidden_aliases``) keep working but are left out of --help."""

    def __init__(self, *args, hidden_aliases=(), **kwargs):
        super().__init__(*args, **kwargs)
        self.hidden_aliases = set(hidden_aliases)

    def get_help_record(self, ctx):
        shown, self.opts = self.opts, [o for o in self.opts if o not in self.hidden_aliases]
        try:
            return super().get_help_record(ctx)
        finally:
            self.opts = shown


class FiniteFloat(click.FloatRange):
    """A float option that refuses NaN and infinity (``float('nan')`` passes every range check),
    with an optional range as click.FloatRange."""
    name = "float"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


POSITIVE = FiniteFloat(0, min_open=True)
NON_NEGATIVE = FiniteFloat(0)
T_RANGE = FiniteFloat(0, 1, min_open=True)


class TOrAuto(FiniteFloat):
    """A diffusion time in (0, 1], or ``auto``: the T* that ``shortdiff choose-T`` chose."""
    name = "T"

    def convert(self, value, param, ctx):
        if isinstance(value, str) and value.strip().lower() == "auto":
            return "auto"
        return super().convert(value, param, ctx)

    def get_metavar(self, param, ctx=None):
        return "T|auto"


T_OR_AUTO = TOrAuto(0, 1, min_open=True)
UNIT_INTERVAL = FiniteFloat(0, 1)


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
