import json

import pytest

from ecocompress.metrics import tracking


@pytest.fixture()
def store(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_default_uri_is_sqlite_under_home(store):
    assert tracking.tracking_uri() == f"sqlite:///{store.resolve() / 'mlflow.db'}"


def test_env_uri_wins(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking.tracking_uri() == "http://mlflow.example:5000"


def test_parent_with_two_children_round_trip(store, tmp_path):
    tags = tracking.provenance_tags()
    parent = tracking.start_parent_run(
        "sweep-test", "sweep", {"model": "tiny", "eval": {"limit": 5}}, tags
    )
    c = tracking.client()
    exp_id = c.get_run(parent).info.experiment_id
    assert tracking.get_or_create_experiment("sweep-test") == exp_id
    assert c.get_experiment(exp_id).artifact_location.startswith(
        (store / "mlartifacts").resolve().as_uri()
    )

    ok = tracking.start_child_run(parent, exp_id, "bf16", {"bits": 16}, {"stage": "eval"})
    bad = tracking.start_child_run(parent, exp_id, "nf4", {"bits": 4}, {})
    tracking.log_metrics(
        ok, {"accuracy": 0.5, "exact_match/gsm8k": 0.25, "energy_kwh": None, "x": float("nan")}
    )
    csv = tmp_path / "emissions.csv"
    csv.write_text("duration,energy\n1.0,2e-6\n")
    tracking.log_artifact(ok, csv, "energy")
    tracking.log_dict(ok, {"results": {"gsm8k": 0.25}}, "lm_eval.json")
    tracking.end_run(ok, "FINISHED")
    tracking.end_run(bad, "FAILED")
    tracking.end_run(parent)

    run = c.get_run(ok)
    assert run.data.metrics == {"accuracy": 0.5, "exact_match/gsm8k": 0.25}  # None/NaN never logged
    assert run.data.params == {"bits": "16"}
    assert run.data.tags["mlflow.parentRunId"] == parent and run.data.tags["stage"] == "eval"
    assert run.info.run_name == "bf16" and run.info.status == "FINISHED"
    assert c.get_run(bad).info.status == "FAILED"
    assert c.get_run(bad).data.tags["mlflow.parentRunId"] == parent
    parent_run = c.get_run(parent)
    assert parent_run.data.params == {"model": "tiny", "eval.limit": "5"}
    assert parent_run.data.tags["ecocompress.code_version"] == tags["ecocompress.code_version"]
    paths = {a.path for a in c.list_artifacts(ok)} | {
        a.path for a in c.list_artifacts(ok, "energy")
    }
    assert {"lm_eval.json", "energy/emissions.csv"} <= paths
    local = c.download_artifacts(ok, "lm_eval.json", str(tmp_path))
    assert json.loads(open(local).read()) == {"results": {"gsm8k": 0.25}}


def test_end_run_rejects_unknown_status(store):
    with pytest.raises(ValueError, match="allowed FINISHED"):
        tracking.end_run("0" * 32, "DONE")  # type: ignore[arg-type]


def test_provenance_tags():
    tags = tracking.provenance_tags()
    assert len(tags["ecocompress.git_sha"]) == 40 or tags["ecocompress.git_sha"] == "unknown"
    for pkg in ("torch", "transformers", "lm_eval", "codecarbon", "mlflow", "prefect", "python"):
        assert tags[f"ecocompress.version.{pkg}"] not in ("", "not installed")
    tags["x"] = "y"  # callers get a copy
    assert "x" not in tracking.provenance_tags()


def test_runs_of_a_dead_process_are_closed_and_others_kept(store):
    import subprocess
    import sys

    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    dead = {**tracking.owner_tags(), "ecocompress.owner.pid": str(p.pid)}
    c = tracking.client()
    exp = tracking.get_or_create_experiment("owners")
    mine = tracking.start_parent_run("owners", "live", {}, {})
    orphan = c.create_run(exp, tags=dead).info.run_id
    unowned = c.create_run(exp).info.run_id  # made before owners were recorded: unknown
    done = c.create_run(exp, tags=dead).info.run_id
    tracking.end_run(done)

    assert tracking.close_dead_runs() == [orphan]
    assert c.get_run(orphan).info.status == "FAILED"
    assert c.get_run(orphan).data.tags["failure_reason"] == "process died"
    assert [c.get_run(r).info.status for r in (mine, unowned, done)] == [
        "RUNNING",
        "RUNNING",
        "FINISHED",
    ]
    # a resumed command re-opens it as its own: RUNNING, no stale reason
    tracking.reopen_run(orphan)
    run = c.get_run(orphan)
    assert run.info.status == "RUNNING" and "failure_reason" not in run.data.tags
    assert run.data.tags["ecocompress.owner.pid"] == str(__import__("os").getpid())
