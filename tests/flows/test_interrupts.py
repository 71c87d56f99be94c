"""SIGTERM is handled like Ctrl-C, and Prefect's temporary server is started contained."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from ecocompress.flows.interrupts import sigterm_as_interrupt


def test_sigterm_raises_keyboard_interrupt_inside_the_block_only():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"), sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)  # the handler runs at the next bytecode: never reached
    assert signal.getsignal(signal.SIGTERM) is before


def test_guarded_exits_130_on_sigterm():
    import argparse

    from ecocompress.flows.cli import guarded

    def fn(args):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
        return 0

    assert guarded(fn, argparse.Namespace(verbose=False)) == 130


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux")
def test_a_contained_child_has_its_own_session_and_dies_with_its_parent():
    code = (
        "import time\n"
        "from ecocompress.flows.temporary_server import _contained_popen\n"
        "p = _contained_popen(['sleep', '60'])\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    try:
        assert os.getsid(child) == child  # a session of its own: group signals miss it
        parent.kill()  # SIGKILL: no handler, no atexit
        parent.wait()
        t0 = time.monotonic()
        while _alive(child) and time.monotonic() - t0 < 5:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
