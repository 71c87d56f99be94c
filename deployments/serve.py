"""Serve the sweep flow as a scheduled Prefect deployment.

    python -m deployments.serve --cron "0 3 * * 1" --bits 16,8,4 --limit 50

Runs against whatever Prefect API is configured (``PREFECT_API_URL``: the docker stack's
server, or a temporary local one). Each scheduled run is an ordinary sweep: cached steps
are reused, so a weekly run with an unchanged model and code evaluates nothing again.
"""

from __future__ import annotations

import argparse

ENTRYPOINT = "flows/sweep.py:sweep_flow"


def build_deployment(name: str, cron: str | None, argv: list[str]):
    """A Prefect deployment of ``sweep_flow`` whose parameters come from sweep CLI flags."""
    from flows.cli import _candidates, _run_params, build_parser
    from flows.sweep import sweep_flow

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
    ap.add_argument("--name", default="weekly-sweep")
    ap.add_argument("--cron", default="0 3 * * 1", help="schedule (UTC), default Mondays 03:00")
    ns, rest = ap.parse_known_args(argv)
    from prefect import serve

    serve(build_deployment(ns.name, ns.cron, rest))


if __name__ == "__main__":  # pragma: no cover
    main()
