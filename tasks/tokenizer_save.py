"""Save a tokenizer so that loading it back encodes text the same way (GGUF conversion).

A GGUF carries its tokenizer as metadata; transformers builds it with the class of the
model's architecture. Saved and loaded again, a model-specific class may rebuild its own
pipeline (``GemmaTokenizer`` a sentencepiece one) instead of the vocabulary's, so a Gemma
file with a byte-level BPE vocabulary would come back tokenizing differently, silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ecocompress.tasks.errors import UserError

# Text whose ids the saved tokenizer must reproduce: words, digits, punctuation, runs of
# spaces, a newline and non-ASCII characters.
PROBE = (
    "The tower is 324 metres (1,063 ft) tall,\n  about the same height as an 81-storey "
    "building. Ünïcödé — 日本語"
)


def _ids(tok: Any) -> list[int]:
    return list(tok(PROBE)["input_ids"])


def save_tokenizer(tok: Any, folder: Path, source: str) -> None:
    """Save ``tok`` to ``folder``, checked by loading it back.

    When the reloaded tokenizer encodes ``PROBE`` differently, it is saved again as the
    generic fast tokenizer, which loads ``tokenizer.json`` as written.

    Args:
        tok: the tokenizer transformers built (from a GGUF).
        folder: the model folder being written.
        source: the file it came from, for the error message.

    Raises:
        UserError: neither way reproduces ``tok``'s ids.
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    want = _ids(tok)
    before = set(folder.iterdir())
    tok.save_pretrained(folder)
    if _ids(AutoTokenizer.from_pretrained(folder)) == want:
        return
    for f in set(folder.iterdir()) - before:  # vocab.json, merges.txt... would be read first
        f.unlink()
    special = {k: v for k, v in tok.special_tokens_map.items() if isinstance(v, str)}
    generic = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, **special)
    generic.chat_template = getattr(tok, "chat_template", None)
    generic.save_pretrained(folder)
    if _ids(AutoTokenizer.from_pretrained(folder)) != want:
        raise UserError(
            f"{source}: its tokenizer ({type(tok).__name__}) encodes text differently once "
            "saved and loaded again: cannot convert it"
        )
