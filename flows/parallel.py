"""Candidates as Prefect task runs on a task runner (flows/scale.py): each worker loads its
own model and evaluates whole candidates; the flow's process keeps the MLflow parent run,
the results table and the Pareto frontier.

A candidate's task gets what every candidate of the command shares (``shared``: the
picklable part of ``RunContext``) and returns its results-table row with the steps it
executed, their wall times and the energy they spent, which the flow adds to its own.
MLflow runs are opened with explicit ids (``tracking.start_child_run(parent_run_id, ...)``),
never through the active-run stack, so a child run made in a worker hangs under the
command's parent run.
"""

from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from ecocompress.flows.candidate import RunContext, evaluate_candidate
from ecocompress.flows.progress import Progress
from ecocompress.flows.scale import RESULTS_ENV, ScaleParams, gpu_count
from ecocompress.metrics.types import Status
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CandidateSpec

# RunContext fields a worker needs (the rest is the flow process's own: progress, holds, sums)
SHARED_FIELDS = (
    "params",
    "reference",
    "experiment_id",
    "parent_run_id",
    "data_hashes",
    "calib_hash",
    "intensity_g_per_kwh",
    "intensity_source",
    "flow_run_id",
    "provenance",
)


@dataclass(frozen=True)
class WorkerSetup:
    """How a worker process runs candidates: torch threads, results folder, GPU slot."""

    threads: int | None
    results: str | None
    gpus: int  # GPUs of a local cluster's machine, one per worker (0: none or remote)


@dataclass
class CandidateOutcome:
    """What a worker sends back for one candidate."""

    row: dict[str, Any]
    executed_steps: list[str]
    step_seconds: dict[str, float]
    energy_spent_kwh: float
    worker: str


def _prepare_worker(setup: WorkerSetup) -> str:
    """Apply ``setup`` in this worker process; returns the worker's name."""
    if not os.environ.get("ECOCOMPRESS_VERBOSE"):
        from ecocompress.flows.cli import quiet_libraries

        quiet_libraries()  # the command's own quiet, before torch is imported here
    name = "local"
    try:
        from distributed import get_worker

        name = str(get_worker().name)
    except (ImportError, ValueError):
        pass
    if setup.results is not None:
        os.environ[RESULTS_ENV] = setup.results
    if setup.gpus and "ECOCOMPRESS_WORKER_GPU" not in os.environ and name.isdigit():
        # one GPU per local worker: set before this process first touches CUDA
        os.environ["CUDA_VISIBLE_DEVICES"] = os.environ["ECOCOMPRESS_WORKER_GPU"] = str(
            int(name) % setup.gpus
        )
    if setup.threads is not None:
        import torch

        torch.set_num_threads(setup.threads)
    return name


@task(
    name="candidate",
    task_run_name="candidate-{cand.label}",
    persist_result=False,
    cache_policy=NO_CACHE,
)
def candidate_task(shared: dict[str, Any], cand: CandidateSpec, setup: WorkerSetup):
    """Evaluate one candidate in a worker; returns its ``CandidateOutcome``."""
    worker = _prepare_worker(setup)
    ctx = RunContext(**shared, progress=Progress(total=None, quiet=True))
    row = evaluate_candidate(ctx, cand)
    return CandidateOutcome(
        row=row,
        executed_steps=list(ctx.executed_steps),
        step_seconds=dict(ctx.step_seconds),
        energy_spent_kwh=ctx.energy_spent_kwh,
        worker=worker,
    )


def _gpu_annotation(scale: ScaleParams, runner: Any, setup: WorkerSetup):
    """``dask.annotate(resources={"GPU": 1})`` when candidates run on GPUs: a local cluster
    on a GPU machine, or a remote Dask cluster whose workers declare a ``GPU`` resource."""
    import dask

    if setup.gpus:
        return dask.annotate(resources={"GPU": 1})
    if scale.cluster is not None and scale.cluster.startswith("tcp://"):
        workers = runner.client.scheduler_info().get("workers", {})
        if any("GPU" in (w.get("resources") or {}) for w in workers.values()):
            return dask.annotate(resources={"GPU": 1})
    return nullcontext()


