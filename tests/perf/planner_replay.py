"""Planner efficiency: replay every policy on the recorded grid (planner_grid.json) and
count the evaluations each needs to reach 95 % of the full grid's hypervolume.

    python tests/perf/planner_replay.py [--seeds 10] [--target 0.95]

Each policy runs through the same LangGraph decision graph as ``ecocompress optimize``
(reference first, then the policy), with an evaluator that returns the recorded row of
the proposed candidate instead of running it. Hypervolume uses the objectives of the
default ``optimize`` (accuracy, latency, memory, energy), normalised with the bounds of
the whole grid, so every prefix of every run is on the same scale. ``agent`` and
``grid`` are deterministic (their seed changes nothing); ``random`` and ``optuna`` are
run with seeds 0..N-1. Writes planner_replay.json and planner_replay.png.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ecocompress.agents.replay import hv_curve, load_grid, replay
from ecocompress.metrics.pareto import hypervolume, objective_bounds
from ecocompress.metrics.types import parse_objectives
from tests.perf import common

OBJECTIVES = "accuracy:max,latency_ms:min,memory_gb:min,energy_kwh:min"
POLICIES = (
    ("agent", "tpe"),
    ("optuna", "tpe"),
    ("optuna", "nsga2"),
    ("random", "tpe"),
    ("grid", "tpe"),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--fixture", default=str(common.RESULTS / "planner_grid.json"))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--target", type=float, default=0.95)
    ap.add_argument("--accuracy-drop", type=float, default=5.0, help="percentage points")
    ap.add_argument("--objectives", default=OBJECTIVES)
    ap.add_argument("--name", default="planner_replay", help="result file stem")
    a = ap.parse_args()
    fx, space, rows = load_grid(a.fixture)
    objectives = parse_objectives(a.objectives)
    table = pd.DataFrame([r for r in rows.values() if r["status"] == "ok"])
    bounds = objective_bounds(table, objectives)
    full = hypervolume(table, objectives, bounds=bounds)
    # The agent's goal is constrained: candidates below the accuracy floor (reference -
    # drop, point estimates) are not acceptable to it. The same count on the hypervolume
    # of the acceptable candidates only, for comparison.
    ref_acc = rows[space.reference().canonical()]["accuracy"]
    floor = ref_acc - a.accuracy_drop / 100

    def feasible(hist: list[dict]) -> list[dict]:
        return [h for h in hist if h.get("status") == "ok" and h["accuracy"] >= floor]

    ftable = pd.DataFrame(feasible(list(rows.values())))
    fbounds = objective_bounds(ftable, objectives)
    ffull = hypervolume(ftable, objectives, bounds=fbounds)
    results = {}
    t0 = time.perf_counter()
    for policy, sampler in POLICIES:
        name = policy if policy != "optuna" else f"optuna-{sampler}"
        seeds = [0] if policy in ("agent", "grid") else list(range(a.seeds))
        runs = []
        for seed in seeds:
            v = replay(
                space,
                rows,
                policy,
                sampler=sampler,
                seed=seed,
                objectives=a.objectives,
                accuracy_drop=a.accuracy_drop / 100,
            )
            hist = v["history"]
            curve = hv_curve(hist, objectives, bounds)
            reached = next((i + 1 for i, h in enumerate(curve) if h >= a.target * full), None)
            fcurve = [
                hypervolume(pd.DataFrame(feasible(hist[: i + 1])), objectives, bounds=fbounds)
                if feasible(hist[: i + 1])
                else 0.0
                for i in range(len(hist))
            ]
            freached = next((i + 1 for i, h in enumerate(fcurve) if h >= a.target * ffull), None)
            runs.append(
                {
                    "seed": seed,
                    "evaluations_to_target": reached,
                    "evaluations_to_target_acceptable_only": freached,
                    "n_evaluated": len(hist),
                    "stop_reason": v["stop_reason"],
                    "order": [h["candidate"] for h in hist],
                    "hv_ratio": [h / full for h in curve],
                }
            )
        need = [r["evaluations_to_target"] for r in runs]
        ok = [n for n in need if n is not None]
        fneed = [r["evaluations_to_target_acceptable_only"] for r in runs]
        fok = [n for n in fneed if n is not None]
        results[name] = {
            "seeds": seeds,
            "runs": runs,
            "median_evaluations": statistics.median(ok) if len(ok) == len(need) else None,
            "min": min(ok) if ok else None,
            "max": max(ok) if ok else None,
            "reached_in_all_seeds": len(ok) == len(need),
            "acceptable_only_median": statistics.median(fok) if len(fok) == len(fneed) else None,
            "acceptable_only_reached": f"{len(fok)}/{len(fneed)}",
        }
        print(
            f"{name:14s} evaluations to {a.target:.0%} of the grid's hypervolume: "
            f"median {results[name]['median_evaluations']}, range {results[name]['min']}-"
            f"{results[name]['max']} over {len(seeds)} seed(s) (grid: {len(space)}); "
            f"acceptable-only: median {results[name]['acceptable_only_median']}, reached in "
            f"{results[name]['acceptable_only_reached']}"
        )
    out = {
        "what": (
            f"evaluations each policy needs to reach {a.target:.0%} of the full grid's "
            "hypervolume, replayed on the recorded grid"
        ),
        "fixture": Path(a.fixture).name,
        "fixture_machine": fx["machine"],
        "objectives": a.objectives,
        "bounds": bounds,
        "grid_size": len(space),
        "full_hypervolume": full,
        "accuracy_floor": floor,
        "acceptable_candidates": len(ftable),
        "acceptable_hypervolume": ffull,
        "target": a.target,
        "accuracy_drop_pp": a.accuracy_drop,
        "replay_seconds": time.perf_counter() - t0,
        "policies": results,
    }
    common.write(a.name, out)
    figure(results, len(space), a.target, a.name, a.objectives)


def figure(results: dict, n: int, target: float, stem: str, objectives: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    x = np.arange(1, n + 1)
    for name, res in results.items():
        curves = np.array(
            [r["hv_ratio"] + [r["hv_ratio"][-1]] * (n - len(r["hv_ratio"])) for r in res["runs"]]
        )
        med = np.median(curves, axis=0)
        (line,) = ax.plot(
            x, med, label=f"{name} ({len(res['runs'])} seed{'s' * (len(res['runs']) > 1)})"
        )
        if len(curves) > 1:
            lo, hi = np.percentile(curves, 25, axis=0), np.percentile(curves, 75, axis=0)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
    ax.axhline(target, color="grey", ls="--", lw=1)
    ax.axvline(0.3 * n, color="grey", ls=":", lw=1)
    ax.set_xlabel("candidates evaluated")
    ax.set_ylabel("hypervolume / full grid's")
    ax.set_title(
        f"Planner efficiency, recorded gemma-3-270m grid (median, IQR)\n{objectives}", fontsize=9
    )
    ax.legend(fontsize=8, loc="lower right")
    ax.set_ylim(0, 1.02)
    fig.tight_layout()
    out = common.RESULTS / f"{stem}.png"
    fig.savefig(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
