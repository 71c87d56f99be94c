"""A plain-text results table for the terminal and the run log."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ecocompress.metrics.types import ci_columns, is_score, stderr_column

if TYPE_CHECKING:
    import pandas as pd

# Cost columns shown after the scores, with their print format.
_COSTS = {
    "latency_ms": "{:.2f}",
    "memory_gb": "{:.3f}",
    "energy_kwh": "{:.3g}",
    "co2_kg": "{:.3g}",
    "compression_ratio": "{:.2f}",
}


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _score(row: Any, col: str, err_col: str) -> str:
    v = row.get(col)
    if _missing(v):
        return "-"
    err = row.get(err_col)
    # lm-eval gives no stderr for a single item: say so rather than print a bare score
    return f"{v:.3f} ± n/a" if _missing(err) else f"{v:.3f} ± {err:.3f}"


def _perplexity(row: Any, col: str) -> str:
    """``15.41 [14.80, 16.05]``: the perplexity and its 95 % confidence interval."""
    v = row.get(col)
    if _missing(v):
        return "-"
    low, high = ci_columns(col)  # type: ignore[misc]
    lo, hi = row.get(low), row.get(high)
    ci = "n/a" if _missing(lo) or _missing(hi) else f"{lo:.2f}, {hi:.2f}"
    return f"{v:.2f} [{ci}]"


def format_results_table(df: pd.DataFrame) -> str:
    """Render the results table as aligned plain text.

    Columns: candidate, status, accuracy ± stderr, each benchmark's score ``<metric>/<b>``
    ± its stderr, each ``perplexity/<b>`` with its 95 % confidence interval (``15.41 [14.80, 16.05]``), the
    costs present, and ``on_front`` when ranked. Unmeasured values (a failed row, the
    accuracy of a perplexity-only run) print as ``-``. A table with a ``limit`` gets a
    ``SCREENING (limit=N)`` caption.

    Args:
        df: results table, one row per candidate.

    Returns:
        The table as a string (lines joined by newlines).
    """
    benches = [c for c in df.columns if is_score(c) and c != "accuracy" and not ci_columns(c)]
    ppls = [c for c in df.columns if ci_columns(c)]
    header = ["candidate", "status", "accuracy", *benches, *ppls]
    header += [c for c in _COSTS if c in df.columns]
    header += ["on_front"] if "on_front" in df.columns else []
    rows = []
    for _, r in df.iterrows():
        row = r.to_dict()
        status = str(row.get("status", "ok"))
        if row.get("eliminated_at_rung") is not None and status == "eliminated":
            status = f"eliminated at rung {int(row['eliminated_at_rung'])}"
        cells = [str(row.get("candidate", "")), status]
        cells.append(_score(row, "accuracy", "accuracy_stderr"))
        cells += [_score(row, b, stderr_column(b)) for b in benches]
        cells += [_perplexity(row, p) for p in ppls]
        for c, fmt in _COSTS.items():
            if c in df.columns:
                cells.append("-" if _missing(row.get(c)) else fmt.format(row[c]))
        if "on_front" in df.columns:
            cells.append("*" if bool(row.get("on_front")) else "")
        rows.append(cells)
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    lines = [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
    limits = sorted({int(x) for x in df.get("limit", []) if not _missing(x)})
    if limits:
        lines.insert(
            0,
            f"SCREENING (limit={'/'.join(map(str, limits))}): accuracy on a subset of each benchmark",
        )
    return "\n".join(lines)
