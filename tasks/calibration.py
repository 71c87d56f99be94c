"""Calibration text for Wanda: random token windows of WikiText-2 raw.

Online without a data dir the windows come from the Hub's ``wikitext-2-raw-v1`` **train**
split, so calibration never overlaps evaluation text. Offline only the test split is at
hand (``<data_dir>/wikitext2/wiki.test.raw.gz``): the whole text is tokenized and windows
are drawn from its SECOND half by tokens, ``[CALIBRATION_OFFSET_FRACTION * n_tokens,
n_tokens)``. A perplexity benchmark on that file must therefore use only the first half,
tokens ``[0, CALIBRATION_OFFSET_FRACTION * n_tokens)``, with the same tokenizer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecocompress.tasks.benchmarks.wikitext import wikitext2_text
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CalibrationSpec

# Offline: calibration reads the test text's tokens from this fraction on; evaluation the rest.
CALIBRATION_OFFSET_FRACTION = 0.5


def calibration_text(data_dir: Path | None) -> tuple[str, float]:
    """WikiText-2 raw text and the fraction of its tokens before which calibration must not read.

    Args:
        data_dir: the benchmark data folder; ``None`` reads the Hub's train split.

    Returns:
        ``(text, offset_fraction)``: 0.0 for the train split, ``CALIBRATION_OFFSET_FRACTION``
        for the local test split.
    """
    text, _ = wikitext2_text(data_dir, "train" if data_dir is None else "test", "Wanda calibration")
    return text, 0.0 if data_dir is None else CALIBRATION_OFFSET_FRACTION


def calibration_batches(tokenizer: Any, spec: CalibrationSpec, data_dir: Path | None) -> Any:
    """``spec.n_samples`` random windows of ``spec.seq_len`` tokens of WikiText-2.

    Each window starts with the tokenizer's BOS token when it has one (Gemma's activations
    without BOS are atypical), followed by ``seq_len - 1`` consecutive text tokens. Window
    starts are drawn with ``torch.Generator().manual_seed(spec.seed)``.

    Args:
        tokenizer: a Hugging Face tokenizer.
        spec: number, length and seed of the windows.
        data_dir: benchmark data folder (offline), or ``None`` for the Hub's train split.

    Returns:
        A ``torch.LongTensor`` of shape ``[n_samples, seq_len]``.
    """
    import torch

    text, offset = calibration_text(data_dir)
    ids = torch.tensor(
        tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long
    )  # [n_tokens]
    bos = tokenizer.bos_token_id
    body = spec.seq_len - (1 if bos is not None else 0)
    lo = int(offset * ids.numel())
    hi = ids.numel() - body  # last allowed window start (inclusive)
    if hi < lo:
        raise UserError(
            f"calibration text too short for seq_len {spec.seq_len}: {ids.numel() - lo} tokens usable"
        )
    gen = torch.Generator().manual_seed(spec.seed)
    starts = torch.randint(lo, hi + 1, (spec.n_samples,), generator=gen)
    rows = torch.stack([ids[s : s + body] for s in starts.tolist()])  # [n_samples, body]
    if bos is not None:
        rows = torch.cat([torch.full((spec.n_samples, 1), bos, dtype=torch.long), rows], dim=1)
    return rows
