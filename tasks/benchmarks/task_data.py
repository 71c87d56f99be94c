"""Local data for any lm-eval task: a declared mapping from task name to a file.

Offline, an lm-eval task reads a local file instead of the Hub. Which file, and how to
read it, is declared in a mapping; the first of these that names a task wins:

1. ``--task-data TASK=PATH[:SPLIT]`` flags (``parse_task_data_flag``);
2. ``<data_dir>/ecocompress-tasks.yaml``, next to the data;
3. the packaged ``data_layout.yaml``, which describes the shared data dir
   (arc_easy, piqa, winogrande, hellaswag); its entries whose file is absent are skipped.

A mapping file is YAML, one entry per lm-eval task name::

    arc_easy:
      path: arc_easy/ARC-Easy-test.hf_format.jsonl   # relative to the YAML's folder
      split: test                # optional: the split the task evaluates (checked)
      required: [question, choices, answerKey]      # optional: not-null fields
    piqa:
      path: piqa/valid.jsonl
      format: piqa               # jsonl | json | a converter in converters.py
      split: validation
      note: a caveat recorded with every result      # optional

``format`` defaults from the suffix (``.jsonl``/``.jsonl.gz`` -> jsonl, ``.json`` -> json).
``required`` defaults to the packaged layout's list for the same task (the fields are
the task's, whatever the file). ``split`` left out means "whatever the task evaluates".
Unknown keys or formats, a missing ``path`` or a file that does not exist are one-line
``UserError``s naming the mapping file and the key.

The file lm-eval reads is ``hub_schema_file``: the source itself when it is JSONL in the
Hub schema, else a converted JSONL in the cache. ``validate_task_data`` is the
great-expectations gate; ``generated_task_yaml`` is the task YAML that points lm-eval at
the file.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ecocompress.tasks.artifacts import cache_dir, code_version, sha256_file, sha256_text
from ecocompress.tasks.benchmarks.converters import FORMATS, PASSTHROUGH
from ecocompress.tasks.benchmarks.task_yaml import (
    FunctionRef,
    evaluated_split,
    task_config,
    template_fields,
)
from ecocompress.tasks.errors import UserError

__all__ = [  # the interface; the task_yaml names are re-exported for one import site
    "FunctionRef",
    "TaskData",
    "evaluated_split",
    "generated_task_yaml",
    "hub_schema_file",
    "load_mappings",
    "parse_task_data_flag",
    "task_config",
    "template_fields",
    "validate_task_data",
]

LAYOUT_YAML = Path(__file__).resolve().parent / "data_layout.yaml"
USER_MAPPING = "ecocompress-tasks.yaml"  # looked for in the data dir
FLAG_ORIGIN = "--task-data"
LAYOUT_ORIGIN = "built-in layout"
KEYS = ("path", "split", "format", "required", "note")
_TASK = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_SPLIT = re.compile(r"\w+(\.\w+)*")  # what datasets accepts as a split name


@dataclass(frozen=True)
class TaskData:
    """Where one lm-eval task's local data is, and how to read it.

    Attributes:
        task: lm-eval task name, e.g. ``"arc_easy"``.
        path: source file, absolute.
        split: split the generated task registers the file under; ``None`` = the split
            the task evaluates (resolved by ``generated_task_yaml``).
        format: ``"jsonl"`` | ``"json"`` | a converter name (``converters.FORMATS``).
        required: Hub-schema fields every item must have (not null).
        origin: where the mapping came from (the mapping file, ``--task-data`` or
            ``built-in layout``).
        note: a caveat to record with every result on this data.
    """

    task: str
    path: Path
    split: str | None
    format: str
    required: tuple[str, ...]
    origin: str
    note: str | None = None


def parse_task_data_flag(value: str) -> tuple[str, Path, str | None]:
    """``"arc_easy=data/arc.jsonl:test"`` -> ``("arc_easy", <abs path>, "test")``.

    The ``:SPLIT`` suffix is optional; a path is resolved against the working directory.

    Raises:
        UserError: no ``=``, an empty or odd task name, an empty path or split.
    """
    form = "expected --task-data TASK=PATH[:SPLIT], e.g. arc_easy=data/arc.jsonl:test"
    task, eq, rest = value.partition("=")
    task = task.strip()
    if not eq:
        raise UserError(f"--task-data {value!r}: {form}")
    if not _TASK.fullmatch(task):
        raise UserError(f"--task-data {value!r}: task name {task!r} is not valid; {form}")
    path, split = rest, None
    head, colon, tail = rest.rpartition(":")
    if colon and "/" not in tail and not Path(rest).exists():
        if not _SPLIT.fullmatch(tail):
            raise UserError(f"--task-data {value!r}: empty or invalid split {tail!r}; {form}")
        path, split = head, tail
    if not path.strip():
        raise UserError(f"--task-data {value!r}: empty path; {form}")
    return task, Path(path).expanduser().resolve(), split


def load_mappings(data_dir: Path | None, flags: tuple[str, ...] = ()) -> dict[str, TaskData]:
    """Every task with local data: flags over ``<data_dir>/ecocompress-tasks.yaml`` over
    the packaged layout.

    Args:
        data_dir: the benchmark data dir, or ``None`` (then only flags count).
        flags: ``--task-data`` values.

    Raises:
        UserError: a malformed flag or mapping file, a declared file that does not exist,
            or the same task given twice in flags.
    """
    layout = {}
    if data_dir is not None:
        layout = _read_mapping(LAYOUT_YAML, Path(data_dir), LAYOUT_ORIGIN, skip_absent=True)
    out = dict(layout)
    user = Path(data_dir) / USER_MAPPING if data_dir is not None else None
    if user is not None and user.is_file():
        out.update(_read_mapping(user, user.parent, str(user), skip_absent=False, layout=layout))
    seen: set[str] = set()
    for value in flags:
        task, path, split = parse_task_data_flag(value)
        if task in seen:
            raise UserError(f"--task-data: task {task!r} given twice")
        seen.add(task)
        if not path.is_file():
            raise UserError(f"--task-data {value!r}: file not found: {path}")
        fmt = _format_from_suffix(path, where=f"--task-data {value!r}")
        required = layout[task].required if task in layout else ()
        out[task] = TaskData(task, path, split, fmt, required, FLAG_ORIGIN)
    return out


def _format_from_suffix(path: Path, where: str) -> str:
    name = path.name.lower()
    if name.endswith((".jsonl", ".jsonl.gz")):
        return "jsonl"
    if name.endswith(".json"):
        return "json"
    raise UserError(
        f"{where}: cannot tell the format of {path.name} from its suffix; declare it in a "
        f"mapping YAML with format: one of {', '.join(FORMATS)}"
    )


def _read_mapping(
    file: Path,
    base: Path,
    origin: str,
    skip_absent: bool,
    layout: dict[str, TaskData] | None = None,
) -> dict[str, TaskData]:
    """Parse one mapping YAML; relative paths are resolved against ``base``."""
    try:
        top = yaml.safe_load(file.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{file}:{mark.line + 1}" if mark else str(file)
        raise UserError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if top is None:
        return {}
    if not isinstance(top, dict):
        raise UserError(f"{file}: expected a mapping of task name -> {{path, ...}}")
    out = {}
    for task, entry in top.items():
        where = f"{file}: {task}"
        if not isinstance(entry, dict):
            raise UserError(f"{where}: expected keys {', '.join(KEYS)}, got {entry!r}")
        for key in entry:
            if key not in KEYS:
                close = difflib.get_close_matches(str(key), KEYS, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise UserError(f"{where}: unknown key {key!r} (allowed: {', '.join(KEYS)}){hint}")
        raw = entry.get("path")
        if not isinstance(raw, str) or not raw.strip():
            raise UserError(f"{where}: key 'path' is missing or not a string")
        path = (base / Path(raw).expanduser()).resolve()
        if not path.is_file():
            if skip_absent:
                continue
            raise UserError(f"{where}: path {raw!r} not found ({path})")
        fmt = entry.get("format") or _format_from_suffix(path, where)
        if fmt not in FORMATS:
            close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(
                f"{where}: unknown format {fmt!r} (allowed: {', '.join(FORMATS)}){hint}"
            )
        required = entry.get("required")
        if required is None:
            required = layout[task].required if layout and task in layout else ()
        if not isinstance(required, list | tuple) or not all(isinstance(f, str) for f in required):
            raise UserError(f"{where}: key 'required' must be a list of field names")
        split = entry.get("split")
        if split is not None and not (isinstance(split, str) and _SPLIT.fullmatch(split)):
            raise UserError(f"{where}: key 'split' must be a split name, got {split!r}")
        note = entry.get("note")
        note = " ".join(str(note).split()) if note else None
        out[str(task)] = TaskData(str(task), path, split, fmt, tuple(required), origin, note)
    return out


def _source_digest(td: TaskData) -> str:
    """sha256 of the source file (or of all its inputs' hashes, e.g. PIQA's label file)."""
    inputs = FORMATS[td.format].inputs(td.path)
    if len(inputs) == 1:
        return sha256_file(inputs[0])
    return sha256_text(*(sha256_file(p) for p in inputs))


def hub_schema_file(td: TaskData) -> Path:
    """The file lm-eval should read for ``td``: the source itself, or its converted copy.

    JSONL (plain or .gz) is read as it is. Other formats are converted once into
    ``cache/data/<sha256[:16]>/<task>.<format>-v<version>.jsonl``, keyed by the source
    bytes and the converter version, and written atomically (a temp file, then rename).

    Raises:
        UserError: the source cannot be parsed or converted (file and line named).
    """
    if td.format in PASSTHROUGH:
        return td.path
    conv = FORMATS[td.format]
    out = (
        cache_dir("data") / _source_digest(td)[:16] / f"{td.task}.{td.format}-v{conv.version}.jsonl"
    )
    if out.is_file():
        return out
    records = conv.read(td.path, str(td.path))
    _write_atomic(out, "".join(json.dumps(r.doc, ensure_ascii=False) + "\n" for r in records))
    return out


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename: readers never see half."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


def validate_task_data(td: TaskData, required: tuple[str, ...] = ()) -> int:
    """Great-expectations gate: parse ``td``'s file and check that no item lacks a field.

    Args:
        td: the mapping entry.
        required: fields to check on top of ``td.required`` (e.g. ``template_fields``).

    Returns:
        The number of items.

    Raises:
        UserError: ``<file>:<line>: not valid JSON (...)``, ``<file>:<line>: field 'x' is
            missing or null`` (the first failing item), or ``<file>: holds no items``.
    """
    fields = tuple(dict.fromkeys((*td.required, *required)))
    conv = FORMATS[td.format]
    # A file that passed (same bytes, format, fields and code) is not re-checked: the
    # marker holds its item count and saves great-expectations' 3 s import.
    key = sha256_text(_source_digest(td), td.format, str(conv.version), *fields, code_version())
    marker = cache_dir("validated") / f"taskdata-{td.task}-{key[:32]}"
    if marker.is_file():
        return int(marker.read_text())
    shown = str(td.path)
    records = conv.read(td.path, shown)
    if not records:
        raise UserError(f"{shown}: holds no items")
    if fields:
        _gate(records, fields, shown, name=f"taskdata-{td.task}")
    _write_atomic(marker, str(len(records)))
    return len(records)


def _gate(records: list, fields: tuple[str, ...], shown: str, name: str) -> None:
    import pandas as pd

    from ecocompress.tasks.benchmarks.base import Check
    from ecocompress.tasks.benchmarks.validation import _run_gx

    # one column per field: True where present and not null (field names may be anything)
    checks = tuple(
        Check(field=f, column=f"f{i}", kind="not_null", message="is missing or null")
        for i, f in enumerate(fields)
    )
    rows = [
        {
            "line": r.line,
            "item": r.item,
            **{c.column: (True if r.doc.get(c.field) is not None else None) for c in checks},
        }
        for r in records
    ]
    failures = _run_gx(pd.DataFrame(rows), checks, name=name)
    if failures:
        line, _item, check = failures[0]
        raise UserError(f"{shown}:{line}: field '{check.field}' {check.message}")


def generated_task_yaml(td: TaskData, base_yaml: Path, local_task: str) -> dict[str, Any]:
    """The YAML (as a dict) of a task that runs ``base_yaml``'s task on ``td``'s file.

    The file is registered as the task's test split under ``td.split`` (or the split
    the task evaluates), and the training and validation splits are cleared: the local
    data has one split only. When the task draws few-shot exemplars from a split
    (``fewshot_split``, else training, else validation), ``fewshot_split`` is set to
    that same split. lm-eval's ``ConfigurableTask.fewshot_context`` passes the evaluated
    document to the sampler only when the few-shot split equals ``test_split``, and
    ``samplers.ContextSampler.sample`` then draws n + 1 and removes it: each item is
    scored without itself among its exemplars. A task with inline exemplars
    (``fewshot_config.samples``) keeps them.

    Raises:
        UserError: ``td.split`` differs from the split the task evaluates, or the task
            evaluates no split.
    """
    base_yaml = Path(base_yaml).resolve()
    cfg = task_config(base_yaml)
    evaluated = evaluated_split(cfg)
    if evaluated is None:
        raise UserError(f"{td.task}: {base_yaml} declares neither test_split nor validation_split")
    if td.split is not None and td.split != evaluated:
        raise UserError(
            f"{td.task}: the mapping ({td.origin}) registers {td.path.name} as split "
            f"{td.split!r}, but lm-eval's {td.task} evaluates split {evaluated!r}"
        )
    split = td.split or evaluated
    out: dict[str, Any] = {
        "include": str(base_yaml),
        "task": local_task,
        "tag": [],
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {split: str(hub_schema_file(td))}},
        "training_split": None,
        "validation_split": None,
        "test_split": split,
    }
    fewshot_cfg = cfg.get("fewshot_config") or {}
    inline = cfg.get("fewshot_split") is None and fewshot_cfg.get("samples") is not None
    if not inline:
        out["fewshot_split"] = split
    return out
