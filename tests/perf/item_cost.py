"""CPU seconds per benchmark item on the reference candidate, at default shots and
generation lengths, and the full-benchmark times they imply.

    python tests/perf/item_cost.py --limit 5 --bits 16

One `ecocompress evaluate` on all five benchmarks (HumanEval sandboxed) with cold caches;
per benchmark, the process CPU seconds (all threads) and wall seconds of the metered
lm-eval run, divided by the items scored. Full-benchmark estimates multiply by the item
counts of the published test sets (BBH: the default 3 subtasks and all 27).
"""

from __future__ import annotations

import argparse
import json
import sys

from ecocompress.tasks.benchmarks import REGISTRY
from tests.perf import common

FULL_ITEMS = {
    "gsm8k": 1319,
    "truthfulqa": 817,
    "commonsenseqa": 1221,
    "humaneval": 164,
    "bbh": 750,
    "bbh_all_27": 6511,
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=5)
    ap.add_argument("--bits", default="16")
    ap.add_argument("--benchmarks", default="truthfulqa,commonsenseqa,bbh,gsm8k,humaneval")
    a = ap.parse_args()
    common.ensure_reference()
    home = common.fresh_home(f"itemcost-{a.bits}")
    cmd = [
        sys.executable,
        "-m",
        "ecocompress.flows.cli",
        "evaluate",
        "--bits",
        a.bits,
        "--benchmarks",
        a.benchmarks,
        "--limit",
        str(a.limit),
        "--allow-code-execution",
        "--data-dir",
        str(common.data_dir()),
        "--quiet",
    ]
    run = common.timed(cmd, home)
    row = common.last_parent_artifacts(home, ("results.json",))["results.json"][0]
    out = {}
    for b, c in row["eval_cost"].items():
        per_cpu, per_wall = c["cpu_s"] / c["n_items"], c["wall_s"] / c["n_items"]
        out[b] = {
            "n_items": c["n_items"],
            "cpu_s_per_item": per_cpu,
            "wall_s_per_item": per_wall,
            "score": row.get(REGISTRY[b].column),
            "stderr": row.get(f"accuracy_stderr/{b}"),
            "full_items": FULL_ITEMS[b],
            "full_wall_h": per_wall * FULL_ITEMS[b] / 3600,
            "full_cpu_h": per_cpu * FULL_ITEMS[b] / 3600,
        }
        if b == "bbh":
            out[b]["full_wall_h_all_27"] = per_wall * FULL_ITEMS["bbh_all_27"] / 3600
    rec = {
        "command": run["cmd"],
        "candidate": row["candidate"],
        "wall_s": run["wall_s"],
        "per_benchmark": out,
    }
    print(json.dumps(rec, indent=1))
    common.write(f"item_cost_{row['candidate']}", rec)


if __name__ == "__main__":
    main()
