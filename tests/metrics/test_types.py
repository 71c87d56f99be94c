import pytest

from ecocompress.metrics.types import DEFAULT_OBJECTIVES, Objective, parse_objectives
from ecocompress.tasks.errors import UserError


def test_parse_objectives_in_order_with_directions():
    objs = parse_objectives("accuracy:max, latency_ms:min,exact_match/gsm8k:max")
    assert objs == [
        Objective(name="accuracy", direction="max"),
        Objective(name="latency_ms", direction="min"),
        Objective(name="exact_match/gsm8k", direction="max"),
    ]


def test_missing_direction_takes_the_natural_one():
    objs = parse_objectives("energy_kwh,throughput_tps,exact_match/bbh")
    assert [o.direction for o in objs] == ["min", "max", "max"]


def test_default_objectives():
    assert [str(o) for o in DEFAULT_OBJECTIVES] == [
        "accuracy:max",
        "latency_ms:min",
        "memory_gb:min",
        "energy_kwh:min",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("acuracy:max", "did you mean 'accuracy'"),
        ("accuracy/gsm8k", "own metric now, e.g. 'exact_match/gsm8k'"),
        ("exat_match/gsm8k", "did you mean 'exact_match/gsm8k'"),
        ("bleurt/wmt", "unknown objective 'bleurt/wmt'"),
        ("latency_ms:lowest", "allowed 'max' or 'min'"),
        ("accuracy,accuracy:max", "given twice"),
        (" , ", "is empty"),
    ],
)
def test_bad_objectives_raise_user_error(text, message):
    with pytest.raises(UserError, match=message):
        parse_objectives(text)


def test_objective_is_frozen():
    o = Objective(name="accuracy", direction="max")
    with pytest.raises(ValueError):
        o.name = "latency_ms"


def test_perplexity_is_a_known_metric_minimised_and_not_a_cost():
    from ecocompress.metrics.types import COST_METRICS, KNOWN_METRICS

    assert parse_objectives("perplexity/wikitext2") == [
        Objective(name="perplexity/wikitext2", direction="min")
    ]
    objs = parse_objectives("accuracy,perplexity/wikitext2,latency_ms")
    assert [o.direction for o in objs] == ["max", "min", "min"]
    assert "perplexity/wikitext2" in KNOWN_METRICS
    assert "perplexity/wikitext2" not in COST_METRICS
    assert not any(m.startswith("accuracy/") for m in KNOWN_METRICS)


def test_any_lm_eval_metric_takes_its_direction():
    objs = parse_objectives("acc_norm/arc_easy,word_perplexity/wikitext,bleurt/wmt:max")
    assert [o.direction for o in objs] == ["max", "min", "max"]


def test_stderr_and_interval_columns():
    from ecocompress.metrics.types import ci_columns, is_log_scale, stderr_column

    assert stderr_column("accuracy") == "accuracy_stderr"
    assert stderr_column("exact_match/gsm8k") == "exact_match_stderr/gsm8k"
    assert stderr_column("perplexity/wikitext2") == "log_perplexity_stderr/wikitext2"
    assert stderr_column("latency_ms") is None
    assert is_log_scale("perplexity/wikitext2") and not is_log_scale("accuracy")
    assert ci_columns("perplexity/wikitext2") == (
        "perplexity_ci_low/wikitext2",
        "perplexity_ci_high/wikitext2",
    )
    assert ci_columns("accuracy") is None and ci_columns("memory_gb") is None
