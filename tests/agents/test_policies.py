"""Policy rules on a synthetic, deterministic evaluator (tests/agents/synthetic.py)."""

from __future__ import annotations

import pytest

from ecocompress.agents.policies import AgentPolicy, GridPolicy, RandomPolicy
from ecocompress.agents.sampler import OptunaPolicy
from ecocompress.agents.space import candidate_from_fields
from ecocompress.agents.view import SearchView, proposal
from ecocompress.metrics.recommend import Constraints
from ecocompress.metrics.types import parse_objectives
from tests.agents.synthetic import SPACE, observe

OBJ = parse_objectives("accuracy:max,latency_ms:min,memory_gb:min")


def view(history, **kw) -> SearchView:
    kw.setdefault("constraints", Constraints(accuracy_drop=0.05))
    return SearchView(space=SPACE, history=history, objectives=OBJ, **kw)


def ref_obs(**extra):
    ref = SPACE.reference()
    return observe(proposal(ref, "reference", "", "reference", None), **extra)


def drive(policy, n, history=None, **kw):
    history = list(history or [ref_obs()])
    props = []
    for _ in range(n):
        p = policy.propose(view(history, **kw))
        if p is None:
            break
        props.append(p)
        history.append(observe(p))
    return props, history


@pytest.mark.parametrize(
    "policy", [AgentPolicy(), GridPolicy(), RandomPolicy(), OptunaPolicy(), OptunaPolicy("nsga2")]
)
def test_proposals_are_valid_and_never_repeat(policy):
    props, history = drive(policy, 30)
    keys = [h["key"] for h in history]
    assert len(keys) == len(set(keys))
    for p in props:
        assert SPACE.parse(p["key"]) in SPACE
        assert p["policy"] == policy.name and p["reason"]


@pytest.mark.parametrize("policy", [GridPolicy(), RandomPolicy(), OptunaPolicy()])
def test_static_and_sampler_policies_cover_the_space_then_stop(policy):
    props, history = drive(policy, 40)
    assert len(history) == len(SPACE)
    assert policy.propose(view(history)) is None


def test_random_and_optuna_are_reproducible_per_seed():
    for pol in (RandomPolicy(), OptunaPolicy()):
        a = [p["key"] for p in drive(pol, 6, seed=1)[0]]
        b = [p["key"] for p in drive(pol, 6, seed=1)[0]]
        c = [p["key"] for p in drive(pol, 6, seed=2)[0]]
        assert a == b
        assert a != c


def test_agent_pushes_one_axis_from_the_reference_first():
    p = AgentPolicy().propose(view([ref_obs()]))
    assert p["label"] == "int8-bitsandbytes" and p["kind"] == "push"
    assert "push bits from frontier candidate bf16" in p["reason"]


def test_agent_backs_off_and_never_goes_beyond_a_failed_candidate():
    # every 0.5-sparsity magnitude candidate loses 0.2 accuracy: far below the 5 pp floor
    props, history = drive(AgentPolicy(), 27)
    bad = [h for h in history if h["accuracy"] < 0.5 - 0.05 - 0.02]
    assert bad, "the synthetic space has candidates below the floor"
    for i, h in enumerate(history):
        for b in history[:i]:
            if b in bad:
                assert not SPACE.at_least_as_aggressive(
                    SPACE.parse(h["key"]), SPACE.parse(b["key"])
                )
    # it stops before exhausting the space: the region beyond the floor is skipped
    assert len(history) < len(SPACE)


def test_agent_backs_off_from_a_candidate_below_the_floor():
    from ecocompress.agents.space import Space

    small = Space(bits=(16, 4), prune=("none", "wanda"), sparsity=(0.25, 0.5), pattern=())

    def obs(bits, method, sparsity, acc):
        c = candidate_from_fields(bits, method, sparsity, "unstructured")
        o = observe(proposal(c, "agent", "", "push", None))
        o["accuracy"] = acc
        return o

    history = [
        obs(16, "none", 0, 0.50),
        obs(4, "none", 0, 0.30),  # below the 0.45 floor: no 4-bit candidate is tried again
        obs(16, "wanda", 0.25, 0.46),  # clearly below bf16: no frontier candidate
        obs(4, "wanda", 0.5, 0.20),
    ]
    v = SearchView(
        space=small, history=history, objectives=OBJ, constraints=Constraints(accuracy_drop=0.05)
    )
    p = AgentPolicy().propose(v)
    assert p["kind"] == "back-off" and p["label"] == "wanda-0.5+bf16"
    assert "wanda-0.5+nf4-bitsandbytes fell below the accuracy floor" in p["reason"]


def test_agent_reevaluates_a_close_call_with_more_items_only_when_allowed():
    ref = ref_obs(limit=20)
    near = candidate_from_fields(8, "wanda", 0.25, "unstructured")
    obs = observe(proposal(near, "agent", "", "push", 20))
    obs.update(accuracy=0.455, accuracy_stderr=0.02)  # floor 0.45: within one stderr
    p = AgentPolicy().propose(view([ref, obs], base_limit=20, max_limit=80))
    assert p["kind"] == "reevaluate" and p["key"] == obs["key"] and p["limit"] == 40
    p2 = AgentPolicy().propose(view([ref, obs], base_limit=20, max_limit=None))
    assert p2["kind"] != "reevaluate"


def test_agent_respects_a_memory_limit_it_has_seen_broken():
    cons = Constraints(accuracy_drop=0.05, memory_limit_gb=0.4)  # only 4-bit fits
    props, history = drive(AgentPolicy(), 27, constraints=cons)
    over_seen = set()
    for h in history:
        q = SPACE.parse(h["key"]).quant.canonical()
        assert q not in over_seen or SPACE.parse(h["key"]).prune.method == "none", h["candidate"]
        if h["memory_gb"] > 0.4:
            over_seen.add(q)
    assert any(SPACE.parse(h["key"]).quant.bits == 4 for h in history)
