"""Replay a search policy on a recorded grid: the decision graph proposes, the recorded
row of the proposed candidate is returned instead of running it. Used by the planner
benchmark (tests/perf/planner_replay.py) and ``ecocompress study rq1 --replay``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecocompress.agents.graph import build_graph, run_search
from ecocompress.agents.settings import SearchSettings
from ecocompress.agents.space import Space
from ecocompress.tasks.benchmarks import REGISTRY
from ecocompress.tasks.errors import UserError


def legacy_columns(row: dict[str, Any]) -> dict[str, Any]:
    """A row recorded before benchmarks logged their own metric (``accuracy/<b>``,
    ``accuracy_stderr/<b>``) under today's names (``exact_match/gsm8k``, ...)."""
    out = {}
    for k, v in row.items():
        kind, sep, bench = k.partition("/")
        if sep and kind in ("accuracy", "accuracy_stderr") and bench in REGISTRY:
            col = REGISTRY[bench].column
            k = col if kind == "accuracy" else REGISTRY[bench].stderr_column or k
        out[k] = v
    return out


def load_grid(path: str | Path) -> tuple[dict[str, Any], Space, dict[str, dict[str, Any]]]:
    """The fixture, its space, and its rows keyed by canonical candidate spec.

    Raises:
        UserError: unreadable fixture, or a candidate of the space without a row.
    """
    try:
        fx = json.loads(Path(path).read_text())
        g = fx["grid"]
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"grid fixture {path}: cannot read it ({exc})") from None
    space = Space(
        bits=tuple(int(b) for b in g["bits"].split(",")),
        prune=tuple(g["prune"].split(",")),
        sparsity=tuple(float(s) for s in g["sparsity"].split(",")),
        pattern=tuple(g["pattern"].split(",")),
    )
    by_label = {c.label: c for c in space.candidates}
    rows: dict[str, dict[str, Any]] = {}
    for r in fx["rows"]:
        c = by_label.get(r["candidate"])
        if c is None:
            raise UserError(f"grid fixture {path}: row {r['candidate']!r} is not in its grid")
        row = {**legacy_columns(r), "key": c.canonical(), "wall_s": 0.0, "emitted_co2_kg": 0.0}
        rows[c.canonical()] = row
    missing = [c.label for c in space.candidates if c.canonical() not in rows]
    if missing:
        raise UserError(f"grid fixture {path}: no row for {', '.join(missing)}")
    return fx, space, rows


def replay(
    space: Space,
    rows: dict[str, dict[str, Any]],
    policy: str,
    *,
    sampler: str = "tpe",
    seed: int = 0,
    objectives: str,
    accuracy_drop: float | None,
    max_candidates: int | None = None,
    batch: int = 1,
) -> dict[str, Any]:
    """Run ``policy`` through the decision graph on the recorded rows (``batch`` proposals
    per iteration); final graph state."""
    from langgraph.checkpoint.memory import InMemorySaver

    settings = SearchSettings(
        policy=policy,
        sampler=sampler,
        seed=seed,
        space=space.as_dict(),
        objectives=objectives,
        accuracy_drop=accuracy_drop,
        max_candidates=max_candidates or len(space),
        batch=batch,
    )
    return run_search(
        build_graph(InMemorySaver()),
        f"replay-{policy}-{sampler}-{seed}-{batch}",
        settings,
        lambda p, i: rows[p["key"]],
    )


def hv_curve(history: list[dict[str, Any]], objectives: list, bounds: dict) -> list[float]:
    """Hypervolume of the first n evaluations, n = 1..len(history), on fixed bounds
    (failed evaluations use up an evaluation and add nothing)."""
    import pandas as pd

    from ecocompress.metrics.pareto import hypervolume

    out = []
    for n in range(1, len(history) + 1):
        ok = [r for r in history[:n] if r.get("status") == "ok"]
        out.append(hypervolume(pd.DataFrame(ok), objectives, bounds=bounds) if ok else 0.0)
    return out
