"""Run model-written Python in a constrained child process (for HumanEval).

Layers, each cheap and each independent of the others:
- a fresh interpreter (``python -I``: no user site, no PYTHON* variables) with a
  minimal environment, in a throw-away working directory deleted afterwards;
- resource limits set before exec: address space, CPU seconds, file size and
  number of processes;
- no network: a new, empty network namespace (``unshare -rn`` or ``unshare -n``)
  when the host allows it, and in any case a prelude that makes ``socket.socket``
  raise;
- a wall-clock timeout that kills the whole process group.

This is containment for honest mistakes (infinite loops, huge allocations, stray
files), not a security boundary against a hostile program: run untrusted code from
unknown models inside a container or VM as well.
"""

from __future__ import annotations

import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache

OUTPUT_LIMIT_BYTES = 1 << 20  # per stream; RLIMIT_FSIZE also caps files the program writes
NPROC_LIMIT = 64  # not enforced for root; harmless elsewhere

# Runs before the program, in the child: a socket class that refuses to be created.
_PRELUDE = """\
import socket as _socket
class _NoNetwork(_socket.socket):
    def __init__(self, *args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")
_socket.socket = _NoNetwork
del _socket, _NoNetwork
import sys as _sys
_path = _sys.argv[1]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
del _f, _sys
exec(_code, {"__name__": "__main__", "__file__": _path})
"""


@lru_cache(maxsize=1)
def network_isolation() -> tuple[str, ...]:
    """The command prefix that runs a child in an empty network namespace, or ``()``.

    Probed once per process: ``unshare -rn`` works unprivileged where user namespaces
    are enabled, ``unshare -n`` works as root.
    """
    exe = shutil.which("unshare")
    if exe is None:
        return ()
    for flags in ("-rn", "-n"):
        try:
            probe = subprocess.run(
                [exe, flags, sys.executable, "-I", "-c", "pass"], capture_output=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            continue
        if probe.returncode == 0:
            return (exe, flags)
    return ()


def _limits(timeout_s: float, memory_mb: int) -> None:
    """Runs in the child between fork and exec (imports nothing: another thread may hold a lock)."""
    mem = memory_mb * 1024 * 1024
    cpu = math.ceil(timeout_s) + 1  # CPU seconds; the wall timeout normally fires first
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (OUTPUT_LIMIT_BYTES, OUTPUT_LIMIT_BYTES))
    resource.setrlimit(resource.RLIMIT_NPROC, (NPROC_LIMIT, NPROC_LIMIT))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def run_untrusted(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> tuple[bool, str]:
    """Run ``program`` (Python source) in a sandboxed child; report whether it exited cleanly.

    Args:
        program: the full program; for HumanEval prompt + completion + tests + ``check(...)``.
        timeout_s: wall-clock limit in seconds (CPU time is limited to about the same).
        memory_mb: address-space limit of the child in MiB.

    Returns:
        ``(passed, reason)``: ``(True, "passed")`` on exit status 0; otherwise
        ``(False, "timed out")`` or ``(False, "failed: <last line of stderr or signal>")``.
    """
    root = tempfile.mkdtemp(prefix="ecocompress-sandbox-")
    try:
        work = os.path.join(root, "work")
        os.mkdir(work)
        prog = os.path.join(root, "program.py")
        with open(prog, "w", encoding="utf-8") as f:
            f.write(program)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8"}
        cmd = [*network_isolation(), sys.executable, "-I", "-c", _PRELUDE, prog]
        with open(os.path.join(root, "stderr"), "w+b") as err:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,  # own process group, so a timeout kills its children too
                preexec_fn=lambda: _limits(timeout_s, memory_mb),
            )
            try:
                rc = proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                return False, "timed out"
            finally:
                _kill_group(proc)  # children left behind by a program that exited
            err.seek(0)
            tail = err.read(OUTPUT_LIMIT_BYTES).decode("utf-8", "replace").strip().splitlines()
        if rc == 0:
            return True, "passed"
        if rc in (-signal.SIGXCPU, -signal.SIGKILL):
            return False, "timed out"
        if rc < 0:
            return False, f"failed: killed by {signal.Signals(-rc).name}"
        return False, f"failed: {tail[-1] if tail else f'exit status {rc}'}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
