"""A re-run over a tampered home: a corrupt cached checkpoint and a corrupt cached result are
rebuilt (and said so) to the same numbers; planted pickles are never loaded."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest

from tests.flows.test_records import PlantedCode, prefect_pickle_record
from tests.tasks.test_verified_cache import zero_same_size

pytestmark = pytest.mark.slow  # two sweeps of one candidate on the tiny model: about 30-60 s


@pytest.fixture
def eco_home(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield tmp_path / "home"


def _sweep(tiny_model_dir: Path, data_dir: Path) -> dict:
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow

    argv = ["--model", str(tiny_model_dir), "--bits", "16", "--prune", "magnitude"]
    argv += ["--sparsity", "0.5", "--benchmarks", "perplexity", "--ppl-tokens", "128"]
    argv += ["--ppl-window", "64", "--ppl-stride", "32", "--data-dir", str(data_dir)]
    r = resolve("sweep", parse_settings("sweep", [*argv, "--experiment", "verify"]))
    return sweep_flow(**flow_parameters(r), quiet=True)


def _records_of(home: Path, step: str) -> list[Path]:
    found = [
        f
        for f in (home / "step-results").glob("*.json")
        if json.loads(f.read_text())["step"] == step
    ]
    assert found, f"no {step} record"
    return found


def test_tampered_caches_are_rebuilt_to_the_same_numbers(
    tiny_model_dir, shared_data_dir, eco_home, tmp_path, capfd
):
    first = _sweep(tiny_model_dir, shared_data_dir)
    assert first["n_ok"] == len(first["rows"])
    (row,) = [r for r in first["rows"] if r["candidate"].startswith("magnitude")]
    ppl = row["perplexity/wikitext2"]

    # 1. the pruned weights: 4 KiB zeroed inside the tensor data, size and mtime kept
    pruned = eco_home / "cache" / "pruned"
    (entry,) = [p for p in pruned.iterdir() if p.is_dir() and not p.name.startswith(".")]
    weights = entry / "model.safetensors"
    zero_same_size(weights, weights.stat().st_size // 2, 4096)
    # 2. cached results cut short
    evs, meas = _records_of(eco_home, "evaluate"), _records_of(eco_home, "measure")
    for ev in evs:
        ev.write_bytes(ev.read_bytes()[:100])
    # 3. pickles that run code when loaded: as a step record, and where Prefect kept results
    marker = tmp_path / "UNPICKLED"
    for rec in meas:
        rec.write_bytes(prefect_pickle_record(marker))
    (eco_home / "prefect-results").mkdir(exist_ok=True)
    for name in ("k1", "k2"):
        (eco_home / "prefect-results" / name).write_bytes(prefect_pickle_record(marker))
    (eco_home / "prefect-results" / "raw").write_bytes(pickle.dumps(PlantedCode(marker)))
    capfd.readouterr()

    again = _sweep(tiny_model_dir, shared_data_dir)
    err = capfd.readouterr().err
    assert not marker.exists()
    assert again["n_ok"] == len(again["rows"])
    (row2,) = [r for r in again["rows"] if r["candidate"] == row["candidate"]]
    assert row2["perplexity/wikitext2"] == pytest.approx(ppl, rel=1e-9)
    assert row2["sparsity"] == row["sparsity"]
    label = row["candidate"]
    assert {f"{label}:prune", f"{label}:measure", f"{label}:evaluate perplexity"} <= set(
        again["executed_steps"]
    )
    assert f"cache entry pruned/{entry.name} is corrupt" in err
    assert "cached evaluate result" in err and "cached measure result" in err
    assert os.path.getsize(weights) > 0 and all(ev.exists() for ev in evs)  # recorded again
    for r in again["rows"]:  # the unpruned candidate's numbers too
        (r1,) = [x for x in first["rows"] if x["candidate"] == r["candidate"]]
        assert r["perplexity/wikitext2"] == pytest.approx(r1["perplexity/wikitext2"], rel=1e-9)
