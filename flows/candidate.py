"""Evaluate one candidate, top to bottom: prune -> quantize -> measure -> evaluate each
benchmark -> carbon; log it all to one MLflow child run.

A candidate that fails (out of memory, an unsupported layer, NaN) is recorded FAILED with
its reason and traceback and the caller goes on; a programmer's error
(``tasks.errors.EXCEPTIONS_TO_RAISE``) and an interruption mark the child run FAILED (never
FINISHED with partial numbers) and propagate.
"""

from __future__ import annotations

import math
import os
import signal
import time
import traceback
from collections.abc import Callable
from contextlib import AbstractContextManager, ExitStack, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.exceptions import TerminationSignal

from ecocompress.flows import records
from ecocompress.flows.params import RunParams
from ecocompress.flows.progress import Progress
from ecocompress.flows.steps import (
    RESULT_KEYS,
    carbon_step,
    evaluate_step,
    measure_step,
    prune_step,
    quantize_step,
    return_type,
)
from ecocompress.metrics.types import Status
from ecocompress.tasks.artifacts import ModelRef
from ecocompress.tasks.benchmarks import get_benchmark
from ecocompress.tasks.benchmarks.result import BenchmarkResult
from ecocompress.tasks.cache import hold
from ecocompress.tasks.errors import EXCEPTIONS_TO_RAISE, UserError
from ecocompress.tasks.prune import checkpoint_path
from ecocompress.tasks.specs import CandidateSpec

# What ends a command early: Ctrl-C, and SIGTERM (Prefect raises TerminationSignal while its
# flow runs; flows/interrupts.py turns it into KeyboardInterrupt outside). The candidate in
# progress is FAILED, the command's parent run KILLED, and the CLI exits 130.
INTERRUPTS: tuple[type[BaseException], ...] = (KeyboardInterrupt, TerminationSignal)


@dataclass
class RunContext:
    """What every candidate of one command shares."""

    params: RunParams
    reference: ModelRef
    experiment_id: str
    parent_run_id: str
    data_hashes: dict[str, str]
    calib_hash: str
    intensity_g_per_kwh: float
    intensity_source: str
    flow_run_id: str
    provenance: dict[str, str]
    progress: Progress
    executed_steps: list[str] = field(default_factory=list)
    step_seconds: dict[str, float] = field(default_factory=dict)  # wall s, this command
    energy_spent_kwh: float = 0.0
    holds: ExitStack = field(default_factory=ExitStack)  # cache entries the command uses


def _run(
    ctx: RunContext,
    label: str,
    what: str,
    step: Any,
    refresh: bool | Callable[[], bool] = False,
    **kwargs: Any,
) -> Any:
    """Return a cached task's result from its JSON record, or run the Prefect task (and
    record its result); returns ``(value, whether it was a cache hit)``.

    The step runs under its key's lock (``records.computing``): a worker that finds it
    being computed waits, then reads the record.

    ``refresh``: run it even if a result is recorded (the checkpoint it names was evicted
    or found corrupt); a callable is asked again under the lock (another worker may have
    rebuilt the checkpoint meanwhile).
    """
    ctx.progress.step(label, what)
    t0 = time.perf_counter()
    key_fn = RESULT_KEYS.get(step.name)
    hit, value = False, None
    if key_fn is not None and not refresh:
        hit, value = records.load(step.name, key_fn(kwargs), return_type(step))
    if not hit and key_fn is None:
        value = step(**kwargs, return_state=True).result()  # re-raises the task's exception
    elif not hit:
        key = key_fn(kwargs)
        with records.computing(key):  # a worker computing it now: wait, then read its record
            if not (refresh() if callable(refresh) else refresh):
                hit, value = records.load(step.name, key, return_type(step))
            if not hit:
                value = step(**kwargs, return_state=True).result()
                records.save(step.name, key, value, return_type(step))
    ctx.step_seconds[f"{label}:{what}"] = time.perf_counter() - t0
    if not hit:
        ctx.executed_steps.append(f"{label}:{what}")
        _fault_injection(ctx)
    return value, hit


def _fault_injection(ctx: RunContext) -> None:
    """Test hook: ``ECOCOMPRESS_TEST_SIGKILL_AFTER_STEPS=N`` kills this process with SIGKILL
    right after its N-th executed step, as a crash or an OOM kill would (the kill-and-resume
    test uses it to stop the process at a known point)."""
    n = os.environ.get("ECOCOMPRESS_TEST_SIGKILL_AFTER_STEPS")
    if n and len(ctx.executed_steps) >= int(n):
        os.kill(os.getpid(), signal.SIGKILL)


