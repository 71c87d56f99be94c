"""End to end on the real gemma-3-270m (from the PyPI GGUF package), shared data, small limit.

The main job as a user runs it, through the installed command: a 2 x 2 sweep (bf16 and NF4,
dense and Wanda 50 %) on all five benchmarks and WikiText-2 perplexity, then the identical command again, which
must evaluate nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ecocompress.tasks.benchmarks import REGISTRY

pytestmark = pytest.mark.e2e

CANDIDATES = {"bf16", "wanda-0.5+bf16", "nf4-bitsandbytes", "wanda-0.5+nf4-bitsandbytes"}


def _sweep(data_dir: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("ecocompress") or sys.executable
    head = [exe] if exe.endswith("ecocompress") else [exe, "-m", "ecocompress.flows.cli"]
    cmd = [
        *head,
        "sweep",
        "--bits",
        "16,4",
        "--prune",
        "none,wanda",
        "--sparsity",
        "0.5",
        "--benchmarks",
        "truthfulqa,commonsenseqa,bbh,gsm8k,humaneval,perplexity",
        "--ppl-tokens",
        "1024",
        "--allow-code-execution",
        "--limit",
        "2",
        "--max-gen-toks",
        "64",
        "--data-dir",
        str(data_dir),
        "--experiment",
        "e2e",
    ]
    return subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=1500,
        env=os.environ.copy(),
        cwd=Path(__file__).resolve().parents[2],
    )


@pytest.fixture(scope="module")
def first_run(shared_data_dir):
    r = _sweep(shared_data_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _runs():
    from mlflow import MlflowClient

    from ecocompress.metrics.tracking import tracking_uri

    c = MlflowClient(tracking_uri())
    exp = c.get_experiment_by_name("e2e")
    runs = c.search_runs([exp.experiment_id], order_by=["attribute.start_time DESC"])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return c, parents, runs


def test_sweep_logs_real_numbers(first_run):
    out = first_run.stdout
    assert "SCREENING (limit=2)" in out
    assert all(c in out for c in CANDIDATES)
    c, parents, runs = _runs()
    parent = parents[0]
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    by = {r.data.tags["candidate"]: r for r in kids}
    assert set(by) == CANDIDATES
    for r in kids:
        assert r.info.status == "FINISHED"
        m = r.data.metrics
        for b in ("truthfulqa", "commonsenseqa", "bbh", "gsm8k", "humaneval"):
            assert 0.0 <= m[REGISTRY[b].column] <= 1.0
        assert m["energy_kwh"] > 0 and m["co2_kg"] > 0 and m["latency_ms"] > 0
        assert "codecarbon" in r.data.tags["energy_method"]
        assert r.data.tags["model_content_hash"] == parent.data.tags["model_content_hash"]
    mem = {k: r.data.metrics["memory_gb"] for k, r in by.items()}
    # bf16 holds 268 M params x 2 bytes; NF4 packs the decoder Linear layers (the tied
    # 170 M-param embedding stays bf16), so it is smaller but far from 4x.
    assert mem["bf16"] == pytest.approx(0.536, abs=0.01)
    assert 0.3 < mem["nf4-bitsandbytes"] < 0.45
    assert by["bf16"].data.metrics["compression_ratio"] == pytest.approx(2.0, rel=0.01)
    assert by["wanda-0.5+bf16"].data.metrics["sparsity"] == pytest.approx(0.5, abs=0.005)
    ppl = {k: r.data.metrics for k, r in by.items()}
    # dense gemma-3-270m on the first 1024 WikiText-2 test tokens: 17.2 when measured
    # (tests/perf/planner_grid_fidelity.py); Wanda 50 % is worse beyond the 95 % intervals
    assert 10 < ppl["bf16"]["perplexity/wikitext2"] < 30
    assert (
        ppl["wanda-0.5+bf16"]["perplexity_ci_low/wikitext2"]
        > ppl["bf16"]["perplexity_ci_high/wikitext2"]
    )
    pareto = c.download_artifacts(parent.info.run_id, "pareto.json")
    doc = json.loads(Path(pareto).read_text())
    assert doc["screening"] is True and doc["frontier"]
    assert set(doc["frontier"]) <= CANDIDATES


def test_identical_rerun_evaluates_nothing(first_run, shared_data_dir):
    r = _sweep(shared_data_dir)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "steps executed: 0" in r.stdout
    _, parents, runs = _runs()
    kids = [x for x in runs if x.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(kids) == 4 and all(x.data.tags["cache_hit"] == "true" for x in kids)
