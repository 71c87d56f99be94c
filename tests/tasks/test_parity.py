"""Parity with the bare lm-eval CLI: ``evaluate_benchmark`` on the tiny model and
``python -m lm_eval`` on its folder give the same per-item results for every lm-eval benchmark
(the curated ones, and arc_easy and piqa through the generic lm-eval task path), with either
evaluator (``--evaluator lm-eval`` and ``shared-prefix``).

Same model folder (float32), generated task YAMLs, items (limit 3 per task), shots, batch
size, generation budget and seed. The CLI runs in one subprocess that calls lm-eval's own
CLI entry point once per shot count and task folder (one import of lm-eval instead of six);
the comparison is ``tests/perf/parity.py``'s, which the perf script runs on gemma-3-270m.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks import get_benchmark
from ecocompress.tasks.benchmarks.base import STATIC_DIR
from ecocompress.tasks.evaluate import evaluate_benchmark, task_source
from ecocompress.tasks.specs import EvalSpec
from tests.perf.parity import aggregate, compare_samples, read_cli_output

pytestmark = pytest.mark.slow

# the curated lm-eval benchmarks, and two lm-eval tasks read through the generic registry path
BENCHMARKS = ("gsm8k", "truthfulqa", "commonsenseqa", "bbh", "humaneval", "arc_easy", "piqa")
LIMIT, BATCH, MAX_GEN_TOKS = 3, 2, 16

# Runs lm-eval's CLI main once per argv list, as `python -m lm_eval <argv>` would.
DRIVER = """
import json, sys
from lm_eval.__main__ import cli_evaluate
for argv in json.loads(sys.argv[1]):
    sys.argv = ["lm_eval", *argv]
    cli_evaluate()
"""


@pytest.fixture(scope="module", autouse=True)
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with pytest.MonkeyPatch.context() as mp:
        d = tmp_path_factory.mktemp("home")
        mp.setenv("ECOCOMPRESS_HOME", str(d))
        yield d


def spec(name: str, evaluator: str = "lm-eval") -> EvalSpec:
    return EvalSpec(
        benchmark=name,
        limit=LIMIT,
        batch_size=BATCH,
        max_gen_toks=MAX_GEN_TOKS,
        evaluator=evaluator,
    )


@pytest.fixture(scope="module", params=["lm-eval", "shared-prefix"])
def pipeline(
    request, tiny_model_dir: Path, shared_data_dir: Path, tmp_path_factory
) -> dict[str, dict]:
    """lm-eval output of ``evaluate_benchmark`` per benchmark (samples included), with
    lm-eval's own ``HFLM`` and with the shared-prefix scorer (tasks/shared_prefix.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = tmp_path_factory.mktemp("pipeline")
    runs = {}
    for b in BENCHMARKS:
        r = evaluate_benchmark(
            model,
            tok,
            spec(b, request.param),
            shared_data_dir,
            out,
            allow_code_execution=b == "humaneval",
        )
        runs[b] = {"out": json.loads(Path(r.results_path).read_text()), "tasks": r.tasks}
    return runs


@pytest.fixture(scope="module")
def cli(tiny_model_dir: Path, shared_data_dir: Path, tmp_path_factory) -> dict[str, tuple]:
    """The bare lm-eval CLI's results and samples per benchmark, on the task folder and
    task names ``evaluate_benchmark`` uses: one CLI run per (shots, include folder)."""
    out = tmp_path_factory.mktemp("cli")
    runs: dict[tuple[int | None, str], list[str]] = {}
    tasks = {}
    for b in BENCHMARKS:
        bench = get_benchmark(b)
        names, include, _, _ = task_source(bench, spec(b), shared_data_dir)
        assert [p for p in include[:-1] if p != str(STATIC_DIR)] == []  # one folder for the CLI
        tasks[b] = list(names)
        shots = spec(b).num_fewshot if spec(b).num_fewshot is not None else bench.default_shots
        runs.setdefault((shots, include[-1]), []).append(b)
    argvs, where = [], {}
    for i, ((shots, include), names) in enumerate(runs.items()):
        where.update({b: out / f"run{i}" for b in names})
        argvs.append(
            ["--model", "hf", "--model_args", f"pretrained={tiny_model_dir},dtype=float32"]
            + ["--tasks", ",".join(t for b in names for t in tasks[b])]
            + ["--include_path", include, "--limit", str(LIMIT)]
            + (["--num_fewshot", str(shots)] if shots is not None else [])
            + ["--batch_size", str(BATCH), "--device", "cpu", "--seed", str(spec("gsm8k").seed)]
            + ["--gen_kwargs", f"max_gen_toks={MAX_GEN_TOKS}", "--log_samples"]
            + ["--output_path", str(out / f"run{i}")]
            + (["--confirm_run_unsafe_code"] if "humaneval" in names else [])
        )
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {b: read_cli_output(where[b], tasks[b]) for b in BENCHMARKS}


@pytest.mark.parametrize("name", BENCHMARKS)
def test_every_item_equals_the_cli(pipeline, cli, name: str) -> None:
    tasks = pipeline[name]["tasks"]
    cli_results, cli_samples = cli[name]
    cmp = compare_samples(pipeline[name]["out"]["samples"], cli_samples)
    n_filters = {"gsm8k": 2}.get(name, 1)  # gsm8k_cot: strict-match and flexible-extract
    assert cmp["items"] == LIMIT * len(tasks)
    assert cmp["records"] == cmp["items"] * n_filters
    assert cmp["records_different"] == 0, cmp["first_differences"]
    bench = get_benchmark(name)
    assert aggregate(pipeline[name]["out"], tasks, bench.metric, bench.kind) == aggregate(
        cli_results, tasks, bench.metric, bench.kind
    )


def test_a_changed_loglikelihood_is_caught(pipeline, cli) -> None:
    """The comparison is not vacuous: one log-likelihood off by 1e-4 relative is a difference."""
    samples = json.loads(json.dumps(pipeline["truthfulqa"]["out"]["samples"]))
    rec = next(iter(samples.values()))[0]
    rec["filtered_resps"][0][0] *= 1 + 1e-4
    cmp = compare_samples(samples, cli["truthfulqa"][1])
    assert cmp["records_different"] == 1 and cmp["first_differences"][0]["why"] == [
        "filtered_resps"
    ]
