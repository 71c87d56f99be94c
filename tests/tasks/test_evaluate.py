"""evaluate_benchmark on the tiny random-weight Gemma-3 against the shared data (plumbing, not quality)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ecocompress.tasks.benchmarks import REGISTRY
from ecocompress.tasks.benchmarks.base import STATIC_DIR
from ecocompress.tasks.benchmarks.local import (
    all_units,
    hub_task_dir,
    hub_task_name,
    local_task_dir,
)
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.evaluate import BenchmarkResult, evaluate_benchmark, pooled, task_manager
from ecocompress.tasks.specs import EvalSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Caches (generated task YAMLs, converted data) go to a temp dir, not ~/.ecocompress."""
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("home")
        mp.setenv("ECOCOMPRESS_HOME", str(d))
        yield d


@pytest.fixture(scope="module")
def tiny(tiny_model_dir: Path) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def run(tiny, name: str, data_dir: Path, out: Path, **kw) -> BenchmarkResult:
    allow = kw.pop("allow_code_execution", False)
    spec = EvalSpec(
        benchmark=name, limit=kw.pop("limit", 2), max_gen_toks=kw.pop("max_gen_toks", 16), **kw
    )
    return evaluate_benchmark(*tiny, spec, data_dir, out, allow_code_execution=allow)


@pytest.mark.parametrize(
    ("name", "n_items"), [("gsm8k", 2), ("truthfulqa", 2), ("commonsenseqa", 2), ("bbh", 6)]
)
def test_screening_run_fills_every_field(
    tiny, shared_data_dir: Path, tmp_path: Path, name: str, n_items: int
) -> None:
    import torch

    r = run(tiny, name, shared_data_dir, tmp_path)
    assert r.benchmark == name and r.metric == REGISTRY[name].metric
    assert 0.0 <= r.score <= 1.0 and r.n_items == n_items
    assert r.stderr is not None and r.stderr >= 0  # lm-eval gives one from 2 items on
    assert r.screening and r.limit == 2 and any("screening" in n for n in r.notes)
    assert r.num_fewshot == EvalSpec(benchmark=name).num_fewshot and r.seconds > 0
    assert r.data_source.startswith("local:") and r.lm_eval_version
    saved = json.loads(Path(r.results_path).read_text())
    assert set(saved["samples"]) == set(r.tasks)
    assert all(len({s["doc_id"] for s in saved["samples"][t]}) == 2 for t in r.tasks)
    assert json.loads(r.model_dump_json()) == r.model_dump()
    model = tiny[0]
    assert next(model.parameters()).dtype == torch.bfloat16 and model.device.type == "cpu"
    if name in ("gsm8k", "bbh"):
        assert r.max_gen_toks == 16
    else:
        assert r.max_gen_toks is None
    if name == "bbh":  # the strip filter removes the space the model puts after "A:"
        samples = [s for t in r.tasks for s in saved["samples"][t]]
        assert all(s["filtered_resps"][0] == s["resps"][0][0].strip() for s in samples)
        assert set(r.subtasks) == set(EvalSpec(benchmark="bbh").bbh_tasks)
        assert math.isclose(r.score, sum(s["score"] for s in r.subtasks.values()) / 3)


def test_humaneval_needs_explicit_permission(tiny, shared_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="--allow-code-execution"):
        run(tiny, "humaneval", shared_data_dir, tmp_path)
    assert not list(tmp_path.iterdir())


def test_too_many_shots_is_a_user_error(tiny, shared_data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="num_fewshot 9 is too many for gsm8k: allowed 0 to 8"):
        run(tiny, "gsm8k", shared_data_dir, tmp_path, num_fewshot=9)


def test_humaneval_scores_in_the_sandbox(tiny, shared_data_dir: Path, tmp_path: Path) -> None:
    r = run(tiny, "humaneval", shared_data_dir, tmp_path, allow_code_execution=True)
    assert r.metric == "pass@1,none" and r.n_items == 2 and r.score in (0.0, 0.5, 1.0)
    samples = json.loads(Path(r.results_path).read_text())["samples"][r.tasks[0]]
    assert all(s["pass@1"] in (0.0, 1.0) for s in samples)


def test_default_generation_budget_is_lm_evals(tiny, shared_data_dir: Path, tmp_path: Path) -> None:
    r = run(
        tiny, "bbh", shared_data_dir, tmp_path, limit=1, max_gen_toks=None, bbh_tasks=("navigate",)
    )
    assert r.max_gen_toks == 256 and r.n_items == 1  # HFLM's default: bbh_fewshot sets none


def test_commonsenseqa_item_is_never_its_own_exemplar(
    tiny, shared_data_dir: Path, tmp_path: Path
) -> None:
    # 6 items and 5 shots: each context must hold exactly the 5 other questions
    src = shared_data_dir / "commonsenseqa/validation.hf_format.jsonl"
    lines = src.read_text().splitlines()[:6]
    dst = tmp_path / "data/commonsenseqa/validation.hf_format.jsonl"
    dst.parent.mkdir(parents=True)
    dst.write_text("\n".join(lines) + "\n")
    questions = [json.loads(ln)["question"] for ln in lines]
    r = run(tiny, "commonsenseqa", tmp_path / "data", tmp_path / "out", limit=6)
    samples = json.loads(Path(r.results_path).read_text())["samples"][r.tasks[0]]
    assert len(samples) == 6
    for s in samples:
        context = s["arguments"][0][0]  # one (context, continuation) pair per choice
        own = s["doc"]["question"]
        assert context.count(own) == 1 and context.rstrip().endswith("Answer:")
        assert all(q in context for q in questions)


def test_hub_task_names_resolve(shared_data_dir: Path) -> None:
    tm = task_manager((str(STATIC_DIR), str(local_task_dir(shared_data_dir))))
    for bench in REGISTRY.values():
        for unit in all_units(bench):
            assert unit.hub_task in tm.all_tasks and unit.local_task in tm.all_tasks
    wrappers = {p.stem: json.loads(p.read_text()) for p in hub_task_dir().glob("*.yaml")}
    assert len(wrappers) == 27  # the bbh subtasks, which carry the strip fix
    cfg = wrappers["ecocompress_bbh_fewshot_navigate_hub"]
    assert cfg["filter_list"][0]["name"] == "strip" and Path(cfg["include"]).is_file()
    assert hub_task_name(REGISTRY["gsm8k"].units(())[0]) == "gsm8k_cot"


def test_pooled_weights_by_items() -> None:
    per = {"a": {"score": 1.0, "stderr": 0.1, "n": 30}, "b": {"score": 0.0, "stderr": 0.2, "n": 10}}
    score, stderr, n = pooled(per)
    assert (score, n) == (0.75, 40)
    assert math.isclose(stderr, math.sqrt(30**2 * 0.01 + 10**2 * 0.04) / 40)
    per["b"]["stderr"] = None
    assert pooled(per)[1] is None
    with pytest.raises(UserError):
        pooled({"a": {"score": 0.0, "stderr": None, "n": 0}})
