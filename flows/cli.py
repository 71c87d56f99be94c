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
    from flows.environment import TELEMETRY_OFF
    from tasks.artifacts import home

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


OPTIMIZE_EPILOG = """examples:
  ecocompress optimize --policy agent --max-candidates 8 --limit 20 --accuracy-drop 5
  ecocompress optimize --policy optuna --profile edge --max-minutes 60
  ecocompress optimize --weights accuracy=0.5,energy=0.3,latency=0.2 --carbon-budget 0.01
  ecocompress optimize --thread-id opt-1 ...   # same command again: resume thread opt-1

The space defaults to bits 16,8,4 x prune none,magnitude,wanda x sparsity 0.25,0.5 x
pattern unstructured,2:4,4:8 (27 candidates). Every decision (policy, reason, state seen)
is tagged on the candidate's MLflow run and listed in the parent run's decisions.json."""

STUDY_EPILOG = """examples:
  ecocompress study rq1 --max-candidates 8 --limit 20 --seeds 3
  ecocompress study rq1 --replay tests/perf/results/planner_grid.json --seeds 10
  ecocompress study rq2 --limit 20        # rq3 reuses rq2's search (same settings)
  ecocompress study rq4 --limit 20 --carbon-budget 0.002"""

SPACE_DEFAULTS = {
    "bits": [16, 8, 4],
    "prune": ["none", "magnitude", "wanda"],
    "sparsity": [0.25, 0.5],
    "pattern": ["unstructured", "2:4", "4:8"],
    "quant_backend": ["bitsandbytes"],
}


def _space_args(p: argparse.ArgumentParser, what: str) -> None:
    g = p.add_argument_group(what)
    g.add_argument("--bits", type=_csv(int, "bits"), help="comma list, e.g. 16,8,4")
    g.add_argument(
        "--quant-backend", type=_csv(str, "quant backend"), help="e.g. bitsandbytes,torchao"
    )
    g.add_argument("--prune", type=_csv(str, "prune method"), help="e.g. none,magnitude,wanda")
    g.add_argument("--sparsity", type=_csv(float, "sparsity"), help="e.g. 0.3,0.5")
    g.add_argument("--pattern", type=_csv(str, "pattern"), help="e.g. unstructured,2:4,4:8")


def _search_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("search")
    g.add_argument(
        "--policy", default="agent", help="agent (default) | optuna | random | grid | llm"
    )
    g.add_argument("--sampler", default="tpe", help="optuna sampler: tpe (default) | nsga2")
    g.add_argument("--seed", type=int, default=0, help="seed of the random and optuna policies")
    g.add_argument(
        "--max-candidates",
        type=int,
        default=None,
        help="evaluations budget (default 8; none with --multi-fidelity)",
    )
    g.add_argument(
        "--multi-fidelity",
        action="store_true",
        help="screen on perplexity (1/8 of --ppl-tokens), race the survivors on a third of "
        "--limit, then evaluate what is left in full (policies agent, optuna, random, grid)",
    )

    g.add_argument("--max-minutes", type=float, default=None, help="evaluation time budget")
    g.add_argument("--carbon-budget", type=float, default=None, help="kg CO2eq the search may emit")
    g.add_argument(
        "--accuracy-drop",
        type=float,
        default=5.0,
        help="percentage points below the reference's accuracy still acceptable (default 5)",
    )
    g.add_argument("--memory-limit", type=float, default=None, help="GB of weights, hard limit")
    g.add_argument("--latency-limit", type=float, default=None, help="ms per token, hard limit")
    g.add_argument(
        "--weights", default=None, help="scalarization, e.g. accuracy=0.5,energy=0.3,latency=0.2"
    )
    g.add_argument(
        "--profile", default=None, help="edge (<= 1 GB) | cloud | balanced (default weights)"
    )
    g.add_argument(
        "--patience",
        type=int,
        default=None,
        help="stop when the frontier is unchanged for this many evaluations",
    )
    g.add_argument(
        "--reeval-limit",
        type=int,
        default=None,
        help="re-evaluate close calls with up to this many items (default 4 x --limit)",
    )
    g.add_argument("--thread-id", default=None, help="resume (or name) a search thread")
    g.add_argument("--no-register", action="store_true", help="do not register the result")
    g.add_argument(
        "--llm", default=None, help="policy llm: provider:model or python:pkg.module:factory"
    )


def _run_params(args: argparse.Namespace):
    from flows.params import RunParams

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
    from flows.params import candidate_grid
    from tasks.specs import PruneSpec, QuantSpec

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
    from metrics.tracking import tracking_uri

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


def _with_perplexity(args: argparse.Namespace, params):
    """A multi-fidelity search screens on perplexity: add the benchmark if it is missing."""
    if getattr(args, "multi_fidelity", False) and "perplexity" not in params.benchmarks:
        return params.model_copy(update={"benchmarks": (*params.benchmarks, "perplexity")})
    return params


