"""Integration: a sweep of the tiny model on lm-eval tasks that are not curated (ARC-Easy and
PIQA from the shared data dir through the packaged mapping), the project's perplexity, and
a user's own task YAMLs (one reading its own file, one given with --task-data), offline."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def eco_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("eco-home-any")
    old = {k: os.environ.get(k) for k in ("ECOCOMPRESS_HOME", "MLFLOW_TRACKING_URI")}
    os.environ["ECOCOMPRESS_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


ITEMS = [
    {"question": "Water freezes at", "choices": ["0 C", "50 C", "90 C"], "answer": 0},
    {"question": "The sun rises in the", "choices": ["north", "east", "west"], "answer": 1},
    {"question": "Two plus two is", "choices": ["three", "five", "four"], "answer": 2},
]


def _task(folder: Path, name: str, dataset: dict) -> None:
    cfg = {
        "task": name,
        **dataset,
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Q: {{question}}\nA:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "acc_norm", "higher_is_better": True}],
    }
    (folder / f"{name}.yaml").write_text(json.dumps(cfg))


@pytest.fixture(scope="module")
def user_tasks(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("my-tasks")
    data = folder / "items.jsonl"
    data.write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    # reads its own local file
    _task(
        folder,
        "my_qa",
        {"dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(data)}}},
    )
    # names a Hub dataset: offline it needs --task-data
    _task(folder, "my_hub_qa", {"dataset_path": "someone/qa"})
    return folder


def _sweep(tiny_model_dir, data_dir, *argv: str) -> dict:
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow

    base = ["--model", str(tiny_model_dir), "--data-dir", str(data_dir), "--limit", "3"]
    r = resolve("sweep", parse_settings("sweep", [*base, *argv]))
    return sweep_flow(**flow_parameters(r), quiet=True)


def test_sweep_on_lm_eval_tasks_perplexity_and_users_own(
    tiny_model_dir, shared_data_dir, user_tasks, eco_home
):
    from mlflow import MlflowClient
    from prefect.testing.utilities import prefect_test_harness

    from ecocompress.metrics.tracking import tracking_uri

    with prefect_test_harness():
        s = _sweep(
            tiny_model_dir,
            shared_data_dir,
            "--benchmarks",
            "arc_easy,piqa,perplexity,my_qa,my_hub_qa",
            "--include-path",
            str(user_tasks),
            "--task-data",
            f"my_hub_qa={user_tasks / 'items.jsonl'}:test",
            "--ppl-tokens",
            "256",
            "--ppl-window",
            "128",
            "--ppl-stride",
            "64",
            "--experiment",
            "any-benchmark",
        )
    assert s["n_ok"] == 1
    row = s["rows"][0]
    for col in ("acc/arc_easy", "acc/piqa", "acc_norm/my_qa", "acc_norm/my_hub_qa"):
        assert 0.0 <= row[col] <= 1.0
        assert row["eval_cost"][col.partition("/")[2]]["n_items"] == 3
    assert row["perplexity/wikitext2"] > 1
    units = [row[c] for c in ("acc/arc_easy", "acc/piqa", "acc_norm/my_qa", "acc_norm/my_hub_qa")]
    assert row["accuracy"] == pytest.approx(sum(units) / 4)  # perplexity is not averaged in

    client = MlflowClient(tracking_uri())
    parent = client.get_run(s["parent_run_id"])
    kid = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{s['parent_run_id']}'"
    )[0]
    assert kid.data.tags["direction/acc/piqa"] == "max"
    assert kid.data.tags["direction/perplexity/wikitext2"] == "min"
    assert kid.data.tags["accuracy_of"] == "arc_easy,piqa,my_qa,my_hub_qa"
    assert {"acc_stderr/arc_easy", "acc_norm_stderr/my_qa"} <= set(kid.data.metrics)
    results = json.loads(
        Path(client.download_artifacts(kid.info.run_id, "benchmark_results.json")).read_text()
    )
    assert results["arc_easy"]["result"]["data_source"].endswith("ARC-Easy-test.hf_format.jsonl")
    assert results["my_qa"]["result"]["data_source"].startswith("task yaml:")
    assert results["my_hub_qa"]["result"]["data_source"].endswith("items.jsonl")
    # the items scored are the files' first ones, in order
    arc = json.loads(Path(results["arc_easy"]["result"]["results_path"]).read_text())
    docs = [smp["doc"]["id"] for smp in arc["samples"]["ecocompress_arc_easy"]]
    first = [
        json.loads(line)["id"]
        for line in (shared_data_dir / "arc_easy" / "ARC-Easy-test.hf_format.jsonl")
        .read_text()
        .splitlines()[:3]
    ]
    assert docs == first


def test_offline_hub_task_without_local_data_is_refused_up_front(
    tiny_model_dir, shared_data_dir, user_tasks, eco_home, capsys
):
    from ecocompress.flows.cli import main

    rc = main(
        [
            "sweep",
            "--model",
            str(tiny_model_dir),
            "--data-dir",
            str(shared_data_dir),
            "--benchmarks",
            "my_hub_qa",
            "--include-path",
            str(user_tasks),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and "reads the Hub dataset 'someone/qa' but the Hub is offline" in err[0]
    assert "--task-data my_hub_qa=FILE" in err[0]
