"""A deterministic stand-in for the pipeline in policy and graph unit tests: metrics are a
fixed, documented function of the candidate (not measurements; the real pipeline is
exercised in tests/flows/test_optimize.py)."""

from __future__ import annotations

from typing import Any

from ecocompress.agents.space import Space
from ecocompress.tasks.specs import CandidateSpec

SPACE = Space(
    bits=(16, 8, 4),
    prune=("none", "magnitude", "wanda"),
    sparsity=(0.25, 0.5),
    pattern=("unstructured", "2:4", "4:8"),
)

BITS_LOSS = {16: 0.0, 8: 0.005, 4: 0.03}
MEMORY = {16: 0.54, 8: 0.44, 4: 0.39}
LATENCY = {16: 20.0, 8: 60.0, 4: 35.0}


def metrics(c: CandidateSpec) -> dict[str, float]:
    s = c.prune.sparsity if c.prune.method != "none" else 0.0
    loss = BITS_LOSS[c.quant.bits] + (0.4 if c.prune.method == "magnitude" else 0.2) * s
    if c.prune.nm is not None:
        loss += 0.05 if c.prune.nm == (2, 4) else 0.03
    lat = LATENCY[c.quant.bits] * (1 - 0.3 * s if c.prune.nm else 1.0)
    return {
        "accuracy": round(0.5 - loss, 4),
        "accuracy_stderr": 0.01,
        "memory_gb": MEMORY[c.quant.bits],
        "latency_ms": lat,
        "energy_kwh": lat * 1e-5,
        "co2_kg": lat * 4e-6,
    }


def observe(p: dict[str, Any], index: int = 0, **extra: Any) -> dict[str, Any]:
    c = CandidateSpec.model_validate_json(p["key"])
    return {
        "key": p["key"],
        "candidate": c.label,
        "limit": p.get("limit"),
        "status": "ok",
        "wall_s": 60.0,
        "emitted_co2_kg": 0.001,
        **metrics(c),
        **extra,
    }
