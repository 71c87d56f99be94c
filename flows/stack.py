"""The local service stack as commands see it: its settings, its state file, and whether it runs.

``ecocompress server start`` (deployments/stack.py) starts a Prefect server, an MLflow tracking
server and the webhook receiver as background processes bound to 127.0.0.1 and writes
``<ECOCOMPRESS_HOME>/stack/stack.json``. Every other command calls ``connect()`` first: with a
healthy stack it points Prefect and MLflow at it; without one it keeps the temporary Prefect
server, with a start-up timeout that survives a busy machine.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ecocompress.tasks.artifacts import home
from ecocompress.tasks.errors import UserError

LOOPBACK = "127.0.0.1"
# Prefect gives its temporary server 20 s; under load 6-8 on 2 cores that is missed.
EPHEMERAL_STARTUP_TIMEOUT_S = 600
# How long a command waits for a running stack's health answer before falling back.
HEALTH_TIMEOUT_S = 15.0


class StackSettings(BaseModel):
    """Where the stack's servers listen and what they store into."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(LOOPBACK, description="address every server binds to")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Prefect server port")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="MLflow tracking server port")
    webhook_port: int = Field(8790, ge=1, le=65535, description="webhook receiver port")
    database_url: str | None = Field(
        None,
        description="PostgreSQL URL postgresql://user:password@host:port/name: Prefect uses "
        "database NAME, MLflow NAME_mlflow (default: SQLite under ECOCOMPRESS_HOME)",
    )
    start_timeout_s: float = Field(
        900, gt=0, description="seconds to wait for the servers to answer /health"
    )

    @field_validator("database_url")
    @classmethod
    def _postgres(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        scheme = parts.scheme.split("+")[0]
        if scheme not in ("postgresql", "postgres"):
            raise ValueError(f"database URL must be postgresql://..., got scheme {parts.scheme!r}")
        if not parts.hostname or not parts.path.strip("/"):
            raise ValueError("database URL needs a host and a database name")
        return v

    def urls(self) -> dict[str, str]:
        base = f"http://{self.host}"
        return {
            "prefect": f"{base}:{self.prefect_port}/api",
            "mlflow": f"{base}:{self.mlflow_port}",
            "webhooks": f"{base}:{self.webhook_port}",
        }


def database_urls(url: str) -> dict[str, str]:
    """The SQLAlchemy URLs each server is given for one PostgreSQL URL: Prefect's asyncpg on
    database NAME, MLflow's psycopg2 on NAME_mlflow (both keep an ``alembic_version``)."""
    parts = urlsplit(url)
    name = parts.path.strip("/")
    return {
        "prefect": urlunsplit(parts._replace(scheme="postgresql+asyncpg")),
        "mlflow": urlunsplit(parts._replace(scheme="postgresql+psycopg2", path=f"/{name}_mlflow")),
    }


def redact(url: str) -> str:
    """``url`` with its password replaced: what logs and the state file show."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def stack_dir() -> Path:
    return home() / "stack"


def state_path() -> Path:
    return stack_dir() / "stack.json"


def read_state() -> dict[str, Any] | None:
    """The state ``server start`` wrote, or None."""
    try:
        return json.loads(state_path().read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (exited, not yet reaped by its parent) is not running
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def http_ok(url: str, timeout: float = HEALTH_TIMEOUT_S) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return 200 <= r.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


HEALTH_PATHS = {"prefect": "/health", "mlflow": "/health", "webhooks": "/health"}


def health_url(service: str, url: str) -> str:
    return url.rstrip("/") + HEALTH_PATHS[service]


def running_stack(timeout: float = HEALTH_TIMEOUT_S) -> dict[str, Any] | None:
    """The state of a stack whose Prefect and MLflow servers run and answer, else None."""
    state = read_state()
    if not state:
        return None
    procs = state.get("processes", {})
    for name in ("prefect", "mlflow"):
        p = procs.get(name)
        if not p or not pid_alive(int(p["pid"])):
            return None
        if not http_ok(health_url(name, state["urls"][name]), timeout):
            return None
    return state


def connect(quiet: bool = False) -> dict[str, Any] | None:
    """Point this process at the running stack, or prepare the temporary server.

    Settings the user gave win: with ``PREFECT_API_URL`` set, Prefect is left alone; with
    ``MLFLOW_TRACKING_URI`` set, MLflow is. Returns the stack's state when it is used.
    """
    user_prefect = bool(os.environ.get("PREFECT_API_URL"))
    user_mlflow = bool(os.environ.get("MLFLOW_TRACKING_URI"))
    state = None if user_prefect and user_mlflow else running_stack()
    if state is not None:
        if not user_prefect:
            os.environ["PREFECT_API_URL"] = state["urls"]["prefect"]
        if not user_mlflow:
            os.environ["MLFLOW_TRACKING_URI"] = state["urls"]["mlflow"]
        _refresh_prefect_settings()
        return state
    if user_prefect:
        check_reachable("PREFECT_API_URL", os.environ["PREFECT_API_URL"].rstrip("/") + "/health")
    else:
        os.environ.setdefault(
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", str(EPHEMERAL_STARTUP_TIMEOUT_S)
        )
        from ecocompress.flows import temporary_server

        temporary_server.contain()
        temporary_server.reap_orphans()
        if not quiet:
            print(
                "ecocompress: no stack running; using a temporary Prefect server "
                "(start one with: ecocompress server start)",
                file=sys.stderr,
            )
    _refresh_prefect_settings()
    if user_mlflow:
        uri = os.environ["MLFLOW_TRACKING_URI"]
        if uri.startswith(("http://", "https://")):
            check_reachable("MLFLOW_TRACKING_URI", uri.rstrip("/") + "/health")
    return None


def _refresh_prefect_settings() -> None:
    """Prefect reads its settings from the environment when it is imported: a process that
    imported it before ``connect()`` must re-read them, or it keeps talking to a temporary
    server (with the 20 s start-up timeout)."""
    if "prefect.context" in sys.modules:
        sys.modules["prefect.context"].refresh_global_settings_context()


def check_reachable(what: str, url: str) -> None:
    """A user-given server URL that does not answer is bad input, said in one line."""
    if not http_ok(url):
        raise UserError(f"{what}: no server answers at {url.rsplit('/health', 1)[0]}")
