"""Evaluate the planner-benchmark grid of real gemma-3-270m candidates once and save it as
a replay fixture (tests/perf/results/planner_grid.json) with its provenance.

    python tests/perf/planner_grid.py   # 27 candidates, commonsenseqa + bbh, limit 30, 16 gen tokens

The grid is bits {16, 8, 4} x prune {none, magnitude, wanda} x sparsity {0.25, 0.5} x
pattern {unstructured, 2:4, 4:8}; ``prune none`` ignores sparsity and pattern and N:M
fixes the sparsity, so 27 distinct candidates. One ``ecocompress sweep`` runs them all
through the real pipeline (cached Prefect tasks, MLflow); the fixture holds every
candidate's results row exactly as the sweep wrote it (results.json of the parent run).
tests/perf/planner_replay.py replays the search policies on it.
"""

from __future__ import annotations

import argparse
import sys

from tests.perf import common

GRID = {
    "bits": "16,8,4",
    "prune": "none,magnitude,wanda",
    "sparsity": "0.25,0.5",
    "pattern": "unstructured,2:4,4:8",
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=30)
    ap.add_argument("--benchmarks", default="commonsenseqa,bbh")
    ap.add_argument("--home", default="planner-grid")
    # BBH few-shot answers are a few tokens; a pruned model that never emits the stop
    # sequence would otherwise generate lm-eval's default 256 tokens per item
    ap.add_argument("--max-gen-toks", type=int, default=16)
    a = ap.parse_args()
    common.ensure_reference()
    home = common.fresh_home(a.home)
    cmd = [sys.executable, "-m", "ecocompress.flows.cli", "sweep"]
    for k, v in GRID.items():
        cmd += [f"--{k}", v]
    cmd += [
        "--benchmarks",
        a.benchmarks,
        "--limit",
        str(a.limit),
        "--max-gen-toks",
        str(a.max_gen_toks),
        "--data-dir",
        str(common.data_dir()),
        "--quiet",
    ]
    run = common.timed(cmd, home)
    arts = common.last_parent_artifacts(home, ("results.json",))
    rows = arts["results.json"]
    common.write(
        "planner_grid",
        {
            "what": "results rows of every grid candidate, one sweep, as logged to MLflow",
            "grid": GRID,
            "benchmarks": a.benchmarks.split(","),
            "limit": a.limit,
            "max_gen_toks": a.max_gen_toks,
            "command": run["cmd"],
            "wall_s": run["wall_s"],
            "cpu_s": run["cpu_s"],
            "n_candidates": len(rows),
            "n_ok": sum(r["status"] == "ok" for r in rows),
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
