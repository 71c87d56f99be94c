"""Cached step results as typed JSON records: a writable results folder cannot run code.

Prefect's own result persistence is not used for this: a persisted Prefect result names its
serializer in its own metadata, so a record planted in the results folder with
``"serializer": {"type": "pickle"}`` is unpickled (its code run) even by a task configured
with ``result_serializer="json"`` (tried with Prefect 3.9: the planted code ran and the
task reported ``Cached``). Here a record is read with the stdlib ``json`` parser (no object
hook, no class lookup) and its value validated against the step's declared return type
(``ModelRef`` comes back as a ``ModelRef``). A record that cannot be read, parsed or
validated, or that belongs to another step or key, is a miss: removed with a one-line
warning on stderr, and the step runs again.

Files: ``<results>/<key>.json``, written atomically (a temporary file renamed over it), each
``{"format", "step", "key", "value"}``; ``<results>`` is ``ECOCOMPRESS_RESULTS`` (``--results``)
or ``$ECOCOMPRESS_HOME/step-results``. ``computing(key)`` is an exclusive lock on
``<results>/locks/<key>.lock``: workers sharing the folder compute a step once.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError

from ecocompress.tasks.artifacts import home

FORMAT = "ecocompress-step-result/1"
_KEY = re.compile(r"^[0-9a-f]{64}$")  # keys are sha256 hex digests (``steps._key``)


class StepRecord(BaseModel):
    """One cached step result on disk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: Literal["ecocompress-step-result/1"]
    step: str
    key: str
    value: Any  # plain JSON; validated against the step's return type when read


RESULTS_ENV = "ECOCOMPRESS_RESULTS"


def records_dir() -> Path:
    """Where step results persist: ``ECOCOMPRESS_RESULTS``, else
    ``$ECOCOMPRESS_HOME/step-results``; read at call time so either can change."""
    env = os.environ.get(RESULTS_ENV)
    p = Path(env).expanduser().resolve() if env else home() / "step-results"
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextmanager
def computing(key: str) -> Iterator[None]:
    """Hold the exclusive lock of step result ``key`` for the block (``flock``: released by
    the kernel if the holder dies), so a second worker waits and then finds the record."""
    from ecocompress.tasks.processes import file_lock

    # the empty lock file stays: unlinking it while another worker waits on it would let a
    # third lock a new file of the same name and compute the step at the same time
    with file_lock(records_dir() / "locks" / f"{_checked(key)}.lock"):
        yield


def record_path(key: str) -> Path:
    return records_dir() / f"{_checked(key)}.json"


def _checked(key: str) -> str:
    if not _KEY.match(key):
        raise ValueError(f"step result key {key!r} is not a sha256 hex digest")
    return key


@lru_cache(maxsize=32)
def _adapter(rtype: Any) -> TypeAdapter:
    return TypeAdapter(rtype)


def load(step: str, key: str, rtype: Any) -> tuple[bool, Any]:
    """The cached result of ``step`` under ``key``, validated as ``rtype``.

    Returns:
        ``(True, value)`` on a hit; ``(False, None)`` when there is no usable record (a bad
        one is removed, with a warning).
    """
    path = record_path(key)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return False, None
    try:
        rec = StepRecord.model_validate(json.loads(raw))
        if (rec.step, rec.key) != (step, key):
            raise ValueError(f"it is the record of {rec.step}/{rec.key[:12]}")
        return True, _adapter(rtype).validate_python(rec.value)
    except (OSError, ValueError, RecursionError) as exc:  # ValidationError, JSONDecodeError,
        # UnicodeDecodeError; RecursionError: JSON nested thousands deep
        why = f"{type(exc).__name__}" if isinstance(exc, ValidationError) else str(exc)
        print(
            f"ecocompress: warning: cached {step} result {path.name} is unreadable "
            f"({' '.join(why.split())[:120]}): removed, recomputing it",
            file=sys.stderr,
            flush=True,
        )
        path.unlink(missing_ok=True)
        return False, None


def save(step: str, key: str, value: Any, rtype: Any) -> None:
    """Persist ``value`` (of type ``rtype``) as the result of ``step`` under ``key``.

    Raises:
        TypeError: ``value`` is not of ``rtype`` or not JSON (a programmer's error).
    """
    import pydantic_core

    try:
        # NaN and infinities are kept (as the JSON constants), never turned into null
        plain = json.loads(pydantic_core.to_json(value, inf_nan_mode="constants"))
        _adapter(rtype).validate_python(plain)  # what load will do, checked now
    except (pydantic_core.PydanticSerializationError, ValidationError) as exc:
        raise TypeError(f"step {step} returned a value that does not round-trip: {exc}") from exc
    text = json.dumps({"format": FORMAT, "step": step, "key": key, "value": plain})
    path = record_path(key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(text)
    os.replace(tmp, path)
