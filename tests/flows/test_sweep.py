"""Integration: the sweep flow on the tiny local model, MLflow runs, caching, failures.

One module-scoped ECOCOMPRESS_HOME (MLflow store + caches) and one first sweep
(``first_sweep``) that the tests needing its caches ask for, so they pass in any order.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.homes import fresh_home

pytestmark = pytest.mark.slow

BENCH = "truthfulqa,commonsenseqa"


@pytest.fixture(scope="module")
def eco_home(tmp_path_factory: pytest.TempPathFactory):
    with fresh_home(tmp_path_factory, "eco-home") as home:
        yield home


@pytest.fixture(scope="module")
def prefect_harness(eco_home):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


def _sweep(tiny_model_dir: Path, data_dir: Path, *extra: str, bench: str = BENCH) -> dict:
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow

    argv = [
        "--model",
        str(tiny_model_dir),
        "--bits",
        "16,8",
        "--prune",
        "none,magnitude",
        "--sparsity",
        "0.5",
        "--benchmarks",
        bench,
        "--limit",
        "2",
        "--data-dir",
        str(data_dir),
        "--experiment",
        "tiny",
        "--max-gen-toks",
        "8",
        *extra,
    ]
    r = resolve("sweep", parse_settings("sweep", argv))
    return sweep_flow(**flow_parameters(r), quiet=True)


def _is_int8(model) -> bool:
    return any("8bit" in type(m).__name__ for m in model.modules())


def _client():
    from mlflow import MlflowClient

    from ecocompress.metrics.tracking import tracking_uri

    return MlflowClient(tracking_uri())


def _children(parent_run_id: str):
    c = _client()
    parent = c.get_run(parent_run_id)
    return c.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'"
    )


@pytest.fixture(scope="module")
def first_sweep(tiny_model_dir, shared_data_dir, prefect_harness) -> dict:
    return _sweep(tiny_model_dir, shared_data_dir)


def test_first_sweep_logs_children_metrics_and_pareto(first_sweep):
    s = first_sweep
    assert s["n_ok"] == 4
    assert len(s["executed_steps"]) > 0
    kids = _children(s["parent_run_id"])
    assert sorted(r.data.tags["candidate"] for r in kids) == sorted(
        ["bf16", "magnitude-0.5+bf16", "int8-bitsandbytes", "magnitude-0.5+int8-bitsandbytes"]
    )
    expected = {
        "acc/truthfulqa",
        "acc/commonsenseqa",
        "acc_stderr/truthfulqa",
        "acc_stderr/commonsenseqa",
        "accuracy",
        "latency_ms",
        "throughput_tps",
        "memory_gb",
        "peak_rss_gb",
        "energy_kwh",
        "co2_kg",
        "compression_ratio",
        "sparsity",
    }
    for r in kids:
        assert r.info.status == "FINISHED"
        assert set(r.data.metrics) == expected
        assert r.data.tags["cache_hit"] == "false"
        assert r.data.tags["energy_method"]
        assert r.data.tags["evaluator"] == "lm-eval"
        assert r.data.params["limit"] == "2"
        for k in ("model", "bits", "quant_backend", "prune", "sparsity", "pattern", "limit"):
            assert k in r.data.params
        arts = {a.path for a in _client().list_artifacts(r.info.run_id)}
        assert {"lm_eval", "emissions"} <= arts
        m = r.data.metrics
        assert 0 <= m["accuracy"] <= 1 and m["energy_kwh"] > 0 and m["co2_kg"] > 0
    by = {r.data.tags["candidate"]: r.data.metrics for r in kids}
    assert by["magnitude-0.5+bf16"]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # bf16 halves fp32 weights; int8 shrinks the decoder Linear layers further
    assert by["bf16"]["compression_ratio"] == pytest.approx(2.0, rel=0.01)
    assert by["int8-bitsandbytes"]["memory_gb"] < by["bf16"]["memory_gb"]
    parent_arts = {a.path for a in _client().list_artifacts(s["parent_run_id"])}
    assert {"pareto.json", "pareto.csv", "pareto.html"} <= parent_arts
    assert _client().get_run(s["parent_run_id"]).data.tags["screening"] == "true"


def test_rerun_evaluates_nothing(tiny_model_dir, shared_data_dir, first_sweep):
    s = _sweep(tiny_model_dir, shared_data_dir)
    assert s["executed_steps"] == []
    kids = _children(s["parent_run_id"])
    assert len(kids) == 4 and all(r.data.tags["cache_hit"] == "true" for r in kids)


def test_changing_one_benchmark_reruns_only_it(tiny_model_dir, shared_data_dir, first_sweep):
    s = _sweep(tiny_model_dir, shared_data_dir, "--num-fewshot", "commonsenseqa=1")
    # carbon is re-derived (arithmetic) because the candidate's energy changed
    heavy = [x for x in s["executed_steps"] if not x.endswith(":carbon")]
    assert sorted(heavy) == sorted(
        f"{c}:evaluate commonsenseqa"
        for c in [
            "bf16",
            "magnitude-0.5+bf16",
            "int8-bitsandbytes",
            "magnitude-0.5+int8-bitsandbytes",
        ]
    )


def test_the_shared_prefix_evaluator_reruns_only_evaluations_and_is_tagged(
    tiny_model_dir, shared_data_dir, first_sweep
):
    """``--evaluator shared-prefix`` is part of the evaluations' cache keys (they run
    again, nothing else does) and a tag of every child run; the scores are lm-eval's (the
    same choices on the tiny model)."""
    s = _sweep(tiny_model_dir, shared_data_dir, "--evaluator", "shared-prefix")
    heavy = {x.split(":")[1] for x in s["executed_steps"] if not x.endswith(":carbon")}
    assert heavy == {"evaluate truthfulqa", "evaluate commonsenseqa"}
    kids = _children(s["parent_run_id"])
    assert {r.data.tags["evaluator"] for r in kids} == {"shared-prefix"}
    before = {r["candidate"]: r["accuracy"] for r in first_sweep["rows"]}
    assert {r["candidate"]: r["accuracy"] for r in s["rows"]} == before


def test_failed_candidate_is_recorded_and_sweep_goes_on(
    tiny_model_dir, shared_data_dir, prefect_harness, monkeypatch
):
    import ecocompress.tasks.evaluate as ev

    real = ev.evaluate_benchmark

    def fake_failing_evaluate(model, tokenizer, spec, *a, **kw):  # a fake, named as such
        if _is_int8(model):
            raise RuntimeError("fake failure for the test")
        return real(model, tokenizer, spec, *a, **kw)

    monkeypatch.setattr(ev, "evaluate_benchmark", fake_failing_evaluate)
    s = _sweep(tiny_model_dir, shared_data_dir, "--num-fewshot", "commonsenseqa=2")
    status = {r["candidate"]: r["status"] for r in s["rows"]}
    assert status == {
        "bf16": "ok",
        "magnitude-0.5+bf16": "ok",
        "int8-bitsandbytes": "failed",
        "magnitude-0.5+int8-bitsandbytes": "failed",
    }
    kids = {r.data.tags["candidate"]: r for r in _children(s["parent_run_id"])}
    assert kids["int8-bitsandbytes"].info.status == "FAILED"
    assert "fake failure" in kids["int8-bitsandbytes"].data.tags["failure_reason"]
    assert "accuracy" not in kids["int8-bitsandbytes"].data.metrics
    assert kids["bf16"].info.status == "FINISHED"
    front = s["front"]
    assert not front[front["status"] == "failed"]["on_front"].any()


def test_a_programmer_error_stops_the_sweep_instead_of_failing_a_candidate(
    tiny_model_dir, shared_data_dir, prefect_harness, monkeypatch
):
    """A TypeError is a bug in this code, not a model that could not be compressed."""
    import ecocompress.tasks.evaluate as ev

    def fake_buggy_evaluate(*a, **kw):  # a fake, named as such
        raise TypeError("fake bug for the test")

    monkeypatch.setattr(ev, "evaluate_benchmark", fake_buggy_evaluate)
    with pytest.raises(TypeError, match="fake bug"):
        _sweep(tiny_model_dir, shared_data_dir, "--num-fewshot", "commonsenseqa=4",
               "--experiment", "tiny-bug")  # fmt: skip
    c = _client()
    runs = c.search_runs([c.get_experiment_by_name("tiny-bug").experiment_id])
    by = {r.data.tags.get("candidate", "parent"): r for r in runs}
    assert set(by) == {"bf16", "parent"}  # stopped at the first candidate
    assert by["bf16"].info.status == "FAILED" and by["parent"].info.status == "FAILED"
    assert by["bf16"].data.tags["failure_reason"] == "programmer error: TypeError"


def test_interrupt_marks_the_run_failed_and_keeps_earlier(
    tiny_model_dir, shared_data_dir, first_sweep, monkeypatch
):
    import ecocompress.tasks.evaluate as ev

    real = ev.evaluate_benchmark

    def fake_interrupting_evaluate(model, tokenizer, spec, *a, **kw):
        if _is_int8(model):
            raise KeyboardInterrupt
        return real(model, tokenizer, spec, *a, **kw)

    monkeypatch.setattr(ev, "evaluate_benchmark", fake_interrupting_evaluate)
    c = _client()
    exp = c.get_experiment_by_name("tiny")
    before = {r.info.run_id for r in c.search_runs([exp.experiment_id])}
    with pytest.raises(KeyboardInterrupt):
        _sweep(tiny_model_dir, shared_data_dir, "--num-fewshot", "commonsenseqa=3")
    new = [r for r in c.search_runs([exp.experiment_id]) if r.info.run_id not in before]
    by = {r.data.tags.get("candidate", "parent"): r.info.status for r in new}
    assert by["bf16"] == "FINISHED" and by["magnitude-0.5+bf16"] == "FINISHED"
    assert by["int8-bitsandbytes"] == "FAILED"
    assert by["parent"] == "KILLED"
    assert "magnitude-0.5+int8-bitsandbytes" not in by
    assert all(s != "RUNNING" for s in by.values())


def test_perplexity_benchmark_in_the_table_and_a_frontier_beyond_noise(
    tiny_model_dir, shared_data_dir, prefect_harness
):
    import json

    s = _sweep(
        tiny_model_dir,
        shared_data_dir,
        "--ppl-tokens",
        "256",
        "--ppl-window",
        "128",
        "--ppl-stride",
        "64",
        "--objectives",
        "accuracy:max,perplexity/wikitext2:min,memory_gb:min",
        "--noise-z",
        "1",
        "--experiment",
        "tiny-ppl",
        bench="commonsenseqa,perplexity",
    )
    assert s["n_ok"] == 4
    for row in s["rows"]:
        # accuracy averages the accuracy benchmarks only; perplexity has its own columns
        assert row["accuracy"] == row["acc/commonsenseqa"]
        assert "accuracy/perplexity" not in row
        p = row["perplexity/wikitext2"]
        assert row["perplexity_ci_low/wikitext2"] < p < row["perplexity_ci_high/wikitext2"]
        assert row["log_perplexity_stderr/wikitext2"] > 0
        assert row["eval_cost"]["perplexity"]["n_items"] == 256
    kid = _children(s["parent_run_id"])[0]
    assert "perplexity/wikitext2" in kid.data.metrics
    assert "perplexity" in {a.path for a in _client().list_artifacts(kid.info.run_id)}
    pareto = json.loads((Path(s["report_dir"]) / "pareto.json").read_text())
    assert pareto["z"] == 1.0
    # noise can only keep candidates on the frontier, never drop one
    assert set(pareto["frontier_plain"]) <= set(pareto["frontier"])
    from ecocompress.metrics.table import format_results_table

    table = format_results_table(s["front"])
    assert "perplexity/wikitext2" in table and " [" in table
