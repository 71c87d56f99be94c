"""Evaluate an in-memory model on one benchmark with lm-evaluation-harness.

``evaluate_benchmark`` wraps the model in lm-eval's ``HFLM`` as is (no move, no
re-cast: a bitsandbytes or torchao model is scored exactly as built), runs
``simple_evaluate`` with greedy decoding and fixed seeds, writes lm-eval's full
output (per-sample records included) to ``out_dir`` and returns a small
``BenchmarkResult``. With a data dir the data are checked first and read from
local files (see ``tasks.benchmarks.local``); without one lm-eval reads the Hub.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ecocompress.tasks.benchmarks import get_benchmark
from ecocompress.tasks.benchmarks.base import STATIC_DIR, Benchmark
from ecocompress.tasks.benchmarks.lm_eval_tasks import task_manager
from ecocompress.tasks.benchmarks.result import BenchmarkResult
from ecocompress.tasks.benchmarks.validation import benchmark_data_files, validate_benchmark_data
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import EvalSpec

__all__ = [
    "BenchmarkResult",
    "benchmark_data_files",
    "evaluate_benchmark",
    "task_manager",
    "validate_benchmark_data",
]


def evaluate_benchmark(
    model: Any,
    tokenizer: Any,
    spec: EvalSpec,
    data_dir: Path | None,
    out_dir: Path,
    allow_code_execution: bool = False,
) -> BenchmarkResult:
    """Score ``model`` on ``spec.benchmark`` with lm-evaluation-harness.

    Args:
        model: a transformers causal LM, already on its device and in its dtype.
        tokenizer: its tokenizer.
        spec: benchmark, shots, ``limit`` (items per task), batch size, bbh subtasks,
            ``max_gen_toks`` (``None`` keeps lm-eval's task default) and seed.
        data_dir: shared benchmark data dir, or ``None`` to read the Hub.
        out_dir: where ``lm_eval_<benchmark>.json`` is written.
        allow_code_execution: HumanEval runs model-written code (in ``tasks.sandbox``);
            it must be allowed explicitly.

    Raises:
        UserError: code execution not allowed for humaneval (or no working bubblewrap),
            unknown bbh subtask, or missing / malformed data files.
    """
    bench = get_benchmark(spec.benchmark, spec.include_path)
    if bench.evaluator == "perplexity":
        from ecocompress.tasks.perplexity import evaluate_perplexity

        # reading the text is its check (missing, unreadable, empty: one-line errors)
        return evaluate_perplexity(model, tokenizer, spec, data_dir, out_dir)

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.utils import handle_non_serializable

    if bench.name == "humaneval" and not allow_code_execution:
        raise UserError(
            "humaneval executes model-written code: pass --allow-code-execution to run it"
        )
    if bench.name == "humaneval":
        from ecocompress.tasks.sandbox import require_sandbox

        require_sandbox()  # no bwrap: refused before generating, not at the first scored item
    if bench.max_fewshot is not None and spec.num_fewshot > bench.max_fewshot:
        raise UserError(
            f"num_fewshot {spec.num_fewshot} is too many for {bench.name}: allowed 0 to {bench.max_fewshot}"
        )
    names, include, source, notes = task_source(bench, spec, data_dir)
    if spec.screening:
        notes.append(f"screening run: at most {spec.limit} items per task")
    shots = spec.num_fewshot if spec.num_fewshot is not None else bench.default_shots

    tm = task_manager(include)
    lm_class = HFLM
    if spec.evaluator == "shared-prefix":
        from ecocompress.tasks.shared_prefix import SharedPrefixLM

        lm_class = SharedPrefixLM
    lm = lm_class(pretrained=model, tokenizer=tokenizer, batch_size=spec.batch_size)
    t0 = time.perf_counter()
    with _progress_bars_off():
        out = lm_eval.simple_evaluate(
            model=lm,
            tasks=list(names),
            num_fewshot=shots,
            limit=spec.limit,
            task_manager=tm,
            log_samples=True,
            gen_kwargs={"max_gen_toks": spec.max_gen_toks} if spec.max_gen_toks else None,
            random_seed=spec.seed,
            numpy_random_seed=spec.seed,
            torch_random_seed=spec.seed,
            fewshot_random_seed=spec.seed,
            confirm_run_unsafe_code=bench.name == "humaneval",
        )
    seconds = time.perf_counter() - t0

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / f"lm_eval_{bench.name}.json"
    results_path.write_text(json.dumps(out, default=handle_non_serializable, indent=1))

    if spec.evaluator == "shared-prefix":
        notes.append(
            "scored with shared prefixes (tasks/shared_prefix.py): token positions through "
            f"the decoder {lm.forward_tokens} (lm-eval's own path: {lm.naive_tokens} without "
            f"its batch padding; distinct: {lm.floor_tokens}), through the vocabulary head "
            f"{lm.head_tokens} for log-likelihoods (lm-eval's: every position); generated "
            "tokens not counted"
            + "".join(
                f"; {n} request(s) on lm-eval's path: {why}" for why, n in lm.fallbacks.items()
            )
        )
    per_task = _per_task(out, names, bench)
    score, stderr, n_items = pooled(per_task)
    if bench.kind == "group":  # lm-eval's own aggregate (its weighting), over every subtask
        res = out["results"][next(iter(names))]
        score, stderr = float(res[bench.metric]), _stderr(res.get(_stderr_key(bench.metric)))
    cfg = next((c for t, c in out["configs"].items() if t in names), None)
    cfg = cfg or next(iter(out["configs"].values()))
    max_gen = None
    if cfg.get("output_type") == "generate_until":  # HFLM's default when the task sets none
        max_gen = (cfg.get("generation_kwargs") or {}).get("max_gen_toks", lm.max_gen_toks)
    return BenchmarkResult.of(
        bench,
        score=score,
        stderr=stderr,
        n_items=n_items,
        num_fewshot=int(shots),
        limit=spec.limit,
        screening=spec.screening,
        seconds=round(seconds, 3),
        subtasks=per_task if len(per_task) > 1 or bench.name == "bbh" else {},
        results_path=str(results_path),
        lm_eval_version=lm_eval.__version__,
        tasks=list(names),
        max_gen_toks=int(max_gen) if max_gen is not None else None,
        data_source=source,
        notes=notes,
    )


def _stderr_key(metric_key: str) -> str:
    metric, _, filt = metric_key.partition(",")
    return f"{metric}_stderr,{filt}"


def _per_task(out: dict, names: dict[str, str], bench: Benchmark) -> dict[str, dict[str, Any]]:
    """``{subtask: {"score", "stderr", "n"}}`` for each task lm-eval scored (a group's leaves)."""
    tasks = dict(names) if bench.kind != "group" else {t: t for t in out["n-samples"]}
    per_task = {}
    for task, key in tasks.items():
        res = out["results"][task]
        per_task[key] = {
            "score": float(res[bench.metric]),
            "stderr": _stderr(res.get(_stderr_key(bench.metric))),
            "n": int(out["n-samples"][task]["effective"]),
        }
    return per_task


def task_source(
    bench: Benchmark, spec: EvalSpec, data_dir: Path | None
) -> tuple[dict[str, str], tuple[str, ...], str, list[str]]:
    """lm-eval task names to run (-> their key in the result), include folders, data
    source and notes: local files when there are some, else the Hub."""
    if not bench.curated:
        from ecocompress.tasks.benchmarks.generic import generic_source

        return generic_source(bench, spec, data_dir)
    units = bench.units(spec.bbh_tasks)
    if data_dir is not None:
        from ecocompress.tasks.benchmarks.local import local_task_dir

        validate_benchmark_data(spec, Path(data_dir))
        include = (str(STATIC_DIR), str(local_task_dir(Path(data_dir))))
        names = {u.local_task: u.key for u in units}
        return names, include, f"local:{Path(data_dir).resolve()}", list(bench.notes_local)
    from ecocompress.tasks.benchmarks.local import hub_task_dir, hub_task_name

    include = (str(STATIC_DIR), str(hub_task_dir()))
    names = {hub_task_name(u): u.key for u in units}
    return names, include, "hub", list(bench.notes_hub)


def pooled(per_task: dict[str, dict[str, Any]]) -> tuple[float, float | None, int]:
    """Item-weighted mean of subtask scores and its standard error.

    With n_i items and standard error se_i per subtask and N = sum n_i:
    score = sum n_i s_i / N, stderr = sqrt(sum n_i^2 se_i^2) / N (subtasks independent).
    The stderr is ``None`` if any subtask has none.
    """
    n_total = sum(t["n"] for t in per_task.values())
    if n_total == 0:
        raise UserError("no items were evaluated: check limit and the data files")
    score = sum(t["n"] * t["score"] for t in per_task.values()) / n_total
    if any(t["stderr"] is None for t in per_task.values()):
        return score, None, n_total
    var = sum((t["n"] * t["stderr"]) ** 2 for t in per_task.values())
    return score, math.sqrt(var) / n_total, n_total


def _stderr(value: Any) -> float | None:
    """lm-eval writes ``"N/A"`` where it has no standard error (e.g. a single item)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@contextlib.contextmanager
def _progress_bars_off():
    """lm-eval's per-request progress bars off the terminal unless -v (ECOCOMPRESS_VERBOSE):
    it passes ``disable=`` explicitly, so TQDM_DISABLE does not reach them."""
    if os.environ.get("ECOCOMPRESS_VERBOSE") == "1":
        yield
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
        yield
