import numpy as np
import pandas as pd
import pytest

from ecocompress.metrics.validation import validate_results_table
from ecocompress.tasks.errors import UserError


def good_table() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "candidate": ["bf16", "nf4-bitsandbytes", "broken"],
            "status": ["ok", "ok", "failed"],
            "accuracy": [0.52, 0.41, np.nan],
            "exact_match/gsm8k": [0.1, 0.0, np.nan],
            "accuracy_stderr": [0.02, 0.03, np.nan],
            "latency_ms": [12.0, 20.0, -1.0],  # a failed row's junk is not checked
            "memory_gb": [0.55, 0.3, np.nan],
            "energy_kwh": [1e-4, 2e-4, np.nan],
            "co2_kg": [4e-5, 8e-5, np.nan],
        }
    )


def test_good_table_passes():
    validate_results_table(good_table())


def test_table_without_ok_rows_passes():
    validate_results_table(good_table().iloc[2:])


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("accuracy", 1.2, r"'nf4-bitsandbytes': accuracy = 1\.2 \(must be in \[0, 1\]\)"),
        ("exact_match/gsm8k", -0.1, r"'nf4-bitsandbytes': exact_match/gsm8k = -0\.1"),
        ("latency_ms", -3.0, r"'nf4-bitsandbytes': latency_ms = -3\.0 \(must be >= 0\)"),
        (
            "energy_kwh",
            np.nan,
            r"'nf4-bitsandbytes': energy_kwh = missing \(NaN\) \(must be present\)",
        ),
    ],
)
def test_violations_name_candidate_column_and_value(column, value, message):
    df = good_table()
    df.loc[1, column] = value
    with pytest.raises(UserError, match=message):
        validate_results_table(df)


def test_all_violations_are_listed():
    df = good_table()
    df.loc[0, "accuracy"] = 1.5
    df.loc[1, "co2_kg"] = -1.0
    with pytest.raises(UserError) as err:
        validate_results_table(df)
    assert "'bf16': accuracy = 1.5" in str(err.value) and "'nf4-bitsandbytes': co2_kg" in str(
        err.value
    )


def test_nan_outside_objectives_is_allowed_but_not_in_them():
    df = good_table()
    df.loc[0, "co2_kg"] = np.nan  # co2 is not a default objective: absent is fine
    validate_results_table(df)
    from ecocompress.metrics.types import parse_objectives

    with pytest.raises(UserError, match="co2_kg = missing"):
        validate_results_table(df, parse_objectives("accuracy,co2_kg"))


def test_non_numeric_value():
    df = good_table().astype({"latency_ms": object})
    df.loc[0, "latency_ms"] = "fast"
    with pytest.raises(UserError, match=r"'bf16': latency_ms = 'fast' is not a number"):
        validate_results_table(df)


PPL = "perplexity/wikitext2"
LOW, HIGH = "perplexity_ci_low/wikitext2", "perplexity_ci_high/wikitext2"
LOGSE = "log_perplexity_stderr/wikitext2"


def ppl_table() -> pd.DataFrame:
    return good_table().assign(
        **{
            PPL: [15.41, 18.0, np.nan],
            LOW: [14.80, 17.0, np.nan],
            HIGH: [16.05, 19.5, np.nan],
            LOGSE: [0.02, 0.03, np.nan],
        }
    )


def test_perplexity_table_passes():
    validate_results_table(ppl_table())


def test_perplexity_only_rows_pass():
    # no accuracy column at all: only perplexity was run
    df = ppl_table().drop(columns=["accuracy", "exact_match/gsm8k", "accuracy_stderr"])
    validate_results_table(df)
    from ecocompress.metrics.types import parse_objectives

    validate_results_table(df, parse_objectives("perplexity/wikitext2,memory_gb"))


def test_rows_without_perplexity_pass_unless_it_is_an_objective():
    df = ppl_table()
    df.loc[1, [PPL, LOW, HIGH, LOGSE]] = np.nan  # benchmark not run for this candidate
    validate_results_table(df)
    from ecocompress.metrics.types import parse_objectives

    with pytest.raises(UserError, match=r"'nf4-bitsandbytes': perplexity/wikitext2 = missing"):
        validate_results_table(df, parse_objectives("perplexity/wikitext2,memory_gb"))


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (PPL, 0.9, r"'nf4-bitsandbytes': perplexity/wikitext2 = 0\.9 \(must be >= 1\)"),
        (LOW, -1.0, r"'nf4-bitsandbytes': perplexity_ci_low/wikitext2 = -1\.0 \(must be >= 0\)"),
        (HIGH, -1.0, r"'nf4-bitsandbytes': perplexity_ci_high/wikitext2 = -1\.0"),
        (LOGSE, -0.01, r"'nf4-bitsandbytes': log_perplexity_stderr/wikitext2 = -0\.01 \(must"),
        (LOW, 18.5, r"'nf4-bitsandbytes': perplexity_ci_low/wikitext2 = 18\.5 is above "),
        (HIGH, 17.5, r"'nf4-bitsandbytes': perplexity/wikitext2 = 18\.0 is above "),
        (PPL, np.nan, r"'nf4-bitsandbytes': perplexity/wikitext2 = missing \(NaN\) \(must be "),
        (PPL, "low", r"'nf4-bitsandbytes': perplexity/wikitext2 = 'low' is not a number"),
    ],
)
def test_perplexity_violations(column, value, message):
    df = ppl_table().astype({column: object}) if isinstance(value, str) else ppl_table()
    df.loc[1, column] = value
    with pytest.raises(UserError, match=message):
        validate_results_table(df)


def test_interval_without_perplexity_column_is_caught():
    df = ppl_table().drop(columns=[PPL])
    with pytest.raises(UserError, match=r"'bf16': perplexity/wikitext2 = missing") as err:
        validate_results_table(df)
    assert "the row gives log_perplexity_stderr/wikitext2" in str(err.value)


def test_perplexity_equal_to_its_bounds_passes():
    df = ppl_table()
    df.loc[0, [PPL, LOW, HIGH]] = [1.0, 1.0, 1.0]
    validate_results_table(df)
