"""One writer per run directory: a lock that the kernel releases when its holder dies.

``with RunLock(RUN / ".lock", "shortdiff train"):`` opens the lock file and takes an exclusive
``fcntl.flock`` on it for as long as it is held.  The kernel drops the lock when the holder's
process ends, however it ends (SIGKILL, a container restart, a lost node on NFS once its lease
expires), so a restart never needs a person, and nothing ever decides from a PID whether a
holder still lives (a restarted container is PID 1 again on the same hostname).  The holder's
description (PID, host, command, since) is written inside for the refusal message.  The file
is never deleted: two processes that race for it lock the same inode, and exactly one wins.

Where the filesystem has no working flock (some network filesystems answer ENOLCK or
EOPNOTSUPP), or when ``SHORTDIFF_LOCK=heartbeat``, a heartbeat lock is used instead: the file
is created exclusively beside a ``.takeover`` guard, holds the holder's boot id and process
start time, and a thread rewrites its heartbeat every ``HEARTBEAT`` seconds.  It is stale, and
is taken over, when its heartbeat is older than ``STALE`` seconds, or at once when its holder
was on this machine since the same boot and that process no longer runs.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from pathlib import Path

HEARTBEAT, STALE = 10.0, 60.0               # seconds
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}
MODE_ENV = "SHORTDIFF_LOCK"


class RunLockedError(RuntimeError):
    """Another process writes this run directory."""


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat), or ''."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def describe(command: str) -> dict:
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "boot_id": boot_id(), "start_time": start_time(pid), "heartbeat": time.time()}


def refusal(path: Path, holder: dict) -> RunLockedError:
    return RunLockedError(f"{path.parent} is in use by `{holder.get('command', '?')}` (pid {holder.get('pid', '?')} "
                          f"on {holder.get('host', '?')}, since {holder.get('since', '?')}); wait for it to finish")


class RunLock:
    def __init__(self, path, command: str):
        self.path, self.command = Path(path), command
        self.fd, self.mode, self._beating = None, None, None

    def holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if os.environ.get(MODE_ENV) != "heartbeat":
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as err:
                os.close(fd)
                if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise refusal(self.path, self.holder()) from None
                if err.errno not in UNSUPPORTED:
                    raise
            else:
                self.fd, self.mode = fd, "flock"
                self._write(fd, describe(self.command))
                return self
        return self._acquire_heartbeat()

    @staticmethod
    def _write(fd: int, holder: dict) -> None:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        os.fsync(fd)

    def release(self) -> None:
        if self.mode == "flock" and self.fd is not None:
            os.ftruncate(self.fd, 0)                      # no holder described: the lock is free
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
        elif self.mode == "heartbeat":
            self._beating.set()
            if self.holder().get("token") == self.token:
                self.path.unlink(missing_ok=True)
        self.fd, self.mode = None, None

    # ---- the heartbeat fallback -------------------------------------------------------------
    def _acquire_heartbeat(self) -> "RunLock":
        me = {**describe(self.command), "token": f"{os.getpid()}-{time.time_ns()}"}
        self.token = me["token"]
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            self._write(fd, me)
            os.close(fd)
            self.mode, self._beating = "heartbeat", threading.Event()
            threading.Thread(target=self._beat, args=(me,), daemon=True).start()
            return self
        raise refusal(self.path, self.holder())

    def _beat(self, me: dict) -> None:
        while not self._beating.wait(HEARTBEAT):
            if self.holder().get("token") != me["token"]:
                return                                            # taken over: stop claiming it
            me["heartbeat"] = time.time()
            tmp = self.path.with_name(self.path.name + ".beat")
            tmp.write_text(json.dumps(me))
            os.replace(tmp, self.path)

    def _take_over_if_stale(self) -> None:
        """Under the ``.takeover`` guard (one process at a time, itself stale after STALE s), look
        at the holder again and remove the lock only if it is stale."""
        guard = self.path.with_name(self.path.name + ".takeover")
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if time.time() - guard.stat().st_mtime > STALE:
                guard.unlink(missing_ok=True)
            time.sleep(0.2)
            return
        try:
            os.close(fd)
            holder = self.holder()
            if not self._stale(holder):
                raise refusal(self.path, holder)
            self.path.unlink(missing_ok=True)
        finally:
            guard.unlink(missing_ok=True)

    @staticmethod
    def _stale(h: dict) -> bool:
        if not h:
            return True
        if time.time() - float(h.get("heartbeat", 0)) > STALE:
            return True
        same_boot = h.get("host") == socket.gethostname() and h.get("boot_id") and h.get("boot_id") == boot_id()
        return bool(same_boot) and start_time(int(h.get("pid", -1))) != h.get("start_time")

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def check_free(path) -> None:
    """Refuse at once (before TensorFlow starts) when another process holds the lock at ``path``;
    takes nothing (the command takes the lock itself later)."""
    lock = RunLock(path, "check")
    if not Path(path).exists():
        return
    lock.acquire()
    lock.release()
