"""Objectives: which metric a Pareto search optimises and in which direction.

An objective is a metric name from the results table plus ``max`` or ``min``. Metric
names are the columns every candidate row carries (see ``KNOWN_METRICS``),
``accuracy/<benchmark>`` for a single benchmark's score, and ``perplexity/<corpus>`` for
a token-level perplexity benchmark (``perplexity/wikitext2``).

Scores are measured on a sample of items or tokens, so they carry a standard error
(``stderr_column``); costs are taken as measured.
"""

from __future__ import annotations

import difflib
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import ACCURACY_BENCHMARKS, BENCHMARKS

Direction = Literal["max", "min"]


class Status(str, Enum):
    """A results row's status. Only ``ok`` rows take part in the Pareto step."""

    OK = "ok"
    FAILED = "failed"  # the candidate could not be built or evaluated (its reason is kept)
    ELIMINATED = "eliminated"  # a multi-fidelity race stopped it (``eliminated_at_rung``)

    def __str__(self) -> str:
        return self.value


# The benchmark ``perplexity`` (tasks.specs) is token-level perplexity on WikiText-2, not
# an accuracy. Its row columns: ``perplexity/wikitext2`` (exp of the mean token negative
# log-likelihood, >= 1, lower is better), ``perplexity_ci_low/wikitext2`` and
# ``perplexity_ci_high/wikitext2`` (its 95 % confidence interval) and
# ``log_perplexity_stderr/wikitext2`` (standard error of the mean token NLL in nats, i.e.
# of log(perplexity)).
PERPLEXITY_BENCHMARKS: tuple[str, ...] = ("perplexity",)
PERPLEXITY_METRICS: tuple[str, ...] = ("perplexity/wikitext2",)

# Each metric's natural direction, defined once: higher is better for scores and
# throughput, lower for perplexity and every cost.
DEFAULT_DIRECTIONS: dict[str, Direction] = {
    "accuracy": "max",
    **dict.fromkeys(PERPLEXITY_METRICS, "min"),
    "latency_ms": "min",  # median ms per generated token, batch 1
    "throughput_tps": "max",  # generated tokens per second
    "memory_gb": "min",  # bytes of the weights held, GB
    "peak_rss_gb": "min",  # sampled peak resident set size, GB
    "energy_kwh": "min",
    "co2_kg": "min",
    "compression_ratio": "max",  # reference weight bytes / candidate weight bytes
    "sparsity": "max",  # fraction of zeroed Linear weights
}
KNOWN_METRICS: tuple[str, ...] = tuple(DEFAULT_DIRECTIONS) + tuple(
    f"accuracy/{b}" for b in BENCHMARKS if b not in PERPLEXITY_BENCHMARKS
)
# Columns that are costs: a valid measurement is never negative. Perplexity is a score,
# not a cost (and is >= 1, checked in metrics.validation).
COST_METRICS: tuple[str, ...] = (
    "latency_ms",
    "throughput_tps",
    "memory_gb",
    "peak_rss_gb",
    "energy_kwh",
    "co2_kg",
    "compression_ratio",
)


def stderr_column(name: str) -> str | None:
    """The column holding the standard error of metric ``name``; None for exact metrics.

    ``accuracy`` -> ``accuracy_stderr`` and ``accuracy/<b>`` -> ``accuracy_stderr/<b>``
    (lm-eval's standard error of the mean item score, in accuracy units);
    ``perplexity/<b>`` -> ``log_perplexity_stderr/<b>`` (standard error of the mean token
    NLL in nats, so it applies to log(perplexity), see ``is_log_scale``). Costs are taken
    as measured and have none.
    """
    if name == "accuracy":
        return "accuracy_stderr"
    kind, sep, bench = name.partition("/")
    if sep and kind == "accuracy":
        return f"accuracy_stderr/{bench}"
    if sep and kind == "perplexity":
        return f"log_perplexity_stderr/{bench}"
    return None


def is_log_scale(name: str) -> bool:
    """True when the standard error of ``name`` is that of log(value) (perplexities)."""
    return name.startswith("perplexity/")


def ci_columns(name: str) -> tuple[str, str] | None:
    """``(low, high)`` 95 % confidence-interval columns of a perplexity metric, else None."""
    kind, sep, bench = name.partition("/")
    if sep and kind == "perplexity":
        return f"perplexity_ci_low/{bench}", f"perplexity_ci_high/{bench}"
    return None


class Objective(BaseModel):
    """One objective of the search: a results-table column and its direction."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    direction: Direction

    def __str__(self) -> str:
        return f"{self.name}:{self.direction}"


DEFAULT_OBJECTIVES: tuple[Objective, ...] = (
    Objective(name="accuracy", direction="max"),
    Objective(name="latency_ms", direction="min"),
    Objective(name="memory_gb", direction="min"),
    Objective(name="energy_kwh", direction="min"),
)


def _check_name(name: str) -> None:
    if name in KNOWN_METRICS:
        return
    close = difflib.get_close_matches(name, KNOWN_METRICS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown objective {name!r}: allowed {', '.join(KNOWN_METRICS)}{hint}")


def parse_objectives(text: str) -> list[Objective]:
    """Parse ``"accuracy:max,latency_ms:min"`` into objectives.

    A term without ``:direction`` takes the metric's natural direction
    (``DEFAULT_DIRECTIONS``; ``accuracy/<b>`` is ``max``, ``perplexity/<b>`` is ``min``).

    Args:
        text: comma-separated ``name[:max|min]`` terms.

    Returns:
        The objectives, in the order given.

    Raises:
        UserError: empty list, unknown metric name (with a suggestion), a direction
            other than ``max``/``min``, or the same metric twice.
    """
    terms = [t.strip() for t in text.split(",") if t.strip()]
    if not terms:
        raise UserError(f"objectives {text!r} is empty: give e.g. 'accuracy:max,latency_ms:min'")
    out: list[Objective] = []
    for term in terms:
        name, sep, direction = (p.strip() for p in term.partition(":"))
        _check_name(name)
        if not sep:
            direction = DEFAULT_DIRECTIONS.get(name, "max")
        if direction not in ("max", "min"):
            raise UserError(
                f"objective {term!r} has direction {direction!r}: allowed 'max' or 'min'"
            )
        if any(o.name == name for o in out):
            raise UserError(f"objective {name!r} is given twice in {text!r}")
        out.append(Objective(name=name, direction=direction))  # type: ignore[arg-type]
    return out


def default_objectives(benchmarks: tuple[str, ...]) -> str:
    """The default objectives for what the benchmarks measure: accuracy when an accuracy
    benchmark runs, perplexity when WikiText-2 perplexity runs, then the costs."""
    quality = []
    if any(b in ACCURACY_BENCHMARKS for b in benchmarks):
        quality.append("accuracy:max")
    if "perplexity" in benchmarks:
        quality.append("perplexity/wikitext2:min")
    return ",".join([*quality, "latency_ms:min,memory_gb:min,energy_kwh:min"])
