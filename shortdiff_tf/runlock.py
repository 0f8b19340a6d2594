"""One writer per run directory: a lock file holding the writer's PID, host and command.

``with RunLock(RUN / ".lock", "train"):`` creates the file exclusively (O_CREAT | O_EXCL) and
removes it on exit.  A lock left by a process that is gone (same host, PID not running) is
taken over; a live holder, or one on another host, gets a one-line error that names it.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path


class RunLockedError(RuntimeError):
    """Another process writes this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:                     # exists, owned by someone else
        return True
    return True


class RunLock:
    def __init__(self, path, command: str):
        self.path, self.command = Path(path), command
        self.held = False

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except OSError as err:
                if err.errno != errno.EEXIST:
                    raise
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise RunLockedError(f"could not lock {self.path}")

    def _take_over_if_stale(self) -> None:
        h = self.holder()
        pid, host = h.get("pid"), h.get("host")
        if not h and time.time() - self.path.stat().st_mtime < 5:   # being written right now
            time.sleep(0.2)
            h = self.holder()
            pid, host = h.get("pid"), h.get("host")
        stale = not h or (host == socket.gethostname() and isinstance(pid, int) and not _alive(pid))
        if not stale:
            raise RunLockedError(
                f"{self.path.parent} is in use by `{h.get('command', '?')}` (pid {pid} on {host}, since "
                f"{h.get('since', '?')}); wait for it to finish, or delete {self.path} if that process is gone")
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    def release(self) -> None:
        if self.held and self.holder().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
