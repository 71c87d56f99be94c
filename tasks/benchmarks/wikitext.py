"""WikiText-2 raw: the one reader of its text, for perplexity and for Wanda's calibration.

Online the text comes from the Hub's ``wikitext-2-raw-v1`` (test split for perplexity,
train split for calibration). Offline only the test split is at hand,
``<data_dir>/wikitext2/wiki.test.raw.gz`` (the same 2891 non-empty lines, newlines
normalised to ``\\n``); perplexity and calibration then split its tokens between them
(``tasks.calibration``).
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Literal

from ecocompress.tasks.errors import UserError

WIKITEXT_TEST = Path("wikitext2") / "wiki.test.raw.gz"


def wikitext2_text(
    data_dir: Path | None, split: Literal["train", "test"], purpose: str
) -> tuple[str, str]:
    """The raw text of a WikiText-2 split and where it came from.

    Args:
        data_dir: the benchmark data folder (only the test split is there), or ``None``
            to read the Hub.
        split: ``test`` (perplexity) or ``train`` (calibration; Hub only).
        purpose: what needs the text, for error messages (``perplexity``, ``Wanda
            calibration``).

    Returns:
        ``(text, source)``: ``hub:wikitext/wikitext-2-raw-v1:<split>`` or ``local:<file>``.

    Raises:
        UserError: the Hub is offline and there is no data dir; the file is missing,
            unreadable or empty.
    """
    if data_dir is None:
        import huggingface_hub.constants as hc

        if hc.HF_HUB_OFFLINE:
            raise UserError(
                f"{purpose} needs WikiText-2: pass --data-dir (the Hub is offline, HF_HUB_OFFLINE=1)"
            )
        from datasets import load_dataset

        rows = load_dataset("wikitext", "wikitext-2-raw-v1", split=split)["text"]
        # the test text drops whitespace-only rows, as the local file does
        text = "".join(r for r in rows if r.strip()) if split == "test" else "".join(rows)
        return text, f"hub:wikitext/wikitext-2-raw-v1:{split}"
    path = Path(data_dir) / WIKITEXT_TEST
    if not path.is_file():
        raise UserError(f"{purpose} text not found: {path} (WikiText-2 raw test split, gzip)")
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:  # universal newlines: CRLF -> \n
            text = f.read()
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UserError(f"{purpose} text {path} is unreadable: {exc}") from None
    if not text.strip():
        raise UserError(f"{purpose} text {path} is empty")
    return text, f"local:{path.resolve()}"
