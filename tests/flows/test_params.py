"""Specs and the candidate grid: canonical forms, dedup, validation messages."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ecocompress.flows.params import RunParams
from ecocompress.tasks.errors import one_line
from ecocompress.tasks.specs import CandidateSpec, EvalSpec, PruneSpec, QuantSpec, candidate_grid


def test_grid_collapses_equivalent_candidates():
    grid = candidate_grid(
        [16, 8], ["none", "wanda"], [0.3, 0.5], ["unstructured"], ["bitsandbytes"]
    )
    labels = [c.label for c in grid]
    # none x {0.3, 0.5} is one candidate per precision; wanda keeps both sparsities
    assert labels == [
        "bf16",
        "wanda-0.3+bf16",
        "wanda-0.5+bf16",
        "int8-bitsandbytes",
        "wanda-0.3+int8-bitsandbytes",
        "wanda-0.5+int8-bitsandbytes",
    ]


def test_nm_pattern_fixes_sparsity_and_backend_ignored_for_bf16():
    a = CandidateSpec(prune=PruneSpec(method="magnitude", sparsity=0.1, pattern="2:4"))
    b = CandidateSpec(
        prune=PruneSpec(method="magnitude", sparsity=0.7, pattern="2:4"),
        quant=QuantSpec(bits=16, backend="torchao"),
    )
    assert a.canonical() == b.canonical()
    assert a.prune.sparsity == 0.5 and a.prune.nm == (2, 4)
    assert PruneSpec(method="wanda", pattern="4:8").sparsity == 0.5


def test_torchao_is_int8_only():
    with pytest.raises(ValidationError, match="torchao supports bits 8 only"):
        QuantSpec(bits=4, backend="torchao")
    assert (
        candidate_grid([4, 8], ["none"], [0.0], ["unstructured"], ["torchao"])[0].label
        == "int8-torchao"
    )


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QuantSpec(bits=5), "bits 5 is not supported: allowed 32, 16, 8, 4"),
        (
            lambda: PruneSpec(method="wanda", sparsity=0.95),
            "sparsity 0.95 is out of range: allowed 0 to 0.9",
        ),
        (lambda: PruneSpec(method="wanda", sparsity=-0.1), "sparsity -0.1 is out of range"),
        (lambda: PruneSpec(method="wanda", pattern="2-4"), "pattern '2-4' is malformed"),
        (lambda: PruneSpec(method="wanda", pattern="4:2"), "N:M needs 0 < N < M"),
        (
            lambda: PruneSpec(method="lottery"),
            "prune method 'lottery' is not one of none, magnitude, wanda",
        ),
        (lambda: EvalSpec(benchmark="gsm 8k"), "benchmark 'gsm 8k' is not a task name"),
        (lambda: EvalSpec(benchmark="gsm8k", limit=0), "limit 0 must be a positive number"),
        (lambda: RunParams(limit=-3), "limit -3 must be a positive number"),
        (lambda: RunParams(data_dir="/nonexistent/x"), "data_dir /nonexistent/x does not exist"),
        (lambda: RunParams(benchmarks=("humaneval",)), "pass --allow-code-execution"),
        (lambda: RunParams(carbon_intensity=-1), "carbon_intensity -1.0 must be >= 0"),
    ],
)
def test_invalid_specs_name_the_problem(make, message):
    with pytest.raises(ValidationError) as err:
        make()
    msg = one_line(err.value)
    assert message in msg
    assert "\n" not in msg


def test_eval_spec_defaults_defined_once():
    assert EvalSpec(benchmark="gsm8k").num_fewshot == 8
    assert EvalSpec(benchmark="bbh").num_fewshot == 3
    assert EvalSpec(benchmark="truthfulqa", num_fewshot=2).num_fewshot == 2
    assert EvalSpec(benchmark="gsm8k").bbh_tasks == ()
    assert EvalSpec(benchmark="gsm8k", limit=5).screening


def test_run_params_eval_specs_follow_the_order_asked(shared_data_dir):
    p = RunParams(
        benchmarks=("truthfulqa", "gsm8k"),
        limit=3,
        num_fewshot={"gsm8k": 2},
        data_dir=str(shared_data_dir),
    )
    specs = p.eval_specs()
    assert [s.benchmark for s in specs] == ["truthfulqa", "gsm8k"]
    assert specs[1].num_fewshot == 2 and specs[0].limit == 3


def test_humaneval_without_bwrap_is_refused_up_front(monkeypatch: pytest.MonkeyPatch):
    import ecocompress.tasks.sandbox as sandbox
    from ecocompress.tasks.errors import UserError

    monkeypatch.setattr(sandbox, "_bwrap_path", lambda: None)
    sandbox.require_sandbox.cache_clear()
    try:
        with pytest.raises(UserError, match="install bubblewrap"):
            RunParams(benchmarks=("humaneval",), allow_code_execution=True)
    finally:
        sandbox.require_sandbox.cache_clear()
