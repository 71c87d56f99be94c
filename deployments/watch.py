"""``ecocompress watch SOURCE...``: check watched models once and announce new revisions.

    ecocompress watch ./models/my-lm ./models/other.gguf models:/my-registered-lm
    ecocompress watch Qwen/Qwen2.5-0.5B --dry-run

Each new (model, revision) becomes one ``ecocompress.model.updated`` event on the Prefect server
of the running stack; the ``on-new-model`` deployment (``ecocompress deploy``) starts optimize
for it. ``ecocompress deploy --watch SOURCE`` runs this check on a schedule instead.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch",
        help="check watched models once; a new revision starts a search (with a deployment)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sources", nargs="+", help="model folder, .gguf file, models:/<name>, Hub id")
    p.add_argument(
        "--dry-run", action="store_true", help="print the revisions; emit and record nothing"
    )


def run(args: argparse.Namespace) -> int:
    from ecocompress.flows.cli import env_defaults
    from ecocompress.flows.stack import connect
    from ecocompress.flows.watch import watch
    from ecocompress.tasks.errors import UserError

    env_defaults()
    state = connect(quiet=True)
    if state is None and not os.environ.get("PREFECT_API_URL") and not args.dry_run:
        raise UserError(
            "watch announces new models to a Prefect server: start the stack "
            "(ecocompress server start) or set PREFECT_API_URL, or pass --dry-run"
        )
    rows = watch(args.sources, record=not args.dry_run)
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()  # every event sent before the process ends
    status = 0
    for r in rows:
        if r.get("error"):
            print(f"ecocompress: error: {r['error']}", file=sys.stderr)
            status = 2
        else:
            word = "new" if r["new"] else "seen"
            tail = f" event {r['event']}" if r.get("event") else ""
            print(f"{r['source']}: {r['model']} @ {r['revision']} ({word}){tail}")
    return status
