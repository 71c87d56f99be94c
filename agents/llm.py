"""The ``llm`` policy: a LangChain chat model proposes the next candidate as a typed answer.

The answer's schema is a pydantic model built from the search space (``answer_schema``):
each field an enum of the values the space's candidates take, plus a free-text reason.
The policy asks through ``chat_model.with_structured_output(schema, include_raw=True)``
where the model supports it (API models, ``agents/local_chat.py``); a model without it
(``FakeListChatModel`` in tests) is asked for JSON whose text LangChain's
``PydanticOutputParser`` validates against the same schema. An answer that does not
validate, or names a combination outside the space, raises ``InvalidProposal``: the graph
shows the error to the model, asks again, and falls back to the ``agent`` policy after
``max_llm_attempts`` invalid answers. ``llm_counts`` counts both from the decisions.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from ecocompress.agents.policies import Policy
from ecocompress.agents.space import Space, candidate_from_fields
from ecocompress.agents.view import SearchView, proposal


class InvalidProposal(ValueError):
    """A proposal that cannot be used, with the reason shown to the proposer."""


REASON_MAX_CHARS = 300
UNTRIED_SHOWN = 6  # unevaluated candidates listed in the prompt, in the space's order


def answer_schema(space: Space) -> type[BaseModel]:
    """The typed answer for ``space``: enums of the values its candidates take.

    Every value of an enum occurs in some candidate, but not every combination is one
    (bits 16 has backend ``none``; N:M patterns fix the sparsity): ``to_proposal`` checks.
    """
    cands = space.candidates

    def enum(values: list[Any], what: str) -> Any:
        return (Literal[tuple(values)], Field(description=what))  # type: ignore[valid-type]

    patterns = sorted({c.prune.pattern for c in cands}, key=lambda p: (p != "unstructured", p))
    return create_model(
        "CandidateAnswer",
        __config__=ConfigDict(extra="forbid"),
        bits=enum(sorted({c.quant.bits for c in cands}, reverse=True), "weight bits"),
        method=enum(list(dict.fromkeys(c.prune.method for c in cands)), "pruning method"),
        sparsity=enum(sorted({c.prune.sparsity for c in cands}), "fraction of weights pruned"),
        pattern=enum(patterns, "pruning pattern: unstructured or N:M"),
        backend=enum(sorted({c.quant.backend for c in cands}), "8/4-bit backend (16: none)"),
        reason=(str, Field(max_length=REASON_MAX_CHARS, description="why this candidate next")),
    )


def short_error(exc: BaseException) -> str:
    """One line for the model's feedback: the fields and what was wrong with them."""
    if isinstance(exc, ValidationError):
        return "; ".join(
            f"{'.'.join(str(x) for x in e['loc']) or 'answer'}: {e['msg']}" for e in exc.errors()
        )[:400]
    cause = exc.__cause__
    if isinstance(cause, ValidationError):
        return short_error(cause)
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:400]


def ask(chat_model: Any, schema: type[BaseModel], messages: list[tuple[str, str]]) -> BaseModel:
    """The chat model's answer as ``schema``, or ``InvalidProposal`` saying what was wrong."""
    try:
        structured = chat_model.with_structured_output(schema, include_raw=True)
    except NotImplementedError:
        structured = None
    if structured is not None:
        out = structured.invoke(messages)
        if out.get("parsing_error") is not None or out.get("parsed") is None:
            err = out.get("parsing_error")
            why = short_error(err) if err is not None else "no structured answer"
            raise InvalidProposal(f"answer does not match the schema ({why})")
        parsed = out["parsed"]
        return parsed if isinstance(parsed, schema) else schema.model_validate(parsed)
    from langchain_core.exceptions import OutputParserException
    from langchain_core.output_parsers import PydanticOutputParser

    msg = chat_model.invoke(messages)
    text = getattr(msg, "content", msg)
    text = text if isinstance(text, str) else json.dumps(text)
    try:
        return PydanticOutputParser(pydantic_object=schema).parse(text)
    except OutputParserException as exc:
        raise InvalidProposal(f"answer does not match the schema ({short_error(exc)})") from None


def to_proposal(answer: BaseModel, view: SearchView) -> dict[str, Any]:
    """The proposal of a schema-valid answer; ``InvalidProposal`` if it is not a candidate
    of the space (already evaluated ones are refused by the graph's validate node)."""
    a = answer.model_dump()
    try:
        c = candidate_from_fields(a["bits"], a["method"], a["sparsity"], a["pattern"], a["backend"])
    except ValueError as exc:
        raise InvalidProposal(f"answer is not a valid candidate: {short_error(exc)}") from None
    if c not in view.space:
        raise InvalidProposal(f"{c.label} is outside the search space")
    reason = a["reason"].strip() or "(no reason given)"
    return proposal(c, "llm", reason, "explore", view.base_limit)


def fields_of(c: Any) -> dict[str, Any]:
    """A candidate as the answer's fields (without the reason)."""
    return {
        "bits": c.quant.bits,
        "method": c.prune.method,
        "sparsity": c.prune.sparsity,
        "pattern": c.prune.pattern,
        "backend": c.quant.backend,
    }


class LLMPolicy(Policy):
    """A LangChain chat model proposes the next candidate as a typed answer (module doc)."""

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
                    **fields_of(c),
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
        tried = view.tried()
        untried = [fields_of(c) for c in space.candidates if c.canonical() not in tried]
        user = (
            f"Space: {json.dumps(space.as_dict())}\nGoals: {json.dumps(goals)}\n"
            f"Evaluated: {json.dumps(rows, default=str)}\n"
            f"Frontier: {json.dumps([r['candidate'] for r in view.frontier()])}\n"
            f"Some candidates not evaluated yet: {json.dumps(untried[:UNTRIED_SHOWN])}"
        )
        if view.pending:
            being = [fields_of(space.parse(p["key"])) for p in view.pending]
            user += f"\nAlready chosen for this round (do not choose again): {json.dumps(being)}"
        if feedback:
            user += f"\nYour previous answer was rejected: {feedback}"
        return [("system", sys_msg), ("human", user)]

    def propose(self, view: SearchView, feedback: str | None = None) -> dict[str, Any] | None:
        answer = ask(self.chat_model, answer_schema(view.space), self.prompt(view, feedback))
        return to_proposal(answer, view)


def llm_counts(decisions: list[dict[str, Any]]) -> dict[str, int]:
    """How the llm policy's answers went, counted from a search's decisions.

    ``llm_answers`` = ``llm_valid_answers`` + ``llm_invalid_answers``; every proposal of an
    ``llm`` search after the reference is either a valid answer or an ``llm_fallbacks``.
    """
    valid = sum(1 for d in decisions if d.get("event") == "propose" and d.get("policy") == "llm")
    invalid = sum(1 for d in decisions if d.get("event") == "rejected" and d.get("policy") == "llm")
    fallbacks = sum(
        1 for d in decisions if d.get("event") == "propose" and d.get("fallback_from") == "llm"
    )
    return {
        "llm_answers": valid + invalid,
        "llm_valid_answers": valid,
        "llm_invalid_answers": invalid,
        "llm_fallbacks": fallbacks,
    }
