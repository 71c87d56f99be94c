"""Multi-fidelity search against the exhaustive grid, replayed on the recorded grid.

    python -m tests.perf.fidelity_replay        # writes results/fidelity_replay.json

Inputs: planner_grid.json (27 real gemma-3-270m candidates: memory, latency, and the CPU
seconds of their CommonsenseQA + BBH evaluations at limit 30) and
planner_grid_fidelity.json (per-item scores of those evaluations, per-window WikiText-2
perplexity on 8192 tokens, and lm-eval's fixed cost per evaluation).

An observation of candidate c at a rung is computed from the recorded data, not simulated:

- accuracy at ``limit`` L = the mean of the first L per-item scores of each (sub)task
  (lm-eval's ``limit`` scores the first L documents; planner_grid_fidelity.py checked
  that re-running lm-eval at small limits gives exactly that prefix), with lm-eval's
  standard error (sample standard deviation / sqrt(n)), BBH pooled over its subtasks as
  ``tasks.evaluate.pooled`` does, the overall accuracy the mean over benchmarks;
- perplexity at T tokens = ``tasks.perplexity.summarise`` over the windows that fit in T
  (T aligned on the windows, so they are exactly the windows a T-token run scores);
- memory and latency as measured by the grid sweep (they do not depend on the rung).

Cost of an observation: **item evaluations** = benchmark items scored (perplexity tokens
are counted separately); **CPU seconds** = for each benchmark, lm-eval's fixed cost plus
the candidate's measured per-item CPU (its limit-30 CPU minus the fixed cost, over 30
items per task) times the items, plus the measured CPU of the perplexity windows used.

The exhaustive grid evaluates every candidate at the top rung. Both frontiers use the
same objectives and the same dominance (beyond ``z`` standard errors, or plain with
``--z 0``); the multi-fidelity frontier is taken on its top-rung observations only.
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Any

from ecocompress.tasks.benchmarks import REGISTRY
from tests.perf import common

OBJECTIVES = "accuracy:max,perplexity/wikitext2:min,memory_gb:min"


def _se(xs: list[float]) -> float | None:
    n = len(xs)
    if n < 2:
        return None
    m = sum(xs) / n
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (n - 1) / n)


class Recorded:
    """The recorded grid, able to answer 'what would this rung have measured'."""

    def __init__(self, grid: dict, fid: dict):
        from ecocompress.tasks.evaluate import pooled

        self.pooled = pooled
        self.rows = {r["candidate"]: r for r in grid["rows"]}
        self.fid = {c["candidate"]: c for c in fid["candidates"]}
        self.fixed = {b: v["fit"]["fixed_cpu_s"] for b, v in fid["lm_eval_fixed_cost"].items()}
        self.full_limit = grid["limit"]
        self.benchmarks = grid["benchmarks"]
        self.ppl_full = fid["perplexity_settings"]["tokens"]

    def accuracy(self, cand: str, bench: str, limit: int) -> tuple[float, float | None, int]:
        per = {}
        for task, xs in self.fid[cand]["items"][bench].items():
            xs = xs[:limit]
            per[task] = {"score": sum(xs) / len(xs), "stderr": _se(xs), "n": len(xs)}
        return self.pooled(per)

    def perplexity(self, cand: str, tokens: int) -> tuple[dict, float]:
        from ecocompress.tasks.perplexity import summarise

        used, n = [], 0
        for w in self.fid[cand]["perplexity"]["windows"]:
            if n + w["n"] > tokens:
                break
            used.append(w)
            n += w["n"]
        assert n == tokens, f"budget {tokens} is not aligned on the recorded windows"
        return summarise(used), sum(w["cpu_s"] for w in used)

    def observe(self, cand: str, rung: dict) -> tuple[dict[str, Any], dict[str, float]]:
        row = self.rows[cand]
        obs: dict[str, Any] = {
            "candidate": cand,
            "status": "ok",
            "memory_gb": row["memory_gb"],
            "latency_ms": row["latency_ms"],
        }
        items, cpu = 0, 0.0
        accs, errs = {}, {}
        for b in rung["benchmarks"]:
            if b == "perplexity":
                s, c = self.perplexity(cand, rung["ppl_tokens"])
                obs["perplexity/wikitext2"] = s["perplexity"]
                obs["log_perplexity_stderr/wikitext2"] = s["nll_stderr"]
                obs["perplexity_ci_low/wikitext2"] = s["ci_low"]
                obs["perplexity_ci_high/wikitext2"] = s["ci_high"]
                cpu += c
                continue
            limit = rung["limit"] or self.full_limit
            score, se, n = self.accuracy(cand, b, limit)
            accs[b], errs[b] = score, se
            obs[REGISTRY[b].column] = score
            obs[REGISTRY[b].stderr_column] = se
            full = row["eval_cost"][b]
            per_item = (full["cpu_s"] - self.fixed[b]) / full["n_items"]
            items += n
            cpu += self.fixed[b] + per_item * n
        if accs:
            obs["accuracy"] = sum(accs.values()) / len(accs)
            known = [e for e in errs.values() if e is not None]
            obs["accuracy_stderr"] = (
                math.sqrt(sum(e * e for e in known)) / len(accs)
                if len(known) == len(accs)
                else None
            )
        return obs, {"items": items, "cpu_s": cpu, "ppl_tokens": rung.get("ppl_tokens") or 0}


def front(rows: list[dict], objectives: str, z: float) -> set[str]:
    import pandas as pd

    from ecocompress.metrics.pareto import pareto_front
    from ecocompress.metrics.types import parse_objectives

    df = pareto_front(pd.DataFrame(rows), parse_objectives(objectives), z=z or None)
    return set(df.loc[df["on_front"], "candidate"])


def replay(
    rec: Recorded,
    ladder: list[dict],
    policy: str,
    seed: int,
    z: float,
    objectives: str,
    accuracy_drop: float | None,
):
    from langgraph.checkpoint.memory import InMemorySaver

    from ecocompress.agents.graph import build_graph, run_search
    from ecocompress.agents.settings import SearchSettings
    from ecocompress.agents.space import Space
    from ecocompress.tasks.specs import CandidateSpec

    grid = json.loads((common.RESULTS / "planner_grid.json").read_text())
    g = grid["grid"]
    space = Space.from_dict(
        {
            "bits": [int(x) for x in g["bits"].split(",")],
            "prune": g["prune"].split(","),
            "sparsity": [float(x) for x in g["sparsity"].split(",")],
            "pattern": g["pattern"].split(","),
            "quant_backend": ["bitsandbytes"],
        }
    )
    settings = SearchSettings(
        policy=policy,
        seed=seed,
        space=space.as_dict(),
        objectives=objectives,
        accuracy_drop=accuracy_drop,
        z=z if z > 0 else 1e-9,
        fidelities=ladder,
    )
    spent: list[dict] = []

    def evaluate(p: dict, index: int) -> dict:
        label = CandidateSpec.model_validate_json(p["key"]).label
        obs, cost = rec.observe(label, ladder[p["rung"]])
        spent.append({"candidate": label, "rung": p["rung"], "kind": p["kind"], **cost})
        return {**obs, "key": p["key"], "limit": p["limit"], "rung": p["rung"], "wall_s": 0.0}

    values = run_search(build_graph(InMemorySaver()), f"{policy}-{seed}", settings, evaluate)
    return values, spent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--z", type=float, default=1.0)
    ap.add_argument("--objectives", default=OBJECTIVES)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument(
        "--accuracy-drop",
        type=float,
        default=None,
        help="pp below the reference that a race may eliminate on (default: none, so the "
        "search looks for the same frontier as the grid, not the acceptable part of it)",
    )
    ap.add_argument("--name", default="fidelity_replay")
    a = ap.parse_args()
    from ecocompress.agents.fidelity import default_ladder

    grid = json.loads((common.RESULTS / "planner_grid.json").read_text())
    fid = json.loads((common.RESULTS / "planner_grid_fidelity.json").read_text())
    rec = Recorded(grid, fid)
    ps = fid["perplexity_settings"]
    ladder = default_ladder(
        rec.benchmarks, rec.full_limit, ps["tokens"], ps["window"], ps["stride"]
    )
    top = ladder[-1]

    # the exhaustive grid: every candidate at full fidelity
    full_rows, full_cost = [], {"items": 0, "cpu_s": 0.0, "ppl_tokens": 0}
    for cand in rec.rows:
        obs, cost = rec.observe(cand, top)
        # the recorded full evaluation reproduces the grid's accuracies exactly
        assert math.isclose(obs["accuracy"], rec.rows[cand]["accuracy"], abs_tol=1e-12), cand
        assert math.isclose(
            obs["accuracy_stderr"], rec.rows[cand]["accuracy_stderr"], rel_tol=1e-6
        ), cand
        full_rows.append(obs)
        for k in full_cost:
            full_cost[k] += cost[k]
    want = front(full_rows, a.objectives, a.z)
    plain = front(full_rows, a.objectives, 0.0)

    runs = []
    for policy, seeds in (("agent", [0]), ("random", list(range(a.seeds))), ("grid", [0])):
        for seed in seeds:
            drop = None if a.accuracy_drop is None else a.accuracy_drop / 100
            values, spent = replay(rec, ladder, policy, seed, a.z, a.objectives, drop)
            topn = len(ladder) - 1
            mine = [h for h in values["history"] if h["rung"] == topn]
            got = front(mine, a.objectives, a.z) if mine else set()
            cost = {k: sum(s[k] for s in spent) for k in ("items", "cpu_s", "ppl_tokens")}
            runs.append(
                {
                    "explorer": policy,
                    "seed": seed,
                    "frontier": sorted(got),
                    "same_frontier": got == want,
                    "missed": sorted(want - got),
                    "extra": sorted(got - want),
                    "evaluations": len(spent),
                    "per_rung": [
                        sum(1 for s in spent if s["rung"] == r) for r in range(len(ladder))
                    ],
                    "items": cost["items"],
                    "items_fraction": cost["items"] / full_cost["items"],
                    "cpu_s": cost["cpu_s"],
                    "cpu_fraction": cost["cpu_s"] / full_cost["cpu_s"],
                    "ppl_tokens": cost["ppl_tokens"],
                    "stop_reason": values["stop_reason"],
                    "decisions": [
                        {
                            k: d.get(k)
                            for k in ("event", "label", "candidate", "rung", "kind", "reason")
                        }
                        for d in values["decisions"]
                    ]
                    if policy == "agent"
                    else None,
                }
            )
            r = runs[-1]
            print(
                f"{policy:7s} seed {seed}: same frontier {r['same_frontier']!s:5s} "
                f"items {r['items']:5d} ({100 * r['items_fraction']:.1f} %)  "
                f"cpu {r['cpu_s']:7.0f} s ({100 * r['cpu_fraction']:.1f} %)  "
                f"evaluations per rung {r['per_rung']}  missed {r['missed']} extra {r['extra']}"
            )
    print(
        f"exhaustive: items {full_cost['items']}, cpu {full_cost['cpu_s']:.0f} s; frontier {sorted(want)}"
    )
    common.write(
        a.name,
        {
            "what": "multi-fidelity search vs the exhaustive grid on the recorded grid "
            "(see the script's docstring for how observations and costs are derived)",
            "objectives": a.objectives,
            "z": a.z,
            "accuracy_drop_pp": a.accuracy_drop,
            "ladder": ladder,
            "exhaustive": {
                **full_cost,
                "frontier": sorted(want),
                "frontier_plain": sorted(plain),
                "rows": full_rows,
            },
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
