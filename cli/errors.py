"""Turn library exceptions into one-line errors with a non-zero exit and no traceback."""
from __future__ import annotations

import functools

import click

EXPECTED = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, FileExistsError)


def one_line(err: BaseException) -> str:
    """The error's message on one line; for an OSError, what failed and on which file."""
    if isinstance(err, OSError) and not isinstance(err, EXPECTED) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}: check the path and its permissions"
    return " ".join(str(err).split()) or type(err).__name__


def friendly(fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from shortdiff_tf.runlock import RunLockedError
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (*EXPECTED, RunLockedError, OSError) as err:
            raise click.ClickException(one_line(err)) from None
        except KeyboardInterrupt:
            click.echo("interrupted: the last checkpoint is kept; rerun the same command to resume", err=True)
            raise SystemExit(130) from None
    return wrapper
