"""The bounded checkpoint cache: converted GGUF folders and pruned checkpoints.

Entries are content-addressed folders ``home()/cache/<kind>/<id>`` (``gguf``: the GGUF
file's sha256; ``pruned``: the lineage id of ``derive_id``). Beside them, in ``.meta/``:

    <id>.lock   ``flock``: shared while a flow uses the entry (``hold``), exclusive while
                ``gc`` evicts it. Held entries are never evicted.
    <id>.used   last use: the file's mtime, rewritten atomically (a new file renamed over
                it) whenever the entry is created, reused or held; atime is not used.

An entry is complete when its kind's marker file exists: the marker is written last into
a temporary folder that is then renamed into place. ``publish`` also writes a manifest
(``ecocompress-manifest.json``: the sha256 of every other file) before that rename, and
``reusable`` re-hashes the files against it on every hit (gemma's 1.1 GB: 0.8-2 s from the
page cache, 2.8-5.5 s from disk): an entry whose files no longer match -- truncated, zeroed,
a file added or missing, or no manifest at all -- is discarded with a one-line warning on
stderr and rebuilt, never used. The manifest detects corruption, not forgery: whoever can
write an entry can rewrite its manifest too. Eviction renames the entry to
``.trash-<id>-<random>`` before deleting it, so an interrupted delete never leaves a
folder that looks like a valid entry; leftover trash is removed by the next ``gc``.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from ecocompress.tasks.artifacts import cache_dir, home, sha256_file
from ecocompress.tasks.sizes import disk_bytes

# kind -> the file written last into a complete entry
COMPLETE = {
    "gguf": "ecocompress-complete.json",
    "pruned": "ref.json",
    "mlflow": "ecocompress-complete.json",  # a registry version, downloaded
}
# Written into every entry by ``publish``: {relative path: sha256} of every other file.
MANIFEST = "ecocompress-manifest.json"
_TRASH = ".trash-"
_META = ".meta"


class Entry(BaseModel):
    """One cache entry as ``ls`` shows it.

    Attributes:
        size_bytes: disk usage (allocated blocks, hard links counted once), not file lengths.
        last_used: Unix time of the last creation, reuse or hold.
        complete: its completion marker exists (an incomplete folder is never a cache hit).
        held: a running flow holds its lock.
        pinned: a model version in the registry names it (``None``: registry not read).
    """

    model_config = ConfigDict(frozen=True)

    kind: str
    id: str
    path: str
    size_bytes: int
    last_used: float
    complete: bool
    held: bool
    pinned: bool | None = None

    @property
    def key(self) -> str:
        return f"{self.kind}/{self.id}"


class GcReport(BaseModel):
    """What ``gc`` did (or, with ``dry_run``, would do)."""

    max_bytes: int
    total_before: int
    total_after: int
    evicted: list[Entry]
    kept_held: list[Entry]
    kept_pinned: list[Entry]
    dry_run: bool

    @property
    def freed(self) -> int:
        return self.total_before - self.total_after


# ---- entries, markers and locks ---------------------------------------------------------


def entry_of(path: str | Path) -> tuple[str, str] | None:
    """``(kind, id)`` when ``path`` is a cache entry's folder, else ``None``."""
    p = Path(path).resolve()
    root = home() / "cache"
    if p.parent.parent != root or p.parent.name not in COMPLETE or p.name.startswith("."):
        return None
    return p.parent.name, p.name


def is_complete(kind: str, path: str | Path) -> bool:
    """Whether the entry at ``path`` holds its completion marker (written last)."""
    return (Path(path) / COMPLETE[kind]).is_file()


# ---- manifests: what an entry held when it was published ------------------------------


def _files(path: Path) -> list[Path]:
    return sorted(p for p in path.rglob("*") if p.is_file() and p.name != MANIFEST)


def write_manifest(path: Path) -> None:
    """Record the sha256 of every file below ``path`` in ``path / MANIFEST``."""
    files = {str(f.relative_to(path)): sha256_file(f) for f in _files(path)}
    (path / MANIFEST).write_text(json.dumps({"sha256": files}, indent=1, sort_keys=True))


