"""Which cache entries the MLflow registry points at: ``tasks/cache.py``'s gc never evicts them.

A registered version names the entries it needs in its ``cache_entries`` tag; one registered
before that tag existed is matched by its lineage tags.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path

from ecocompress.tasks.artifacts import cache_dir
from ecocompress.tasks.cache import COMPLETE, entry_of, is_complete

# Model-version tag listing the cache entries a registered candidate needs ("kind/id,...").
PIN_TAG = "cache_entries"


def pin_tag(paths: Iterable[str | Path]) -> str:
    """The ``cache_entries`` tag value for the checkpoints at ``paths``: ``kind/id,...``,
    or ``none`` when none of them is a cache entry (a local or Hub model)."""
    keys = [f"{k}/{i}" for k, i in filter(None, map(entry_of, paths))]
    return ",".join(dict.fromkeys(keys)) or "none"


def pins_from_tags(version_tags: Iterable[Mapping[str, str]]) -> set[str]:
    """``kind/id`` keys of the entries model versions point at.

    A version carries them in its ``cache_entries`` tag. One registered before that tag
    existed is matched by lineage instead: pruned entries whose ``ref.json`` has its
    ``reference_content_hash`` and ``prune_spec``, and converted references with that
    content hash.
    """
    pins: set[str] = set()
    legacy: list[Mapping[str, str]] = []
    for tags in version_tags:
        if PIN_TAG in tags:
            pins |= {k for k in tags[PIN_TAG].split(",") if k and k != "none"}
        elif tags.get("reference_content_hash"):
            legacy.append(tags)
    if legacy:
        pins |= _lineage_pins(legacy)
    return pins


def _lineage_pins(versions: list[Mapping[str, str]]) -> set[str]:
    from ecocompress.tasks.download import content_hash

    wanted = {(t["reference_content_hash"], t.get("prune_spec")) for t in versions}
    refs = {h for h, _ in wanted}
    pins = set()
    for p in cache_dir("pruned").iterdir():
        if not p.name.startswith(".") and is_complete("pruned", p):
            ref = json.loads((p / COMPLETE["pruned"]).read_text())
            if (ref.get("content_hash"), ref.get("prune_spec")) in wanted:
                pins.add(f"pruned/{p.name}")
    for p in cache_dir("gguf").iterdir():
        if p.is_dir() and not p.name.startswith(".") and is_complete("gguf", p):
            if content_hash(p) in refs:
                pins.add(f"gguf/{p.name}")
    return pins
