from __future__ import annotations

import pytest

from ecocompress.agents.space import Space, candidate_from_fields
from ecocompress.tasks.errors import UserError
from tests.agents.synthetic import SPACE


def labels(moves, kind=None):
    return [m.dst.label for m in moves if kind is None or m.kind == kind]


def test_space_enumerates_distinct_candidates_and_the_reference():
    assert len(SPACE) == 27  # 3 bits x (1 dense + 2 methods x (2 sparsities + 2:4 + 4:8))
    assert len({c.canonical() for c in SPACE.candidates}) == 27
    assert SPACE.reference().label == "bf16"


def test_moves_from_the_reference_push_one_axis():
    ref = SPACE.reference()
    assert labels(SPACE.moves(ref), "push") == [
        "int8-bitsandbytes",
        "magnitude-0.25+bf16",
        "wanda-0.25+bf16",
    ]
    assert labels(SPACE.moves(ref), "back") == []


def test_moves_along_the_shape_axis_are_ordered_mild_to_aggressive():
    c = candidate_from_fields(16, "wanda", 0.5, "unstructured")
    m = SPACE.moves(c)
    assert "wanda-4:8+bf16" in labels(m, "push")  # same sparsity, more constrained
    assert "wanda-0.25+bf16" in labels(m, "back")
    assert "magnitude-0.5+bf16" in labels(m, "lateral")
    assert "wanda-0.5+int8-bitsandbytes" in labels(m, "push")
    nm48 = candidate_from_fields(16, "wanda", 0.0, "4:8")
    assert "wanda-2:4+bf16" in labels(SPACE.moves(nm48), "push")


def test_aggressiveness_order_is_per_method():
    w50 = candidate_from_fields(8, "wanda", 0.5, "unstructured")
    assert SPACE.at_least_as_aggressive(candidate_from_fields(4, "wanda", 0.0, "2:4"), w50)
    assert not SPACE.at_least_as_aggressive(candidate_from_fields(4, "magnitude", 0.5, "2:4"), w50)
    assert not SPACE.at_least_as_aggressive(candidate_from_fields(16, "wanda", 0.5, "2:4"), w50)


def test_space_round_trips_and_rejects_empty_axes():
    assert Space.from_dict(SPACE.as_dict()).candidates == SPACE.candidates
    with pytest.raises(UserError, match="at least one bits"):
        Space(bits=(), prune=("none",), sparsity=(), pattern=())
