"""A tiny causal LM built locally from a config, for fast integration tests.

Gemma-3 architecture (like the default model) at toy size: 2 layers, hidden 64,
a 1k-token BPE tokenizer trained on the first lines of WikiText-2's test split from
the shared data dir. Random weights: numbers from it test plumbing, not quality.
"""

from __future__ import annotations

import gzip
from pathlib import Path


def data_dir() -> Path:
    import os

    env = os.environ.get("ECOCOMPRESS_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "benchmarks"


def build_tiny_model(out: Path, seed: int = 0, vocab_size: int = 1024) -> Path:
    """Write a tiny Gemma-3 causal LM with its tokenizer to ``out`` and return ``out``."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig, PreTrainedTokenizerFast

    out.mkdir(parents=True, exist_ok=True)
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

    torch.manual_seed(seed)
    cfg = Gemma3TextConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=16,
        max_position_embeddings=2048,
        sliding_window=64,
        pad_token_id=fast.pad_token_id,
        eos_token_id=fast.eos_token_id,
        bos_token_id=fast.bos_token_id,
        tie_word_embeddings=True,
    )
    model = Gemma3ForCausalLM(cfg).eval()
    model.save_pretrained(out)
    return out
