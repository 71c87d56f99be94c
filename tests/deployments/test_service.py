"""The service end to end, with real processes: PostgreSQL, ``ecocompress server start`` (Prefect,
MLflow, the webhook receiver, a worker), ``ecocompress deploy``, a new MLflow model version
(the registry's webhook), a watched folder that changes, two commands at once, a replayed
delivery, and a restart. Everything is checked over HTTP.

PostgreSQL: ``ECOCOMPRESS_TEST_DATABASE_URL`` (``.ci/run`` starts one), else a throwaway
cluster started here with ``.ci/postgres``. About 6-9 minutes on 2 busy cores.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import pytest

from ecocompress.flows.events import MODEL_UPDATED

pytestmark = [pytest.mark.slow, pytest.mark.service]
REPO = Path(__file__).resolve().parents[2]
RUNS_TIMEOUT_S = 1500  # three tiny searches one after another on a busy 2-core machine
FLAGS = [
    "--bits", "16", "--prune", "none", "--benchmarks", "perplexity",
    "--ppl-tokens", "96", "--ppl-window", "32", "--ppl-stride", "32",
    "--max-candidates", "1",
]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def database_url():
    url = os.environ.get("ECOCOMPRESS_TEST_DATABASE_URL")
    if url:
        yield url
        return
    # postgres refuses root and needs to reach its folder: a world-readable one under /tmp
    folder = tempfile.mkdtemp(prefix="eco-pg-", dir="/tmp")
    os.chmod(folder, 0o755)
    out = subprocess.run(
        [str(REPO / ".ci" / "postgres"), f"{folder}/pg", str(free_port())],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr
    yield out.stdout.strip().splitlines()[-1]
    subprocess.run([str(REPO / ".ci" / "postgres"), "--stop", f"{folder}/pg"], timeout=120)
    shutil.rmtree(folder, ignore_errors=True)


class Stack:
    def __init__(self, home: Path, env: dict[str, str]):
        self.home, self.env = home, env
        self.ports = {k: free_port() for k in ("prefect", "mlflow", "webhook")}
        self.prefect = f"http://127.0.0.1:{self.ports['prefect']}/api"
        self.mlflow = f"http://127.0.0.1:{self.ports['mlflow']}"
        self.webhooks = f"http://127.0.0.1:{self.ports['webhook']}"

    def cli(self, *args: str, timeout: float = 900, check: bool = True, **kw):
        r = subprocess.run(
            [sys.executable, "-m", "ecocompress.deployments.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kw,
        )
        if check:
            assert r.returncode == 0, f"{args[:2]}: {r.stderr[-3000:]}"
        return r

    def start(self, database_url: str):
        return self.cli(
            "server", "start", "--database-url", database_url,
            "--prefect-port", str(self.ports["prefect"]),
            "--mlflow-port", str(self.ports["mlflow"]),
            "--webhook-port", str(self.ports["webhook"]),
        )  # fmt: skip

    def api(self, method: str, path: str, **kw) -> httpx.Response:
        r = httpx.request(method, self.prefect + path, timeout=60, **kw)
        r.raise_for_status()
        return r

    def deployment_id(self, flow: str, name: str) -> str:
        return self.api("GET", f"/deployments/name/{flow}/{name}").json()["id"]

    def runs(self, deployment_id: str) -> list[dict]:
        body = {"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC"}
        return self.api("POST", "/flow_runs/filter", json=body).json()

    def events(self) -> list[dict]:
        body = {"filter": {"event": {"name": [MODEL_UPDATED]}}, "limit": 50}
        return self.api("POST", "/events/filter", json=body).json()["events"]

    def stats(self) -> dict:
        return httpx.get(self.webhooks + "/stats", timeout=30).json()


def wait_for(what: str, check, timeout: float = RUNS_TIMEOUT_S, every: float = 3.0):
    """``check()``'s first truthy value; fails with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)  # polling interval


def mlflow_delivery(secret: str, payload: dict, delivery_id: str) -> tuple[bytes, dict]:
    """A delivery signed as mlflow/webhooks/delivery.py signs (checked in test_webhooks.py)."""
    body = json.dumps(payload).encode()
    ts = str(int(time.time()))
    digest = hmac.new(secret.encode(), f"{delivery_id}.{ts}.".encode() + body, hashlib.sha256)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Signature": "v1," + base64.b64encode(digest.digest()).decode(),
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
    }
    return body, headers


