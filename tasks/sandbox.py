"""Run model-written Python isolated by bubblewrap (for HumanEval).

The program runs inside ``bwrap`` (Debian/Ubuntu package ``bubblewrap``), which gives it:
- its own filesystem view: only ``/usr`` (and the ``/bin``, ``/lib*`` links to it) and the
  Python prefix, read-only; no ``/etc``, no home directory, no ``/work``, no host ``/tmp``;
  the program itself is a read-only file; the one writable place is a private tmpfs at
  ``/tmp`` of ``WORK_BYTES`` (the disk quota), gone when the run ends;
- the standard library only: the interpreter starts without ``site`` (no site-packages,
  no ``.pth`` code), and the prelude adds ``exit``/``quit`` back;
- its own network namespace (nothing but a down loopback: no TCP, no abstract UNIX
  sockets), PID namespace (it sees and signals only its own processes; when it exits
  or is killed, the kernel kills every process left in it), IPC and UTS namespaces;
- a new session (no terminal), an empty environment, and death with its parent;
- rlimits set before the program's first line runs: CPU seconds, address space, file
  size, open files, processes; a root evaluator's program also drops to uid ``nobody``
  first (the kernel does not apply the process limit to root).

Where bwrap is missing or cannot create namespaces, code execution is refused with a
``UserError`` naming what to install: it never falls back to weaker guards.
"""

from __future__ import annotations

import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from functools import lru_cache

from ecocompress.tasks.errors import UserError

WORK_BYTES = 64 << 20  # size of the writable tmpfs (/tmp inside): the program's disk quota
FILE_BYTES = 16 << 20  # RLIMIT_FSIZE: the largest file it may write (stderr included)
STDERR_TAIL_BYTES = 64 << 10  # how much of stderr is read back for the reason
NPROC_LIMIT = 32  # processes (and threads) of the sandbox user
NOFILE_LIMIT = 256  # open file descriptors
SANDBOX_UID = 65534  # ``nobody``: what a root evaluator's program runs as
INSTALL_HINT = "install bubblewrap (apt-get install bubblewrap) on a host that allows namespaces"
MARKER = "ecocompress-sandbox-prelude"  # in every sandboxed process's argv (tests look for it)
PROGRAM_PATH = "/sandbox/program.py"  # where the program appears inside, read-only

# Runs first inside the sandbox (trusted), then executes the program in the same process.
# rlimits are set here rather than in a preexec_fn: the evaluator is multi-threaded
# (torch), and RLIMIT_NPROC must be set inside the new user namespace, where only the
# sandbox's own processes count.
_PRELUDE = f"""\
# {MARKER}
import os, resource, sys
_uid, _lim = {SANDBOX_UID}, dict(zip(("as", "cpu", "fsize", "nofile", "nproc"), map(int, sys.argv[2:7])))
if os.getuid() == 0:  # a root evaluator: bwrap kept root inside; drop to nobody before anything
    os.chown("/tmp", _uid, _uid)
    os.setgroups([]); os.setgid(_uid); os.setuid(_uid)
for _name, _value in (("AS", _lim["as"]), ("CPU", _lim["cpu"]), ("FSIZE", _lim["fsize"]),
                      ("NOFILE", _lim["nofile"]), ("NPROC", _lim["nproc"]), ("CORE", 0)):
    resource.setrlimit(getattr(resource, "RLIMIT_" + _name), (_value, _value))
del os, resource, _uid, _lim, _name, _value
import builtins, _sitebuiltins  # exit() and quit() without site: no site-packages, no .pth
builtins.exit = _sitebuiltins.Quitter("exit", "Ctrl-D (i.e. EOF)")
builtins.quit = _sitebuiltins.Quitter("quit", "Ctrl-D (i.e. EOF)")
del builtins, _sitebuiltins
_path = sys.argv[1]
sys.argv = [_path]
with open(_path, encoding="utf-8") as _f:
    _code = compile(_f.read(), _path, "exec")
del _f, _path, sys
exec(_code, {{"__name__": "__main__", "__file__": "{PROGRAM_PATH}"}})
"""


def _bwrap_path() -> str | None:
    return shutil.which("bwrap")


def _python() -> tuple[str, list[str]]:
    """The real interpreter (not a venv's link) and the folders it needs, read-only."""
    exe = os.path.realpath(sys.executable)
    prefixes = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix)}
    binds = sorted(p for p in prefixes if p != "/usr" and not p.startswith("/usr/"))
    if not any(exe.startswith(p + os.sep) for p in prefixes | {"/usr"}):
        binds.append(os.path.dirname(exe))
    return exe, binds


def _bwrap_argv(bwrap: str, program_fd: int, info_fd: int) -> list[str]:
    if os.geteuid() == 0:
        # no user namespace: a root-mapped one would keep kernel uid 0, which no process
        # limit binds; the prelude drops to nobody instead
        ns = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts"]
        ns += ["--unshare-cgroup-try"]
    else:
        ns = ["--unshare-all", "--unshare-user", "--disable-userns"]
    argv = [bwrap, *ns, "--die-with-parent", "--new-session", "--clearenv"]
    for key, value in (("PATH", "/usr/bin:/bin"), ("HOME", "/tmp"), ("TMPDIR", "/tmp")):
        argv += ["--setenv", key, value]
    argv += ["--setenv", "LANG", "C.UTF-8", "--ro-bind", "/usr", "/usr"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):  # merged /usr: recreate the link
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    exe, binds = _python()
    for path in binds:
        parents = []  # the folders above it, traversable by the sandbox user (/root is 0700)
        parent = os.path.dirname(path)
        while parent != "/":
            parents.insert(0, parent)
            parent = os.path.dirname(parent)
        for folder in parents:
            argv += ["--perms", "0755", "--dir", folder]
        argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(WORK_BYTES), "--tmpfs", "/tmp"]
    argv += ["--perms", "0444", "--ro-bind-data", str(program_fd), PROGRAM_PATH]
    argv += ["--remount-ro", "/dev", "--remount-ro", "/", "--chdir", "/tmp"]
    argv += ["--info-fd", str(info_fd), exe, "-I", "-S", "-c", _PRELUDE]
    return argv


