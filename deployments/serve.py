"""Serve the sweep or optimize flow as a scheduled Prefect deployment.

    python -m deployments.serve --cron "0 3 * * 1" --bits 16,8,4 --limit 50
    python -m deployments.serve --flow optimize --name weekly-search --policy agent --limit 50

Runs against whatever Prefect API is configured (``PREFECT_API_URL``: the docker stack's
server, or a temporary local one). Each scheduled run is an ordinary sweep: cached steps
are reused, so a weekly run with an unchanged model and code evaluates nothing again.
"""

from __future__ import annotations

import argparse

ENTRYPOINT = "flows/sweep.py:sweep_flow"
ENTRYPOINTS = {"sweep": ENTRYPOINT, "optimize": "flows/optimize.py:optimize_flow"}


def build_deployment(name: str, cron: str | None, argv: list[str], flow: str = "sweep"):
    """A Prefect deployment of ``sweep_flow`` or ``optimize_flow`` whose parameters come
    from that command's CLI flags. A scheduled optimize starts a new search thread per
    flow run (its id names the thread)."""
    from ecocompress.flows.cli import _candidates, _run_params, build_parser
    from ecocompress.flows.search_cli import _search_settings
    from ecocompress.flows.sweep import sweep_flow

    if flow == "optimize":
        from ecocompress.flows.optimize import optimize_flow

        args = build_parser().parse_args(["optimize", *argv])
        params = _run_params(args)
        return optimize_flow.to_deployment(
            name=name,
            cron=cron,
            parameters={
                "params": params.model_dump(mode="json"),
                "settings": _search_settings(args, params).model_dump(mode="json"),
                "profile": args.profile,
                "register_model": not args.no_register,
                "quiet": True,
            },
        )
    args = build_parser().parse_args(["sweep", *argv])
    params, cands = _run_params(args), _candidates(args)
    return sweep_flow.to_deployment(
        name=name,
        cron=cron,
        parameters={
            "params": params.model_dump(mode="json"),
            "candidates": [c.model_dump(mode="json") for c in cands],
            "command": "scheduled-sweep",
            "quiet": True,
        },
    )


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
