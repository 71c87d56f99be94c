"""Batch proposals on the recorded grid: what ``--batch K`` costs the search in evaluations
and what it saves in rounds (iterations of K parallel evaluations).

    python -m tests.perf.batch_replay [--seeds 10] [--batches 1,2,4] [--target 0.95]

Each policy runs through the same LangGraph decision graph as ``ecocompress optimize``
(reference first), with an evaluator that returns the recorded row of each proposed
candidate (planner_grid.json: 27 gemma-3-270m candidates), asking for ``K`` proposals per
iteration. Hypervolume uses the default ``optimize`` objectives normalised with the whole
grid's bounds, as in planner_replay.py. For each policy and K: evaluations until 95 % of the
grid's hypervolume (a batch can waste evaluations: its members are chosen without each
other's results), rounds until then (with K workers and equal candidate costs, wall time is
proportional to rounds), and the hypervolume reached at fixed evaluation budgets. ``agent``
and ``grid`` are deterministic; ``random`` and ``optuna`` run with seeds 0..N-1 (medians).
Writes batch_replay.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd

from ecocompress.agents.replay import hv_curve, load_grid, replay
from ecocompress.metrics.pareto import hypervolume, objective_bounds
from ecocompress.metrics.types import parse_objectives
from tests.perf import common
from tests.perf.planner_replay import OBJECTIVES, POLICIES

BUDGETS = (6, 9, 12)


def rounds_of(decisions: list[dict]) -> list[int]:
    """For each evaluation (in order), the round (iteration) it ran in, from 1."""
    starts, out = [], []
    for d in decisions:
        if d["event"] == "propose":
            start = d.get("batch_start", d["index"])
            if not starts or starts[-1] != start:
                starts.append(start)
            out.append(len(starts))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=str(common.RESULTS / "planner_grid.json"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--batches", default="1,2,4")
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--accuracy-drop", type=float, default=5.0, help="percentage points")
    a = ap.parse_args()
    fx, space, rows = load_grid(a.fixture)
    objectives = parse_objectives(OBJECTIVES)
    table = pd.DataFrame([r for r in rows.values() if r["status"] == "ok"])
    bounds = objective_bounds(table, objectives)
    full = hypervolume(table, objectives, bounds=bounds)
    results: dict[str, dict] = {}
    t0 = time.perf_counter()
    for policy, sampler in POLICIES:
        name = policy if policy != "optuna" else f"optuna-{sampler}"
        seeds = [0] if policy in ("agent", "grid") else list(range(a.seeds))
        results[name] = {}
        for k in (int(b) for b in a.batches.split(",")):
            per_seed = []
            for seed in seeds:
                v = replay(
                    space,
                    rows,
                    policy,
                    sampler=sampler,
                    seed=seed,
                    objectives=OBJECTIVES,
                    accuracy_drop=a.accuracy_drop / 100,
                    batch=k,
                )
                hist = v["history"]
                keys = [h["key"] for h in hist]
                assert len(keys) == len(set(keys)), "a candidate evaluated twice"
                curve = [h / full for h in hv_curve(hist, objectives, bounds)]
                rounds = rounds_of(v["decisions"])
                n = next((i + 1 for i, h in enumerate(curve) if h >= a.target), None)
                per_seed.append(
                    {
                        "seed": seed,
                        "evaluations_to_target": n,
                        "rounds_to_target": rounds[n - 1] if n else None,
                        "hv_ratio_at": {str(b): curve[min(b, len(curve)) - 1] for b in BUDGETS},
                        "n_evaluated": len(hist),
                        "rounds": rounds[-1] if rounds else 0,
                        "stop_reason": v["stop_reason"],
                    }
                )

            def med(key: str, runs: list[dict] = per_seed) -> float | None:
                vals = [r[key] for r in runs]
                return statistics.median(vals) if all(x is not None for x in vals) else None

            results[name][str(k)] = {
                "median_evaluations_to_target": med("evaluations_to_target"),
                "median_rounds_to_target": med("rounds_to_target"),
                "median_hv_ratio_at": {
                    str(b): statistics.median(r["hv_ratio_at"][str(b)] for r in per_seed)
                    for b in BUDGETS
                },
                "reached": f"{sum(r['evaluations_to_target'] is not None for r in per_seed)}"
                f"/{len(per_seed)}",
                "runs": per_seed,
            }
            r = results[name][str(k)]
            print(
                f"{name:12s} batch {k}: evaluations to {a.target:.0%} {r['median_evaluations_to_target']}, "
                f"rounds {r['median_rounds_to_target']}, hv at {BUDGETS} "
                f"{[round(x, 3) for x in r['median_hv_ratio_at'].values()]} ({r['reached']})",
                flush=True,
            )
    common.write(
        "batch_replay",
        {
            "what": (
                "evaluations and rounds each policy needs to reach "
                f"{a.target:.0%} of the full grid's hypervolume with K proposals per round, "
                "replayed on the recorded grid"
            ),
            "machine": common.machine(),
            "fixture": Path(a.fixture).name,
            "fixture_machine": fx["machine"],
            "objectives": OBJECTIVES,
            "grid_size": len(space),
            "full_hypervolume": full,
            "target": a.target,
            "budgets": BUDGETS,
            "seeds": a.seeds,
            "replay_seconds": round(time.perf_counter() - t0, 1),
            "policies": results,
        },
    )


if __name__ == "__main__":
    main()