def _worker_memory_limits(scale: ScaleParams, runner: Any) -> list[int] | None:
    if scale.cluster is None or not scale.cluster.startswith("tcp://"):
        return None
    workers = runner.client.scheduler_info().get("workers", {})
    if not workers:
        raise UserError(f"--cluster {scale.cluster}: the scheduler has no workers")
    return [int(w.get("memory_limit") or 0) for w in workers.values()]


def evaluate_parallel(
    ctx: RunContext, candidates: list[CandidateSpec], scale: ScaleParams
) -> list[dict[str, Any]]:
    """Evaluate ``candidates`` on ``scale``'s task runner; rows in the candidates' order.

    A candidate whose worker died (twice: it is rescheduled once) is a FAILED row; a
    programmer's error or bad input raised in a worker propagates as it would in the
    sequential path.
    """
    from prefect.futures import as_completed

    from ecocompress.flows.scale import check_memory, memory_per_worker, task_runner
    from ecocompress.metrics import tracking

    per_worker = memory_per_worker(ctx.reference.path, ctx.params.batch_size)
    if scale.workers is not None:
        check_memory(scale, per_worker, None)
    shared = {k: v for k, v in asdict_shallow(ctx).items() if k in SHARED_FIELDS}
    setup = WorkerSetup(
        threads=scale.threads_per_worker(),
        results=os.environ.get(RESULTS_ENV),
        gpus=gpu_count() if scale.workers is not None else 0,
    )
    progress = ctx.progress
    where = f"{scale.workers} local workers" if scale.workers else scale.cluster
    progress.note(f"evaluating {len(candidates)} candidates on {where} ...")
    rows: list[dict[str, Any] | None] = [None] * len(candidates)
    try:
        with task_runner(scale) as runner:
            if scale.cluster is not None:
                check_memory(scale, per_worker, _worker_memory_limits(scale, runner))
            futures = {}
            with _gpu_annotation(scale, runner, setup):
                for i, cand in enumerate(candidates):
                    fut = runner.submit(
                        candidate_task, parameters={"shared": shared, "cand": cand, "setup": setup}
                    )
                    futures[fut] = i
            for fut in as_completed(list(futures)):
                i = futures[fut]
                cand = candidates[i]
                progress.start_candidate(cand.label)
                try:
                    out = fut.result()
                except (UserError, *_raise_types()):
                    raise
                except Exception as exc:  # the worker died with it (twice), or the engine failed
                    reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                    rows[i] = {
                        "candidate": cand.label,
                        **cand.flat(),
                        "limit": ctx.params.limit,
                        "status": Status.FAILED.value,
                        "failure_reason": reason,
                    }
                    progress.failed(cand.label, reason)
                    _crashed(fut.task_run_id, reason)
                    continue
                ctx.executed_steps.extend(out.executed_steps)
                ctx.step_seconds.update(out.step_seconds)
                ctx.energy_spent_kwh += out.energy_spent_kwh
                out.row["worker"] = out.worker
                rows[i] = out.row
                if out.row["status"] == Status.OK.value:
                    progress.done(cand.label, bool(out.row.get("cache_hit")))
                else:
                    progress.failed(cand.label, str(out.row.get("failure_reason")))
    finally:
        # child runs of workers that died mid-candidate, or with the cluster on an interrupt:
        # FAILED ("process died"), never RUNNING
        tracking.close_dead_runs()
    return [r for r in rows if r is not None]


def _crashed(task_run_id: Any, reason: str) -> None:
    """Its task run ends Crashed, not RUNNING, when the worker running it died."""
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        run = client.read_task_run(task_run_id)
        if run.state is None or not run.state.is_final():
            client.set_task_run_state(task_run_id, Crashed(message=reason), force=True)


def _raise_types() -> tuple[type[BaseException], ...]:
    from ecocompress.tasks.errors import EXCEPTIONS_TO_RAISE

    return tuple(EXCEPTIONS_TO_RAISE)


def asdict_shallow(ctx: RunContext) -> dict[str, Any]:
    """``ctx``'s fields by name, not copied (``dataclasses.asdict`` would deep-copy them)."""
    return {k: getattr(ctx, k) for k in ctx.__dataclass_fields__}
