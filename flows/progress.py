"""Progress display on stderr: one line per step with elapsed time, so long CPU runs show life."""

from __future__ import annotations

import sys
import time


class Progress:
    """Prints ``[i/n] candidate: step`` lines to stderr (rich when it is a terminal)."""

    def __init__(self, total: int | None, quiet: bool = False) -> None:
        from rich.console import Console

        self.total = total
        self.index = 0
        self.quiet = quiet
        self.console = Console(stderr=True, highlight=False)
        self._t0 = time.perf_counter()
        self._current: str | None = None

    def start_candidate(self, label: str) -> None:
        self.index += 1
        self._current = label
        n = f"/{self.total}" if self.total is not None else ""
        self._emit(f"[bold][{self.index}{n}] {label}[/bold]")

    def step(self, label: str, what: str) -> None:
        self._emit(f"    {what} ...")

    def done(self, label: str, cache_hit: bool) -> None:
        self._emit(f"    done{' (all steps cached)' if cache_hit else ''}")

    def failed(self, label: str, reason: str) -> None:
        self._emit(f"    [red]FAILED[/red]: {reason}")

    def note(self, msg: str) -> None:
        self._emit(msg)

    def _emit(self, msg: str) -> None:
        if self.quiet:
            return
        elapsed = time.perf_counter() - self._t0
        self.console.print(f"[dim]{elapsed:7.1f}s[/dim] {msg}")
        sys.stderr.flush()
