"""Objectives: which metric a Pareto search optimises and in which direction.

An objective is a metric name from the results table plus ``max`` or ``min``. Metric
names are the columns every candidate row carries: the costs (``DEFAULT_DIRECTIONS``),
``accuracy`` (the mean of the benchmarks scored as a fraction of items) and each
benchmark's own primary metric, ``<metric>/<benchmark>`` (``exact_match/gsm8k``,
``acc_norm/arc_easy``, ``perplexity/wikitext2``), named in ``tasks.benchmarks.base``.

Scores are measured on a sample of items or tokens, so they carry a standard error
(``stderr_column``); costs are taken as measured.
"""

from __future__ import annotations

import difflib
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict

from ecocompress.tasks.benchmarks import REGISTRY
from ecocompress.tasks.benchmarks.base import (
    LOG_SCALE,
    METRIC_DIRECTIONS,
    UNIT_SCORES,
    Benchmark,
)
from ecocompress.tasks.benchmarks.base import stderr_column as _score_stderr
from ecocompress.tasks.benchmarks.perplexity import ci_columns as _ppl_ci
from ecocompress.tasks.errors import UserError

Direction = Literal["max", "min"]


class Status(str, Enum):
    """A results row's status. Only ``ok`` rows take part in the Pareto step."""

    OK = "ok"
    FAILED = "failed"  # the candidate could not be built or evaluated (its reason is kept)
    ELIMINATED = "eliminated"  # a multi-fidelity race stopped it (``eliminated_at_rung``)

    def __str__(self) -> str:
        return self.value


# Each metric's natural direction, defined once: higher is better for scores and
# throughput, lower for every cost (a benchmark's own metric: ``METRIC_DIRECTIONS``).
DEFAULT_DIRECTIONS: dict[str, Direction] = {
    "accuracy": "max",
    "latency_ms": "min",  # median ms per generated token, batch 1
    "throughput_tps": "max",  # generated tokens per second
    "memory_gb": "min",  # bytes of the weights held, GB
    "peak_rss_gb": "min",  # sampled peak resident set size, GB
    "energy_kwh": "min",
    "co2_kg": "min",
    "compression_ratio": "max",  # reference weight bytes / candidate weight bytes
    "sparsity": "max",  # fraction of zeroed Linear weights
}
# Named in messages (did-you-mean); any ``<metric>/<benchmark>`` of a known metric is valid.
KNOWN_METRICS: tuple[str, ...] = tuple(DEFAULT_DIRECTIONS) + tuple(
    b.column for b in REGISTRY.values()
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


def score_metric(name: str) -> str | None:
    """The metric of a per-benchmark score column ``<metric>/<benchmark>``, else None."""
    metric, sep, bench = name.partition("/")
    return metric if sep and bench and metric in METRIC_DIRECTIONS else None


def is_score(name: str) -> bool:
    """``accuracy`` or a benchmark's score column (not a cost, not a stderr)."""
    return name == "accuracy" or score_metric(name) is not None


def is_unit_score(name: str) -> bool:
    """A score that is a fraction of items in [0, 1]."""
    return name == "accuracy" or score_metric(name) in UNIT_SCORES


def stderr_column(name: str) -> str | None:
    """The column holding the standard error of metric ``name``; None for exact metrics.

    ``accuracy`` -> ``accuracy_stderr``; a benchmark's score ``<metric>/<b>`` ->
    ``<metric>_stderr/<b>`` (lm-eval's standard error of the mean item score), and
    ``perplexity/<b>`` -> ``log_perplexity_stderr/<b>`` (standard error of the mean token
    NLL in nats, so it applies to log(perplexity), see ``is_log_scale``). Costs are taken
    as measured and have none.
    """
    if name == "accuracy":
        return "accuracy_stderr"
    return _score_stderr(name) if score_metric(name) else None


def is_log_scale(name: str) -> bool:
    """True when the standard error of ``name`` is that of log(value) (our perplexity)."""
    return score_metric(name) in LOG_SCALE


def ci_columns(name: str) -> tuple[str, str] | None:
    """``(low, high)`` 95 % confidence-interval columns of a perplexity metric, else None."""
    return _ppl_ci(name) if score_metric(name) == "perplexity" else None


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


def _check_name(name: str, directed: bool) -> None:
    if name in DEFAULT_DIRECTIONS or score_metric(name):
        return
    kind, sep, bench = name.partition("/")
    if kind == "accuracy" and sep:
        new = REGISTRY[bench].column if bench in REGISTRY else f"acc/{bench}"
        raise UserError(
            f"objective {name!r}: benchmarks are logged under their own metric now, e.g. {new!r}"
        )
    if sep and bench and directed:  # an lm-eval metric not in METRIC_DIRECTIONS
        return
    close = difflib.get_close_matches(name, KNOWN_METRICS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise UserError(f"unknown objective {name!r}: allowed {', '.join(KNOWN_METRICS)}{hint}")


def parse_objectives(text: str) -> list[Objective]:
    """Parse ``"accuracy:max,latency_ms:min"`` into objectives.

    A term without ``:direction`` takes the metric's natural direction
    (``DEFAULT_DIRECTIONS``, ``METRIC_DIRECTIONS``: ``acc/<b>`` is ``max``,
    ``perplexity/<b>`` is ``min``). A ``<metric>/<b>`` of a metric not known there needs
    its direction.

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
        _check_name(name, bool(sep))
        if not sep:
            direction = DEFAULT_DIRECTIONS.get(name) or METRIC_DIRECTIONS.get(
                name.partition("/")[0], "max"
            )
        if direction not in ("max", "min"):
            raise UserError(
                f"objective {term!r} has direction {direction!r}: allowed 'max' or 'min'"
            )
        if any(o.name == name for o in out):
            raise UserError(f"objective {name!r} is given twice in {text!r}")
        out.append(Objective(name=name, direction=direction))  # type: ignore[arg-type]
    return out


def measured_columns(benches: list[Benchmark]) -> set[str]:
    """The score columns a run of ``benches`` produces: each benchmark's own metric, and
    ``accuracy`` when one is scored as a fraction of items."""
    cols = {b.column for b in benches}
    return cols | ({"accuracy"} if any(b.unit_score for b in benches) else set())


def default_objectives(benches: list[Benchmark]) -> str:
    """The default objectives for what the benchmarks measure: ``accuracy`` (the mean of
    the scores that are fractions of items) when there are some, each other benchmark's
    own metric in its direction (``perplexity/wikitext2:min``), then the costs."""
    quality = ["accuracy:max"] if any(b.unit_score for b in benches) else []
    quality += [f"{b.column}:{b.direction}" for b in benches if not b.unit_score]
    return ",".join([*quality, "latency_ms:min,memory_gb:min,energy_kwh:min"])
