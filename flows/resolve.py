"""From the user's settings to the validated specs the flows take.

Settings arrive by field name (flows/params.py) from command-line flags, a YAML spec file
(``--config``) or a deployment's flags; ``resolve`` is the one place they become a
``RunParams``, the candidate list and, for a search, the agent's ``SearchSettings``.
``flow_parameters`` is what the CLI calls a flow with and what a deployment stores, so a
scheduled run and a command line with the same flags run the same thing.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ecocompress.flows.flags import cli_fields
from ecocompress.flows.params import RunParams, SpaceParams
from ecocompress.flows.scale import ScaleParams
from ecocompress.flows.search_params import (
    DEFAULT_MAX_CANDIDATES,
    REEVAL_LIMIT_FACTOR,
    SearchParams,
    StudyParams,
)
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CandidateSpec

# The settings models each command reads, in the order of its help.
COMMANDS: dict[str, tuple[type[BaseModel], ...]] = {
    "evaluate": (RunParams, SpaceParams),
    "sweep": (RunParams, SpaceParams, ScaleParams),
    "optimize": (RunParams, SpaceParams, SearchParams, ScaleParams),
    "study": (RunParams, SpaceParams, SearchParams, StudyParams),
}
SEARCH_COMMANDS = ("optimize", "study")


@dataclass(frozen=True)
class Resolved:
    """The validated specs of one command."""

    command: str
    run: RunParams
    candidates: list[CandidateSpec]
    search: SearchParams | None = None
    settings: Any = None  # agents.graph.SearchSettings for optimize and study
    study: StudyParams | None = None
    scale: ScaleParams | None = None  # where candidates run (sweep)


def load_spec_file(path: str | Path) -> dict[str, Any]:
    """Settings from a YAML file: a mapping of field names (``limit: 10``, ``bits: [16, 8]``).

    Raises:
        UserError: the file is missing, not YAML, or not a mapping.
    """
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise UserError(f"--config {path} must be a mapping of setting names to values")
    return {k.replace("-", "_"): v for k, v in data.items()}


def _split(command: str, values: Mapping[str, Any]) -> dict[type[BaseModel], dict[str, Any]]:
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}: allowed {', '.join(COMMANDS)}")
    owner = {n: m for m in COMMANDS[command] for n in cli_fields(m)}
    out: dict[type[BaseModel], dict[str, Any]] = {m: {} for m in COMMANDS[command]}
    for name, value in values.items():
        if name not in owner:
            close = difflib.get_close_matches(name, list(owner), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"unknown setting {name!r} for {command}{hint}")
        out[owner[name]][name] = value
    return out


def resolve(command: str, values: Mapping[str, Any]) -> Resolved:
    """Validate ``values`` (settings by field name) into the specs of ``command``.

    Raises:
        UserError: an unknown setting, or one ``evaluate`` cannot take.
        pydantic.ValidationError: a value out of range (the message names the field).
    """
    parts = _split(command, values)
    run_values = parts[RunParams]
    space = SpaceParams.model_validate(parts[SpaceParams])
    search = (
        SearchParams.model_validate(parts[SearchParams]) if command in SEARCH_COMMANDS else None
    )
    run = RunParams.model_validate(run_values)
    if search is not None and search.multi_fidelity and "perplexity" not in run.benchmarks:
        # a multi-fidelity search screens on perplexity: the benchmark is added (and the
        # default objectives follow it)
        run = RunParams.model_validate(
            {**run_values, "benchmarks": (*run.benchmarks, "perplexity")}
        )
    if command == "evaluate":
        several = [n for n, v in space.model_dump().items() if v is not None and len(v) > 1]
        if several:
            raise UserError(
                f"evaluate takes one candidate, but {', '.join(several)} has several values: "
                "use sweep for a grid"
            )
    candidates = space.candidates(search=search is not None)
    _check_combinations(space, candidates, search=search is not None)
    settings = search_settings(run, space, search) if search is not None else None
    study = StudyParams.model_validate(parts[StudyParams]) if command == "study" else None
    scale = ScaleParams.model_validate(parts[ScaleParams]) if ScaleParams in parts else None
    if (
        search is not None
        and scale is not None
        and scale.workers is not None
        and scale.workers > search.batch
    ):
        # each iteration evaluates one batch: workers beyond its size would stay idle
        raise UserError(
            f"--workers {scale.workers} with --batch {search.batch}: optimize evaluates "
            f"{search.batch} proposal(s) per iteration, so {scale.workers - search.batch} "
            f"worker(s) would stay idle; pass --batch {scale.workers} (or more)"
        )
    return Resolved(command, run, candidates, search, settings, study, scale)


def _check_combinations(space: SpaceParams, candidates: list[CandidateSpec], search: bool) -> None:
    """Refuse axes that make no candidate: an empty list, or a ``--bits`` value given that
    no backend given can quantize to (said with the reason, not found missing later).

    Raises:
        UserError: naming the bits, the backends and why.
    """
    from ecocompress.tasks.specs import UNSUPPORTED

    axes = space.axes(search)
    made = {c.quant.bits for c in candidates}
    asked = axes["bits"] if space.bits is not None or not candidates else []
    for b in asked:
        if b in made:
            continue
        why = "; ".join(
            dict.fromkeys(UNSUPPORTED.get((qb, b), "unsupported") for qb in axes["quant_backend"])
        )
        raise UserError(
            f"--bits {b} with --quant-backend {','.join(axes['quant_backend'])} makes no "
            f"candidate: {why}"
        )


def search_settings(run: RunParams, space: SpaceParams, search: SearchParams):
    """The agent's settings, derived from the user's (validated, never copied unchecked)."""
    from ecocompress.agents.settings import SearchSettings
    from ecocompress.agents.space import Space
    from ecocompress.metrics.recommend import parse_weights, resolve_goals

    fidelities = None
    if search.multi_fidelity:
        from ecocompress.agents.fidelity import default_ladder

        fidelities = default_ladder(
            [b for b in run.benches() if b.evaluator != "perplexity"],
            run.limit,
            run.ppl_tokens,
            run.ppl_window,
            run.ppl_stride,
        )
    max_candidates = search.max_candidates
    if max_candidates is None and not search.multi_fidelity:
        max_candidates = DEFAULT_MAX_CANDIDATES
    axes = space.axes(search=True)
    axes["bits"] = sorted(set(axes["bits"]), reverse=True)
    axes["prune"] = list(dict.fromkeys(axes["prune"]))
    Space.from_dict(axes)  # validates the space
    weights, mem, lat = resolve_goals(
        search.profile,
        parse_weights(search.weights) if search.weights else None,
        search.memory_limit,
        search.latency_limit,
    )
    benches = run.benches()
    if "accuracy" in weights and not any(b.unit_score for b in benches) and not search.weights:
        # no benchmark scored on items: a profile's accuracy weight goes to the first other
        # quality metric (perplexity/wikitext2 when perplexity runs alone)
        weights = {benches[0].column if k == "accuracy" else k: v for k, v in weights.items()}
    reeval = search.reeval_limit
    if reeval is None and run.limit is not None:
        reeval = REEVAL_LIMIT_FACTOR * run.limit
    z = run.noise_z if run.noise_z is not None else SearchSettings.model_fields["z"].default
    return SearchSettings.model_validate(
        {
            "policy": search.policy,
            "sampler": search.sampler,
            "seed": search.seed,
            "space": axes,
            "objectives": run.objectives,
            "weights": weights,
            "accuracy_drop": search.accuracy_drop / 100.0,
            "memory_limit_gb": mem,
            "latency_limit_ms": lat,
            "max_candidates": max_candidates,
            "batch": search.batch,
            "max_minutes": search.max_minutes,
            "carbon_budget_kg": search.carbon_budget,
            "patience": search.patience,
            "base_limit": run.limit,
            # with a ladder, the races replace close-call re-evaluation
            "max_limit": reeval if run.limit is not None and not fidelities else None,
            "z": z,
            "fidelities": fidelities,
        }
    )


def flow_parameters(r: Resolved) -> dict[str, Any]:
    """The parameters of the command's flow (sweep_flow, optimize_flow or study_flow)
    besides ``quiet`` and the optimize thread id: what the CLI passes and a deployment
    stores."""
    if r.command == "evaluate":
        return {"params": r.run, "candidates": r.candidates, "command": r.command}
    # where candidates run changes no number: stored only when given
    scale = (
        {"scale": r.scale}
        if r.scale is not None and r.scale.model_dump(exclude_defaults=True)
        else {}
    )
    if r.command == "sweep":
        return {"params": r.run, "candidates": r.candidates, "command": "sweep", **scale}
    assert r.search is not None and r.settings is not None
    if r.command == "optimize":
        return {
            "params": r.run,
            "settings": r.settings,
            "profile": r.search.profile,
            "register_model": r.search.register_model,
            "llm": r.search.llm,
            **scale,
        }
    assert r.study is not None
    return {
        "which": r.study.which,
        "params": r.run,
        "base": r.settings,
        "policies": list(r.study.policies),
        "seeds": list(range(r.study.seeds)),
        "replay_path": r.study.replay,
        "carbon_budget": r.search.carbon_budget,
    }
