"""The watch check: local folders and GGUF files by content, the MLflow registry's newest
version, Hub ids by commit; each revision announced once; bad sources in one line."""

from __future__ import annotations

import http.server
import shutil
import threading
from pathlib import Path

import pytest

from ecocompress.flows.events import OWN_VERSION_TAG, ModelUpdate
from ecocompress.flows.watch import check_source, watch
from ecocompress.tasks.errors import UserError


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "lm"
    shutil.copytree(tiny_model_dir, dst)
    return dst


def test_local_folder_announced_once_per_content(model_copy, isolated_home):
    sent: list[ModelUpdate] = []
    emit = lambda u: sent.append(u) or f"e{len(sent)}"  # noqa: E731
    first = watch([str(model_copy)], emit=emit)
    assert first[0]["new"] and first[0]["event"] == "e1"
    assert watch([str(model_copy)], emit=emit)[0]["new"] is False  # same content: nothing
    (model_copy / "generation_config.json").write_text('{"do_sample": false}')
    third = watch([str(model_copy)], emit=emit)
    assert third[0]["new"] and len(sent) == 2
    assert sent[0].revision != sent[1].revision and sent[0].model == sent[1].model
    assert {u.source for u in sent} == {"local"}


def test_dry_run_records_nothing(model_copy, isolated_home):
    emit = lambda u: pytest.fail("a dry run emitted")  # noqa: E731
    assert watch([str(model_copy)], emit=emit, record=False)[0]["new"]
    assert watch([str(model_copy)], emit=emit, record=False)[0]["new"]


def test_registry_newest_version_not_our_own(model_copy, isolated_home):
    from mlflow import MlflowClient

    from ecocompress.tasks.artifacts import tracking_uri

    c = MlflowClient(tracking_uri())
    c.create_registered_model("watched-lm")
    c.create_model_version("watched-lm", source=str(model_copy))
    c.create_model_version("watched-lm", source=str(model_copy))
    c.create_model_version("watched-lm", source=str(model_copy), tags={OWN_VERSION_TAG: "true"})
    u = check_source("models:/watched-lm")
    assert (u.model, u.revision, u.source) == ("models:/watched-lm/2", "2", "mlflow")
    with pytest.raises(UserError, match="no registered model 'nope'"):
        check_source("models:/nope")


def test_registry_version_resolves_as_a_model(model_copy, isolated_home):
    from mlflow import MlflowClient

    from ecocompress.tasks.artifacts import sha256_tree, tracking_uri
    from ecocompress.tasks.download import resolve_model

    c = MlflowClient(tracking_uri())
    c.create_registered_model("resolved-lm")
    v = c.create_model_version("resolved-lm", source=str(model_copy))
    ref = resolve_model(f"models:/resolved-lm/{v.version}")
    assert (ref.model_name, ref.source, ref.revision) == ("resolved-lm", "mlflow", str(v.version))
    config = Path(ref.path) / "config.json"
    assert config.read_bytes() == (model_copy / "config.json").read_bytes()
    assert ref.content_hash == sha256_tree(ref.path)
    with pytest.raises(UserError, match="not in the MLflow registry"):
        resolve_model("models:/resolved-lm/99")


@pytest.mark.parametrize(
    "source, words",
    [
        ("./no/such/folder", "does not exist"),
        ("not a model id!", "not a local folder"),
        ("models:/", "models:/<registered model name>"),
    ],
)
def test_bad_sources_one_line(source, words, isolated_home):
    with pytest.raises(UserError, match=words) as e:
        check_source(source)
    assert "\n" not in str(e.value)


def test_a_bad_source_does_not_stop_the_others(model_copy, isolated_home):
    rows = watch(["./missing", str(model_copy)], emit=lambda u: "e")
    assert "does not exist" in rows[0]["error"] and rows[1]["new"]


def test_hub_offline_says_so(monkeypatch):
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="the Hub is offline"):
        check_source("org/some-model")


class _FakeHub(http.server.BaseHTTPRequestHandler):
    """Answers like huggingface.co: one repo exists at one commit, others are not found."""

    def do_GET(self):  # noqa: N802
        if self.path.startswith("/api/models/org/exists"):
            body = b'{"id": "org/exists", "sha": "0123456789abcdef0123456789abcdef01234567"}'
            self.send_response(200)
        else:
            body = b'{"error": "Repository not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_hub(monkeypatch):
    import huggingface_hub.constants as hc

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hc, "ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    yield
    server.shutdown()


def test_hub_commit_and_missing_model(fake_hub):
    u = check_source("org/exists")
    assert (u.model, u.source) == ("org/exists", "hub")
    assert u.revision == "0123456789abcdef0123456789abcdef01234567" == u.run_revision
    with pytest.raises(UserError, match="Hub model 'org/missing' does not exist"):
        check_source("org/missing")


def test_watch_command_on_a_missing_model_one_line_exit_2(fake_hub, capsys):
    from ecocompress.deployments.cli import main

    assert main(["watch", "org/missing", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "ecocompress: error: Hub model 'org/missing' does not exist or is not accessible "
        "(check the id and HF_TOKEN)"
    )
