"""Checks of a resolved command that need files but no server: run before the CLI connects.

``resolve`` validates the settings themselves; ``preflight`` looks at what they point to,
cheaply (headers and text encodings, not weights or lm-eval), so that bad input is refused
in one line before the Prefect server starts (the temporary one takes 25-55 s to come up)
or a model is converted. The flows check the same things again, where they are used.
"""

from __future__ import annotations

import bz2
import gzip
from pathlib import Path

from ecocompress.flows.resolve import Resolved
from ecocompress.tasks.errors import UserError

# The decision graph's checkpoints (of every optimize thread), under ECOCOMPRESS_HOME.
CHECKPOINTS = Path("agent") / "checkpoints.sqlite"
# Bytes read per step when checking that a data file decodes (the files are a few MB).
_CHUNK = 1 << 20


def preflight(r: Resolved) -> None:
    """Refuse what the flows would refuse later: the experiment name, the objectives, the
    country's grid, the model's files, the benchmark data's files, and a resumed thread's
    settings, and the cluster of --cluster.

    Raises:
        UserError: one line naming the setting or the file.
    """
    try:
        r.run.experiment_name()
    except ValueError as exc:
        raise UserError(str(exc)) from None
    from ecocompress.metrics.carbon import resolve_intensity
    from ecocompress.metrics.types import parse_objectives

    parse_objectives(r.run.objectives)
    resolve_intensity(r.run.country, r.run.carbon_intensity)  # an unknown --country
    from ecocompress.tasks.download import check_model

    check_model(r.run.model, r.run.revision)
    check_data(r)
    if r.command == "optimize" and r.search is not None and r.search.thread_id:
        check_thread(r, r.search.thread_id)
    from ecocompress.flows import scale

    scale.preflight(r.scale)  # the engine is installed and a --cluster answers


def data_files(r: Resolved) -> list[Path]:
    """The local files the command reads: each benchmark's (under ``--data-dir``, or given
    with ``--task-data``), and WikiText-2 when a candidate prunes with Wanda (its
    calibration text)."""
    from ecocompress.tasks.benchmarks.validation import benchmark_data_files
    from ecocompress.tasks.benchmarks.wikitext import WIKITEXT_TEST

    data_dir = Path(r.run.data_dir) if r.run.data_dir else None
    files = [f for spec in r.run.eval_specs() for f in benchmark_data_files(spec, data_dir)]
    if data_dir is not None and any(c.prune.method == "wanda" for c in r.candidates):
        files.append(data_dir / WIKITEXT_TEST)
    return list(dict.fromkeys(files))


def check_data(r: Resolved) -> None:
    """Each data file the command reads exists and is UTF-8 text (compressed where named
    .gz or .bz2); offline, a data dir is given, and each lm-eval task has local data.

    Raises:
        UserError: naming the file.
    """
    from ecocompress.tasks.benchmarks.generic import check_source

    data_dir = Path(r.run.data_dir) if r.run.data_dir else None
    for bench, spec in zip(r.run.benches(), r.run.eval_specs(), strict=True):
        if not bench.curated:  # local data declared, or a source its YAML can reach
            check_source(bench, spec, data_dir)
    if data_dir is None:
        import huggingface_hub.constants as hc

        if hc.HF_HUB_OFFLINE and any(b.curated for b in r.run.benches()):
            raise UserError(
                "the Hub is offline (HF_HUB_OFFLINE=1): pass --data-dir with the benchmark files"
            )
    for path in data_files(r):
        if not path.is_file():
            raise UserError(f"benchmark data file not found: {path}")
        check_text(path)


def check_text(path: Path) -> None:
    """``path`` decodes as UTF-8 (after decompressing ``.gz`` and ``.bz2``).

    Raises:
        UserError: naming the file and the byte offset of the first bad byte.
    """
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    opener = {".gz": gzip.open, ".bz2": bz2.open}.get(path.suffix, open)
    done = 0
    try:
        with opener(path, "rb") as f:
            while block := f.read(_CHUNK):
                decoder.decode(block)
                done += len(block)
            decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise UserError(
            f"benchmark data file {path} is not UTF-8 text ({exc.reason} at byte "
            f"{done + exc.start})"
        ) from None
    except (OSError, EOFError) as exc:  # a corrupt or truncated .gz or .bz2
        raise UserError(f"benchmark data file {path} cannot be read: {exc}") from None


def check_thread(r: Resolved, thread_id: str) -> None:
    """A resumed thread (its checkpoint exists) was started with the same settings, the
    search's and the evaluation's.

    Raises:
        UserError: naming the settings that differ.
    """
    from ecocompress.tasks.artifacts import home

    path = home() / CHECKPOINTS
    if not path.is_file():
        return
    from ecocompress.agents.graph import build_graph, sqlite_checkpointer, thread_exists

    saver = sqlite_checkpointer(str(path))
    try:
        thread_exists(build_graph(saver), thread_id, r.settings, r.run.model_dump(mode="json"))
    finally:
        saver.conn.close()  # the flow opens its own
