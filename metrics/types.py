"""Objectives: which metric a Pareto search optimises and in which direction.

An objective is a metric name from the results table plus ``max`` or ``min``. Metric
names are the columns every candidate row carries (see ``KNOWN_METRICS``), and
``accuracy/<benchmark>`` for a single benchmark's score.
"""

from __future__ import annotations

import difflib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tasks.errors import UserError
from tasks.specs import BENCHMARKS

Direction = Literal["max", "min"]

# Each metric's natural direction, defined once: higher is better for scores and
# throughput, lower for every cost.
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
KNOWN_METRICS: tuple[str, ...] = tuple(DEFAULT_DIRECTIONS) + tuple(
    f"accuracy/{b}" for b in BENCHMARKS
)
# Columns that are costs: a valid measurement is never negative.
COST_METRICS: tuple[str, ...] = (
    "latency_ms",
    "throughput_tps",
    "memory_gb",
    "peak_rss_gb",
    "energy_kwh",
    "co2_kg",
    "compression_ratio",
)


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
    (``DEFAULT_DIRECTIONS``; ``accuracy/<b>`` is ``max``).

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
