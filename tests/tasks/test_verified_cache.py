"""Caches that verify: every entry carries a manifest of its files' sha256, every hit
re-hashes them, and an entry that no longer matches is discarded (said so) and rebuilt."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from ecocompress.tasks import cache

MB = 1 << 20


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def published(kind: str = "pruned", id_: str = "e1") -> Path:
    """An entry built as the tasks build one: files, marker last, ``publish``."""
    tmp = cache.cache_dir(kind) / f".{id_}-tmp"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(os.urandom(2 * MB))
    (tmp / "config.json").write_text('{"a": 1}')
    (tmp / cache.COMPLETE[kind]).write_text("{}")
    out = cache.cache_dir(kind) / id_
    cache.publish(tmp, out, kind)
    return out


def zero_same_size(f: Path, offset: int, n: int) -> None:
    """Overwrite ``n`` bytes with zeros, keeping the size and setting the mtime back."""
    st = f.stat()
    with open(f, "r+b") as fh:
        fh.seek(offset)
        fh.write(bytes(n))
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert f.stat().st_size == st.st_size and f.stat().st_mtime_ns == st.st_mtime_ns


def test_publish_writes_a_manifest_of_every_file(home):
    out = published()
    want = json.loads((out / cache.MANIFEST).read_text())["sha256"]
    assert sorted(want) == ["config.json", "model.safetensors", "ref.json"]
    assert cache.mismatch(out) is None
    assert cache.reusable("pruned", out) and out.is_dir()


def _zeroed(out: Path) -> None:
    zero_same_size(out / "model.safetensors", MB // 2, 4096)


def _truncated(out: Path) -> None:
    with open(out / "model.safetensors", "r+b") as fh:
        fh.truncate(MB)


def _added(out: Path) -> None:
    (out / "model-00002-of-00002.safetensors").write_bytes(b"\0" * 64)


def _removed(out: Path) -> None:
    (out / "config.json").unlink()


def _no_manifest(out: Path) -> None:
    (out / cache.MANIFEST).unlink()


def _bad_manifest(out: Path) -> None:
    (out / cache.MANIFEST).write_text('{"sha256": ')


@pytest.mark.parametrize(
    "corrupt, why",
    [
        (_zeroed, "model.safetensors does not match its sha256"),
        (_truncated, "model.safetensors does not match its sha256"),
        (_added, "model-00002-of-00002.safetensors was added"),
        (_removed, "config.json is missing"),
        (_no_manifest, "it has no manifest"),
        (_bad_manifest, "its manifest is unreadable"),
    ],
)
def test_a_corrupt_entry_is_discarded_with_one_line_never_used(home, capsys, corrupt, why):
    out = published()
    corrupt(out)
    assert cache.mismatch(out) == why
    assert cache.reusable("pruned", out) is False  # never fatal
    assert not out.exists()
    assert not list(out.parent.glob(".trash-*"))  # removed, not left as trash
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"ecocompress: warning: cache entry pruned/e1 is corrupt ({why}): discarded, rebuilding it"
    ]


def test_hold_of_a_corrupt_entry_says_build_it(home, capsys):
    out = published(id_="held")
    _zeroed(out)
    with cache.hold(out) as usable:
        assert usable is False and not out.exists()
    assert "cache entry pruned/held is corrupt" in capsys.readouterr().err
    good = published(id_="good")
    with cache.hold(good) as usable:
        assert usable is True


def test_an_incomplete_entry_is_a_plain_miss(home, capsys):
    out = published()
    (out / cache.COMPLETE["pruned"]).unlink()
    assert cache.reusable("pruned", out) is False
    assert out.exists() and capsys.readouterr().err == ""  # publish replaces it later


@pytest.mark.slow  # loads, prunes and saves the tiny model twice: about 2-4 s
@pytest.mark.parametrize("corrupt", [_zeroed, _truncated])
def test_a_corrupt_pruned_checkpoint_is_rebuilt_to_the_same_bytes(
    tiny_model_dir, home, capsys, corrupt
):
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.prune import prune
    from ecocompress.tasks.specs import PruneSpec

    ref = resolve_model(str(tiny_model_dir))
    spec = PruneSpec(method="magnitude", sparsity=0.5)
    first = prune(ref, spec, None)
    out = Path(first.path)
    manifest = (out / cache.MANIFEST).read_text()
    f = out / "model.safetensors"
    if corrupt is _zeroed:  # the tensor data, past the header: loads fine, wrong weights
        zero_same_size(f, f.stat().st_size // 2, 4096)
    else:
        corrupt(out)
    again = prune(ref, spec, None)
    assert "cache entry pruned/" in capsys.readouterr().err
    assert again == first and (out / cache.MANIFEST).read_text() == manifest
    assert cache.mismatch(out) is None  # rebuilt: every file as it was first published


def test_a_gguf_corrupted_behind_its_memo_is_hashed_again_before_converting(home, tmp_path):
    from ecocompress.tasks.artifacts import sha256_file
    from ecocompress.tasks.download import GGUFMismatch, convert_gguf, memo_hash

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(os.urandom(MB))
    good = memo_hash(gguf, sha256_file)
    zero_same_size(gguf, 1000, 64)
    assert memo_hash(gguf, sha256_file) == good  # the memo alone cannot tell
    with pytest.raises(GGUFMismatch, match=r"m\.gguf has sha256 .*, expected"):
        convert_gguf(gguf, expected=good)  # before any conversion work
    assert memo_hash(gguf, sha256_file) == sha256_file(gguf) != good  # the memo is corrected
