"""The webhook receivers: MLflow deliveries signed by MLflow's own signing function are accepted,
forged, tampered, stale, replayed, unsigned and malformed ones are refused with their code and
counted, and an accepted delivery emits exactly one ModelUpdate."""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature
from starlette.testclient import TestClient

from ecocompress.deployments.webhooks import (
    Outcome,
    WebhookSettings,
    create_app,
    jsonl_sink,
)
from ecocompress.flows.events import ModelUpdate
from ecocompress.tasks.errors import UserError

MLFLOW_SECRET = "mlflow-" + secrets.token_hex(16)
HF_SECRET = "hf-" + secrets.token_hex(16)
SHA = "c379e821c9c95d613899e8c4343e4bfee2b0c600"


class Capture:
    """A fake emitter: records the updates it is given, or fails when told to."""

    def __init__(self) -> None:
        self.updates: list[ModelUpdate] = []
        self.fail = False

    def __call__(self, update: ModelUpdate) -> str:
        if self.fail:
            raise ConnectionError("prefect unreachable (fake)")
        self.updates.append(update)
        return f"event-{len(self.updates)}"


@pytest.fixture
def settings(tmp_path) -> WebhookSettings:
    return WebhookSettings(
        mlflow_secret=MLFLOW_SECRET, hf_secret=HF_SECRET, db_path=tmp_path / "webhooks.db"
    )


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def client(settings, capture) -> TestClient:
    return TestClient(create_app(settings, emit=capture))


def mlflow_body(entity="model_version", action="created", name="tiny-lm", version="3") -> bytes:
    """A body shaped as mlflow/webhooks/delivery.py builds it."""
    data = {"name": name, "version": version, "source": "/models/tiny", "run_id": None}
    payload = {
        "entity": entity,
        "action": action,
        "timestamp": datetime.now(timezone.utc).isoformat(),
        "data": {**data, "tags": {}, "description": None},
    }
    return json.dumps(payload).encode()


