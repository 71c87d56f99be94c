"""Benchmark registry: one module per benchmark, each declaring a ``Benchmark``."""

from __future__ import annotations

from ecocompress.tasks.benchmarks import bbh, commonsenseqa, gsm8k, humaneval, truthfulqa
from ecocompress.tasks.benchmarks.base import Benchmark
from ecocompress.tasks.errors import UserError

REGISTRY: dict[str, Benchmark] = {
    m.BENCHMARK.name: m.BENCHMARK for m in (gsm8k, truthfulqa, commonsenseqa, bbh, humaneval)
}


def get_benchmark(name: str) -> Benchmark:
    """The declaration of benchmark ``name``; ``UserError`` with a did-you-mean if unknown."""
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise UserError(f"unknown benchmark {name!r}: allowed {', '.join(REGISTRY)}{hint}")
    return REGISTRY[name]
