"""The ``llm`` policy: a LangChain chat model proposes the next candidate as JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from ecocompress.agents.policies import Policy
from ecocompress.agents.space import candidate_from_fields
from ecocompress.agents.view import SearchView, proposal
from ecocompress.tasks.specs import DEFAULT_QUANT_BACKEND


class InvalidProposal(ValueError):
    """A proposal that cannot be used, with the reason shown to the proposer."""


LLM_FIELDS = ("bits", "method", "sparsity", "pattern", "backend", "reason")


class LLMPolicy(Policy):
    """A LangChain chat model proposes the next candidate as JSON.

    The answer must hold one JSON object with ``bits``, ``method``, ``sparsity``,
    ``pattern`` (and optionally ``backend``, ``reason``). Parsing errors raise
    ``InvalidProposal``; the graph shows the error to the model and asks again, and falls
    back to the ``agent`` policy (logging why) when the answers stay invalid.
    """

    name = "llm"

    def __init__(self, chat_model: Any) -> None:
        self.chat_model = chat_model

    def prompt(self, view: SearchView, feedback: str | None) -> list[tuple[str, str]]:
        space = view.space
        rows = []
        for r in view.latest().values():
            c = space.parse(r["key"])
            rows.append(
                {
                    "bits": c.quant.bits,
                    "backend": c.quant.backend,
                    "method": c.prune.method,
                    "sparsity": c.prune.sparsity,
                    "pattern": c.prune.pattern,
                    "status": r.get("status"),
                    **{
                        k: r.get(k)
                        for k in (
                            "accuracy",
                            "accuracy_stderr",
                            "memory_gb",
                            "latency_ms",
                            "energy_kwh",
                        )
                    },
                }
            )
        cons = view.constraints
        goals = {
            "objectives": [str(o) for o in view.objectives],
            "weights": dict(view.weights),
            "accuracy_drop": cons.accuracy_drop,
            "memory_limit_gb": cons.memory_limit_gb,
            "latency_limit_ms": cons.latency_limit_ms,
        }
        sys_msg = (
            "You choose the next compression candidate of a language model to evaluate. "
            "Answer with exactly one JSON object with keys bits, method, sparsity, pattern, "
            "backend and reason. Choose a candidate of the space that has not been evaluated."
        )
        user = (
            f"Space: {json.dumps(space.as_dict())}\nGoals: {json.dumps(goals)}\n"
            f"Evaluated: {json.dumps(rows, default=str)}\n"
            f"Frontier: {json.dumps([r['candidate'] for r in view.frontier()])}"
        )
        if feedback:
            user += f"\nYour previous answer was rejected: {feedback}"
        return [("system", sys_msg), ("human", user)]

    def propose(self, view: SearchView, feedback: str | None = None) -> dict[str, Any] | None:
        msg = self.chat_model.invoke(self.prompt(view, feedback))
        text = getattr(msg, "content", msg)
        if not isinstance(text, str):
            text = json.dumps(text)
        return parse_llm_answer(text, view)


def parse_llm_answer(text: str, view: SearchView) -> dict[str, Any]:
    """Turn a chat model's answer into a proposal, or raise ``InvalidProposal``."""
    m = re.search(r"\{.*\}", text, flags=re.S)
    if not m:
        raise InvalidProposal(f"no JSON object in the answer {text[:120]!r}")
    try:
        obj = json.loads(m.group(0))
    except json.JSONDecodeError as exc:
        raise InvalidProposal(f"answer is not valid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise InvalidProposal("answer is not a JSON object")
    missing = [k for k in ("bits", "method") if k not in obj]
    if missing:
        raise InvalidProposal(f"answer lacks {', '.join(missing)}")
    try:
        c = candidate_from_fields(
            int(obj["bits"]),
            str(obj["method"]),
            float(obj.get("sparsity", 0.0) or 0.0),
            str(obj.get("pattern", "unstructured") or "unstructured"),
            str(obj.get("backend") or DEFAULT_QUANT_BACKEND),
        )
    except (ValueError, TypeError) as exc:
        raise InvalidProposal(
            f"answer is not a valid candidate: {str(exc).splitlines()[0]}"
        ) from None
    reason = str(obj.get("reason", "")).strip()[:300] or "(no reason given)"
    return proposal(c, "llm", reason, "explore", view.base_limit)
