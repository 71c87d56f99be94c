"""Search policies: given what has been evaluated, which candidate to evaluate next.

Every policy is a pure function of the search's history (plus its seed), so a search
resumed from a checkpoint makes exactly the decisions it would have made without the
interruption, and a recorded grid can replay any policy (tests/perf/planner_replay.py).

- ``agent``: the explicit, deterministic policy (``AgentPolicy``'s docstring lists its rules).
- ``optuna``: Optuna's multi-objective TPE or NSGA-II sampler (agents/sampler.py).
- ``random``: a seeded permutation of the space. ``grid``: the space in grid order.
- ``llm``: a LangChain chat model proposes (agents/llm.py).
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from ecocompress.agents.settings import SearchSettings
from ecocompress.agents.space import Space
from ecocompress.metrics.recommend import Constraints
from ecocompress.metrics.types import Objective
from ecocompress.tasks.specs import CandidateSpec

POLICIES = ("agent", "optuna", "random", "grid", "llm")


def _lim(limit: int | None) -> float:
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

    @classmethod
    def from_settings(cls, settings: SearchSettings, history: list[dict[str, Any]]) -> SearchView:
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
        return {r["key"] for r in self.history}

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
        usable = [r for r in rows if all(_finite(r.get(o.name)) for o in self.objectives)]
        if not usable:
            return []
        front = pareto_front(pd.DataFrame(usable), self.objectives)
        return [r for r, on in zip(usable, front["on_front"], strict=True) if on]

    def possible_frontier(self) -> list[dict[str, Any]]:
        """Ok rows that no other row beats beyond noise (``metrics.pareto.beats_beyond_noise``:
        accuracy-type objectives and log perplexity compared with ``z`` combined standard
        errors, costs as measured)."""
        from ecocompress.metrics.pareto import beats_beyond_noise

        rows = [r for r in self.ok_rows() if all(_finite(r.get(o.name)) for o in self.objectives)]
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
            vals = [float(r[col]) for r in rows if _finite(r.get(col))]
            if not vals or not _finite(row.get(col)):
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
        if not (_finite(row.get("accuracy")) and _finite(ref.get("accuracy"))):
            return "ok"  # a rung that measured no accuracy benchmark
        floor = ref["accuracy"] - drop
        se = math.hypot(_se(row), _se(ref))
        gap = row["accuracy"] - floor
        if gap >= self.z * se:
            return "ok"
        if gap < -self.z * se:
            return "bad"
        return "close"

    def can_reevaluate(self, row: dict[str, Any]) -> bool:
        return self.max_limit is not None and _lim(row.get("limit")) < self.max_limit

    def next_limit(self, row: dict[str, Any]) -> int:
        assert self.max_limit is not None
        return min(self.max_limit, 2 * int(row.get("limit") or self.max_limit))


def quality(view: SearchView, row: dict[str, Any]) -> str:
    """The row's quality objectives as text, e.g. ``accuracy 0.412`` or ``perplexity/wikitext2 22.6``."""
    parts = [
        f"{o.name} {float(row[o.name]):.4g}"
        for o in view.objectives
        if (o.name.startswith("accuracy") or o.name.startswith("perplexity"))
        and _finite(row.get(o.name))
    ]
    return ", ".join(parts) or "no quality measured"


def fidelity(row: dict[str, Any]) -> tuple[int, float]:
    """Order of evaluations of one candidate: rung of the ladder, then items per task."""
    return (int(row.get("rung") or 0), _lim(row.get("limit")))


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(float(v))
    except (TypeError, ValueError):
        return False


def _se(row: dict[str, Any], metric: str = "accuracy") -> float:
    v = row.get(metric.replace("accuracy", "accuracy_stderr", 1))
    return float(v) if _finite(v) else 0.0


class Policy:
    name = "policy"

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        raise NotImplementedError


class GridPolicy(Policy):
    """The static sweep: the space in grid order."""

    name = "grid"

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        tried = view.tried()
        for i, c in enumerate(view.space.candidates):
            if c.canonical() not in tried:
                return proposal(c, self.name, f"grid position {i + 1}", "explore", view.base_limit)
        return None


class RandomPolicy(Policy):
    """A static random order: a permutation of the space fixed by the seed."""

    name = "random"

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        order = list(view.space.candidates)
        random.Random(view.seed).shuffle(order)
        tried = view.tried()
        for i, c in enumerate(order):
            if c.canonical() not in tried:
                return proposal(
                    c,
                    self.name,
                    f"position {i + 1} of the seed-{view.seed} permutation",
                    "explore",
                    view.base_limit,
                )
        return None


