"""Cached re-run: wall time of a repeated sweep against its first run (target <= 5 %).

    python tests/perf/cached_rerun.py

The first run starts from cold caches (a new ECOCOMPRESS_HOME holding only the converted
GGUF); the second is the identical command. Both are fresh processes, so the re-run pays
interpreter, Prefect server, MLflow and great-expectations start-up but evaluates nothing
(checked: no step executed).
"""

from __future__ import annotations

import argparse
import json
import sys

from tests.perf import common

SWEEP = [
    "sweep",
    "--bits",
    "16",
    "--prune",
    "none,magnitude,wanda",
    "--sparsity",
    "0.5",
    "--benchmarks",
    "truthfulqa,commonsenseqa,bbh",
    "--limit",
    "10",
    "--quiet",
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.parse_args()
    common.ensure_reference()
    home = common.fresh_home("rerun")
    cmd = [
        sys.executable,
        "-m",
        "ecocompress.flows.cli",
        *SWEEP,
        "--data-dir",
        str(common.data_dir()),
    ]
    first = common.timed(cmd, home)
    first_steps = common.last_parent_artifacts(home, ("steps.json",))["steps.json"]
    second = common.timed(cmd, home)
    art = common.last_parent_artifacts(home, ("steps.json", "results.json"))
    assert art["steps.json"]["executed"] == [], art["steps.json"]["executed"]
    rec = {
        "command": first["cmd"],
        "first_wall_s": first["wall_s"],
        "rerun_wall_s": second["wall_s"],
        "ratio": second["wall_s"] / first["wall_s"],
        "first_executed_steps": len(first_steps["executed"]),
        "rerun_executed_steps": len(art["steps.json"]["executed"]),
        "candidates": [
            {
                k: r.get(k)
                for k in (
                    "candidate",
                    "accuracy",
                    "accuracy_stderr",
                    "latency_ms",
                    "memory_gb",
                    "energy_kwh",
                    "sparsity",
                    "eval_cost",
                )
            }
            for r in art["results.json"]
        ],
        "rerun_table": second["stdout_tail"],
    }
    print(json.dumps({k: v for k, v in rec.items() if k != "rerun_table"}, indent=1))
    common.write("cached_rerun", rec)


if __name__ == "__main__":
    main()
