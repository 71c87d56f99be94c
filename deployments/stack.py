"""``ecocompress server start|stop|status``: the local service stack as background processes.

    ecocompress server start                      # SQLite under ECOCOMPRESS_HOME
    ecocompress server start --database-url postgresql://eco:secret@127.0.0.1:5432/eco
    ecocompress server status
    ecocompress server stop

Starts, bound to 127.0.0.1, a Prefect server (API, UI and its services: scheduler,
automations), an MLflow tracking server (artifacts served from ``ECOCOMPRESS_HOME/mlartifacts``),
the webhook receiver and a process worker on the ``ecocompress`` work pool. Pid and log files
live in ``ECOCOMPRESS_HOME/stack/``; ``stack.json`` is what other commands find the stack by.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ecocompress.flows.stack import (
    LOOPBACK,
    StackSettings,
    database_urls,
    health_url,
    http_ok,
    pid_alive,
    read_state,
    redact,
    stack_dir,
    state_path,
)

DEFAULT_POOL = "ecocompress"
SERVICES = ("prefect", "mlflow", "webhooks", "worker")
STOP_GRACE_S = 30.0
MLFLOW_WORKERS = 2  # each is a full Python process; 4 (MLflow's default) crowd 2 cores


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ecocompress.flows.flags import add_flags

    p = sub.add_parser("server", help="start, stop or check the local service stack")
    verbs = p.add_subparsers(dest="verb", required=True, parser_class=type(p))
    start = verbs.add_parser(
        "start",
        help="start Prefect, MLflow, the webhook receiver and a worker in the background",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_flags(start, StackSettings, "stack")
    start.add_argument("--no-worker", action="store_true", help="start no process worker")
    start.add_argument("--pool", default=DEFAULT_POOL, help="work pool of the worker")
    verbs.add_parser("stop", help="stop the stack's processes (their data stays)")
    verbs.add_parser("status", help="which servers run and answer; exit 1 when one does not")


def run(args: argparse.Namespace) -> int:
    from ecocompress.flows.cli import env_defaults

    env_defaults()
    if args.verb == "start":
        from ecocompress.flows.flags import given

        settings = StackSettings.model_validate(given(args, StackSettings))
        return start(settings, worker=not args.no_worker, pool=args.pool)
    if args.verb == "stop":
        return stop()
    return status()


# ---------------------------------------------------------------- start


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _secrets() -> dict[str, str]:
    """The webhook secrets: the environment's, else generated once and kept (mode 0600)."""
    path = stack_dir() / "secrets.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}
    out = {}
    for var in ("ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET", "ECOCOMPRESS_HF_WEBHOOK_SECRET"):
        out[var] = os.environ.get(var) or kept.get(var) or secrets.token_urlsafe(32)
    # MLflow encrypts the webhook's secret with this Fernet key; without one each server worker
    # makes up its own and cannot read what another stored ("InvalidToken", nothing delivered)
    key = "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
    out[key] = (
        os.environ.get(key) or kept.get(key) or base64.urlsafe_b64encode(os.urandom(32)).decode()
    )
    if out != kept:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(out, f)
    return out


def _prepare_postgres(url: str) -> None:
    """Create the Prefect and MLflow databases if missing; a URL that does not connect is bad
    input, said in one line."""
    import asyncio
    from urllib.parse import urlsplit

    from ecocompress.tasks.errors import UserError

    parts = urlsplit(url)
    names = [urlsplit(u).path.strip("/") for u in database_urls(url).values()]

    async def go() -> None:
        import asyncpg

        kw = dict(
            host=parts.hostname,
            port=parts.port or 5432,
            user=parts.username,
            password=parts.password,
            timeout=30,
        )
        try:
            conn = await asyncpg.connect(database="postgres", **kw)
        except Exception as exc:  # asyncpg raises many types; all mean: cannot use this URL
            msg = " ".join(str(exc).split()) or type(exc).__name__
            raise UserError(f"database URL {redact(url)}: cannot connect ({msg})") from None
        try:
            have = {r[0] for r in await conn.fetch("SELECT datname FROM pg_database")}
            for name in names:
                if name not in have:
                    await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(go())


