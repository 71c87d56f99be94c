"""The settings a search decides with, stored in the LangGraph checkpoint with its thread.

Derived from the user's settings by ``flows.resolve.search_settings``; ``SearchView``
(agents/policies.py) takes its defaults from here.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from ecocompress.tasks.specs import Spec


class SearchSettings(Spec):
    """Everything a search decides with; stored in the checkpoint with the thread."""

    policy: str = "agent"
    sampler: str = "tpe"
    seed: int = 0
    space: dict[str, list] = Field(default_factory=dict)
    objectives: str  # RunParams.objectives: declared (and defaulted) there
    weights: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0})
    accuracy_drop: float | None = None  # absolute (0.05 = 5 percentage points)
    memory_limit_gb: float | None = None
    latency_limit_ms: float | None = None
    max_candidates: int | None = Field(None, ge=1)
    batch: int = Field(1, ge=1)  # proposals per iteration (one per busy worker)
    max_minutes: float | None = Field(None, gt=0)
    carbon_budget_kg: float | None = Field(None, gt=0)
    # "emitted": CO2 this search emitted (cache hits cost nothing); "attributed": every
    # evaluation counts at its recorded CO2, cached or not (studies comparing budgets)
    carbon_accounting: Literal["emitted", "attributed"] = "emitted"
    patience: int | None = Field(None, ge=1)  # stop when the frontier is unchanged this long
    base_limit: int | None = None
    max_limit: int | None = None  # close calls are re-evaluated up to this many items
    z: float = Field(1.0, gt=0)
    max_llm_attempts: int = Field(2, ge=1)
    # multi-fidelity ladder, cheapest rung first (agents/fidelity.py); None: one fidelity
    fidelities: list[dict[str, Any]] | None = None
