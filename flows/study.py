"""``ecocompress study rq1|rq2|rq3|rq4``: the research questions as commands that produce
reports (markdown + HTML with plotly figures) on an MLflow run and a printed table.

- RQ1, dynamic vs static: hypervolume against the number of evaluated candidates for each
  policy under the same budget (live optimize runs, or ``--replay`` on a recorded grid).
- RQ2, energy and carbon along the agent's path, and the search's own total.
- RQ3, objective weights: the recommendation under several weight schemes; the frontier
  is the same for all of them (shown).
- RQ4, resource constraints: what the agent chooses under edge, cloud and carbon-limited
  profiles.

Live studies run ``optimize_flow`` with thread ids derived from their settings, so a
study run again resumes or reuses its searches (and the task caches share candidates
between policies): only candidates never evaluated cost compute.
"""

from __future__ import annotations

import hashlib
import statistics
from pathlib import Path
from typing import Any

from prefect import flow

from ecocompress.agents.settings import SearchSettings
from ecocompress.flows.params import RunParams
from ecocompress.flows.search_params import RQ1_POLICIES, STUDIES
from ecocompress.flows.study_report import TITLES, accuracy_text, md_table, write_study_report
from ecocompress.metrics.recommend import PROFILES, Constraints, recommend
from ecocompress.tasks.errors import UserError

WEIGHT_SCHEMES: dict[str, dict[str, float]] = {
    "accuracy only": {"accuracy": 1.0},
    "balanced": dict(PROFILES["balanced"].weights),
    "edge": dict(PROFILES["edge"].weights),
    "cloud": dict(PROFILES["cloud"].weights),
    "energy first": {"accuracy": 0.3, "energy_kwh": 0.7},
    "latency first": {"accuracy": 0.3, "latency_ms": 0.7},
    "memory first": {"accuracy": 0.3, "memory_gb": 0.7},
}


def _thread(kind: str, params: RunParams, s: SearchSettings) -> str:
    h = hashlib.sha256((params.canonical() + s.canonical()).encode()).hexdigest()[:12]
    return f"study-{kind}-{s.policy}-{s.seed}-{h}"


def _optimize(params: RunParams, s: SearchSettings, kind: str, quiet: bool) -> dict[str, Any]:
    from ecocompress.flows.optimize import optimize_flow

    return optimize_flow(params, s, _thread(kind, params, s), register_model=False, quiet=quiet)


# ---------------------------------------------------------------- RQ1


def rq1_curves(histories: dict[str, list[list[dict]]], objectives: str) -> dict[str, Any]:
    """Hypervolume of each prefix of each run, on the bounds of every row seen."""
    import pandas as pd

    from ecocompress.agents.replay import hv_curve
    from ecocompress.metrics.pareto import objective_bounds
    from ecocompress.metrics.types import parse_objectives

    objs = parse_objectives(objectives)
    everything = [
        r for runs in histories.values() for h in runs for r in h if r.get("status") == "ok"
    ]
    if len({r["key"] for r in everything}) < 2:
        raise UserError("RQ1 needs at least two evaluated candidates to normalise hypervolume")
    bounds = objective_bounds(pd.DataFrame(everything), objs)
    out: dict[str, Any] = {"bounds": bounds, "policies": {}}
    for name, runs in histories.items():
        curves = [hv_curve(h, objs, bounds) for h in runs]
        out["policies"][name] = curves
    return out


def rq1(
    params: RunParams,
    base: SearchSettings,
    policies: list[str],
    seeds: list[int],
    quiet: bool,
    replay_path: str | None,
) -> tuple[str, list[Any], list[dict[str, Any]]]:
    import plotly.graph_objects as go

    histories: dict[str, list[list[dict]]] = {}
    if replay_path:
        from ecocompress.agents.replay import load_grid, replay

        _, space, rows = load_grid(replay_path)
        for p in policies:
            histories[p] = [
                replay(
                    space,
                    rows,
                    p,
                    seed=sd,
                    objectives=base.objectives,
                    accuracy_drop=base.accuracy_drop,
                    max_candidates=base.max_candidates,
                )["history"]
                for sd in (seeds if p in ("random", "optuna") else seeds[:1])
            ]
        source = f"replayed on the recorded grid {Path(replay_path).name} ({len(space)} candidates)"
    else:
        for p in policies:
            histories[p] = [
                _optimize(params, base.model_copy(update={"policy": p, "seed": sd}), "rq1", quiet)[
                    "history"
                ]
                for sd in (seeds if p in ("random", "optuna") else seeds[:1])
            ]
        source = f"live optimize runs of {params.model}, limit {params.limit}"
    curves = rq1_curves(histories, base.objectives)
    fig = go.Figure()
    table = []
    for p, cs in curves["policies"].items():
        n = max(len(c) for c in cs)
        padded = [c + [c[-1]] * (n - len(c)) for c in cs if c]
        med = [statistics.median(col) for col in zip(*padded, strict=True)]
        fig.add_trace(
            go.Scatter(
                x=list(range(1, n + 1)),
                y=med,
                mode="lines+markers",
                name=f"{p} (median of {len(cs)})",
            )
        )
        table.append(
            {
                "policy": p,
                "runs": len(cs),
                "evaluations (median)": statistics.median(len(c) for c in cs),
                "final hypervolume (median)": statistics.median(c[-1] for c in cs if c),
                "hypervolume after 5 (median)": statistics.median(
                    c[min(4, len(c) - 1)] for c in cs if c
                ),
            }
        )
    fig.update_layout(
        title=f"RQ1: hypervolume vs candidates evaluated ({source})",
        xaxis_title="candidates evaluated",
        yaxis_title="hypervolume (normalised, shared bounds)",
    )
    text = (
        f"Same budget ({base.max_candidates} evaluations) for every policy; {source}. "
        "Hypervolume on the objectives "
        f"{base.objectives}, normalised with the bounds of every candidate any policy evaluated.\n\n"
        + md_table(table)
    )
    return text, [fig], table


