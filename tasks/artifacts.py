"""Small references to artifacts on disk, lineage ids and the code version.

Tasks pass ``ModelRef`` objects (a path and hashes), never ``nn.Module``s. A derived
artifact's id hashes its parent id, the step, the canonical spec and the code version,
so a cache entry can only be reused by exactly the same computation.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, ConfigDict


def home() -> Path:
    """``ECOCOMPRESS_HOME`` (default ``~/.ecocompress``): caches, MLflow store, results."""
    p = Path(os.environ.get("ECOCOMPRESS_HOME", Path.home() / ".ecocompress")).expanduser()
    return p.resolve()


def tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else ``sqlite:///<ECOCOMPRESS_HOME>/mlflow.db``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = home()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def cache_dir(kind: str) -> Path:
    d = home() / "cache" / kind
    d.mkdir(parents=True, exist_ok=True)
    return d


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_text(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode())
        h.update(b"\0")
    return h.hexdigest()


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | Path) -> str:
    """Hash of every file below ``path`` (relative names and contents), order-independent."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(f.relative_to(root)).encode() + b"\0" + sha256_file(f).encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def code_version() -> str:
    """Hash of the source of the packages that compute artifacts and numbers (tasks, metrics).

    Any edit to them invalidates the caches: a stale cached number is worse than a re-run.
    """
    h = hashlib.sha256()
    pkg_root = Path(__file__).resolve().parent.parent
    for pkg in ("tasks", "metrics"):
        for f in sorted((pkg_root / pkg).rglob("*")):
            if f.suffix in (".py", ".yaml") and f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(pkg_root)).encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def derive_id(parent_id: str, step: str, canonical_spec: str) -> str:
    """Lineage id of an artifact made by ``step`` from ``parent_id``."""
    return sha256_text(parent_id, step, canonical_spec, code_version())[:24]


class ModelRef(BaseModel):
    """A model on disk or a recipe to materialise one.

    Attributes:
        id: lineage id (hash of parent id + step + spec + code version).
        path: folder holding ``config.json``, tokenizer files and safetensors weights.
        content_hash: sha256 of the reference model's files (the root of the lineage).
        model_name: what the user asked for (`--model`), for display and MLflow.
        source: ``hub`` | ``local`` | ``gguf`` | ``package`` | ``mlflow``.
        revision: resolved Hub commit sha, or the MLflow registry version.
        checkpoint_dtype: dtype the reference weights are stored in (``float32`` for GGUF).
        reference_weight_bytes: bytes of the unpruned, unquantized model's parameters in
            ``checkpoint_dtype`` (the numerator of ``compression_ratio``).
        prune_spec / quant_spec: canonical JSON of the steps applied (``None`` if not).
        achieved_sparsity: fraction of zeros in the pruned Linear weights, when pruned.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    path: str
    content_hash: str
    model_name: str
    source: str
    revision: str | None = None
    checkpoint_dtype: str = "float32"
    reference_weight_bytes: int
    prune_spec: str | None = None
    quant_spec: str | None = None
    achieved_sparsity: float | None = None
