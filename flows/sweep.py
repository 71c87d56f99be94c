"""The sweep flow: validate inputs, resolve the model, evaluate every candidate, then gate
the results table and update the Pareto frontier. ``evaluate`` is a sweep of one.

MLflow: one parent run per command, one child run per candidate (see flows/candidate.py);
the parent carries pareto.json/csv/html, the results table and the search's own energy.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from prefect import flow

from ecocompress.flows.candidate import INTERRUPTS, RunContext, evaluate_candidate
from ecocompress.flows.params import RunParams
from ecocompress.flows.progress import Progress
from ecocompress.flows.scale import ScaleParams, results_env
from ecocompress.flows.steps import data_hash, download_step
from ecocompress.tasks.cache import hold
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CandidateSpec


def prepare_data(params: RunParams) -> tuple[dict[str, str], str]:
    """Validate the benchmark files (great-expectations gate) and hash them for cache keys.

    Returns per-benchmark data hashes and the hash of the Wanda calibration text.
    """
    from ecocompress.tasks.evaluate import benchmark_data_files, validate_benchmark_data

    data_dir = Path(params.data_dir) if params.data_dir else None
    hashes: dict[str, str] = {}
    for spec in params.eval_specs():
        if data_dir is not None:
            validate_benchmark_data(spec, data_dir)
        hashes[spec.benchmark] = data_hash(benchmark_data_files(spec, data_dir))
    calib = ""
    if data_dir is not None:
        from ecocompress.tasks.benchmarks.wikitext import WIKITEXT_TEST

        wt = data_dir / WIKITEXT_TEST
        calib = data_hash([wt]) if wt.is_file() else "missing"
    return hashes, calib


def results_frame(rows: list[dict[str, Any]]):
    import pandas as pd

    return pd.DataFrame(rows)


@flow(name="ecocompress-sweep", log_prints=False)
def sweep_flow(
    params: RunParams,
    candidates: list[CandidateSpec],
    command: str = "sweep",
    quiet: bool = False,
    scale: ScaleParams | None = None,
) -> dict[str, Any]:
    """Evaluate ``candidates`` on ``params.benchmarks`` and keep the Pareto frontier.

    ``scale``: where candidates run (flows/scale.py); by default one after another here.

    Returns a summary: results rows, frontier, hypervolume, MLflow run ids and the list
    of steps that actually executed (empty when everything came from the caches).
    """
    with results_env(scale):
        return _sweep(params, candidates, command, quiet, scale)


def _sweep(
    params: RunParams,
    candidates: list[CandidateSpec],
    command: str,
    quiet: bool,
    scale: ScaleParams | None,
) -> dict[str, Any]:
    from ecocompress.metrics import tracking
    from ecocompress.metrics.carbon import co2_kg

    ctx = open_context(
        params,
        command,
        f"{command}-{len(candidates)}-candidates",
        quiet=quiet,
        total=len(candidates),
        extra_params={"n_candidates": len(candidates)},
    )
    objectives = _objectives(params)
    progress = ctx.progress
    parent = ctx.parent_run_id
    rows: list[dict[str, Any]] = []
    try:
        if scale is not None and scale.parallel:
            from ecocompress.flows.parallel import evaluate_parallel

            rows = evaluate_parallel(ctx, candidates, scale)
        else:
            for cand in candidates:
                progress.start_candidate(cand.label)
                rows.append(evaluate_candidate(ctx, cand))
        summary = finish(ctx, rows, objectives)
    except INTERRUPTS:
        tracking.end_run(parent, "KILLED")
        raise
    except BaseException:
        tracking.end_run(parent, "FAILED")
        raise
    finally:
        ctx.holds.close()
    summary["search_co2_kg"] = co2_kg(ctx.energy_spent_kwh, ctx.intensity_g_per_kwh)
    tracking.log_metrics(
        parent,
        {"search_energy_kwh": ctx.energy_spent_kwh, "search_co2_kg": summary["search_co2_kg"]},
    )
    tracking.end_run(parent, "FINISHED" if summary["n_ok"] else "FAILED")
    return summary


def _objectives(params: RunParams) -> list:
    from ecocompress.metrics.types import parse_objectives

    return parse_objectives(params.objectives)


def _check_resumed_params(old: str | None, params: RunParams, tags: dict | None) -> None:
    """A re-opened parent run must have been started with the same evaluation settings
    (threads checkpointed before they stored them are checked here, against MLflow).

    Raises:
        UserError: naming the settings that differ.
    """
    from ecocompress.agents.graph import differing

    try:
        before = json.loads(old) if old else None
    except json.JSONDecodeError:  # cut at MLflow's length limit: nothing to compare
        before = None
    if not isinstance(before, dict):
        return
    diff = differing(before, params.model_dump(mode="json"))
    if diff:
        thread = (tags or {}).get("optimize_thread_id", "?")
        verb = "differs" if len(diff) == 1 else "differ"
        raise UserError(
            f"thread {thread!r} was started with other settings ({', '.join(diff)} {verb}): "
            "resume it with the same command, or pass a new --thread-id"
        )


def open_context(
    params: RunParams,
    command: str,
    run_name: str,
    *,
    quiet: bool = False,
    total: int | None = None,
    extra_params: dict[str, Any] | None = None,
    extra_tags: dict[str, str] | None = None,
    resume_tags: dict[str, str] | None = None,
) -> RunContext:
    """Validate inputs, resolve the model and open (or re-open) the command's parent run.

    With ``resume_tags``, an existing parent run carrying those tags (a resumed
    ``optimize``) is re-opened instead of creating a new one; a new one carries them.
    """
    from prefect.runtime import flow_run

    from ecocompress.metrics import tracking
    from ecocompress.metrics.carbon import resolve_intensity

    _objectives(params)  # fail fast on bad objectives, before any work
    tracking.close_dead_runs()  # runs of commands that were killed: FAILED, "process died"
    intensity, intensity_source = resolve_intensity(params.country, params.carbon_intensity)
    if params.data_dir is None:
        import huggingface_hub.constants as hc

        if hc.HF_HUB_OFFLINE:
            raise UserError(
                "the Hub is offline (HF_HUB_OFFLINE=1): pass --data-dir with the benchmark files"
            )
    data_hashes, calib_hash = prepare_data(params)
    progress = Progress(total=total, quiet=quiet)
    progress.note(f"resolving model {params.model} ...")
    reference = download_step(params.model, params.revision)

    experiment = params.experiment_name()
    experiment_id = tracking.get_or_create_experiment(experiment)
    provenance = tracking.provenance_tags()
    flow_run_id = str(flow_run.id or "none")
    previous = [
        r
        for r in (tracking.find_runs(experiment_id, resume_tags) if resume_tags else [])
        if "mlflow.parentRunId" not in r.data.tags
    ]
    if previous:
        parent = previous[0].info.run_id
        _check_resumed_params(previous[0].data.params.get("run_params"), params, resume_tags)
        tracking.reopen_run(parent)
    else:
        parent = tracking.start_parent_run(
            experiment,
            run_name=run_name,
            params={
                "model": params.model,
                "benchmarks": ",".join(params.benchmarks),
                "limit": params.limit if params.limit is not None else "none",
                "country": params.country,
                "carbon_intensity_g_per_kwh": intensity,
                "objectives": params.objectives,
                "data_dir": params.data_dir or "hub",
                "run_params": params.canonical(),
                **(extra_params or {}),
            },
            tags={
                **provenance,
                "command": command,
                "prefect_flow_run_id": flow_run_id,
                "model_content_hash": reference.content_hash,
                "model_revision": reference.revision or "none",
                "screening": str(params.screening).lower(),
                "carbon_intensity_source": intensity_source,
                **(extra_tags or {}),
                **(resume_tags or {}),
            },
        )
    # Hold the converted reference for the whole command so `cache gc` leaves it alone; one
    # evicted since it was resolved is resolved (converted) again, under the hold.
    with ExitStack() as stack:
        if not stack.enter_context(hold(reference.path)):
            reference = download_step(params.model, params.revision)
        holds = stack.pop_all()
    return RunContext(
        params=params,
        reference=reference,
        experiment_id=experiment_id,
        parent_run_id=parent,
        data_hashes=data_hashes,
        calib_hash=calib_hash,
        intensity_g_per_kwh=intensity,
        intensity_source=intensity_source,
        flow_run_id=flow_run_id,
        provenance=provenance,
        progress=progress,
        holds=holds,
    )


def finish(
    ctx: RunContext, rows: list[dict[str, Any]], objectives: list, z: float | None = None
) -> dict[str, Any]:
    """Gate the results table, compute the frontier and write/log the Pareto artifacts.

    ``z`` (default ``--noise-z``): the frontier is taken beyond noise (a candidate is
    dominated only by one better beyond ``z`` standard errors); the plain frontier is kept
    as ``on_front_plain``. The hypervolume is the plain one either way."""
    from ecocompress.metrics import tracking
    from ecocompress.metrics.pareto import hypervolume, pareto_front
    from ecocompress.metrics.report import write_pareto_report
    from ecocompress.metrics.validation import validate_results_table

    df = results_frame(rows)
    ok = df[df["status"] == "ok"] if len(df) else df
    if len(ok):
        validate_results_table(ok)
    z = ctx.params.noise_z if z is None else z
    front = pareto_front(df, objectives, z=z)
    on_front = front[front["on_front"] == True]  # noqa: E712 - pandas element-wise
    # Normalisation bounds: min/max over this command's ok candidates (recorded in pareto.json).
    # With fewer than two ok candidates that is degenerate: no hypervolume (None).
    n_ok = int((df["status"] == "ok").sum()) if len(df) else 0
    hv = hypervolume(front, objectives)
    out_dir = Path(tempfile.mkdtemp(prefix="ecocompress-pareto-"))
    files = write_pareto_report(
        front,
        objectives,
        out_dir,
        title=f"{ctx.params.model}: Pareto frontier",
        screening=ctx.params.screening,
        z=z,
    )
    for f in files.values():
        tracking.log_artifact(ctx.parent_run_id, str(f))
    (out_dir / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    (out_dir / "steps.json").write_text(
        json.dumps({"executed": ctx.executed_steps, "wall_seconds": ctx.step_seconds}, indent=1)
    )
    tracking.log_artifact(ctx.parent_run_id, str(out_dir / "steps.json"))
    tracking.log_artifact(ctx.parent_run_id, str(out_dir / "results.json"))
    metrics = {
        "n_candidates": float(len(rows)),
        "n_failed": float(len(rows) - n_ok),
        "n_on_front": float(len(on_front)),
    }
    if z is not None:
        metrics["noise_z"] = float(z)
    if hv is not None:
        metrics["hypervolume"] = hv
    tracking.log_metrics(ctx.parent_run_id, metrics)
    ui_url = tracking.publish_comparison(ctx.experiment_id, objectives, front)
    return {
        "rows": rows,
        "front": front,
        "hypervolume": hv,
        "parent_run_id": ctx.parent_run_id,
        "experiment_id": ctx.experiment_id,
        "executed_steps": list(ctx.executed_steps),
        "step_seconds": dict(ctx.step_seconds),
        "n_ok": n_ok,
        "report_dir": str(out_dir),
        "screening": ctx.params.screening,
        "energy_spent_kwh": ctx.energy_spent_kwh,
        "ui_url": ui_url,
    }
