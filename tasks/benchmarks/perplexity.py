"""Perplexity: token-level perplexity of WikiText-2 raw test, lower is better.

Scored by our own sliding-window evaluator (``tasks.perplexity``), not by lm-eval: it
scores a token budget with a fixed window and stride, reports a 95 % interval and keeps
the text apart from Wanda's calibration windows (``tasks.calibration``). lm-eval's own
``wikitext`` task (word and byte perplexity of whole documents) is available too, as any
lm-eval task: ``--benchmarks wikitext``.

Logged as ``perplexity/wikitext2`` with ``log_perplexity_stderr/wikitext2`` (stderr of the
mean NLL) and ``perplexity_ci_low/wikitext2``, ``perplexity_ci_high/wikitext2``.
"""

from __future__ import annotations

from ecocompress.tasks.benchmarks.base import Benchmark
from ecocompress.tasks.benchmarks.wikitext import WIKITEXT_TEST

BENCHMARK = Benchmark(
    name="perplexity",
    kind="perplexity",
    metric="perplexity",
    direction="min",
    default_shots=0,
    evaluator="perplexity",
    corpus="wikitext2",
    data_files=(str(WIKITEXT_TEST),),
    notes_local=(
        "offline: only the first half of the test tokens is read; Wanda calibrates on the second",
    ),
)


def ci_columns(column: str) -> tuple[str, str]:
    """The 95 % interval columns logged beside a perplexity column ``perplexity/<corpus>``."""
    corpus = column.partition("/")[2]
    return f"perplexity_ci_low/{corpus}", f"perplexity_ci_high/{corpus}"
