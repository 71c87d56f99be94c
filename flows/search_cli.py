"""How the search commands of the CLI run: ``optimize`` and ``study`` (their flags come
from flows/params.py, their specs from flows/resolve.py)."""

from __future__ import annotations

import sys

from ecocompress.flows.resolve import Resolved, flow_parameters

OPTIMIZE_EPILOG = """examples:
  ecocompress optimize --policy agent --max-candidates 8 --limit 20 --accuracy-drop 5
  ecocompress optimize --policy optuna --profile edge --max-minutes 60
  ecocompress optimize --weights accuracy=0.5,energy=0.3,latency=0.2 --carbon-budget 0.01
  ecocompress optimize --thread-id opt-1 ...   # same command again: resume thread opt-1

The space defaults to bits 16,8,4 x prune none,magnitude,wanda x sparsity 0.25,0.5 x
pattern unstructured,2:4,4:8 (27 candidates). Every decision (policy, reason, state seen)
is tagged on the candidate's MLflow run and listed in the parent run's decisions.json."""

STUDY_EPILOG = """examples:
  ecocompress study rq1 --max-candidates 8 --limit 20 --seeds 3
  ecocompress study rq1 --replay tests/perf/results/planner_grid.json --seeds 10
  ecocompress study rq2 --limit 20        # rq3 reuses rq2's search (same settings)
  ecocompress study rq4 --limit 20 --carbon-budget 0.002"""


def run_study(r: Resolved, quiet: bool) -> int:
    from ecocompress.flows.study import study_flow

    out = study_flow(**flow_parameters(r), quiet=quiet)
    print(out["text"])
    print(f"report: report.md / report.html on MLflow run {out['run_id']} (ecocompress ui)")
    return 0


def run_optimize(r: Resolved, quiet: bool) -> int:
    import secrets

    from ecocompress.flows.optimize import optimize_flow
    from ecocompress.flows.report import print_optimize_summary, print_summary

    assert r.search is not None
    thread = r.search.thread_id or f"opt-{secrets.token_hex(4)}"
    if not quiet:
        print(f"thread {thread} (resume with --thread-id {thread})", file=sys.stderr)
    summary = optimize_flow(**flow_parameters(r), thread_id=thread, quiet=quiet)
    print_summary(summary, r.run)
    print_optimize_summary(summary)
    return 0 if summary["n_ok"] else 1
