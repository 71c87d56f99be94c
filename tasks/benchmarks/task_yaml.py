"""Reading an lm-eval task YAML without lm-eval: includes merged, prompt fields listed.

``task_config`` follows ``include:`` like lm-eval's own loader (later files win, the
file itself last) but imports nothing: a ``!function`` value stays a ``FunctionRef``
name. ``template_fields`` lists the document fields a task's prompts read, so a task
without declared checks still gets a not-null gate on them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ecocompress.tasks.errors import UserError


class FunctionRef(str):
    """A ``!function module.name`` value in a task YAML (kept as its name, not imported)."""


def _loader() -> type[yaml.SafeLoader]:
    class Loader(yaml.SafeLoader): ...

    Loader.add_constructor("!function", lambda ld, node: FunctionRef(ld.construct_scalar(node)))
    return Loader


def task_config(yaml_path: Path, _seen: frozenset[Path] = frozenset()) -> dict[str, Any]:
    """An lm-eval task YAML with its ``include:``s merged (later wins, the file itself last).

    ``!function`` values stay ``FunctionRef`` names: nothing is imported.

    Raises:
        UserError: a missing file or an include cycle.
    """
    path = Path(yaml_path).resolve()
    if path in _seen:
        raise UserError(f"{path}: include cycle")
    if not path.is_file():
        raise UserError(f"task YAML not found: {path}")
    cfg = yaml.load(path.read_text(encoding="utf-8"), Loader=_loader())  # noqa: S506
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: expected a YAML mapping")
    includes = cfg.pop("include", None) or []
    merged: dict[str, Any] = {}
    for inc in includes if isinstance(includes, list) else [includes]:
        merged.update(task_config(path.parent / inc, _seen | {path}))
    merged.update(cfg)
    return merged


def template_fields(task_config: dict) -> tuple[str, ...]:
    """Top-level fields the task's prompts read from a document, sorted.

    Reads ``doc_to_text``, ``doc_to_target`` and ``doc_to_choice`` when they are strings:
    a Jinja template gives its undeclared variables (``jinja2.meta``); a bare name such as
    ``label`` is a field (lm-eval reads ``doc[name]`` when the document has it). Python
    functions are opaque and give nothing. A task with ``process_docs`` gives nothing:
    its templates read the processed documents, not the file's fields.
    """
    if task_config.get("process_docs") is not None:
        return ()
    import jinja2
    from jinja2 import meta

    env = jinja2.Environment()
    names: set[str] = set()
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice"):
        value = task_config.get(key)
        if not isinstance(value, str) or isinstance(value, FunctionRef):
            continue
        if "{{" in value or "{%" in value:
            names |= meta.find_undeclared_variables(env.parse(value)) - set(env.globals)
        elif value.isidentifier():
            names.add(value)
    return tuple(sorted(names))


def evaluated_split(task_config: dict) -> str | None:
    """The split lm-eval evaluates: ``test_split``, else ``validation_split``."""
    return task_config.get("test_split") or task_config.get("validation_split")
