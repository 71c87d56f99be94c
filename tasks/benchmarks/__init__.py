"""Benchmark registry: every benchmark is a ``Benchmark`` (tasks/benchmarks/base.py).

The curated benchmarks (one module each, tuned settings) and ``perplexity`` are declared
here; any other name is an lm-eval task or group, declared from its YAML on first use
(``lm_eval_tasks``).
"""

from __future__ import annotations

from ecocompress.tasks.benchmarks import (
    bbh,
    commonsenseqa,
    gsm8k,
    humaneval,
    perplexity,
    truthfulqa,
)
from ecocompress.tasks.benchmarks.base import Benchmark

REGISTRY: dict[str, Benchmark] = {
    m.BENCHMARK.name: m.BENCHMARK
    for m in (gsm8k, truthfulqa, commonsenseqa, bbh, humaneval, perplexity)
}
DEFAULT_BENCHMARKS = ("gsm8k", "truthfulqa", "commonsenseqa", "bbh", "perplexity")


def get_benchmark(name: str, include_path: tuple[str, ...] = ()) -> Benchmark:
    """The declaration of benchmark ``name``: curated, or an lm-eval task or group.

    Raises:
        UserError: a name neither curated nor known to lm-eval (with the closest names).
    """
    if name in REGISTRY:
        return REGISTRY[name]
    from ecocompress.tasks.benchmarks.lm_eval_tasks import lm_eval_benchmark

    return lm_eval_benchmark(name, include_path)
