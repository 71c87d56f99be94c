"""Bytes of the tensors a model actually holds, packed formats included.

``model.get_memory_footprint()`` reports fp32 sizes for torchao tensor subclasses and misses
quantization side tensors, so this walks every parameter and buffer instead: plain tensors
by storage (tied weights count once), bitsandbytes 4-bit as packed bytes plus its quant
state (absmax, code, nested absmax/code), LLM.int8 as int8 plus its row scales (SCB), and
torchao subclasses as the sum of their inner tensors (``__tensor_flatten__``).
"""

from __future__ import annotations

from typing import Any


def _plain_bytes(t: Any, seen: set[tuple[int, int]]) -> int:
    """Bytes of ``t``'s storage, once per storage (key: data pointer and device)."""
    if t is None or t.device.type == "meta":
        return 0
    storage = t.untyped_storage()
    key = (storage.data_ptr(), hash(t.device))
    if key in seen:
        return 0
    seen.add(key)
    return storage.nbytes()


def _quant_state_bytes(qs: Any, seen: set[tuple[int, int]]) -> int:
    """bitsandbytes ``QuantState``: absmax, code, offset and the nested state of double quant."""
    if qs is None:
        return 0
    n = sum(
        _plain_bytes(getattr(qs, a, None), seen)
        for a in ("absmax", "code", "offset")
        if hasattr(getattr(qs, a, None), "untyped_storage")
    )
    return n + _quant_state_bytes(getattr(qs, "state2", None), seen)


def _tensor_bytes(t: Any, seen: set[tuple[int, int]]) -> int:
    import torch

    data = t.data if isinstance(t, torch.nn.Parameter) else t
    total = 0
    if hasattr(t, "quant_state"):  # bnb Params4bit (packed uint8 + quant state)
        total += _quant_state_bytes(t.quant_state, seen)
    scb = getattr(t, "SCB", None)  # bnb Int8Params: one fp32 scale per output row
    if isinstance(scb, torch.Tensor):
        total += _plain_bytes(scb, seen)
    if type(data) is not torch.Tensor and hasattr(data, "__tensor_flatten__"):  # torchao subclass
        names, _ctx = data.__tensor_flatten__()
        return total + sum(_tensor_bytes(getattr(data, n), seen) for n in names)
    return total + _plain_bytes(data, seen)


def tensor_bytes(model: Any) -> int:
    """Bytes of every parameter and buffer held by ``model``, each storage counted once.

    Args:
        model: an ``nn.Module``, possibly quantized by bitsandbytes or torchao.

    Returns:
        Total bytes (packed storage for quantized weights, side tensors included).
    """
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in model.parameters():
        total += _tensor_bytes(t, seen)
    for t in model.buffers():
        total += _tensor_bytes(t, seen)
    for mod in model.modules():  # LLM.int8 keeps its row scales on the module state after a forward
        state = getattr(mod, "state", None)
        for attr in ("SCB", "CB"):
            v = getattr(state, attr, None)
            if v is not None and hasattr(v, "untyped_storage"):
                total += _plain_bytes(v, seen)
    return total
