"""Pick one candidate for a deployment: hard constraints first, then a weighted
scalarization over the feasible Pareto frontier.

The frontier does not depend on weights; weights only choose a point on it. Memory and
latency limits are hard constraints (a candidate over a limit is never recommended), and
so is the accuracy drop against the reference when it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ecocompress.metrics.types import DEFAULT_DIRECTIONS, Objective, score_metric
from ecocompress.tasks.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

# Short names users type in --weights, and the results-table columns they mean.
WEIGHT_ALIASES: dict[str, str] = {
    "accuracy": "accuracy",
    "energy": "energy_kwh",
    "carbon": "co2_kg",
    "co2": "co2_kg",
    "latency": "latency_ms",
    "memory": "memory_gb",
    "throughput": "throughput_tps",
}


@dataclass(frozen=True)
class Profile:
    """A deployment profile: scalarization weights plus hard limits."""

    name: str
    weights: Mapping[str, float]
    memory_limit_gb: float | None = None
    latency_limit_ms: float | None = None
    description: str = ""


PROFILES: dict[str, Profile] = {
    "edge": Profile(
        "edge",
        {"accuracy": 0.4, "memory_gb": 0.4, "latency_ms": 0.2},
        memory_limit_gb=1.0,
        description="small device: weights held <= 1 GB, memory weighs as much as accuracy",
    ),
    "cloud": Profile(
        "cloud",
        {"accuracy": 0.6, "latency_ms": 0.3, "energy_kwh": 0.1},
        description="server: accuracy first, then latency",
    ),
    "balanced": Profile(
        "balanced",
        {"accuracy": 0.25, "latency_ms": 0.25, "memory_gb": 0.25, "energy_kwh": 0.25},
        description="equal weights on accuracy, latency, memory and energy",
    ),
}


def resolve_goals(
    profile: str | None,
    weights: dict[str, float] | None,
    memory_limit_gb: float | None,
    latency_limit_ms: float | None,
) -> tuple[dict[str, float], float | None, float | None]:
    """Weights and limits from the profile, overridden by what the user gave."""
    if profile is not None and profile not in PROFILES:
        raise UserError(f"unknown profile {profile!r}: allowed {', '.join(PROFILES)}")
    p = PROFILES[profile] if profile else PROFILES["balanced"]
    return (
        dict(weights) if weights else dict(p.weights),
        memory_limit_gb if memory_limit_gb is not None else p.memory_limit_gb,
        latency_limit_ms if latency_limit_ms is not None else p.latency_limit_ms,
    )


def parse_weights(text: str) -> dict[str, float]:
    """``"accuracy=0.5,energy=0.3,latency=0.2"`` -> column weights summing to 1.

    Raises:
        UserError: malformed term, unknown metric, negative weight, all zero, repeats.
    """
    out: dict[str, float] = {}
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        name, sep, val = (p.strip() for p in term.partition("="))
        if not sep:
            raise UserError(
                f"weights term {term!r} is malformed: use name=value, e.g. accuracy=0.5"
            )
        col = WEIGHT_ALIASES.get(name, name)
        if col not in DEFAULT_DIRECTIONS and not score_metric(col):
            allowed = ", ".join(sorted(set(WEIGHT_ALIASES) | set(DEFAULT_DIRECTIONS)))
            raise UserError(f"weights name unknown metric {name!r}: allowed {allowed}")
        try:
            w = float(val)
        except ValueError:
            raise UserError(f"weight {val!r} of {name!r} is not a number") from None
        if not (w >= 0):
            raise UserError(f"weight of {name!r} is {w}: weights must be >= 0")
        if col in out:
            raise UserError(f"weights name {col!r} twice")
        out[col] = w
    total = sum(out.values())
    if not out or total <= 0:
        raise UserError(f"weights {text!r} are empty or all zero")
    return {k: v / total for k, v in out.items()}


@dataclass
class Constraints:
    """Hard limits for the recommendation (and the agent's goals)."""

    memory_limit_gb: float | None = None
    latency_limit_ms: float | None = None
    accuracy_drop: float | None = None  # absolute, e.g. 0.02 for 2 percentage points
    reference_accuracy: float | None = None

    def violations(self, row: Mapping[str, Any]) -> list[str]:
        out = []
        if self.memory_limit_gb is not None and row["memory_gb"] > self.memory_limit_gb:
            out.append(f"memory {row['memory_gb']:.3f} GB > {self.memory_limit_gb:g} GB")
        if self.latency_limit_ms is not None and row["latency_ms"] > self.latency_limit_ms:
            out.append(f"latency {row['latency_ms']:.1f} ms > {self.latency_limit_ms:g} ms")
        if self.accuracy_drop is not None and self.reference_accuracy is not None:
            floor = self.reference_accuracy - self.accuracy_drop
            if row["accuracy"] < floor:
                out.append(f"accuracy {row['accuracy']:.3f} < reference - drop = {floor:.3f}")
        return out


@dataclass
class Recommendation:
    label: str | None
    row: dict[str, Any] | None
    reason: str
    ranking: list[dict[str, Any]] = field(default_factory=list)  # feasible frontier, best first
    infeasible: dict[str, list[str]] = field(default_factory=dict)


def recommend(
    df: pd.DataFrame,
    weights: Mapping[str, float],
    constraints: Constraints,
    objectives: list[Objective] | None = None,
) -> Recommendation:
    """Choose the candidate with the best weighted score on the feasible frontier.

    Each weighted metric is min-max normalised over the feasible ok rows (1 = best), the
    score is the weighted sum. The frontier is over ``objectives`` (default: the weighted
    metrics with their natural directions).
    """
    from ecocompress.metrics.pareto import pareto_front

    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if not len(ok):
        return Recommendation(None, None, "no candidate finished")
    infeasible: dict[str, list[str]] = {}
    keep = []
    for i, row in ok.iterrows():
        v = constraints.violations(row)
        if v:
            infeasible[str(row["candidate"])] = v
        else:
            keep.append(i)
    feas = ok.loc[keep]
    if not len(feas):
        return Recommendation(
            None, None, "no candidate satisfies the constraints", infeasible=infeasible
        )
    objs = objectives or [
        Objective(name=k, direction=DEFAULT_DIRECTIONS.get(k, "max")) for k in weights
    ]
    front = pareto_front(feas, objs)
    front = front[front["on_front"] == True]  # noqa: E712
    score = np.zeros(len(front))
    for col, w in weights.items():
        if col not in front.columns:
            raise UserError(f"weights name {col!r}, which the results table does not have")
        vals = feas[col].to_numpy(dtype=float)
        lo, hi = float(np.nanmin(vals)), float(np.nanmax(vals))
        x = front[col].to_numpy(dtype=float)
        good = np.ones_like(x) if hi == lo else (x - lo) / (hi - lo)
        if DEFAULT_DIRECTIONS.get(col, "max") == "min":
            good = 1 - good
        score += w * good
    order = np.argsort(-score, kind="stable")
    ranking = []
    for j in order:
        r = front.iloc[j]
        ranking.append(
            {
                "candidate": r["candidate"],
                "score": float(score[j]),
                "accuracy": _num(r.get("accuracy")),  # absent when only perplexity ran
                "accuracy_stderr": _num(r.get("accuracy_stderr")),
                **{c: float(r[c]) for c in weights if c != "accuracy"},
            }
        )
    best = front.iloc[order[0]]
    reason = (
        f"best weighted score {score[order[0]]:.3f} of {len(front)} feasible frontier candidates"
    )
    if len(ranking) > 1:
        second = ranking[1]
        se = _num(best.get("accuracy_stderr")) or 0.0
        se2 = second["accuracy_stderr"] or 0.0
        acc, acc2 = _num(best.get("accuracy")), second["accuracy"]
        if acc is not None and acc2 is not None and abs(acc2 - acc) <= (se * se + se2 * se2) ** 0.5:
            reason += (
                f"; runner-up {second['candidate']} (score {second['score']:.3f}) has an "
                "accuracy within one standard error"
            )
    return Recommendation(
        str(best["candidate"]),
        {k: _plain(v) for k, v in best.items()},
        reason,
        ranking,
        infeasible,
    )


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v
