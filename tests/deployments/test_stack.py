"""The stack's settings and how commands find it (fast: no server is started here)."""

from __future__ import annotations

import json
import os
import socket

import pytest

from ecocompress.deployments.cli import main
from ecocompress.flows import stack
from ecocompress.flows.stack import StackSettings, database_urls, redact


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_database_urls_split_prefect_and_mlflow():
    urls = database_urls("postgresql://eco:s3cret@127.0.0.1:5433/eco")
    assert urls["prefect"] == "postgresql+asyncpg://eco:s3cret@127.0.0.1:5433/eco"
    assert urls["mlflow"] == "postgresql+psycopg2://eco:s3cret@127.0.0.1:5433/eco_mlflow"
    assert redact("postgresql://eco:s3cret@h:1/db") == "postgresql://eco:***@h:1/db"


@pytest.mark.parametrize(
    "url, words",
    [
        ("mysql://u:p@h/db", "postgresql://"),
        ("postgresql://u:p@h:5432/", "database name"),
        ("postgresql:///db", "host"),
    ],
)
def test_bad_database_url_is_refused(url, words):
    with pytest.raises(ValueError, match=words):
        StackSettings(database_url=url)


def test_bad_database_url_one_line_exit_2(capsys):
    assert main(["server", "start", "--database-url", "mysql://u:p@h/db"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ecocompress: error:") and "postgresql://" in err
    assert "\n" not in err


def test_unreachable_database_one_line_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://eco:hunter2@127.0.0.1:{port}/eco"
    ports = [str(free_port()) for _ in range(3)]
    flags = ["--prefect-port", ports[0], "--mlflow-port", ports[1], "--webhook-port", ports[2]]
    code = main(["server", "start", "--database-url", url, *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "cannot connect" in err and "hunter2" not in err and "\n" not in err
    assert not (tmp_path / "stack" / "stack.json").exists()  # nothing half-started


def test_port_in_use_one_line_exit_2(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        code = main(["server", "start", "--prefect-port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"port {port} (prefect)" in err and "--prefect-port" in err


def test_status_without_a_stack_exits_1(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    assert main(["server", "status"]) == 1
    assert "ecocompress server start" in capsys.readouterr().out
    assert main(["server", "stop"]) == 0


def test_connect_without_a_stack_keeps_the_temporary_server(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", raising=False)
    assert stack.connect() is None
    assert os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] == str(
        stack.EPHEMERAL_STARTUP_TIMEOUT_S
    )
    assert "ecocompress server start" in capsys.readouterr().err
    # Prefect, imported before connect(), sees the longer timeout too
    from prefect.settings import get_current_settings

    timeout = get_current_settings().server.ephemeral.startup_timeout_seconds
    assert timeout == stack.EPHEMERAL_STARTUP_TIMEOUT_S


def test_a_dead_stack_is_not_used(tmp_path, monkeypatch):
    """A state file whose processes are gone (a crash, a reboot) is ignored."""
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    (tmp_path / "stack").mkdir()
    dead = 2**22 + 12345  # above pid_max's default: no such process
    urls = StackSettings().urls()
    procs = {n: {"pid": dead, "log": ""} for n in ("prefect", "mlflow")}
    (tmp_path / "stack" / "stack.json").write_text(json.dumps({"urls": urls, "processes": procs}))
    assert stack.running_stack() is None


@pytest.mark.parametrize(
    "var, value",
    [
        ("PREFECT_API_URL", "http://127.0.0.1:{port}/api"),
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}"),
    ],
)
def test_unreachable_server_url_one_line_exit_2(var, value, capsys, monkeypatch, tiny_model_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(var, value.format(port=port))
    code = main(["evaluate", "--model", str(tiny_model_dir), "--bits", "16", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert (
        err
        == f"ecocompress: error: {var}: no server answers at {value.format(port=port).removesuffix('/health')}"
    )
