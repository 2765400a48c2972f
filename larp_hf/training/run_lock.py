"""
One run per output folder: OUTPUT_DIR/run.lock, held for the run's life.

The lock is an exclusive `flock` on the file, which the kernel drops when its process dies however it dies, so a
killed run never blocks the next one. The file's JSON names the holder (PID, host, start time, command) for the
refusal message; a file whose holder no longer holds the lock is a stale lock, taken over with a warning. The holder
removes the file when it exits normally.
"""

import atexit
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path


LOCK_FILE = "run.lock"


class OutputDirBusyError(RuntimeError):
    """Another live run holds the output folder's lock."""


def describe_holder(holder: dict) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"PID {holder.get('pid', '?')} on {holder.get('host', '?')}, started {started}: {holder.get('command', '?')}"


class RunLock:
    """
    The lock of one output folder. `acquire()` takes it or raises `OutputDirBusyError` naming the holder; it returns
    a warning when it took over a stale lock. `release()` (run for every held lock at interpreter exit by
    `release_held_locks`) gives it back.
    """

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self._descriptor = None

    def acquire(self) -> str | None:
        while True:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(descriptor)
                os.close(descriptor)
                raise OutputDirBusyError(
                    f"{self.path.parent} is in use by another run ({describe_holder(holder)}). Wait for it to end, "
                    "or pick another output folder."
                ) from None
            # The holder removes the file before letting go: a lock won on a removed file is no lock; try again.
            try:
                same_file = os.stat(self.path).st_ino == os.fstat(descriptor).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                break
            os.close(descriptor)
        stale = _read_holder(descriptor)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "command": " ".join(sys.argv)}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(descriptor)
        self._descriptor = descriptor
        _held.append(self)
        if stale:
            return f"Took over the stale lock {self.path} of a run that ended without releasing it ({describe_holder(stale)})."
        return None

    def release(self):
        if self._descriptor is None:
            return
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._descriptor)  # closing drops the flock
        self._descriptor = None
        _held.remove(self)


_held: list[RunLock] = []


def held_lock(folder: Path) -> RunLock | None:
    """The lock of `folder` this process already holds (a second run in one process, one after the other), if any."""
    path = (Path(folder) / LOCK_FILE).resolve()
    return next((lock for lock in _held if lock.path.resolve() == path), None)


@atexit.register
def release_held_locks():
    """Release the locks this process holds; run at interpreter exit (a process killed outright leaves a stale one)."""
    for lock in list(_held):
        lock.release()


def _forget_in_child():
    # A forked child (a DataLoader worker) must not keep its parent's lock alive after the parent dies.
    for lock in _held:
        os.close(lock._descriptor)
        lock._descriptor = None
    _held.clear()


os.register_at_fork(after_in_child=_forget_in_child)


def _read_holder(descriptor: int) -> dict:
    try:
        return json.loads(os.pread(descriptor, 65536, 0).decode() or "{}")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return {"pid": "?", "host": "?", "command": "(unreadable lock file)"}


__all__ = ["LOCK_FILE", "OutputDirBusyError", "RunLock", "describe_holder", "held_lock", "release_held_locks"]
