"""Multi-fidelity search: the ladder, the per-rung objectives, screening before racing,
breadth-first promotions, recorded eliminations, and the frontier it ends with."""

from __future__ import annotations

import math

import pandas as pd
from langgraph.checkpoint.memory import InMemorySaver

from ecocompress.agents.fidelity import default_ladder, rung_objectives
from ecocompress.agents.graph import build_graph, run_search
from ecocompress.agents.settings import SearchSettings
from ecocompress.metrics.pareto import pareto_front
from ecocompress.metrics.types import parse_objectives
from ecocompress.tasks.specs import CandidateSpec
from tests.agents.synthetic import SPACE, metrics

OBJ = "accuracy:max,memory_gb:min"
LADDER = default_ladder(["commonsenseqa", "bbh"], 30, 8192, 512, 256)


def ppl(c: CandidateSpec) -> float:
    """Synthetic perplexity: grows with the synthetic accuracy loss (a documented function)."""
    return 20.0 * math.exp(8 * (0.5 - metrics(c)["accuracy"]))


def observe_mf(p: dict, index: int = 0) -> dict:
    c = CandidateSpec.model_validate_json(p["key"])
    m = metrics(c)
    rung = p.get("rung", 0)
    row = {
        "key": p["key"],
        "candidate": c.label,
        "limit": p.get("limit"),
        "status": "ok",
        "wall_s": 10.0 * (rung + 1),
        "emitted_co2_kg": 0.001,
        "memory_gb": m["memory_gb"],
        "latency_ms": m["latency_ms"],
        "rung": rung,
        "perplexity/wikitext2": ppl(c),
        "log_perplexity_stderr/wikitext2": 0.02 / (rung + 1),
    }
    if any(b != "perplexity" for b in p["benchmarks"]):
        row["accuracy"] = m["accuracy"]
        row["accuracy_stderr"] = 0.02 / (rung + 1)
    return row


def run(**kw):
    s = SearchSettings(
        space=SPACE.as_dict(),
        objectives=OBJ,
        accuracy_drop=0.05,
        fidelities=LADDER,
        **kw,
    )
    return run_search(build_graph(InMemorySaver()), "mf", s, observe_mf), s


def test_default_ladder_is_cheap_first_and_aligned_on_windows():
    assert [r["ppl_tokens"] for r in LADDER] == [1024, 4096, 8192]
    assert [r["limit"] for r in LADDER] == [None, 10, 30]
    assert LADDER[0]["benchmarks"] == ["perplexity"]
    assert LADDER[2]["benchmarks"] == ["commonsenseqa", "bbh", "perplexity"]
    for t in (r["ppl_tokens"] for r in LADDER):
        assert (t - 512) % 256 == 0
    # a budget below one window is the budget itself
    assert default_ladder(["bbh"], 6, 300, 512, 256)[0]["ppl_tokens"] == 300
    # without --limit the top rung is the whole benchmark; rung 1 still screens
    assert [r["limit"] for r in default_ladder(["bbh"], None, 4096, 512, 256)] == [None, 100, None]


def test_perplexity_stands_in_for_accuracy_where_no_accuracy_is_measured():
    objs = parse_objectives("accuracy:max,memory_gb:min,latency_ms:min")
    assert [o.name for o in rung_objectives(objs, LADDER[0])] == [
        "perplexity/wikitext2",
        "memory_gb",
        "latency_ms",
    ]
    assert [o.name for o in rung_objectives(objs, LADDER[2])] == [
        "accuracy",
        "memory_gb",
        "latency_ms",
    ]


def test_screens_first_then_promotes_breadth_first_and_records_eliminations():
    v, s = run()
    props = [d for d in v["decisions"] if d["event"] == "propose"]
    rungs = [p["rung"] for p in props]
    assert props[0]["label"] == "bf16" and props[0]["rung"] == 0
    # every screen before any promotion, every promotion out of rung 0 before rung 1's
    assert rungs == sorted(rungs)
    assert all(p["kind"] == "promote" for p in props if p["rung"] > 0)
    assert all(p["benchmarks"] == LADDER[p["rung"]]["benchmarks"] for p in props)
    # a promotion goes one rung up, from a candidate evaluated at the rung below
    seen: dict[str, int] = {}
    for p in props:
        if p["rung"] > 0:
            assert seen[p["key"]] == p["rung"] - 1
        seen[p["key"]] = p["rung"]
    elim = [d for d in v["decisions"] if d["event"] == "eliminate"]
    assert elim and all(d["reason"] for d in elim)
    assert len({(d["key"], d["rung"]) for d in elim}) == len(elim)  # each recorded once
    # an eliminated candidate is never promoted past the rung it was eliminated at
    for d in elim:
        assert seen[d["key"]] == d["rung"]
    assert "screening is done" in v["stop_reason"]


def test_finds_the_exhaustive_frontier_for_less():
    v, s = run()
    top = len(LADDER) - 1
    full = [
        observe_mf({"key": c.canonical(), "rung": top, **LADDER[top]}) for c in SPACE.candidates
    ]
    objs = parse_objectives(OBJ)
    exhaustive = pareto_front(pd.DataFrame(full), objs)
    want = set(exhaustive.loc[exhaustive["on_front"], "candidate"])
    mine = [h for h in v["history"] if h["rung"] == top]
    front = pareto_front(pd.DataFrame(mine), objs)
    assert set(front.loc[front["on_front"], "candidate"]) == want
    # fewer full evaluations than the grid, and every screened candidate was cheap
    assert len(mine) < len(SPACE.candidates)
    assert sum(1 for h in v["history"] if h["rung"] == 0) <= len(SPACE.candidates)


def test_a_memory_limit_eliminates_at_the_lowest_rung():
    v, _ = run(memory_limit_gb=0.5)
    elim = {d["candidate"]: d for d in v["decisions"] if d["event"] == "eliminate"}
    assert elim["bf16"]["rung"] == 0 and "memory" in elim["bf16"]["reason"]
    assert all(h["memory_gb"] <= 0.5 for h in v["history"] if h["rung"] > 0)


def test_a_proxy_rung_eliminates_only_on_quality_beyond_noise():
    from ecocompress.agents.fidelity import judge, rung_view
    from ecocompress.agents.graph import view_of

    s = SearchSettings(space=SPACE.as_dict(), objectives=OBJ, fidelities=LADDER)
    c16, c8 = SPACE.candidates[0], next(c for c in SPACE.candidates if c.quant.bits == 8)

    def row(c, p, se):
        return {
            "key": c.canonical(),
            "candidate": c.label,
            "status": "ok",
            "rung": 0,
            "memory_gb": metrics(c)["memory_gb"],
            "perplexity/wikitext2": p,
            "log_perplexity_stderr/wikitext2": se,
        }

    # int8 is cheaper and its perplexity lower, but inside the noise: no elimination
    close = rung_view(view_of(s, [row(c16, 18.9, 0.13), row(c8, 17.3, 0.13)]), 0)
    survivors, eliminated = judge(close, proxy=True)
    assert len(survivors) == 2 and not eliminated
    # without the proxy rule the cheaper candidate's within-noise edge would decide
    assert len(judge(close, proxy=False)[1]) == 1
    # beyond the noise it eliminates, naming the candidate that beat it
    far = rung_view(view_of(s, [row(c16, 40.0, 0.05), row(c8, 17.3, 0.05)]), 0)
    survivors, eliminated = judge(far, proxy=True)
    assert [e["candidate"] for e in eliminated] == ["bf16"]
    assert "int8-bitsandbytes" in eliminated[0]["reason"]
