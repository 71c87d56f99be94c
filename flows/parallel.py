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
import time
from collections.abc import Callable
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass, field
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
    """How a worker process runs candidates: torch threads, results folder, GPU slot, and
    the command's home (caches) and MLflow store, so a worker of a remote cluster writes its
    child runs where the parent run is (a path there must be shared, or the store a server)."""

    threads: int | None
    results: str | None
    gpus: int  # GPUs of a local cluster's machine, one per worker (0: none or remote)
    home: str
    tracking_uri: str


@dataclass
class CandidateOutcome:
    """What a worker sends back for one candidate."""

    row: dict[str, Any]
    executed_steps: list[str]
    step_seconds: dict[str, float]
    energy_spent_kwh: float
    worker: str
    wall_s: float  # the candidate's evaluation in the worker


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
    os.environ["ECOCOMPRESS_HOME"] = setup.home
    os.environ["MLFLOW_TRACKING_URI"] = setup.tracking_uri
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
def candidate_task(
    shared: dict[str, Any],
    cand: CandidateSpec,
    setup: WorkerSetup,
    options: dict[str, Any] | None = None,
):
    """Evaluate one candidate in a worker (``options``: ``evaluate_candidate``'s keyword
    arguments, e.g. an optimize proposal's limit, tags and run id); returns its
    ``CandidateOutcome``."""
    worker = _prepare_worker(setup)
    ctx = RunContext(**shared, progress=Progress(total=None, quiet=True))
    t0 = time.perf_counter()
    row = evaluate_candidate(ctx, cand, **(options or {}))
    return CandidateOutcome(
        row=row,
        executed_steps=list(ctx.executed_steps),
        step_seconds=dict(ctx.step_seconds),
        energy_spent_kwh=ctx.energy_spent_kwh,
        worker=worker,
        wall_s=time.perf_counter() - t0,
    )


def _gpu_annotation(scale: ScaleParams, runner: Any, setup: WorkerSetup):
    """One GPU per candidate when candidates run on GPUs: ``dask.annotate(resources={"GPU":
    1})`` on a local cluster of a GPU machine or a remote Dask cluster whose workers declare
    a ``GPU`` resource; prefect-ray's ``remote_options(num_gpus=1)`` on a Ray cluster with
    GPUs."""
    import dask

    if setup.gpus:
        return dask.annotate(resources={"GPU": 1})
    if _is_ray(scale):
        import ray

        if ray.cluster_resources().get("GPU"):
            from prefect_ray.context import remote_options

            return remote_options(num_gpus=1)
        return nullcontext()
    if scale.cluster is not None:
        workers = runner.client.scheduler_info().get("workers", {})
        if any("GPU" in (w.get("resources") or {}) for w in workers.values()):
            return dask.annotate(resources={"GPU": 1})
    return nullcontext()


def _is_ray(scale: ScaleParams) -> bool:
    return scale.cluster is not None and scale.cluster.startswith("ray://")


def _worker_memory_limits(scale: ScaleParams, runner: Any) -> list[int] | None:
    """Memory of each worker of a remote cluster (Dask: its limit; Ray: each live node's)."""
    if scale.cluster is None:
        return None
    if _is_ray(scale):
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if not nodes:
            raise UserError(f"--cluster {scale.cluster}: the Ray cluster has no live node")
        return [int((n.get("Resources") or {}).get("memory") or 0) for n in nodes]
    workers = runner.client.scheduler_info().get("workers", {})
    if not workers:
        raise UserError(f"--cluster {scale.cluster}: the scheduler has no workers")
    return [int(w.get("memory_limit") or 0) for w in workers.values()]


@dataclass
class Job:
    """One candidate for the pool, with ``evaluate_candidate``'s keyword arguments."""

    cand: CandidateSpec
    options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = None  # its items per benchmark (for the row of a dead worker)


