"""GSM8K: grade-school maths, 8-shot chain of thought, exact match.

lm-eval's ``gsm8k_cot`` carries its 8 exemplars inline (``fewshot_config.samples``),
so it needs no train split. Score = exact match after the ``flexible-extract``
filter (last number in the completion), which does not require the model to copy
the exemplars' "The answer is N." phrasing; ``strict-match`` is kept in the raw
results file.
"""

from __future__ import annotations

from ecocompress.tasks.benchmarks.base import Benchmark, Check, Unit, lm_eval_task_dir, text_or_none

NAME = "gsm8k"
RELPATH = "gsm8k/test.jsonl"  # published openai/grade-school-math file = Hub schema


def units(subtasks: tuple[str, ...] = ()) -> list[Unit]:
    return [
        Unit(
            key=NAME,
            relpath=RELPATH,
            hub_task="gsm8k_cot",
            local_task="ecocompress_gsm8k_cot",
            base_yaml=lm_eval_task_dir() / "gsm8k" / "gsm8k-cot.yaml",
            split="test",
        )
    ]


def row(doc: dict) -> dict:
    return {"question": text_or_none(doc, "question"), "answer": text_or_none(doc, "answer")}


BENCHMARK = Benchmark(
    name=NAME,
    kind="generation",
    default_shots=8,
    metric="exact_match,flexible-extract",
    max_fewshot=8,  # the inline exemplars of gsm8k_cot
    units=units,
    reader="jsonl",
    row=row,
    checks=(
        Check("question", "question", "not_null", "is missing or not a string"),
        Check("answer", "answer", "not_null", "is missing or not a string"),
        Check(
            "answer",
            "answer",
            "regex",
            "does not end with '#### <number>'",
            r"####\s*-?[0-9][0-9,]*(?:\.[0-9]+)?\s*$",
        ),
    ),
    notes_local=(
        "8 fixed chain-of-thought exemplars (lm-eval gsm8k_cot); metric flexible-extract",
    ),
    notes_hub=("8 fixed chain-of-thought exemplars (lm-eval gsm8k_cot); metric flexible-extract",),
)
