"""A great-expectations gate on the results table before it reaches the Pareto step.

For candidates with ``status == "ok"``: every accuracy (overall and per benchmark) lies
in [0, 1], every cost is >= 0, and the objective columns hold a value. A perplexity
(``perplexity/<b>``) is >= 1, its 95 % interval bounds (``perplexity_ci_low/<b>``,
``perplexity_ci_high/<b>``) are >= 0 with low <= perplexity <= high, and the stderr of
its log (``log_perplexity_stderr/<b>``) is >= 0; a row that carries the interval or the
stderr must carry the perplexity too. A row without the perplexity columns (benchmark
not run) or without any accuracy (a perplexity-only run) passes, unless the column is an
objective. A violation is a bug upstream or a corrupt cache, so it raises ``UserError``
naming the candidate, the column and the value, rather than letting a wrong number onto
the frontier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from ecocompress.metrics.types import (
    COST_METRICS,
    DEFAULT_OBJECTIVES,
    Objective,
    ci_columns,
    is_unit_score,
)
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.gx import gx_context

if TYPE_CHECKING:
    import pandas as pd


@lru_cache(maxsize=1)
def _batch_definition() -> tuple[Any, Any]:
    """One ephemeral GX context per process (import 2.5 s, then 0.03 s per table)."""
    ctx = gx_context()
    asset = ctx.data_sources.add_pandas("ecocompress").add_dataframe_asset("results")
    return ctx, asset.add_batch_definition_whole_dataframe("whole table")


@lru_cache(maxsize=32)
def _validation(
    in_range: tuple[str, ...],
    non_negative: tuple[str, ...],
    not_null: tuple[str, ...],
    at_least_one: tuple[str, ...] = (),
    ordered: tuple[tuple[str, str], ...] = (),
) -> Any:
    """A ValidationDefinition for one set of columns (tables of one sweep share it).

    ``in_range`` in [0, 1], ``non_negative`` >= 0, ``not_null`` present, ``at_least_one``
    >= 1 (perplexities); each ``(a, b)`` of ``ordered`` has a >= b where both are present.
    """
    import great_expectations as gx

    ctx, batch = _batch_definition()
    key = (in_range, non_negative, not_null, at_least_one, ordered)
    name = f"results-{abs(hash(key)):x}"
    suite = ctx.suites.add(gx.ExpectationSuite(name=name))
    for col in not_null:
        suite.add_expectation(gx.expectations.ExpectColumnValuesToNotBeNull(column=col))
    for col in in_range:
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(column=col, min_value=0, max_value=1)
        )
    for col in non_negative:
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(column=col, min_value=0)
        )
    for col in at_least_one:
        suite.add_expectation(
            gx.expectations.ExpectColumnValuesToBeBetween(column=col, min_value=1)
        )
    for a, b in ordered:
        suite.add_expectation(
            gx.expectations.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A=a, column_B=b, or_equal=True, ignore_row_if="either_value_is_missing"
            )
        )
    return ctx.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=name)
    )


def _shown(value: Any) -> str:
    return (
        "missing (NaN)"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else repr(float(value) if isinstance(value, int | float) else value)
    )


def _describe(kind: str, column: str, row: dict) -> str:
    shown = _shown(row.get(column))
    if kind == "expect_column_values_to_not_be_null":
        rule = "must be present"
    elif is_unit_score(column) or column.startswith("accuracy"):
        rule = "must be in [0, 1]"
    elif ci_columns(column):
        rule = "must be >= 1"
    else:
        rule = "must be >= 0"
    return f"candidate {row.get('candidate')!r}: {column} = {shown} ({rule})"


def _describe_pair(a: str, b: str, row: dict) -> str:
    return (
        f"candidate {row.get('candidate')!r}: {b} = {_shown(row.get(b))} is above "
        f"{a} = {_shown(row.get(a))} (the 95 % interval must contain the perplexity)"
    )


def _perplexity_columns(cols: set[str]) -> tuple[tuple[str, ...], dict[str, list[str]]]:
    """Perplexity columns present, and for each perplexity (present or not) the interval
    and stderr columns of the table that belong to it."""
    ppl = tuple(sorted(c for c in cols if ci_columns(c)))
    companions: dict[str, list[str]] = {}
    for c in sorted(cols):
        for prefix in ("perplexity_ci_low/", "perplexity_ci_high/", "log_perplexity_stderr/"):
            if c.startswith(prefix):
                companions.setdefault("perplexity/" + c.removeprefix(prefix), []).append(c)
    return ppl, companions


def validate_results_table(
    df: pd.DataFrame, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES
) -> None:
    """Check the ok rows of a results table with great-expectations.

    Args:
        df: results table, one row per candidate (columns ``candidate``, ``status``, ...).
        objectives: their columns, when present, must hold a value in every ok row.

    Raises:
        UserError: one line per violation, naming candidate, column and value (an
            accuracy outside [0, 1], a negative cost, interval bound or stderr, a
            perplexity below 1 or outside its interval, or a missing objective value or
            perplexity where the row gives its interval or stderr).
    """
    import pandas as pd

    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if ok.empty:
        return
    ok = ok.reset_index(drop=True)
    if "candidate" not in ok.columns:
        ok = ok.assign(candidate=[f"row {i}" for i in range(len(ok))])
    cols = set(ok.columns)
    in_range = tuple(sorted(c for c in cols if is_unit_score(c)))
    ppl, companions = _perplexity_columns(cols)
    spread = tuple(sorted({c for cs in companions.values() for c in cs}))
    non_negative = tuple(c for c in COST_METRICS if c in cols) + spread
    not_null = tuple(o.name for o in objectives if o.name in cols)
    ordered = []
    for c in ppl:
        low_high = ci_columns(c)
        if low_high is not None and low_high[0] in cols:
            ordered.append((c, low_high[0]))  # perplexity >= low
        if low_high is not None and low_high[1] in cols:
            ordered.append((low_high[1], c))  # high >= perplexity
    # Coerce to numbers first: a string in a metric column is itself a violation.
    numeric = ok.copy()
    for c in sorted(set(in_range + non_negative + not_null + ppl)):
        numeric[c] = pd.to_numeric(ok[c], errors="coerce")
        bad = numeric[c].isna() & ok[c].notna()
        if bad.any():
            row = ok[bad].iloc[0]
            raise UserError(f"candidate {row['candidate']!r}: {c} = {row[c]!r} is not a number")
    # A perplexity interval or stderr without the perplexity itself (plain pandas: GX has no
    # "not null where another column is not null" expectation).
    problems = []
    for c, comp in sorted(companions.items()):
        value = numeric[c] if c in numeric.columns else pd.Series(math.nan, index=numeric.index)
        orphan = value.isna() & numeric[comp].notna().any(axis=1)
        for i in orphan[orphan].index:
            given = ", ".join(x for x in comp if pd.notna(numeric.at[i, x]))
            problems.append(
                f"candidate {numeric.at[i, 'candidate']!r}: {c} = missing (NaN) "
                f"(must be present: the row gives {given})"
            )
    result = _validation(in_range, non_negative, not_null, ppl, tuple(ordered)).run(
        batch_parameters={"dataframe": numeric},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["candidate"]},
    )
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        if "column_A" in cfg.kwargs:
            a, b = cfg.kwargs["column_A"], cfg.kwargs["column_B"]
            rows = r.result.get("unexpected_index_list") or [{"candidate": "?"}]
            problems += [_describe_pair(a, b, row) for row in rows]
            continue
        column = cfg.kwargs["column"]
        rows = r.result.get("unexpected_index_list") or [{"candidate": "?", column: None}]
        problems += [_describe(cfg.type, column, row) for row in rows]
    if problems:
        raise UserError("invalid results table: " + "; ".join(problems))