# ---------------------------------------------------------------- RQ2


def rq2(params: RunParams, base: SearchSettings, quiet: bool):
    import plotly.graph_objects as go

    s = _optimize(params, base.model_copy(update={"policy": "agent"}), "rq2", quiet)
    front = set(s["front"].loc[s["front"]["on_front"] == True, "candidate"])  # noqa: E712
    rows, cum = [], 0.0
    for i, h in enumerate(s["history"]):
        cum += float(h.get("emitted_co2_kg") or 0.0)
        rows.append(
            {
                "step": i + 1,
                "candidate": h["candidate"],
                "proposed by": h.get("policy"),
                "accuracy": accuracy_text(h) if h.get("status") == "ok" else h.get("status"),
                "energy_kwh (its evaluation)": h.get("energy_kwh"),
                "co2_kg (its evaluation)": h.get("co2_kg"),
                "co2_kg emitted now": h.get("emitted_co2_kg"),
                "search co2_kg so far": cum,
                "on frontier": h["candidate"] in front,
            }
        )
    fig = go.Figure()
    fig.add_trace(
        go.Bar(
            x=[r["candidate"] + f" #{r['step']}" for r in rows],
            y=[r["energy_kwh (its evaluation)"] for r in rows],
            name="energy of the evaluation (kWh)",
        )
    )
    fig.add_trace(
        go.Scatter(
            x=[r["candidate"] + f" #{r['step']}" for r in rows],
            y=[r["search co2_kg so far"] for r in rows],
            name="search CO2 so far (kg)",
            yaxis="y2",
        )
    )
    fig.update_layout(
        title="RQ2: energy per candidate along the agent's path, and the search's CO2",
        yaxis={"title": "kWh"},
        yaxis2={"title": "kg CO2eq", "overlaying": "y", "side": "right"},
    )
    text = (
        f"Agent path ({len(rows)} evaluations, stop: {s['stop_reason']}). Energy from "
        "codecarbon during each evaluation (method in the run's energy_method tag); CO2 = "
        "energy x grid intensity. 'emitted now' is 0 for evaluations served from the cache.\n\n"
        + md_table(rows)
        + f"\nSearch total this command: {s['energy_spent_kwh']:.6f} kWh, "
        f"{s['search_co2_kg']:.6f} kg CO2eq.\n"
    )
    return text, [fig], rows


# ---------------------------------------------------------------- RQ3


