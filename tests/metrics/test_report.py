import json

import numpy as np
import pandas as pd

from ecocompress.metrics.report import write_pareto_report
from ecocompress.metrics.types import DEFAULT_OBJECTIVES


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
    assert summary["frontier"] == [] and summary["hypervolume"] is None


def test_one_candidate_has_no_hypervolume(tmp_path):
    """A one-candidate evaluate once reported 1.4641 (1.1^4, the reference box itself)."""
    df = results().iloc[:1]
    paths = write_pareto_report(df, list(DEFAULT_OBJECTIVES), tmp_path, "one", screening=False)
    summary = json.loads(paths["json"].read_text())
    assert summary["frontier"] == [df["candidate"].iloc[0]]
    assert summary["hypervolume"] is None and summary["hypervolume_bounds"] is None


def test_z_records_both_frontiers(tmp_path):
    # magnitude 0.49 +- 0.02 at bf16's costs: dominated by bf16 (0.50 +- 0.02) as measured,
    # not beyond 1 stderr, so noise keeps it
    df = results()
    df.loc[3, ["accuracy", "latency_ms", "memory_gb", "energy_kwh"]] = [0.49, 10.0, 0.5, 1e-3]
    plain = json.loads(
        write_pareto_report(df, list(DEFAULT_OBJECTIVES), tmp_path / "p", "t", False)[
            "json"
        ].read_text()
    )
    assert plain["z"] is None and "frontier_plain" not in plain
    assert "magnitude-0.5+bf16" not in plain["frontier"]  # 0.49 < 0.50 at bf16's cost
    paths = write_pareto_report(
        df, list(DEFAULT_OBJECTIVES), tmp_path / "z", "t", screening=False, z=1.0
    )
    summary = json.loads(paths["json"].read_text())
    assert summary["z"] == 1.0
    assert summary["frontier_plain"] == plain["frontier"]
    assert summary["frontier"] == plain["frontier"] + ["magnitude-0.5+bf16"]
    by_name = {c["candidate"]: c for c in summary["candidates"]}
    assert by_name["magnitude-0.5+bf16"]["on_front_plain"] is False
    assert by_name["magnitude-0.5+bf16"]["rank"] == 1
    assert "beyond 1 stderr" in paths["html"].read_text()


def test_y_objective_prefers_accuracy_then_perplexity():
    from ecocompress.metrics.report import _y_objective
    from ecocompress.metrics.types import parse_objectives

    def y(text):
        return _y_objective(parse_objectives(text)).name

    assert y("latency_ms,perplexity/wikitext2,exact_match/gsm8k") == "exact_match/gsm8k"
    assert y("latency_ms,perplexity/wikitext2,memory_gb") == "perplexity/wikitext2"
    assert y("latency_ms,memory_gb") == "latency_ms"


def ppl_results() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "candidate": ["bf16", "nf4", "prune-0.5", "broken"],
            "status": ["ok", "ok", "ok", "failed"],
            "perplexity/wikitext2": [15.41, 18.0, 4000.0, np.nan],
            "perplexity_ci_low/wikitext2": [14.80, 17.0, 3800.0, np.nan],
            "perplexity_ci_high/wikitext2": [16.05, 19.5, 4300.0, np.nan],
            "log_perplexity_stderr/wikitext2": [0.02, 0.03, 0.04, np.nan],
            "memory_gb": [0.5, 0.25, 0.3, np.nan],
        }
    )


def test_perplexity_on_y_with_interval_bars_log_axis_and_hover(tmp_path):
    from ecocompress.metrics.pareto import pareto_front
    from ecocompress.metrics.report import _scatter_figure
    from ecocompress.metrics.types import parse_objectives

    objs = parse_objectives("memory_gb,perplexity/wikitext2")
    fig = _scatter_figure(pareto_front(ppl_results(), objs), objs, "t")
    assert fig.layout.yaxis.type == "log"
    assert fig.layout.xaxis.type != "log"
    front = next(t for t in fig.data if t.name == "Pareto front")
    assert list(front.y) == [15.41, 18.0]
    assert front.error_y.symmetric is False
    np.testing.assert_allclose(front.error_y.array, [0.64, 1.5])
    np.testing.assert_allclose(front.error_y.arrayminus, [0.61, 1.0])
    assert front.error_x.array is None  # memory has no error bars
    assert "perplexity/wikitext2 = 15.41 [14.80, 16.05]" in front.text[0]
    assert front.text[0].startswith("bf16") and "memory_gb = 0.5" in front.text[0]
    dominated = next(t for t in fig.data if t.name == "dominated")
    assert "4000.00 [3800.00, 4300.00]" in dominated.text[0]

    paths = write_pareto_report(ppl_results(), objs, tmp_path, "ppl only", screening=False)
    summary = json.loads(paths["json"].read_text())
    assert summary["frontier"] == ["bf16", "nf4"]
    assert "prune-0.5" in paths["html"].read_text()


def test_accuracy_on_y_perplexity_on_x_and_accuracy_hover():
    from ecocompress.metrics.pareto import pareto_front
    from ecocompress.metrics.report import _scatter_figure
    from ecocompress.metrics.types import parse_objectives

    df = (
        results()
        .iloc[:4]
        .assign(
            **{
                "perplexity/wikitext2": [15.0, 15.5, 17.0, 900.0],
                "perplexity_ci_low/wikitext2": [14.0, 15.0, 16.0, 800.0],
                "perplexity_ci_high/wikitext2": [16.0, 16.5, 18.5, 1000.0],
            }
        )
    )
    objs = parse_objectives("perplexity/wikitext2,accuracy,memory_gb")
    fig = _scatter_figure(pareto_front(df, objs), objs, "t")
    assert fig.layout.yaxis.type != "log"
    assert fig.layout.xaxis.type == "log"  # panel 1: accuracy vs perplexity
    assert fig.layout.xaxis2.type != "log"  # panel 2: accuracy vs memory
    panel1 = [t for t in fig.data if t.name == "Pareto front" and t.xaxis == "x"][0]
    np.testing.assert_allclose(panel1.error_y.array, [0.02, 0.02, 0.03])
    np.testing.assert_allclose(panel1.error_x.array, [1.0, 1.0, 1.5])
    np.testing.assert_allclose(panel1.error_x.arrayminus, [1.0, 0.5, 1.0])
    assert panel1.text[0] == (
        "bf16<br>accuracy = 0.500 ± 0.020<br>perplexity/wikitext2 = 15.00 [14.00, 16.00]"
    )
