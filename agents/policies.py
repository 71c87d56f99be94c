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

import random
from typing import Any

from ecocompress.agents.view import (
    ProposalKind,
    SearchView,
    finite,
    proposal,
    quality,
    stderr_of,
)
from ecocompress.tasks.specs import CandidateSpec

POLICIES = ("agent", "optuna", "random", "grid", "llm")


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
            if (
                view.verdict(r) == "close"
                and view.can_reevaluate(r)
                and r["key"] not in view.pending_keys()
            ):
                ref = view.reference_row()
                assert ref is not None
                return proposal(
                    space.parse(r["key"]),
                    self.name,
                    f"close call: accuracy {r['accuracy']:.3f} ± {stderr_of(r):.3f} is within "
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
                        ProposalKind.BACK_OFF if m.kind == "back" else ProposalKind.EXPLORE,
                        view.base_limit,
                    )
        return None

    @staticmethod
    def _within(view: SearchView, r: dict[str, Any]) -> str:
        ref = view.reference_row()
        if ref is None or view.constraints.accuracy_drop is None or r["key"] == ref["key"]:
            return ""
        if not (finite(r.get("accuracy")) and finite(ref.get("accuracy"))):
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
