"""What a benchmark declares: its lm-eval tasks, metric, source files, converter and checks.

A benchmark is evaluated as one or more lm-eval tasks (``Unit``), each reading one
published source file. With a local data dir, a unit's task is a generated YAML that
``include:``s the installed lm-eval YAML and points it at the file (converted to the
Hub schema when the published format differs); without one, lm-eval's own task reads
the Hub.
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
    """A benchmark's declaration (one per module in this package).

    Attributes:
        name: benchmark name (``specs.BENCHMARKS``).
        metric: lm-eval result key, ``"<metric>,<filter>"``.
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
    metric: str
    units: Callable[[tuple[str, ...]], list[Unit]]
    reader: Literal["jsonl", "json_array", "json_examples"]
    row: Callable[[dict], dict[str, Any]]
    checks: tuple[Check, ...]
    convert: Callable[[dict], dict] | None = None
    converter_version: int = 1
    max_fewshot: int | None = None
    notes_local: tuple[str, ...] = ()
    notes_hub: tuple[str, ...] = ()


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
