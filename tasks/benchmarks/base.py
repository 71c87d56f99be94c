"""What a benchmark declares: kind, primary metric and direction, shots, data and checks.

Every benchmark is one ``Benchmark``: the curated ones (a module each in this package),
``perplexity`` (our sliding-window evaluator) and any task of the installed lm-eval or of
``--include-path`` (declared from its YAML, ``tasks.benchmarks.lm_eval_tasks``). The
logged metric names are built here and nowhere else (``metric_column``, ``stderr_column``):
``<primary metric>/<benchmark>`` such as ``exact_match/gsm8k`` or ``acc_norm/arc_easy``.

An lm-eval benchmark is evaluated as one or more lm-eval tasks (``Unit``), each reading one
source file. With a local data dir, a unit's task is a generated YAML that ``include:``s the
installed lm-eval YAML and points it at the file (converted to the Hub schema when the
published format differs); without one, lm-eval's own task reads the Hub.
"""

from __future__ import annotations

import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ecocompress.tasks.errors import UserError

STATIC_DIR = Path(__file__).resolve().parent  # our own task YAMLs (humaneval)

Kind = Literal["multiple_choice", "loglikelihood", "generation", "code", "perplexity", "group"]
Direction = Literal["max", "min"]

# The natural direction of the metrics lm-eval tasks report (and of our perplexity). A task
# whose metric is not here takes the ``higher_is_better`` of its YAML.
METRIC_DIRECTIONS: dict[str, Direction] = {
    **dict.fromkeys(
        ("acc", "acc_norm", "acc_mutual_info", "exact_match", "mc1", "mc2", "pass_at_1", "f1"),
        "max",
    ),
    **dict.fromkeys(("mcc", "bleu", "chrf", "ter_neg", "rouge1", "rouge2", "rougeL"), "max"),
    **dict.fromkeys(("perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"), "min"),
}
# Scores that are fractions of items in [0, 1]: the ones averaged into ``accuracy``.
UNIT_SCORES = ("acc", "acc_norm", "acc_mutual_info", "exact_match", "mc1", "mc2", "pass_at_1", "f1")
LOG_SCALE = ("perplexity",)  # stderr is that of log(value): our perplexity's mean NLL


def metric_name(metric_key: str) -> str:
    """lm-eval's result key ``"<metric>,<filter>"`` as a column-safe name (``pass@1`` ->
    ``pass_at_1``: MLflow allows letters, digits, ``_ - . / :`` and spaces only)."""
    return metric_key.partition(",")[0].replace("@", "_at_")


def metric_column(metric: str, benchmark: str) -> str:
    """The logged column of a benchmark's primary metric: ``exact_match/gsm8k``."""
    return f"{metric}/{benchmark}"


def stderr_column(column: str) -> str | None:
    """The column holding the standard error of ``column`` (``<metric>/<b>``), else None.

    ``acc/piqa`` -> ``acc_stderr/piqa`` (lm-eval's standard error of the mean item score);
    ``perplexity/wikitext2`` -> ``log_perplexity_stderr/wikitext2`` (standard error of the
    mean token NLL in nats, i.e. of log(perplexity)).
    """
    metric, sep, bench = column.partition("/")
    if not sep or not bench or metric.endswith("_stderr"):
        return None
    if metric in LOG_SCALE:
        return f"log_{metric}_stderr/{bench}"
    return f"{metric}_stderr/{bench}"


def lm_eval_task_dir() -> Path:
    """Folder of the installed lm-eval task YAMLs (resolved without importing lm_eval)."""
    import importlib.util

    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        raise UserError("lm-eval is not installed: pip install 'lm-eval>=0.4.9'")
    return Path(spec.origin).parent / "tasks"


@dataclass(frozen=True)
class Check:
    """One data expectation, reported as ``<file>:<line>: field '<field>' <message>``.

    ``column`` is the DataFrame column the expectation reads (see ``Benchmark.row``);
    ``field`` is the name the user sees in their file.
    """

    field: str
    column: str
    kind: Literal["not_null", "regex", "in_set", "between"]
    message: str
    arg: Any = None  # regex string, allowed values, or (min, max)


