"""Who owns a run or a server: a process named by host, pid and start time, and whether it is gone.

A pid alone is not a name: pids are reused. The start time (seconds since the epoch, as
psutil reads it from the kernel) tells a reused pid from its first owner. A process on another
host cannot be checked from here: its liveness is unknown, and nothing is closed on a guess.
"""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

# psutil's start time of one process varies by a few ms between reads (boot time is derived);
# a reused pid starts at least this much later than the process it replaced.
START_TOLERANCE_S = 1.0


def start_time(pid: int) -> float | None:
    """Start time of process ``pid`` (s since the epoch), None when it does not exist."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:  # exited, not yet reaped: not running
            return None
        return p.create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def identity(pid: int | None = None) -> dict[str, str]:
    """The owner record of process ``pid`` (default: this one): host, pid, start time."""
    pid = os.getpid() if pid is None else pid
    return {"host": socket.gethostname(), "pid": str(pid), "start": f"{start_time(pid) or 0:.2f}"}


def is_gone(owner: Mapping[str, str]) -> bool | None:
    """Whether the process ``owner`` (an ``identity()`` record) no longer runs.

    None when that cannot be told: another host, or a record that is incomplete.
    """
    try:
        host, pid, start = owner["host"], int(owner["pid"]), float(owner["start"])
    except (KeyError, TypeError, ValueError):
        return None
    if host != socket.gethostname():
        return None
    now = start_time(pid)
    return now is None or abs(now - start) > START_TOLERANCE_S


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created) for the block; the kernel releases it when
    the process dies, so a killed holder never leaves it stuck."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock
