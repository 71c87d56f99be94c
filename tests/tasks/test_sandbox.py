"""tasks.sandbox: HumanEval programs pass or fail for the right reason, and stay contained."""

from __future__ import annotations

import gzip
import json
import socket
import time
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks.humaneval import program
from ecocompress.tasks.sandbox import network_isolation, run_untrusted


@pytest.fixture(scope="module")
def problem(shared_data_dir: Path) -> dict:
    with gzip.open(shared_data_dir / "humaneval" / "HumanEval.jsonl.gz", "rt") as f:
        return json.loads(f.readline())


def test_canonical_solution_passes(problem: dict) -> None:
    assert run_untrusted(program(problem, problem["canonical_solution"])) == (True, "passed")


def test_wrong_solution_fails_with_the_assertion(problem: dict) -> None:
    passed, reason = run_untrusted(program(problem, "    return None\n"))
    assert not passed
    assert reason.startswith("failed:") and "AssertionError" in reason


def test_syntax_error_fails() -> None:
    passed, reason = run_untrusted("def f(:\n    pass\n")
    assert not passed and "SyntaxError" in reason


def test_infinite_loop_times_out_on_wall_clock() -> None:
    t0 = time.perf_counter()
    assert run_untrusted("while True:\n    pass\n", timeout_s=1.0) == (False, "timed out")
    assert time.perf_counter() - t0 < 5


def test_sleeping_child_process_is_killed_with_the_group() -> None:
    code = "import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\nimport time\ntime.sleep(60)\n"
    t0 = time.perf_counter()
    assert run_untrusted(code, timeout_s=1.0) == (False, "timed out")
    assert time.perf_counter() - t0 < 5


def test_huge_allocation_fails() -> None:
    passed, reason = run_untrusted("x = bytearray(8 * 1024**3)\n", memory_mb=512)
    assert not passed and "MemoryError" in reason


def test_socket_connect_is_refused() -> None:
    # a real listener in this process: only the sandbox can make the connection fail
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        passed, reason = run_untrusted(code)
    assert not passed and "network access is disabled" in reason


def test_raw_socket_has_no_network_when_unshare_works() -> None:
    if not network_isolation():
        pytest.skip("unshare cannot create a network namespace on this host")
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        # _socket bypasses the prelude: only the empty network namespace stops it
        code = f"import _socket\ns = _socket.socket()\ns.connect(('127.0.0.1', {port}))\n"
        passed, reason = run_untrusted(code)
    assert not passed and "unreachable" in reason.lower()


def test_files_land_in_a_temp_dir_that_is_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    report = tmp_path / "cwd.txt"
    code = f"import os\nopen('written.txt', 'w').write('x')\nopen({str(report)!r}, 'w').write(os.getcwd())\n"
    assert run_untrusted(code) == (True, "passed")
    child_cwd = Path(report.read_text())
    assert child_cwd != tmp_path and "ecocompress-sandbox-" in str(child_cwd)
    assert not child_cwd.exists()
    assert not (tmp_path / "written.txt").exists()


def test_exit_status_is_reported() -> None:
    assert run_untrusted("raise SystemExit(3)\n") == (False, "failed: exit status 3")