def mismatch(path: str | Path) -> str | None:
    """Why the files below ``path`` differ from its manifest (re-hashed now), or ``None``.

    Every byte is read: size and mtime prove nothing (a same-size write with the mtime set
    back passes them).
    """
    path = Path(path)
    try:
        want = json.loads((path / MANIFEST).read_text())["sha256"]
        if not isinstance(want, dict):
            raise TypeError
    except FileNotFoundError:
        return "it has no manifest"
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        return "its manifest is unreadable"
    have = {str(f.relative_to(path)): f for f in _files(path)}
    for name in sorted(want.keys() | have.keys()):
        if name not in have:
            return f"{name} is missing"
        if name not in want:
            return f"{name} was added"
        try:
            if sha256_file(have[name]) != want[name]:
                return f"{name} does not match its sha256"
        except OSError as exc:
            return f"{name} cannot be read ({exc.strerror})"
    return None


def _warn(msg: str) -> None:
    print(f"ecocompress: warning: {msg}", file=sys.stderr, flush=True)


def reusable(kind: str, path: str | Path) -> bool:
    """Whether the entry at ``path`` is a cache hit: complete and every file matching its
    manifest. A complete entry that does not match is discarded (crash-safe, as ``gc``
    does) with a one-line warning, so the caller rebuilds it; ``False`` is never fatal."""
    path = Path(path)
    if not is_complete(kind, path):
        return False
    why = mismatch(path)
    if why is None:
        return True
    _warn(f"cache entry {kind}/{path.name} is corrupt ({why}): discarded, rebuilding it")
    try:
        _discard(path)
    except FileNotFoundError:  # another process discarded it first
        pass
    return False


def usable(path: str | Path) -> bool:
    """Whether ``path`` can be used as it is: a complete cache entry matching its manifest
    (a corrupt one is discarded), or an existing path outside the cache."""
    ent = entry_of(path)
    return Path(path).exists() if ent is None else reusable(ent[0], path)


def _meta(kind: str, id_: str, suffix: str, create: bool = False) -> Path:
    d = cache_dir(kind) / _META
    if create:
        d.mkdir(exist_ok=True)
    return d / f"{id_}.{suffix}"


def mark_used(kind: str, id_: str) -> None:
    """Record a use of entry ``kind/id_`` now (atomically replaces its ``.used`` marker)."""
    used = _meta(kind, id_, "used", create=True)
    tmp = used.with_name(f"{used.name}.{os.getpid()}-{secrets.token_hex(4)}")
    tmp.write_text(json.dumps({"pid": os.getpid(), "time": time.time()}))
    os.replace(tmp, used)


def last_used(kind: str, path: Path) -> float:
    """Time of the entry's last recorded use; its marker's (or folder's) mtime if never held."""
    for p in (_meta(kind, path.name, "used"), path / COMPLETE[kind], path):
        try:
            return p.stat().st_mtime
        except FileNotFoundError:
            continue
    return 0.0


