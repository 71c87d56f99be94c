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

from ecocompress.flows.search_cli import (
    OPTIMIZE_EPILOG,
    SPACE_DEFAULTS,
    STUDY_EPILOG,
    _optimize,
    _search_args,
    _study,
)

EPILOG = """examples:
  ecocompress evaluate --bits 16 --limit 20 --data-dir ../shared/data/benchmarks
  ecocompress evaluate --bits 4 --prune wanda --sparsity 0.5 --benchmarks truthfulqa,gsm8k
  ecocompress sweep --bits 16,8,4 --prune none,wanda --sparsity 0.3,0.5 --limit 10
  ecocompress sweep --model Qwen/Qwen2.5-0.5B --bits 16,8 --quant-backend bitsandbytes,torchao
  ecocompress ui

Offline, benchmark data comes from --data-dir (or ECOCOMPRESS_DATA_DIR), laid out like
shared/data/benchmarks; online, from the Hugging Face Hub. Results go to MLflow
(MLFLOW_TRACKING_URI, default sqlite under $ECOCOMPRESS_HOME, ~/.ecocompress)."""


def _env_defaults() -> None:
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


def _csv(kind: type, name: str):
    def parse(s: str) -> list:
        out = []
        for part in s.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                out.append(kind(part))
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{name} {part!r} is not a valid {kind.__name__}"
                ) from None
        if not out:
            raise argparse.ArgumentTypeError(f"{name} is empty")
        return out

    return parse


