"""The optimize flow: a LangGraph node chooses the next candidate, Prefect runs it through
the sweep's cached tasks, the frontier is updated; repeat until a budget or goal stops it.

Resuming: the decision graph's state is checkpointed in SQLite under
``$ECOCOMPRESS_HOME/agent/`` per thread id, every finished step is in the task caches,
and the parent and child MLflow runs carry the thread id and evaluation index, so a
command killed mid-candidate and re-run with the same ``--thread-id`` re-opens its own
runs and re-executes only the steps that had not finished.
"""

from __future__ import annotations

import json
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow

from ecocompress.agents.graph import (
    build_graph,
    run_search,
    sqlite_checkpointer,
    thread_exists,
    view_of,
)
from ecocompress.agents.llm import llm_counts
from ecocompress.agents.settings import SearchSettings
from ecocompress.flows.candidate import INTERRUPTS, evaluate_candidate
from ecocompress.flows.events import OWN_VERSION_TAG
from ecocompress.flows.parallel import CandidateOutcome, CandidatePool, Job, report
from ecocompress.flows.params import RunParams
from ecocompress.flows.scale import ScaleParams, results_env
from ecocompress.flows.sweep import _objectives, finish, open_context
from ecocompress.metrics.recommend import PROFILES, Constraints
from ecocompress.metrics.types import Status
from ecocompress.tasks.artifacts import home
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CandidateSpec


def checkpoint_path() -> Path:
    from ecocompress.flows.preflight import CHECKPOINTS

    path = home() / CHECKPOINTS
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def load_chat_model(spec: str | None) -> Any:
    """``local:<smollm2 | .gguf file | model folder>`` (a transformers model on this machine,
    structured output by constrained decoding: agents/local_chat.py),
    ``python:pkg.module:factory`` (a callable returning a LangChain chat model) or
    ``provider:model`` for ``langchain.chat_models.init_chat_model`` (extra ``llm``)."""
    if not spec:
        raise UserError(
            "policy llm needs --llm: local:smollm2, provider:model or python:pkg.module:factory"
        )
    if spec.startswith("local:"):
        from ecocompress.agents.local_chat import load_local_chat_model

        return load_local_chat_model(spec[len("local:") :])
    if spec.startswith("python:"):
        import importlib

        mod, _, attr = spec[len("python:") :].partition(":")
        try:
            return getattr(importlib.import_module(mod), attr)()
        except (ImportError, AttributeError) as exc:
            raise UserError(f"--llm {spec!r}: cannot load the factory ({exc})") from None
    try:
        from langchain.chat_models import init_chat_model
    except ImportError:
        raise UserError(
            "--llm provider:model needs the optional extra: pip install 'ecocompress[llm]'"
        ) from None
    return init_chat_model(spec)


@flow(name="ecocompress-optimize", log_prints=False)
def optimize_flow(
    params: RunParams,
    settings: SearchSettings,
    thread_id: str | None = None,
    profile: str | None = None,
    register_model: bool = True,
    llm: str | None = None,
    quiet: bool = False,
    scale: ScaleParams | None = None,
) -> dict[str, Any]:
    """Search the space with ``settings.policy`` until a stop condition holds.

    ``scale``: where each batch of ``settings.batch`` proposals runs (flows/scale.py); by
    default one after another here.

    Returns the sweep summary (rows of every candidate, frontier, hypervolume) plus the
    stop reason, the decisions, the recommendation and the registered model version.
    """
    with results_env(scale):
        return _optimize(params, settings, thread_id, profile, register_model, llm, quiet, scale)


