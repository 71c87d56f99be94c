"""The user's settings, each declared once: type, default and help in one pydantic field.

``RunParams`` (what every command evaluates with), ``SpaceParams`` (the candidate axes),
``SearchParams`` and ``StudyParams`` (flows/search_params.py). The CLI's flags are generated
from these fields (flows/flags.py), a YAML spec file is read into them, and
``flows.resolve.resolve`` turns either into the validated specs the flows take, so a
scheduled deployment and a command line mean exactly the same thing.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ecocompress.metrics.types import default_objectives
from ecocompress.tasks.benchmarks import DEFAULT_BENCHMARKS, REGISTRY, get_benchmark
from ecocompress.tasks.benchmarks.base import Benchmark
from ecocompress.tasks.specs import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_BBH_TASKS,
    DEFAULT_EVALUATOR,
    DEFAULT_PPL_STRIDE,
    DEFAULT_PPL_TOKENS,
    DEFAULT_PPL_WINDOW,
    DEFAULT_QUANT_BACKEND,
    DEFAULT_SEED,
    CandidateSpec,
    EvalSpec,
    Evaluator,
    PruneSpec,
    QuantSpec,
    Spec,
    candidate_grid,
    check_limit,
)

DEFAULT_MODEL = "gemma-3-270m"
DEFAULT_COUNTRY = "USA"
# An experiment's artifacts go to $ECOCOMPRESS_HOME/mlartifacts/<name>: one folder name,
# short enough for a file system (255 bytes) and MLflow (500 characters).
EXPERIMENT_NAME_MAX = 200


def check_experiment_name(name: str) -> str:
    """``name`` if it can name an experiment (and its artifact folder), else ValueError."""
    if not name.strip():
        raise ValueError("experiment name is empty")
    if len(name) > EXPERIMENT_NAME_MAX:
        raise ValueError(
            f"experiment name is {len(name)} characters long: at most {EXPERIMENT_NAME_MAX}"
        )
    if "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(
            f"experiment {name!r} must be a plain name, not a path (no '/', '\\', '.' or '..'): "
            "its artifacts are kept under ECOCOMPRESS_HOME"
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise ValueError(f"experiment {name!r} contains control characters")
    return name


def _csv_items(name: str, kind: type, empty_ok: bool = False):
    """A before-validator for comma-list axes: each item converted with ``kind``, or a
    one-line error naming the axis and the item."""

    def check(cls, v: object) -> object:
        if v is None:
            return v
        items = v.split(",") if isinstance(v, str) else list(v)  # type: ignore[call-overload]
        out = []
        for item in items:
            if isinstance(item, str):
                item = item.strip()
                if not item:
                    continue
            try:
                out.append(kind(item))
            except (TypeError, ValueError):
                raise ValueError(f"{name} {item!r} is not a valid {kind.__name__}") from None
        if not out and not empty_ok:
            raise ValueError(f"{name} is empty")
        return tuple(out)

    return field_validator(name, mode="before")(classmethod(check))


class RunParams(Spec):
    """Everything one `evaluate` or `sweep` command needs besides the candidates.

    Each field is declared once here, with its default and its help: the CLI's flags
    (flows/flags.py), YAML spec files and deployments are all read through this model.
    """

    model: str = Field(
        DEFAULT_MODEL,
        description="gemma-3-270m (from PyPI), a Hub id, a local folder, a .gguf file or "
        "models:/<name>/<version> of the MLflow registry",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit)")
    benchmarks: tuple[str, ...] = Field(
        DEFAULT_BENCHMARKS,
        description=f"comma list: {','.join(REGISTRY)}, or any lm-eval task or group "
        "(arc_easy, piqa, hellaswag, winogrande, mmlu, ...; yours with --include-path)",
    )
    include_path: tuple[str, ...] = Field(
        (), description="folders of your own lm-eval task YAMLs (comma list)"
    )
    task_data: dict[str, str] = Field(
        default_factory=dict,
        description="local data of lm-eval tasks, e.g. arc_easy=path/test.jsonl[:split]",
    )
    limit: int | None = Field(
        None, description="items per benchmark (sub)task: a screening run (default: all)"
    )
    num_fewshot: dict[str, int] = Field(
        default_factory=dict, description="override shots, e.g. gsm8k=5,bbh=0"
    )
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=512, description="lm-eval batch size")
    evaluator: Evaluator = Field(
        DEFAULT_EVALUATOR,
        description="lm-eval: its own scoring; shared-prefix: each shared prompt prefix "
        "computed once (log-likelihood requests; tasks/shared_prefix.py)",
    )
    bbh_tasks: tuple[str, ...] = Field(DEFAULT_BBH_TASKS, description="BBH subtasks to run")
    max_gen_toks: int | None = Field(
        None, ge=1, description="cap on generated tokens for generative tasks"
    )
    data_dir: str | None = Field(
        None, description="benchmark files folder (default: ECOCOMPRESS_DATA_DIR, else the Hub)"
    )
    experiment: str | None = Field(None, description="MLflow experiment (default: the model name)")
    country: str = Field(
        DEFAULT_COUNTRY, description="ISO 3166-1 alpha-3 grid for CO2 (codecarbon data)"
    )
    carbon_intensity: float | None = Field(
        None, description="explicit grid intensity in g CO2eq/kWh (instead of --country)"
    )
    objectives: str | None = Field(
        None,
        description="Pareto objectives (default: accuracy:max and perplexity/wikitext2:min when "
        "those benchmarks run, then latency_ms:min,memory_gb:min,energy_kwh:min)",
    )
    allow_code_execution: bool = Field(
        False, description="allow humaneval to run model-written code (sandboxed)"
    )
    seed: int = Field(DEFAULT_SEED, description="lm-eval's seed", json_schema_extra={"cli": False})
    noise_z: float | None = Field(
        None,
        gt=0,
        description="frontier beyond noise: a candidate is dominated only by one better by more "
        "than this many standard errors on accuracy / log perplexity (default: plain Pareto; "
        "optimize uses the search's z)",
    )
    ppl_tokens: int = Field(
        DEFAULT_PPL_TOKENS, ge=1, description="perplexity: WikiText-2 test tokens scored"
    )
    ppl_window: int = Field(DEFAULT_PPL_WINDOW, ge=2, description="perplexity: tokens per window")
    ppl_stride: int = Field(
        DEFAULT_PPL_STRIDE, ge=1, description="perplexity: new tokens scored per window"
    )

    _limit = field_validator("limit")(classmethod(lambda cls, v: check_limit(v)))
    _benchmark_list = _csv_items("benchmarks", str)
    _bbh_list = _csv_items("bbh_tasks", str)
    _include_list = _csv_items("include_path", str, empty_ok=True)

    @field_validator("experiment")
    @classmethod
    def _experiment(cls, v: str | None) -> str | None:
        return v if v is None else check_experiment_name(v)

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

    @field_validator("include_path")
    @classmethod
    def _include(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from ecocompress.tasks.benchmarks.lm_eval_tasks import check_include_path

        return check_include_path(v)

    @model_validator(mode="after")
    def _data_dir(self) -> RunParams:
        if self.data_dir is None and os.environ.get("ECOCOMPRESS_DATA_DIR"):
            object.__setattr__(self, "data_dir", os.environ["ECOCOMPRESS_DATA_DIR"])
        if self.data_dir is not None:
            p = Path(self.data_dir).expanduser().resolve()
            if not p.is_dir():
                raise ValueError(f"data_dir {self.data_dir} does not exist or is not a folder")
            object.__setattr__(self, "data_dir", str(p))
        for flag, names in (("num_fewshot", self.num_fewshot), ("task_data", self.task_data)):
            for b in names:
                if b not in self.benchmarks:
                    raise ValueError(f"{flag} names {b!r}, which is not among the benchmarks run")
        if self.objectives is None:
            object.__setattr__(self, "objectives", default_objectives(self.benches()))
        self._objectives_measured()
        if self.ppl_stride > self.ppl_window:
            raise ValueError(
                f"ppl_stride {self.ppl_stride} must not exceed ppl_window {self.ppl_window}"
            )
        if "humaneval" in self.benchmarks and not self.allow_code_execution:
            raise ValueError(
                "benchmark humaneval executes model-written code: pass --allow-code-execution "
                "to run it (in a bubblewrap sandbox: no network, no host files, time, memory, "
                "disk and process limits)"
            )
        if "humaneval" in self.benchmarks:
            from ecocompress.tasks.sandbox import require_sandbox

            require_sandbox()  # UserError naming what to install, before any server starts
        return self

    def benches(self) -> list[Benchmark]:
        """The declaration of each benchmark run (an lm-eval task's is read from its YAML).

        Raises:
            UserError: a name neither curated nor known to lm-eval, with the closest names.
        """
        return [get_benchmark(b, self.include_path) for b in self.benchmarks]

    def _objectives_measured(self) -> None:
        """Every objective must be a column the benchmarks run will produce (checked before
        any work, not at the Pareto step)."""
        from ecocompress.metrics.types import measured_columns, parse_objectives

        parse_objectives(self.objectives)  # names and directions first
        benches = self.benches()
        produced = measured_columns(benches)
        for term in self.objectives.split(","):
            name = term.partition(":")[0].strip()
            if name == "accuracy" and name not in produced:
                raise ValueError(
                    f"objective {name!r} needs a benchmark scored as a fraction of items, but "
                    f"only {','.join(self.benchmarks)} run"
                )
            _, sep, bench = name.partition("/")
            if sep and name not in produced:
                have = ", ".join(b.column for b in benches)
                raise ValueError(
                    f"objective {name!r} is not measured by --benchmarks "
                    f"{','.join(self.benchmarks)} (they log {have})"
                )

    def eval_specs(self) -> list[EvalSpec]:
        """One EvalSpec per benchmark, in the order asked for."""
        return [
            EvalSpec(
                benchmark=bench.name,
                num_fewshot=self.num_fewshot.get(bench.name, bench.default_shots),
                include_path=self.include_path,
                task_data=self.task_data.get(bench.name),
                limit=self.limit,
                batch_size=self.batch_size,
                evaluator=self.evaluator,
                bbh_tasks=self.bbh_tasks,
                max_gen_toks=self.max_gen_toks,
                seed=self.seed,
                ppl_tokens=self.ppl_tokens,
                ppl_window=self.ppl_window,
                ppl_stride=self.ppl_stride,
            )
            for bench in self.benches()
        ]

    def experiment_name(self) -> str:
        """The MLflow experiment: ``experiment``, else the model's own name (a Hub id's or a
        file's last part, a registered model's name).

        Raises:
            ValueError: the model's name cannot name an experiment.
        """
        if self.experiment:
            return self.experiment
        from ecocompress.tasks.download import MLFLOW_MODEL

        m = MLFLOW_MODEL.match(self.model)
        path = Path(m["name"] if m else self.model)
        name = path.name
        if name in ("", ".", ".."):  # `--model .`: the folder's own name
            name = path.expanduser().resolve().name
        return check_experiment_name(name)

    @property
    def screening(self) -> bool:
        return self.limit is not None


# The space `optimize` and `study` search when an axis is not given: 27 candidates.
SEARCH_SPACE: dict[str, tuple] = {
    "bits": (16, 8, 4),
    "prune": ("none", "magnitude", "wanda"),
    "sparsity": (0.25, 0.5),
    "pattern": ("unstructured", "2:4", "4:8"),
    "quant_backend": (DEFAULT_QUANT_BACKEND,),
}
# Where each axis' single default lives when evaluate/sweep leave it unset: the spec's own.
_AXIS_DEFAULT = {
    "bits": (QuantSpec, "bits"),
    "prune": (PruneSpec, "method"),
    "sparsity": (PruneSpec, "sparsity"),
    "pattern": (PruneSpec, "pattern"),
    "quant_backend": (QuantSpec, "backend"),
}


class SpaceParams(Spec):
    """The candidate axes (comma lists). Unset: the spec's default for ``evaluate`` and
    ``sweep``, ``SEARCH_SPACE`` for ``optimize`` and ``study``."""

    bits: tuple[int, ...] | None = Field(
        None, description="32 (fp32), 16 (bf16), 8 (LLM.int8 / torchao int8), 4 (NF4); e.g. 16,8,4"
    )
    quant_backend: tuple[str, ...] | None = Field(
        None, description="bitsandbytes | torchao (int8 only); e.g. bitsandbytes,torchao"
    )
    prune: tuple[str, ...] | None = Field(
        None, description="none | magnitude | wanda; e.g. none,wanda"
    )
    sparsity: tuple[float, ...] | None = Field(
        None, description="fraction of decoder Linear weights zeroed, 0 to 0.9; e.g. 0.3,0.5"
    )
    pattern: tuple[str, ...] | None = Field(
        None, description="unstructured | N:M; e.g. unstructured,2:4,4:8"
    )

    _bits = _csv_items("bits", int)
    _backend = _csv_items("quant_backend", str)
    _prune = _csv_items("prune", str)
    _sparsity = _csv_items("sparsity", float)
    _pattern = _csv_items("pattern", str)

    def axes(self, search: bool) -> dict[str, list]:
        """Every axis as a list: the given values, else the search space's or the spec's
        default."""
        out: dict[str, list] = {}
        for name in SpaceParams.model_fields:
            given = getattr(self, name)
            if given is not None:
                out[name] = list(given)
            elif search:
                out[name] = list(SEARCH_SPACE[name])
            else:
                spec, field = _AXIS_DEFAULT[name]
                out[name] = [spec.model_fields[field].default]
        return out

    def candidates(self, search: bool) -> list[CandidateSpec]:
        a = self.axes(search)
        return candidate_grid(
            a["bits"], a["prune"], a["sparsity"], a["pattern"], a["quant_backend"]
        )


def _one_of(what: str, v: str, allowed: tuple[str, ...]) -> str:
    """``v`` if allowed, else a one-line error listing the names and the closest one."""
    if v in allowed:
        return v
    import difflib

    close = difflib.get_close_matches(v, allowed, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown {what} {v!r}: allowed {', '.join(allowed)}{hint}")
