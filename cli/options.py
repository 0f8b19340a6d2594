"""Option types shared by the commands."""
from __future__ import annotations

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
