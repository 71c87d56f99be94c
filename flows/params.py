"""Run-level parameters of the evaluate and sweep flows, and the candidate grid.

The CLI parses strings into ``RunParams``; flows and deployments take the same model, so
a scheduled deployment and a command line run mean exactly the same thing.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ecocompress.tasks.specs import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BBH_TASKS,
    DEFAULT_BENCHMARKS,
    DEFAULT_PPL_STRIDE,
    DEFAULT_PPL_TOKENS,
    DEFAULT_PPL_WINDOW,
    DEFAULT_SEED,
    CandidateSpec,
    EvalSpec,
    PruneSpec,
    QuantSpec,
    Spec,
    check_limit,
)

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_COUNTRY = "USA"


def default_objectives(benchmarks: tuple[str, ...]) -> str:
    """The default objectives for what the benchmarks measure: accuracy when an accuracy
    benchmark runs, perplexity when WikiText-2 perplexity runs, then the costs."""
    from ecocompress.tasks.specs import ACCURACY_BENCHMARKS

    quality = []
    if any(b in ACCURACY_BENCHMARKS for b in benchmarks):
        quality.append("accuracy:max")
    if "perplexity" in benchmarks:
        quality.append("perplexity/wikitext2:min")
    return ",".join([*quality, "latency_ms:min,memory_gb:min,energy_kwh:min"])


class RunParams(Spec):
    """Everything one `evaluate` or `sweep` command needs besides the candidates."""

    model: str = DEFAULT_MODEL
    revision: str | None = None
    benchmarks: tuple[str, ...] = DEFAULT_BENCHMARKS
    limit: int | None = None
    num_fewshot: dict[str, int] = Field(default_factory=dict)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=512)
    bbh_tasks: tuple[str, ...] = DEFAULT_BBH_TASKS
    max_gen_toks: int | None = Field(None, ge=1)
    data_dir: str | None = None
    experiment: str | None = None
    country: str = DEFAULT_COUNTRY
    carbon_intensity: float | None = None
    objectives: str | None = None  # None: default_objectives(benchmarks)
    allow_code_execution: bool = False
    seed: int = DEFAULT_SEED
    # frontier beyond noise (metrics.pareto.beats_beyond_noise); None: plain Pareto
    noise_z: float | None = Field(None, gt=0)
    ppl_tokens: int = Field(DEFAULT_PPL_TOKENS, ge=1)
    ppl_window: int = Field(DEFAULT_PPL_WINDOW, ge=2)
    ppl_stride: int = Field(DEFAULT_PPL_STRIDE, ge=1)

    _limit = field_validator("limit")(classmethod(lambda cls, v: check_limit(v)))

    @field_validator("carbon_intensity")
    @classmethod
    def _intensity(cls, v: float | None) -> float | None:
        if v is not None and not (v >= 0):
            raise ValueError(f"carbon_intensity {v} must be >= 0 g CO2eq/kWh")
        return v

    @field_validator("benchmarks")
    @classmethod
    def _benchmarks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("benchmarks must name at least one benchmark")
        for b in v:  # EvalSpec owns the list of names and the did-you-mean message
            EvalSpec(benchmark=b)
        return tuple(dict.fromkeys(v))

    @model_validator(mode="after")
    def _data_dir(self) -> RunParams:
        if self.data_dir is None and os.environ.get("ECOCOMPRESS_DATA_DIR"):
            object.__setattr__(self, "data_dir", os.environ["ECOCOMPRESS_DATA_DIR"])
        if self.data_dir is not None:
            p = Path(self.data_dir).expanduser().resolve()
            if not p.is_dir():
                raise ValueError(f"data_dir {self.data_dir} does not exist or is not a folder")
            object.__setattr__(self, "data_dir", str(p))
        for b in self.num_fewshot:
            if b not in self.benchmarks:
                raise ValueError(f"num_fewshot names {b!r}, which is not among the benchmarks run")
        if self.objectives is None:
            object.__setattr__(self, "objectives", default_objectives(self.benchmarks))
        self._objectives_measured()
        if self.ppl_stride > self.ppl_window:
            raise ValueError(
                f"ppl_stride {self.ppl_stride} must not exceed ppl_window {self.ppl_window}"
            )
        if "humaneval" in self.benchmarks and not self.allow_code_execution:
            raise ValueError(
                "benchmark humaneval executes model-written code: pass --allow-code-execution "
                "to run it (sandboxed subprocess, no network, time and memory limits)"
            )
        return self

    def _objectives_measured(self) -> None:
        """Every objective must be a column the benchmarks run will produce (checked before
        any work, not at the Pareto step)."""
        from ecocompress.tasks.specs import ACCURACY_BENCHMARKS

        for term in self.objectives.split(","):
            name = term.partition(":")[0].strip()
            if name == "accuracy" and not any(b in ACCURACY_BENCHMARKS for b in self.benchmarks):
                raise ValueError(
                    f"objective {name!r} needs an accuracy benchmark, but only "
                    f"{','.join(self.benchmarks)} run"
                )
            kind, sep, rest = name.partition("/")
            bench = "perplexity" if kind == "perplexity" else rest
            if sep and kind in ("accuracy", "perplexity") and bench not in self.benchmarks:
                raise ValueError(
                    f"objective {name!r} needs benchmark {bench!r}, which is not among "
                    f"--benchmarks {','.join(self.benchmarks)}"
                )

    def eval_specs(self) -> list[EvalSpec]:
        """One EvalSpec per benchmark, in the order asked for."""
        return [
            EvalSpec(
                benchmark=b,
                num_fewshot=self.num_fewshot.get(b),
                limit=self.limit,
                batch_size=self.batch_size,
                bbh_tasks=self.bbh_tasks,
                max_gen_toks=self.max_gen_toks,
                seed=self.seed,
                ppl_tokens=self.ppl_tokens,
                ppl_window=self.ppl_window,
                ppl_stride=self.ppl_stride,
            )
            for b in self.benchmarks
        ]

    @property
    def screening(self) -> bool:
        return self.limit is not None


def candidate_grid(
    bits: list[int],
    prune: list[str],
    sparsity: list[float],
    pattern: list[str],
    quant_backend: list[str],
) -> list[CandidateSpec]:
    """The cross product of the axes, deduplicated by canonical spec, order kept.

    ``prune none`` ignores sparsity and pattern, an N:M pattern fixes the sparsity and
    bits 32/16 ignore the backend, so combinations that mean the same candidate collapse.
    """
    seen: dict[str, CandidateSpec] = {}
    for b, m, s, p, qb in itertools.product(bits, prune, sparsity, pattern, quant_backend):
        if qb == "torchao" and b == 4:
            continue  # torchao here is int8 weight-only; 4-bit is bitsandbytes NF4
        c = CandidateSpec(
            prune=PruneSpec(method=m, sparsity=s, pattern=p), quant=QuantSpec(bits=b, backend=qb)
        )
        seen.setdefault(c.canonical(), c)
    return list(seen.values())