def _optimize(
    params: RunParams,
    settings: SearchSettings,
    thread_id: str | None,
    profile: str | None,
    register_model: bool,
    llm: str | None,
    quiet: bool,
    scale: ScaleParams | None,
) -> dict[str, Any]:
    from prefect.runtime import flow_run

    from ecocompress.metrics import tracking
    from ecocompress.metrics.carbon import co2_kg

    # a scheduled run names its thread after its flow run: each run is a new search
    thread_id = thread_id or f"opt-{str(flow_run.id)[:8]}"
    graph = build_graph(
        sqlite_checkpointer(str(checkpoint_path())),
        chat_model=load_chat_model(llm) if settings.policy == "llm" else None,
    )
    run = params.model_dump(mode="json")  # stored with the thread: a resume must match it
    resumed = thread_exists(graph, thread_id, settings, run)  # before any work
    objectives = _objectives(params)
    ctx = open_context(
        params,
        "optimize",
        f"optimize-{settings.policy}",
        quiet=quiet,
        total=settings.max_candidates,
        extra_params={
            "policy": settings.policy,
            "search_settings": settings.canonical()[:6000],
            "profile": profile or "none",
        },
        resume_tags={"optimize_thread_id": thread_id, "command": "optimize"},
    )
    if resumed:
        ctx.progress.note(f"resuming thread {thread_id}")

    def job(prop: dict[str, Any], index: int) -> Job:
        """The proposal as ``evaluate_candidate``'s arguments: its items, rung and tags, and
        the child run to continue when an interrupted search evaluated it before."""
        cand = CandidateSpec.model_validate_json(prop["key"])
        values = graph.get_state({"configurable": {"thread_id": thread_id}}).values
        proposed = [d for d in values.get("decisions", []) if d.get("event") == "propose"]
        seen = next(
            (d.get("state_seen") for d in reversed(proposed) if d.get("index") == index),
            proposed[-1].get("state_seen") if proposed else None,
        )
        tags = {
            "optimize_thread_id": thread_id,
            "evaluation_index": str(index),
            **({"rung": str(prop["rung"])} if "rung" in prop else {}),
            "proposed_by": prop["policy"],
            "decision_kind": prop["kind"],
            "decision_reason": prop["reason"][:4000],
            "decision_state": json.dumps(seen, default=str)[:4000],
        }
        prior = [
            r
            for r in tracking.find_runs(
                ctx.experiment_id,
                {"optimize_thread_id": thread_id, "evaluation_index": str(index)},
            )
            if r.data.tags.get("mlflow.parentRunId") == ctx.parent_run_id
        ]
        options = {
            "limit": prop["limit"],
            "run_id": prior[0].info.run_id if prior else None,
            "tags": tags,
            "benchmarks": prop.get("benchmarks"),
            "ppl_tokens": prop.get("ppl_tokens"),
        }
        return Job(cand, options, limit=prop["limit"])

    def label(prop: dict[str, Any]) -> str:
        rung = f" rung {prop['rung']}" if "rung" in prop else ""
        return f"{prop['label']}  [{prop['policy']}: {prop['kind']}{rung}]"

    def observation(
        prop: dict[str, Any], index: int, row: dict[str, Any], wall_s: float, energy_kwh: float
    ) -> dict[str, Any]:
        if "rung" in prop:
            row.update(rung=prop["rung"], benchmarks=prop["benchmarks"])
        row.update(
            key=prop["key"],
            limit=prop["limit"],
            wall_s=wall_s,
            emitted_co2_kg=co2_kg(energy_kwh, ctx.intensity_g_per_kwh) or 0.0,
            policy=prop["policy"],
            evaluation_index=index,
        )
        # the observation is stored in the LangGraph checkpoint: JSON types only
        return json.loads(json.dumps(row, default=str))

    def evaluate(prop: dict[str, Any], index: int) -> dict[str, Any]:
        j = job(prop, index)
        ctx.progress.start_candidate(label(prop))
        e0, t0 = ctx.energy_spent_kwh, time.perf_counter()
        row = evaluate_candidate(ctx, j.cand, **j.options)
        return observation(prop, index, row, time.perf_counter() - t0, ctx.energy_spent_kwh - e0)

    pool: CandidatePool | None = None

    def evaluate_batch(items: list[tuple[int, dict[str, Any]]], done) -> None:
        """The batch on the pool's workers; each member checkpointed as it finishes."""
        assert pool is not None
        ctx.progress.note(f"evaluating {len(items)} proposals on {pool.where} ...")

        def on_result(i: int, out: CandidateOutcome) -> None:
            index, prop = items[i]
            ctx.progress.start_candidate(label(prop))
            report(ctx.progress, prop["label"], out.row)
            done(index, observation(prop, index, out.row, out.wall_s, out.energy_spent_kwh))

        pool.run([job(prop, index) for index, prop in items], on_result)

    try:
        if scale is not None and scale.parallel:
            pool = CandidatePool(ctx, scale)  # checks the memory a worker needs
        with pool or nullcontext():
            values = run_search(
                graph,
                thread_id,
                settings,
                evaluate,
                run,
                evaluate_batch=evaluate_batch if pool is not None else None,
            )
        # one row per candidate, its highest-fidelity evaluation, in first-seen order
        rows = list(view_of(settings, values.get("history", [])).latest().values())
        if settings.fidelities:
            # the frontier is taken on full evaluations only: a candidate eliminated at a
            # lower rung stays in the table, marked, out of the Pareto step
            top = len(settings.fidelities) - 1
            rows = [
                r
                if r.get("status") != Status.OK or int(r.get("rung") or 0) == top
                else {
                    **r,
                    "status": Status.ELIMINATED.value,
                    "eliminated_at_rung": int(r.get("rung") or 0),
                }
                for r in rows
            ]
        summary = finish(ctx, rows, objectives, z=settings.z)
        out = _conclude(ctx, values, rows, settings, profile, register_model, thread_id)
    except INTERRUPTS:
        tracking.end_run(ctx.parent_run_id, "KILLED")
        raise
    except BaseException:
        tracking.end_run(ctx.parent_run_id, "FAILED")
        raise
    finally:
        ctx.holds.close()
    summary.update(out)
    counts = llm_counts(values.get("decisions", [])) if settings.policy == "llm" else {}
    summary.update(counts)
    summary["search_co2_kg"] = co2_kg(ctx.energy_spent_kwh, ctx.intensity_g_per_kwh)
    tracking.log_metrics(
        ctx.parent_run_id,
        {
            "search_energy_kwh": ctx.energy_spent_kwh,
            "search_co2_kg": summary["search_co2_kg"],
            "search_co2_kg_all_sessions": values["spent"].get("co2_kg", 0.0),
            "evaluations": float(values["spent"].get("evaluations", 0)),
            # how the llm's answers went: valid, invalid (asked again), fallbacks to agent
            **{k: float(n) for k, n in counts.items()},
        },
    )
    tracking.end_run(ctx.parent_run_id, "FINISHED" if summary["n_ok"] else "FAILED")
    return summary


