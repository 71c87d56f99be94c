import json

import numpy as np
import pandas as pd

from metrics.report import write_pareto_report
from metrics.types import DEFAULT_OBJECTIVES


def results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "candidate": [
                "bf16",
                "int8-bitsandbytes",
                "nf4-bitsandbytes",
                "magnitude-0.5+bf16",
                "broken-cand",
            ],
            "status": ["ok", "ok", "ok", "ok", "failed"],
            "accuracy": [0.50, 0.48, 0.40, 0.30, np.nan],
            "accuracy_stderr": [0.02, 0.02, 0.03, 0.02, np.nan],
            "latency_ms": [10.0, 30.0, 20.0, 10.0, np.nan],
            "memory_gb": [0.50, 0.35, 0.25, 0.50, np.nan],
            "energy_kwh": [1e-3, 3e-3, 2e-3, 1e-3, np.nan],
            "limit": [20] * 5,
        }
    )


def test_report_files(tmp_path):
    paths = write_pareto_report(
        results(), list(DEFAULT_OBJECTIVES), tmp_path / "r", "gemma sweep", screening=True
    )
    assert all(p.is_file() for p in paths.values())
    summary = json.loads(paths["json"].read_text())
    assert summary["frontier"] == ["bf16", "int8-bitsandbytes", "nf4-bitsandbytes"]
    assert summary["screening"] is True
    assert summary["note"] == "screening run: accuracy on 20 items per benchmark"
    assert "screening" in summary["title"]
    assert summary["objectives"][0] == {"name": "accuracy", "direction": "max"}
    assert 0 < summary["hypervolume"] <= 1.1**4
    by_name = {c["candidate"]: c for c in summary["candidates"]}
    assert by_name["broken-cand"]["on_front"] is False and by_name["broken-cand"]["rank"] is None
    assert by_name["magnitude-0.5+bf16"]["rank"] == 1
    assert by_name["bf16"]["crowding"] == "inf"

    table = pd.read_csv(paths["csv"])
    assert table["on_front"].tolist() == [True, True, True, False, False]

    html = paths["html"].read_text()
    assert "parcoords" in html.lower()
    for name in ("bf16", "int8-bitsandbytes", "nf4-bitsandbytes", "magnitude-0.5+bf16"):
        assert name in html
    assert "broken-cand" not in html  # failed candidates are not plotted
    # plotly.js embedded (several MB), not fetched from a CDN: the report opens offline
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000


def test_full_run_is_not_labelled_screening(tmp_path):
    df = results().drop(columns="limit")
    paths = write_pareto_report(df, list(DEFAULT_OBJECTIVES), tmp_path, "full", screening=False)
    summary = json.loads(paths["json"].read_text())
    assert summary["screening"] is False and summary["note"] is None
    assert "screening" not in summary["title"]


def test_report_with_only_failed_candidates(tmp_path):
    df = results().assign(status="failed")
    paths = write_pareto_report(
        df, list(DEFAULT_OBJECTIVES), tmp_path, "all failed", screening=False
    )
    summary = json.loads(paths["json"].read_text())
    assert summary["frontier"] == [] and summary["hypervolume"] == 0.0
