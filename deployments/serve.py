"""Serve the sweep or optimize flow as a scheduled Prefect deployment.

    python -m ecocompress.deployments.serve --cron "0 3 * * 1" --bits 16,8,4 --limit 50
    python -m ecocompress.deployments.serve --flow optimize --name weekly-search --limit 50
    python -m ecocompress.deployments.serve --flow optimize --config weekly.yaml

Runs against whatever Prefect API is configured (``PREFECT_API_URL``: the docker stack's
server, or a temporary local one). Each scheduled run is an ordinary sweep: cached steps
are reused, so a weekly run with an unchanged model and code evaluates nothing again.
"""

from __future__ import annotations

import argparse
from typing import Any

ENTRYPOINT = "flows/sweep.py:sweep_flow"
ENTRYPOINTS = {"sweep": ENTRYPOINT, "optimize": "flows/optimize.py:optimize_flow"}


def build_deployment(
    name: str,
    cron: str | None,
    argv: list[str],
    flow: str = "sweep",
    pool: str | None = None,
    settings: dict[str, Any] | None = None,
):
    """A Prefect deployment of ``sweep_flow`` or ``optimize_flow`` whose parameters are the
    command's own (``flows.resolve.flow_parameters`` of the same flags, ``--config`` YAML
    included). A scheduled optimize starts a new search thread per flow run (its id names
    the thread) unless ``--thread-id`` is given. ``settings`` (by field name) replaces the
    flags when given."""
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve

    if flow not in ENTRYPOINTS:
        raise ValueError(f"flow {flow!r}: allowed {', '.join(ENTRYPOINTS)}")
    r = resolve(flow, settings if settings is not None else parse_settings(flow, argv))
    parameters = jsonable(flow_parameters(r))
    if flow == "optimize":
        from ecocompress.flows.optimize import optimize_flow as target

        if r.search is not None and r.search.thread_id:
            parameters["thread_id"] = r.search.thread_id
    else:
        from ecocompress.flows.sweep import sweep_flow as target

        parameters["command"] = "scheduled-sweep"
    from prefect.deployments.runner import EntrypointType

    return target.to_deployment(
        name=name,
        cron=cron,
        parameters={**parameters, "quiet": True},
        # the installed package, not a file path: a worker in any folder finds it
        entrypoint_type=EntrypointType.MODULE_PATH,
        work_pool_name=pool,
    )


def jsonable(parameters: dict[str, Any]) -> dict[str, Any]:
    """Flow parameters as JSON (specs dumped), as Prefect stores a deployment's."""
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(parameters)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flow", choices=sorted(ENTRYPOINTS), default="sweep")
    ap.add_argument("--name", default=None, help="default weekly-<flow>")
    ap.add_argument("--cron", default="0 3 * * 1", help="schedule (UTC), default Mondays 03:00")
    ns, rest = ap.parse_known_args(argv)
    from prefect import serve

    serve(build_deployment(ns.name or f"weekly-{ns.flow}", ns.cron, rest, ns.flow))


if __name__ == "__main__":  # pragma: no cover
    main()