def _conclude(
    ctx: Any,
    values: dict[str, Any],
    rows: list[dict[str, Any]],
    settings: SearchSettings,
    profile: str | None,
    register_model: bool,
    thread_id: str,
) -> dict[str, Any]:
    """Log decisions.json and the recommendation; register the recommended candidate."""
    import pandas as pd

    from ecocompress.metrics import tracking
    from ecocompress.metrics.recommend import recommend

    view = view_of(settings, values.get("history", []))
    ref = view.reference_row()
    constraints = Constraints(
        memory_limit_gb=settings.memory_limit_gb,
        latency_limit_ms=settings.latency_limit_ms,
        accuracy_drop=settings.accuracy_drop,
        reference_accuracy=ref.get("accuracy") if ref else None,
    )
    ok = [r for r in rows if r.get("status") == "ok"]
    rec = recommend(pd.DataFrame(ok), settings.weights, constraints) if ok else None
    rec_dict = (
        {
            "candidate": rec.label,
            "reason": rec.reason,
            "weights": settings.weights,
            "profile": profile,
            "alias": profile or settings_alias(settings),
            "constraints": {
                "memory_limit_gb": settings.memory_limit_gb,
                "latency_limit_ms": settings.latency_limit_ms,
                "accuracy_drop": settings.accuracy_drop,
                "reference_accuracy": constraints.reference_accuracy,
            },
            "ranking": rec.ranking,
            "infeasible": rec.infeasible,
        }
        if rec
        else {"candidate": None, "reason": "no candidate finished"}
    )
    tracking.log_dict(
        ctx.parent_run_id,
        {
            "thread_id": thread_id,
            "policy": settings.policy,
            "settings": settings.model_dump(mode="json"),
            "stop_reason": values.get("stop_reason"),
            "spent": values.get("spent"),
            "decisions": values.get("decisions", []),
        },
        "decisions.json",
    )
    tracking.log_dict(ctx.parent_run_id, rec_dict, "recommendation.json")
    tracking.set_tags(
        ctx.parent_run_id,
        {
            "stop_reason": str(values.get("stop_reason"))[:4000],
            "recommended": str(rec_dict["candidate"]),
        },
    )
    version = None
    if register_model and rec is not None and rec.row is not None:
        version = _register(ctx, rec.row, rec_dict, profile)
    return {
        "stop_reason": values.get("stop_reason"),
        "decisions": values.get("decisions", []),
        "recommendation": rec_dict,
        "registered_version": version,
        "thread_id": thread_id,
        "evaluations": int(values["spent"].get("evaluations", 0)),
        "history": values.get("history", []),
        "spent": values.get("spent", {}),
    }


