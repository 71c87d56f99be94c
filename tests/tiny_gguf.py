"""Tiny GGUF files written with the ``gguf`` package's ``GGUFWriter``, as llama.cpp writes them.

``write_gguf`` takes a tiny model folder (``build_tiny_model(..., family=...)``: llama,
qwen2, phi3 or gemma2) and writes what ``convert_hf_to_gguf.py`` would: the ``<arch>.*``
hyper-parameters, the byte-level BPE tokenizer as ``tokenizer.ggml.*`` (model ``gpt2``:
tokens, types, merges, special ids), and the tensors under llama.cpp's names
(``token_embd``, ``blk.N.attn_q``, ...), transformed as llama.cpp transforms them. Norms and
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


# transformers model_type -> (GGUF architecture, gguf's MODEL_ARCH). Mistral GGUFs are
# "llama" files (transformers tells them apart by general.name), Gemma-3's carry vision keys.
GGUF_ARCHS = {"llama": "LLAMA", "qwen2": "QWEN2", "phi3": "PHI3", "gemma2": "GEMMA2"}
# tokenizer.ggml.pre: how text is split before BPE. transformers loads a qwen2 folder's
# tokenizer with Qwen2's split (digits one by one), so its GGUF says so, as llama.cpp's would.
PRE_TOKENIZERS = {"qwen2": "qwen2"}


def write_gguf(
    folder: Path, out: Path, linear_type: str = "Q8_0", pre: str | None = None
) -> dict[str, Any]:
    """Write the tiny model in ``folder`` (a ``GGUF_ARCHS`` family) as the GGUF file ``out``.

    What differs by architecture is what llama.cpp's converter does: Llama's q and k rows are
    permuted (``llama_permute``); Gemma stores its RMSNorm weights as ``1 + w`` (its norms
    scale by ``1 + w``) with the head dimension and sliding window as metadata; Phi-3 keeps
    ``qkv_proj`` and ``gate_up_proj`` fused (``attn_qkv``, ``ffn_up``). A tied head is not
    written (``output.weight`` absent means tied).

    Args:
        folder: a safetensors model folder with a ``tokenizer.json``.
        out: the ``.gguf`` file to write.
        linear_type: ``F32`` or ``Q8_0``, the storage of the decoder Linear weights.
        pre: ``tokenizer.ggml.pre`` instead of the family's (``PRE_TOKENIZERS``).

    Returns:
        ``{transformers name: numpy array}``: the values the file holds, in transformers'
        layout and names (dequantized with gguf's own ``dequantize``, un-permuted, norm offset
        removed): what a loader must give back.
    """
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    cfg = json.loads((folder / "config.json").read_text())
    arch = cfg["model_type"]
    if arch not in GGUF_ARCHS:
        raise ValueError(f"no GGUF writer for {arch!r}: allowed {', '.join(GGUF_ARCHS)}")
    n_layer, n_head = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    n_kv = cfg["num_key_value_heads"]
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_head
    tok = _tokenizer_fields(folder)

    w = gguf.GGUFWriter(str(out), arch)
    w.add_name(f"tiny-{arch}")
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
    if arch == "gemma2":
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
        w.add_sliding_window(cfg["sliding_window"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre or PRE_TOKENIZERS.get(arch, "default"))
    w.add_token_list(tok["tokens"])
    w.add_token_types(tok["types"])
    w.add_token_merges(tok["merges"])
    w.add_bos_token_id(tok["ids"]["<bos>"])
    w.add_eos_token_id(tok["ids"]["<eos>"])
    w.add_unk_token_id(tok["ids"]["<unk>"])
    w.add_pad_token_id(tok["ids"]["<pad>"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[GGUF_ARCHS[arch]], n_layer)
    qtype = gguf.GGMLQuantizationType[linear_type]
    quantize_linears = qtype != gguf.GGMLQuantizationType.F32
    rows = {"q_proj": n_head, "k_proj": n_kv} if arch == "llama" else {}
    held = {}
    for hf_name, t in sorted(load_file(str(folder / "model.safetensors")).items()):
        base, suffix = hf_name.rsplit(".", 1)
        heads = rows.get(base.rsplit(".", 1)[-1])
        norm_offset = 1.0 if arch == "gemma2" and base.endswith("norm") else 0.0
        data = t.astype(np.float32) + np.float32(norm_offset)
        if heads:
            data = llama_permute(data, heads)
        name = f"{names.get_name(base)}.{suffix}"
        if quantize_linears and data.ndim == 2 and base.startswith("model.layers."):
            packed = gguf.quants.quantize(data, qtype)
            w.add_tensor(name, packed, raw_dtype=qtype)
            stored = gguf.quants.dequantize(packed, qtype)
        else:
            w.add_tensor(name, data)
            stored = data
        # What a loader must give back: the stored values in transformers' layout.
        held[hf_name] = (llama_unpermute(stored, heads) if heads else stored) - np.float32(
            norm_offset
        )
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return held
