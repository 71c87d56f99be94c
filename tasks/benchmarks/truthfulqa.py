"""TruthfulQA MC2: normalised probability mass on the true answers, 0-shot.

The published ``data/v0/mc_task.json`` maps each answer to 0/1; the Hub schema that
lm-eval's ``truthfulqa_mc2`` reads holds ``{choices: [...], labels: [...]}`` in the
same order, which ``convert`` produces. "0-shot" is lm-eval's convention here: the
prompt always starts with its fixed 6-question QA primer.
"""

from __future__ import annotations

from ecocompress.tasks.benchmarks.base import Benchmark, Check, Unit, lm_eval_task_dir, text_or_none

NAME = "truthfulqa"
RELPATH = "truthfulqa/data/v0/mc_task.json"


def units(subtasks: tuple[str, ...] = ()) -> list[Unit]:
    return [
        Unit(
            key=NAME,
            relpath=RELPATH,
            hub_task="truthfulqa_mc2",
            local_task="ecocompress_truthfulqa_mc2",
            base_yaml=lm_eval_task_dir() / "truthfulqa" / "truthfulqa_mc2.yaml",
            split="validation",
        )
    ]


def _targets(v: object) -> dict | None:
    ok = isinstance(v, dict) and v and all(isinstance(k, str) for k in v)
    return v if ok and all(x in (0, 1) and not isinstance(x, float) for x in v.values()) else None


def row(doc: dict) -> dict:
    mc1, mc2 = _targets(doc.get("mc1_targets")), _targets(doc.get("mc2_targets"))
    return {
        "question": text_or_none(doc, "question"),
        # None when the field is absent or not a {answer: 0/1} mapping
        "mc1_true": None if mc1 is None else sum(mc1.values()),
        # lm-eval's mc1 scores choice 0 as the gold answer: the true one must come first
        "mc1_first": None if mc1 is None else int(next(iter(mc1.values()))),
        "mc2_true": None if mc2 is None else sum(mc2.values()),
    }


def convert(doc: dict) -> dict:
    """Published ``{answer: 0/1}`` maps -> Hub ``{choices, labels}`` lists (order kept)."""
    return {
        "question": doc["question"],
        "mc1_targets": {
            "choices": list(doc["mc1_targets"]),
            "labels": list(doc["mc1_targets"].values()),
        },
        "mc2_targets": {
            "choices": list(doc["mc2_targets"]),
            "labels": list(doc["mc2_targets"].values()),
        },
    }


_BAD_MAP = "is missing or not a mapping of answer -> 0/1"
BENCHMARK = Benchmark(
    name=NAME,
    kind="multiple_choice",
    default_shots=0,
    metric="acc,none",
    max_fewshot=0,  # no train split: extra shots would be drawn from the evaluated questions
    units=units,
    reader="json_array",
    row=row,
    checks=(
        Check("question", "question", "not_null", "is missing or not a string"),
        Check("mc1_targets", "mc1_true", "not_null", _BAD_MAP),
        Check("mc2_targets", "mc2_true", "not_null", _BAD_MAP),
        Check("mc1_targets", "mc1_true", "between", "must have exactly one true answer", (1, 1)),
        Check("mc1_targets", "mc1_first", "in_set", "must list the true answer first", [1]),
        Check("mc2_targets", "mc2_true", "between", "has no true answer", (1, None)),
    ),
    convert=convert,
    notes_local=("0-shot after lm-eval's fixed 6-question QA primer",),
    notes_hub=("0-shot after lm-eval's fixed 6-question QA primer",),
)