def _commands(s: StackSettings, pool: str, worker: bool) -> dict[str, tuple[list[str], dict]]:
    from ecocompress.flows.environment import TELEMETRY_OFF
    from ecocompress.tasks.artifacts import home

    root = home()
    urls = s.urls()
    py = sys.executable
    base_env = {**TELEMETRY_OFF, "PREFECT_HOME": str(root / "prefect")}
    prefect_env = dict(base_env)
    if s.database_url:
        db = database_urls(s.database_url)
        prefect_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = db["prefect"]
        backend = db["mlflow"]
    else:
        backend = f"sqlite:///{root / 'mlflow.db'}"
    hosts = f"{s.host},{s.host}:{s.mlflow_port},localhost,localhost:{s.mlflow_port}"
    receiver_secrets = {k: v for k, v in _secrets().items() if k.startswith("ECOCOMPRESS_")}
    out: dict[str, tuple[list[str], dict]] = {
        "prefect": (
            [py, "-m", "prefect", "server", "start", "--host", s.host]
            + ["--port", str(s.prefect_port), "--no-background"],
            prefect_env,
        ),
        "mlflow": (
            [py, "-m", "mlflow", "server", "--host", s.host, "--port", str(s.mlflow_port)]
            + ["--backend-store-uri", backend, "--workers", str(MLFLOW_WORKERS)]
            + ["--artifacts-destination", str(root / "mlartifacts"), "--serve-artifacts"]
            + ["--allowed-hosts", hosts],
            {
                **base_env,
                # the registry's webhooks call the receiver on loopback
                "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY": _secrets()[
                    "MLFLOW_WEBHOOK_SECRET_ENCRYPTION_KEY"
                ],
                "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
                "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
            },
        ),
        "webhooks": (
            [py, "-m", "ecocompress.deployments.webhooks", "--host", s.host]
            + ["--port", str(s.webhook_port)],
            {**base_env, **receiver_secrets, "PREFECT_API_URL": urls["prefect"]},
        ),
    }
    if worker:
        from ecocompress.deployments.worker import worker_argv

        out["worker"] = (
            worker_argv(pool, f"ecocompress-{socket.gethostname()}"),
            {
                **base_env,
                "PREFECT_API_URL": urls["prefect"],
                "MLFLOW_TRACKING_URI": urls["mlflow"],
                "ECOCOMPRESS_HOME": str(root),
            },
        )
    return out


def _spawn(name: str, argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    log = stack_dir() / f"{name}.log"
    with open(log, "ab") as f:
        f.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} start {name}\n".encode())
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: stop() signals the whole tree
            cwd=stack_dir(),
        )
    return {"pid": proc.pid, "log": str(log), "argv": [redact(a) for a in argv]}


def _write_state(state: dict[str, Any]) -> None:
    tmp = state_path().with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_path())


def _tail(path: str, lines: int = 5) -> str:
    try:
        text = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def start(s: StackSettings, worker: bool = True, pool: str = DEFAULT_POOL) -> int:
    from ecocompress.tasks.errors import UserError

    if s.host != LOOPBACK:
        print(f"ecocompress: warning: binding to {s.host}, not loopback", file=sys.stderr)
    stack_dir().mkdir(parents=True, exist_ok=True)
    state = read_state()
    if state and any(pid_alive(p["pid"]) for p in state.get("processes", {}).values()):
        if status(quiet=True) == 0:
            print(f"ecocompress: the stack already runs ({state['urls']['prefect']})")
            return 0
        raise UserError("a stack of this home is partly running: ecocompress server stop first")
    ports = {"prefect": s.prefect_port, "mlflow": s.mlflow_port, "webhook": s.webhook_port}
    for name, port in ports.items():
        if not _port_free(s.host, port):
            raise UserError(f"port {port} ({name}) on {s.host} is in use: pass --{name}-port")
    if s.database_url:
        _prepare_postgres(s.database_url)
    commands = _commands(s, pool, worker)
    urls = s.urls()
    state = {
        "started_at": time.time(),
        "urls": urls,
        "database": redact(s.database_url) if s.database_url else "sqlite",
        "pool": pool if worker else None,
        "processes": {},
    }
    t0 = time.perf_counter()
    # the servers first; the receiver and the worker talk to Prefect
    for group in (("prefect", "mlflow"), ("webhooks", "worker")):
        for name in group:
            if name in commands:
                argv, env = commands[name]
                state["processes"][name] = _spawn(name, argv, env)
                _write_state(state)  # written as each starts, so stop() finds every pid
        _wait_healthy(state, [n for n in group if n in commands], s.start_timeout_s, t0)
    _register_mlflow_webhook(urls)
    state["ready_after_s"] = round(time.perf_counter() - t0, 1)
    _write_state(state)
    print(f"ecocompress: stack up in {state['ready_after_s']} s (logs in {stack_dir()})")
    for name, url in urls.items():
        print(f"  {name:9s}{url}")
    if worker:
        print(f"  worker   pool {pool!r}")
    return 0


