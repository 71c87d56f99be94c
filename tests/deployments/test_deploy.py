"""``ecocompress deploy``: what it registers, built from the CLI's own flags (no server)."""

from __future__ import annotations

import copy
import inspect
from datetime import timedelta

import pytest

from ecocompress.deployments.deploy import (
    ON_NEW_MODEL,
    SCHEDULED,
    THREAD_PREFIX,
    WATCH,
    DeploySettings,
    build_deployments,
)
from ecocompress.deployments.serve import jsonable
from ecocompress.flows.cli import parse_settings
from ecocompress.flows.events import MODEL_UPDATED, ModelUpdate
from ecocompress.flows.resolve import flow_parameters, resolve

FLAGS = ["--bits", "16,8", "--prune", "none", "--limit", "3", "--max-candidates", "2"]


def by_name(deployments):
    return {d.name: d for d in deployments}


def render(parameters: dict, update: ModelUpdate) -> dict:
    """The parameters a trigger's RunDeployment action gives, rendered by Prefect's own code."""
    from prefect.server.events.actions import RunDeployment
    from prefect.utilities.schema_tools.hydration import HydrationContext, hydrate

    params = copy.deepcopy(parameters)
    RunDeployment._upgrade_v1_templates(params)
    ctx = HydrationContext(
        render_jinja=True, jinja_context={"event": {"payload": update.payload()}}
    )
    return hydrate(params, ctx)


def test_deploys_schedule_trigger_and_watch():
    s = DeploySettings(watch=("./m", "models:/x"), watch_every_s=60, cron="0 4 * * *")
    ds = by_name(build_deployments(s, FLAGS))
    assert set(ds) == {SCHEDULED, ON_NEW_MODEL, WATCH}
    assert ds[SCHEDULED].schedules[0].schedule.cron == "0 4 * * *"
    assert ds[SCHEDULED].flow_name == "ecocompress-sweep"
    assert ds[WATCH].schedules[0].schedule.interval == timedelta(seconds=60)
    assert ds[WATCH].parameters == {"sources": ["./m", "models:/x"]}
    for d in ds.values():  # the installed package, not a file path of this checkout
        assert d.entrypoint.startswith("ecocompress.") and ".py" not in d.entrypoint
        assert d.work_pool_name == "ecocompress"


def test_trigger_deduplicates_per_model_revision_and_limits_concurrency():
    d = by_name(build_deployments(DeploySettings(cron=None, dedupe_within_s=600), FLAGS))[
        ON_NEW_MODEL
    ]
    (t,) = d.triggers
    assert t.expect == {MODEL_UPDATED}
    assert t.for_each == {"prefect.resource.id"}
    assert t.within == timedelta(seconds=600) and t.threshold == 1
    assert t.posture == "Reactive"
    assert d.concurrency_limit == 1


@pytest.mark.parametrize(
    "update, revision",
    [
        (
            ModelUpdate(model="org/lm", revision="abc123", source="hub", seen_by="hub-webhook"),
            "abc123",
        ),
        (ModelUpdate(model="/models/lm", revision="f00d", source="local", seen_by="watch"), None),
        (
            ModelUpdate(
                model="models:/lm/3", revision="3", source="mlflow", seen_by="mlflow-webhook"
            ),
            None,
        ),
    ],
)
def test_triggered_run_is_the_cli_optimize_for_the_events_model(update, revision):
    """Rendered as Prefect renders it, the triggered run's parameters validate into the
    same specs as ``ecocompress optimize --model M --revision R <flags>``."""
    from ecocompress.flows.optimize import optimize_flow

    d = by_name(build_deployments(DeploySettings(cron=None), FLAGS))[ON_NEW_MODEL]
    rendered = render(d.triggers[0].parameters, update)
    assert rendered["thread_id"] == THREAD_PREFIX + update.key
    bound = inspect.signature(optimize_flow.fn).bind(**rendered).arguments
    params = optimize_flow.validate_parameters(bound)
    cli = ["--model", update.model, *FLAGS] + (["--revision", revision] if revision else [])
    expected = flow_parameters(resolve("optimize", parse_settings("optimize", cli)))
    assert params["params"] == expected["params"]
    assert params["settings"] == expected["settings"]
    assert params["params"].revision == revision
    # by hand, the deployment runs the flags' own model
    untemplated = jsonable(flow_parameters(resolve("optimize", parse_settings("optimize", FLAGS))))
    assert d.parameters["params"] == untemplated["params"]


def test_dry_run_prints_without_a_server(capsys, monkeypatch):
    from ecocompress.deployments.cli import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["deploy", "--dry-run", "--cron", "0 5 * * *", *FLAGS]) == 0
    out = capsys.readouterr().out
    assert "ecocompress-sweep/scheduled: 0 5 * * *" in out
    assert f"ecocompress-optimize/on-new-model: on {MODEL_UPDATED}" in out


def test_bad_pipeline_flag_is_refused_in_one_line(capsys):
    from ecocompress.deployments.cli import main

    assert main(["deploy", "--dry-run", "--bits", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ecocompress: error:") and "bits" in err and "\n" not in err
