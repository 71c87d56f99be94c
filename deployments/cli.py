"""The ``ecocompress`` command: the pipeline's commands (flows/cli.py) and the service's.

Each service command lives in its own module, which gives ``add_parser(subparsers)`` and
``run(args) -> exit status``; it is imported only when its command runs, so ``--help`` stays
instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# command -> module with add_parser(sub) and run(args)
SERVICE_COMMANDS = {
    "server": "ecocompress.deployments.stack",
    "deploy": "ecocompress.deployments.deploy",
    "watch": "ecocompress.deployments.watch",
    "worker": "ecocompress.deployments.worker",
    "cache": "ecocompress.deployments.cache",
}


def build_parser() -> argparse.ArgumentParser:
    from ecocompress.flows.cli import build_parser as pipeline_parser

    parser = pipeline_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for module in SERVICE_COMMANDS.values():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """The console script (``argv`` None: ``sys.argv``; an interrupted command's process then
    ends at once, see ``flows.interrupts.exit_interrupted``) or an in-process call."""
    from ecocompress.flows.interrupts import EXIT_INTERRUPTED, exit_interrupted

    rc = _main(argv)
    if argv is None and rc == EXIT_INTERRUPTED:
        exit_interrupted()
    return rc


def _main(argv: list[str] | None) -> int:
    from ecocompress.flows.cli import main as pipeline_main

    args_list = sys.argv[1:] if argv is None else argv
    command = next((a for a in args_list if not a.startswith("-")), None)
    if command not in SERVICE_COMMANDS:
        return pipeline_main(args_list, parser=build_parser())
    module = importlib.import_module(SERVICE_COMMANDS[command])
    from ecocompress.flows.cli import guarded

    if getattr(module, "PASS_THROUGH", False):  # the pipeline's flags follow the command's
        args, rest = build_parser().parse_known_args(args_list)
        return guarded(lambda a: module.run(a, rest), args)
    return guarded(module.run, build_parser().parse_args(args_list))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
