"""Token-level perplexity on WikiText-2 (raw, test split) with a sliding window.

What is scored
    The text is the ``wikitext-2-raw-v1`` test split: the Hub dataset's rows joined
    (online), or ``<data_dir>/wikitext2/wiki.test.raw.gz`` read as text (offline; the
    same 2891 non-empty lines, newlines normalised to ``\\n``). It is tokenized whole,
    without special tokens. Offline, Wanda's calibration windows are drawn from the SECOND
    half of the same tokens (``tasks.calibration``), so perplexity may read only
    ``[0, CALIBRATION_OFFSET_FRACTION * n_tokens)``: evaluation and calibration text never
    overlap. Online, calibration reads the train split and the whole test split is usable.

The sliding window
    The first ``tokens`` tokens of that text are scored (the token budget), each exactly
    once. Window ``i`` feeds ``[BOS] + ids[i*stride : i*stride + window]`` and scores the
    tokens it adds beyond the previous window: window 0 scores its ``window`` tokens, every
    later one the ``stride`` new tokens at its end, so each scored token (after the first
    window) sees at least ``window - stride`` tokens of context. Only the scored positions'
    logits are computed (``logits_to_keep``), in float32 for the log-softmax.

The numbers
    ``perplexity = exp(mean NLL)`` over the scored tokens. Token losses are correlated, so
    the standard error of the mean NLL is computed over windows (each window's mean NLL a
    unit, weighted by its token count: the ratio estimator), and the 95 % interval is
    ``exp(mean +- 1.96 * se)``. Every window's token count, NLL sum, CPU and wall seconds
    are kept, so a smaller budget aligned on the windows (``window + k * stride``) is an
    exact prefix of a larger one.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from ecocompress.tasks.benchmarks.result import BenchmarkResult
from ecocompress.tasks.benchmarks.wikitext import wikitext2_text
from ecocompress.tasks.calibration import CALIBRATION_OFFSET_FRACTION
from ecocompress.tasks.errors import UserError

Z95 = 1.959963984540054


def wikitext_test_text(data_dir: Path | None) -> tuple[str, float, str]:
    """The WikiText-2 raw test text, the usable fraction of its tokens, and its source.

    Returns:
        ``(text, usable_fraction, source)``: offline the fraction is
        ``CALIBRATION_OFFSET_FRACTION`` (the rest is Wanda's calibration text), online 1.0.
    """
    text, source = wikitext2_text(data_dir, "test", "perplexity")
    return text, 1.0 if data_dir is None else CALIBRATION_OFFSET_FRACTION, source


def evaluation_ids(tokenizer: Any, data_dir: Path | None) -> tuple[Any, str]:
    """Token ids perplexity may read (offline: the first half; see the module docstring)."""
    import torch

    text, fraction, source = wikitext_test_text(data_dir)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    # the same expression as calibration's lower bound, so the two ranges cannot touch
    usable = int(fraction * len(ids)) if fraction < 1.0 else len(ids)
    return torch.tensor(ids[:usable], dtype=torch.long), source


def windows(n_tokens: int, window: int, stride: int) -> list[tuple[int, int, int]]:
    """``(begin, end, n_scored)`` of each window over ``n_tokens`` tokens (end exclusive)."""
    if not (0 < stride <= window):
        raise UserError(f"perplexity stride {stride} must be in 1..window ({window})")
    out, prev_end, begin = [], 0, 0
    while prev_end < n_tokens:
        end = min(begin + window, n_tokens)
        out.append((begin, end, end - prev_end))
        prev_end, begin = end, begin + stride
    return out


def summarise(records: list[dict[str, Any]]) -> dict[str, float]:
    """Perplexity, the stderr of the mean NLL and the 95 % interval from window records.

    With window token counts n_i, NLL sums s_i, N = sum n_i and m = sum s_i / N, the
    ratio-estimator variance of m is ``k / (k - 1) * sum (s_i - m n_i)^2 / N^2`` over the
    k windows (0 when k = 1: one window gives no spread, reported as such).
    """
    n = sum(r["n"] for r in records)
    s = sum(r["nll_sum"] for r in records)
    if n == 0:
        raise UserError("perplexity scored no tokens: check the token budget")
    m = s / n
    k = len(records)
    var = (
        k / (k - 1) * sum((r["nll_sum"] - m * r["n"]) ** 2 for r in records) / n**2
        if k > 1
        else 0.0
    )
    se = math.sqrt(var)
    return {
        "perplexity": math.exp(m),
        "mean_nll": m,
        "nll_stderr": se,
        "ci_low": math.exp(m - Z95 * se),
        "ci_high": math.exp(m + Z95 * se),
        "tokens": n,
        "windows": k,
    }


def score_windows(
    model: Any, ids: Any, bos: int | None, window: int, stride: int
) -> list[dict[str, Any]]:
    """NLL sum, token count, CPU and wall seconds of each window over ``ids`` (one at a time:
    a window of a few hundred tokens already keeps the CPU's cores busy)."""
    import torch
    import torch.nn.functional as F

    device = next(model.parameters()).device
    records = []
    with torch.inference_mode():
        for begin, end, n in windows(int(ids.numel()), window, stride):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            body = ids[begin:end]
            x = body if bos is None else torch.cat([torch.tensor([bos]), body])
            x = x.unsqueeze(0).to(device)
            # positions L-n-1 .. L-2 predict the n scored tokens at L-n .. L-1
            logits = model(input_ids=x, logits_to_keep=n + 1).logits[0, :-1].float()
            target = x[0, -n:]
            nll = F.cross_entropy(logits, target, reduction="sum").item()
            records.append(
                {
                    "begin": begin,
                    "end": end,
                    "n": n,
                    "nll_sum": nll,
                    "cpu_s": time.process_time() - cpu0,
                    "wall_s": time.perf_counter() - wall0,
                }
            )
            if not math.isfinite(nll):
                # a broken model (NaN/inf logits): a failed candidate, not a number to rank
                raise RuntimeError(
                    f"perplexity window {begin}:{end} gave a non-finite NLL ({nll}): "
                    "the model's logits are broken"
                )
    return records


def evaluate_perplexity(
    model: Any, tokenizer: Any, spec: Any, data_dir: Path | None, out_dir: Path
) -> Any:
    """Score ``model``'s perplexity on WikiText-2 test within ``spec.ppl_tokens`` tokens.

    Returns:
        A ``BenchmarkResult`` with ``metric="perplexity"``, ``score`` the
        perplexity, ``stderr`` the standard error of the mean NLL (nats), ``n_items`` the
        tokens scored, and ``extra`` holding the interval and the window settings. The
        per-window records go to ``out_dir/perplexity_wikitext2.json``.

    Raises:
        UserError: missing or unreadable text, or a budget beyond the usable tokens.
    """
    import json

    from ecocompress.tasks.benchmarks.perplexity import BENCHMARK, ci_columns

    ids, source = evaluation_ids(tokenizer, data_dir)
    if spec.ppl_tokens > ids.numel():
        raise UserError(
            f"perplexity token budget {spec.ppl_tokens} exceeds the {ids.numel()} tokens of "
            "WikiText-2 test that do not overlap Wanda's calibration text"
        )
    t0 = time.perf_counter()
    records = score_windows(
        model, ids[: spec.ppl_tokens], tokenizer.bos_token_id, spec.ppl_window, spec.ppl_stride
    )
    seconds = time.perf_counter() - t0
    summary = summarise(records)
    notes = [
        f"perplexity on the first {summary['tokens']} tokens of WikiText-2 test "
        f"(window {spec.ppl_window}, stride {spec.ppl_stride}, BOS prepended to each window); "
        "95 % interval from the spread of per-window NLL"
    ]
    if data_dir is not None:
        notes.extend(BENCHMARK.notes_local)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "perplexity_wikitext2.json"
    settings = {"tokens": spec.ppl_tokens, "window": spec.ppl_window, "stride": spec.ppl_stride}
    path.write_text(
        json.dumps({"summary": summary, "settings": settings, "source": source, "windows": records})
    )
    low, high = ci_columns(BENCHMARK.column)
    return BenchmarkResult(
        benchmark=BENCHMARK.name,
        kind=BENCHMARK.kind,
        metric=BENCHMARK.metric,
        column=BENCHMARK.column,
        stderr_column=BENCHMARK.stderr_column,
        direction=BENCHMARK.direction,
        unit_score=False,
        score=summary["perplexity"],
        stderr=summary["nll_stderr"],
        n_items=summary["tokens"],
        num_fewshot=0,
        limit=None,
        screening=False,
        seconds=round(seconds, 3),
        results_path=str(path),
        lm_eval_version="n/a (ecocompress sliding-window perplexity)",
        tasks=["wikitext2"],
        max_gen_toks=None,
        data_source=source,
        notes=notes,
        companions={low: summary["ci_low"], high: summary["ci_high"]},
        extra={
            "ci_low": summary["ci_low"],
            "ci_high": summary["ci_high"],
            "mean_nll": summary["mean_nll"],
            "windows": summary["windows"],
            **settings,
        },
    )
