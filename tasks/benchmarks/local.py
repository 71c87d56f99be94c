"""lm-eval tasks that read a local data dir instead of the Hub.

For every benchmark unit whose published file is present, a YAML is generated that
``include:``s the installed lm-eval task by absolute path and swaps its data source
for ``json`` files (converted to the Hub schema first where the published format
differs). All YAMLs of one data dir go in one folder, so one ``TaskManager`` (about
6 s to build) serves every benchmark. The folder and the converted files are caches
keyed by the source files' sha256 and the code version; they are never written into
the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from ecocompress.tasks.artifacts import cache_dir, code_version, sha256_file, sha256_text
from ecocompress.tasks.benchmarks import REGISTRY
from ecocompress.tasks.benchmarks.base import Benchmark, Unit, read_records
from ecocompress.tasks.benchmarks.bbh import BBH_TASKS
from ecocompress.tasks.errors import UserError


def all_units(bench: Benchmark) -> list[Unit]:
    """Every unit of ``bench`` (all 27 subtasks for bbh; none for perplexity)."""
    if bench.units is None:
        return []
    return bench.units(BBH_TASKS if bench.name == "bbh" else ())


def local_task_dir(data_dir: Path) -> Path:
    """Folder of generated task YAMLs for the files present under ``data_dir``.

    Returns:
        The folder to pass to ``TaskManager(include_path=...)``; it holds one
        ``<local_task>.yaml`` per unit whose file exists and parses.
    """
    data_dir = Path(data_dir).resolve()
    present = [
        (bench, unit, data_dir / unit.relpath)
        for bench in REGISTRY.values()
        for unit in all_units(bench)
        if (data_dir / unit.relpath).is_file()
    ]
    digests = {src: sha256_file(src) for _, _, src in present}
    key = sha256_text(code_version(), *(f"{u.relpath}={digests[s]}" for _, u, s in present))
    out = cache_dir("lm_eval_tasks") / key[:16]
    if out.is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    for bench, unit, src in present:
        data_file = _hub_schema_file(bench, unit, src, digests[src], data_dir)
        if data_file is None:
            continue
        cfg = {
            "include": str(unit.base_yaml),
            "task": unit.local_task,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {unit.split: str(data_file)}},
            **unit.fixes,
            **unit.overrides,
        }
        # JSON is valid YAML and keeps the file free of tags and anchors
        (tmp / f"{unit.local_task}.yaml").write_text(json.dumps(cfg, indent=2) + "\n")
    try:
        os.replace(tmp, out)
    except OSError:  # another process wrote the same folder first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _hub_schema_file(
    bench: Benchmark, unit: Unit, src: Path, digest: str, data_dir: Path
) -> Path | None:
    """The file lm-eval should read for ``unit``: ``src`` itself, or its converted copy.

    Returns ``None`` for a file that does not parse: it gets no task here, and the
    data gate (``validate_benchmark_data``) reports it if that benchmark is asked for.
    """
    if bench.convert is None:
        return src
    derived = cache_dir("data") / digest[:16] / f"{unit.key}.hub-v{bench.converter_version}.jsonl"
    if derived.is_file():
        return derived
    try:
        records = read_records(src, bench.reader, str(src.relative_to(data_dir)))
        lines = [json.dumps(bench.convert(r.doc), ensure_ascii=False) for r in records]
    except (UserError, KeyError, TypeError, AttributeError):
        return None
    derived.parent.mkdir(parents=True, exist_ok=True)
    tmp = derived.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    os.replace(tmp, derived)
    return derived


def hub_task_name(unit: Unit) -> str:
    """Task that reads ``unit`` from the Hub: lm-eval's own, or our wrapper if it needs fixes."""
    return f"{unit.local_task}_hub" if unit.fixes else unit.hub_task


def hub_task_dir() -> Path:
    """Folder of wrapper YAMLs for units with ``fixes`` (Hub data), keyed by the code version."""
    out = cache_dir("lm_eval_tasks") / f"hub-{code_version()}"
    if out.is_dir():
        return out
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=out.parent))
    for bench in REGISTRY.values():
        for unit in all_units(bench):
            if unit.fixes:
                cfg = {"include": str(unit.base_yaml), "task": hub_task_name(unit), "tag": []}
                cfg.update(unit.fixes)
                (tmp / f"{hub_task_name(unit)}.yaml").write_text(json.dumps(cfg, indent=2) + "\n")
    try:
        os.replace(tmp, out)
    except OSError:  # another process wrote the same folder first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    return out