def _search_settings(args: argparse.Namespace, params):
    from agents.graph import SearchSettings
    from agents.policies import POLICIES
    from agents.space import Space
    from flows.optimize import resolve_goals
    from metrics.recommend import parse_weights
    from tasks.errors import UserError

    if args.policy not in POLICIES:
        raise UserError(f"unknown policy {args.policy!r}: allowed {', '.join(POLICIES)}")
    if args.policy == "llm" and not args.llm:
        raise UserError("policy llm needs --llm: provider:model or python:pkg.module:factory")
    if args.max_candidates is not None and args.max_candidates < 1:
        raise UserError(f"--max-candidates {args.max_candidates} must be >= 1")
    if not (0 <= args.accuracy_drop <= 100):
        raise UserError(f"--accuracy-drop {args.accuracy_drop} must be 0 to 100 percentage points")
    for name in ("memory_limit", "latency_limit", "max_minutes", "carbon_budget"):
        v = getattr(args, name)
        if v is not None and not (v > 0):
            raise UserError(f"--{name.replace('_', '-')} {v} must be > 0")
    fidelities = None
    if args.multi_fidelity:
        from agents.fidelity import default_ladder

        if args.policy == "llm":
            raise UserError("--multi-fidelity works with policies agent, optuna, random, grid")
        fidelities = default_ladder(
            [b for b in params.benchmarks if b != "perplexity"],
            params.limit,
            params.ppl_tokens,
            params.ppl_window,
            params.ppl_stride,
        )
    max_candidates = args.max_candidates
    if max_candidates is None and not args.multi_fidelity:
        max_candidates = 8
    cands = _candidates(args)
    axes = {
        "bits": sorted({c.quant.bits for c in cands}, reverse=True),
        "prune": list(dict.fromkeys(c.prune.method for c in cands)),
        "sparsity": args.sparsity or SPACE_DEFAULTS["sparsity"],
        "pattern": args.pattern or SPACE_DEFAULTS["pattern"],
        "quant_backend": args.quant_backend or SPACE_DEFAULTS["quant_backend"],
    }
    Space.from_dict(axes)  # validates
    weights, mem, lat = resolve_goals(
        args.profile,
        parse_weights(args.weights) if args.weights else None,
        args.memory_limit,
        args.latency_limit,
    )
    reeval = args.reeval_limit
    if reeval is None and params.limit is not None:
        reeval = 4 * params.limit
    settings = SearchSettings(
        policy=args.policy,
        sampler=args.sampler,
        seed=args.seed,
        space=axes,
        objectives=params.objectives,
        weights=weights,
        accuracy_drop=args.accuracy_drop / 100.0,
        memory_limit_gb=mem,
        latency_limit_ms=lat,
        max_candidates=max_candidates,
        max_minutes=args.max_minutes,
        carbon_budget_kg=args.carbon_budget,
        patience=args.patience,
        base_limit=params.limit,
        # with a ladder, the races replace close-call re-evaluation
        max_limit=reeval if params.limit is not None and not fidelities else None,
        z=params.noise_z if params.noise_z is not None else 1.0,
        fidelities=fidelities,
    )
    return settings


def _study(args: argparse.Namespace) -> int:
    from flows.study import STUDIES, study_flow
    from tasks.errors import UserError

    if args.which not in STUDIES:
        raise UserError(f"unknown study {args.which!r}: allowed {', '.join(STUDIES)}")
    if args.replay is not None and not os.path.isfile(args.replay):
        raise UserError(f"--replay {args.replay}: no such file")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be >= 1")
    params = _with_perplexity(args, _run_params(args))
    base = _search_settings(args, params)
    out = study_flow(
        args.which,
        params,
        base,
        policies=args.policies,
        seeds=list(range(args.seeds)),
        replay_path=args.replay,
        carbon_budget=args.carbon_budget,
        quiet=args.quiet,
    )
    print(out["text"])
    print(f"report: report.md / report.html on MLflow run {out['run_id']} (ecocompress ui)")
    return 0


def _optimize(args: argparse.Namespace) -> int:
    import secrets

    from flows.optimize import optimize_flow
    from flows.report import print_optimize_summary, print_summary

    params = _with_perplexity(args, _run_params(args))
    settings = _search_settings(args, params)
    thread = args.thread_id or f"opt-{secrets.token_hex(4)}"
    if not args.quiet:
        print(f"thread {thread} (resume with --thread-id {thread})", file=sys.stderr)
    summary = optimize_flow(
        params,
        settings,
        thread,
        profile=args.profile,
        register_model=not args.no_register,
        llm=args.llm,
        quiet=args.quiet,
    )
    print_summary(summary, params)
    print_optimize_summary(summary)
    return 0 if summary["n_ok"] else 1


def run(args: argparse.Namespace) -> int:
    if args.command == "optimize":
        return _optimize(args)
    if args.command == "study":
        return _study(args)
    params = _run_params(args)
    cands = _candidates(args)
    from flows.report import print_summary
    from flows.sweep import sweep_flow

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
    from tasks.errors import UserError, one_line

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
