"""Integration: ``optimize`` on the tiny local model - decisions on MLflow runs, the
recommendation in the Model Registry, and resuming a search killed with SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import OFFLINE_ENV

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]


def argv(model: Path, data: Path, *extra: str, bench: str = "commonsenseqa") -> list[str]:
    return [
        "optimize",
        "--model",
        str(model),
        "--bits",
        "16,8",
        "--prune",
        "none,magnitude",
        "--sparsity",
        "0.5",
        "--pattern",
        "unstructured",
        "--benchmarks",
        bench,
        "--limit",
        "2",
        "--reeval-limit",
        "2",  # no close-call re-evaluation: the tiny model's accuracy is noise
        "--data-dir",
        str(data),
        "--experiment",
        "tiny-opt",
        "--quiet",
        *extra,
    ]


def client(home: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{home}/mlflow.db")


def runs(home: Path, thread: str):
    c = client(home)
    exp = c.get_experiment_by_name("tiny-opt")
    return c.search_runs([exp.experiment_id], f"tags.optimize_thread_id = '{thread}'")


def artifact(home: Path, run_id: str, name: str):
    import mlflow

    p = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=name, tracking_uri=f"sqlite:///{home}/mlflow.db"
    )
    return json.loads(Path(p).read_text())


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    """One Prefect server for the module's commands. Without it each command starts its own
    temporary server, and a command killed with SIGKILL leaves that server orphaned."""
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_HOME, temporary_settings

    with temporary_settings({PREFECT_HOME: str(tmp_path_factory.mktemp("prefect"))}):
        server = SubprocessASGIServer()
        server.start(timeout=120)
    yield server.api_url
    server.stop()


def cli(home: Path, api: str, args: list[str], **env: str) -> subprocess.CompletedProcess:
    e = {**os.environ, **OFFLINE_ENV, "ECOCOMPRESS_HOME": str(home), "PREFECT_API_URL": api, **env}
    e.pop("MLFLOW_TRACKING_URI", None)
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "out.log", "w+") as out, open(home / "err.log", "w+") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "ecocompress.flows.cli", *args],
            cwd=REPO,
            env=e,
            stdout=out,
            stderr=err,
            text=True,
            timeout=900,
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read(), err.read())


def test_optimize_records_decisions_and_registers_the_recommendation(
    tiny_model_dir, shared_data_dir, tmp_path, prefect_api
):
    home = tmp_path / "home"
    r = cli(
        home,
        prefect_api,
        argv(tiny_model_dir, shared_data_dir, "--max-candidates", "3", "--thread-id", "a1"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "stopped: candidate budget spent: 3 of 3 evaluations" in r.stdout
    all_runs = runs(home, "a1")
    parent = [x for x in all_runs if "mlflow.parentRunId" not in x.data.tags]
    kids = [x for x in all_runs if "mlflow.parentRunId" in x.data.tags]
    assert len(parent) == 1 and len(kids) == 3
    assert parent[0].info.status == "FINISHED"
    assert parent[0].data.tags["stop_reason"] == "candidate budget spent: 3 of 3 evaluations"
    by_index = {k.data.tags["evaluation_index"]: k for k in kids}
    assert by_index["0"].data.tags["proposed_by"] == "reference"
    assert by_index["0"].data.tags["candidate"] == "bf16"
    for k in kids:
        assert k.info.status == "FINISHED"
        assert k.data.tags["decision_reason"]
        seen = json.loads(k.data.tags["decision_state"])
        assert seen["n_evaluations"] == int(k.data.tags["evaluation_index"])
    d = artifact(home, parent[0].info.run_id, "decisions.json")
    assert d["policy"] == "agent" and d["thread_id"] == "a1"
    assert [x["event"] for x in d["decisions"]] == ["propose"] * 3 + ["stop"]
    # the Model Registry holds the recommended candidate with its lineage and alias
    rec = artifact(home, parent[0].info.run_id, "recommendation.json")
    mv = client(home).get_model_version_by_alias("ecocompress-tiny-opt", "balanced")
    assert mv.tags["candidate"] == rec["candidate"]
    for k in ("reference_content_hash", "prune_spec", "quant_spec", "candidate_id"):
        assert mv.tags[k]
    recipe = artifact(home, mv.run_id, "candidate/recipe.json")
    assert json.loads(mv.tags["quant_spec"]) == recipe["quant_spec"]
    assert mv.run_id in {k.info.run_id for k in kids}


def test_killed_optimize_resumes_without_rerunning_or_duplicating(
    tiny_model_dir, shared_data_dir, tmp_path, prefect_api
):
    home = tmp_path / "home"
    args = argv(
        tiny_model_dir,
        shared_data_dir,
        "--max-candidates",
        "2",
        "--thread-id",
        "k1",
        bench="commonsenseqa,truthfulqa",
    )
    # reference: prune, quantize, measure, 2 evaluations, carbon = 6 executed steps;
    # int8: prune is the reference's (cached), quantize, measure, commonsenseqa = step 9
    killed = cli(home, prefect_api, args, ECOCOMPRESS_TEST_SIGKILL_AFTER_STEPS="9")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    before = runs(home, "k1")
    assert len(before) == 3  # parent + 2 children, none finished the search
    assert {x.info.status for x in before} == {"RUNNING", "FINISHED"}

    r = cli(home, prefect_api, args)
    assert r.returncode == 0, r.stderr[-2000:]
    after = runs(home, "k1")
    assert {x.info.run_id for x in after} == {x.info.run_id for x in before}  # no duplicates
    assert {x.info.status for x in after} == {"FINISHED"}
    parent = next(x for x in after if "mlflow.parentRunId" not in x.data.tags)
    assert parent.data.tags["resumed"] == "true"
    steps = artifact(home, parent.info.run_id, "steps.json")["executed"]
    # only what had not finished when the process was killed ran again
    assert steps == ["int8-bitsandbytes:evaluate truthfulqa", "int8-bitsandbytes:carbon"]
    d = artifact(home, parent.info.run_id, "decisions.json")
    assert [x.get("label") for x in d["decisions"] if x["event"] == "propose"] == [
        "bf16",
        "int8-bitsandbytes",
    ]


def test_batch_on_two_workers_proposes_and_scores_as_the_sequential_batch(
    tiny_model_dir, shared_data_dir, tmp_path, prefect_api
):
    """``--batch 2 --workers 2`` against ``--batch 2`` evaluated one after another: the same
    proposals at the same evaluation indexes with the same scores, every child run
    FINISHED under its parent, decisions grouped by batch."""
    base = argv(tiny_model_dir, shared_data_dir, "--policy", "grid", "--max-candidates", "4")
    base += ["--batch", "2"]
    out = {}
    for name, extra in (("seq", []), ("par", ["--workers", "2"])):
        home = tmp_path / name
        r = cli(home, prefect_api, [*base, "--thread-id", name, *extra])
        assert r.returncode == 0, r.stderr[-2000:]
        kids = [x for x in runs(home, name) if "mlflow.parentRunId" in x.data.tags]
        assert {x.info.status for x in runs(home, name)} == {"FINISHED"}
        out[name] = {
            k.data.tags["evaluation_index"]: (
                k.data.tags["candidate"],
                k.data.metrics["acc/commonsenseqa"],
                k.data.metrics["acc_stderr/commonsenseqa"],
            )
            for k in kids
        }
        parent = next(x for x in runs(home, name) if "mlflow.parentRunId" not in x.data.tags)
        d = artifact(home, parent.info.run_id, "decisions.json")
        props = [x for x in d["decisions"] if x["event"] == "propose"]
        assert [x["batch_start"] for x in props] == [0, 0, 2, 2]
        assert len({x["key"] for x in props}) == 4
    assert sorted(out["seq"]) == ["0", "1", "2", "3"]
    assert out["par"] == out["seq"]


def test_multi_fidelity_optimize_screens_races_and_records_why(
    tiny_model_dir, shared_data_dir, tmp_path, prefect_api
):
    home = tmp_path / "home"
    args = argv(
        tiny_model_dir,
        shared_data_dir,
        "--multi-fidelity",
        "--ppl-tokens",
        "256",
        "--ppl-window",
        "128",
        "--ppl-stride",
        "64",
        "--limit",
        "3",
        "--thread-id",
        "mf1",
        "--no-register",
    )
    r = cli(home, prefect_api, args)
    assert r.returncode == 0, r.stderr[-2000:]
    parent = next(x for x in runs(home, "mf1") if "mlflow.parentRunId" not in x.data.tags)
    d = artifact(home, parent.info.run_id, "decisions.json")
    props = [x for x in d["decisions"] if x["event"] == "propose"]
    assert [p["rung"] for p in props] == sorted(p["rung"] for p in props)
    assert props[0]["label"] == "bf16" and props[0]["benchmarks"] == ["perplexity"]
    assert {p["kind"] for p in props if p["rung"] > 0} == {"promote"}
    assert any(p["rung"] == 2 for p in props)
    assert "screening is done" in d["stop_reason"]
    for e in (x for x in d["decisions"] if x["event"] == "eliminate"):
        assert e["reason"] and e["rung"] < 2
    kids = [x for x in runs(home, "mf1") if "mlflow.parentRunId" in x.data.tags]
    assert len(kids) == len(props)
    rung0 = [k for k in kids if k.data.tags["rung"] == "0"]
    # rung 0 screens on perplexity alone: no accuracy benchmark ran
    assert rung0 and all("accuracy" not in k.data.metrics for k in rung0)
    assert all("perplexity/wikitext2" in k.data.metrics for k in kids)
    results = artifact(home, parent.info.run_id, "results.json")
    top = [x for x in results if x.get("rung") == 2]
    assert top and all(x["status"] == "ok" for x in top)
    assert all(
        x["status"] == "eliminated" and x["eliminated_at_rung"] == x["rung"]
        for x in results
        if x.get("rung") != 2
    )


def test_llm_fallbacks_are_counted_in_the_search_run_metrics(
    tiny_model_dir, shared_data_dir, tmp_path, prefect_api
):
    home = tmp_path / "home"
    llm = ["--policy", "llm", "--llm", "python:tests.agents.fake_chat:invalid_answers"]
    extra = ["--max-candidates", "2", "--thread-id", "l1", "--no-register", *llm]
    r = cli(home, prefect_api, argv(tiny_model_dir, shared_data_dir, *extra))
    assert r.returncode == 0, r.stderr[-2000:]
    parent = [x for x in runs(home, "l1") if "mlflow.parentRunId" not in x.data.tags]
    m = parent[0].data.metrics
    # the reference needs no answer; the second candidate: two invalid answers, the agent's
    assert m["llm_answers"] == 2 and m["llm_invalid_answers"] == 2
    assert m["llm_valid_answers"] == 0 and m["llm_fallbacks"] == 1
    d = artifact(home, parent[0].info.run_id, "decisions.json")
    assert [x.get("fallback_from") for x in d["decisions"] if x["event"] == "propose"] == [
        None,
        "llm",
    ]
