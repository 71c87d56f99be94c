"""Interruptions: Ctrl-C, and SIGTERM handled like it.

A terminal's Ctrl-C raises ``KeyboardInterrupt``. SIGTERM (what ``timeout``, ``kill`` and
``docker stop`` send) would end Python at once, leaving its MLflow runs RUNNING; inside a
command it raises ``KeyboardInterrupt`` too. While a Prefect flow runs, Prefect's own SIGTERM
handler raises ``prefect.exceptions.TerminationSignal`` first (it re-sends the signal after
its crash report, which then lands here): code that closes runs catches
``flows.candidate.INTERRUPTS``. This module imports no Prefect: every CLI command uses it.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises ``KeyboardInterrupt`` in the main thread for the block (elsewhere a no-op:
    Python runs signal handlers in the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def exit_interrupted() -> NoReturn:
    """End an interrupted command's process now: exit handlers run (Prefect stops its temporary
    server, MLflow flushes), output is flushed, and the interpreter's teardown is skipped.

    That teardown (freeing every module: torch, transformers, lm-eval, ...) took 4-6 s on a
    busy 2-core machine, past the 5 s a Ctrl-C may take. Only a console entry point calls this,
    never code a test or a library calls in-process.
    """
    import atexit
    import os
    import sys

    try:
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(EXIT_INTERRUPTED)
