"""``ecocompress cache ls|gc``: list the checkpoint cache, bound it by evicting the least
recently used entries (never one a running flow holds, never one the model registry needs).

The logic is in ``tasks/cache.py``; this module reads the registry and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

EPILOG = """examples:
  ecocompress cache ls
  ecocompress cache ls --json
  ecocompress cache gc --max-size 20GB --dry-run
  ecocompress cache gc --max-size 500MiB

Entries are converted GGUF models and pruned checkpoints under $ECOCOMPRESS_HOME/cache.
Sizes: K, M, G, T (or KB, MB, ...) are powers of 1000, KiB, MiB, GiB, TiB powers of 1024.
An entry is pinned when a model version in the MLflow registry (MLFLOW_TRACKING_URI) names
it in its cache_entries tag; gc evicts nothing when the registry cannot be read."""


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "cache",
        help="list the checkpoint cache or evict its least recently used entries",
        description="List the checkpoint cache (converted and pruned models) or bound its size.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    verbs = p.add_subparsers(dest="cache_command", required=True, metavar="{ls,gc}")
    ls = verbs.add_parser("ls", help="entries with size, last use, held and pinned")
    ls.add_argument("--json", action="store_true", help="one JSON list instead of a table")
    gc = verbs.add_parser("gc", help="evict least recently used entries down to --max-size")
    gc.add_argument(
        "--max-size", required=True, metavar="SIZE", help="the bound: 20GB, 500MiB, 1.5G, 0"
    )
    gc.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")


def _pins() -> set[str]:
    """Entries the registry the pipeline commands use points at (the running stack's MLflow
    server when there is one, else ``MLFLOW_TRACKING_URI`` or the local store); raises when
    it cannot be read."""
    import os

    from ecocompress.flows.stack import connect
    from ecocompress.metrics.tracking import model_version_tags
    from ecocompress.tasks.cache_pins import pins_from_tags

    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # a new SQLite store's migrations
    connect(quiet=True)
    return pins_from_tags(model_version_tags())


def _registry_error(exc: Exception) -> str:
    from ecocompress.metrics.tracking import tracking_uri
    from ecocompress.tasks.errors import one_line

    return f"cannot read the MLflow model registry at {tracking_uri()}: {one_line(exc)[:300]}"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "never"


def _yes(v: bool | None) -> str:
    return "?" if v is None else ("yes" if v else "no")


def _table(entries: list[Any]) -> str:
    from ecocompress.tasks.sizes import format_size

    head = ["KIND", "ID", "SIZE", "LAST USED", "HELD", "PINNED", "COMPLETE"]
    rows = [
        [
            e.kind,
            e.id,
            format_size(e.size_bytes),
            _when(e.last_used),
            _yes(e.held),
            _yes(e.pinned),
            _yes(e.complete),
        ]
        for e in entries
    ]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [head, *rows]
    )


def _ls(args: argparse.Namespace) -> int:
    from ecocompress.tasks.artifacts import home
    from ecocompress.tasks.cache import entries
    from ecocompress.tasks.errors import EXCEPTIONS_TO_RAISE
    from ecocompress.tasks.sizes import format_size

    try:
        pins: set[str] | None = _pins()
    except EXCEPTIONS_TO_RAISE:
        raise
    except Exception as exc:  # listing still helps; pinned shows "?"
        print(f"ecocompress: warning: {_registry_error(exc)}", file=sys.stderr)
        pins = None
    ents = entries(pins)
    if args.json:
        print(json.dumps([{**e.model_dump(), "last_used_at": _when(e.last_used)} for e in ents]))
        return 0
    if ents:
        print(_table(ents))
    total = sum(e.size_bytes for e in ents)
    print(
        f"{len(ents)} {'entry' if len(ents) == 1 else 'entries'}, {format_size(total)} in "
        f"{home() / 'cache'}; "
        f"held {sum(e.held for e in ents)}, pinned "
        + (str(sum(bool(e.pinned) for e in ents)) if pins is not None else "unknown")
    )
    return 0


def _gc(args: argparse.Namespace) -> int:
    from ecocompress.tasks.cache import gc
    from ecocompress.tasks.errors import EXCEPTIONS_TO_RAISE
    from ecocompress.tasks.sizes import format_size, parse_size

    max_bytes = parse_size(args.max_size)  # bad input fails before the registry is read
    try:
        pins = _pins()
    except EXCEPTIONS_TO_RAISE:
        raise
    except Exception as exc:  # an unreadable registry is not an empty one
        print(f"ecocompress: error: {_registry_error(exc)}; evicting nothing", file=sys.stderr)
        return 1
    r = gc(max_bytes, pins, dry_run=args.dry_run)
    verb = "would evict" if r.dry_run else "evicted"
    for e in r.evicted:
        print(f"{verb} {e.key}  {format_size(e.size_bytes)}  last used {_when(e.last_used)}")
    print(
        f"{'would free' if r.dry_run else 'freed'} {format_size(r.freed)} ({r.freed} bytes): "
        f"{format_size(r.total_before)} -> {format_size(r.total_after)}, "
        f"limit {format_size(r.max_bytes)}"
    )
    if r.total_after > r.max_bytes:
        print(
            f"still over the limit: kept {len(r.kept_held)} held by running flows and "
            f"{len(r.kept_pinned)} pinned by the model registry"
        )
    return 0


def run(args: argparse.Namespace) -> int:
    """``cache ls`` or ``cache gc``; returns the exit status."""
    import os

    from ecocompress.flows.environment import TELEMETRY_OFF

    for k, v in TELEMETRY_OFF.items():
        os.environ.setdefault(k, v)
    return _gc(args) if args.cache_command == "gc" else _ls(args)
