"""Batch proposals (``optimize --batch K``): K candidates per iteration, none twice within
or across batches, the budget counted with the batch, rungs judged only when complete,
and a batch killed mid-way (SIGKILL) resumed with only its unfinished members."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections import defaultdict
from pathlib import Path

import pytest
from langgraph.checkpoint.memory import InMemorySaver

from ecocompress.agents.graph import build_graph, run_search, sqlite_checkpointer
from ecocompress.agents.settings import SearchSettings
from tests.agents.synthetic import SPACE, observe

OBJ = "accuracy:max,latency_ms:min,memory_gb:min"
ROOT = Path(__file__).resolve().parents[2]


def settings(**kw) -> SearchSettings:
    base = {"space": SPACE.as_dict(), "objectives": OBJ, "accuracy_drop": 0.05}
    return SearchSettings(**{**base, **kw})


def batched(values) -> list[list[dict]]:
    """The proposals of each batch, in order (grouped by the decisions' ``batch_start``)."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for d in values["decisions"]:
        if d["event"] == "propose":
            groups[d["batch_start"]].append(d)
    return [groups[k] for k in sorted(groups)]


class Recorder:
    """``evaluate_batch`` that records each batch it is given (and evaluates with ``observe``)."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __call__(self, items, done) -> None:
        self.batches.append([i for i, _ in items])
        for i, p in reversed(items):  # out of order, as workers finish
            done(i, observe(p, i))


@pytest.mark.parametrize("policy", ["agent", "optuna", "random", "grid"])
def test_no_candidate_twice_within_or_across_batches(policy):
    s = settings(policy=policy, batch=3, max_candidates=len(SPACE))
    rec = Recorder()
    v = run_search(build_graph(InMemorySaver()), "t", s, observe, evaluate_batch=rec)
    keys = [h["key"] for h in v["history"]]
    assert len(keys) == len(set(keys)) > 3
    assert all(len(b) <= 3 for b in rec.batches)
    assert any(len(b) == 3 for b in rec.batches)  # the batches do fill
    # the history is in proposal order whatever order the members finished in
    props = [d for d in v["decisions"] if d["event"] == "propose"]
    assert [p["key"] for p in props] == keys
    assert [p["index"] for p in props] == list(range(len(keys)))
    assert sum(rec.batches, []) == list(range(len(keys)))
    assert not [d for d in v["decisions"] if d["event"] == "rejected"]


def test_the_candidate_budget_counts_the_batch():
    s = settings(policy="grid", batch=2, max_candidates=5)
    rec = Recorder()
    v = run_search(build_graph(InMemorySaver()), "t", s, observe, evaluate_batch=rec)
    assert [len(b) for b in rec.batches] == [2, 2, 1]
    assert len(v["history"]) == 5
    assert v["stop_reason"] == "candidate budget spent: 5 of 5 evaluations"


def test_agent_measures_the_reference_alone_then_proposes_its_k_best_pushes():
    s = settings(policy="agent", batch=3, max_candidates=7)
    one = run_search(
        build_graph(InMemorySaver()), "one", settings(policy="agent", max_candidates=7), observe
    )
    v = run_search(build_graph(InMemorySaver()), "k", s, observe)
    groups = batched(v)
    # nothing to push from before the reference is measured: the first batch is just it
    assert [p["policy"] for p in groups[0]] == ["reference"]
    assert len(groups[1]) == 3 and all(len(g) <= 3 for g in groups)
    assert sum(len(g) for g in groups) == 7
    # the K best pushes are the pushes the one-at-a-time agent ranks first from the same
    # frontier: its second proposal is the batch's first
    assert groups[1][0]["key"] == [d for d in one["decisions"] if d["event"] == "propose"][1]["key"]
    assert all(p["kind"] == "push" for p in groups[1])
    # the decision records what was pending when each member was chosen
    assert groups[1][2]["state_seen"]["pending"] == [groups[1][0]["label"], groups[1][1]["label"]]


def test_optuna_batch_uses_constant_liar_and_stays_a_function_of_history():
    s = settings(policy="optuna", batch=2, max_candidates=8, seed=3)
    a = run_search(build_graph(InMemorySaver()), "a", s, observe)
    b = run_search(build_graph(InMemorySaver()), "b", s, observe)
    assert [h["key"] for h in a["history"]] == [h["key"] for h in b["history"]]
    for g in batched(a):
        assert len({p["key"] for p in g}) == len(g)


def test_batch_one_makes_the_decisions_it_made_before_batches():
    for policy in ("agent", "optuna", "grid"):
        a = run_search(
            build_graph(InMemorySaver()), "a", settings(policy=policy, max_candidates=6), observe
        )
        b = run_search(
            build_graph(InMemorySaver()),
            "b",
            settings(policy=policy, max_candidates=6),
            observe,
            evaluate_batch=Recorder(),
        )
        assert [h["key"] for h in a["history"]] == [h["key"] for h in b["history"]]
        assert all("batch_start" not in d for d in a["decisions"])


def test_a_rung_is_judged_only_when_none_of_its_evaluations_is_pending():
    from tests.agents.test_fidelity import LADDER, observe_mf

    s = SearchSettings(
        space=SPACE.as_dict(),
        objectives="accuracy:max,memory_gb:min",
        accuracy_drop=0.05,
        fidelities=LADDER,
        batch=4,
    )
    v = run_search(build_graph(InMemorySaver()), "mf", s, observe_mf)
    promotes = 0
    for g in batched(v):
        for i, p in enumerate(g):
            if p["kind"] == "promote":
                promotes += 1
                assert all(q.get("rung", 0) >= p["rung"] for q in g[:i]), g
    assert promotes > 0
    assert not [d for d in v["decisions"] if d["event"] == "rejected"]
    keys = [(h["key"], h["rung"]) for h in v["history"]]
    assert len(keys) == len(set(keys))


KILLED = textwrap.dedent(
    """
    import os, signal, sys
    from ecocompress.agents.graph import build_graph, run_search, sqlite_checkpointer
    from ecocompress.agents.settings import SearchSettings
    from tests.agents.synthetic import SPACE, observe

    s = SearchSettings.model_validate_json(sys.argv[2])

    def evaluate_batch(items, done):
        for i, p in items:
            if i == 4:  # the second member of the third batch: killed mid-candidate
                os.kill(os.getpid(), signal.SIGKILL)
            done(i, observe(p, i))

    run_search(build_graph(sqlite_checkpointer(sys.argv[1])), "t", s, observe,
               evaluate_batch=evaluate_batch)
    """
)


def test_a_batch_killed_mid_way_resumes_only_its_unfinished_members(tmp_path):
    s = settings(policy="grid", batch=3, max_candidates=8)
    full = run_search(build_graph(InMemorySaver()), "full", s, observe)
    db = str(tmp_path / "ck.sqlite")
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, db, s.model_dump_json()],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    rec = Recorder()
    v = run_search(build_graph(sqlite_checkpointer(db)), "t", s, observe, evaluate_batch=rec)
    # batches [0, 1, 2] and [3, 4, 5]: 3 finished before the kill, 4 and 5 did not
    assert rec.batches[0] == [4, 5]
    assert rec.batches[1:] == [[6, 7]]
    assert [h["key"] for h in v["history"]] == [h["key"] for h in full["history"]]
    assert v["spent"]["evaluations"] == 8 == len(v["history"])


def test_llm_is_shown_the_batch_so_far_and_a_repeat_is_rejected():
    from tests.agents.fake_chat import FakeStructuredChatModel

    int8 = (
        '{"bits": 8, "method": "none", "sparsity": 0.0, "pattern": "unstructured", '
        '"backend": "bitsandbytes", "reason": "int8"}'
    )
    nf4 = int8.replace('"bits": 8', '"bits": 4').replace('"int8"', '"nf4"')
    chat = FakeStructuredChatModel(responses=[int8, int8, nf4])
    chat.prompts = []
    s = settings(policy="llm", batch=3, max_candidates=3)
    v = run_search(build_graph(InMemorySaver(), chat_model=chat), "t", s, observe)
    rejected = [d["reason"] for d in v["decisions"] if d["event"] == "rejected"]
    assert rejected == ["int8-bitsandbytes is already proposed in this batch"]
    assert [h["candidate"] for h in v["history"]] == [
        "bf16",
        "int8-bitsandbytes",
        "nf4-bitsandbytes",
    ]
    # one round: the reference, then the model's answers with the round so far shown
    assert [len(g) for g in batched(v)] == [3]
    shown = chat.prompts[1][1][1].split("Already chosen for this round")[1]
    assert '"bits": 8' in shown and '"bits": 16' in shown


@pytest.mark.parametrize("k", [2, 4])
def test_agent_batches_on_the_recorded_grid_reach_its_lateral_moves(k):
    """Rule 4 of the agent (lateral moves and milder steps around the frontier) is reached
    when results it would block on are still pending: its proposals are typed ``explore``
    or ``back-off`` (not the move's own name, which failed), none twice."""
    from ecocompress.agents.replay import load_grid, replay

    _, space, rows = load_grid(ROOT / "tests/perf/results/planner_grid.json")
    v = replay(space, rows, "agent", objectives=OBJ, accuracy_drop=0.05, batch=k)
    props = [d for d in v["decisions"] if d["event"] == "propose"]
    assert any(p["reason"].startswith("lateral") for p in props)
    keys = [h["key"] for h in v["history"]]
    assert len(keys) == len(set(keys))
