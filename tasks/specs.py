"""Typed specs: the contract between the CLI, the flows, the agent and the tasks.

Every spec is a frozen pydantic v2 model with ``extra="forbid"``; each default is
defined here and nowhere else. ``canonical()`` gives the JSON that cache keys and
lineage ids hash, so two specs that mean the same thing hash the same.
"""

from __future__ import annotations

import itertools
import json
import re
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ecocompress.tasks.benchmarks import REGISTRY

PRUNE_METHODS = ("none", "magnitude", "wanda")
BITS = (32, 16, 8, 4)
QUANT_BACKENDS = ("bitsandbytes", "torchao")
DEFAULT_QUANT_BACKEND = "bitsandbytes"  # for 8 and 4 bits; 32 and 16 use none
_NM = re.compile(r"^(\d+):(\d+)$")
_TASK_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Spec(BaseModel):
    """Base for all specs: frozen, no unknown fields, canonical JSON."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def canonical(self) -> str:
        """Sorted, compact JSON of every field (defaults included)."""
        return json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))


class CalibrationSpec(Spec):
    """Calibration text for Wanda: ``n_samples`` windows of ``seq_len`` tokens."""

    dataset: Literal["wikitext2"] = "wikitext2"
    n_samples: int = Field(16, ge=1, le=1024)
    seq_len: int = Field(64, ge=8, le=8192)
    seed: int = 0


class PruneSpec(Spec):
    """Which weights of the decoder's Linear layers to zero.

    ``pattern`` is ``unstructured`` or ``N:M`` (keep N of every M consecutive input
    weights). For N:M the sparsity is implied by the pattern, ``1 - N/M``.
    """

    method: Literal["none", "magnitude", "wanda"] = "none"
    sparsity: float = 0.0
    pattern: str = "unstructured"
    calibration: CalibrationSpec = CalibrationSpec()

    @field_validator("method", mode="before")
    @classmethod
    def _method(cls, v: object) -> object:
        if isinstance(v, str) and v not in PRUNE_METHODS:
            raise ValueError(f"prune method {v!r} is not one of {', '.join(PRUNE_METHODS)}")
        return v

    @field_validator("sparsity")
    @classmethod
    def _sparsity(cls, v: float) -> float:
        if not (0.0 <= v <= 0.9) or v != v:
            raise ValueError(f"sparsity {v} is out of range: allowed 0 to 0.9")
        return round(float(v), 6)

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        if v == "unstructured":
            return v
        m = _NM.match(v)
        if not m:
            raise ValueError(
                f"pattern {v!r} is malformed: use 'unstructured' or N:M such as 2:4 or 4:8"
            )
        n, mm = int(m.group(1)), int(m.group(2))
        if not (0 < n < mm):
            raise ValueError(f"pattern {v!r} is malformed: N:M needs 0 < N < M (e.g. 2:4, 4:8)")
        return v

    @model_validator(mode="after")
    def _normalise(self) -> PruneSpec:
        # Canonical form, so equal meanings hash equal: no pruning ignores the other fields,
        # an N:M pattern fixes the sparsity, only Wanda uses calibration text.
        if self.method == "none":
            fields = {"sparsity": 0.0, "pattern": "unstructured", "calibration": CalibrationSpec()}
        else:
            fields = {}
            if self.pattern != "unstructured":
                n, m = self.nm
                fields["sparsity"] = round(1 - n / m, 6)
            if self.method != "wanda":
                fields["calibration"] = CalibrationSpec()
        for k, v in fields.items():
            object.__setattr__(self, k, v)
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        """``(N, M)`` for an N:M pattern, else ``None``."""
        m = _NM.match(self.pattern)
        return (int(m.group(1)), int(m.group(2))) if m else None

    @property
    def is_noop(self) -> bool:
        return self.method == "none" or (self.sparsity == 0.0 and self.nm is None)


class QuantSpec(Spec):
    """Weight precision: 32 fp32, 16 bf16, 8 LLM.int8 / int8 weight-only, 4 NF4 + double quant."""

    bits: Literal[32, 16, 8, 4] = 16
    backend: Literal["none", "bitsandbytes", "torchao"] = DEFAULT_QUANT_BACKEND

    @field_validator("bits", mode="before")
    @classmethod
    def _bits(cls, v: object) -> object:
        try:
            iv = int(v)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            iv = None
        if iv not in BITS or (isinstance(v, float) and v != iv):
            raise ValueError(f"bits {v!r} is not supported: allowed 32, 16, 8, 4")
        return iv

    @model_validator(mode="after")
    def _normalise(self) -> QuantSpec:
        if self.bits in (32, 16):
            object.__setattr__(self, "backend", "none")
        elif self.backend == "none":
            object.__setattr__(self, "backend", DEFAULT_QUANT_BACKEND)
        if self.backend == "torchao" and self.bits != 8:
            raise ValueError("quant_backend torchao supports bits 8 only (int8 weight-only)")
        return self

    @property
    def dtype_name(self) -> str:
        """Dtype of the non-quantized tensors and the compute dtype."""
        return "float32" if self.bits == 32 else "bfloat16"


class CandidateSpec(Spec):
    """One compression candidate: prune first, then quantize."""

    prune: PruneSpec = PruneSpec()
    quant: QuantSpec = QuantSpec()

    @property
    def label(self) -> str:
        q = {32: "fp32", 16: "bf16"}.get(
            self.quant.bits, f"int{self.quant.bits}-{self.quant.backend}"
        )
        if self.quant.bits == 4:
            q = "nf4-bitsandbytes"
        if self.prune.method == "none":
            return q
        shape = self.prune.pattern if self.prune.nm else f"{self.prune.sparsity:g}"
        return f"{self.prune.method}-{shape}+{q}"

    def flat(self) -> dict[str, object]:
        """Flat params for MLflow and tables."""
        return {
            "bits": self.quant.bits,
            "quant_backend": self.quant.backend,
            "prune": self.prune.method,
            "sparsity": self.prune.sparsity,
            "pattern": self.prune.pattern,
        }


# (backend, bits) pairs that make no candidate, and why.
UNSUPPORTED = {
    ("torchao", 4): "torchao here is int8 weight-only; 4-bit is bitsandbytes NF4",
}


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
        if (qb, b) in UNSUPPORTED:
            continue
        c = CandidateSpec(
            prune=PruneSpec(method=m, sparsity=s, pattern=p), quant=QuantSpec(bits=b, backend=qb)
        )
        seen.setdefault(c.canonical(), c)
    return list(seen.values())


# Perplexity: tokens scored (the budget), tokens per window, new tokens scored per window.
DEFAULT_PPL_TOKENS = 4096
DEFAULT_PPL_WINDOW = 512
DEFAULT_PPL_STRIDE = 256
DEFAULT_BBH_TASKS = ("boolean_expressions", "date_understanding", "sports_understanding")
DEFAULT_BATCH_SIZE = 4
DEFAULT_SEED = 1234
# how lm-eval's requests are scored: its own HFLM path, or tasks/shared_prefix.py (each
# shared prefix computed once); lm-eval stays the default until parity is measured
Evaluator = Literal["lm-eval", "shared-prefix"]
EVALUATORS: tuple[str, ...] = get_args(Evaluator)
DEFAULT_EVALUATOR = "lm-eval"


def check_limit(v: int | None) -> int | None:
    """``limit`` is None (all items) or a positive number of items per (sub)task."""
    if v is not None and v < 1:
        raise ValueError(f"limit {v} must be a positive number of items")
    return v


class EvalSpec(Spec):
    """How one benchmark is evaluated. ``limit`` = items per (sub)task; None = all.

    ``benchmark`` is a curated name (``tasks.benchmarks.REGISTRY``) or an lm-eval task or
    group; the latter is looked up where the run is resolved (``flows.resolve``), not here.
    ``num_fewshot`` ``None`` is the benchmark's default. ``include_path`` (folders of task
    YAMLs) and ``task_data`` (``path[:split]`` of a local data file) apply to lm-eval tasks
    only and are normalised away for the curated ones.

    For ``perplexity``, ``ppl_tokens`` is the token budget and ``ppl_window`` /
    ``ppl_stride`` the sliding window (tasks.perplexity); ``limit``, shots and generation
    settings do not apply and are normalised away (as are the ppl fields elsewhere).
    """

    benchmark: str
    num_fewshot: int | None = None
    include_path: tuple[str, ...] = ()
    task_data: str | None = None
    limit: int | None = None
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=512)
    bbh_tasks: tuple[str, ...] = DEFAULT_BBH_TASKS
    max_gen_toks: int | None = Field(None, ge=1)
    seed: int = DEFAULT_SEED
    ppl_tokens: int = Field(DEFAULT_PPL_TOKENS, ge=1, le=10_000_000)
    ppl_window: int = Field(DEFAULT_PPL_WINDOW, ge=2, le=32_768)
    ppl_stride: int = Field(DEFAULT_PPL_STRIDE, ge=1, le=32_768)
    evaluator: Evaluator = DEFAULT_EVALUATOR

    def canonical(self) -> str:
        """``Spec.canonical``, without ``evaluator`` when it is lm-eval's own: an evaluation
        cached before the setting existed was lm-eval's, and keeps its key."""
        d = self.model_dump(mode="json")
        if d["evaluator"] == DEFAULT_EVALUATOR:
            del d["evaluator"]
        return json.dumps(d, sort_keys=True, separators=(",", ":"))

    @field_validator("benchmark")
    @classmethod
    def _benchmark(cls, v: str) -> str:
        if not _TASK_NAME.match(v):
            raise ValueError(f"benchmark {v!r} is not a task name (letters, digits, '_', '-', '.')")
        return v

    _limit = field_validator("limit")(classmethod(lambda cls, v: check_limit(v)))

    @field_validator("num_fewshot")
    @classmethod
    def _shots(cls, v: int | None) -> int | None:
        if v is not None and v < 0:
            raise ValueError(f"num_fewshot {v} must be >= 0")
        return v

    @model_validator(mode="after")
    def _normalise(self) -> EvalSpec:
        curated = REGISTRY.get(self.benchmark)
        if curated is not None:
            if self.num_fewshot is None:
                object.__setattr__(self, "num_fewshot", curated.default_shots)
            object.__setattr__(self, "include_path", ())
            if self.task_data is not None:
                raise ValueError(
                    f"task_data names {self.benchmark!r}, a curated benchmark that reads its own "
                    "files from the data dir: task_data is for other lm-eval tasks"
                )
        if self.benchmark != "bbh":
            object.__setattr__(self, "bbh_tasks", ())
        if curated is not None and curated.evaluator == "perplexity":
            if self.ppl_stride > self.ppl_window:
                raise ValueError(
                    f"ppl_stride {self.ppl_stride} must not exceed ppl_window {self.ppl_window}"
                )
            # perplexity has its own evaluator (tasks/perplexity.py)
            for k, v in {
                "limit": None,
                "num_fewshot": 0,
                "max_gen_toks": None,
                "evaluator": DEFAULT_EVALUATOR,
            }.items():
                object.__setattr__(self, k, v)
        else:
            for k, v in {
                "ppl_tokens": DEFAULT_PPL_TOKENS,
                "ppl_window": DEFAULT_PPL_WINDOW,
                "ppl_stride": DEFAULT_PPL_STRIDE,
            }.items():
                object.__setattr__(self, k, v)
        return self

    @property
    def screening(self) -> bool:
        """A limited run is a screening run, labelled as such wherever its numbers appear."""
        return self.limit is not None
