"""The settings of the search commands, each declared once: ``SearchParams`` (optimize and
study) and ``StudyParams`` (the research-question reports). ``flows.resolve`` derives the
agent's ``SearchSettings`` from them."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from ecocompress.agents.settings import SearchSettings
from ecocompress.flows.params import _one_of
from ecocompress.tasks.specs import Spec

DEFAULT_MAX_CANDIDATES = 8  # evaluations of a single-fidelity search when none is given
REEVAL_LIMIT_FACTOR = 4  # close calls are re-evaluated on up to this many times --limit


_SEARCH = SearchSettings.model_fields  # defaults shared with the agent's settings live there


class SearchParams(Spec):
    """The settings of ``optimize`` (and ``study``), as the user gives them; the agent's
    ``SearchSettings`` are derived from them by ``flows.resolve``."""

    policy: str = Field(
        _SEARCH["policy"].default, description="agent | optuna | random | grid | llm"
    )
    sampler: Literal["tpe", "nsga2"] = Field(
        _SEARCH["sampler"].default, description="optuna sampler: tpe | nsga2"
    )
    seed: int = Field(_SEARCH["seed"].default, description="seed of the random and optuna policies")
    max_candidates: int | None = Field(
        None,
        ge=1,
        description=f"evaluations budget (default {DEFAULT_MAX_CANDIDATES}; "
        "none with --multi-fidelity)",
    )
    multi_fidelity: bool = Field(
        False,
        description="screen on perplexity (1/8 of --ppl-tokens), race the survivors on a third "
        "of --limit, then evaluate what is left in full (policies agent, optuna, random, grid)",
    )
    batch: int = Field(
        _SEARCH["batch"].default,
        ge=1,
        description="proposals per iteration, evaluated together on --workers/--cluster "
        "(agent: its K best pushes; optuna: constant liar; grid, random: the next K)",
    )
    max_minutes: float | None = Field(None, gt=0, description="evaluation time budget")
    carbon_budget: float | None = Field(None, gt=0, description="kg CO2eq the search may emit")
    accuracy_drop: float = Field(
        5.0,
        ge=0,
        le=100,
        description="percentage points below the reference's accuracy still acceptable",
    )
    memory_limit: float | None = Field(
        None, gt=0, description="GB of weights, hard limit (default: the profile's)"
    )
    latency_limit: float | None = Field(
        None, gt=0, description="ms per token, hard limit (default: the profile's)"
    )
    weights: str | None = Field(
        None,
        description="scalarization, e.g. accuracy=0.5,energy=0.3,latency=0.2 "
        "(default: the profile's)",
    )
    profile: str | None = Field(
        None, description="edge (<= 1 GB) | cloud | balanced (default weights)"
    )
    patience: int | None = Field(
        None, ge=1, description="stop when the frontier is unchanged for this many evaluations"
    )
    reeval_limit: int | None = Field(
        None,
        ge=1,
        description=f"re-evaluate close calls with up to this many items "
        f"(default {REEVAL_LIMIT_FACTOR} x --limit)",
    )
    thread_id: str | None = Field(None, description="resume (or name) a search thread")
    register_model: bool = Field(
        True,
        description="register the recommended candidate in the MLflow model registry",
        json_schema_extra={"flag": "--no-register"},
    )
    llm: str | None = Field(
        None,
        description="policy llm: local:smollm2 (or local:<.gguf or model folder>), "
        "provider:model or python:pkg.module:factory",
    )

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        from ecocompress.agents.policies import POLICIES

        return _one_of("policy", v, POLICIES)

    @field_validator("profile")
    @classmethod
    def _profile(cls, v: str | None) -> str | None:
        from ecocompress.metrics.recommend import PROFILES

        return v if v is None else _one_of("profile", v, tuple(PROFILES))

    @field_validator("weights")
    @classmethod
    def _weights(cls, v: str | None) -> str | None:
        from ecocompress.metrics.recommend import parse_weights

        if v is not None:
            parse_weights(v)  # raises a one-line UserError on a bad term
        return v

    @model_validator(mode="after")
    def _llm(self) -> SearchParams:
        if self.policy == "llm" and not self.llm:
            raise ValueError(
                "policy llm needs --llm: local:smollm2, provider:model or python:pkg.module:factory"
            )
        if self.policy == "llm" and self.multi_fidelity:
            raise ValueError("--multi-fidelity works with policies agent, optuna, random, grid")
        return self


STUDIES = ("rq1", "rq2", "rq3", "rq4")
RQ1_POLICIES = ("agent", "optuna", "random", "grid")


class StudyParams(Spec):
    """The research-question reports of ``ecocompress study``."""

    which: str = Field(description=" | ".join(STUDIES), json_schema_extra={"positional": True})
    policies: tuple[str, ...] = Field(RQ1_POLICIES, description="rq1: the policies compared")
    seeds: int = Field(1, ge=1, description="rq1: seeds of random and optuna")
    replay: str | None = Field(None, description="rq1: replay on a recorded grid JSON instead")

    @field_validator("which")
    @classmethod
    def _which(cls, v: str) -> str:
        return _one_of("study", v, STUDIES)

    @field_validator("replay")
    @classmethod
    def _replay(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).is_file():
            raise ValueError(f"--replay {v}: no such file")
        return v
