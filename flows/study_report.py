"""The reports of ``ecocompress study``: markdown tables, report.md / report.html (plotly
figures) and table.json, logged to one MLflow run."""

from __future__ import annotations

import tempfile
from html import escape
from pathlib import Path
from typing import Any

from ecocompress.flows.params import RunParams

TITLES = {
    "rq1": "RQ1 - dynamic (agent, optuna) vs static (random, grid) search",
    "rq2": "RQ2 - energy and carbon along the agent's path",
    "rq3": "RQ3 - objective weights and the recommendation",
    "rq4": "RQ4 - resource constraints",
}


def _fmt(v: Any, nd: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1e-2 and v != 0 else f"{v:.{nd}f}"
    return str(v)


def md_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no rows)\n"
    cols = list(rows[0])
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def accuracy_text(r: dict[str, Any]) -> str:
    se = r.get("accuracy_stderr")
    return f"{r['accuracy']:.3f} ± {se:.3f}" if se is not None else f"{r['accuracy']:.3f} ± n/a"


def write_study_report(
    which: str,
    title: str,
    text: str,
    figs: list[Any],
    table: Any,
    params: RunParams,
    replay_path: str | None,
) -> dict[str, Any]:
    """Write report.md / report.html, log them and table.json to a new MLflow run."""
    from ecocompress.metrics import tracking

    out = Path(tempfile.mkdtemp(prefix=f"ecocompress-{which}-"))
    md = f"# {title}\n\n{text}"
    (out / "report.md").write_text(md)
    html = [f"<h1>{title}</h1><pre>{escape(text)}</pre>"]
    html += [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    (out / "report.html").write_text("<html><body>" + "\n".join(html) + "</body></html>")
    experiment = params.experiment or "ecocompress-studies"
    run = tracking.start_parent_run(
        experiment,
        run_name=f"study-{which}",
        params={
            "study": which,
            "model": params.model,
            "limit": str(params.limit),
            "replay": replay_path or "none",
        },
        tags={**tracking.provenance_tags(), "command": "study"},
    )
    for f in ("report.md", "report.html"):
        tracking.log_artifact(run, str(out / f))
    tracking.log_dict(run, table, "table.json")
    tracking.end_run(run, "FINISHED")
    return {"text": md, "table": table, "run_id": run, "report_dir": str(out)}
