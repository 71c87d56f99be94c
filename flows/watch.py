"""The watch flow: has a watched model a new revision? Then say so with ``MODEL_UPDATED``.

A source is one of
- a local model folder or ``.gguf`` file: its revision is its content hash;
- ``models:/<name>`` of the MLflow registry: its newest version;
- a Hugging Face Hub id: the commit sha its ``main`` (or ``id@revision``) resolves to.

What was seen is kept in ``ECOCOMPRESS_HOME/watch/seen.json`` (under a lock), so a revision is
announced once; the optimize deployment's trigger and its search thread keyed on
(model, revision) make sure it is searched once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import flow

from ecocompress.flows.events import OWN_VERSION_TAG, ModelUpdate, emit_model_updated
from ecocompress.tasks.artifacts import home, sha256_tree, tracking_uri
from ecocompress.tasks.download import memo_hash
from ecocompress.tasks.errors import UserError

REGISTRY_PREFIX = "models:/"


def _local(path: Path) -> ModelUpdate:
    if path.is_dir() and not (path / "config.json").is_file() and not list(path.glob("*.gguf")):
        raise UserError(f"watched folder {path} holds no config.json and no .gguf file")
    if path.is_file() and path.suffix != ".gguf":
        raise UserError(f"watched file {path} is not a .gguf file")
    return ModelUpdate(
        model=str(path.resolve()),
        revision=memo_hash(path, sha256_tree)[:16],
        source="local",
        seen_by="watch",
    )


def _registry(name: str) -> ModelUpdate:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri(), registry_uri=tracking_uri())
    try:
        client.get_registered_model(name)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException as exc:
        raise UserError(
            f"no registered model {name!r} in the MLflow registry at {tracking_uri()} "
            f"({' '.join(str(exc).split())[:120]})"
        ) from None
    versions = [v for v in versions if OWN_VERSION_TAG not in (v.tags or {})]
    if not versions:
        raise UserError(f"registered model {name!r} has no versions but ecocompress's own")
    newest = max(int(v.version) for v in versions)
    return ModelUpdate(
        model=f"{REGISTRY_PREFIX}{name}/{newest}",
        revision=str(newest),
        source="mlflow",
        seen_by="watch",
    )


def _hub(source: str) -> ModelUpdate:
    import huggingface_hub.constants as hc
    from huggingface_hub import HfApi, errors

    repo, _, ref = source.partition("@")
    if hc.HF_HUB_OFFLINE:
        raise UserError(
            f"cannot check Hub model {repo!r}: the Hub is offline (HF_HUB_OFFLINE=1); watch a "
            "local folder, a .gguf file or models:/<name> instead"
        )
    try:
        info = HfApi(endpoint=hc.ENDPOINT).model_info(repo, revision=ref or None)
    except (errors.RepositoryNotFoundError, errors.GatedRepoError):
        raise UserError(
            f"Hub model {repo!r} does not exist or is not accessible (check the id and HF_TOKEN)"
        ) from None
    except errors.RevisionNotFoundError:
        raise UserError(f"Hub model {repo!r} has no revision {ref!r}") from None
    except (errors.HfHubHTTPError, OSError) as exc:
        raise UserError(
            f"cannot reach the Hub for {repo!r}: {' '.join(str(exc).split())[:160]}"
        ) from None
    if not info.sha:
        raise UserError(f"the Hub gave no commit sha for {repo!r}")
    return ModelUpdate(model=repo, revision=info.sha, source="hub", seen_by="watch")


def check_source(source: str) -> ModelUpdate:
    """The current (model, revision) of ``source``.

    Raises:
        UserError: the source does not exist or cannot be read, in one line.
    """
    from ecocompress.tasks.download import looks_like_path, valid_repo_id

    source = source.strip()
    if source.startswith(REGISTRY_PREFIX):
        name = source[len(REGISTRY_PREFIX) :].strip("/")
        if not name or "/" in name:
            raise UserError(f"watch {source!r}: use models:/<registered model name>")
        return _registry(name)
    path = Path(source).expanduser()
    if path.exists():
        return _local(path)
    if looks_like_path(source):
        raise UserError(f"watched path {source!r} does not exist")
    if not valid_repo_id(source.partition("@")[0]):
        raise UserError(
            f"watch {source!r}: not a local folder or .gguf file, not models:/<name>, and not a "
            "Hugging Face Hub id such as org/name"
        )
    return _hub(source)


def seen_path() -> Path:
    return home() / "watch" / "seen.json"


@contextmanager
def _seen() -> Iterator[dict[str, str]]:
    """The seen revisions by model, read and written under an exclusive lock."""
    path = seen_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        seen = json.loads(path.read_text()) if path.is_file() else {}
        before = dict(seen)
        yield seen
        if seen != before:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(seen, indent=2, sort_keys=True))
            os.replace(tmp, path)


def watch(
    sources: list[str],
    emit: Callable[[ModelUpdate], str | None] = emit_model_updated,
    record: bool = True,
) -> list[dict[str, Any]]:
    """Check each source once; emit and record each revision not seen before.

    A source that cannot be checked is reported in its row (``error``) and the others are
    still checked. Returns one row per source: source, model, revision, new, event, error.
    """
    rows: list[dict[str, Any]] = []
    with _seen() as seen:
        for source in sources:
            try:
                u = check_source(source)
            except UserError as exc:
                rows.append({"source": source, "error": str(exc), "new": False})
                continue
            # a local folder keeps its name across revisions; a registry version is its own model
            key = source if u.source != "mlflow" else f"{REGISTRY_PREFIX}{u.model.split('/')[1]}"
            new = seen.get(key) != u.revision
            event = emit(u) if new and record else None
            if new and record:
                seen[key] = u.revision
            rows.append(
                {
                    "source": source,
                    "model": u.model,
                    "revision": u.revision,
                    "new": new,
                    "event": event,
                    "key": u.key,
                }
            )
    return rows


@flow(name="ecocompress-watch", log_prints=True)
def watch_flow(sources: list[str]) -> list[dict[str, Any]]:
    """Scheduled by ``ecocompress deploy --watch``: one check of every source. The flow run
    fails when a source cannot be checked (after checking the others)."""
    rows = watch(sources)
    for r in rows:
        if r.get("error"):
            print(f"{r['source']}: {r['error']}")
        else:
            print(f"{r['source']}: {r['revision']} {'NEW' if r['new'] else 'seen'}")
    bad = [r for r in rows if r.get("error")]
    if bad:
        raise UserError("; ".join(f"{r['source']}: {r['error']}" for r in bad))
    return rows
