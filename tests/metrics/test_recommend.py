from __future__ import annotations

import pandas as pd
import pytest

from ecocompress.metrics.recommend import PROFILES, Constraints, parse_weights, recommend
from ecocompress.tasks.errors import UserError

ROWS = pd.DataFrame(
    [
        # candidate, accuracy, stderr, memory, latency, energy
        ("bf16", 0.50, 0.02, 0.54, 20.0, 2e-4),
        ("int8", 0.49, 0.02, 0.44, 60.0, 6e-4),
        ("nf4", 0.46, 0.02, 0.39, 35.0, 3.5e-4),
        ("wanda-0.5+nf4", 0.30, 0.02, 0.39, 35.0, 3.5e-4),
    ],
    columns=["candidate", "accuracy", "accuracy_stderr", "memory_gb", "latency_ms", "energy_kwh"],
).assign(status="ok")


def test_parse_weights_normalises_and_maps_short_names():
    assert parse_weights("accuracy=0.5,energy=0.3,latency=0.2") == {
        "accuracy": 0.5,
        "energy_kwh": 0.3,
        "latency_ms": 0.2,
    }
    assert parse_weights("accuracy=2,memory=2") == {"accuracy": 0.5, "memory_gb": 0.5}


@pytest.mark.parametrize(
    "text,msg",
    [
        ("accuracy", "malformed"),
        ("speed=1", "unknown metric 'speed'"),
        ("accuracy=x", "not a number"),
        ("accuracy=-1", "must be >= 0"),
        ("accuracy=0", "all zero"),
        ("accuracy=1,accuracy=2", "twice"),
    ],
)
def test_parse_weights_errors(text, msg):
    with pytest.raises(UserError, match=msg):
        parse_weights(text)


def test_weights_choose_a_point_on_the_frontier():
    acc = recommend(ROWS, {"accuracy": 1.0}, Constraints())
    mem = recommend(ROWS, {"memory_gb": 0.8, "accuracy": 0.2}, Constraints())
    assert acc.label == "bf16" and mem.label == "nf4"
    assert [r["candidate"] for r in acc.ranking][0] == "bf16"
    assert "wanda-0.5+nf4" not in [r["candidate"] for r in mem.ranking]  # dominated


def test_hard_constraints_exclude_candidates_whatever_the_weights():
    cons = Constraints(memory_limit_gb=0.4, accuracy_drop=0.05, reference_accuracy=0.50)
    rec = recommend(ROWS, {"accuracy": 1.0}, cons)
    assert rec.label == "nf4"
    assert "memory 0.540 GB > 0.4 GB" in rec.infeasible["bf16"]
    assert any("accuracy 0.300" in v for v in rec.infeasible["wanda-0.5+nf4"])
    none = recommend(ROWS, PROFILES["edge"].weights, Constraints(memory_limit_gb=0.1))
    assert none.label is None and none.reason == "no candidate satisfies the constraints"


def test_runner_up_within_noise_is_named():
    rec = recommend(ROWS, {"accuracy": 0.9, "memory_gb": 0.1}, Constraints())
    assert rec.label == "int8"  # 0.921 vs 0.900: decided by memory, accuracy is within noise
    assert "runner-up bf16" in rec.reason and "within one standard error" in rec.reason
