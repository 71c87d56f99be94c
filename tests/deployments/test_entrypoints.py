"""Every deployment entrypoint string resolves to a flow, and its parameters validate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_entrypoint_resolves_to_the_sweep_flow():
    from prefect import Flow

    from deployments.serve import ENTRYPOINT

    path, _, attr = ENTRYPOINT.partition(":")
    assert (REPO / path).is_file(), f"{ENTRYPOINT} points at a missing file"
    spec = importlib.util.spec_from_file_location("entry", REPO / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert isinstance(getattr(mod, attr), Flow)


def test_deployment_parameters_round_trip(shared_data_dir):
    from deployments.serve import build_deployment
    from flows.params import RunParams
    from tasks.specs import CandidateSpec

    dep = build_deployment(
        "t",
        "0 3 * * 1",
        [
            "--bits",
            "16,4",
            "--prune",
            "none,wanda",
            "--sparsity",
            "0.5",
            "--limit",
            "5",
            "--data-dir",
            str(shared_data_dir),
        ],
    )
    params = RunParams.model_validate(dep.parameters["params"])
    cands = [CandidateSpec.model_validate(c) for c in dep.parameters["candidates"]]
    assert params.limit == 5 and len(cands) == 4
    assert dep.schedules and dep.schedules[0].schedule.cron == "0 3 * * 1"