class AgentPolicy(Policy):
    """The deterministic agent. Rules, in order of priority:

    1. Close calls first: a candidate whose accuracy is within ``z`` standard errors of
       the floor (reference accuracy - ``--accuracy-drop``) is re-evaluated with twice the
       items (up to ``max_limit``) before it is trusted either way.
    2. Push: take one step more aggressive along one axis from an acceptable candidate
       that could be on the frontier (no other candidate beats it beyond ``z`` standard
       errors of accuracy at no higher cost). Axis by axis - every bits push first (the only axis that shrinks dense
       storage), then pruning method, then sparsity / pattern - and within an axis from the
       frontier candidate with the best weighted score first.
    3. Back off: from a candidate that lost too much accuracy, take one step milder.
    4. Lateral: from frontier candidates, another pruning method or 8-bit backend at the
       same rung.

    Never proposes a candidate already evaluated; never one that compresses at least as
    hard as a candidate that lost too much accuracy (same method); never one whose
    quantization already broke a memory or latency limit (pruning keeps dense storage,
    so it does not lower either).
    """

    name = "agent"

    def propose(self, view: SearchView) -> dict[str, Any] | None:
        space = view.space
        tried = view.tried()
        ok = view.ok_rows()
        bad = [r for r in ok if view.verdict(r) == "bad"]

        # 1. close calls
        for r in sorted(ok, key=lambda r: space.index(space.parse(r["key"]))):
            if view.verdict(r) == "close" and view.can_reevaluate(r):
                ref = view.reference_row()
                assert ref is not None
                return proposal(
                    space.parse(r["key"]),
                    self.name,
                    f"close call: accuracy {r['accuracy']:.3f} ± {_se(r):.3f} is within "
                    f"{view.z:g} stderr of the floor {ref['accuracy'] - view.constraints.accuracy_drop:.3f}; "
                    f"re-evaluate on {view.next_limit(r)} items before trusting it",
                    "reevaluate",
                    view.next_limit(r),
                )

        blocked = self._blocked(view, bad)

        def usable(c: CandidateSpec) -> str | None:
            k = c.canonical()
            if k in tried:
                return None
            return None if k in blocked else k

        # expand from every candidate that could be on the frontier: differences inside the
        # accuracy stderr do not decide where the search goes next
        acceptable = [r for r in view.possible_frontier() if view.verdict(r) != "bad"]
        acceptable.sort(key=lambda r: (-view.score(r), space.index(space.parse(r["key"]))))

        # 2. push from the acceptable frontier, axis by axis: every bits push before any
        #    pruning push (bits is the only axis that shrinks dense storage)
        for axis in ("bits", "method", "shape"):
            for r in acceptable:
                for m in space.moves(space.parse(r["key"])):
                    if m.kind != "push" or m.axis != axis or not usable(m.dst):
                        continue
                    return proposal(
                        m.dst,
                        self.name,
                        f"push {m.axis} from frontier candidate {r['candidate']} "
                        f"({quality(view, r)}{self._within(view, r)})",
                        "push",
                        view.base_limit,
                    )
        # 3. back off from candidates that lost too much accuracy, newest first
        for r in reversed([r for r in view.history if r["key"] in {b["key"] for b in bad}]):
            for m in space.moves(space.parse(r["key"])):
                if m.kind == "back" and usable(m.dst):
                    return proposal(
                        m.dst,
                        self.name,
                        f"back off: {r['candidate']} fell below the accuracy floor "
                        f"({quality(view, r)}); milder {m.axis}",
                        "back-off",
                        view.base_limit,
                    )
        # 4. lateral moves (and remaining milder steps) around the acceptable frontier
        for r in acceptable:
            for m in space.moves(space.parse(r["key"])):
                if m.kind != "push" and usable(m.dst):
                    return proposal(
                        m.dst,
                        self.name,
                        f"{m.kind} {m.axis} from frontier candidate {r['candidate']}",
                        m.kind,
                        view.base_limit,
                    )
        return None

    @staticmethod
    def _within(view: SearchView, r: dict[str, Any]) -> str:
        ref = view.reference_row()
        if ref is None or view.constraints.accuracy_drop is None or r["key"] == ref["key"]:
            return ""
        if not (_finite(r.get("accuracy")) and _finite(ref.get("accuracy"))):
            return ""
        return (
            f", within {view.constraints.accuracy_drop * 100:g} pp of the reference "
            f"{ref['accuracy']:.3f}"
        )

    @staticmethod
    def _blocked(view: SearchView, bad: list[dict[str, Any]]) -> dict[str, str]:
        """Untried candidates the agent will not propose, with why."""
        space = view.space
        out: dict[str, str] = {}
        c = view.constraints
        over = [
            r
            for r in view.ok_rows()
            if (c.memory_limit_gb is not None and r["memory_gb"] > c.memory_limit_gb)
            or (c.latency_limit_ms is not None and r["latency_ms"] > c.latency_limit_ms)
        ]
        for cand in space.candidates:
            k = cand.canonical()
            for b in bad:
                if space.at_least_as_aggressive(cand, space.parse(b["key"])):
                    out[k] = f"compresses at least as hard as {b['candidate']}"
                    break
            else:
                for r in over:
                    q = space.parse(r["key"]).quant
                    if cand.quant.canonical() == q.canonical():
                        out[k] = f"same quantization as {r['candidate']}, over a limit"
                        break
        return out


def make_policy(name: str, *, sampler: str = "tpe", chat_model: Any = None) -> Policy:
    if name == "agent":
        return AgentPolicy()
    if name == "grid":
        return GridPolicy()
    if name == "random":
        return RandomPolicy()
    if name == "optuna":
        from ecocompress.agents.sampler import OptunaPolicy

        return OptunaPolicy(sampler)
    if name == "llm":
        from ecocompress.agents.llm import LLMPolicy

        if chat_model is None:
            raise ValueError("policy llm needs a chat model")
        return LLMPolicy(chat_model)
    raise ValueError(f"unknown policy {name!r}: allowed {', '.join(POLICIES)}")
