"""The bounded checkpoint cache: sizes, LRU eviction, holds, registry pins, crash safety and
the ``ecocompress cache`` command, on real folders in a temporary ECOCOMPRESS_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ecocompress.tasks import cache, cache_pins
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.sizes import disk_bytes, parse_size

MB = 1_000_000


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "home"


def make_entry(
    kind: str, id_: str, nbytes: int, used_at: float | None, complete: bool = True
) -> Path:
    """A cache entry with ``nbytes`` of random weights, last used at ``used_at``."""
    d = cache.cache_dir(kind) / id_
    d.mkdir()
    (d / "model.safetensors").write_bytes(os.urandom(nbytes))
    if complete:
        (d / cache.COMPLETE[kind]).write_text(json.dumps({"content_hash": "c", "prune_spec": id_}))
        cache.write_manifest(d)  # as publish does
    if used_at is not None:
        cache.mark_used(kind, id_)
        os.utime(cache.cache_dir(kind) / ".meta" / f"{id_}.used", (used_at, used_at))
    return d


def keys(entries) -> list[str]:
    return [e.key for e in entries]


# ---- sizes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, n",
    [
        ("20GB", 20 * 10**9),
        ("500MiB", 500 * 2**20),
        ("1.5G", 1_500_000_000),
        ("2 gib", 2 * 2**30),
        (".5k", 500),
        ("0", 0),
        ("1024", 1024),
        ("3Ti", 3 * 2**40),
    ],
)
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("text", ["", "GB", "20XB", "-1GB", "1e3", "nan", "1.2.3G", "20 G B"])
def test_bad_size_is_one_clear_line(text):
    with pytest.raises(UserError, match=r"^bad size .*such as 20GB, 500MiB, 1\.5G or 0$"):
        parse_size(text)


def test_disk_bytes_counts_blocks_and_hard_links_once(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    (d / "w").write_bytes(os.urandom(MB))
    os.link(d / "w", d / "w2")  # same inode
    with open(d / "sparse", "wb") as f:
        f.truncate(100 * MB)  # 100 MB long, nothing allocated
    n = disk_bytes(d)
    assert MB <= n < 2 * MB
    assert n == sum(os.lstat(p).st_blocks * 512 for p in (d, d / "w", d / "sparse"))


# ---- entries, LRU, holds, pins --------------------------------------------------------


def test_ls_lists_entries_lru_first_with_sizes_and_last_use(home):
    make_entry("pruned", "b", MB, used_at=2000)
    make_entry("gguf", "a", 2 * MB, used_at=1000)
    make_entry("pruned", "c", MB, used_at=3000, complete=False)
    (cache.cache_dir("pruned") / ".b-tmp123").mkdir()  # a build in progress: not an entry
    ents = cache.entries(pins={"pruned/b"})
    assert keys(ents) == ["gguf/a", "pruned/b", "pruned/c"]
    by = {e.key: e for e in ents}
    assert by["gguf/a"].size_bytes >= 2 * MB and by["gguf/a"].last_used == 1000
    assert [e.pinned for e in ents] == [False, True, False]
    assert [e.complete for e in ents] == [True, True, False]
    assert not any(e.held for e in ents)
    assert cache.entries()[0].pinned is None  # registry not read


def test_gc_evicts_least_recently_used_until_under_the_bound(home):
    for i, t in enumerate((3000, 1000, 2000)):
        make_entry("pruned", f"e{i}", MB, used_at=t)
    size = cache.entries()[0].size_bytes
    r = cache.gc(2 * size, pins=set())
    assert keys(r.evicted) == ["pruned/e1"]  # used at 1000
    assert r.freed == size and r.total_after == 2 * size
    assert keys(cache.entries()) == ["pruned/e2", "pruned/e0"]
    assert not (cache.cache_dir("pruned") / "e1").exists()
    assert not (cache.cache_dir("pruned") / ".meta" / "e1.used").exists()


def test_dry_run_removes_nothing(home):
    make_entry("pruned", "x", MB, used_at=1000)
    r = cache.gc(0, pins=set(), dry_run=True)
    assert keys(r.evicted) == ["pruned/x"] and r.total_after == 0
    assert keys(cache.entries()) == ["pruned/x"]


def test_a_held_entry_survives_gc_and_its_use_is_recorded(home):
    old = make_entry("pruned", "old", MB, used_at=1000)
    make_entry("pruned", "new", MB, used_at=2000)
    with cache.hold(old) as usable:  # a second fd on the lock file, in this process
        assert usable
        assert cache.entries()[-1].key == "pruned/old"  # the hold is its latest use
        assert [e.held for e in cache.entries()] == [False, True]
        r = cache.gc(0, pins=set())
    assert keys(r.evicted) == ["pruned/new"] and keys(r.kept_held) == ["pruned/old"]
    assert cache.is_complete("pruned", old)
    assert cache.gc(0, pins=set()).evicted[0].key == "pruned/old"  # released


def test_an_entry_held_by_another_process_survives_gc(home):
    d = make_entry("gguf", "held", MB, used_at=1000)
    lock = cache.cache_dir("gguf") / ".meta" / "held.lock"
    lock.touch()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys; f = open(sys.argv[1]); fcntl.flock(f, fcntl.LOCK_SH); "
            "print('held', flush=True); sys.stdin.read()",
            str(lock),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        r = cache.gc(0, pins=set())
        assert r.evicted == [] and keys(r.kept_held) == ["gguf/held"] and d.is_dir()
    finally:
        holder.communicate("")
    assert keys(cache.gc(0, pins=set()).evicted) == ["gguf/held"]


def test_an_entry_held_after_the_listing_is_not_evicted(home):
    d = make_entry("pruned", "late", MB, used_at=1000)
    listed = cache.entries()
    with cache.hold(d):
        assert cache.evict(listed[0]) is False
    assert d.is_dir()


def test_a_pinned_entry_survives_gc(home):
    make_entry("pruned", "pinned", MB, used_at=1000)
    make_entry("pruned", "other", MB, used_at=2000)
    r = cache.gc(0, pins={"pruned/pinned"})
    assert keys(r.evicted) == ["pruned/other"] and keys(r.kept_pinned) == ["pruned/pinned"]
    assert r.total_after > 0


def test_incomplete_entry_is_not_a_hit_and_goes_first(home):
    d = make_entry("pruned", "half", MB, used_at=time.time(), complete=False)
    make_entry("pruned", "whole", MB, used_at=1000)
    assert not cache.is_complete("pruned", d)
    with cache.hold(d) as usable:
        assert usable is False  # the caller must build it
    size = cache.entries()[0].size_bytes
    assert keys(cache.gc(size, pins=set()).evicted) == ["pruned/half"]  # despite its recent use


def test_eviction_is_crash_safe(home, monkeypatch):
    """An eviction killed half-way through deleting leaves only trash: never listed, never
    a hit, removed by the next gc."""
    d = make_entry("pruned", "gone", MB, used_at=1000)

    def killed_half_way(path, *a, **k):
        os.remove(Path(path) / "model.safetensors")  # the weights go first, then the kill
        raise KeyboardInterrupt

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(cache.shutil, "rmtree", killed_half_way)
        cache.gc(0, pins=set())
    assert not d.exists() and not cache.is_complete("pruned", d)
    assert cache.entries() == []
    with cache.hold(d) as usable:
        assert usable is False
    trash = list(d.parent.glob(".trash-gone-*"))
    assert len(trash) == 1
    cache.gc(10**12, pins=set())
    assert not trash[0].exists()


def test_a_hold_waiting_on_an_evicted_entry_uses_a_fresh_lock(home):
    d = make_entry("pruned", "z", MB, used_at=1000)
    lock = cache.cache_dir("pruned") / ".meta" / "z.lock"
    assert cache.evict(cache.entries()[0])
    assert not d.exists() and not lock.exists()
    with cache.hold(d) as usable:
        assert usable is False and lock.exists()
        assert cache.is_held("pruned", "z")


def test_publish_keeps_a_complete_entry_and_replaces_a_leftover(home):
    out = cache.cache_dir("pruned") / "p"
    out.mkdir()
    (out / "partial.safetensors").write_bytes(b"x")  # leftover of an interrupted build
    tmp = cache.cache_dir("pruned") / ".p-1"
    tmp.mkdir()
    (tmp / "ref.json").write_text("{}")
    cache.publish(tmp, out, "pruned")
    assert sorted(p.name for p in out.iterdir()) == [cache.MANIFEST, "ref.json"]
    assert not tmp.exists() and cache.mismatch(out) is None
    tmp.mkdir()
    (tmp / "ref.json").write_text('{"second": 1}')
    cache.publish(tmp, out, "pruned")  # a concurrent build of the same id: the first stays
    assert (out / "ref.json").read_text() == "{}"


def test_pin_tag_and_pins_from_tags(home, tmp_path):
    p = make_entry("pruned", "p1", 10, used_at=None)
    g = make_entry("gguf", "g1", 10, used_at=None)
    assert cache_pins.pin_tag([g, p, tmp_path]) == "gguf/g1,pruned/p1"
    assert cache_pins.pin_tag([tmp_path]) == "none"
    tags = [{"cache_entries": "gguf/g1,pruned/p1"}, {"cache_entries": "none"}, {"other": "x"}]
    assert cache_pins.pins_from_tags(tags) == {"gguf/g1", "pruned/p1"}
    # a version registered before the tag existed is matched by its lineage tags
    legacy = [{"reference_content_hash": "c", "prune_spec": "p1"}]
    assert cache_pins.pins_from_tags(legacy) == {"pruned/p1"}


# ---- the command -----------------------------------------------------------------------


@pytest.fixture
def registry(monkeypatch):
    """A fake registry (no MLflow): the tags of its model versions, settable by a test."""
    from ecocompress.metrics import tracking

    versions: list[dict[str, str]] = []
    monkeypatch.setattr(tracking, "model_version_tags", lambda: list(versions))
    monkeypatch.setattr("ecocompress.flows.stack.running_stack", lambda *a, **k: None)
    return versions


def main(*argv: str) -> int:
    from ecocompress.deployments.cli import main as cli_main

    return cli_main(list(argv))


def test_cli_ls_table_and_json(home, registry, capsys):
    make_entry("pruned", "aaa", MB, used_at=1000)
    make_entry("gguf", "bbb", MB, used_at=2000)
    registry.append({"cache_entries": "gguf/bbb"})
    assert main("cache", "ls") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["KIND", "ID", "SIZE", "LAST", "USED", "HELD", "PINNED", "COMPLETE"]
    assert out[1].split()[:2] == ["pruned", "aaa"] and out[1].split()[-3:] == ["no", "no", "yes"]
    assert out[2].split()[:2] == ["gguf", "bbb"] and out[2].split()[-3:] == ["no", "yes", "yes"]
    assert out[3].startswith("2 entries, 2.") and out[3].endswith("held 0, pinned 1")
    assert main("cache", "ls", "--json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["kind"], r["id"], r["pinned"]) for r in rows] == [
        ("pruned", "aaa", False),
        ("gguf", "bbb", True),
    ]
    assert rows[0]["size_bytes"] >= MB and rows[0]["last_used"] == 1000


def test_cli_gc_prints_what_it_evicted_and_bytes_freed(home, registry, capsys):
    make_entry("pruned", "old", MB, used_at=1000)
    make_entry("pruned", "new", MB, used_at=2000)
    registry.append({"cache_entries": "pruned/new"})
    assert main("cache", "gc", "--max-size", "0", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("would evict pruned/old  1.0") and "would free 1.0" in out
    assert len(cache.entries()) == 2
    assert main("cache", "gc", "--max-size", "0") == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("evicted pruned/old  1.0")
    freed = int(out[1].split("(")[1].split()[0])
    assert freed >= MB and out[1].endswith("limit 0 B")
    assert (
        out[2]
        == "still over the limit: kept 0 held by running flows and 1 pinned by the model registry"
    )
    assert keys(cache.entries()) == ["pruned/new"]


def test_cli_bad_size_exits_2_with_one_line(home, registry, capsys):
    assert main("cache", "gc", "--max-size", "20XB") == 2
    err = capsys.readouterr().err
    assert (
        err
        == "ecocompress: error: bad size '20XB': give a number and a unit, such as 20GB, 500MiB, 1.5G or 0\n"
    )


def test_cli_gc_needs_max_size(home, capsys):
    with pytest.raises(SystemExit) as e:
        main("cache", "gc")
    assert e.value.code == 2
    assert "--max-size" in capsys.readouterr().err


def test_cli_gc_evicts_nothing_when_the_registry_cannot_be_read(home, monkeypatch, capsys):
    from ecocompress.metrics import tracking

    def unreadable():
        raise OSError("database is locked\nmore detail")

    monkeypatch.setattr(tracking, "model_version_tags", unreadable)
    monkeypatch.setattr("ecocompress.flows.stack.running_stack", lambda *a, **k: None)
    make_entry("pruned", "keep", MB, used_at=1000)
    assert main("cache", "gc", "--max-size", "0") == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("ecocompress: error: cannot read the MLflow model registry at sqlite:")
    assert err[0].endswith("database is locked more detail; evicting nothing")
    assert keys(cache.entries()) == ["pruned/keep"]
    assert main("cache", "ls") == 0  # listing still works, pinned unknown
    captured = capsys.readouterr()
    assert "pinned unknown" in captured.out and captured.err.startswith("ecocompress: warning:")


@pytest.mark.slow  # creating the SQLite MLflow store: 3-14 s, with the machine's load
def test_registry_pins_read_from_a_real_mlflow_store(home, monkeypatch, capsys):
    """A model version registered in a SQLite MLflow store with its cache_entries tag pins
    that entry: gc to 0 evicts everything else."""
    from ecocompress.metrics import tracking

    monkeypatch.setattr("ecocompress.flows.stack.running_stack", lambda *a, **k: None)
    kept = make_entry("pruned", "registered", MB, used_at=1000)
    make_entry("pruned", "unregistered", MB, used_at=2000)
    c = tracking.client()
    c.create_registered_model("ecocompress-tiny")
    c.create_model_version(
        "ecocompress-tiny",
        source="runs:/x/candidate",
        tags={"cache_entries": cache_pins.pin_tag([kept])},
    )
    assert tracking.model_version_tags() == [{"cache_entries": "pruned/registered"}]
    assert main("cache", "gc", "--max-size", "0") == 0
    assert capsys.readouterr().out.startswith("evicted pruned/unregistered")
    assert keys(cache.entries()) == ["pruned/registered"]


@pytest.mark.slow  # an optimize and an evaluate on the tiny model: about 1-3 minutes
def test_optimize_fills_the_cache_and_gc_keeps_the_registered_entry(
    home, tiny_model_dir, shared_data_dir, capsys
):
    """A real search fills the cache with two pruned checkpoints and registers one; gc to 0
    keeps exactly that one; the evicted one is rebuilt (not read from a stale Prefect
    result) when a later command needs it."""
    from prefect.testing.utilities import prefect_test_harness

    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow
    from ecocompress.metrics import tracking

    common = ["--model", str(tiny_model_dir), "--bits", "16", "--prune", "magnitude"]
    common += ["--data-dir", str(shared_data_dir), "--limit", "2", "--experiment", "tiny-cache"]
    with prefect_test_harness():
        t0 = time.perf_counter()
        rc = main(
            "optimize",
            *common,
            *("--sparsity", "0.3,0.5", "--benchmarks", "commonsenseqa", "--reeval-limit", "2"),
            *("--max-candidates", "2", "--thread-id", "cache1", "--quiet"),
        )
        t_optimize = time.perf_counter() - t0
        assert rc == 0, capsys.readouterr().err[-2000:]
        capsys.readouterr()
        assert main("cache", "ls", "--json") == 0
        filled = json.loads(capsys.readouterr().out)
        assert [(e["kind"], e["complete"], e["held"]) for e in filled] == [
            ("pruned", True, False)
        ] * 2
        [version] = tracking.model_version_tags()
        registered = version["cache_entries"]
        assert registered in {f"pruned/{e['id']}" for e in filled}
        assert [e["pinned"] for e in filled].count(True) == 1
        spec = {e["id"]: json.loads(Path(e["path"], "ref.json").read_text()) for e in filled}

        assert main("cache", "gc", "--max-size", "0") == 0
        out = capsys.readouterr().out
        [evicted] = [e for e in filled if f"pruned/{e['id']}" != registered]
        assert out.startswith(f"evicted pruned/{evicted['id']}")
        assert keys(cache.entries()) == [registered]

        # the evicted candidate evaluated on a new benchmark: the checkpoint is rebuilt
        sparsity = str(json.loads(spec[evicted["id"]]["prune_spec"])["sparsity"])
        argv = [*common, "--sparsity", sparsity, "--benchmarks", "truthfulqa", "--quiet"]
        summary = sweep_flow(
            **flow_parameters(resolve("evaluate", parse_settings("evaluate", argv)))
        )
    assert summary["n_ok"] == 1
    assert any(s.endswith(":prune") for s in summary["executed_steps"])
    assert cache.is_complete("pruned", evicted["path"])
    print(
        f"optimize (2 candidates) {t_optimize:.1f} s; entries "
        f"{[e['size_bytes'] for e in filled]} bytes"
    )
