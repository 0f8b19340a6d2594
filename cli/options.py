"""Option types shared by the commands."""
from __future__ import annotations

import math

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
UNIT_INTERVAL = FiniteFloat(0, 1)
