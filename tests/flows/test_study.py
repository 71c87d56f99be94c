"""``study``: RQ1 replayed on a recorded grid, RQ2-RQ4 live on the tiny local model."""

from __future__ import annotations

import json
import os

import pytest

from ecocompress.agents.settings import SearchSettings
from ecocompress.flows.params import RunParams
from tests.agents.synthetic import SPACE, metrics

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def prefect_harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def synthetic_grid(path) -> str:
    """A grid fixture in planner_grid.json's format, rows from tests/agents/synthetic.py."""
    rows = [{"candidate": c.label, "status": "ok", **metrics(c)} for c in SPACE.candidates]
    fx = {
        "machine": {"note": "synthetic rows for a unit test"},
        "grid": {
            "bits": "16,8,4",
            "prune": "none,magnitude,wanda",
            "sparsity": "0.25,0.5",
            "pattern": "unstructured,2:4,4:8",
        },
        "rows": rows,
    }
    path.write_text(json.dumps(fx))
    return str(path)


def test_rq1_replays_policies_on_a_recorded_grid(tmp_path, shared_data_dir, prefect_harness):
    from ecocompress.flows.study import study_flow

    fixture = synthetic_grid(tmp_path / "grid.json")
    base = SearchSettings(
        space=SPACE.as_dict(),
        objectives="accuracy:max,latency_ms:min,memory_gb:min,energy_kwh:min",
        accuracy_drop=0.05,
        max_candidates=27,
    )
    out = study_flow(
        "rq1",
        RunParams(data_dir=str(shared_data_dir), experiment="study-test"),
        base,
        policies=["agent", "random", "grid"],
        seeds=[0, 1, 2],
        replay_path=fixture,
    )
    by = {r["policy"]: r for r in out["table"]}
    assert set(by) == {"agent", "random", "grid"}
    assert by["random"]["runs"] == 3 and by["grid"]["runs"] == 1
    # grid and random evaluate the whole space: the full hypervolume on shared bounds
    assert by["grid"]["final hypervolume (median)"] == pytest.approx(
        by["random"]["final hypervolume (median)"]
    )
    assert by["agent"]["evaluations (median)"] < 27  # it stops when no move is left
    assert "RQ1" in out["text"] and "replayed on the recorded grid grid.json" in out["text"]
    from mlflow import MlflowClient

    from ecocompress.metrics.tracking import tracking_uri

    arts = {a.path for a in MlflowClient(tracking_uri()).list_artifacts(out["run_id"])}
    assert {"report.md", "report.html", "table.json"} <= arts


def test_rq2_rq3_rq4_on_the_tiny_model(tiny_model_dir, shared_data_dir, prefect_harness):
    from ecocompress.flows.study import WEIGHT_SCHEMES, study_flow

    params = RunParams(
        model=str(tiny_model_dir),
        benchmarks=("commonsenseqa",),
        limit=1,
        data_dir=str(shared_data_dir),
        experiment="study-tiny",
    )
    base = SearchSettings(
        space={
            "bits": [16, 8],
            "prune": ["none", "magnitude"],
            "sparsity": [0.5],
            "pattern": ["unstructured"],
            "quant_backend": ["bitsandbytes"],
        },
        objectives=params.objectives,
        accuracy_drop=0.05,
        max_candidates=2,
        base_limit=1,
    )
    rq2 = study_flow("rq2", params, base, quiet=True)
    assert [r["step"] for r in rq2["table"]] == [1, 2]
    cum = [r["search co2_kg so far"] for r in rq2["table"]]
    assert cum[0] > 0 and cum[1] >= cum[0]
    rq3 = study_flow("rq3", params, base, quiet=True)
    assert [r["scheme"] for r in rq3["table"]] == list(WEIGHT_SCHEMES)
    assert "identical under all" in rq3["text"]
    assert all(r["recommended"] for r in rq3["table"])
    rq4 = study_flow("rq4", params, base, carbon_budget=1e-9, quiet=True)
    by = {r["profile"]: r for r in rq4["table"]}
    assert set(by) == {"edge", "cloud", "carbon-limited"}
    assert by["carbon-limited"]["evaluations"] == 1
    assert by["carbon-limited"]["stop"].startswith("carbon budget spent: evaluations cost")
    assert by["cloud"]["stop"] == "candidate budget spent: 2 of 2 evaluations"
    assert os.path.isfile(os.path.join(rq4["report_dir"], "report.html"))