def settings_alias(settings: SearchSettings) -> str:
    """The registry alias when no profile was named: ``balanced`` for its default weights."""
    return "balanced" if dict(settings.weights) == dict(PROFILES["balanced"].weights) else "custom"


def registered_name(ctx: Any) -> str:
    import re

    base = ctx.params.experiment or Path(ctx.reference.model_name).name
    return "ecocompress-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-")


def _register(ctx: Any, row: dict[str, Any], rec: dict[str, Any], profile: str | None) -> str:
    """Log the candidate's recipe on its run and register it with lineage and alias."""
    from ecocompress.metrics import tracking
    from ecocompress.tasks.cache_pins import PIN_TAG, pin_tag
    from ecocompress.tasks.prune import checkpoint_path

    cand = CandidateSpec.model_validate_json(row["key"])
    ref = ctx.reference
    data_dir = Path(ctx.params.data_dir) if ctx.params.data_dir else None
    # the cache entries this version needs (its weights and its reference): gc keeps them
    pins = pin_tag([ref.path, *filter(None, [checkpoint_path(ref, cand.prune, data_dir)])])
    recipe = {
        "candidate": cand.label,
        "reference": {
            "model": ctx.params.model,
            "model_name": ref.model_name,
            "revision": ref.revision,
            "content_hash": ref.content_hash,
        },
        "prune_spec": json.loads(cand.prune.canonical()),
        "quant_spec": json.loads(cand.quant.canonical()),
        "candidate_id": row.get("candidate_id"),
        "recommendation": {k: rec[k] for k in ("reason", "weights", "profile", "constraints")},
        "rebuild": (
            f"ecocompress evaluate --model {ctx.params.model} --bits {cand.quant.bits} "
            + (f"--quant-backend {cand.quant.backend} " if cand.quant.backend != "none" else "")
            + f"--prune {cand.prune.method} --sparsity {cand.prune.sparsity:g} "
            f"--pattern {cand.prune.pattern}"
        ),
    }
    tracking.log_dict(row["run_id"], recipe, "candidate/recipe.json")
    alias = profile or rec.get("alias") or "custom"
    return tracking.register_candidate(
        registered_name(ctx),
        row["run_id"],
        "candidate",
        alias,
        tags={
            OWN_VERSION_TAG: "true",
            "reference_content_hash": ref.content_hash,
            "reference_model": ctx.params.model,
            "prune_spec": cand.prune.canonical(),
            "quant_spec": cand.quant.canonical(),
            "candidate_id": row.get("candidate_id"),
            "candidate": cand.label,
            "profile": alias,
            PIN_TAG: pins,
        },
        description=f"{cand.label}: {rec['reason']}",
    )