def test_the_service_end_to_end(database_url, tiny_model_dir, shared_data_dir, tmp_path):
    from ecocompress.flows.environment import HUB_OFFLINE, TELEMETRY_OFF

    home = tmp_path / "home"
    env = {
        **os.environ,
        **HUB_OFFLINE,
        **TELEMETRY_OFF,
        "ECOCOMPRESS_HOME": str(home),
        "ECOCOMPRESS_DATA_DIR": str(shared_data_dir),
        "OMP_NUM_THREADS": "1",
    }
    for var in ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "PREFECT_HOME"):
        env.pop(var, None)
    s = Stack(home, env)
    watched = tmp_path / "watched-lm"
    shutil.copytree(tiny_model_dir, watched)
    try:
        t0 = time.monotonic()
        s.start(database_url)
        started_s = time.monotonic() - t0
        state = json.loads((home / "stack" / "stack.json").read_text())
        assert state["database"].startswith("postgresql://eco:***@")  # no password on disk
        assert s.cli("server", "status").returncode == 0

        deployed = s.cli(
            "deploy", "--cron", "", "--watch", str(watched), "--watch-every-s", "86400",
            "--data-dir", str(shared_data_dir), "--experiment", "service-e2e", *FLAGS,
        )  # fmt: skip
        assert "on-new-model" in deployed.stdout
        on_new = s.deployment_id("ecocompress-optimize", "on-new-model")
        watch_dep = s.deployment_id("ecocompress-watch", "watch")

        # 1. the watch deployment sees the folder for the first time: one search
        s.api("POST", f"/deployments/{watch_dep}/create_flow_run", json={})
        wait_for("the first watch's search", lambda: len(s.runs(on_new)) >= 1)

        # 2. a new model version in the MLflow registry: its webhook starts one search
        import mlflow

        client = mlflow.MlflowClient(s.mlflow)
        exp = client.create_experiment("uploads")
        run = client.create_run(exp)
        client.log_artifacts(run.info.run_id, str(tiny_model_dir), "model")
        client.set_terminated(run.info.run_id)
        client.create_registered_model("tiny-upload")
        t_version = time.monotonic()
        version = client.create_model_version(
            "tiny-upload", source=f"{run.info.artifact_uri}/model", run_id=run.info.run_id
        )
        wait_for("the registry's search", lambda: len(s.runs(on_new)) >= 2)
        event_to_run_s = time.monotonic() - t_version

        # the same version announced again (a new delivery id): received, de-duplicated
        secret = json.loads((home / "stack" / "secrets.json").read_text())
        payload = {
            "entity": "model_version",
            "action": "created",
            "data": {"name": "tiny-upload", "version": version.version, "tags": {}},
        }
        body, headers = mlflow_delivery(
            secret["ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET"], payload, str(uuid.uuid4())
        )
        assert httpx.post(s.webhooks + "/mlflow", content=body, headers=headers).status_code == 202
        # ... and that delivery replayed byte for byte: refused, nothing emitted
        n_events = len(wait_for("3 events", lambda: len(s.events()) >= 3 and s.events()))
        replay = httpx.post(s.webhooks + "/mlflow", content=body, headers=headers)
        assert replay.status_code == 409
        assert s.stats()["refused"]["replayed"] == 1

        # 3. the watched folder changes: the next check starts one more search
        (watched / "generation_config.json").write_text('{"do_sample": false}')
        s.api("POST", f"/deployments/{watch_dep}/create_flow_run", json={})

        def finished():
            runs = s.runs(on_new)
            done = [r for r in runs if r["state_type"] in ("COMPLETED", "FAILED", "CRASHED")]
            return runs if len(runs) >= 3 and len(done) == len(runs) else None

        runs = wait_for("three finished searches", finished)
        assert [r["state_type"] for r in runs] == ["COMPLETED"] * 3, [
            (r["state_type"], r["state"]["message"]) for r in runs
        ]
        assert n_events == len(s.events()) - 1  # the replay added no event; the change one
        # exactly one search per new (model, revision): the duplicate started nothing
        models = [r["parameters"]["params"]["model"] for r in runs]
        assert models == [str(watched.resolve()), "models:/tiny-upload/1", str(watched.resolve())]
        threads = [r["parameters"]["thread_id"] for r in runs]
        assert len(set(threads)) == 3
        # the searches' own registered versions were announced to nobody
        assert s.stats()["ignored"] >= 1

        # their runs are in MLflow, one optimize parent per search, with candidates under it
        for thread in threads:
            parents = client.search_runs(
                [client.get_experiment_by_name("service-e2e").experiment_id],
                filter_string=f"tags.optimize_thread_id = '{thread}'",
            )
            assert parents, thread
            assert {p.info.status for p in parents} == {"FINISHED"}

        # 4. two commands at once on the same home, through the stack: both finish
        sweep = ["sweep", "--model", str(tiny_model_dir), "--data-dir", str(shared_data_dir)]
        sweep += [*FLAGS[:-2], "--quiet"]
        both = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "ecocompress.deployments.cli",
                    *sweep,
                    "--experiment",
                    f"concurrent-{i}",
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )  # fmt: skip
            for i in range(2)
        ]
        for p in both:
            _, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-2000:]
        for i in range(2):
            exp_i = client.get_experiment_by_name(f"concurrent-{i}")
            assert exp_i is not None and client.search_runs([exp_i.experiment_id])

        # 5. a restart keeps everything: deployments, flow runs, MLflow runs
        n_runs = len(
            client.search_runs([client.get_experiment_by_name("service-e2e").experiment_id])
        )
        s.cli("server", "stop")
        assert s.cli("server", "status", check=False).returncode == 1
        s.start(database_url)
        assert s.deployment_id("ecocompress-optimize", "on-new-model") == on_new
        assert [r["id"] for r in s.runs(on_new)] == [r["id"] for r in runs]
        client = mlflow.MlflowClient(s.mlflow)
        exp_id = client.get_experiment_by_name("service-e2e").experiment_id
        assert len(client.search_runs([exp_id])) == n_runs
        # the replay store survived too
        replay = httpx.post(s.webhooks + "/mlflow", content=body, headers=headers)
        assert replay.status_code == 409

        (home / "measured.json").write_text(
            json.dumps({"stack_start_s": started_s, "version_to_flow_run_s": event_to_run_s})
        )
        print(f"stack start {started_s:.0f} s; model version to flow run {event_to_run_s:.0f} s")
    finally:
        s.cli("server", "stop", check=False)
