"""The benchmark registry: curated benchmarks, perplexity and any lm-eval task as one kind
of thing, the logged metric names built in one place, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks import REGISTRY, get_benchmark
from ecocompress.tasks.benchmarks.base import metric_column, metric_name, stderr_column
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import EvalSpec

CURATED = {
    "gsm8k": ("generation", "exact_match/gsm8k", 8),
    "truthfulqa": ("multiple_choice", "acc/truthfulqa", 0),
    "commonsenseqa": ("multiple_choice", "acc/commonsenseqa", 5),
    "bbh": ("generation", "exact_match/bbh", 3),
    "humaneval": ("code", "pass_at_1/humaneval", 0),
    "perplexity": ("perplexity", "perplexity/wikitext2", 0),
}


@pytest.mark.parametrize("name", list(CURATED))
def test_each_curated_benchmark_declares_kind_metric_direction_and_shots(name):
    b = REGISTRY[name]
    kind, column, shots = CURATED[name]
    assert (b.kind, b.column, b.default_shots) == (kind, column, shots)
    assert b.direction == ("min" if name == "perplexity" else "max")
    assert b.unit_score is (name != "perplexity")
    assert EvalSpec(benchmark=name).num_fewshot == shots


def test_perplexity_is_registered_like_the_others():
    b = get_benchmark("perplexity")
    assert b.evaluator == "perplexity" and b.curated
    assert b.stderr_column == "log_perplexity_stderr/wikitext2"
    assert b.data_files == ("wikitext2/wiki.test.raw.gz",)


def test_metric_names_are_built_in_one_place():
    assert metric_name("pass@1,none") == "pass_at_1"  # MLflow refuses '@'
    assert metric_name("exact_match,flexible-extract") == "exact_match"
    assert metric_column("acc_norm", "arc_easy") == "acc_norm/arc_easy"
    assert stderr_column("acc_norm/arc_easy") == "acc_norm_stderr/arc_easy"
    assert stderr_column("acc_norm_stderr/arc_easy") is None
    assert stderr_column("latency_ms") is None


@pytest.mark.parametrize(
    ("name", "kind", "metric", "direction"),
    [
        ("arc_easy", "multiple_choice", "acc,none", "max"),
        ("piqa", "multiple_choice", "acc,none", "max"),
        ("winogrande", "multiple_choice", "acc,none", "max"),
        ("wikitext", "perplexity", "word_perplexity,none", "min"),
        ("mmlu", "group", "acc,none", "max"),
    ],
)
def test_any_lm_eval_task_is_declared_from_its_yaml(name, kind, metric, direction):
    b = get_benchmark(name)
    assert (b.kind, b.metric, b.direction, b.curated) == (kind, metric, direction, False)
    assert b.task_yaml and Path(b.task_yaml).is_file()
    assert b.column == f"{metric.partition(',')[0]}/{name}"


def test_a_mistyped_task_gets_the_closest_names():
    with pytest.raises(UserError, match=r"unknown benchmark 'arc_eazy'.*did you mean 'arc_easy'"):
        get_benchmark("arc_eazy")


def test_a_tag_is_refused_by_name():
    with pytest.raises(UserError, match="'ai2_arc' is an lm-eval tag"):
        get_benchmark("ai2_arc")


def _user_task(folder: Path, name: str = "my_qa", metric: str = "acc") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    yaml = folder / f"{name}.yaml"
    yaml.write_text(
        json.dumps(
            {
                "task": name,
                "dataset_path": "json",
                "dataset_kwargs": {"data_files": {"test": str(folder / "items.jsonl")}},
                "test_split": "test",
                "output_type": "multiple_choice",
                "doc_to_text": "Q: {{question}}\nA:",
                "doc_to_choice": "{{choices}}",
                "doc_to_target": "{{answer}}",
                "metric_list": [{"metric": metric, "higher_is_better": True}],
            }
        )
    )
    return yaml


def test_a_users_own_task_comes_from_include_path(tmp_path):
    yaml = _user_task(tmp_path / "tasks")
    with pytest.raises(UserError, match="unknown benchmark 'my_qa'"):
        get_benchmark("my_qa")
    b = get_benchmark("my_qa", (str(tmp_path / "tasks"),))
    assert (b.kind, b.metric, b.task_yaml) == ("multiple_choice", "acc,none", str(yaml))
    # a task added to the folder later is found: the index is keyed by the folder's YAMLs
    _user_task(tmp_path / "tasks", "my_qa2", "acc_norm")
    assert get_benchmark("my_qa2", (str(tmp_path / "tasks"),)).column == "acc_norm/my_qa2"


def test_eval_spec_keeps_lm_eval_settings_for_lm_eval_tasks_only():
    s = EvalSpec(benchmark="gsm8k", include_path=("/x",))
    assert s.include_path == ()
    assert EvalSpec(benchmark="arc_easy", include_path=("/x",)).include_path == ("/x",)
    with pytest.raises(ValueError, match="curated benchmark"):
        EvalSpec(benchmark="gsm8k", task_data="a.jsonl")
    with pytest.raises(ValueError, match="is not a task name"):
        EvalSpec(benchmark="arc easy")


def test_run_params_resolve_lm_eval_tasks_defaults_and_objectives(shared_data_dir):
    from ecocompress.flows.params import RunParams

    p = RunParams(benchmarks="arc_easy,piqa,perplexity", data_dir=str(shared_data_dir))
    assert p.objectives.startswith("accuracy:max,perplexity/wikitext2:min,")
    assert [(s.benchmark, s.num_fewshot) for s in p.eval_specs()] == [
        ("arc_easy", 0),
        ("piqa", 0),
        ("perplexity", 0),
    ]
    w = RunParams(benchmarks="wikitext", data_dir=str(shared_data_dir))
    assert w.objectives.startswith("word_perplexity/wikitext:min,")  # no unit score: no accuracy
    with pytest.raises(ValueError, match="'acc_norm/piqa' is not measured"):
        RunParams(benchmarks="arc_easy", objectives="acc_norm/piqa")


def test_result_record_gives_the_logged_columns():
    from ecocompress.flows.candidate import score_metrics
    from ecocompress.tasks.benchmarks.result import BenchmarkResult

    def result(bench: str, score: float, stderr: float | None) -> BenchmarkResult:
        b = get_benchmark(bench)
        return BenchmarkResult(
            benchmark=bench,
            kind=b.kind,
            metric=b.metric,
            column=b.column,
            stderr_column=b.stderr_column,
            direction=b.direction,
            unit_score=b.unit_score,
            score=score,
            stderr=stderr,
            n_items=10,
            num_fewshot=0,
            limit=10,
            screening=True,
            seconds=1.0,
            results_path="x.json",
            lm_eval_version="0",
            tasks=[bench],
            max_gen_toks=None,
            data_source="local:x",
            companions={"perplexity_ci_low/wikitext2": 9.0} if bench == "perplexity" else {},
        )

    rs = [result("gsm8k", 0.5, 0.1), result("arc_easy", 0.7, 0.1), result("perplexity", 10, 0.2)]
    cols, se = score_metrics(rs)
    assert cols == {
        "exact_match/gsm8k": 0.5,
        "exact_match_stderr/gsm8k": 0.1,
        "acc/arc_easy": 0.7,
        "acc_stderr/arc_easy": 0.1,
        "perplexity/wikitext2": 10,
        "log_perplexity_stderr/wikitext2": 0.2,
        "perplexity_ci_low/wikitext2": 9.0,
        "accuracy": pytest.approx(0.6),  # unit scores only: perplexity is not averaged in
    }
    assert se == pytest.approx((0.1**2 + 0.1**2) ** 0.5 / 2)
    assert score_metrics([result("gsm8k", 0.5, None)])[1] is None
