"""Data gate before evaluation: parse the published files and check them with great-expectations.

Each item becomes one DataFrame row (its ``line`` plus the columns ``Benchmark.row``
derives); each ``Check`` becomes one GX expectation. The first failing line is
reported as ``<file>:<line>: field '<field>' <message>``.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ecocompress.tasks.artifacts import cache_dir, code_version, sha256_file
from ecocompress.tasks.benchmarks import get_benchmark
from ecocompress.tasks.benchmarks.base import Benchmark, Check, read_records
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import EvalSpec

_validated: set[str] = set()  # sha256 of files that passed, so repeated gates are free
_lock = threading.Lock()


def benchmark_data_files(spec: EvalSpec, data_dir: Path | None) -> list[Path]:
    """Published files the benchmark reads (for cache keys); ``[]`` when it reads the Hub.

    Args:
        spec: the evaluation spec (``bbh_tasks`` picks bbh's files).
        data_dir: the shared benchmark data dir, or ``None`` for the Hub (an lm-eval task
            may still read a ``--task-data`` file).
    """
    bench = get_benchmark(spec.benchmark, spec.include_path)
    if not bench.curated:
        from ecocompress.tasks.benchmarks.generic import generic_data_files

        return generic_data_files(bench, spec, Path(data_dir) if data_dir else None)
    if data_dir is None:
        return []
    if bench.data_files:
        return [Path(data_dir) / f for f in bench.data_files]
    return [Path(data_dir) / u.relpath for u in bench.units(spec.bbh_tasks)]


def validate_benchmark_data(spec: EvalSpec, data_dir: Path) -> None:
    """Check every file ``spec`` reads under ``data_dir``; raise on the first bad item.

    Raises:
        UserError: a missing dir or file, invalid JSON, or a failed expectation, naming
            the file (relative to ``data_dir``), the line and the field.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise UserError(f"benchmark data dir not found: {data_dir}")
    bench = get_benchmark(spec.benchmark, spec.include_path)
    if not bench.curated:
        from ecocompress.tasks.benchmarks.generic import validate_generic

        validate_generic(bench, spec, data_dir)
        return
    if bench.evaluator == "perplexity":
        from ecocompress.tasks.benchmarks.wikitext import wikitext2_text

        wikitext2_text(data_dir, "test", "perplexity")  # present, gzip, UTF-8, not empty
        return
    for path in benchmark_data_files(spec, data_dir):
        if not path.is_file():
            raise UserError(f"benchmark data file not found: {path}")
        digest = sha256_file(path)
        # A file that passed these checks (same bytes, same code) is not re-validated, in
        # this process or a later one: the marker saves great-expectations' 3 s import.
        marker = cache_dir("validated") / f"{bench.name}-{digest[:32]}-{code_version()}"
        with _lock:
            if digest in _validated or marker.exists():
                continue
        validate_file(bench, path, shown=str(path.relative_to(data_dir)))
        with _lock:
            _validated.add(digest)
        marker.touch()


def validate_file(bench: Benchmark, path: Path, shown: str) -> int:
    """Validate one published file of ``bench``; return its number of items.

    Args:
        bench: the benchmark declaration (reader, row builder and checks).
        path: the file.
        shown: how the file is named in error messages.
    """
    import pandas as pd

    records = read_records(path, bench.reader, shown)
    if not records:
        raise UserError(f"{shown}: holds no items")
    df = pd.DataFrame([{"line": r.line, "item": r.item, **bench.row(r.doc)} for r in records])
    failures = _run_gx(df, bench.checks, name=f"{bench.name}-{path.stem}")
    if failures:
        line, item, check = failures[0]
        where = f"{shown}:{line}"
        if bench.reader != "jsonl":  # JSON documents: the item index locates it on long lines
            where += f": item {item}"
        raise UserError(f"{where}: field '{check.field}' {check.message}")
    return len(records)


def _expectation(check: Check) -> Any:
    import great_expectations.expectations as gxe

    if check.kind == "not_null":
        return gxe.ExpectColumnValuesToNotBeNull(column=check.column)
    if check.kind == "regex":
        return gxe.ExpectColumnValuesToMatchRegex(column=check.column, regex=check.arg)
    if check.kind == "in_set":
        return gxe.ExpectColumnValuesToBeInSet(column=check.column, value_set=list(check.arg))
    lo, hi = check.arg
    return gxe.ExpectColumnValuesToBeBetween(column=check.column, min_value=lo, max_value=hi)


def _run_gx(df: Any, checks: tuple[Check, ...], name: str) -> list[tuple[int, int, Check]]:
    """Run ``checks`` on ``df``; return (line, item, check) of the first failing item per check."""
    import great_expectations as gx

    from ecocompress.tasks.gx import gx_context

    context = gx_context()
    batch = (
        context.data_sources.add_pandas(name)
        .add_dataframe_asset(name)
        .add_batch_definition_whole_dataframe(name)
    )
    suite = context.suites.add(gx.ExpectationSuite(name=name))
    by_id = {suite.add_expectation(_expectation(c)).id: c for c in checks}
    vd = context.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=name)
    )
    fmt = {"result_format": "COMPLETE", "unexpected_index_column_names": ["line", "item"]}
    result = vd.run(batch_parameters={"dataframe": df}, result_format=fmt)
    failures = []
    for res in result.results:
        if res.success:
            continue
        check = by_id[res.expectation_config.id]
        if res.exception_info.get("raised_exception"):
            raise RuntimeError(f"great-expectations failed on {check}: {res.exception_info}")
        rows = res.result.get("unexpected_index_list") or [{"line": 0, "item": 0}]
        first = min(rows, key=lambda r: int(r["item"]))
        failures.append((int(first["line"]), int(first["item"]), check))
    # first item in the file; among checks on it, the earlier (more basic) one
    return sorted(failures, key=lambda f: (f[1], checks.index(f[2])))
