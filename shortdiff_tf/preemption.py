"""Pre-emption: SIGTERM, SIGINT and SIGUSR1 ask a writing command to stop at its next safe point.

Slurm, Kubernetes and ``docker stop`` send SIGTERM (Slurm's ``--signal`` can send SIGUSR1) and
allow a grace period before SIGKILL.  ``Preemption`` installs handlers for these signals
explicitly: a process that is PID 1 in a container gets no default action for a signal it has
no handler for, so without them SIGTERM would do nothing there.  A handler only records the
signal; the training loops ``poll`` after each step (or each log step on several machines), finish it, save a checkpoint and
raise ``Preempted``, which the CLI prints in one line with the exit status ``EXIT_PREEMPTED``.
A second signal of the same kind while the state is being saved is ignored; a second Ctrl-C
before a safe point is reached stops at once (``KeyboardInterrupt``).

    with Preemption() as stop:
        train(cfg, run, should_stop=stop.poll)
"""
from __future__ import annotations

import signal
import threading
from typing import Optional

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
EXIT_PREEMPTED = 75          # EX_TEMPFAIL: stopped by a signal, the state saved; rerun the same command


class Preempted(Exception):
    """A command stopped at a safe point after a signal; ``saved`` says what it kept."""

    def __init__(self, signum: int, saved: str):
        self.signum, self.saved = signum, saved
        super().__init__(f"pre-empted by {signal.Signals(signum).name}: {saved}")


class Interrupted(Exception):
    """A signal stopped a command that keeps nothing (``Preemption(immediate=True)``)."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


class Preemption:
    """Record SIGTERM / SIGINT / SIGUSR1 while active (main thread only; elsewhere a no-op), or
    with ``immediate`` raise ``Interrupted`` at once (a command with nothing to save)."""

    def __init__(self, signals=SIGNALS, immediate: bool = False):
        self.signals, self.signum, self._previous, self.immediate = tuple(signals), None, {}, immediate

    def requested(self) -> Optional[int]:
        """The signal received, or None."""
        return self.signum

    def poll(self) -> Optional[int]:
        """The signal received, or None; first puts the handlers back in place.  TensorFlow's
        multi-worker runtime installs a C++ SIGTERM handler of its own from a background thread
        some time after the strategy starts (it swallows the signal); re-arming at every poll
        means a SIGTERM after the first poll always reaches this object."""
        if self._previous:
            self.install()
        return self.signum

    def _handle(self, signum, frame):
        if self.immediate:
            raise Interrupted(signum)
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt                      # a second Ctrl-C: stop now
        self.signum = self.signum or signum

    def __enter__(self) -> "Preemption":
        return self.install()

    def install(self) -> "Preemption":
        """Install (again) the handlers: TensorFlow's multi-worker runtime puts its own SIGTERM
        handler in place when it starts, so a command calls this once its strategy exists."""
        if threading.current_thread() is threading.main_thread():
            for s in self.signals:
                previous = signal.signal(s, self._handle)
                self._previous.setdefault(s, previous)
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous.clear()
        return False


def never() -> Optional[int]:
    """A ``should_stop`` that never asks to stop (library use without handlers)."""
    return None
