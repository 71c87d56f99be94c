"""A fake chat model with structured output, for tests: it answers from a list, the way
``with_structured_output(schema, include_raw=True)`` of a real model does (a parsed
answer, or ``parsed=None`` with the parsing error)."""

from __future__ import annotations

import json
from typing import Any

from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from pydantic import ValidationError


class FakeStructuredChatModel(FakeListChatModel):
    """``responses``: JSON texts; each call of the structured runnable takes the next one
    and validates it against the schema. ``prompts`` records what it was asked."""

    prompts: list[Any] = []

    def with_structured_output(self, schema: Any, *, include_raw: bool = False, **kwargs: Any):
        def run(value: Any) -> Any:
            self.prompts.append(value)
            text = self.responses[self.i % len(self.responses)]
            self.i += 1
            try:
                parsed, err = schema.model_validate(json.loads(text)), None
            except (ValidationError, ValueError) as exc:
                parsed, err = None, exc
            assert include_raw, "the llm policy asks with include_raw=True"
            return {"raw": AIMessage(content=text), "parsed": parsed, "parsing_error": err}

        return RunnableLambda(run)


def invalid_answers() -> FakeStructuredChatModel:
    """``--llm python:tests.agents.fake_chat:invalid_answers``: every answer fails the schema."""
    return FakeStructuredChatModel(responses=['{"bits": 3, "method": "none"}'])
