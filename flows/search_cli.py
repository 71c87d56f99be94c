"""The search commands of the CLI: ``optimize`` and ``study`` (their flags, the search
settings they build, and how they run). ``flows/cli.py`` holds the parser and the rest."""

from __future__ import annotations

import argparse
import os
import sys

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


def _with_perplexity(args: argparse.Namespace, params):
    """A multi-fidelity search screens on perplexity: add the benchmark if it is missing."""
    if getattr(args, "multi_fidelity", False) and "perplexity" not in params.benchmarks:
        return params.model_copy(update={"benchmarks": (*params.benchmarks, "perplexity")})
    return params


def _search_settings(args: argparse.Namespace, params):
    from ecocompress.agents.graph import SearchSettings
    from ecocompress.agents.policies import POLICIES
    from ecocompress.agents.space import Space
    from ecocompress.flows.optimize import resolve_goals
    from ecocompress.metrics.recommend import parse_weights
    from ecocompress.tasks.errors import UserError

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
        from ecocompress.agents.fidelity import default_ladder

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
    from ecocompress.flows.cli import _candidates

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
    from ecocompress.flows.study import STUDIES, study_flow
    from ecocompress.tasks.errors import UserError

    if args.which not in STUDIES:
        raise UserError(f"unknown study {args.which!r}: allowed {', '.join(STUDIES)}")
    if args.replay is not None and not os.path.isfile(args.replay):
        raise UserError(f"--replay {args.replay}: no such file")
    if args.seeds < 1:
        raise UserError(f"--seeds {args.seeds} must be >= 1")
    from ecocompress.flows.cli import _run_params

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

    from ecocompress.flows.cli import _run_params
    from ecocompress.flows.optimize import optimize_flow
    from ecocompress.flows.report import print_optimize_summary, print_summary

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
