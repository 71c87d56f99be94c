"""ecocompress: compress a causal LM, evaluate every candidate, count its carbon, keep the Pareto frontier.

Examples:
    ecocompress evaluate --bits 16 --limit 20 --data-dir ../shared/data/benchmarks
    ecocompress sweep --bits 16,8,4 --prune none,wanda --sparsity 0.3,0.5 --limit 10
    ecocompress ui          # MLflow UI on the local store
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from ecocompress.flows.flags import add_flags, given
from ecocompress.flows.params import RunParams, SpaceParams
from ecocompress.flows.resolve import (
    COMMANDS,
    Resolved,
    flow_parameters,
    load_spec_file,
    resolve,
)
from ecocompress.flows.scale import ScaleParams
from ecocompress.flows.search_params import SearchParams, StudyParams

EPILOG = """examples:
  ecocompress evaluate --bits 16 --limit 20 --data-dir ../shared/data/benchmarks
  ecocompress evaluate --bits 4 --prune wanda --sparsity 0.5 --benchmarks truthfulqa,gsm8k
  ecocompress sweep --bits 16,8,4 --prune none,wanda --sparsity 0.3,0.5 --limit 10
  ecocompress sweep --model Qwen/Qwen2.5-0.5B --bits 16,8 --quant-backend bitsandbytes,torchao
  ecocompress ui

Offline, benchmark data comes from --data-dir (or ECOCOMPRESS_DATA_DIR), laid out like
shared/data/benchmarks; online, from the Hugging Face Hub. Results go to MLflow
(MLFLOW_TRACKING_URI, default sqlite under $ECOCOMPRESS_HOME, ~/.ecocompress)."""


def env_defaults() -> None:
    """Telemetry off, quiet libraries, Prefect state under ECOCOMPRESS_HOME; user settings win."""
    from ecocompress.flows.environment import TELEMETRY_OFF
    from ecocompress.tasks.artifacts import home

    defaults = {
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(home() / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
        "PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL": "CRITICAL",
        "TRANSFORMERS_VERBOSITY": "error",
        "PYTHONWARNINGS": "ignore",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    # Prefect does not create missing parents of its home and then cannot start its server.
    os.makedirs(os.environ["PREFECT_HOME"], exist_ok=True)


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line (no usage dump), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"ecocompress: error: {message} (see {self.prog} --help)\n")


HELP = {
    "evaluate": "evaluate one candidate",
    "sweep": "evaluate the cross product of comma lists",
    "optimize": "search the space: a policy picks each next candidate until a budget or goal "
    "stops it",
    "study": "research questions rq1-rq4 as reports (MLflow artifacts + printed table)",
}
GROUPS = {
    RunParams: "model, data, tracking and carbon",
    SpaceParams: "candidates (comma lists)",
    SearchParams: "search",
    ScaleParams: "scale-out (where candidates run)",
    StudyParams: "study",
}


def build_parser() -> argparse.ArgumentParser:
    """The CLI: one subcommand per entry of ``flows.resolve.COMMANDS``, its flags generated
    from the settings models that command reads."""
    from ecocompress.flows.search_cli import OPTIMIZE_EPILOG, STUDY_EPILOG

    p = _Parser(
        prog="ecocompress",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    epilogs = {"optimize": OPTIMIZE_EPILOG, "study": STUDY_EPILOG}
    for command, models in COMMANDS.items():
        c = sub.add_parser(
            command,
            help=HELP[command],
            epilog=epilogs.get(command, EPILOG),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        for model in reversed(models) if command == "study" else models:
            add_flags(c, model, GROUPS[model])
        g = c.add_argument_group("command")
        g.add_argument(
            "--config",
            default=None,
            help="YAML spec: settings by name (limit: 10, bits: [16, 8]); flags override it",
        )
        g.add_argument("--quiet", action="store_true", help="no progress lines")
    u = sub.add_parser("ui", help="start the MLflow UI on the tracking store")
    u.add_argument("--port", type=port, default=5000, help="TCP port, 1 to 65535")
    return p


def port(text: str) -> int:
    """A TCP port number (argparse type): 1 to 65535."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"port {n} is out of range 1 to 65535")
    return n


def parse_settings(command: str, argv: list[str]) -> dict[str, Any]:
    """The settings of ``ecocompress COMMAND ARGV...`` by field name: the ``--config`` file's,
    overridden by the flags given. Deployments read their flags through this too."""
    args = build_parser().parse_args([command, *argv])
    return settings_of(args)