@dataclass(frozen=True)
class Unit:
    """One lm-eval task of a benchmark and the published file it reads.

    Attributes:
        key: subtask name (bbh) or the benchmark name.
        relpath: source file, relative to the data dir (published format).
        hub_task: lm-eval task name that reads the Hub.
        local_task: name of the generated task that reads the local file.
        base_yaml: YAML the generated task includes (absolute path).
        overrides: YAML keys set on top of ``base_yaml`` for local data only.
        fixes: YAML keys set on top of ``base_yaml`` for local and Hub data alike
            (corrections of the installed task); a unit with fixes reads the Hub through
            a generated wrapper task too.
        split: split name the data file is registered under.
    """

    key: str
    relpath: str
    hub_task: str
    local_task: str
    base_yaml: Path
    split: str
    overrides: dict[str, Any] = field(default_factory=dict)
    fixes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Benchmark:
    """A benchmark's declaration.

    Attributes:
        name: the benchmark's name on the command line (``--benchmarks``).
        kind: multiple_choice, loglikelihood, generation, code, perplexity or group (an
            lm-eval group: several tasks with an aggregate score).
        metric: lm-eval result key ``"<metric>,<filter>"`` of the primary metric (our
            perplexity: ``"perplexity"``).
        direction: ``max`` when higher is better.
        default_shots: shots when the user gives none (``None``: the task's own setting).
        evaluator: ``lm_eval`` or ``perplexity`` (``tasks.perplexity``).
        corpus: the name after ``/`` in the logged column (default: ``name``).
        data_files: files read for a benchmark without units (perplexity), relative to the
            data dir.
        units: the lm-eval tasks for a tuple of subtasks (only bbh has subtasks).
        reader: how the published file is laid out: ``jsonl`` (plain or .gz),
            ``json_array`` or ``json_examples`` (an object with an ``examples`` array).
        row: flattens one record into the DataFrame columns the checks read.
        checks: expectations on those columns.
        convert: published record -> Hub-schema record; ``None`` = already Hub schema.
        converter_version: bump when ``convert`` changes (names the derived file).
        max_fewshot: most exemplars the task has (inline exemplars, or none at all);
            ``None`` = sampled from a split, no fixed cap.
        notes: caveats recorded with every result (local data / Hub data).
    """

    name: str
    kind: Kind
    metric: str
    direction: Direction = "max"
    default_shots: int | None = 0
    evaluator: Literal["lm_eval", "perplexity"] = "lm_eval"
    corpus: str | None = None
    data_files: tuple[str, ...] = ()
    units: Callable[[tuple[str, ...]], list[Unit]] | None = None
    reader: Literal["jsonl", "json_array", "json_examples"] = "jsonl"
    row: Callable[[dict], dict[str, Any]] | None = None
    checks: tuple[Check, ...] = ()
    convert: Callable[[dict], dict] | None = None
    converter_version: int = 1
    max_fewshot: int | None = None
    notes_local: tuple[str, ...] = ()
    notes_hub: tuple[str, ...] = ()
    task_yaml: str | None = None  # an lm-eval task's own YAML (not curated)
    curated: bool = True  # declared in this package (tuned settings), not read from a YAML

    @property
    def column(self) -> str:
        """The logged column of the primary metric, e.g. ``exact_match/gsm8k``."""
        return metric_column(metric_name(self.metric), self.corpus or self.name)

    @property
    def stderr_column(self) -> str | None:
        return stderr_column(self.column)

    @property
    def unit_score(self) -> bool:
        """The primary metric is a fraction of items in [0, 1] (part of ``accuracy``)."""
        return metric_name(self.metric) in UNIT_SCORES


def text_or_none(doc: dict, key: str) -> str | None:
    """``doc[key]`` if it is a string, else ``None`` (so a wrong type fails not-null)."""
    v = doc.get(key)
    return v if isinstance(v, str) else None


@dataclass(frozen=True)
class Record:
    """One parsed item: its 1-based line, index in the file and content."""

    line: int
    item: int
    doc: dict


def read_records(path: Path, reader: str, shown: str) -> list[Record]:
    """Parse a published benchmark file item by item, keeping line numbers.

    Args:
        path: the file.
        reader: ``jsonl`` | ``json_array`` | ``json_examples`` (see ``Benchmark``).
        shown: how the file is named in error messages (relative to the data dir).

    Raises:
        UserError: a missing file, invalid JSON or a non-object item, naming file and line.
    """
    if not path.is_file():
        raise UserError(f"benchmark data file not found: {path}")
    try:
        if reader == "jsonl":
            return list(_jsonl(path, shown))
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (OSError, EOFError) as exc:  # a corrupt .gz
        raise UserError(f"{shown} cannot be read: {exc}") from None
    try:
        top = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{shown}:{e.lineno}: not valid JSON ({e.msg})") from None
    start = 0
    if reader == "json_examples":
        if not isinstance(top, dict) or not isinstance(top.get("examples"), list):
            raise UserError(f"{shown}:1: field 'examples' is missing or not a list")
        m = re.search(r'"examples"\s*:\s*\[', text)
        start = m.end() - 1 if m else 0
    elif not isinstance(top, list):
        raise UserError(f"{shown}:1: expected a JSON array of items")
    return list(_array_items(text, start, shown))


def _jsonl(path: Path, shown: str) -> Iterator[Record]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        item = 0
        for n, raw in enumerate(f, start=1):
            if not raw.strip():
                continue  # blank lines carry no item (datasets' json reader skips them too)
            try:
                doc = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{shown}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(doc, dict):
                raise UserError(f"{shown}:{n}: expected a JSON object, got {type(doc).__name__}")
            yield Record(n, item, doc)
            item += 1


def _array_items(text: str, bracket: int, shown: str) -> Iterator[Record]:
    """Walk the JSON array opening at ``text[bracket]``; the whole text already parsed."""
    dec = json.JSONDecoder()
    ws = re.compile(r"[\s,]*")
    pos = ws.match(text, bracket + 1).end()
    item = 0
    while pos < len(text) and text[pos] != "]":
        doc, end = dec.raw_decode(text, pos)
        line = text.count("\n", 0, pos) + 1
        if not isinstance(doc, dict):
            raise UserError(f"{shown}:{line}: item {item} is not a JSON object")
        yield Record(line, item, doc)
        item += 1
        pos = ws.match(text, end).end()
