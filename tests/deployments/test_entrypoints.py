"""Every deployment entrypoint string resolves to a flow, and its parameters validate."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_entrypoints_resolve_to_flows():
    from prefect import Flow

    from ecocompress.deployments.serve import ENTRYPOINTS

    for entry in ENTRYPOINTS.values():
        path, _, attr = entry.partition(":")
        assert (REPO / path).is_file(), f"{entry} points at a missing file"
        spec = importlib.util.spec_from_file_location("entry", REPO / path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert isinstance(getattr(mod, attr), Flow)


def test_optimize_deployment_parameters_round_trip(shared_data_dir):
    from ecocompress.agents.settings import SearchSettings
    from ecocompress.deployments.serve import build_deployment
    from ecocompress.flows.params import RunParams

    dep = build_deployment(
        "s",
        "0 4 * * 1",
        [
            "--policy",
            "optuna",
            "--profile",
            "edge",
            "--limit",
            "5",
            "--data-dir",
            str(shared_data_dir),
        ],
        flow="optimize",
    )
    params = RunParams.model_validate(dep.parameters["params"])
    settings = SearchSettings.model_validate(dep.parameters["settings"])
    assert params.limit == 5 and settings.policy == "optuna"
    assert settings.memory_limit_gb == 1.0  # from the edge profile
    assert dep.parameters["profile"] == "edge" and "thread_id" not in dep.parameters


def test_deployment_parameters_round_trip(shared_data_dir):
    from ecocompress.deployments.serve import build_deployment
    from ecocompress.flows.params import RunParams
    from ecocompress.tasks.specs import CandidateSpec

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


class _Captured(BaseException):
    """Stops the CLI at the flow call (not an Exception: the CLI does not swallow it)."""


@pytest.mark.parametrize(
    ("flow", "argv"),
    [
        ("sweep", ["--bits", "16,4", "--prune", "none,wanda", "--sparsity", "0.5"]),
        ("optimize", ["--policy", "optuna", "--profile", "edge", "--no-register"]),
        ("optimize", ["--multi-fidelity", "--benchmarks", "commonsenseqa"]),
        ("optimize", ["--policy", "llm", "--llm", "python:tests.fake_llm:model"]),
    ],
)
def test_a_deployment_runs_what_the_cli_runs(flow, argv, shared_data_dir, monkeypatch):
    """The same flags give the same flow parameters on the command line and in a
    deployment (the optimize deployment once lost --llm and the perplexity benchmark that
    --multi-fidelity needs)."""
    import importlib

    from ecocompress.deployments.serve import build_deployment, jsonable
    from ecocompress.flows.cli import main

    argv = [*argv, "--limit", "5", "--data-dir", str(shared_data_dir)]
    dep = build_deployment("d", "0 3 * * 1", argv, flow=flow)
    seen: dict = {}

    def capture(**kwargs):
        seen.update(kwargs)
        raise _Captured

    monkeypatch.setattr(
        importlib.import_module(f"ecocompress.flows.{flow}"), f"{flow}_flow", capture
    )
    with pytest.raises(_Captured):
        main([flow, "--quiet", *argv])
    cli = jsonable({k: v for k, v in seen.items() if k not in ("quiet", "thread_id")})
    stored = {k: v for k, v in dep.parameters.items() if k != "quiet"}
    if flow == "sweep":
        assert stored.pop("command") == "scheduled-sweep" and cli.pop("command") == "sweep"
    assert stored == cli
    if "--multi-fidelity" in argv:
        assert "perplexity" in stored["params"]["benchmarks"]
    if "--llm" in argv:
        assert stored["llm"] == "python:tests.fake_llm:model"
