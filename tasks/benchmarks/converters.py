"""Readers that turn a published benchmark file into Hub-schema records, line numbers kept.

A mapping's ``format`` names one of these. ``jsonl`` and ``json`` files are already in
the Hub schema (lm-eval's task reads them as they are); a converter reads a published
layout that differs (PIQA's label file, HellaSwag's six-line text) and yields the records
lm-eval's task expects. Every record keeps the 1-based line of the source file it came
from, so the data gate can say where a bad item is.

Bump a converter's ``version`` when its output changes: it names the converted file in
the cache (``task_data.hub_schema_file``).
"""

from __future__ import annotations

import bz2
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ecocompress.tasks.benchmarks.base import Record, read_records
from ecocompress.tasks.errors import UserError


@dataclass(frozen=True)
class Converter:
    """How one published layout becomes Hub-schema records.

    Attributes:
        read: ``(path, shown) -> records``; ``shown`` names the file in error messages.
        inputs: every file the conversion reads (the cache key hashes all of them).
        version: bump when the output changes.
        fields: the Hub-schema fields each record has (documentation and tests).
    """

    read: Callable[[Path, str], list[Record]]
    inputs: Callable[[Path], tuple[Path, ...]]
    version: int
    fields: tuple[str, ...]


def _itself(path: Path) -> tuple[Path, ...]:
    return (path,)


def piqa_labels_file(path: Path) -> Path:
    """``valid.jsonl`` -> ``valid-labels.lst`` (the PIQA release's naming)."""
    name = path.name.removesuffix(".gz").removesuffix(".jsonl")
    return path.with_name(f"{name}-labels.lst")


def read_piqa(path: Path, shown: str) -> list[Record]:
    """PIQA's ``{goal, sol1, sol2}`` lines joined with the label file, line by line.

    Output: ``{goal, sol1, sol2, label}`` with ``label`` an int (0: sol1, 1: sol2), as
    in the Hub's ``baber/piqa`` that lm-eval's ``piqa`` reads.

    Raises:
        UserError: a missing label file, a label that is not 0 or 1, or counts that differ.
    """
    labels_path = piqa_labels_file(path)
    labels_shown = str(Path(shown).with_name(labels_path.name))
    if not labels_path.is_file():
        raise UserError(f"{labels_shown}: PIQA label file not found (next to {shown})")
    labels = [ln.strip() for ln in labels_path.read_text(encoding="utf-8").splitlines()]
    while labels and not labels[-1]:
        labels.pop()
    records = read_records(path, "jsonl", shown)
    if len(labels) != len(records):
        raise UserError(f"{labels_shown}: {len(labels)} labels for {len(records)} items in {shown}")
    out = []
    for r, (n, label) in zip(records, enumerate(labels, start=1), strict=True):
        if label not in ("0", "1"):
            raise UserError(f"{labels_shown}:{n}: label must be 0 or 1, got {label!r}")
        doc = {k: r.doc.get(k) for k in ("goal", "sol1", "sol2")}
        out.append(Record(r.line, r.item, {**doc, "label": int(label)}))
    return out


HELLASWAG_LINES = 6  # context, gold label, four endings


def read_hellaswag_text(path: Path, shown: str) -> list[Record]:
    """llama.cpp's HellaSwag text (six lines an item; ``.bz2`` or plain) as lm-eval fields.

    Output: ``{activity_label, ctx_a, ctx_b, ctx, endings, label}`` (``label`` a string,
    as in the Hub's ``Rowan/hellaswag``). The text line is ``activity_label: ctx`` with
    ctx_a and ctx_b already joined, so it is split on the first ``": "`` and the whole
    context goes in ``ctx_a`` with ``ctx_b`` empty: lm-eval's ``process_docs`` then
    cannot capitalise ctx_b (see the ``note`` in ``data_layout.yaml``).

    Raises:
        UserError: a line count that is not a multiple of six, a context line without
            ``": "``, or a label outside 0-3, naming the line.
    """
    opener = bz2.open if path.suffix == ".bz2" else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.read().split("\n")
    except (OSError, EOFError, UnicodeDecodeError) as exc:
        raise UserError(f"{shown} cannot be read: {exc}") from None
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % HELLASWAG_LINES:
        raise UserError(
            f"{shown}: {len(lines)} lines is not a multiple of {HELLASWAG_LINES} "
            "(context, label, four endings per item)"
        )
    out = []
    for item, start in enumerate(range(0, len(lines), HELLASWAG_LINES)):
        context, label, *endings = lines[start : start + HELLASWAG_LINES]
        activity, sep, ctx = context.partition(": ")
        if not sep:
            raise UserError(f"{shown}:{start + 1}: expected 'activity_label: context'")
        if label.strip() not in ("0", "1", "2", "3"):
            raise UserError(f"{shown}:{start + 2}: label must be 0-3, got {label!r}")
        doc = {
            "activity_label": activity,
            "ctx_a": ctx,
            "ctx_b": "",
            "ctx": ctx,
            "endings": endings,
            "label": label.strip(),
        }
        out.append(Record(start + 1, item, doc))
    return out


def read_json_array(path: Path, shown: str) -> list[Record]:
    return read_records(path, "json_array", shown)


def read_jsonl(path: Path, shown: str) -> list[Record]:
    return read_records(path, "jsonl", shown)


# Formats whose file lm-eval reads as it is (the Hub schema already).
PASSTHROUGH = {"jsonl": Converter(read_jsonl, _itself, 1, ())}

CONVERTERS: dict[str, Converter] = {
    # a JSON array is rewritten as JSONL: datasets' json reader then needs no fallback
    "json": Converter(read_json_array, _itself, 1, ()),
    "piqa": Converter(
        read_piqa, lambda p: (p, piqa_labels_file(p)), 1, ("goal", "sol1", "sol2", "label")
    ),
    "hellaswag_text": Converter(
        read_hellaswag_text,
        _itself,
        1,
        ("activity_label", "ctx_a", "ctx_b", "ctx", "endings", "label"),
    ),
}

FORMATS: dict[str, Converter] = {**PASSTHROUGH, **CONVERTERS}