def _open_lock(kind: str, id_: str, mode: int) -> int | None:
    """An fd on the entry's lock file locked with ``mode``, or ``None`` when ``LOCK_NB`` was
    asked and another process holds a conflicting lock.

    The lock file is re-checked after locking: eviction unlinks it, so a lock taken on an
    unlinked file (a new one may exist by now) guards nothing and is retried.
    """
    lock = _meta(kind, id_, "lock", create=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, mode)
        except BlockingIOError:
            os.close(fd)
            return None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def is_held(kind: str, id_: str) -> bool:
    """Whether a running flow holds entry ``kind/id_`` (never waits)."""
    lock = _meta(kind, id_, "lock")
    try:
        fd = os.open(lock, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock taken here
    return False


@contextmanager
def hold(path: str | Path) -> Iterator[bool]:
    """Keep ``gc`` away from the cache entry at ``path`` while the block runs.

    Takes a shared lock on the entry's lock file (waiting only while a ``gc`` is renaming
    that entry away) and records the use on entry and exit. ``path`` may not exist yet
    (a flow holds a checkpoint it is about to build); a path outside the cache is not held.

    Yields:
        Whether ``path`` is usable now: a complete entry whose files match its manifest
        (``reusable``: a corrupt one is discarded), or an existing path outside the cache.
        ``False`` means the caller must build it (again).
    """
    ent = entry_of(path)
    if ent is None:
        yield Path(path).exists()
        return
    kind, id_ = ent
    fd = _open_lock(kind, id_, fcntl.LOCK_SH)
    assert fd is not None  # a blocking lock always returns an fd
    try:
        usable = reusable(kind, path)
        if usable:
            mark_used(kind, id_)
        yield usable
    finally:
        if is_complete(kind, path):
            mark_used(kind, id_)
        os.close(fd)


def publish(tmp: Path, out: Path, kind: str) -> None:
    """Move a finished build ``tmp`` (its marker written last) to ``out`` and mark it used.

    The manifest of ``tmp``'s files is written first. A complete ``out`` built meanwhile by
    another process wins (same id, same content) and ``tmp`` is left for the caller to
    delete; an incomplete leftover is discarded first.
    """
    write_manifest(tmp)
    if not is_complete(kind, out):
        if out.exists():
            _discard(out)
        os.replace(tmp, out)
    mark_used(kind, out.name)


def _discard(path: Path) -> int:
    """Rename ``path`` to a trash name in its folder, then delete it; returns bytes freed."""
    trash = path.with_name(f"{_TRASH}{path.name}-{secrets.token_hex(4)}")
    os.rename(path, trash)
    size = disk_bytes(trash)
    shutil.rmtree(trash)  # interrupted here: only trash is left, removed by the next gc
    return size


def entries(pins: Iterable[str] | None = None) -> list[Entry]:
    """Every entry of every kind, least recently used first.

    Args:
        pins: ``kind/id`` keys the registry points at (``pinned``); ``None``: not known.
    """
    pinned = None if pins is None else set(pins)
    out = []
    for kind in COMPLETE:
        for p in cache_dir(kind).iterdir():
            if p.name.startswith(".") or not p.is_dir():
                continue
            out.append(
                Entry(
                    kind=kind,
                    id=p.name,
                    path=str(p),
                    size_bytes=disk_bytes(p),
                    last_used=last_used(kind, p),
                    complete=is_complete(kind, p),
                    held=is_held(kind, p.name),
                    pinned=None if pinned is None else f"{kind}/{p.name}" in pinned,
                )
            )
    return sorted(out, key=lambda e: (e.last_used, e.key))


def plan(ents: list[Entry], max_bytes: int) -> tuple[list[Entry], int]:
    """Entries to evict, in order, until the total is at most ``max_bytes``.

    Incomplete leftovers go first, then least recently used; held and pinned entries never.

    Returns:
        ``(victims, total after evicting them)``.
    """
    total = sum(e.size_bytes for e in ents)
    victims = []
    for e in sorted(ents, key=lambda e: (e.complete, e.last_used, e.key)):
        if total <= max_bytes:
            break
        if not e.held and not e.pinned:
            victims.append(e)
            total -= e.size_bytes
    return victims, total


def evict(e: Entry) -> bool:
    """Remove entry ``e`` unless a flow holds it now; returns whether it was removed."""
    fd = _open_lock(e.kind, e.id, fcntl.LOCK_EX | fcntl.LOCK_NB)
    if fd is None:
        return False
    path = Path(e.path)
    trash = path.with_name(f"{_TRASH}{e.id}-{secrets.token_hex(4)}")
    try:
        if not path.exists():
            return False
        os.rename(path, trash)
        for suffix in ("lock", "used"):  # under the lock: a waiting hold() then retries
            _meta(e.kind, e.id, suffix).unlink(missing_ok=True)
    finally:
        os.close(fd)
    shutil.rmtree(trash)  # interrupted here: only trash is left, removed by the next gc
    return True


def clear_trash() -> int:
    """Delete what interrupted evictions left; returns the bytes freed."""
    freed = 0
    for kind in COMPLETE:
        for p in cache_dir(kind).glob(f"{_TRASH}*"):
            freed += disk_bytes(p)
            shutil.rmtree(p, ignore_errors=True)
    return freed


def gc(max_bytes: int, pins: Iterable[str], dry_run: bool = False) -> GcReport:
    """Evict least recently used entries until the cache holds at most ``max_bytes``.

    Never evicts a held entry (checked again, under an exclusive lock, at eviction) or a
    pinned one. The registry's pins must be given: without them nothing can be evicted safely.

    Args:
        max_bytes: the bound.
        pins: ``kind/id`` keys of entries the model registry points at.
        dry_run: report what would be evicted, remove nothing.
    """
    if not dry_run:
        clear_trash()
    ents = entries(pins)
    before = sum(e.size_bytes for e in ents)
    victims, _ = plan(ents, max_bytes)
    evicted = [e for e in victims if dry_run or evict(e)]
    gone = {e.key for e in evicted}
    left = [e for e in ents if e.key not in gone]
    raced = {e.key for e in victims} - gone  # held by a flow after the listing
    return GcReport(
        max_bytes=max_bytes,
        total_before=before,
        total_after=sum(e.size_bytes for e in left),
        evicted=evicted,
        kept_held=[e for e in left if e.held or e.key in raced],
        kept_pinned=[e for e in left if e.pinned],
        dry_run=dry_run,
    )
