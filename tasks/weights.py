"""Bytes of a checkpoint's weights, read from its safetensors headers (no model load).

The reference size a compression ratio divides by: each unique tensor once, an output
head tied to its embedding counted once (``tie_word_embeddings``, else the config class's
default).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.model_files import read_config

_DTYPE_BYTES = {
    **dict.fromkeys(("F64", "I64", "U64"), 8),
    **dict.fromkeys(("F32", "I32", "U32"), 4),
    **dict.fromkeys(("F16", "BF16", "I16", "U16"), 2),
    **dict.fromkeys(("I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"), 1),
}


def _safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")  # u64 little-endian header length
        return json.loads(f.read(n))


def _ties_embeddings(folder: Path, cfg: dict[str, Any]) -> bool:
    """Whether the model in ``folder`` ties its output head to its input embedding.

    ``config.json``'s ``tie_word_embeddings`` (top level, then ``text_config``); when it says
    nothing, the default of its config class (True for Gemma, False for Llama or Mistral);
    False when transformers does not know the config (the file's tensors are then counted).
    """
    for scope in (cfg, cfg.get("text_config") or {}):
        if "tie_word_embeddings" in scope:
            return bool(scope["tie_word_embeddings"])
    from transformers import AutoConfig

    try:
        text = AutoConfig.from_pretrained(folder).get_text_config()
    except (ValueError, KeyError, OSError):  # no or unknown model_type
        return False
    return bool(text.tie_word_embeddings)


def weight_bytes(folder: Path) -> int:
    """Bytes of the unique tensors stored in ``folder``'s safetensors files (no model load).

    An output head stored next to the embedding it is tied to is counted once.
    """
    cfg = read_config(folder)
    sizes: dict[str, int] = {}
    for f in sorted(folder.glob("*.safetensors")):
        for name, meta in _safetensors_header(f).items():
            if name == "__metadata__":
                continue
            numel = 1
            for d in meta["shape"]:
                numel *= d
            sizes[name] = numel * _DTYPE_BYTES[meta["dtype"]]
    if not sizes:
        raise UserError(
            f"no *.safetensors weights in {folder}: only safetensors checkpoints are supported"
        )
    heads = [n for n in sizes if n.endswith("lm_head.weight")]
    embedded = any(n.endswith("embed_tokens.weight") for n in sizes)
    if heads and embedded and _ties_embeddings(folder, cfg):
        sizes = {n: b for n, b in sizes.items() if n not in heads}
    return sum(sizes.values())


def config_dtype(folder: Path) -> str:
    """The checkpoint's dtype as ``config.json`` gives it (``float32`` when silent)."""
    cfg = read_config(folder)
    dt = cfg.get("dtype") or cfg.get("torch_dtype") or cfg.get("text_config", {}).get("dtype")
    return str(dt) if dt else "float32"
