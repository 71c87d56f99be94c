"""The decision graph: stop conditions, the llm policy with a fake chat model, and
resuming a thread from the SQLite checkpointer."""

from __future__ import annotations

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langgraph.checkpoint.memory import InMemorySaver

from ecocompress.agents.graph import build_graph, run_search, sqlite_checkpointer
from ecocompress.agents.llm import llm_counts
from ecocompress.agents.settings import SearchSettings
from ecocompress.agents.space import Space
from ecocompress.tasks.errors import UserError
from tests.agents.fake_chat import FakeStructuredChatModel
from tests.agents.synthetic import SPACE, observe

OBJ = "accuracy:max,latency_ms:min,memory_gb:min"


def settings(**kw) -> SearchSettings:
    base = {"space": SPACE.as_dict(), "objectives": OBJ, "accuracy_drop": 0.05}
    return SearchSettings(**{**base, **kw})


def search(s: SearchSettings, thread: str = "t", chat_model=None, evaluate=observe):
    g = build_graph(InMemorySaver(), chat_model=chat_model)
    return run_search(g, thread, s, evaluate)


def proposals(values):
    return [d for d in values["decisions"] if d["event"] == "propose"]


def test_reference_first_then_policy_and_every_decision_recorded():
    v = search(settings(policy="grid", max_candidates=4))
    props = proposals(v)
    assert [p["policy"] for p in props] == ["reference", "grid", "grid", "grid"]
    assert props[0]["label"] == "bf16"
    for i, p in enumerate(props):
        assert p["index"] == i and p["reason"]
        assert p["state_seen"]["n_evaluations"] == i
    assert v["stop_reason"] == "candidate budget spent: 4 of 4 evaluations"
    assert v["decisions"][-1]["event"] == "stop"


@pytest.mark.parametrize(
    "kw,expect",
    [
        ({"max_minutes": 3}, "time budget spent: 3.0 of 3 minutes"),  # 60 s per evaluation
        ({"carbon_budget_kg": 0.0025}, "carbon budget spent"),  # 0.001 kg per evaluation
        ({"patience": 2}, "the frontier has not changed in 2 evaluations"),
    ],
)
def test_budgets_and_patience_stop_the_search(kw, expect):
    v = search(settings(policy="grid", **kw))
    assert expect in v["stop_reason"]
    n = len(v["history"])
    if "max_minutes" in kw:
        assert n == 3
    if "carbon_budget_kg" in kw:
        assert n == 3


def test_goals_met_when_a_feasible_candidate_holds_the_frontier():
    v = search(settings(policy="agent", memory_limit_gb=0.45, patience=2))
    assert v["stop_reason"].startswith("goals met:")


def test_exhausting_the_space_stops_with_that_reason():
    small = Space(bits=(16, 8), prune=("none",), sparsity=(), pattern=())
    v = search(settings(policy="grid", space=small.as_dict()))
    assert len(v["history"]) == 2
    assert v["stop_reason"] == (
        "no proposal can improve the frontier: every candidate of the space was evaluated"
    )


INT8 = (
    '{"bits": 8, "method": "none", "sparsity": 0.0, "pattern": "unstructured", '
    '"backend": "bitsandbytes", "reason": "int8 first"}'
)


def test_llm_invalid_then_valid_answer_is_retried_and_accepted():
    chat = FakeListChatModel(responses=["I would try int8.", INT8])
    v = search(settings(policy="llm", max_candidates=2), chat_model=chat)
    rejected = [d for d in v["decisions"] if d["event"] == "rejected"]
    assert len(rejected) == 1 and "answer does not match the schema" in rejected[0]["reason"]
    last = proposals(v)[-1]
    assert last["policy"] == "llm" and last["label"] == "int8-bitsandbytes"
    assert last["reason"] == "int8 first"
    assert llm_counts(v["decisions"]) == {
        "llm_answers": 2,
        "llm_valid_answers": 1,
        "llm_invalid_answers": 1,
        "llm_fallbacks": 0,
    }


def test_llm_invalid_structured_answers_are_counted_and_fall_back_to_the_agent():
    bf16 = INT8.replace('"bits": 8', '"bits": 16').replace("bitsandbytes", "none")
    chat = FakeStructuredChatModel(responses=['{"bits": 3, "method": "none"}', bf16])
    v = search(settings(policy="llm", max_candidates=3), chat_model=chat)
    reasons = [d["reason"] for d in v["decisions"] if d["event"] == "rejected"]
    assert "bits: Input should be 16, 8 or 4" in reasons[0]
    assert "bf16 was already evaluated" in reasons[1]
    props = proposals(v)
    assert [p["policy"] for p in props] == ["reference", "agent", "agent"]
    assert props[1]["reason"].startswith("fallback to agent after 2")
    assert all(p.get("fallback_from") == "llm" for p in props[1:])
    # the rejection is shown to the model when it is asked again
    assert "bits: Input should be 16, 8 or 4" in chat.prompts[1][1][1]
    assert llm_counts(v["decisions"]) == {
        "llm_answers": 4,
        "llm_valid_answers": 0,
        "llm_invalid_answers": 4,
        "llm_fallbacks": 2,
    }


def test_a_thread_resumes_from_the_sqlite_checkpoint_with_the_same_decisions(tmp_path):
    s = settings(policy="optuna", max_candidates=6, seed=3)
    full = search(s, "uninterrupted")

    class Crash(Exception):
        pass

    calls = []

    def crashing(p, i):
        calls.append(i)
        if len(calls) == 4:
            raise Crash  # mid-candidate: the 4th evaluation never returns
        return observe(p, i)

    db = str(tmp_path / "ck.sqlite")
    with pytest.raises(Crash):
        run_search(build_graph(sqlite_checkpointer(db)), "t1", s, crashing)
    resumed_calls = []

    def counting(p, i):
        resumed_calls.append(i)
        return observe(p, i)

    v = run_search(build_graph(sqlite_checkpointer(db)), "t1", s, counting)
    assert resumed_calls == [3, 4, 5]  # the pending proposal first, nothing finished again
    assert [h["key"] for h in v["history"]] == [h["key"] for h in full["history"]]
    with pytest.raises(UserError, match=r"other settings \(max_candidates, policy, seed differ\)"):
        run_search(build_graph(sqlite_checkpointer(db)), "t1", settings(max_candidates=7), observe)


def test_a_thread_keeps_its_evaluation_settings_and_refuses_others(tmp_path):
    """run_search stores ``run`` (the flows' RunParams) with the thread; a resume with
    other ones is refused naming them, one without them (an old caller) is not checked."""
    from ecocompress.agents.graph import thread_exists

    s = settings(policy="grid", max_candidates=2)
    run = {"benchmarks": ["commonsenseqa"], "country": "USA", "batch_size": 4}
    db = str(tmp_path / "ck.sqlite")
    v = run_search(build_graph(sqlite_checkpointer(db)), "t1", s, observe, run)
    assert v["run"] == run
    g = build_graph(sqlite_checkpointer(db))
    assert thread_exists(g, "t1", s, run) and thread_exists(g, "t1", s, None)
    with pytest.raises(UserError, match=r"\(batch_size, country differ\)"):
        thread_exists(g, "t1", s, {**run, "country": "FRA", "batch_size": 8})
