"""Where an lm-eval task that is not curated reads its items, and the gate on them.

A task reads a local file when one is declared for it (``--task-data task=path[:split]``,
``<data_dir>/ecocompress-tasks.yaml`` or the packaged layout of the shared data dir; see
``tasks.benchmarks.task_data``): the file is checked with great-expectations (the fields
its declaration requires, else the fields its prompt templates read) and a generated YAML
``include:``s the task's own YAML and points it at the file. Without a declaration the
task reads what its YAML names: a local file, or the Hub, which is refused up front when
the Hub is offline.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ecocompress.tasks.artifacts import cache_dir, code_version, sha256_file, sha256_text
from ecocompress.tasks.benchmarks.base import Benchmark
from ecocompress.tasks.benchmarks.task_yaml import task_config
from ecocompress.tasks.errors import UserError

LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")


def local_task_name(bench: Benchmark) -> str:
    return f"ecocompress_{bench.name}"


def mapping_for(bench: Benchmark, spec: Any, data_dir: Path | None) -> Any:
    """The declared local data of ``bench`` (a ``TaskData``), or ``None``."""
    from ecocompress.tasks.benchmarks.task_data import load_mappings

    flags = (f"{bench.name}={spec.task_data}",) if spec.task_data else ()
    if data_dir is None and not flags:
        return None
    return load_mappings(Path(data_dir) if data_dir else None, flags).get(bench.name)


def generic_data_files(bench: Benchmark, spec: Any, data_dir: Path | None) -> list[Path]:
    """Files whose bytes define what ``bench`` scores (for cache keys): its data file, the
    mapping file that declared it, and the task YAML when it is the user's own."""
    files = []
    td = mapping_for(bench, spec, data_dir)
    if td is not None:
        files.append(Path(td.path))
        origin = Path(td.origin.split(" ")[0])
        if origin.suffix in (".yaml", ".yml") and origin.is_file():
            files.append(origin)
    if bench.task_yaml and any(
        Path(bench.task_yaml).is_relative_to(Path(p)) for p in spec.include_path
    ):
        files.append(Path(bench.task_yaml))
    return files


def needs_hub(bench: Benchmark) -> str | None:
    """The Hub dataset ``bench``'s YAML reads, or ``None`` when it reads local files."""
    if bench.kind == "group":
        return f"group {bench.name}"
    cfg = task_config(Path(bench.task_yaml))  # type: ignore[arg-type]
    path = str(cfg.get("dataset_path") or "")
    if path in LOCAL_BUILDERS or (path and Path(path).expanduser().exists()):
        return None
    return path or "(no dataset_path)"


def hub_offline() -> bool:
    import huggingface_hub.constants as hc

    return bool(hc.HF_HUB_OFFLINE) or os.environ.get("HF_DATASETS_OFFLINE") == "1"


def check_source(bench: Benchmark, spec: Any, data_dir: Path | None) -> Any:
    """Where ``bench`` reads, checked cheaply (no lm-eval, no file contents): its declared
    local data (returned, a ``TaskData``), else ``None`` when its YAML's source is usable.

    Raises:
        UserError: the task needs the Hub while it is offline (naming how to give local
            data), or local data is declared for a group.
    """
    td = mapping_for(bench, spec, data_dir)
    if td is None:
        dataset = needs_hub(bench)
        if dataset is not None and hub_offline():
            raise UserError(
                f"benchmark {bench.name} reads the Hub dataset {dataset!r} but the Hub is offline: "
                f"give a local file with --task-data {bench.name}=FILE[:SPLIT] or an entry in "
                "<data_dir>/ecocompress-tasks.yaml"
            )
        return None
    if bench.kind == "group":
        raise UserError(
            f"benchmark {bench.name} is an lm-eval group: local data is declared per task, so "
            "name its tasks in --benchmarks"
        )
    return td


def validate_generic(bench: Benchmark, spec: Any, data_dir: Path | None) -> Any:
    """``check_source``, then the great-expectations gate on the local file: the fields its
    declaration requires, else the fields the task's prompt templates read.

    Raises:
        UserError: as ``check_source``, or the file fails its checks (file:line: field).

    Returns:
        The declared local data (``TaskData``), or ``None``.
    """
    td = check_source(bench, spec, data_dir)
    if td is None:
        return None
    from ecocompress.tasks.benchmarks.task_data import template_fields, validate_task_data

    required = td.required or template_fields(task_config(Path(bench.task_yaml)))  # type: ignore[arg-type]
    validate_task_data(td, required)
    return td


def generic_source(
    bench: Benchmark, spec: Any, data_dir: Path | None
) -> tuple[dict[str, str], tuple[str, ...], str, list[str]]:
    """lm-eval task to run (-> the benchmark's name), include folders, data source, notes."""
    td = validate_generic(bench, spec, data_dir)
    if td is None:
        source = "hub" if needs_hub(bench) else f"task yaml:{bench.task_yaml}"
        return {bench.name: bench.name}, tuple(spec.include_path), source, []
    folder = _generated_dir(bench, td)
    notes = [f"local data declared by {td.origin}"] + ([td.note] if td.note else [])
    include = (*spec.include_path, str(folder))
    return {local_task_name(bench): bench.name}, include, f"local:{td.path}", notes


def _generated_dir(bench: Benchmark, td: Any) -> Path:
    """A folder with one YAML: the task's own, pointed at the local file (cached by content)."""
    from ecocompress.tasks.benchmarks.task_data import generated_task_yaml

    cfg: dict[str, Any] = generated_task_yaml(td, Path(bench.task_yaml), local_task_name(bench))  # type: ignore[arg-type]
    text = json.dumps(cfg, indent=2, sort_keys=True) + "\n"
    key = sha256_text(code_version(), text, sha256_file(bench.task_yaml))  # type: ignore[arg-type]
    out = cache_dir("lm_eval_tasks") / f"task-{key[:16]}"
    if out.is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    # JSON is valid YAML and keeps the file free of tags and anchors
    (tmp / f"{local_task_name(bench)}.yaml").write_text(text)
    try:
        os.replace(tmp, out)
    except OSError:  # another process wrote the same folder first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    return out
