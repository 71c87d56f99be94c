"""``ecocompress deploy``: register the scheduled and the triggered deployments on the stack.

    ecocompress deploy --bits 16,8,4 --limit 50                       # weekly sweep + re-runs
    ecocompress deploy --flow optimize --cron "0 3 * * *" --limit 50 --max-candidates 6
    ecocompress deploy --watch ./models/my-lm,models:/my-lm --limit 20 --config search.yaml

Registers on the running stack's Prefect server, for the ``ecocompress`` process work pool:
- ``<flow>/scheduled``: the sweep (or optimize) of these flags on a cron schedule; an ordinary,
  cached run: an unchanged model and code evaluate nothing again;
- ``ecocompress-optimize/on-new-model``: optimize of these flags for the model and revision of
  each ``ecocompress.model.updated`` event (``ecocompress watch``, the webhook receivers), one
  run per (model, revision) within ``--dedupe-within-s`` and at most ``--max-concurrent`` at a
  time; its search thread is named after (model, revision), so a revision seen again later
  resumes its finished search instead of searching again;
- ``ecocompress-watch/watch`` (with ``--watch``): checks the sources every ``--watch-every-s``.
Pipeline flags mean what they mean for ``ecocompress sweep`` / ``optimize``.
"""

from __future__ import annotations

import argparse
import os
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from ecocompress.deployments.stack import DEFAULT_POOL

SCHEDULED = "scheduled"
ON_NEW_MODEL = "on-new-model"
WATCH = "watch"
THREAD_PREFIX = "new-model-"


class DeploySettings(BaseModel):
    """What ``ecocompress deploy`` registers, besides the pipeline's own settings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    flow: Literal["sweep", "optimize"] = Field("sweep", description="the scheduled flow")
    cron: str | None = Field(
        "0 3 * * 1", description="schedule of the scheduled flow (UTC); '' for none"
    )
    pool: str = Field(DEFAULT_POOL, min_length=1, description="process work pool")
    on_new_model: bool = Field(
        True,
        description="optimize each new model or revision announced by an event",
        json_schema_extra={"flag": "--no-on-new-model"},
    )
    dedupe_within_s: int = Field(
        3600, ge=1, description="events for one (model, revision) within this start one run"
    )
    max_concurrent: int = Field(1, ge=1, description="triggered optimize runs at a time")
    watch: tuple[str, ...] = Field(
        (), description="comma list of sources to check on a schedule (see ecocompress watch)"
    )
    watch_every_s: int = Field(900, ge=10, description="seconds between checks of --watch")


# the pipeline's flags (sweep / optimize) follow deploy's own: deployments/cli.py passes them on
PASS_THROUGH = True


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ecocompress.flows.flags import add_flags

    p = sub.add_parser(
        "deploy",
        help="register the scheduled and the triggered deployments on the running stack",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        add_help=True,
    )
    add_flags(p, DeploySettings, "deployments")
    p.add_argument("--dry-run", action="store_true", help="print the deployments; register none")


def run(args: argparse.Namespace, rest: list[str] | None = None) -> int:
    from ecocompress.flows.cli import env_defaults
    from ecocompress.flows.flags import given
    from ecocompress.flows.stack import connect
    from ecocompress.tasks.errors import UserError

    env_defaults()
    settings = DeploySettings.model_validate(given(args, DeploySettings))
    stack = connect(quiet=True)
    if args.dry_run:
        for d in build_deployments(settings, list(rest or [])):
            print(describe(d))
        return 0
    if stack is None and not os.environ.get("PREFECT_API_URL"):
        raise UserError(
            "deploy registers on a Prefect server: start the stack (ecocompress server start) "
            "or set PREFECT_API_URL"
        )
    deployments = build_deployments(settings, list(rest or []))
    for d in deployments:
        d.apply(work_pool_name=settings.pool)
        print(describe(d))
    print(f"ecocompress: {len(deployments)} deployments on {os.environ['PREFECT_API_URL']}")
    return 0


def describe(d: Any) -> str:
    when = []
    for s in d.schedules or []:
        sched = s.schedule
        when.append(getattr(sched, "cron", None) or f"every {sched.interval}")
    for t in d.triggers or []:
        when.append(f"on {', '.join(sorted(t.expect))}")
    return f"  {d.flow_name}/{d.name}: {'; '.join(when) or 'by hand'}"


def build_deployments(settings: DeploySettings, argv: list[str]) -> list[Any]:
    """The ``RunnerDeployment``s ``deploy`` registers, their parameters built from ``argv`` by
    the CLI's own parser and resolver."""
    from prefect.deployments.runner import EntrypointType

    from ecocompress.deployments.serve import build_deployment, jsonable
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.flags import cli_fields
    from ecocompress.flows.resolve import COMMANDS, flow_parameters, resolve

    # one set of flags for both flows: optimize's are a superset of sweep's; a scheduled sweep
    # takes the ones it has
    values = parse_settings("optimize", argv)
    own = {n for m in COMMANDS[settings.flow] for n in cli_fields(m)}
    out = []
    if settings.cron:
        scheduled = {k: v for k, v in values.items() if k in own}
        out.append(
            build_deployment(
                SCHEDULED, settings.cron, argv, settings.flow, settings.pool, scheduled
            )
        )
    if settings.on_new_model:
        from prefect.client.schemas.objects import (
            ConcurrencyLimitConfig,
            ConcurrencyLimitStrategy,
        )

        from ecocompress.flows.optimize import optimize_flow

        r = resolve("optimize", values)
        parameters = {**jsonable(flow_parameters(r)), "quiet": True}
        # what the trigger runs: these settings for the event's model and revision, in a
        # search thread named after them
        templated = {
            **parameters,
            "params": {**parameters["params"], **model_templates()},
            "thread_id": THREAD_PREFIX + "{{ event.payload.key }}",
        }
        out.append(
            optimize_flow.to_deployment(
                name=ON_NEW_MODEL,
                parameters=parameters,
                triggers=[new_model_trigger(settings, templated)],
                concurrency_limit=ConcurrencyLimitConfig(
                    limit=settings.max_concurrent,
                    collision_strategy=ConcurrencyLimitStrategy.ENQUEUE,
                ),
                description="optimize each new model or revision (ecocompress.model.updated)",
                entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name=settings.pool,
            )
        )
    if settings.watch:
        from ecocompress.flows.watch import watch_flow

        out.append(
            watch_flow.to_deployment(
                name=WATCH,
                interval=timedelta(seconds=settings.watch_every_s),
                parameters={"sources": list(settings.watch)},
                entrypoint_type=EntrypointType.MODULE_PATH,
                work_pool_name=settings.pool,
            )
        )
    return out


def model_templates() -> dict[str, str]:
    """The run's model and revision, filled in from the triggering event."""
    return {
        "model": "{{ event.payload.model }}",
        # a single expression keeps its JSON type: null for a local or registry model
        "revision": "{{ event.payload.run_revision }}",
    }


def new_model_trigger(settings: DeploySettings, parameters: dict[str, Any]) -> Any:
    from prefect.events import DeploymentEventTrigger

    from ecocompress.flows.events import MODEL_UPDATED, RESOURCE_PREFIX

    return DeploymentEventTrigger(
        name="new model or revision",
        expect={MODEL_UPDATED},
        match={"prefect.resource.id": f"{RESOURCE_PREFIX}.*"},
        # one bucket per (model, revision): a burst of the same announcement starts one run
        for_each={"prefect.resource.id"},
        posture="Reactive",
        threshold=1,
        within=timedelta(seconds=settings.dedupe_within_s),
        parameters=parameters,
    )
