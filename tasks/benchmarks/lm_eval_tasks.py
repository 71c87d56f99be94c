"""Any task of the installed lm-eval, or of ``--include-path``, declared as a ``Benchmark``.

lm-eval resolves ``gsm8k.yaml`` and ``wikitext.yaml`` through one ``TaskManager``; so does
this module. A name that is not one of the curated benchmarks is looked up in the task
index (lm-eval's own tasks plus the user's folders) and declared from its YAML: kind from
``output_type``, primary metric = the first of ``metric_list`` (groups: the first of
``aggregate_metric_list``) after the first filter, direction from ``higher_is_better`` or
``METRIC_DIRECTIONS``, default shots = the YAML's ``num_fewshot`` (else 0).

Building a ``TaskManager`` indexes about 15,000 YAMLs (7-10 s here). The index this module
needs (name, kind, YAML path) is therefore kept in the cache as JSON, keyed by the lm-eval
version and the include folders' YAML files (path, size, mtime), and a ``TaskManager`` is
built only to evaluate.
"""

from __future__ import annotations

import difflib
import json
import os
import threading
from pathlib import Path
from typing import Any

from ecocompress.tasks.artifacts import cache_dir, sha256_text
from ecocompress.tasks.benchmarks.base import (
    METRIC_DIRECTIONS,
    Benchmark,
    Direction,
    Kind,
    metric_name,
)
from ecocompress.tasks.benchmarks.task_yaml import task_config
from ecocompress.tasks.errors import UserError

_lock = threading.Lock()
_managers: dict[tuple[str, ...], Any] = {}  # include paths -> lm_eval TaskManager
_indexes: dict[str, dict[str, tuple[str, str | None]]] = {}  # index key -> index

KINDS: dict[str, Kind] = {
    "multiple_choice": "multiple_choice",
    "generate_until": "generation",
    "loglikelihood": "loglikelihood",
    "loglikelihood_rolling": "perplexity",
}


def task_manager(include_path: tuple[str, ...]) -> Any:
    """lm-eval ``TaskManager`` for ``include_path``, built once per process (7-10 s)."""
    from lm_eval.tasks import TaskManager

    with _lock:
        if include_path not in _managers:
            _managers[include_path] = TaskManager(include_path=list(include_path) or None)
        return _managers[include_path]


def check_include_path(include_path: tuple[str, ...]) -> tuple[str, ...]:
    """Absolute folders; a missing one is a one-line error."""
    out = []
    for p in include_path:
        path = Path(p).expanduser().resolve()
        if not path.is_dir():
            raise UserError(f"include path {p} does not exist or is not a folder")
        out.append(str(path))
    return tuple(out)


def _index_key(include_path: tuple[str, ...]) -> str:
    import lm_eval

    parts = [lm_eval.__version__]
    for folder in include_path:
        for root, _, files in os.walk(folder):
            for f in sorted(files):
                if f.endswith((".yaml", ".yml")):
                    st = (Path(root) / f).stat()
                    parts.append(f"{root}/{f}:{st.st_size}:{st.st_mtime_ns}")
    return sha256_text(*parts)


def task_index(include_path: tuple[str, ...] = ()) -> dict[str, tuple[str, str | None]]:
    """``{name: (kind, yaml path)}`` of every task, group and tag lm-eval knows (a YAML
    added to an include folder is seen at once: the key covers the folder's files)."""
    key = _index_key(include_path)
    with _lock:
        if key in _indexes:
            return _indexes[key]
    path = cache_dir("lm_eval_index") / f"{key[:16]}.json"
    try:
        index = {k: (v[0], v[1]) for k, v in json.loads(path.read_text()).items()}
    except (OSError, ValueError, TypeError, IndexError, AttributeError):
        from lm_eval.tasks import TaskManager

        tm = TaskManager(include_path=list(include_path) or None)  # this folder state
        index = {
            name: (e.kind.name.lower(), str(e.yaml_path) if e.yaml_path else None)
            for name, e in tm.task_index.items()
        }
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(index))
        os.replace(tmp, path)
    with _lock:
        _indexes[key] = index
    return index


def unknown_task(name: str, known: list[str]) -> UserError:
    """The one-line error for a benchmark name nobody knows, with the closest names."""
    close = difflib.get_close_matches(name, list(dict.fromkeys(known)), n=3, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    if len(close) > 1:
        hint += f" (also close: {', '.join(close[1:])})"
    return UserError(
        f"unknown benchmark {name!r}: not a curated benchmark nor an lm-eval task or group{hint}; "
        "your own task YAMLs need --include-path"
    )


def primary_metric(cfg: dict[str, Any]) -> tuple[str, Direction]:
    """``("<metric>,<filter>", direction)`` of a task or group config."""
    metrics = cfg.get("aggregate_metric_list") or cfg.get("metric_list") or []
    if not metrics or not isinstance(metrics[0], dict) or "metric" not in metrics[0]:
        raise UserError(f"task {cfg.get('task') or cfg.get('group')!r} declares no metric_list")
    first = metrics[0]
    metric = str(first["metric"])
    filters = first.get("filter_list") or cfg.get("filter_list") or []
    filt = "none"
    if filters:
        f0 = filters[0]
        filt = f0 if isinstance(f0, str) else f0.get("name", "none")
    hib = first.get("higher_is_better")
    if hib is None:
        direction = METRIC_DIRECTIONS.get(metric_name(metric), "max")
    else:
        direction = "max" if hib else "min"
    return f"{metric},{filt}", direction


def lm_eval_benchmark(name: str, include_path: tuple[str, ...] = ()) -> Benchmark:
    """Declare lm-eval task or group ``name`` as a benchmark (not a curated one).

    Raises:
        UserError: an unknown name (with the closest names), a tag (several tasks, no
            aggregate: name its tasks), or a task without a metric.
    """
    from ecocompress.tasks.benchmarks import REGISTRY

    index = task_index(include_path)
    if name not in index:
        raise unknown_task(name, [*REGISTRY, *index])
    kind, yaml_path = index[name]
    if kind == "tag":
        raise UserError(
            f"{name!r} is an lm-eval tag (several tasks with no aggregate score): name its tasks "
            "in --benchmarks instead"
        )
    if yaml_path is None:
        raise UserError(f"lm-eval task {name!r} is defined in Python only: it cannot be run here")
    cfg = task_config(Path(yaml_path))
    if kind == "group" and not cfg.get("aggregate_metric_list"):
        raise UserError(
            f"lm-eval group {name!r} reports no aggregate score: name its tasks in --benchmarks"
        )
    metric, direction = primary_metric(cfg)
    return Benchmark(
        name=name,
        kind="group" if kind == "group" else KINDS.get(cfg.get("output_type", ""), "generation"),
        metric=metric,
        direction=direction,
        default_shots=int(cfg.get("num_fewshot") or 0) if kind != "group" else 0,
        task_yaml=yaml_path,
        curated=False,
    )
