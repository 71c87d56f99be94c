"""Command-line flags generated from the settings models (flows/params.py).

A field ``max_gen_toks`` becomes ``--max-gen-toks``; its help is the field's description and
its default the field's, so a setting is declared once. Flags parse only the shape of a
value (a comma list, ``name=value`` pairs, a switch); the models validate the values, so a
YAML spec file and a deployment get the same checks and the same messages.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def cli_fields(model: type[BaseModel]) -> dict[str, FieldInfo]:
    """The fields of ``model`` that are command-line settings (``cli: False`` hides one)."""
    return {n: f for n, f in model.model_fields.items() if _extra(f).get("cli", True)}


def _shape(annotation: Any) -> str:
    """``list``, ``dict``, ``bool`` or ``scalar``: how a flag's text is split."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _shape(inner[0]) if len(inner) == 1 else "scalar"
    origin = typing.get_origin(annotation) or annotation
    if origin in (tuple, list):
        return "list"
    if origin is dict:
        return "dict"
    if annotation is bool:
        return "bool"
    return "scalar"


def _list(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _pairs(flag: str):
    def parse(text: str) -> dict[str, str]:
        out: dict[str, str] = {}
        for part in text.split(","):
            name, sep, val = part.partition("=")
            if not sep or not name.strip() or not val.strip():
                raise argparse.ArgumentTypeError(
                    f"{flag} {part!r}: use name=value pairs, e.g. gsm8k=5"
                )
            out[name.strip()] = val.strip()
        return out

    return parse


def _default_text(info: FieldInfo) -> str:
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
    else:
        value = info.default
    if value is None or value in ({}, (), []) or isinstance(value, bool):
        return ""
    if isinstance(value, tuple | list):
        value = ",".join(str(v) for v in value)
    return f" (default {value})"


def add_flags(parser: argparse.ArgumentParser, model: type[BaseModel], title: str) -> None:
    """Add one flag per CLI field of ``model`` to an argument group of ``parser``.

    Every flag defaults to ``argparse.SUPPRESS``: only what the user gave reaches the
    namespace, so the model's default is the only default.
    """
    group = parser.add_argument_group(title)
    for name, info in cli_fields(model).items():
        extra = _extra(info)
        text = (info.description or "") + _default_text(info)
        if extra.get("positional"):
            group.add_argument(name, help=text)
            continue
        flag = extra.get("flag") or "--" + name.replace("_", "-")
        kw: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": text}
        shape = _shape(info.annotation)
        if shape == "bool":
            kw["action"] = "store_false" if info.default is True else "store_true"
        elif shape == "list":
            kw["type"] = _list
        elif shape == "dict":
            kw["type"] = _pairs(flag)
        group.add_argument(flag, **kw)


def given(namespace: argparse.Namespace, *models: type[BaseModel]) -> dict[str, Any]:
    """The settings the user gave on the command line, by field name."""
    names = {n for m in models for n in cli_fields(m)}
    return {k: v for k, v in vars(namespace).items() if k in names}