class CandidatePool:
    """Candidates on ``scale``'s task runner, the runner started once for every ``run``
    (an optimize search submits one batch per iteration). Use as a context manager."""

    def __init__(self, ctx: RunContext, scale: ScaleParams) -> None:
        from ecocompress.flows.scale import check_memory, memory_per_worker
        from ecocompress.metrics import tracking
        from ecocompress.tasks.artifacts import home

        self.ctx, self.scale = ctx, scale
        self.per_worker = memory_per_worker(ctx.reference.path, ctx.params.batch_size)
        if scale.workers is not None:
            check_memory(scale, self.per_worker, None)
        self.shared = {k: v for k, v in asdict_shallow(ctx).items() if k in SHARED_FIELDS}
        self.setup = WorkerSetup(
            threads=scale.threads_per_worker(),
            results=os.environ.get(RESULTS_ENV),
            gpus=gpu_count() if scale.workers is not None else 0,
            home=str(home()),
            tracking_uri=tracking.tracking_uri(),
        )
        self._stack = ExitStack()
        self.runner: Any = None

    @property
    def where(self) -> str:
        return (
            f"{self.scale.workers} local workers" if self.scale.workers else str(self.scale.cluster)
        )

    def __enter__(self) -> CandidatePool:
        from ecocompress.flows.scale import check_memory, task_runner
        from ecocompress.metrics import tracking

        # child runs of workers that died mid-candidate, or with the cluster on an
        # interrupt: FAILED ("process died"), never RUNNING (runs last, after the runner)
        self._stack.callback(tracking.close_dead_runs)
        try:
            self.runner = self._stack.enter_context(task_runner(self.scale))
            if self.scale.cluster is not None:
                check_memory(
                    self.scale, self.per_worker, _worker_memory_limits(self.scale, self.runner)
                )
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stack.close()

    def run(
        self,
        jobs: list[Job],
        on_result: Callable[[int, CandidateOutcome], None],
    ) -> None:
        """Submit ``jobs``; ``on_result(i, outcome)`` for each as it finishes, in the flow's
        process. A job whose worker died (twice: it is rescheduled once) gets a FAILED row;
        a programmer's error or bad input raised in a worker propagates as it would in the
        sequential path."""
        from prefect.futures import as_completed

        futures = {}
        with _gpu_annotation(self.scale, self.runner, self.setup):
            for i, job in enumerate(jobs):
                fut = self.runner.submit(
                    candidate_task,
                    parameters={
                        "shared": self.shared,
                        "cand": job.cand,
                        "setup": self.setup,
                        "options": job.options,
                    },
                )
                futures[fut] = i
        for fut in as_completed(list(futures)):
            i = futures[fut]
            cand = jobs[i].cand
            try:
                out = fut.result()
            except (UserError, *_raise_types()):
                raise
            except Exception as exc:  # the worker died with it (twice), or the engine failed
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
                _crashed(fut.task_run_id, reason)
                out = CandidateOutcome(
                    row={
                        "candidate": cand.label,
                        **cand.flat(),
                        "limit": jobs[i].limit,
                        "status": Status.FAILED.value,
                        "failure_reason": reason,
                    },
                    executed_steps=[],
                    step_seconds={},
                    energy_spent_kwh=0.0,
                    worker="",
                    wall_s=0.0,
                )
            else:
                self.ctx.executed_steps.extend(out.executed_steps)
                self.ctx.step_seconds.update(out.step_seconds)
                self.ctx.energy_spent_kwh += out.energy_spent_kwh
                out.row["worker"] = out.worker
            on_result(i, out)


def report(progress: Progress, label: str, row: dict[str, Any]) -> None:
    """One finished candidate on the progress display."""
    if row["status"] == Status.OK.value:
        progress.done(label, bool(row.get("cache_hit")))
    else:
        progress.failed(label, str(row.get("failure_reason")))


def evaluate_parallel(
    ctx: RunContext, candidates: list[CandidateSpec], scale: ScaleParams
) -> list[dict[str, Any]]:
    """Evaluate ``candidates`` on ``scale``'s task runner; rows in the candidates' order
    (a candidate whose worker died is a FAILED row: ``CandidatePool.run``)."""
    rows: list[dict[str, Any] | None] = [None] * len(candidates)

    def on_result(i: int, out: CandidateOutcome) -> None:
        ctx.progress.start_candidate(candidates[i].label)
        rows[i] = out.row
        report(ctx.progress, candidates[i].label, out.row)

    with CandidatePool(ctx, scale) as pool:
        ctx.progress.note(f"evaluating {len(candidates)} candidates on {pool.where} ...")
        pool.run([Job(c, limit=ctx.params.limit) for c in candidates], on_result)
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
