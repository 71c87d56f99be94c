"""Owner records: a process is gone when its pid no longer runs or names a later process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

from ecocompress.tasks.processes import identity, is_gone


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_this_process_is_not_gone():
    me = identity()
    assert me["pid"] == str(os.getpid()) and me["host"] == socket.gethostname()
    assert is_gone(me) is False


def test_an_exited_process_is_gone():
    assert is_gone({**identity(), "pid": str(_dead_pid())}) is True


def test_a_reused_pid_is_gone():
    # same pid, started an hour before this process did: another process
    me = identity()
    assert is_gone({**me, "start": f"{float(me['start']) - 3600:.2f}"}) is True


def test_unknown_when_it_cannot_be_told():
    assert is_gone({**identity(), "host": "another-host"}) is None
    assert is_gone({}) is None
    assert is_gone({"host": socket.gethostname(), "pid": "x", "start": "1"}) is None
