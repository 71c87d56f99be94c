"""A tiny causal LM built locally from a config, for fast integration tests.

Toy size (2 layers, hidden 64, 4 heads of 16) with a 1k-token BPE tokenizer trained on the
first lines of WikiText-2's test split from the shared data dir. The default is Gemma-3, the
architecture of the default model; ``family`` picks another one from ``FAMILIES``, each
built from its transformers config class with what sets it apart kept on:

| family | config | kv heads | embeddings | what it exercises |
|---|---|---|---|---|
| gemma3 | Gemma3TextConfig | 1 | tied | sliding window 64, the default model's architecture |
| llama | LlamaConfig | 2 | untied lm_head | grouped-query attention |
| qwen2 | Qwen2Config | 2 | tied | q/k/v projections with biases |
| mistral | MistralConfig | 1 | untied lm_head | sliding window 32 (shorter than the evaluation windows) |
| phi3 | Phi3Config | 2 | untied lm_head | fused ``qkv_proj`` and ``gate_up_proj`` |
| gemma2 | Gemma2Config | 2 | tied | sliding window 32, logit soft-capping |

Random weights: numbers from these models test plumbing, not quality.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

FAMILIES = ("gemma3", "llama", "qwen2", "mistral", "phi3", "gemma2")
# Shared toy shape of every family (gemma3's own values, unchanged since the first tiny model).
_SHAPE = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    max_position_embeddings=2048,
)


def data_dir() -> Path:
    import os

    env = os.environ.get("ECOCOMPRESS_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def _family_model(family: str, tokens: dict[str, int]) -> Any:
    """An untrained ``*ForCausalLM`` of ``family`` at toy size; ``tokens``: vocab size and ids."""
    import transformers as tf

    if family == "gemma3":
        cfg = tf.Gemma3TextConfig(
            **tokens,
            **_SHAPE,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=64,
            tie_word_embeddings=True,
        )
        return tf.Gemma3ForCausalLM(cfg)
    if family == "llama":
        cfg = tf.LlamaConfig(**tokens, **_SHAPE, num_key_value_heads=2, tie_word_embeddings=False)
        return tf.LlamaForCausalLM(cfg)
    if family == "qwen2":
        cfg = tf.Qwen2Config(**tokens, **_SHAPE, num_key_value_heads=2, tie_word_embeddings=True)
        return tf.Qwen2ForCausalLM(cfg)
    if family == "mistral":
        cfg = tf.MistralConfig(
            **tokens, **_SHAPE, num_key_value_heads=1, sliding_window=32, tie_word_embeddings=False
        )
        return tf.MistralForCausalLM(cfg)
    if family == "phi3":
        cfg = tf.Phi3Config(**tokens, **_SHAPE, num_key_value_heads=2, tie_word_embeddings=False)
        return tf.Phi3ForCausalLM(cfg)
    if family == "gemma2":
        cfg = tf.Gemma2Config(
            **tokens,
            **_SHAPE,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=32,
            tie_word_embeddings=True,
        )
        return tf.Gemma2ForCausalLM(cfg)
    raise ValueError(f"unknown family {family!r}: allowed {', '.join(FAMILIES)}")


def build_tokenizer(out: Path, vocab_size: int = 1024) -> Any:
    """Train the 1k byte-level BPE tokenizer on WikiText-2 and save it to ``out``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    with gzip.open(data_dir() / "wikitext2" / "wiki.test.raw.gz", "rt", encoding="utf-8") as f:
        lines = [next(f) for _ in range(400)]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(lines, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        eos_token="<eos>",
        bos_token="<bos>",
        unk_token="<unk>",
    )
    fast.save_pretrained(out)
    return fast


def build_tiny_model(
    out: Path, seed: int = 0, vocab_size: int = 1024, family: str = "gemma3"
) -> Path:
    """Write a tiny causal LM of ``family`` with its tokenizer to ``out`` and return ``out``.

    Args:
        out: the folder to write (created).
        seed: torch seed of the random weights.
        vocab_size: the tokenizer's vocabulary (and the model's).
        family: one of ``FAMILIES``; ``gemma3`` (the default) gives the same bytes as before
            families existed.
    """
    import torch

    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}: allowed {', '.join(FAMILIES)}")
    out.mkdir(parents=True, exist_ok=True)
    fast = build_tokenizer(out, vocab_size)
    torch.manual_seed(seed)
    tokens = dict(
        vocab_size=len(fast),
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
    )
    model = _family_model(family, tokens).eval()
    model.save_pretrained(out)
    return out
