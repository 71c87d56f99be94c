"""Weight precision of a candidate: a recipe applied when the model is loaded.

bitsandbytes 4-bit models saved and reloaded on CPU come back silently corrupted (ppl
19.5 -> 1e9), so quantized weights are never saved: ``quantize`` returns a recipe (a ref
with ``quant_spec`` and its own lineage id) and ``load_candidate`` quantizes the (pruned)
safetensors at load time, in 3-6 s. For 8 and 4 bits the tensors left unquantized (the
tied embedding/output head, norms) are bfloat16, which is also the compute dtype.
"""

from __future__ import annotations

from typing import Any

from ecocompress.tasks.artifacts import ModelRef, derive_id
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import QuantSpec

# Process-local: the last candidate loaded, so several benchmarks of one candidate load once.
_LOADED: dict[tuple[str, str], tuple[Any, Any]] = {}


def quantize(ref: ModelRef, spec: QuantSpec) -> ModelRef:
    """The quantization recipe for ``ref``: same weights folder, new lineage id.

    Args:
        ref: the (possibly pruned) model.
        spec: precision and backend.

    Returns:
        ``ref`` with ``id = derive_id(ref.id, "quantize", spec)`` and ``quant_spec`` set.
    """
    return ref.model_copy(
        update={
            "id": derive_id(ref.id, "quantize", spec.canonical()),
            "quant_spec": spec.canonical(),
        }
    )


def device() -> str:
    """``cuda:0`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _cpu_nf4_skips(path: str) -> list[str]:
    """Linears that bitsandbytes' CPU 4-bit kernel cannot hold, plus the default skips.

    On CPUs with AVX512-BF16, bitsandbytes repacks 4-bit weights at the first forward in
    blocks of 32 output rows (and undoes double quantization: absmax becomes bf16); a layer
    whose out_features is not a multiple of 32 fails there, so it stays bf16. gemma-3-270m
    has none; toy models do.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.quantizers.base import get_keys_to_not_convert

    with torch.device("meta"):  # module shapes only, no weights
        skel = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    odd = [
        n for n, m in skel.named_modules() if isinstance(m, torch.nn.Linear) and m.out_features % 32
    ]
    return sorted(set(get_keys_to_not_convert(skel)) | set(odd))


def _bnb_config(spec: QuantSpec, path: str, dev: str) -> Any:
    import torch
    from transformers import BitsAndBytesConfig

    if spec.bits == 8:  # LLM.int8: int8 weights, outlier features in 16-bit
        return BitsAndBytesConfig(load_in_8bit=True)
    skips = _cpu_nf4_skips(path) if dev == "cpu" else None
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
        llm_int8_skip_modules=skips,
    )


def _load(ref: ModelRef, spec: QuantSpec) -> Any:
    import torch
    from transformers import AutoModelForCausalLM

    dev = device()
    dtype = getattr(torch, spec.dtype_name)
    if spec.bits in (32, 16) or spec.backend == "torchao":
        model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=dtype).to(dev)
        if spec.backend == "torchao":
            from torchao.quantization import Int8WeightOnlyConfig, quantize_

            from ecocompress.tasks.prune import decoder_linears

            # Decoder Linears only: the tied embedding/head stays bf16 (int8-ing the head
            # would also un-tie it and store the vocabulary matrix twice).
            targets = set(map(id, decoder_linears(model).values()))
            quantize_(model, Int8WeightOnlyConfig(), filter_fn=lambda m, _fqn: id(m) in targets)
        return model
    if spec.backend != "bitsandbytes":
        raise UserError(f"quant backend {spec.backend!r} does not support bits {spec.bits}")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as exc:
        raise UserError(
            "bits 8/4 with backend bitsandbytes needs the bitsandbytes package"
        ) from exc
    if spec.bits == 8:
        _quiet_int8_cast_warning()
    return AutoModelForCausalLM.from_pretrained(
        ref.path,
        dtype=dtype,
        quantization_config=_bnb_config(spec, ref.path, dev),
        device_map={"": dev},
    )


def _quiet_int8_cast_warning() -> None:
    """LLM.int8 logs "inputs will be cast ... to float16" on every matmul (by design: it
    quantizes activations from fp16); drop that one message so evaluation logs stay readable."""
    import logging

    log = logging.getLogger("bitsandbytes.autograd._functions")
    if not any(getattr(f, "ecocompress", False) for f in log.filters):
        drop = logging.Filter()
        drop.filter = lambda rec: "will be cast from" not in str(rec.msg)  # type: ignore[method-assign]
        drop.ecocompress = True  # type: ignore[attr-defined]
        log.addFilter(drop)


def load_candidate(ref: ModelRef, quant: QuantSpec) -> tuple[Any, Any]:
    """Load ``ref.path`` at the precision of ``quant``, in eval mode on CPU or ``cuda:0``.

    32 -> float32; 16 -> bfloat16; 8 bitsandbytes -> LLM.int8; 4 bitsandbytes -> NF4 with
    double quantization and bf16 compute; 8 torchao -> int8 weight-only on the decoder
    Linears. The last (ref.id, quant) loaded in this process is kept: a second call returns
    the same objects.

    Args:
        ref: the (possibly pruned) unquantized safetensors folder.
        quant: the precision.

    Returns:
        ``(model, tokenizer)``; the tokenizer has a pad token.
    """
    from ecocompress.tasks.download import load_tokenizer

    if ref.quant_spec is not None and ref.quant_spec != quant.canonical():
        raise ValueError(f"ref {ref.id} is the recipe {ref.quant_spec}, not {quant.canonical()}")
    key = (ref.id, quant.canonical())
    if key in _LOADED:
        return _LOADED[key]
    clear_loaded()
    model = _load(ref, quant).eval()
    _LOADED[key] = (model, load_tokenizer(ref.path))
    return _LOADED[key]


def clear_loaded() -> None:
    """Forget the cached candidate so its memory can be freed."""
    _LOADED.clear()
    import gc

    gc.collect()