def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    values = load_spec_file(args.config) if args.config else {}
    return {**values, **given(args, *COMMANDS[args.command])}


def _ui(args: argparse.Namespace) -> int:
    from ecocompress.flows.stack import running_stack
    from ecocompress.metrics.tracking import tracking_uri

    stack = None if os.environ.get("MLFLOW_TRACKING_URI") else running_stack()
    if stack is not None:  # the stack's MLflow server already serves the UI
        print(f"MLflow UI of the running stack: {stack['urls']['mlflow']}")
        return 0

    uri = tracking_uri()
    print(f"mlflow ui --backend-store-uri {uri} --port {args.port}", file=sys.stderr)
    os.execvp(
        sys.executable,
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--port",
            str(args.port),
        ],
    )
    return 0  # pragma: no cover


def quiet_libraries() -> None:
    """Library chatter off the terminal (progress lines and the table are ours); -v keeps it."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name, level in {
        "great_expectations": logging.WARNING,
        "torchao": logging.ERROR,
        "lm_eval": logging.ERROR,
        "lm-eval": logging.ERROR,
        "codecarbon": logging.ERROR,
        "transformers": logging.ERROR,
        "torch": logging.ERROR,
        "mlflow": logging.WARNING,
        "datasets": logging.ERROR,
        "httpx": logging.WARNING,
        # --workers: a closing cluster logs its workers' lost heartbeats and slow exits
        "distributed": logging.CRITICAL,
    }.items():
        logging.getLogger(name).setLevel(level)
    # torch keeps a level set before it is imported: its warning about torchao's enum
    # registration on every run stays off without importing torch here
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")  # its worker processes


def run(args: argparse.Namespace, r: Resolved | None = None) -> int:
    """Run the command; ``r``: its settings, already resolved (and checked)."""
    r = r or resolve(args.command, settings_of(args))
    if args.command == "optimize":
        from ecocompress.flows.search_cli import run_optimize

        return run_optimize(r, quiet=args.quiet)
    if args.command == "study":
        from ecocompress.flows.search_cli import run_study

        return run_study(r, quiet=args.quiet)
    from ecocompress.flows.report import print_summary
    from ecocompress.flows.sweep import sweep_flow

    summary = sweep_flow(**flow_parameters(r), quiet=args.quiet)
    print_summary(summary, r.run)
    return 0 if summary["n_ok"] == len(r.candidates) else 1


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    env_defaults()
    if args.verbose:
        os.environ["ECOCOMPRESS_VERBOSE"] = "1"
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
        os.environ["PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL"] = "INFO"
    if args.command == "ui":
        return _ui(args)
    if not args.verbose:
        quiet_libraries()

    def connected_run(args: argparse.Namespace) -> int:
        from ecocompress.flows.preflight import preflight
        from ecocompress.flows.stack import connect

        # bad input is refused before any server is contacted or started
        r = resolve(args.command, settings_of(args))
        preflight(r)
        connect(quiet=args.quiet)
        return run(args, r)

    return guarded(connected_run, args)


def guarded(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """``fn(args)`` with the CLI's error contract: bad input one line and exit 2, a bug's
    traceback raised, an environment failure one line and exit 1, Ctrl-C or SIGTERM exit 130."""
    from ecocompress.flows.interrupts import EXIT_INTERRUPTED, sigterm_as_interrupt
    from ecocompress.tasks.errors import EXCEPTIONS_TO_RAISE, UserError, one_line

    verbose = getattr(args, "verbose", False)
    try:
        from pydantic import ValidationError

        try:
            with sigterm_as_interrupt():
                return fn(args)
        except (UserError, ValidationError, FileNotFoundError) as exc:
            if verbose:
                raise
            print(f"ecocompress: error: {one_line(exc)}", file=sys.stderr)
            return 2
        except EXCEPTIONS_TO_RAISE:  # a bug: the traceback is what its reader needs
            raise
        except Exception as exc:  # an environment failure, not bad input
            if verbose:
                raise
            print(
                f"ecocompress: internal error: {type(exc).__name__}: {one_line(exc)} "
                "(run with -v for the traceback)",
                file=sys.stderr,
            )
            return 1
    except KeyboardInterrupt:
        print(
            "ecocompress: interrupted; finished candidates are kept in MLflow and the caches",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    from ecocompress.flows.interrupts import EXIT_INTERRUPTED, exit_interrupted

    if (rc := main()) == EXIT_INTERRUPTED:
        exit_interrupted()
    sys.exit(rc)
