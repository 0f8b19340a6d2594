"""Turn library exceptions and signals into one-line messages with a non-zero exit and no traceback.

Exit statuses: 1 bad input or a failure the message names; 75 (EX_TEMPFAIL) pre-empted by
SIGTERM or SIGUSR1 after saving what resumes the work; 130 the same after Ctrl-C (SIGINT); 128 + the
signal's number when a command that keeps nothing (sample, export) was stopped by it.
"""
from __future__ import annotations

import errno
import functools
import re
import signal
import sys

import click

EXPECTED = (ValueError, FileNotFoundError, FloatingPointError, NotADirectoryError, FileExistsError)
NO_SPACE = "No space left on device"


def one_line(err: BaseException) -> str:
    """The error's message on one line; for an OSError, what failed and on which file."""
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return no_space(err.filename)
    if isinstance(err, OSError) and not isinstance(err, EXPECTED) and err.strerror:
        where = f" ({err.filename})" if err.filename else ""
        return f"{err.strerror}{where}: check the path and its permissions"
    return " ".join(str(err).split()) or type(err).__name__


def no_space(path) -> str:
    where = f" while writing {path}" if path else ""
    return (f"no space left on device{where}; free some space and rerun the same command (finished work is kept and "
            f"nothing half-written is left)")


def _tf_no_space(err: BaseException):
    """A TensorFlow error from a full disk (a checkpoint or summary write) as a one-line message."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not isinstance(err, tf.errors.OpError) or NO_SPACE not in str(err):
        return None
    path = re.search(r"(/[^\s:;,'\"/]+(?:/[^\s:;,'\"]+)+)", str(err))       # a file path, not /job:localhost
    return no_space(path.group(1) if path else None)


def should_stop():
    """The current command's pre-emption poll (``preemption.Preemption.poll``)."""
    from shortdiff_tf.preemption import never
    return click.get_current_context().meta.get("should_stop", never)


def reclaim_signals() -> None:
    """Put the pre-emption handlers back after TensorFlow's multi-worker runtime took SIGTERM."""
    stop = click.get_current_context().meta.get("preemption")
    if stop is not None:
        stop.install()


def friendly(fn=None, *, resumable: bool = True):
    """Run a command with one-line errors.  ``resumable``: SIGTERM/SIGINT/SIGUSR1 ask it to stop at
    its next safe point (it saves and raises ``Preempted``); otherwise (sample, export: nothing
    to keep) they stop it at once, and it says that nothing was written."""
    if fn is None:
        return functools.partial(friendly, resumable=resumable)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from shortdiff_tf.preemption import Interrupted, Preempted, Preemption
        from shortdiff_tf.runlock import RunLockedError
        try:
            with Preemption(immediate=not resumable) as stop:
                click.get_current_context().meta.update(should_stop=stop.poll, preemption=stop)
                return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Preempted as err:
            click.echo(str(err), err=True)
            raise SystemExit(130 if err.signum == signal.SIGINT else 75) from None
        except Interrupted as err:
            click.echo(f"interrupted by {signal.Signals(err.signum).name}: nothing was written (this command writes "
                       f"its files only when they are complete); rerun it to start again", err=True)
            raise SystemExit(128 + err.signum) from None
        except KeyboardInterrupt:
            click.echo("interrupted: the newest checkpoint is kept; rerun the same command to resume", err=True)
            raise SystemExit(130) from None
        except (*EXPECTED, RunLockedError, OSError) as err:
            raise click.ClickException(one_line(err)) from None
        except Exception as err:  # noqa: BLE001  (only a full disk is turned into a message here)
            message = _tf_no_space(err)
            if message is None:
                raise
            raise click.ClickException(message) from None
    return wrapper
