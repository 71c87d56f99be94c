"""A great-expectations gate on the results table before it reaches the Pareto step.

For candidates with ``status == "ok"``: every accuracy (overall and per benchmark) lies
in [0, 1], every cost is >= 0, and the objective columns hold a value. A violation is a
bug upstream or a corrupt cache, so it raises ``UserError`` naming the candidate, the
column and the value, rather than letting a wrong number onto the frontier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from metrics.types import COST_METRICS, DEFAULT_OBJECTIVES, Objective
from tasks.errors import UserError

if TYPE_CHECKING:
    import pandas as pd


def gx_context() -> Any:
    """A new ephemeral great-expectations context, without progress bars or INFO chatter."""
    import logging
    import os

    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    # GX sets this logger to INFO at import and announces every context's temp dir with it.
    logging.getLogger("great_expectations.data_context.types.base").setLevel(logging.WARNING)
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return ctx


@lru_cache(maxsize=1)
def _batch_definition() -> tuple[Any, Any]:
    """One ephemeral GX context per process (import 2.5 s, then 0.03 s per table)."""
    ctx = gx_context()
    asset = ctx.data_sources.add_pandas("ecocompress").add_dataframe_asset("results")
    return ctx, asset.add_batch_definition_whole_dataframe("whole table")


@lru_cache(maxsize=32)
def _validation(
    in_range: tuple[str, ...], non_negative: tuple[str, ...], not_null: tuple[str, ...]
) -> Any:
    """A ValidationDefinition for one set of columns (tables of one sweep share it)."""
    import great_expectations as gx

    ctx, batch = _batch_definition()
    name = f"results-{abs(hash((in_range, non_negative, not_null))):x}"
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
    return ctx.validation_definitions.add(
        gx.ValidationDefinition(data=batch, suite=suite, name=name)
    )


def _describe(kind: str, column: str, row: dict) -> str:
    value = row.get(column)
    shown = (
        "missing (NaN)"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else repr(float(value) if isinstance(value, int | float) else value)
    )
    if kind == "expect_column_values_to_not_be_null":
        rule = "must be present"
    else:
        rule = "must be in [0, 1]" if column.startswith("accuracy") else "must be >= 0"
    return f"candidate {row.get('candidate')!r}: {column} = {shown} ({rule})"


def validate_results_table(
    df: pd.DataFrame, objectives: Sequence[Objective] = DEFAULT_OBJECTIVES
) -> None:
    """Check the ok rows of a results table with great-expectations.

    Args:
        df: results table, one row per candidate (columns ``candidate``, ``status``, ...).
        objectives: their columns, when present, must hold a value in every ok row.

    Raises:
        UserError: one line per violation, naming candidate, column and value.
    """
    import pandas as pd

    ok = df[df["status"] == "ok"] if "status" in df.columns else df
    if ok.empty:
        return
    ok = ok.reset_index(drop=True)
    if "candidate" not in ok.columns:
        ok = ok.assign(candidate=[f"row {i}" for i in range(len(ok))])
    cols = set(ok.columns)
    in_range = tuple(sorted(c for c in cols if c == "accuracy" or c.startswith("accuracy/")))
    non_negative = tuple(c for c in COST_METRICS if c in cols)
    not_null = tuple(o.name for o in objectives if o.name in cols)
    # Coerce to numbers first: a string in a metric column is itself a violation.
    numeric = ok.copy()
    for c in set(in_range + non_negative + not_null):
        numeric[c] = pd.to_numeric(ok[c], errors="coerce")
        bad = numeric[c].isna() & ok[c].notna()
        if bad.any():
            row = ok[bad].iloc[0]
            raise UserError(f"candidate {row['candidate']!r}: {c} = {row[c]!r} is not a number")
    result = _validation(in_range, non_negative, not_null).run(
        batch_parameters={"dataframe": numeric},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": ["candidate"]},
    )
    if result.success:
        return
    problems = []
    for r in result.results:
        if r.success:
            continue
        cfg = r.expectation_config
        column = cfg.kwargs["column"]
        rows = r.result.get("unexpected_index_list") or [{"candidate": "?", column: None}]
        problems += [_describe(cfg.type, column, row) for row in rows]
    raise UserError("invalid results table: " + "; ".join(problems))