def evaluate_candidate(
    ctx: RunContext,
    cand: CandidateSpec,
    *,
    limit: int | None | str = "params",
    run_id: str | None = None,
    tags: dict[str, str] | None = None,
    benchmarks: list[str] | None = None,
    ppl_tokens: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``cand`` and return its results-table row (``status`` ok or failed).

    Args:
        limit: items per benchmark; by default the command's ``--limit``.
        run_id: an existing child run to continue (a resumed search) instead of a new one.
        tags: extra tags of the child run (e.g. the decision that proposed it).
        benchmarks: a subset of the command's benchmarks (a multi-fidelity rung).
        ppl_tokens: the perplexity token budget, instead of the command's.
    """
    from ecocompress.metrics import tracking

    update: dict[str, Any] = {} if limit == "params" else {"limit": limit}
    if benchmarks is not None:
        unknown = set(benchmarks) - set(ctx.params.benchmarks)
        if unknown:
            raise UserError(f"benchmarks {sorted(unknown)} were not prepared by this command")
        update["benchmarks"] = tuple(benchmarks)
    if ppl_tokens is not None:
        update["ppl_tokens"] = ppl_tokens
    if "benchmarks" in update:
        update["objectives"] = None  # the command's objectives are judged on all benchmarks
    # re-validated, never copied unchecked (a bad limit is refused here too)
    p = RunParams.model_validate({**ctx.params.model_dump(), **update}) if update else ctx.params
    label = cand.label
    row: dict[str, Any] = {
        "candidate": label,
        **cand.flat(),
        "limit": p.limit,
        "status": Status.FAILED.value,
    }
    if run_id is not None:
        tracking.reopen_run(run_id)
        tracking.set_tags(run_id, tags or {})
    else:
        run_id = _start_child(ctx, cand, p, tags or {})
    row["run_id"] = run_id
    return _evaluate(ctx, cand, p, run_id, row)


def _start_child(ctx: RunContext, cand: CandidateSpec, p: RunParams, tags: dict[str, str]) -> str:
    from ecocompress.metrics import tracking

    label = cand.label
    return tracking.start_child_run(
        ctx.parent_run_id,
        ctx.experiment_id,
        run_name=label,
        params={
            "model": p.model,
            **cand.flat(),
            "limit": p.limit if p.limit is not None else "none",
            "benchmarks": ",".join(p.benchmarks),
            "country": p.country,
            "carbon_intensity_g_per_kwh": ctx.intensity_g_per_kwh,
            "prune_spec": cand.prune.canonical(),
            "quant_spec": cand.quant.canonical(),
        },
        tags={
            **ctx.provenance,
            "model_content_hash": ctx.reference.content_hash,
            "model_revision": ctx.reference.revision or "none",
            "prefect_flow_run_id": ctx.flow_run_id,
            "screening": str(p.screening).lower(),
            "candidate": label,
            **tags,
        },
    )


def _checkpoint(ctx: RunContext, cand: CandidateSpec, p: RunParams) -> Path | None:
    """The candidate's pruned checkpoint in the cache (``None``: it is not pruned)."""
    data_dir = Path(p.data_dir) if p.data_dir else None
    return checkpoint_path(ctx.reference, cand.prune, data_dir)


def _hold_checkpoint(ctx: RunContext, cand: CandidateSpec, p: RunParams) -> AbstractContextManager:
    """Hold the candidate's pruned checkpoint while it is built and evaluated, so ``cache gc``
    leaves it alone; yields ``False`` when it is not in the cache (the prune step must run)."""
    path = _checkpoint(ctx, cand, p)
    return nullcontext(True) if path is None else hold(path)


def _checkpoint_usable(ctx: RunContext, cand: CandidateSpec, p: RunParams) -> bool:
    from ecocompress.tasks.cache import usable

    path = _checkpoint(ctx, cand, p)
    return True if path is None else usable(path)


def score_metrics(results: list[BenchmarkResult]) -> tuple[dict[str, float | None], float | None]:
    """Each benchmark's logged columns (``BenchmarkResult.metrics``) plus ``accuracy``, the
    mean of the scores that are fractions of items, and that mean's standard error
    (benchmarks as independent samples; ``None`` if one has none)."""
    out: dict[str, float | None] = {}
    for r in results:
        out.update(r.metrics())
    unit = [r for r in results if r.unit_score]
    if not unit:
        return out, None
    out["accuracy"] = sum(r.score for r in unit) / len(unit)
    errs = [r.stderr for r in unit]
    if any(e is None for e in errs):
        return out, None
    return out, sum(e * e for e in errs) ** 0.5 / len(unit)  # type: ignore[operator]


def _evaluate(
    ctx: RunContext, cand: CandidateSpec, p: RunParams, run_id: str, row: dict[str, Any]
) -> dict[str, Any]:
    from ecocompress.metrics import tracking

    label = cand.label
    executed_before = len(ctx.executed_steps)
    held = ExitStack()
    try:
        usable = held.enter_context(_hold_checkpoint(ctx, cand, p))
        pruned, _ = _run(
            ctx,
            label,
            "prune",
            prune_step,
            refresh=False if usable else lambda: not _checkpoint_usable(ctx, cand, p),
            ref=ctx.reference,
            spec=cand.prune,
            data_dir=p.data_dir,
            calib_hash=ctx.calib_hash,
        )
        qref, _ = _run(ctx, label, "quantize", quantize_step, ref=pruned, spec=cand.quant)
        meas, _ = _run(ctx, label, "measure", measure_step, ref=qref, quant=cand.quant)
        benches: dict[str, dict[str, Any]] = {}
        energy_kwh, methods = 0.0, set()
        for spec in p.eval_specs():
            out, hit = _run(
                ctx,
                label,
                f"evaluate {spec.benchmark}",
                evaluate_step,
                ref=qref,
                quant=cand.quant,
                spec=spec,
                data_dir=p.data_dir,
                data_hash=ctx.data_hashes[spec.benchmark],
                allow_code_execution=p.allow_code_execution,
                country=p.country,
            )
            benches[spec.benchmark] = out
            e = out["energy"]
            if e.get("energy_kwh") is None:
                energy_kwh = math.nan
            else:
                energy_kwh += e["energy_kwh"]
                if not hit:
                    ctx.energy_spent_kwh += e["energy_kwh"]
            methods.add(e.get("energy_method") or "unmeasured")
            bench = get_benchmark(spec.benchmark, spec.include_path)
            folder = f"lm_eval/{bench.name}" if bench.evaluator == "lm_eval" else bench.evaluator
            tracking.log_artifact(run_id, out["result"]["results_path"], folder)
            if e.get("emissions_csv"):
                tracking.log_artifact(run_id, e["emissions_csv"], f"emissions/{spec.benchmark}")
        energy = None if math.isnan(energy_kwh) else energy_kwh
        co2, _ = _run(
            ctx,
            label,
            "carbon",
            carbon_step,
            energy_kwh=energy,
            intensity_g_per_kwh=ctx.intensity_g_per_kwh,
        )

        results = [BenchmarkResult.model_validate(o["result"]) for o in benches.values()]
        scores, accuracy_stderr = score_metrics(results)
        metrics: dict[str, float | None] = {
            **scores,
            "latency_ms": meas["latency_ms"],
            "throughput_tps": meas["throughput_tps"],
            "memory_gb": meas["memory_gb"],
            "peak_rss_gb": meas["peak_rss_gb"],
            "energy_kwh": energy,
            "co2_kg": co2,
            "compression_ratio": meas["compression_ratio"],
            "sparsity": pruned.achieved_sparsity if pruned.achieved_sparsity is not None else 0.0,
        }
        cache_hit = len(ctx.executed_steps) == executed_before
        tracking.log_metrics(run_id, metrics)
        tracking.set_tags(
            run_id,
            {
                **{f"direction/{r.column}": r.direction for r in results},
                **(
                    {"accuracy_of": ",".join(r.benchmark for r in results if r.unit_score)}
                    if "accuracy" in scores
                    else {}
                ),
                # how lm-eval's requests were scored (perplexity has its own evaluator)
                "evaluator": p.evaluator,
                "energy_method": "; ".join(sorted(methods)),
                "cache_hit": str(cache_hit).lower(),
                "latency_method": meas["latency_method"],
                "peak_rss_method": "process RSS sampled every 20 ms during load + latency run",
                "sparsity_method": "zeros / weights over decoder Linear layers"
                if cand.prune.method != "none"
                else "not pruned (zeros already in the checkpoint not counted)",
                "carbon_intensity_source": ctx.intensity_source,
                "machine": meas["machine"],
                "candidate_id": qref.id,
            },
        )
        tracking.log_dict(run_id, {b: o for b, o in benches.items()}, "benchmark_results.json")
        row.update(metrics)
        # what the evaluations cost when they ran (from the cache on a re-run)
        row["eval_cost"] = {
            b: {
                "cpu_s": o.get("cpu_seconds"),
                "wall_s": o.get("wall_seconds"),
                "n_items": o["result"]["n_items"],
            }
            for b, o in benches.items()
        }
        if "accuracy" in scores:
            row["accuracy_stderr"] = accuracy_stderr
        row.update(
            status=Status.OK.value,
            cache_hit=cache_hit,
            energy_method="; ".join(sorted(methods)),
            candidate_id=qref.id,
        )
        tracking.end_run(run_id, "FINISHED")
        ctx.progress.done(label, cache_hit)
        return row
    except UserError:
        tracking.end_run(run_id, "FAILED")
        raise
    except (*INTERRUPTS, SystemExit):
        tracking.set_tags(run_id, {"failure_reason": "interrupted"})
        tracking.end_run(run_id, "FAILED")
        raise
    except EXCEPTIONS_TO_RAISE as exc:  # a bug in this code: stop, with the traceback
        tracking.set_tags(run_id, {"failure_reason": f"programmer error: {type(exc).__name__}"})
        tracking.log_text(run_id, traceback.format_exc(), "traceback.txt")
        tracking.end_run(run_id, "FAILED")
        raise
    except Exception as exc:  # a candidate failure is recorded; the sweep goes on
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:500]
        tracking.set_tags(run_id, {"failure_reason": reason})
        tracking.log_text(run_id, traceback.format_exc(), "traceback.txt")
        tracking.end_run(run_id, "FAILED")
        row["failure_reason"] = reason
        ctx.progress.failed(label, reason)
        return row
    finally:
        held.close()
