"""tasks.sandbox: HumanEval programs pass or fail for the right reason, and hostile ones stay
contained: each is bounded in time and leaves no process and no file behind."""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

import ecocompress.tasks.sandbox as sandbox
from ecocompress.tasks.benchmarks.humaneval import program
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.sandbox import MARKER, run_untrusted


def processes_with(text: str) -> list[int]:
    """Host pids whose command line contains ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and entry.name != str(os.getpid()):
            try:
                if text.encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                continue  # exited while scanning
    return found


@pytest.fixture(autouse=True)
def no_process_left():
    yield
    assert processes_with(MARKER) == []  # every sandboxed process (forks included) is gone


@pytest.fixture
def marker() -> str:
    return f"ecocompress-test-{uuid.uuid4().hex}"


def run_bounded(code: str, bound_s: float = 5.0, **kwargs) -> tuple[bool, str]:
    t0 = time.perf_counter()
    result = run_untrusted(code, **kwargs)
    assert time.perf_counter() - t0 < bound_s
    return result


@pytest.fixture(scope="module")
def problem(shared_data_dir: Path) -> dict:
    with gzip.open(shared_data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return json.loads(f.readline())


# --- honest programs ------------------------------------------------------------------


def test_canonical_solution_passes(problem: dict) -> None:
    assert run_untrusted(program(problem, problem["canonical_solution"])) == (True, "passed")


def test_wrong_solution_fails_with_the_assertion(problem: dict) -> None:
    passed, reason = run_untrusted(program(problem, "    return None\n"))
    assert not passed
    assert reason.startswith("failed:") and "AssertionError" in reason


def test_syntax_error_fails() -> None:
    passed, reason = run_untrusted("def f(:\n    pass\n")
    assert not passed and "SyntaxError" in reason


def test_exit_status_is_reported() -> None:
    assert run_untrusted("raise SystemExit(3)\n") == (False, "failed: exit status 3")


def test_the_program_may_use_its_private_tmp() -> None:
    code = "import tempfile\nwith tempfile.TemporaryFile() as f:\n    f.write(b'x' * 1000)\n"
    assert run_untrusted(code) == (True, "passed")


# --- refusal --------------------------------------------------------------------------


@pytest.fixture
def fresh_probe():
    sandbox.require_sandbox.cache_clear()
    yield
    sandbox.require_sandbox.cache_clear()


def test_missing_bwrap_refuses_to_run_code(fresh_probe, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: None)
    with pytest.raises(UserError, match=r"needs bwrap, not found: install bubblewrap \(apt-get"):
        run_untrusted("pass\n")


def test_bwrap_without_namespaces_refuses_to_run_code(
    fresh_probe, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "bwrap"  # what bwrap says where user namespaces are disabled
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: str(fake))
    with pytest.raises(UserError, match="No permissions to creating new namespace.*bubblewrap"):
        run_untrusted("pass\n")


# --- hostile programs -----------------------------------------------------------------


def test_tcp_network_is_unreachable() -> None:
    with socket.socket() as server:  # a real listener: only the sandbox can stop the connection
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        passed, reason = run_bounded(code)
        assert not passed and "ConnectionRefusedError" in reason  # its own, empty loopback
        with pytest.raises(BlockingIOError):
            server.accept()
    code = "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=2)\n"
    passed, reason = run_bounded(code)
    assert not passed and "Network is unreachable" in reason  # no route out at all


def test_unix_sockets_of_other_processes_are_unreachable(tmp_path: Path, marker: str) -> None:
    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as named, socket.socket(socket.AF_UNIX) as abstract:
        named.bind(str(path))
        abstract.bind(f"\0{marker}")  # abstract names are per network namespace
        for server in (named, abstract):
            server.listen(1)
            server.setblocking(False)
        for address in (str(path), f"\0{marker}"):
            code = f"import socket\nsocket.socket(socket.AF_UNIX).connect({address!r})\n"
            passed, reason = run_bounded(code)
            assert not passed and ("FileNotFoundError" in reason or "ConnectionRefused" in reason)
        for server in (named, abstract):
            with pytest.raises(BlockingIOError):
                server.accept()


def test_infinite_loop_times_out() -> None:
    assert run_bounded("while True:\n    pass\n", timeout_s=1.0) == (False, "timed out")


def test_sleep_with_a_sleeping_child_times_out_and_both_die(marker: str) -> None:
    code = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "time.sleep(60)\n"
    )
    assert run_bounded(code, timeout_s=1.0) == (False, "timed out")
    assert processes_with(marker) == []


def test_huge_allocation_fails() -> None:
    passed, reason = run_bounded("x = bytearray(8 * 1024**3)\n", memory_mb=512)
    assert not passed and "MemoryError" in reason


def test_a_2_gb_file_is_refused(marker: str) -> None:
    code = f"with open('/tmp/{marker}', 'wb') as f:\n    f.truncate(2 << 30)\n    f.write(b'x')\n"
    passed, reason = run_bounded(code)
    assert not passed and "File too large" in reason
    assert not Path("/tmp", marker).exists()


def test_2048_files_of_1_mib_fill_only_the_private_quota(marker: str) -> None:
    code = (
        f"import os\nos.mkdir('/tmp/{marker}')\n"
        f"for i in range(2048):\n    open(f'/tmp/{marker}/{{i}}', 'wb').write(b'x' * (1 << 20))\n"
    )
    passed, reason = run_bounded(code)
    assert not passed and "No space left on device" in reason
    assert not Path("/tmp", marker).exists()


def test_background_shell_job_dies_with_the_run(marker: str) -> None:
    seconds = f"100.{int(uuid.uuid4().int % 10**9)}"  # a unique argv to look for
    code = f"import subprocess\nsubprocess.run(['sh', '-c', 'sleep {seconds} &'], check=True)\n"
    assert run_bounded(code) == (True, "passed")
    assert processes_with(f"sleep\0{seconds}") == []


def test_200_forks_hit_the_process_limit() -> None:
    code = (
        "import os, time\n"
        "for i in range(200):\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
    )
    passed, reason = run_bounded(code)
    assert not passed and "Resource temporarily unavailable" in reason


def test_setsid_child_does_not_outlive_the_run(marker: str) -> None:
    code = (
        "import subprocess, sys\n"
        f"subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(100)', {marker!r}],\n"
        "                 start_new_session=True, stdout=subprocess.DEVNULL,\n"
        "                 stderr=subprocess.DEVNULL)\n"
    )
    assert run_bounded(code) == (True, "passed")
    assert processes_with(marker) == []


def test_files_outside_its_folder_cannot_be_changed_or_created(tmp_path: Path) -> None:
    canary = tmp_path / "canary.txt"
    canary.write_text("original")
    new = tmp_path / "new.txt"
    code = (
        "import os\n"
        f"for action in (lambda: open({str(canary)!r}, 'w').write('overwritten'),\n"
        f"               lambda: os.remove({str(canary)!r}),\n"
        f"               lambda: open({str(new)!r}, 'w').write('created'),\n"
        "               lambda: open('/usr/ecocompress-test', 'w'),\n"
        f"               lambda: open('/x', 'w')):\n"
        "    try:\n        action()\n    except OSError:\n        pass\n"
        f"raise SystemExit(int(os.path.exists({str(canary)!r})))\n"
    )
    assert run_bounded(code) == (True, "passed")  # the host folder does not even exist inside
    assert canary.read_text() == "original"
    assert not new.exists() and not Path("/usr/ecocompress-test").exists()


@pytest.fixture
def home_token(marker: str):
    token = Path.home() / f".{marker}-token"
    token.write_text("hf_secret_token")
    yield token
    token.unlink()


def test_passwd_and_a_home_token_are_invisible(home_token: Path, tmp_path: Path) -> None:
    out = tmp_path / "stolen.txt"
    for path in ("/etc/passwd", str(home_token)):
        code = f"data = open({path!r}).read()\nopen({str(out)!r}, 'w').write(data)\n"
        passed, reason = run_bounded(code)
        assert (
            not passed
            and f"FileNotFoundError: [Errno 2] No such file or directory: {path!r}" in reason
        )
    assert not out.exists()
    passed, reason = run_bounded("import os\nprint(os.listdir('/etc'))\n")
    assert not passed and "FileNotFoundError" in reason  # no /etc at all


def test_unrelated_process_survives_kill(marker: str) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", marker])
    try:
        code = f"import os, signal\nos.kill({sleeper.pid}, signal.SIGKILL)\n"
        passed, reason = run_bounded(code)
        assert not passed and "ProcessLookupError" in reason  # not in its PID namespace
        # -1: every process it may signal but itself and init; there is none
        passed, reason = run_bounded("import os, signal\nos.kill(-1, signal.SIGKILL)\n")
        assert not passed and "ProcessLookupError" in reason
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


def test_killing_its_parent_leaves_the_evaluator_running() -> None:
    code = (
        "import os, signal\n"
        "for pid in (os.getppid(), 1):\n"
        "    try:\n        os.kill(pid, signal.SIGKILL)\n    except OSError:\n        pass\n"
        f"os.kill({os.getpid()}, signal.SIGKILL)\n"  # the evaluator's host pid: not visible
    )
    passed, reason = run_bounded(code)
    assert not passed and "ProcessLookupError" in reason
    assert run_untrusted("pass\n") == (True, "passed")  # still here, still working


def test_parent_environment_secrets_are_invisible(
    marker: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ECOCOMPRESS_TEST_SECRET", marker)
    code = (
        "import os\n"
        f"assert {marker!r} not in repr(os.environ), 'secret in os.environ'\n"
        "for pid in os.listdir('/proc'):\n"
        "    try:\n        data = open(f'/proc/{pid}/environ', 'rb').read()\n"
        "    except OSError:\n        continue\n"
        f"    assert {marker.encode()!r} not in data, pid\n"
        "assert sorted(os.environ) == ['HOME', 'LANG', 'PATH', 'PWD', 'TMPDIR'], os.environ\n"
    )
    assert run_bounded(code) == (True, "passed")