def mlflow_delivery(
    body: bytes | None = None,
    secret: str = MLFLOW_SECRET,
    delivery_id: str | None = None,
    timestamp: int | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an MLflow delivery, signed with MLflow's own function."""
    body = mlflow_body() if body is None else body
    delivery_id = delivery_id or str(uuid.uuid4())
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {
        "Content-Type": "application/json",
        "X-MLflow-Delivery-Id": delivery_id,
        "X-MLflow-Timestamp": ts,
        "X-MLflow-Signature": _generate_hmac_signature(secret, delivery_id, ts, body.decode()),
    }
    return headers, body


def hub_body(scope="repo.content", action="update", repo_type="model", new_sha=SHA) -> bytes:
    """A body shaped as the Hub's documented repo.content payload."""
    return json.dumps(
        {
            "event": {"action": action, "scope": scope},
            "repo": {
                "type": repo_type,
                "name": "acme/tiny-lm",
                "id": "6366c000a2abcdf2fd69a080",
                "private": False,
                "url": {"web": "https://huggingface.co/acme/tiny-lm"},
                "headSha": new_sha,
                "owner": {"id": "61fc5be8a3e3b6a6f2d1c3e1"},
            },
            "updatedRefs": [{"ref": "refs/heads/main", "oldSha": "0" * 40, "newSha": new_sha}],
            "webhook": {"id": "6390e855e30d9209411de93b", "version": 3},
        }
    ).encode()


def post_mlflow(client, headers, body):
    return client.post("/mlflow", content=body, headers=headers)


def post_hub(client, body, secret=HF_SECRET):
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Webhook-Secret"] = secret
    return client.post("/hub", content=body, headers=headers)


def refused(client) -> dict[str, int]:
    return client.get("/stats").json()["refused"]


def test_mlflow_delivery_signed_by_mlflow_emits_one_update(client, capture):
    r = post_mlflow(client, *mlflow_delivery())
    assert r.status_code == 202 and r.json()["outcome"] == "accepted"
    assert capture.updates == [
        ModelUpdate(
            model="models:/tiny-lm/3", revision="3", source="mlflow", seen_by="mlflow-webhook"
        )
    ]
    stats = client.get("/stats").json()
    assert stats["accepted"] == 1 and sum(stats["refused"].values()) == 0
    assert client.get("/health").status_code == 200


def test_mlflow_within_skew_is_accepted(client, capture):
    for skew in (-250, 250):
        r = post_mlflow(client, *mlflow_delivery(timestamp=int(time.time()) + skew))
        assert r.status_code == 202
    assert len(capture.updates) == 2


def test_forged_signatures_are_refused(client, capture):
    headers, body = mlflow_delivery()
    unsigned = {k: v for k, v in headers.items() if k != "X-MLflow-Signature"}
    assert post_mlflow(client, unsigned, body).status_code == 401
    for bad in (
        "v1,not-base64!",
        "v1,",
        "sha256=" + "ab" * 32,
        "v2," + headers["X-MLflow-Signature"][3:],
    ):
        assert post_mlflow(client, {**headers, "X-MLflow-Signature": bad}, body).status_code == 401
    assert refused(client)["forged"] == 5
    assert capture.updates == []


def test_tampered_deliveries_are_refused(client, capture):
    headers, body = mlflow_delivery()
    changed_body = body.replace(b'"version": "3"', b'"version": "4"')
    assert changed_body != body
    r = post_mlflow(client, headers, changed_body)
    assert r.status_code == 401 and r.json() == {"outcome": "tampered"}
    other_id = {**headers, "X-MLflow-Delivery-Id": str(uuid.uuid4())}
    assert post_mlflow(client, other_id, body).status_code == 401
    later = {**headers, "X-MLflow-Timestamp": str(int(headers["X-MLflow-Timestamp"]) + 1)}
    assert post_mlflow(client, later, body).status_code == 401
    # signed with another secret: an HMAC cannot tell that from a changed body
    assert post_mlflow(client, *mlflow_delivery(secret="not-the-secret")).status_code == 401
    assert refused(client)["tampered"] == 4
    assert capture.updates == []


# ahead by 330 s, not 301: the check runs later than the signing on a busy machine
@pytest.mark.parametrize("skew", [-301, -3600, 330, 3600])
def test_stale_deliveries_are_refused_both_directions(client, capture, skew):
    r = post_mlflow(client, *mlflow_delivery(timestamp=int(time.time()) + skew))
    assert r.status_code == 401 and r.json() == {"outcome": "stale"}
    assert refused(client)["stale"] == 1 and capture.updates == []


def test_replay_is_refused_also_after_a_restart(settings, capture):
    headers, body = mlflow_delivery()
    client = TestClient(create_app(settings, emit=capture))
    assert post_mlflow(client, headers, body).status_code == 202
    r = post_mlflow(client, headers, body)
    assert r.status_code == 409 and r.json()["outcome"] == "replayed"
    restarted = TestClient(create_app(settings, emit=capture))  # same db file
    assert post_mlflow(restarted, headers, body).status_code == 409
    assert len(capture.updates) == 1
    stats = restarted.get("/stats").json()
    assert stats["accepted"] == 1 and stats["refused"]["replayed"] == 2


def test_a_delivery_whose_event_failed_can_be_retried(client, capture):
    """MLflow retries a 5xx with the same delivery id: that retry must not count as a replay."""
    headers, body = mlflow_delivery()
    capture.fail = True
    r = post_mlflow(client, headers, body)
    assert r.status_code == 503 and r.json()["outcome"] == "not_emitted"
    capture.fail = False
    assert post_mlflow(client, headers, body).status_code == 202
    assert len(capture.updates) == 1


def test_an_emitter_that_sends_nothing_is_not_accepted(settings):
    """emit_model_updated returns None when Prefect has no events client."""
    client = TestClient(create_app(settings, emit=lambda update: None))
    assert post_mlflow(client, *mlflow_delivery()).status_code == 503


def test_hub_update_emits_one_update_and_refuses_its_replay(client, capture):
    r = post_hub(client, hub_body())
    assert r.status_code == 202
    assert capture.updates == [
        ModelUpdate(model="acme/tiny-lm", revision=SHA, source="hub", seen_by="hub-webhook")
    ]
    assert post_hub(client, hub_body()).status_code == 409
    assert post_hub(client, hub_body(new_sha="d" * 40)).status_code == 202
    assert [u.revision for u in capture.updates] == [SHA, "d" * 40]


def test_hub_wrong_or_missing_secret_is_refused(client, capture):
    assert post_hub(client, hub_body(), secret=HF_SECRET + "x").status_code == 401
    assert post_hub(client, hub_body(), secret=MLFLOW_SECRET).status_code == 401
    r = post_hub(client, hub_body(), secret=None)
    assert r.status_code == 401 and r.json() == {"outcome": "wrong_secret"}
    assert refused(client)["wrong_secret"] == 3 and capture.updates == []


def test_a_source_without_a_secret_is_refused(tmp_path, capture):
    bare = WebhookSettings.from_env(
        {"ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET": "", "ECOCOMPRESS_HF_WEBHOOK_SECRET": ""},
        db_path=tmp_path / "w.db",
    )
    assert bare.mlflow_secret is None and bare.hf_secret is None
    client = TestClient(create_app(bare, emit=capture))
    assert post_mlflow(client, *mlflow_delivery()).status_code == 401
    assert post_hub(client, hub_body(), secret="").status_code == 401
    assert post_hub(client, hub_body()).status_code == 401
    assert refused(client)["no_secret"] == 3 and capture.updates == []


def test_malformed_deliveries_are_refused(client, capture):
    assert post_hub(client, b"{not json").status_code == 400
    assert (
        post_hub(client, json.dumps({"event": {"scope": "repo.content"}}).encode()).status_code
        == 400
    )
    no_sha = json.loads(hub_body())
    no_sha["repo"]["headSha"], no_sha["updatedRefs"] = None, []
    assert post_hub(client, json.dumps(no_sha).encode()).status_code == 400
    assert post_mlflow(client, *mlflow_delivery(body=b"{not json")).status_code == 400
    no_version = json.loads(mlflow_body())
    del no_version["data"]["version"]
    assert (
        post_mlflow(client, *mlflow_delivery(body=json.dumps(no_version).encode())).status_code
        == 400
    )
    headers, body = mlflow_delivery()
    del headers["X-MLflow-Timestamp"]
    assert post_mlflow(client, headers, body).status_code == 400
    assert refused(client)["malformed"] == 6 and capture.updates == []


def test_other_events_are_ignored_and_counted(client, capture):
    body = mlflow_body(entity="registered_model", action="created")
    assert post_mlflow(client, *mlflow_delivery(body=body)).status_code == 200
    assert post_hub(client, hub_body(scope="discussion", action="create")).status_code == 200
    assert post_hub(client, hub_body(repo_type="dataset")).status_code == 200
    stats = client.get("/stats").json()
    assert stats["ignored"] == 3 and stats["by_source"]["hub"]["ignored"] == 2
    assert capture.updates == []


def test_a_body_over_the_limit_is_refused(tmp_path, capture):
    small = WebhookSettings(hf_secret=HF_SECRET, db_path=tmp_path / "w.db", max_body_bytes=100)
    client = TestClient(create_app(small, emit=capture))
    assert post_hub(client, hub_body()).status_code == 413
    assert refused(client)["too_large"] == 1


def test_nothing_secret_is_logged_or_returned(client, capture, caplog):
    caplog.set_level(logging.DEBUG)
    texts = []
    headers, body = mlflow_delivery()
    for r in (
        post_mlflow(client, headers, body),
        post_mlflow(client, headers, body),
        post_mlflow(client, *mlflow_delivery(secret="wrong")),
        post_mlflow(client, *mlflow_delivery(timestamp=0)),
        post_hub(client, hub_body()),
        post_hub(client, hub_body(), secret="guess"),
        post_hub(client, b"{"),
        client.get("/stats"),
    ):
        texts.append(r.text + json.dumps(dict(r.headers)))
    signature = headers["X-MLflow-Signature"].split(",", 1)[1]
    seen = "\n".join(texts) + caplog.text
    assert "accepted" in caplog.text and "tampered" in caplog.text  # the log says what happened
    for secret in (MLFLOW_SECRET, HF_SECRET, signature):
        assert secret not in seen
    assert MLFLOW_SECRET not in repr(client.app.state.receiver.settings)


def test_settings_from_env_and_the_jsonl_sink(tmp_path):
    env = {
        "ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET,
        "ECOCOMPRESS_WEBHOOK_SINK": str(tmp_path / "sink.jsonl"),
        "ECOCOMPRESS_WEBHOOK_DB": str(tmp_path / "w.db"),
    }
    s = WebhookSettings.from_env(env)
    assert s.mlflow_secret.get_secret_value() == MLFLOW_SECRET and s.hf_secret is None
    assert s.max_skew_s == 300 and s.store_path() == tmp_path / "w.db"
    client = TestClient(create_app(s))  # no emitter given: the sink is used
    assert post_mlflow(client, *mlflow_delivery()).status_code == 202
    lines = (tmp_path / "sink.jsonl").read_text().splitlines()
    assert [ModelUpdate.model_validate_json(x).model for x in lines] == ["models:/tiny-lm/3"]
    sink = jsonl_sink(tmp_path / "other.jsonl")
    sink(ModelUpdate(model="m", revision="r", source="local", seen_by="watch"))
    assert json.loads((tmp_path / "other.jsonl").read_text())["seen_by"] == "watch"


def test_default_store_is_under_the_stack_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    assert WebhookSettings().store_path() == tmp_path / "stack" / "webhooks.db"


def test_every_outcome_has_a_status_code():
    assert {o.status_code for o in Outcome} >= {200, 202, 400, 401, 409}


# ---- slow: a real MLflow server fires a real webhook at the real receiver process

PORTS = range(15000, 15100)  # this test's share of 127.0.0.1
START_TIMEOUT_S = 300  # a busy 2-core machine starts servers slowly
DELIVERY_TIMEOUT_S = 300


def _free_port(taken: set[int]) -> int:
    for port in PORTS:
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {PORTS}")


def _start(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen(
        cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
    )


def _stop(proc: subprocess.Popen) -> None:
    """End the process group this test started (mlflow server has worker children)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{url} exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"{url} not healthy after {START_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")


def _post(url: str, headers: dict[str, str], body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


class _Recorder(BaseHTTPRequestHandler):
    """Passes each delivery on to the receiver unchanged and keeps a copy to replay."""

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        kept = {k: v for k, v in self.headers.items() if k.lower().startswith(("x-", "content-t"))}
        self.server.recorded.append((kept, body))
        status = _post(self.server.target, kept, body)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def servers(tmp_path):
    """A real `mlflow server` (SQLite), the receiver process (JSONL sink) and a recording hop."""
    from ecocompress.deployments.webhooks import PATHS

    taken: set[int] = set()
    mlflow_port, receiver_port, recorder_port = (_free_port(taken) for _ in range(3))
    env = {
        **os.environ,
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http,https",
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "ECOCOMPRESS_HOME": str(tmp_path / "home"),
        "ECOCOMPRESS_MLFLOW_WEBHOOK_SECRET": MLFLOW_SECRET,
        "ECOCOMPRESS_WEBHOOK_SINK": str(tmp_path / "sink.jsonl"),
    }
    env.pop("ECOCOMPRESS_HF_WEBHOOK_SECRET", None)
    mlflow_cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    mlflow_cmd += ["--port", str(mlflow_port), "--workers", "1"]
    mlflow_cmd += ["--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    mlflow_cmd += ["--default-artifact-root", str(tmp_path / "artifacts")]
    receiver_cmd = [sys.executable, "-m", "ecocompress.deployments.webhooks"]
    receiver_cmd += ["--host", "127.0.0.1", "--port", str(receiver_port)]
    receiver_url = f"http://127.0.0.1:{receiver_port}"
    recorder = ThreadingHTTPServer(("127.0.0.1", recorder_port), _Recorder)
    recorder.recorded, recorder.target = [], receiver_url + PATHS["mlflow"]
    threading.Thread(target=recorder.serve_forever, daemon=True).start()
    procs: dict[str, subprocess.Popen] = {}

    def start_receiver() -> None:
        log = tmp_path / "receiver.log"
        procs["receiver"] = _start(receiver_cmd, env, log)
        _wait_healthy(receiver_url + "/health", procs["receiver"], log)

    try:
        procs["mlflow"] = _start(mlflow_cmd, env, tmp_path / "mlflow.log")
        start_receiver()
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        _wait_healthy(mlflow_url + "/health", procs["mlflow"], tmp_path / "mlflow.log")
        yield {
            "mlflow": mlflow_url,
            "receiver": receiver_url,
            "hook_url": f"http://127.0.0.1:{recorder_port}{PATHS['mlflow']}",
            "recorded": recorder.recorded,
            "sink": tmp_path / "sink.jsonl",
            "logs": tmp_path,
            "restart_receiver": lambda: (_stop(procs["receiver"]), start_receiver()),
        }
    finally:
        for proc in procs.values():
            _stop(proc)
        recorder.shutdown()
        recorder.server_close()


@pytest.mark.slow
def test_a_real_mlflow_model_version_reaches_the_receiver_once(servers, tmp_path):
    from mlflow import MlflowClient

    from ecocompress.deployments.webhooks import register_mlflow_webhook

    hook_id = register_mlflow_webhook(servers["mlflow"], servers["hook_url"], MLFLOW_SECRET)
    assert register_mlflow_webhook(servers["mlflow"], servers["hook_url"], MLFLOW_SECRET) == hook_id
    client = MlflowClient(tracking_uri=servers["mlflow"], registry_uri=servers["mlflow"])
    assert [w.webhook_id for w in client.list_webhooks()] == [hook_id]

    model_dir = tmp_path / "tiny-model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}")
    # the server takes a local source only inside a run's artifacts
    run = client.create_run(client.create_experiment("webhooks"))
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.create_registered_model("tiny-lm")
    source = f"{run.info.artifact_uri}/model"
    version = client.create_model_version("tiny-lm", source, run_id=run.info.run_id).version

    sink = servers["sink"]
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    while time.monotonic() < deadline and not (sink.exists() and sink.read_text().strip()):
        time.sleep(1)
    receiver_log = (servers["logs"] / "receiver.log").read_text()
    assert sink.exists(), f"no delivery reached the receiver:\n{receiver_log[-3000:]}"
    lines = sink.read_text().splitlines()
    assert [ModelUpdate.model_validate_json(x) for x in lines] == [
        ModelUpdate(
            model=f"models:/tiny-lm/{version}",
            revision=str(version),
            source="mlflow",
            seen_by="mlflow-webhook",
        )
    ]

    # the delivery exactly as MLflow sent it, sent again: refused, before and after a restart
    assert len(servers["recorded"]) == 1
    headers, body = servers["recorded"][0]
    assert headers["X-MLflow-Signature"].startswith("v1,")
    target = servers["receiver"] + "/mlflow"
    assert _post(target, headers, body) == 409
    servers["restart_receiver"]()
    assert _post(target, headers, body) == 409
    assert sink.read_text().splitlines() == lines
    with urllib.request.urlopen(servers["receiver"] + "/stats", timeout=30) as r:
        stats = json.loads(r.read())
    assert stats["accepted"] == 1 and stats["refused"]["replayed"] == 2
    assert MLFLOW_SECRET not in (servers["logs"] / "receiver.log").read_text()


def test_prefect_down_is_answered_503_and_the_retry_is_not_a_replay(settings, monkeypatch):
    from ecocompress.deployments.webhooks import prefect_emitter

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = TestClient(create_app(settings, emit=prefect_emitter(f"http://127.0.0.1:{port}/api")))
    headers, body = mlflow_delivery()
    r = post_mlflow(client, headers, body)
    assert r.status_code == 503 and r.json()["outcome"] == "not_emitted"
    assert client.app.state.receiver.store.remember("mlflow", headers["X-MLflow-Delivery-Id"])


def test_without_prefect_api_or_sink_the_app_does_not_start(settings, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(UserError, match="PREFECT_API_URL"):
        create_app(settings)


def test_the_command_says_what_is_missing_in_one_line(monkeypatch, tmp_path, capsys):
    from ecocompress.deployments.webhooks import main

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("ECOCOMPRESS_WEBHOOK_SINK", raising=False)
    monkeypatch.setenv("ECOCOMPRESS_WEBHOOK_DB", str(tmp_path / "w.db"))
    assert main(["--port", str(PORTS[-1])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "PREFECT_API_URL" in err
