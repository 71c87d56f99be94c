"""Prefect's temporary server, contained: it dies with the command that started it.

With no stack, Prefect starts one uvicorn child per command (``SubprocessASGIServer``), in
the command's process group. A terminal's Ctrl-C reached that server too: the command's
last state reports then waited on a dead server (73 s, exit 1). A SIGKILL of the command
orphaned it. ``contain()`` changes how Prefect starts it, not what it runs:

- its own session: a signal sent to the command's group leaves it alone; the command stops
  it at exit, as Prefect does (``atexit``);
- on Linux, a parent-death signal (SIGTERM when the thread that started it ends; Prefect
  starts it from the main thread): a killed command takes its server along;
- a pid file under ``PREFECT_HOME/servers``: the next command ends a server whose owner is
  gone, wherever no parent-death signal exists;
- the first start on a home, which creates Prefect's database, runs under a file lock, so
  two first commands never migrate the same SQLite file at once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ecocompress.tasks.processes import file_lock, identity, is_gone

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def prefect_home() -> Path:
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value())


def servers_dir() -> Path:
    return prefect_home() / "servers"


def _parent_death_signal() -> Callable[[], None] | None:
    """A ``preexec_fn`` that asks the kernel for SIGTERM when this thread dies (Linux only)."""
    if (
        not sys.platform.startswith("linux")
        or threading.current_thread() is not threading.main_thread()
    ):
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls into it
    parent = os.getpid()

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _contained_popen(*args: Any, **kwargs: Any) -> subprocess.Popen:
    kwargs.setdefault("start_new_session", True)
    preexec = _parent_death_signal()
    if preexec is not None:
        kwargs.setdefault("preexec_fn", preexec)
    return subprocess.Popen(*args, **kwargs)


def _pid_file(pid: int) -> Path:
    return servers_dir() / f"{pid}.json"


def contain() -> None:
    """Make Prefect start its temporary server contained (see the module doc). Idempotent."""
    from prefect.server.api import server as mod

    cls = mod.SubprocessASGIServer
    if getattr(cls, "_ecocompress_contained", False):
        return
    # the module's own ``subprocess`` with a Popen that contains: only this module sees it
    mod.subprocess = types.SimpleNamespace(**{**vars(subprocess), "Popen": _contained_popen})
    start, stop = cls.start, cls.stop

    def contained_start(self: Any, timeout: int | None = None) -> None:
        if self.running:
            return
        home = prefect_home()
        marker = home / ".database-created"
        if marker.exists():
            start(self, timeout)
        else:
            with file_lock(home / ".first-start.lock"):
                start(self, timeout)
                marker.touch()
        if self.server_process is not None:
            p = _pid_file(self.server_process.pid)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(
                json.dumps({"owner": identity(), "server": identity(self.server_process.pid)})
            )

    def contained_stop(self: Any) -> None:
        pid = self.server_process.pid if self.server_process is not None else None
        stop(self)
        if pid is not None:
            _pid_file(pid).unlink(missing_ok=True)

    cls.start, cls.stop = contained_start, contained_stop
    cls._ecocompress_contained = True


def reap_orphans() -> list[int]:
    """End temporary servers whose owning command is gone; returns their pids."""
    ended = []
    for f in sorted(servers_dir().glob("*.json")) if servers_dir().is_dir() else []:
        try:
            rec = json.loads(f.read_text())
            owner, server = rec["owner"], rec["server"]
        except (OSError, ValueError, KeyError):
            continue
        if not is_gone(owner):
            continue
        if is_gone(server) is False:  # the same process (start time checked), still running
            pid = int(server["pid"])
            try:
                os.killpg(pid, signal.SIGTERM)  # it leads its own session
            except (ProcessLookupError, PermissionError):
                pass
            else:
                ended.append(pid)
        f.unlink(missing_ok=True)
    return ended
