"""The Pareto report of a sweep: ``pareto.json``, ``pareto.csv`` and ``pareto.html``.

The HTML holds one scatter per other objective (an accuracy-type objective on y, else
``perplexity/<b>``, else the first objective; the frontier marked and the 2-D front of
that pair connected) and a parallel-coordinates view of every objective. Accuracies carry
± stderr error bars, perplexities asymmetric bars from their 95 % confidence interval on
a log axis; the hover text gives the same numbers. With ``z`` the frontier is the one
beyond noise (``metrics.pareto``) and the JSON also lists the plain one. Failed
candidates stay in the JSON and CSV with their status but never appear in the plots. A
screening run (benchmarks cut to ``limit`` items) says so in the title and the JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ecocompress.metrics.pareto import hypervolume as _hypervolume
from ecocompress.metrics.pareto import objective_bounds, pareto_front
from ecocompress.metrics.types import Objective, ci_columns, is_score, is_unit_score, stderr_column

if TYPE_CHECKING:
    import pandas as pd


def _jsonable(v: Any) -> Any:
    """NaN/NA -> null; +-inf -> "inf"/"-inf" (JSON has no infinity); numpy -> Python."""
    import pandas as pd

    if hasattr(v, "item"):
        v = v.item()
    if v is None or (not isinstance(v, list | dict | tuple) and pd.isna(v)):
        return None
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def screening_note(df: pd.DataFrame) -> str:
    """``"screening run: accuracy on N items per benchmark"`` from the ``limit`` column."""
    limits = sorted({int(x) for x in df.get("limit", []) if x == x and x is not None})
    shown = "/".join(str(x) for x in limits) or "a limited number of"
    return f"screening run: accuracy on {shown} items per benchmark"


def _y_objective(objectives: Sequence[Objective]) -> Objective:
    """The y axis: the first accuracy-type objective, else a perplexity, else the first."""
    return next(
        (o for o in objectives if is_unit_score(o.name)),
        next((o for o in objectives if is_score(o.name)), objectives[0]),
    )


def _is_perplexity(o: Objective) -> bool:
    return ci_columns(o.name) is not None


def _error_bars(part: pd.DataFrame, o: Objective) -> dict[str, Any] | None:
    """Plotly error bars for ``o``: ± stderr (accuracy), the 95 % CI (perplexity), or None.

    A missing stderr or interval bound draws no bar for that point (0).
    """
    ci = ci_columns(o.name)
    if ci is not None:
        if not set(ci) <= set(part.columns):
            return None
        v = part[o.name].astype(float)
        return {
            "type": "data",
            "symmetric": False,
            "array": (part[ci[1]].astype(float) - v).clip(lower=0).fillna(0).tolist(),
            "arrayminus": (v - part[ci[0]].astype(float)).clip(lower=0).fillna(0).tolist(),
        }
    err = stderr_column(o.name)
    if err is None or err not in part.columns:
        return None
    return {"type": "data", "array": part[err].astype(float).fillna(0).tolist()}


def _shown(row: dict[str, Any], o: Objective) -> str:
    """One objective's value for the hover text: ``0.300 ± 0.045``, ``15.41 [14.80, 16.05]``."""
    import pandas as pd

    def num(col: str | None) -> float | None:
        v = row.get(col) if col else None
        return None if v is None or pd.isna(v) else float(v)

    v = num(o.name)
    if v is None:
        return f"{o.name} = n/a"
    ci = ci_columns(o.name)
    if ci is not None:
        lo, hi = num(ci[0]), num(ci[1])
        return (
            f"{o.name} = {v:.2f} [{'n/a' if lo is None or hi is None else f'{lo:.2f}, {hi:.2f}'}]"
        )
    col = stderr_column(o.name)
    if col is not None:
        se = num(col)
        return f"{o.name} = {v:.3f} ± {'n/a' if se is None else f'{se:.3f}'}"
    return f"{o.name} = {v:.4g}"


