"""BIG-Bench Hard: exact match, 3-shot, on a chosen set of subtasks.

lm-eval's ``bbh_fewshot_<task>`` carries the 3 published exemplars inline (answer
only, no chain of thought), so only the test examples are read. The published
``bbh/<task>.json`` is ``{canary, examples: [{input, target}]}``; ``convert`` keeps
``input`` and ``target`` (the Hub schema of ``SaylorTwift/bbh``). The benchmark
score is the item-weighted mean over subtasks.

lm-eval 0.4.13's ``bbh_fewshot`` compares the raw completion with the target, and the
model's completion of ``A:`` starts with a space (" False" vs "False"), so every
answer scores 0. ``FIXES`` adds a ``strip`` filter (lm-eval's ``remove_whitespace``)
before exact match, for local and Hub data alike; the metric key is
``exact_match,strip``.
"""

from __future__ import annotations

import difflib

from ecocompress.tasks.benchmarks.base import Benchmark, Check, Unit, lm_eval_task_dir, text_or_none
from ecocompress.tasks.errors import UserError

NAME = "bbh"
BBH_TASKS = (
    "boolean_expressions",
    "causal_judgement",
    "date_understanding",
    "disambiguation_qa",
    "dyck_languages",
    "formal_fallacies",
    "geometric_shapes",
    "hyperbaton",
    "logical_deduction_five_objects",
    "logical_deduction_seven_objects",
    "logical_deduction_three_objects",
    "movie_recommendation",
    "multistep_arithmetic_two",
    "navigate",
    "object_counting",
    "penguins_in_a_table",
    "reasoning_about_colored_objects",
    "ruin_names",
    "salient_translation_error_detection",
    "snarks",
    "sports_understanding",
    "temporal_sequences",
    "tracking_shuffled_objects_five_objects",
    "tracking_shuffled_objects_seven_objects",
    "tracking_shuffled_objects_three_objects",
    "web_of_lies",
    "word_sorting",
)


FIXES = {
    "filter_list": [
        {"name": "strip", "filter": [{"function": "remove_whitespace"}, {"function": "take_first"}]}
    ]
}


def check_subtasks(subtasks: tuple[str, ...]) -> None:
    """Raise ``UserError`` (with a did-you-mean hint) for an unknown or empty subtask list."""
    if not subtasks:
        raise UserError(f"bbh_tasks is empty: choose from {', '.join(BBH_TASKS)}")
    for t in subtasks:
        if t not in BBH_TASKS:
            close = difflib.get_close_matches(t, BBH_TASKS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"unknown bbh task {t!r} in bbh_tasks{hint} (allowed: {', '.join(BBH_TASKS)})"
            )


def units(subtasks: tuple[str, ...] = BBH_TASKS) -> list[Unit]:
    check_subtasks(subtasks)
    base = lm_eval_task_dir() / "bbh" / "fewshot"
    return [
        Unit(
            key=t,
            relpath=f"bbh/bbh/{t}.json",
            hub_task=f"bbh_fewshot_{t}",
            local_task=f"ecocompress_bbh_fewshot_{t}",
            base_yaml=base / f"{t}.yaml",
            split="test",
            fixes=FIXES,
        )
        for t in subtasks
    ]


def row(doc: dict) -> dict:
    inp, tgt = text_or_none(doc, "input"), text_or_none(doc, "target")
    return {
        "input": inp,
        "target": tgt,
        "input_len": None if inp is None else len(inp.strip()),
        "target_len": None if tgt is None else len(tgt.strip()),
    }


def convert(doc: dict) -> dict:
    return {"input": doc["input"], "target": doc["target"]}


BENCHMARK = Benchmark(
    name=NAME,
    kind="generation",
    default_shots=3,
    metric="exact_match,strip",
    max_fewshot=3,  # the inline exemplars of bbh_fewshot_<task>
    units=units,
    reader="json_examples",
    row=row,
    checks=(
        Check("input", "input", "not_null", "is missing or not a string"),
        Check("target", "target", "not_null", "is missing or not a string"),
        Check("input", "input_len", "between", "is empty", (1, None)),
        Check("target", "target_len", "between", "is empty", (1, None)),
    ),
    convert=convert,
    notes_local=(
        "3 fixed answer-only exemplars per subtask (lm-eval bbh_fewshot); item-weighted mean",
    ),
    notes_hub=(
        "3 fixed answer-only exemplars per subtask (lm-eval bbh_fewshot); item-weighted mean",
    ),
)