def _shots(s: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in s.split(","):
        name, sep, val = part.partition("=")
        if not sep or not val.strip().lstrip("-").isdigit():
            raise argparse.ArgumentTypeError(
                f"--num-fewshot {part!r}: use benchmark=N, e.g. gsm8k=5"
            )
        out[name.strip()] = int(val)
    return out


class _Parser(argparse.ArgumentParser):
    """Argument errors on one line (no usage dump), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"ecocompress: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ecocompress",
        description=__doc__.splitlines()[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="show library logs and tracebacks")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    common = _Parser(add_help=False)
    g = common.add_argument_group("model and data")
    g.add_argument(
        "--model",
        default=None,
        help="gemma-3-270m (default, from PyPI), a Hub id, a local folder or a .gguf file",
    )
    g.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    g.add_argument(
        "--benchmarks",
        type=_csv(str, "benchmark"),
        default=None,
        help="comma list of gsm8k,truthfulqa,commonsenseqa,bbh,humaneval,perplexity "
        "(default: all but humaneval)",
    )
    g.add_argument(
        "--limit", type=int, default=None, help="items per benchmark (sub)task: a screening run"
    )
    g.add_argument(
        "--num-fewshot", type=_shots, default=None, help="override shots, e.g. gsm8k=5,bbh=0"
    )
    g.add_argument(
        "--bbh-tasks", type=_csv(str, "bbh task"), default=None, help="BBH subtasks to run"
    )
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument(
        "--max-gen-toks",
        type=int,
        default=None,
        help="cap on generated tokens for generative tasks",
    )
    g.add_argument(
        "--ppl-tokens",
        type=int,
        default=None,
        help="perplexity: WikiText-2 test tokens scored (default 4096)",
    )
    g.add_argument(
        "--ppl-window", type=int, default=None, help="perplexity: tokens per window (default 512)"
    )
    g.add_argument(
        "--ppl-stride",
        type=int,
        default=None,
        help="perplexity: new tokens scored per window (default 256)",
    )
    g.add_argument(
        "--data-dir", default=None, help="benchmark files folder (or ECOCOMPRESS_DATA_DIR)"
    )
    g.add_argument(
        "--allow-code-execution",
        action="store_true",
        help="allow humaneval to run model-written code (sandboxed)",
    )
    g = common.add_argument_group("tracking and carbon")
    g.add_argument("--experiment", default=None, help="MLflow experiment (default: the model name)")
    g.add_argument(
        "--country",
        default=None,
        help="ISO 3166-1 alpha-3 grid for CO2 (codecarbon data), default USA",
    )
    g.add_argument(
        "--carbon-intensity",
        type=float,
        default=None,
        help="explicit grid intensity in g CO2eq/kWh",
    )
    g.add_argument(
        "--objectives",
        default=None,
        help="Pareto objectives (default: accuracy:max and perplexity/wikitext2:min when those "
        "benchmarks run, then latency_ms:min,memory_gb:min,energy_kwh:min)",
    )
    g.add_argument(
        "--noise-z",
        type=float,
        default=None,
        help="frontier beyond noise: a candidate is dominated only by one better by more than "
        "this many standard errors on accuracy / log perplexity (default: plain Pareto for "
        "evaluate and sweep, 1 for optimize)",
    )
    g.add_argument("--quiet", action="store_true", help="no progress lines")

    e = sub.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate one candidate",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # Defaults of the candidate axes live in tasks/specs.py; None here means "the spec's".
    e.add_argument(
        "--bits", type=int, help="32 (fp32), 16 (bf16, default), 8 (LLM.int8 / int8 wo), 4 (NF4)"
    )
    e.add_argument("--quant-backend", help="bitsandbytes (default) | torchao (int8 only)")
    e.add_argument("--prune", help="none (default) | magnitude | wanda")
    e.add_argument(
        "--sparsity", type=float, help="fraction of decoder Linear weights zeroed, 0 to 0.9"
    )
    e.add_argument("--pattern", help="unstructured (default) | N:M (2:4, 4:8)")

    s = sub.add_parser(
        "sweep",
        parents=[common],
        help="evaluate the cross product of comma lists",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _space_args(s, "the grid")

    o = sub.add_parser(
        "optimize",
        parents=[common],
        help="search the space: a policy picks each next candidate until a budget or goal stops it",
        epilog=OPTIMIZE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _space_args(o, "the search space")
    _search_args(o)

    st = sub.add_parser(
        "study",
        parents=[common],
        help="research questions rq1-rq4 as reports (MLflow artifacts + printed table)",
        epilog=STUDY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument("which", help="rq1 | rq2 | rq3 | rq4")
    st.add_argument(
        "--policies",
        type=_csv(str, "policy"),
        default=None,
        help="rq1: default agent,optuna,random,grid",
    )
    st.add_argument("--seeds", type=int, default=1, help="rq1: seeds of random and optuna")
    st.add_argument("--replay", default=None, help="rq1: replay on a recorded grid JSON instead")
    _space_args(st, "the search space")
    _search_args(st)

    u = sub.add_parser("ui", help="start the MLflow UI on the tracking store")
    u.add_argument("--port", type=int, default=5000)
    return p


def _space_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(what)
    g.add_argument("--bits", type=_csv(int, "bits"), help="comma list, e.g. 16,8,4")
    g.add_argument(
        "--quant-backend", type=_csv(str, "quant backend"), help="e.g. bitsandbytes,torchao"
    )
    g.add_argument("--prune", type=_csv(str, "prune method"), help="e.g. none,magnitude,wanda")
    g.add_argument("--sparsity", type=_csv(float, "sparsity"), help="e.g. 0.3,0.5")
    g.add_argument("--pattern", type=_csv(str, "pattern"), help="e.g. unstructured,2:4,4:8")


def _run_params(args: argparse.Namespace):
    from ecocompress.flows.params import RunParams

    given = {
        "model": args.model,
        "revision": args.revision,
        "benchmarks": args.benchmarks,
        "limit": args.limit,
        "num_fewshot": args.num_fewshot,
        "bbh_tasks": args.bbh_tasks,
        "batch_size": args.batch_size,
        "max_gen_toks": args.max_gen_toks,
        "ppl_tokens": args.ppl_tokens,
        "ppl_window": args.ppl_window,
        "ppl_stride": args.ppl_stride,
        "data_dir": args.data_dir,
        "experiment": args.experiment,
        "country": args.country,
        "carbon_intensity": args.carbon_intensity,
        "objectives": args.objectives,
        "noise_z": args.noise_z,
        "allow_code_execution": args.allow_code_execution or None,
    }
    # Only what the user gave overrides RunParams' defaults (each default is defined once).
    return RunParams(**{k: v for k, v in given.items() if v is not None})


def _candidates(args: argparse.Namespace):
    from ecocompress.flows.params import candidate_grid
    from ecocompress.tasks.specs import PruneSpec, QuantSpec

    def axis(value, spec, field: str) -> list:
        if value is None:
            if args.command in ("optimize", "study"):
                return SPACE_DEFAULTS[
                    {"method": "prune", "backend": "quant_backend"}.get(field, field)
                ]
            return [spec.model_fields[field].default]
        return value if isinstance(value, list) else [value]

    return candidate_grid(
        axis(args.bits, QuantSpec, "bits"),
        axis(args.prune, PruneSpec, "method"),
        axis(args.sparsity, PruneSpec, "sparsity"),
        axis(args.pattern, PruneSpec, "pattern"),
        axis(args.quant_backend, QuantSpec, "backend"),
    )


def _ui(args: argparse.Namespace) -> int:
    from ecocompress.metrics.tracking import tracking_uri

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


def _quiet_libraries() -> None:
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
    }.items():
        logging.getLogger(name).setLevel(level)
    # torch keeps a level set before it is imported: its warning about torchao's enum
    # registration on every run stays off without importing torch here
    logging.getLogger("torch.utils._pytree").setLevel(logging.ERROR)
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")


def run(args: argparse.Namespace) -> int:
    if args.command == "optimize":
        return _optimize(args)
    if args.command == "study":
        return _study(args)
    params = _run_params(args)
    cands = _candidates(args)
    from ecocompress.flows.report import print_summary
    from ecocompress.flows.sweep import sweep_flow

    summary = sweep_flow(params, cands, command=args.command, quiet=args.quiet)
    print_summary(summary, params)
    return 0 if summary["n_ok"] == len(cands) else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _env_defaults()
    if args.verbose:
        os.environ["ECOCOMPRESS_VERBOSE"] = "1"
        os.environ["PREFECT_LOGGING_LEVEL"] = "INFO"
        os.environ["PREFECT_LOGGING_LOGGERS_PREFECT_LEVEL"] = "INFO"
    if args.command == "ui":
        return _ui(args)
    if not args.verbose:
        _quiet_libraries()
    from ecocompress.tasks.errors import UserError, one_line

    try:
        from pydantic import ValidationError

        try:
            return run(args)
        except (UserError, ValidationError, FileNotFoundError) as exc:
            if args.verbose:
                raise
            print(f"ecocompress: error: {one_line(exc)}", file=sys.stderr)
            return 2
        except Exception as exc:  # a bug or an environment failure, not bad input
            if args.verbose:
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
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