def rq3(params: RunParams, base: SearchSettings, quiet: bool):
    import pandas as pd
    import plotly.graph_objects as go

    from ecocompress.metrics.pareto import pareto_front
    from ecocompress.metrics.types import parse_objectives

    s = _optimize(params, base.model_copy(update={"policy": "agent"}), "rq2", quiet)
    ok = pd.DataFrame([r for r in s["rows"] if r.get("status") == "ok"])
    objs = parse_objectives(base.objectives)
    ref = ok.iloc[0]
    cons = Constraints(accuracy_drop=base.accuracy_drop, reference_accuracy=float(ref["accuracy"]))
    table, fronts = [], []
    for name, w in WEIGHT_SCHEMES.items():
        front = pareto_front(ok, objs)  # weights are not an input: same frontier every time
        fronts.append(tuple(sorted(front.loc[front["on_front"] == True, "candidate"])))  # noqa: E712
        rec = recommend(ok, w, cons)
        table.append(
            {
                "scheme": name,
                "weights": ", ".join(f"{k}={v:.2f}" for k, v in w.items()),
                "recommended": rec.label,
                "score": rec.ranking[0]["score"] if rec.ranking else None,
                "why": rec.reason,
            }
        )
    same = all(f == fronts[0] for f in fronts)
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            x=ok["memory_gb"],
            y=ok["accuracy"],
            mode="markers+text",
            text=ok["candidate"],
            textposition="top center",
            name="evaluated",
            error_y={"type": "data", "array": ok.get("accuracy_stderr")},
        )
    )
    recs = {t["recommended"] for t in table if t["recommended"]}
    sel = ok[ok["candidate"].isin(recs)]
    fig.add_trace(
        go.Scatter(
            x=sel["memory_gb"],
            y=sel["accuracy"],
            mode="markers",
            marker={"size": 16, "symbol": "star"},
            name="recommended by some scheme",
        )
    )
    fig.update_layout(
        title="RQ3: recommendations under weight schemes (accuracy ± stderr vs memory)",
        xaxis_title="memory_gb",
        yaxis_title="accuracy",
    )
    text = (
        f"{len(ok)} candidates from the agent's search. Frontier on {base.objectives}: "
        f"{', '.join(fronts[0])} - {'identical' if same else 'NOT identical'} under all "
        f"{len(WEIGHT_SCHEMES)} weight schemes (weights only pick a point on it). Hard "
        f"constraint: accuracy within {base.accuracy_drop * 100 if base.accuracy_drop is not None else 'n/a'} pp of the reference.\n\n"
        + md_table(table)
    )
    return text, [fig], table


# ---------------------------------------------------------------- RQ4


def rq4(params: RunParams, base: SearchSettings, quiet: bool, carbon_budget: float | None):
    import plotly.graph_objects as go

    profiles = {
        "edge": base.model_copy(
            update={
                "weights": dict(PROFILES["edge"].weights),
                "memory_limit_gb": PROFILES["edge"].memory_limit_gb,
                "carbon_budget_kg": None,
            }
        ),
        "cloud": base.model_copy(
            update={"weights": dict(PROFILES["cloud"].weights), "carbon_budget_kg": None}
        ),
    }
    if carbon_budget is not None:
        profiles["carbon-limited"] = base.model_copy(
            update={
                "weights": dict(PROFILES["balanced"].weights),
                "carbon_budget_kg": carbon_budget,
                "carbon_accounting": "attributed",
            }
        )
    table = []
    fig = go.Figure()
    for name, st in profiles.items():
        s = _optimize(params, st.model_copy(update={"policy": "agent"}), f"rq4-{name}", quiet)
        rec = s["recommendation"]
        chosen = next((r for r in s["rows"] if r["candidate"] == rec.get("candidate")), None)
        table.append(
            {
                "profile": name,
                "limits": ", ".join(
                    f"{k} {v:g}"
                    for k, v in (
                        ("memory_gb<=", st.memory_limit_gb),
                        ("carbon_kg<=", st.carbon_budget_kg),
                    )
                    if v is not None
                )
                or "none",
                "evaluations": s["evaluations"],
                "stop": s["stop_reason"],
                "recommended": rec.get("candidate"),
                "accuracy": accuracy_text(chosen) if chosen else None,
                "memory_gb": chosen.get("memory_gb") if chosen else None,
                "latency_ms": chosen.get("latency_ms") if chosen else None,
            }
        )
        fig.add_trace(
            go.Scatter(
                x=[h["memory_gb"] for h in s["history"] if h.get("status") == "ok"],
                y=[h["accuracy"] for h in s["history"] if h.get("status") == "ok"],
                mode="markers+lines",
                name=f"{name} path",
            )
        )
    fig.update_layout(
        title="RQ4: the agent's path under each profile",
        xaxis_title="memory_gb",
        yaxis_title="accuracy",
    )
    text = (
        "The agent under each profile (same space, benchmarks and limit). Carbon-limited "
        "counts every evaluation at its recorded CO2, cached or not, so its budget means "
        "the same whatever the cache holds.\n\n" + md_table(table)
    )
    return text, [fig], table


@flow(name="ecocompress-study", log_prints=False)
def study_flow(
    which: str,
    params: RunParams,
    base: SearchSettings,
    policies: list[str] | None = None,
    seeds: list[int] | None = None,
    replay_path: str | None = None,
    carbon_budget: float | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run one study; log report.md/report.html/table.json to an MLflow run; return them."""
    if which not in STUDIES:
        raise UserError(f"unknown study {which!r}: allowed {', '.join(STUDIES)}")
    seeds = seeds or [0]
    if which == "rq1":
        text, figs, table = rq1(
            params, base, list(policies or RQ1_POLICIES), seeds, quiet, replay_path
        )
    elif which == "rq2":
        text, figs, table = rq2(params, base, quiet)
    elif which == "rq3":
        text, figs, table = rq3(params, base, quiet)
    else:
        text, figs, table = rq4(params, base, quiet, carbon_budget)
    return write_study_report(which, TITLES[which], text, figs, table, params, replay_path)
