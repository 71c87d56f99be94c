import numpy as np
import pandas as pd

from ecocompress.metrics.pareto import pareto_front
from ecocompress.metrics.table import format_results_table
from ecocompress.metrics.types import DEFAULT_OBJECTIVES


def test_format_results_table():
    df = pd.DataFrame(
        {
            "candidate": ["bf16", "nf4", "broken"],
            "status": ["ok", "ok", "failed"],
            "accuracy": [0.5, 0.4, np.nan],
            "accuracy_stderr": [0.02, 0.03, np.nan],
            "exact_match/gsm8k": [0.1, 0.05, np.nan],
            "exact_match_stderr/gsm8k": [0.01, np.nan, np.nan],
            "latency_ms": [10.0, 20.0, np.nan],
            "memory_gb": [0.5, 0.25, np.nan],
            "energy_kwh": [1e-3, 2e-3, np.nan],
            "limit": [20, 20, 20],
        }
    )
    lines = format_results_table(pareto_front(df, list(DEFAULT_OBJECTIVES))).splitlines()
    assert lines[0].startswith("SCREENING (limit=20)")
    assert lines[1].split() == [
        "candidate",
        "status",
        "accuracy",
        "exact_match/gsm8k",
        "latency_ms",
        "memory_gb",
        "energy_kwh",
        "on_front",
    ]
    assert lines[3].split() == [
        "bf16",
        "ok",
        "0.500",
        "±",
        "0.020",
        "0.100",
        "±",
        "0.010",
        "10.00",
        "0.500",
        "0.001",
        "*",
    ]
    assert lines[4].split()[5:8] == ["0.050", "±", "n/a"]  # no stderr -> said so
    assert lines[5].split() == ["broken", "failed", "-", "-", "-", "-", "-"]


def test_no_caption_without_limit():
    df = pd.DataFrame({"candidate": ["a"], "status": ["ok"], "accuracy": [0.5]})
    assert not format_results_table(df).startswith("SCREENING")


def test_perplexity_column_with_interval_after_the_accuracies():
    df = pd.DataFrame(
        {
            "candidate": ["bf16", "ppl-only", "no-ci", "accuracy-only", "broken"],
            "status": ["ok", "ok", "ok", "ok", "failed"],
            "accuracy": [0.3, np.nan, 0.2, 0.25, np.nan],
            "accuracy_stderr": [0.045, np.nan, 0.01, 0.02, np.nan],
            "exact_match/gsm8k": [0.3, np.nan, 0.2, 0.25, np.nan],
            "exact_match_stderr/gsm8k": [0.045, np.nan, 0.01, 0.02, np.nan],
            "memory_gb": [0.5, 0.25, 0.3, 0.4, np.nan],
            "perplexity/wikitext2": [15.4123, 4012.5, 20.0, np.nan, np.nan],
            "perplexity_ci_low/wikitext2": [14.8, 3900.0, np.nan, np.nan, np.nan],
            "perplexity_ci_high/wikitext2": [16.049, 4130.25, np.nan, np.nan, np.nan],
            "log_perplexity_stderr/wikitext2": [0.02, 0.015, 0.03, np.nan, np.nan],
        }
    )
    lines = format_results_table(df).splitlines()
    header = lines[0].split()
    assert header == [
        "candidate",
        "status",
        "accuracy",
        "exact_match/gsm8k",
        "perplexity/wikitext2",
        "memory_gb",
    ]
    start = lines[0].index("perplexity/wikitext2")
    cell = [line[start:].split("  ")[0].strip() for line in lines[2:]]
    assert cell == ["15.41 [14.80, 16.05]", "4012.50 [3900.00, 4130.25]", "20.00 [n/a]", "-", "-"]
    assert "0.300 ± 0.045" in lines[2]
    # a perplexity-only run has no accuracy: dashes, not 'nan'
    assert lines[3].split()[:4] == ["ppl-only", "ok", "-", "-"]
    assert "nan" not in "\n".join(lines)


def test_perplexity_only_table_keeps_on_front():
    df = pd.DataFrame(
        {
            "candidate": ["a", "b"],
            "status": ["ok", "ok"],
            "perplexity/wikitext2": [15.0, 30.0],
            "perplexity_ci_low/wikitext2": [14.0, 29.0],
            "perplexity_ci_high/wikitext2": [16.0, 31.0],
            "memory_gb": [1.0, 1.0],
        }
    )
    from ecocompress.metrics.types import parse_objectives

    ranked = pareto_front(df, parse_objectives("perplexity/wikitext2,memory_gb"), z=1.0)
    lines = format_results_table(ranked).splitlines()
    assert lines[0].split() == [
        "candidate",
        "status",
        "accuracy",
        "perplexity/wikitext2",
        "memory_gb",
        "on_front",
    ]
    assert "on_front_plain" not in lines[0]
    assert lines[2].split() == ["a", "ok", "-", "15.00", "[14.00,", "16.00]", "1.000", "*"]
    assert lines[3].split() == ["b", "ok", "-", "30.00", "[29.00,", "31.00]", "1.000"]
