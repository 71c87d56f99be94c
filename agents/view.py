"""What a policy sees and what it returns: the ``SearchView`` of a search (space, history,
goals, parsed from ``SearchSettings``) and proposals with a typed ``ProposalKind``."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ecocompress.agents.settings import SearchSettings
from ecocompress.agents.space import Space
from ecocompress.metrics.recommend import Constraints
from ecocompress.metrics.types import Objective, is_score
from ecocompress.tasks.specs import CandidateSpec


def limit_order(limit: int | None) -> float:
    """Order of fidelities: ``None`` (the whole benchmark) is the largest."""
    return math.inf if limit is None else float(limit)


class ProposalKind(str, Enum):
    """Why a candidate is proposed (the ``decision_kind`` tag of its run)."""

    REFERENCE = "reference"  # evaluated first: the floor and recommendation are against it
    EXPLORE = "explore"  # a new point of the space (samplers, static orders, lateral moves)
    PUSH = "push"  # one axis more aggressive than an acceptable frontier candidate
    BACK_OFF = "back-off"  # one step milder than a candidate below the accuracy floor
    REEVALUATE = "reevaluate"  # a close call again, on more items
    PROMOTE = "promote"  # a multi-fidelity race survivor, to the next rung


def proposal(
    c: CandidateSpec, policy: str, reason: str, kind: str | ProposalKind, limit: int | None
) -> dict[str, Any]:
    """A proposal as the decision graph stores it (JSON types: the checkpoint holds it).

    Raises:
        ValueError: ``kind`` is not a ``ProposalKind`` (a programmer's error).
    """
    return {
        "key": c.canonical(),
        "label": c.label,
        "limit": limit,
        "policy": policy,
        "reason": reason,
        "kind": ProposalKind(kind).value,
    }


_S = SearchSettings.model_fields  # SearchView's defaults are the settings' own


@dataclass
class SearchView:
    """What a policy sees: the space, every observation so far and the goals, parsed from
    ``SearchSettings`` (``from_settings``); tests build one directly."""

    space: Space
    history: list[dict[str, Any]]
    objectives: list[Objective]
    constraints: Constraints = field(default_factory=Constraints)
    weights: Mapping[str, float] = field(default_factory=_S["weights"].default_factory)
    seed: int = _S["seed"].default
    base_limit: int | None = _S["base_limit"].default
    max_limit: int | None = _S["max_limit"].default  # re-evaluate close calls up to this
    z: float = _S["z"].default  # standard errors that make a difference "beyond noise"
    # multi-fidelity ladder (agents/fidelity.py); None: every evaluation at one fidelity
    fidelities: list[dict[str, Any]] | None = _S["fidelities"].default
    # proposals of the batch being filled (``--batch``): chosen, not evaluated yet
    pending: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_settings(
        cls,
        settings: SearchSettings,
        history: list[dict[str, Any]],
        pending: list[dict[str, Any]] | None = None,
    ) -> SearchView:
        from ecocompress.metrics.types import parse_objectives

        return cls(
            space=Space.from_dict(settings.space),
            history=history,
            objectives=parse_objectives(settings.objectives),
            constraints=Constraints(
                memory_limit_gb=settings.memory_limit_gb,
                latency_limit_ms=settings.latency_limit_ms,
                accuracy_drop=settings.accuracy_drop,
            ),
            weights=settings.weights,
            seed=settings.seed,
            base_limit=settings.base_limit,
            max_limit=settings.max_limit,
            z=settings.z,
            fidelities=settings.fidelities,
            pending=list(pending or []),
        )

    def latest(self) -> dict[str, dict[str, Any]]:
        """Per candidate, the observation at the highest fidelity (latest on ties)."""
        out: dict[str, dict[str, Any]] = {}
        for row in self.history:
            k = row["key"]
            if k not in out or fidelity(row) >= fidelity(out[k]):
                out[k] = row
        return out

    def tried(self) -> set[str]:
        """Candidates evaluated, or proposed in the batch being filled."""
        return {r["key"] for r in self.history} | self.pending_keys()

    def pending_keys(self) -> set[str]:
        return {p["key"] for p in self.pending}

    def ok_rows(self) -> list[dict[str, Any]]:
        """Ok rows at their highest fidelity; with a ladder, only those at the top rung."""
        rows = [r for r in self.latest().values() if r.get("status") == "ok"]
        if self.fidelities:
            top = len(self.fidelities) - 1
            rows = [r for r in rows if int(r.get("rung") or 0) == top]
        return rows

    def reference_row(self) -> dict[str, Any] | None:
        r = self.latest().get(self.space.reference().canonical())
        return r if r is not None and r.get("status") == "ok" else None

    def frontier(self) -> list[dict[str, Any]]:
        """Ok rows on the Pareto front of the objectives."""
        import pandas as pd

        from ecocompress.metrics.pareto import pareto_front

        rows = self.ok_rows()
        if not rows:
            return []
        usable = [r for r in rows if all(finite(r.get(o.name)) for o in self.objectives)]
        if not usable:
            return []
        front = pareto_front(pd.DataFrame(usable), self.objectives)
        return [r for r, on in zip(usable, front["on_front"], strict=True) if on]

    def possible_frontier(self) -> list[dict[str, Any]]:
        """Ok rows that no other row beats beyond noise (``metrics.pareto.beats_beyond_noise``:
        accuracy-type objectives and log perplexity compared with ``z`` combined standard
        errors, costs as measured)."""
        from ecocompress.metrics.pareto import beats_beyond_noise

        rows = [r for r in self.ok_rows() if all(finite(r.get(o.name)) for o in self.objectives)]
        return [
            b
            for b in rows
            if not any(
                beats_beyond_noise(a, b, self.objectives, self.z) for a in rows if a is not b
            )
        ]

    def score(self, row: dict[str, Any]) -> float:
        """Weighted score in [0, 1] (1 = best) normalised over the ok rows."""
        from ecocompress.metrics.types import DEFAULT_DIRECTIONS

        rows = self.ok_rows()
        s = 0.0
        for col, w in self.weights.items():
            vals = [float(r[col]) for r in rows if finite(r.get(col))]
            if not vals or not finite(row.get(col)):
                continue
            lo, hi = min(vals), max(vals)
            g = 1.0 if hi == lo else (float(row[col]) - lo) / (hi - lo)
            s += w * (1 - g if DEFAULT_DIRECTIONS.get(col, "max") == "min" else g)
        return s

    def verdict(self, row: dict[str, Any]) -> str:
        """``ok``, ``bad`` or ``close``: the candidate's accuracy against the floor
        (reference - accuracy drop), beyond noise or within ``z`` standard errors."""
        ref = self.reference_row()
        drop = self.constraints.accuracy_drop
        if ref is None or drop is None or row["key"] == ref["key"]:
            return "ok"
        if not (finite(row.get("accuracy")) and finite(ref.get("accuracy"))):
            return "ok"  # a rung that measured no accuracy benchmark
        floor = ref["accuracy"] - drop
        se = math.hypot(stderr_of(row), stderr_of(ref))
        gap = row["accuracy"] - floor
        if gap >= self.z * se:
            return "ok"
        if gap < -self.z * se:
            return "bad"
        return "close"

    def can_reevaluate(self, row: dict[str, Any]) -> bool:
        return self.max_limit is not None and limit_order(row.get("limit")) < self.max_limit

    def next_limit(self, row: dict[str, Any]) -> int:
        assert self.max_limit is not None
        return min(self.max_limit, 2 * int(row.get("limit") or self.max_limit))


def quality(view: SearchView, row: dict[str, Any]) -> str:
    """The row's quality objectives as text, e.g. ``accuracy 0.412`` or ``perplexity/wikitext2 22.6``."""
    parts = [
        f"{o.name} {float(row[o.name]):.4g}"
        for o in view.objectives
        if is_score(o.name) and finite(row.get(o.name))
    ]
    return ", ".join(parts) or "no quality measured"


def fidelity(row: dict[str, Any]) -> tuple[int, float]:
    """Order of evaluations of one candidate: rung of the ladder, then items per task."""
    return (int(row.get("rung") or 0), limit_order(row.get("limit")))


def finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def stderr_of(row: dict[str, Any], metric: str = "accuracy") -> float:
    v = row.get(metric.replace("accuracy", "accuracy_stderr", 1))
    return float(v) if finite(v) else 0.0