def _scatter_figure(
    ranked: pd.DataFrame, objectives: Sequence[Objective], title: str, z: float | None = None
) -> Any:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    y = _y_objective(objectives)
    costs = [o for o in objectives if o != y] or [y]
    ok = ranked[ranked["rank"].notna()]
    fig = make_subplots(
        rows=1, cols=len(costs), subplot_titles=[f"{y.name} vs {c.name}" for c in costs]
    )
    front_name = "Pareto front" if z is None else f"Pareto front (beyond {z:g} stderr)"
    for i, cost in enumerate(costs, start=1):
        for on, name, style in (
            (False, "dominated", "circle-open"),
            (True, front_name, "star"),
        ):
            part = ok[ok["on_front"] == on]
            shown = [y] if cost == y else [y, cost]
            text = [
                "<br>".join([str(r.get("candidate", "")), *(_shown(r, o) for o in shown)])
                for r in part.to_dict("records")
            ]
            fig.add_trace(
                go.Scatter(
                    x=part[cost.name],
                    y=part[y.name],
                    mode="markers",
                    name=name,
                    marker={
                        "symbol": style,
                        "size": 11 if on else 8,
                        "color": "crimson" if on else "grey",
                    },
                    error_y=_error_bars(part, y),
                    error_x=_error_bars(part, cost) if cost != y else None,
                    text=text,
                    hovertemplate="%{text}<extra></extra>",
                    showlegend=i == 1,
                    legendgroup=name,
                ),
                row=1,
                col=i,
            )
        # The front of this pair of objectives alone, as a line sorted by cost.
        pair = pareto_front(ok, [y, cost]) if len(ok) and cost != y else ok.iloc[0:0]
        line = pair[pair["on_front"]].sort_values(cost.name)
        fig.add_trace(
            go.Scatter(
                x=line[cost.name],
                y=line[y.name],
                mode="lines",
                name="2-D front",
                line={"color": "crimson", "dash": "dot"},
                showlegend=i == 1,
                legendgroup="2d",
            ),
            row=1,
            col=i,
        )
        # perplexities span 15 to thousands: log axes
        fig.update_xaxes(
            title_text=f"{cost.name} ({cost.direction})",
            type="log" if _is_perplexity(cost) else None,
            row=1,
            col=i,
        )
    fig.update_yaxes(title_text=f"{y.name} ({y.direction})", row=1, col=1)
    if _is_perplexity(y):
        fig.update_yaxes(type="log")
    fig.update_layout(title=title, height=480)
    return fig


def _parcoords_figure(ranked: pd.DataFrame, objectives: Sequence[Objective], title: str) -> Any:
    import plotly.graph_objects as go

    ok = ranked[ranked["rank"].notna()]
    dims = [{"label": f"{o.name} ({o.direction})", "values": ok[o.name]} for o in objectives]
    fig = go.Figure(
        go.Parcoords(
            line={
                "color": ok["on_front"].astype(int),
                "colorscale": [[0, "lightgrey"], [1, "crimson"]],
            },
            dimensions=dims,
        )
    )
    names = ", ".join(ok.loc[ok["on_front"], "candidate"].astype(str))
    fig.update_layout(title=f"{title}: all objectives (red = Pareto front: {names})", height=420)
    return fig


def write_pareto_report(
    df: pd.DataFrame,
    objectives: Sequence[Objective],
    out_dir: Path,
    title: str,
    screening: bool,
    bounds: dict[str, tuple[float, float]] | None = None,
    z: float | None = None,
) -> dict[str, Path]:
    """Rank the candidates and write the report files.

    Args:
        df: results table, one row per candidate (``candidate``, ``status``, objectives).
        objectives: objectives with directions.
        out_dir: folder to write into (created).
        title: report title; "(SCREENING)" is appended for screening runs.
        screening: True when benchmarks were cut to ``limit`` items.
        bounds: fixed hypervolume normalisation bounds; default min/max over ok rows.
        z: None for the plain Pareto front; a number of standard errors for the front
            beyond noise (``metrics.pareto.pareto_front``). The JSON records ``z`` and,
            when given, the plain front as ``frontier_plain``.

    Returns:
        ``{"json": ..., "csv": ..., "html": ...}`` paths.
    """
    ranked = pareto_front(df, objectives, z=z)
    ok = ranked[ranked["rank"].notna()]
    fixed = bounds is not None
    if bounds is None and len(ok) >= 2:
        bounds = objective_bounds(ranked, objectives)
    note = screening_note(df) if screening else None
    full_title = f"{title} [{note}]" if note else title
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "pareto.json",
        "csv": out_dir / "pareto.csv",
        "html": out_dir / "pareto.html",
    }
    summary = {
        "title": full_title,
        "screening": screening,
        "note": note,
        "objectives": [{"name": o.name, "direction": o.direction} for o in objectives],
        # absent (null) with fewer than two finished candidates and no fixed bounds
        "hypervolume": _hypervolume(ranked, objectives, bounds=bounds if fixed else None),
        "hypervolume_bounds": bounds,
        "hypervolume_ref_point": [1.1] * len(objectives),
        "z": None if z is None else float(z),
        "frontier": ok.loc[ok["on_front"], "candidate"].tolist() if "candidate" in ok else [],
        **(
            {
                "frontier_plain": ok.loc[ok["on_front_plain"], "candidate"].tolist()
                if "candidate" in ok
                else []
            }
            if z is not None
            else {}
        ),
        "candidates": [
            {k: _jsonable(v) for k, v in row.items()} for row in ranked.to_dict("records")
        ],
    }
    paths["json"].write_text(json.dumps(summary, indent=2, allow_nan=False))
    ranked.to_csv(paths["csv"], index=False)
    # Plotly's JS is embedded once (about 3.5 MB) so the report opens offline.
    html = _scatter_figure(ranked, objectives, full_title, z).to_html(
        full_html=False, include_plotlyjs=True
    )
    html += _parcoords_figure(ranked, objectives, full_title).to_html(
        full_html=False, include_plotlyjs=False
    )
    paths["html"].write_text(
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(full_title)}</title>"
        "</head>"
        f"<body>{html}</body></html>"
    )
    return paths
