"""Cheap checks of a model's files before any work: the headers, not the weights.

A bad ``config.json``, a garbage or truncated GGUF or safetensors file is refused with one
line naming the file, before a server starts or a model is converted (a GGUF header is
read field by field; its tensor table says how long the file must be; its architecture must
be one transformers' GGUF loader converts).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, BinaryIO

from ecocompress.tasks.errors import UserError

GGUF_MAGIC = b"GGUF"
_GGUF_VERSIONS = (2, 3)
_GGUF_ALIGNMENT = 32  # the default of general.alignment
# GGUF metadata value types: fixed-size ones by struct format; 8 = string, 9 = array.
_GGUF_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q"}
_GGUF_SCALAR.update({11: "q", 12: "d"})
_MAX_HEADER_ITEMS = 1 << 24  # counts beyond this are garbage, not a model


class _Truncated(Exception):
    pass


def _read(f: BinaryIO, n: int) -> bytes:
    b = f.read(n)
    if len(b) != n:
        raise _Truncated
    return b


def _u64(f: BinaryIO) -> int:
    return struct.unpack("<Q", _read(f, 8))[0]


def _u32(f: BinaryIO) -> int:
    return struct.unpack("<I", _read(f, 4))[0]


def _string(f: BinaryIO) -> bytes:
    n = _u64(f)
    if n > 1 << 30:
        raise ValueError(f"a string of {n} bytes")
    return _read(f, n)


def _skip_value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _GGUF_SCALAR:
        fmt = "<" + _GGUF_SCALAR[vtype]
        return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]
    if vtype == 8:
        return _string(f)
    if vtype == 9:
        item_type, n = _u32(f), _u64(f)
        if n > 1 << 28:
            raise ValueError(f"an array of {n} items")
        if item_type in _GGUF_SCALAR:  # fixed size: skip without reading item by item
            _read(f, n * struct.calcsize("<" + _GGUF_SCALAR[item_type]))
        else:
            for _ in range(n):
                _skip_value(f, item_type)
        return None
    raise ValueError(f"unknown metadata type {vtype}")


def _tensor_bytes(ggml_type: int, dims: list[int]) -> int | None:
    """Bytes of a tensor of ``ggml_type`` (gguf's block sizes), or None when unknown."""
    try:
        from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

        block, size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ImportError, KeyError, ValueError):
        return None
    numel = 1
    for d in dims:
        numel *= d
    return numel // block * size


def check_gguf(path: Path) -> None:
    """Refuse a file that is not a complete GGUF: magic, version, header, tensor data size.

    Raises:
        UserError: naming the file and what is wrong with it.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            if f.read(4) != GGUF_MAGIC:
                raise UserError(f"model file {path} is not a GGUF file (no GGUF magic bytes)")
            version = _u32(f)
            if version not in _GGUF_VERSIONS:
                raise UserError(f"model file {path}: unsupported GGUF version {version}")
            n_tensors, n_kv = _u64(f), _u64(f)
            if n_tensors > _MAX_HEADER_ITEMS or n_kv > _MAX_HEADER_ITEMS:
                raise ValueError(f"{n_tensors} tensors, {n_kv} metadata entries")
            alignment, architecture = _GGUF_ALIGNMENT, None
            for _ in range(n_kv):
                key = _string(f)
                value = _skip_value(f, _u32(f))
                if key == b"general.alignment" and isinstance(value, int) and value > 0:
                    alignment = value
                elif key == b"general.architecture" and isinstance(value, bytes):
                    architecture = value.decode("utf-8", "replace")
            end = 0
            for _ in range(n_tensors):
                _string(f)
                n_dims = _u32(f)
                if n_dims > 8:
                    raise ValueError(f"a tensor of {n_dims} dimensions")
                dims = [_u64(f) for _ in range(n_dims)]
                ggml_type, offset = _u32(f), _u64(f)
                nbytes = _tensor_bytes(ggml_type, dims)
                end = max(end, offset + (nbytes or 0))
            data_start = -(-f.tell() // alignment) * alignment
    except _Truncated:
        raise UserError(f"model file {path} is truncated (its GGUF header is incomplete)") from None
    except (ValueError, struct.error) as exc:
        raise UserError(f"model file {path} has a malformed GGUF header ({exc})") from None
    if data_start + end > size:
        raise UserError(
            f"model file {path} is truncated: its tensors need {data_start + end} bytes, "
            f"the file has {size}"
        )
    check_gguf_architecture(path, architecture)


def gguf_architectures() -> list[str]:
    """The GGUF architectures (``general.architecture``) the installed transformers can load.

    Its GGUF config mappings, legacy and new, name them; transformers spells a few with an
    underscore where llama.cpp writes none or a hyphen (``qwen2_moe``/``qwen2moe``,
    ``gpt_oss``/``gpt-oss``), which ``check_gguf_architecture`` folds together.
    """
    from transformers.integrations.ggml import GGUF_CONFIG_MAPPING

    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS
    except ImportError:  # transformers without the newer GGUF reader
        GGUF_CONFIG_ARCHS = {}
    names = set(GGUF_CONFIG_MAPPING) - {"general", "tokenizer"}
    return sorted(names | set(GGUF_CONFIG_ARCHS))


def check_gguf_architecture(path: Path, architecture: str | None) -> None:
    """Refuse a GGUF whose architecture transformers' GGUF loader does not convert.

    Raises:
        UserError: naming the file, its architecture and the supported ones.
    """
    supported = gguf_architectures()
    fold = {a.replace("_", "").replace("-", "") for a in supported}
    if architecture is None:
        raise UserError(f"model file {path} has no general.architecture: not a model GGUF")
    if architecture.replace("_", "").replace("-", "") not in fold:
        raise UserError(
            f"model file {path} has GGUF architecture {architecture!r}, which transformers "
            f"cannot load: supported {', '.join(supported)}"
        )


def read_config(folder: Path) -> dict[str, Any]:
    """``folder/config.json`` as a mapping.

    Raises:
        UserError: missing, not UTF-8 JSON, or not an object.
    """
    path = folder / "config.json"
    if not path.is_file():
        raise UserError(
            f"model folder {folder} has no config.json: pass a transformers model folder"
        )
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path} must hold a JSON object, not {type(cfg).__name__}")
    return cfg


def check_safetensors(path: Path) -> None:
    """Refuse a safetensors file whose header does not parse or whose data is cut short.

    Raises:
        UserError: naming the file.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            n = struct.unpack("<Q", _read(f, 8))[0]
            if n > size - 8:
                raise _Truncated
            header = json.loads(_read(f, n))
    except _Truncated:
        raise UserError(f"weights file {path} is truncated (incomplete header)") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"weights file {path} is not a safetensors file (bad header)") from None
    if not isinstance(header, dict):
        raise UserError(f"weights file {path} is not a safetensors file (bad header)")
    end = 0
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        offsets = meta.get("data_offsets") if isinstance(meta, dict) else None
        if not (isinstance(offsets, list) and len(offsets) == 2):
            raise UserError(f"weights file {path}: tensor {name!r} has no data_offsets")
        end = max(end, int(offsets[1]))
    if 8 + n + end > size:
        raise UserError(
            f"weights file {path} is truncated: its tensors need {8 + n + end} bytes, "
            f"the file has {size}"
        )


def check_model_folder(folder: Path) -> None:
    """config.json parses and every safetensors file is complete.

    Raises:
        UserError: naming the first bad file.
    """
    read_config(folder)
    for f in sorted(folder.glob("*.safetensors")):
        check_safetensors(f)
