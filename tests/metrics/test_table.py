import numpy as np
import pandas as pd

from metrics.pareto import pareto_front
from metrics.table import format_results_table
from metrics.types import DEFAULT_OBJECTIVES


def test_format_results_table():
    df = pd.DataFrame(
        {
            "candidate": ["bf16", "nf4", "broken"],
            "status": ["ok", "ok", "failed"],
            "accuracy": [0.5, 0.4, np.nan],
            "accuracy_stderr": [0.02, 0.03, np.nan],
            "accuracy/gsm8k": [0.1, 0.05, np.nan],
            "accuracy_stderr/gsm8k": [0.01, np.nan, np.nan],
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
        "accuracy/gsm8k",
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