@lru_cache(maxsize=1)
def require_sandbox() -> str:
    """Check once per process that bwrap can run a program; return its path.

    Raises:
        UserError: bwrap is missing, or cannot create its namespaces here.
    """
    bwrap = _bwrap_path()
    if bwrap is None:
        raise UserError(f"running model-written code needs bwrap, not found: {INSTALL_HINT}")
    rc, tail = _run(bwrap, "pass\n", timeout_s=30.0, memory_mb=1024)
    if rc != 0:
        why = tail[-1] if tail else f"exit status {rc}"
        raise UserError(f"bwrap cannot isolate code here ({why}): {INSTALL_HINT}")
    return bwrap


def run_untrusted(program: str, timeout_s: float = 10.0, memory_mb: int = 1024) -> tuple[bool, str]:
    """Run ``program`` (Python source) in the sandbox; report whether it exited cleanly.

    Args:
        program: the full program; for HumanEval prompt + completion + tests + ``check(...)``.
        timeout_s: wall-clock limit in seconds (CPU time is limited to about the same).
        memory_mb: address-space limit of each sandboxed process in MiB.

    Returns:
        ``(passed, reason)``: ``(True, "passed")`` on exit status 0; otherwise
        ``(False, "timed out")`` or ``(False, "failed: <last line of stderr or signal>")``.

    Raises:
        UserError: no working bwrap (see ``require_sandbox``).
    """
    rc, tail = _run(require_sandbox(), program, timeout_s, memory_mb)
    if rc == 0:
        return True, "passed"
    if rc is None or rc == 128 + signal.SIGXCPU:
        return False, "timed out"
    if rc > 128 and rc - 128 in signal.Signals._value2member_map_:
        return False, f"failed: killed by {signal.Signals(rc - 128).name}"
    return False, f"failed: {tail[-1] if tail else f'exit status {rc}'}"


def _run(
    bwrap: str, program: str, timeout_s: float, memory_mb: int
) -> tuple[int | None, list[str]]:
    """Run one program; its exit status (``None``: wall timeout) and its last stderr lines.

    Nothing lands on the host's disk: the program and stderr live in memfds.
    """
    cpu = math.ceil(timeout_s) + 1  # CPU seconds; the wall timeout normally fires first
    limits = (memory_mb << 20, cpu, FILE_BYTES, NOFILE_LIMIT, NPROC_LIMIT)
    prog_fd = os.memfd_create("program")
    err_fd = os.memfd_create("stderr")
    info_r, info_w = os.pipe()
    try:
        os.write(prog_fd, program.encode("utf-8"))
        os.lseek(prog_fd, 0, os.SEEK_SET)
        argv = [*_bwrap_argv(bwrap, prog_fd, info_w), PROGRAM_PATH, *map(str, limits)]
        proc = subprocess.Popen(
            argv,
            cwd=tempfile.gettempdir(),  # not the evaluator's folder (it is not visible anyway)
            env={"PATH": "/usr/bin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err_fd,
            pass_fds=(prog_fd, info_w),
            start_new_session=True,  # a Ctrl-C to the evaluator's group is not the sandbox's
        )
        os.close(info_w)
        info_w = -1
        init = _sandbox_init(info_r, min(timeout_s, 30.0))
        try:
            rc: int | None = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            _stop(proc, init)
        size = os.lseek(err_fd, 0, os.SEEK_END)
        os.lseek(err_fd, max(0, size - STDERR_TAIL_BYTES), os.SEEK_SET)
        tail = os.read(err_fd, STDERR_TAIL_BYTES).decode("utf-8", "replace").strip().splitlines()
        return rc, tail
    finally:
        for fd in (prog_fd, err_fd, info_r, info_w):
            if fd >= 0:
                os.close(fd)


def _sandbox_init(info_r: int, timeout_s: float) -> int | None:
    """A pidfd of the sandbox's PID-namespace init (its host pid comes on ``--info-fd``)."""
    data = b""
    while select.select([info_r], [], [], timeout_s)[0]:
        chunk = os.read(info_r, 4096)
        if not chunk:
            break
        data += chunk
    try:
        return os.pidfd_open(int(json.loads(data)["child-pid"]))
    except (ValueError, KeyError, TypeError):
        return None  # bwrap failed before starting the sandbox: its exit status says why
    except ProcessLookupError:
        return None  # already gone, and its namespace with it


def _stop(proc: subprocess.Popen, init: int | None) -> None:
    """Kill what is left of the sandbox and return once every process in it is gone.

    bwrap may exit as soon as the program's status is known, before the namespace is torn
    down; killing the namespace's init makes the kernel kill all the others, and the init's
    pidfd turns readable only after they all exited.
    """
    if init is not None:
        try:
            signal.pidfd_send_signal(init, signal.SIGKILL)
        except ProcessLookupError:
            pass
        select.select([init], [], [], 10.0)
        os.close(init)
    try:
        proc.wait(timeout=10.0)
    except subprocess.TimeoutExpired:
        proc.kill()  # --die-with-parent takes the sandbox down with it
        proc.wait()
