"""Byte counting on toy modules with known sizes; load-time quantization of the tiny model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecocompress.tasks.specs import PruneSpec, QuantSpec


def test_tensor_bytes_fp32_bf16_and_buffers() -> None:
    from ecocompress.tasks.footprint import tensor_bytes

    lin = nn.Linear(16, 8)  # 128 weights + 8 biases
    assert tensor_bytes(lin) == (128 + 8) * 4
    assert tensor_bytes(lin.to(torch.bfloat16)) == (128 + 8) * 2
    bn = nn.BatchNorm1d(10)  # weight, bias (params); running mean/var (fp32) + num_batches (int64)
    assert tensor_bytes(bn) == 4 * 10 * 4 + 8


def test_tensor_bytes_tied_weights_counted_once() -> None:
    from ecocompress.tasks.footprint import tensor_bytes

    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Embedding(100, 16)
            self.head = nn.Linear(16, 100, bias=False)
            self.head.weight = self.embed.weight

    assert tensor_bytes(Tied()) == 100 * 16 * 4


def test_tensor_bytes_bitsandbytes_int8_and_nf4() -> None:
    import bitsandbytes as bnb

    from ecocompress.tasks.footprint import tensor_bytes

    w = torch.randn(32, 64)
    q8 = bnb.nn.Linear8bitLt(64, 32, bias=False, has_fp16_weights=False)
    q8.weight = bnb.nn.Int8Params(w.clone(), requires_grad=False, has_fp16_weights=False)
    q8 = q8.to("cpu")  # quantizes: int8 [32, 64] + one fp32 scale (SCB) per row
    assert q8.weight.dtype == torch.int8
    assert tensor_bytes(q8) == 32 * 64 + 32 * 4

    q4 = bnb.nn.Linear4bit(
        64, 32, bias=False, compute_dtype=torch.bfloat16, quant_type="nf4", compress_statistics=True
    )
    q4.weight = bnb.nn.Params4bit(
        w.clone(), requires_grad=False, quant_type="nf4", compress_statistics=True
    )
    q4 = q4.to("cpu")
    # 2048 weights packed two per byte; 32 blocks of 64 -> 32 uint8 absmax (double quant);
    # 16-entry fp32 NF4 code; nested: 1 fp32 absmax, 256-entry fp32 code; fp32 offset.
    assert tensor_bytes(q4) == 1024 + 32 + 16 * 4 + 4 + 256 * 4 + 4


def test_tensor_bytes_torchao_int8() -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    from ecocompress.tasks.footprint import tensor_bytes

    model = nn.Sequential(nn.Linear(128, 64, bias=False)).to(torch.bfloat16)
    quantize_(model, Int8WeightOnlyConfig())
    assert (
        type(model[0].weight) is not nn.Parameter or type(model[0].weight.data) is not torch.Tensor
    )
    # int8 [64, 128] + per-row scale (fp32 [64, 1]) + per-row zero point (int8 [64, 1])
    assert tensor_bytes(model) == 64 * 128 + 64 * 4 + 64


def test_quantize_is_a_recipe_with_its_own_id(tiny_model_dir, tmp_path, monkeypatch) -> None:
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.quantize import quantize

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    ref = resolve_model(str(tiny_model_dir))
    a, b = quantize(ref, QuantSpec(bits=8)), quantize(ref, QuantSpec(bits=8, backend="torchao"))
    assert a.path == b.path == ref.path and len({a.id, b.id, ref.id}) == 3
    assert a.quant_spec == QuantSpec(bits=8).canonical() and quantize(ref, QuantSpec(bits=8)) == a
    from ecocompress.tasks.quantize import load_candidate

    with pytest.raises(ValueError, match="is the recipe"):
        load_candidate(a, QuantSpec(bits=4))


@pytest.fixture(scope="module")
def fp32_logits(tiny_model_dir):
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.quantize import clear_loaded, load_candidate

    ref = resolve_model(str(tiny_model_dir))
    model, tok = load_candidate(ref, QuantSpec(bits=32))
    ids = tok("The tower is 324 metres tall, about the same height", return_tensors="pt").input_ids
    with torch.no_grad():
        logits = model(ids).logits.float()
    held = __import__("ecocompress.tasks.footprint", fromlist=["tensor_bytes"]).tensor_bytes(model)
    # fp32 holds the checkpoint's bytes plus non-persistent buffers (rotary inv_freq, embed scale).
    assert held == ref.reference_weight_bytes + sum(b.nbytes for b in model.buffers())
    clear_loaded()
    return ref, ids, logits, held


@pytest.mark.parametrize(
    "spec",
    [
        QuantSpec(bits=16),
        QuantSpec(bits=8),
        QuantSpec(bits=4),
        QuantSpec(bits=8, backend="torchao"),
    ],
    ids=["bf16", "int8-bnb", "nf4-bnb", "int8-torchao"],
)
def test_load_candidate_runs_close_to_fp32_and_is_smaller(spec: QuantSpec, fp32_logits) -> None:
    from ecocompress.tasks.footprint import tensor_bytes
    from ecocompress.tasks.quantize import clear_loaded, load_candidate

    ref, ids, ref_logits, fp32_bytes = fp32_logits
    model, tok = load_candidate(ref, spec)
    assert load_candidate(ref, spec)[0] is model  # process-local cache
    assert not model.training and tok.pad_token is not None
    with torch.no_grad():
        logits = model(ids).logits.float()
    assert torch.isfinite(logits).all()
    cos = nn.functional.cosine_similarity(logits.flatten(), ref_logits.flatten(), dim=0).item()
    assert cos > {16: 0.999, 8: 0.99, 4: 0.9}[spec.bits]
    held = tensor_bytes(model)
    assert held < fp32_bytes * (0.55 if spec.bits == 16 else 0.5)
    emb = model.get_input_embeddings().weight
    # The tied embedding/head is never quantized and stays tied.
    assert emb.dtype == torch.bfloat16 and model.get_output_embeddings().weight is emb
    clear_loaded()


def _dequantized(lin: nn.Module) -> torch.Tensor:
    import bitsandbytes as bnb

    w = lin.weight
    if hasattr(w, "quant_state"):
        return bnb.functional.dequantize_4bit(w.data, w.quant_state).float()
    if w.dtype == torch.int8:
        return w.data.float()  # the zero pattern of int8 codes is that of the weights
    return (w.dequantize() if hasattr(w, "dequantize") else w).float()


@pytest.mark.parametrize(
    "spec",
    [QuantSpec(bits=8), QuantSpec(bits=4), QuantSpec(bits=8, backend="torchao")],
    ids=["int8-bnb", "nf4-bnb", "int8-torchao"],
)
def test_pruned_zeros_survive_quantization(
    spec: QuantSpec, tiny_model_dir, shared_data_dir, tmp_path, monkeypatch
) -> None:
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.prune import decoder_linears, prune
    from ecocompress.tasks.quantize import clear_loaded, load_candidate

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    pruned = prune(
        resolve_model(str(tiny_model_dir)), PruneSpec(method="magnitude", sparsity=0.5), None
    )
    model, _ = load_candidate(pruned, spec)
    weights = [_dequantized(m) for m in decoder_linears(model).values()]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    # Every pruned zero maps to an exact zero (NF4 and symmetric int8 both have a 0 code);
    # int8 also rounds tiny surviving weights to 0, hence >= and not ==.
    assert pruned.achieved_sparsity <= zeros < pruned.achieved_sparsity + 0.05
    clear_loaded()
