import pytest

from metrics.types import DEFAULT_OBJECTIVES, Objective, parse_objectives
from tasks.errors import UserError


def test_parse_objectives_in_order_with_directions():
    objs = parse_objectives("accuracy:max, latency_ms:min,accuracy/gsm8k:max")
    assert objs == [
        Objective(name="accuracy", direction="max"),
        Objective(name="latency_ms", direction="min"),
        Objective(name="accuracy/gsm8k", direction="max"),
    ]


def test_missing_direction_takes_the_natural_one():
    objs = parse_objectives("energy_kwh,throughput_tps,accuracy/bbh")
    assert [o.direction for o in objs] == ["min", "max", "max"]


def test_default_objectives():
    assert [str(o) for o in DEFAULT_OBJECTIVES] == [
        "accuracy:max",
        "latency_ms:min",
        "memory_gb:min",
        "energy_kwh:min",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acuracy:max", "did you mean 'accuracy'"),
        ("accuracy/gsm9k", "did you mean 'accuracy/gsm8k'"),
        ("latency_ms:lowest", "allowed 'max' or 'min'"),
        ("accuracy,accuracy:max", "given twice"),
        (" , ", "is empty"),
    ],
)
def test_bad_objectives_raise_user_error(text, message):
    with pytest.raises(UserError, match=message):
        parse_objectives(text)


def test_objective_is_frozen():
    o = Objective(name="accuracy", direction="max")
    with pytest.raises(ValueError):
        o.name = "latency_ms"
