"""The typed record of one benchmark's evaluation, from the evaluator to MLflow.

``BenchmarkResult.metrics()`` is what a candidate run logs for the benchmark: the primary
metric under its column (``Benchmark.column``, e.g. ``acc_norm/arc_easy``), its standard
error, and the benchmark's companion numbers (perplexity: the 95 % interval).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from ecocompress.tasks.benchmarks.base import Direction, Kind


class BenchmarkResult(BaseModel):
    """One benchmark's score for one model (JSON-serialisable).

    Attributes:
        benchmark: the benchmark's name (``--benchmarks``).
        kind: what kind of benchmark it is (``Benchmark.kind``).
        metric: lm-eval result key ``"<metric>,<filter>"`` (our perplexity: ``perplexity``).
        column: the logged name of ``score`` (``exact_match/gsm8k``).
        stderr_column: the logged name of ``stderr``.
        direction: ``max`` when higher is better.
        unit_score: ``score`` is a fraction of items in [0, 1] (averaged into ``accuracy``).
        score: the primary metric in its own units; for bbh the item-weighted mean over
            ``subtasks``; for perplexity exp(mean token NLL).
        stderr: lm-eval's standard error (bbh: pooled; perplexity: of the mean NLL),
            ``None`` where there is none.
        n_items: items scored (summed over subtasks; perplexity: tokens).
        screening: ``limit`` was set, so the score covers a prefix of the benchmark.
        seconds: wall time of the evaluation.
        subtasks: per subtask (bbh, lm-eval groups) ``{name: {"score", "stderr", "n"}}``.
        results_path: JSON file with the evaluator's full output and per-item records.
        max_gen_toks: generation budget used (``None`` for loglikelihood tasks).
        data_source: ``local:<file or dir>`` or ``hub``.
        notes: caveats on how this number was obtained.
        companions: further logged columns (perplexity: its 95 % interval).
        extra: evaluator settings recorded with the result (perplexity window, NLL).
    """

    model_config = ConfigDict(frozen=True)

    benchmark: str
    kind: Kind
    metric: str
    column: str
    stderr_column: str | None
    direction: Direction
    unit_score: bool
    score: float
    stderr: float | None
    n_items: int
    num_fewshot: int
    limit: int | None
    screening: bool
    seconds: float
    subtasks: dict[str, dict[str, float | int | None]] = {}
    results_path: str
    lm_eval_version: str
    tasks: list[str]
    max_gen_toks: int | None
    data_source: str
    notes: list[str] = []
    companions: dict[str, float] = {}
    extra: dict[str, float | int | str | None] = {}

    def metrics(self) -> dict[str, float | None]:
        """The columns a candidate run logs for this benchmark."""
        out: dict[str, float | None] = {self.column: self.score}
        if self.stderr_column:
            out[self.stderr_column] = self.stderr
        return {**out, **self.companions}
