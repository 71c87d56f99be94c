"""``ecocompress worker``: a Prefect process worker that runs the deployments' flow runs.

``ecocompress server start`` starts one; run more (here or on other machines with
``PREFECT_API_URL`` and ``MLFLOW_TRACKING_URI`` set) to run more flow runs at once.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ecocompress.deployments.stack import DEFAULT_POOL

    p = sub.add_parser("worker", help="run a Prefect process worker for the deployments")
    p.add_argument("--pool", default=DEFAULT_POOL, help=f"work pool (default {DEFAULT_POOL})")
    p.add_argument("--name", default=None, help="worker name (default: Prefect's)")
    p.add_argument(
        "--with-healthcheck",
        action="store_true",
        help="serve Prefect's worker health check (PREFECT_WORKER_WEBSERVER_HOST/PORT)",
    )


def run(args: argparse.Namespace) -> int:
    from ecocompress.flows.cli import env_defaults
    from ecocompress.flows.stack import connect
    from ecocompress.tasks.errors import UserError

    env_defaults()
    if connect(quiet=True) is None and not os.environ.get("PREFECT_API_URL"):
        raise UserError(
            "a worker takes runs from a Prefect server: start the stack (ecocompress server "
            "start) or set PREFECT_API_URL"
        )
    argv = worker_argv(args.pool, args.name) + (
        ["--with-healthcheck"] if args.with_healthcheck else []
    )
    os.execvp(argv[0], argv)
    return 0  # pragma: no cover


def worker_argv(pool: str, name: str | None = None) -> list[str]:
    argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process"]
    return argv + (["--name", name] if name else [])
