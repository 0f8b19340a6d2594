"""Turn library exceptions into one-line errors with a non-zero exit and no traceback."""
from __future__ import annotations

import functools

import click

EXPECTED = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, FileExistsError)


def friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except EXPECTED as err:
            message = " ".join(str(err).split()) or type(err).__name__
            raise click.ClickException(message) from None
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; rerun the same command to resume", err=True)
            raise SystemExit(130) from None
    return wrapper
