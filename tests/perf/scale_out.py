"""Scale-out: the same 4-candidate sweep sequentially (2 torch threads) and on `--workers 2`
(a local Dask cluster, 1 torch thread per worker), in one run of this script.

    python -m tests.perf.scale_out              # gemma-3-270m, commonsenseqa + perplexity

Each command starts from cold caches (a fresh ECOCOMPRESS_HOME holding only the converted
GGUF) and is a fresh process that starts its own temporary Prefect server, so both pay the
same start-up. Wall seconds are the command's; CPU seconds are those of the command and all
its descendants (the workers included: ``os.times`` children, which are waited for), divided
by the 4 candidates. The two results tables must be identical in every score and perplexity
(asserted); the measured costs (latency, energy) are listed side by side. Writes
``tests/perf/results/scale_out.json``.
"""

from __future__ import annotations

import argparse
import sys

from tests.perf import common

SWEEP = [
    "sweep",
    "--bits",
    "16,8",
    "--quant-backend",
    "torchao",
    "--prune",
    "none,magnitude",
    "--sparsity",
    "0.5",
    "--benchmarks",
    "commonsenseqa,perplexity",
    "--quiet",
]
SCORES = (
    "acc/commonsenseqa",
    "acc_stderr/commonsenseqa",
    "perplexity/wikitext2",
    "log_perplexity_stderr/wikitext2",
)
COSTS = ("latency_ms", "memory_gb", "energy_kwh")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=20, help="commonsenseqa items")
    ap.add_argument("--ppl-tokens", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    common.ensure_reference()
    base = [sys.executable, "-m", "ecocompress.flows.cli", *SWEEP]
    base += ["--limit", str(a.limit), "--ppl-tokens", str(a.ppl_tokens)]
    base += ["--data-dir", str(common.data_dir())]
    runs = {}
    for name, extra in (("sequential", []), ("workers", ["--workers", str(a.workers)])):
        home = common.fresh_home(f"scale-{name}")
        t = common.timed([*base, *extra], home)
        art = common.last_parent_artifacts(home, ("results.json", "steps.json"))
        rows = art["results.json"]
        assert all(r["status"] == "ok" for r in rows), [r.get("failure_reason") for r in rows]
        runs[name] = {
            "cmd": t["cmd"],
            "wall_s": round(t["wall_s"], 1),
            "cpu_s": round(t["cpu_s"], 1),
            "cpu_s_per_candidate": round(t["cpu_s"] / len(rows), 1),
            "executed_steps": len(art["steps.json"]["executed"]),
            "rows": {
                r["candidate"]: {
                    **{k: r.get(k) for k in (*SCORES, *COSTS)},
                    "eval_cpu_s": {b: c["cpu_s"] for b, c in r["eval_cost"].items()},
                    "worker": r.get("worker"),
                }
                for r in rows
            },
        }
        print(name, runs[name]["wall_s"], "s wall", runs[name]["cpu_s"], "s CPU", flush=True)
    seq, par = runs["sequential"]["rows"], runs["workers"]["rows"]
    assert set(seq) == set(par)
    differ = [(c, k) for c in seq for k in SCORES if seq[c][k] != par[c][k]]
    rec = {
        "machine": common.machine(),
        "model": "gemma-3-270m (PyPI Q4_K_M GGUF dequantized)",
        "limit": a.limit,
        "ppl_tokens": a.ppl_tokens,
        "workers": a.workers,
        "runs": runs,
        "scores_identical": not differ,
        "scores_differing": differ,
        "speedup": round(runs["sequential"]["wall_s"] / runs["workers"]["wall_s"], 2),
    }
    common.write("scale_out", rec)
    print({k: rec[k] for k in ("speedup", "scores_identical")})
    if differ:
        raise SystemExit(f"scores differ: {differ}")


if __name__ == "__main__":
    main()