def _wait_healthy(state: dict[str, Any], names: list[str], timeout_s: float, t0: float) -> None:
    """Until each of ``names`` answers /health (the worker: is alive); stop the stack and say
    why in one line when one exits or the time is up."""
    from ecocompress.tasks.errors import UserError

    deadline = time.monotonic() + timeout_s
    pending = list(names)
    while pending:
        for name in list(pending):
            proc = state["processes"][name]
            if not pid_alive(proc["pid"]):
                stop(quiet=True)
                raise UserError(f"{name} exited at start: {_tail(proc['log'])}")
            url = state["urls"].get(name)
            if url is None or http_ok(health_url(name, url), timeout=10):
                pending.remove(name)
                proc["ready_after_s"] = round(time.perf_counter() - t0, 1)
        if pending and time.monotonic() > deadline:
            stop(quiet=True)
            raise UserError(
                f"{', '.join(pending)} did not answer within {timeout_s:.0f} s "
                f"(logs in {stack_dir()}); pass a longer --start-timeout-s"
            )
        if pending:
            time.sleep(0.5)  # the polling interval of the health checks


def _register_mlflow_webhook(urls: dict[str, str]) -> None:
    """The MLflow registry tells the receiver about each new model version."""
    from ecocompress.deployments.webhooks import register_mlflow_webhook

    secret = _secrets()["ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET"]
    register_mlflow_webhook(urls["mlflow"], urls["webhooks"] + "/mlflow", secret)


# ---------------------------------------------------------------- stop / status


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop(quiet: bool = False) -> int:
    state = read_state()
    if not state:
        if not quiet:
            print("ecocompress: no stack state in this home: nothing to stop")
        return 0
    procs = state.get("processes", {})
    # the worker first (it may be running flows), the servers last
    order = [n for n in ("worker", "webhooks", "mlflow", "prefect") if n in procs]
    for name in order:
        _signal_group(procs[name]["pid"], signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(pid_alive(procs[n]["pid"]) for n in order):
        time.sleep(0.2)
    for name in order:
        if pid_alive(procs[name]["pid"]):
            _signal_group(procs[name]["pid"], signal.SIGKILL)
    state_path().unlink(missing_ok=True)
    if not quiet:
        print(f"ecocompress: stopped {', '.join(order)}")
    return 0


def status(quiet: bool = False) -> int:
    state = read_state()
    if not state:
        if not quiet:
            print("ecocompress: no stack running (start one with: ecocompress server start)")
        return 1
    ok = True
    lines = []
    for name, proc in state.get("processes", {}).items():
        alive = pid_alive(proc["pid"])
        url = state["urls"].get(name)
        healthy = alive and (url is None or http_ok(health_url(name, url), timeout=10))
        ok = ok and healthy
        where = url or f"pool {state.get('pool')}"
        word = "up" if healthy else ("not answering" if alive else "down")
        lines.append(f"  {name:9s}{word:14s}pid {proc['pid']:<8d}{where}")
    if not quiet:
        print(f"ecocompress: stack of {stack_dir().parent} (database: {state['database']})")
        print("\n".join(lines))
    return 0 if ok else 1
