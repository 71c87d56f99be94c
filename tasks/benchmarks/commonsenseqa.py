"""CommonsenseQA: 5-way multiple choice, 5-shot, accuracy.

With local data there is no train split (its published copy is not in the data
dir), so the few-shot exemplars are drawn from the validation file itself. The
generated task registers that file as the *test* split and as the few-shot split:
lm-eval's sampler removes the evaluated item from its own context only when the
few-shot split equals the test split, so each item is scored without itself among
its exemplars. Scores are therefore close to, but not exactly, lm-eval's
train-exemplar setting. Without a data dir lm-eval's ``commonsense_qa`` reads
``tau/commonsense_qa`` from the Hub and samples exemplars from its train split.
"""

from __future__ import annotations

from ecocompress.tasks.benchmarks.base import Benchmark, Check, Unit, lm_eval_task_dir, text_or_none

NAME = "commonsenseqa"
RELPATH = "commonsenseqa/validation.hf_format.jsonl"  # Hub layout of the dev split
LABELS = ["A", "B", "C", "D", "E"]


def units(subtasks: tuple[str, ...] = ()) -> list[Unit]:
    return [
        Unit(
            key=NAME,
            relpath=RELPATH,
            hub_task="commonsense_qa",
            local_task="ecocompress_commonsense_qa",
            base_yaml=lm_eval_task_dir() / "commonsense_qa" / "default.yaml",
            split="validation",
            overrides={
                "training_split": None,
                "validation_split": None,
                "test_split": "validation",
                "fewshot_split": "validation",
            },
        )
    ]


def row(doc: dict) -> dict:
    choices = doc.get("choices")
    ok = isinstance(choices, dict)
    labels = choices.get("label") if ok else None
    texts = choices.get("text") if ok else None
    return {
        "question": text_or_none(doc, "question"),
        "answerKey": text_or_none(doc, "answerKey"),
        "choices_text": len(texts) if isinstance(texts, list) else None,
        "choices_label": "".join(labels) if isinstance(labels, list) else None,
    }


BENCHMARK = Benchmark(
    name=NAME,
    kind="multiple_choice",
    default_shots=5,
    metric="acc,none",
    units=units,
    reader="jsonl",
    row=row,
    checks=(
        Check("question", "question", "not_null", "is missing or not a string"),
        Check("answerKey", "answerKey", "not_null", "is missing or not a string"),
        Check("choices", "choices_text", "not_null", "is missing or has no 'text' list"),
        Check("choices", "choices_label", "not_null", "is missing or has no 'label' list"),
        Check("answerKey", "answerKey", "in_set", "is not one of A, B, C, D, E", LABELS),
        Check("choices", "choices_text", "between", "must hold exactly 5 texts", (5, 5)),
        Check("choices", "choices_label", "in_set", "must be labelled A-E in order", ["ABCDE"]),
    ),
    notes_local=(
        "few-shot exemplars drawn from the validation file (no train split offline); "
        "the evaluated item is excluded from its own context",
    ),
    notes_hub=("few-shot exemplars sampled from the Hub train split",),
)
