"""Batch proposals, measured: ``optimize --batch 1`` (one after another, 2 torch threads)
against ``optimize --batch 2 --workers 2`` (a local Dask cluster, 1 torch thread per
worker) at the same candidate budget, in one run of this script.

    python -m tests.perf.batch_optimize         # gemma-3-270m, commonsenseqa + perplexity

The default ``agent`` policy on the scale-out sweep's 4-candidate space (bf16, int8 torchao,
each dense and magnitude 50 %), ``--max-candidates 4``. Each command starts from cold
caches (a fresh ECOCOMPRESS_HOME holding only the converted GGUF) in a fresh process. Wall
seconds are the command's; CPU seconds are the command's and its descendants'. The
hypervolume of each search's final table is computed on the bounds of both tables together
(accuracy, perplexity, latency, memory); the batches each search made are read from its
decisions. The hypervolume a batch reaches on a larger space is replayed on the recorded grid
(tests/perf/batch_replay.py). Writes ``tests/perf/results/batch_optimize.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

from tests.perf import common
from tests.perf.scale_out import SWEEP

# the scale-out sweep's space, benchmarks and flags, as an agent search of 4 evaluations
OPTIMIZE = ["optimize", *SWEEP[1:], "--max-candidates", "4", "--no-register"]
OBJECTIVES = "acc/commonsenseqa:max,perplexity/wikitext2:min,latency_ms:min,memory_gb:min"
SCORES = (
    "acc/commonsenseqa",
    "acc_stderr/commonsenseqa",
    "perplexity/wikitext2",
    "log_perplexity_stderr/wikitext2",
)


def main() -> None:
    import pandas as pd

    from ecocompress.metrics.pareto import hypervolume, objective_bounds
    from ecocompress.metrics.types import parse_objectives

    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20, help="commonsenseqa items")
    ap.add_argument("--ppl-tokens", type=int, default=2048)
    a = ap.parse_args()
    common.ensure_reference()
    base = [sys.executable, "-m", "ecocompress.flows.cli", *OPTIMIZE]
    base += ["--limit", str(a.limit), "--ppl-tokens", str(a.ppl_tokens)]
    base += ["--data-dir", str(common.data_dir())]
    runs, tables = {}, {}
    variants = (
        ("batch1", ["--batch", "1"]),
        ("batch2_workers2", ["--batch", "2", "--workers", "2"]),
    )
    for name, extra in variants:
        home = common.fresh_home(f"batch-{name}")
        t = common.timed([*base, *extra, "--thread-id", name], home)
        art = common.last_parent_artifacts(home, ("results.json", "decisions.json"))
        rows = art["results.json"]
        assert all(r["status"] == "ok" for r in rows), [r.get("failure_reason") for r in rows]
        batches: dict[int, list[str]] = defaultdict(list)
        for d in art["decisions.json"]["decisions"]:
            if d["event"] == "propose":
                batches[d.get("batch_start", d["index"])].append(d["label"])
        tables[name] = rows
        runs[name] = {
            "cmd": t["cmd"],
            "wall_s": round(t["wall_s"], 1),
            "cpu_s": round(t["cpu_s"], 1),
            "cpu_s_per_candidate": round(t["cpu_s"] / len(rows), 1),
            "batches": [batches[k] for k in sorted(batches)],
            "stop_reason": art["decisions.json"]["stop_reason"],
            "rows": {
                r["candidate"]: {
                    **{k: r.get(k) for k in (*SCORES, "limit", "latency_ms", "memory_gb")},
                    "worker": r.get("worker"),
                }
                for r in rows
            },
        }
        print(name, runs[name]["wall_s"], "s wall", runs[name]["cpu_s"], "s CPU", flush=True)
    objectives = parse_objectives(OBJECTIVES)
    both = pd.DataFrame([*tables["batch1"], *tables["batch2_workers2"]])
    bounds = objective_bounds(both, objectives)
    for name, rows in tables.items():
        runs[name]["hypervolume"] = hypervolume(pd.DataFrame(rows), objectives, bounds=bounds)
    a1, a2 = runs["batch1"]["rows"], runs["batch2_workers2"]["rows"]
    # a candidate both searches evaluated on the same items (the table holds each one's
    # highest-fidelity evaluation: a close call re-evaluated on more items is not compared)
    same = sorted(c for c in set(a1) & set(a2) if a1[c]["limit"] == a2[c]["limit"])
    differ = [(c, k) for c in same for k in SCORES if a1[c][k] != a2[c][k]]
    rec = {
        "machine": common.machine(),
        "model": "gemma-3-270m (PyPI Q4_K_M GGUF dequantized)",
        "policy": "agent",
        "limit": a.limit,
        "ppl_tokens": a.ppl_tokens,
        "objectives": OBJECTIVES,
        "hypervolume_bounds": bounds,
        "runs": runs,
        "candidates_in_both": same,
        "scores_identical_on_shared_candidates": not differ,
        "scores_differing": differ,
        "speedup": round(runs["batch1"]["wall_s"] / runs["batch2_workers2"]["wall_s"], 2),
    }
    common.write("batch_optimize", rec)
    print({k: rec[k] for k in ("speedup", "scores_identical_on_shared_candidates")})
    print({n: (r["hypervolume"], r["batches"]) for n, r in runs.items()})
    if differ:
        raise SystemExit(f"scores differ: {differ}")


if __name__ == "__main__":
    main()
