"""A tiny Llama GGUF written with the ``gguf`` package's ``GGUFWriter``, as llama.cpp writes one.

``write_llama_gguf`` takes the tiny Llama folder (``build_tiny_model(..., family="llama")``)
and writes what ``convert_hf_to_gguf.py`` would: the ``llama.*`` hyper-parameters, the
byte-level BPE tokenizer as ``tokenizer.ggml.*`` (model ``gpt2``: tokens, types, merges,
special ids), and the tensors under llama.cpp's names (``token_embd``, ``blk.N.attn_q``, ...)
with q and k rows permuted the way llama.cpp permutes them for its rotary layout. Norms and
embeddings are stored F32; the decoder Linears F32 or Q8_0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def llama_permute(w: Any, n_head: int) -> Any:
    """llama.cpp's q/k row permutation (``LlamaModel.permute``): per head, interleave the two
    rotary halves. ``w``: ``[n_head * head_dim, in]``; ``n_head`` is the kv head count for k."""
    return (
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def llama_unpermute(w: Any, n_head: int) -> Any:
    """The inverse of ``llama_permute``, written independently of transformers' loader."""
    return (
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2)
        .reshape(w.shape)
    )


def _tokenizer_fields(folder: Path) -> dict[str, Any]:
    """Tokens in id order, token types, merges and special ids from ``tokenizer.json``."""
    from gguf import TokenType

    tj = json.loads((folder / "tokenizer.json").read_text())
    vocab = {**tj["model"]["vocab"], **{t["content"]: t["id"] for t in tj["added_tokens"]}}
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    special = {t["content"] for t in tj["added_tokens"] if t["special"]}
    types = [TokenType.CONTROL if t in special else TokenType.NORMAL for t in tokens]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    return {"tokens": tokens, "types": types, "merges": merges, "ids": vocab}


def write_llama_gguf(folder: Path, out: Path, linear_type: str = "Q8_0") -> dict[str, Any]:
    """Write the tiny Llama in ``folder`` as the GGUF file ``out``.

    Args:
        folder: a Llama safetensors folder with a ``tokenizer.json``.
        out: the ``.gguf`` file to write.
        linear_type: ``F32`` or ``Q8_0``, the storage of the decoder Linear weights.

    Returns:
        ``{transformers name: numpy array}``: the weights the file holds, in transformers'
        layout and names, dequantized with gguf's own ``dequantize`` (what a loader must give
        back).
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tok = _tokenizer_fields(folder)

    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny-llama")
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_block_count(n_layer)
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float((cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0)))
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_vocab_size(cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    w.add_bos_token_id(tok["ids"]["<bos>"])
    w.add_eos_token_id(tok["ids"]["<eos>"])
    w.add_unk_token_id(tok["ids"]["<unk>"])
    w.add_pad_token_id(tok["ids"]["<pad>"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, n_layer)
    qtype = gguf.GGMLQuantizationType[linear_type]
    quantize_linears = qtype != gguf.GGMLQuantizationType.F32
    held = {}
    for hf_name, t in sorted(load_file(str(folder / "model.safetensors")).items()):
        base, suffix = hf_name.rsplit(".", 1)
        data = t.astype(np.float32)
        if base.endswith("q_proj"):
            data = llama_permute(data, n_head)
        elif base.endswith("k_proj"):
            data = llama_permute(data, n_kv)
        name = f"{names.get_name(base)}.{suffix}"
        if quantize_linears and data.ndim == 2 and base.startswith("model.layers."):
            packed = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, packed, raw_dtype=qtype)
            stored = gguf.quants.dequantize(packed, qtype)
        else:
            w.add_tensor(name, data)
            stored = data
        # What a loader must give back: the stored values, un-permuted to transformers' layout.
        if base.endswith("q_proj"):
            stored = llama_unpermute(stored, n_head)
        elif base.endswith("k_proj"):
            stored = llama_unpermute(stored, n_kv)
        held[hf_name] = stored
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held
