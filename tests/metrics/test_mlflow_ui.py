"""The MLflow UI as the comparison surface.

Fast tests check the saved view and the frontier tags as data. The slow test starts a
real ``mlflow server``, runs a real two-candidate sweep of the tiny model against it and
drives headless Chromium (Debian's ``chromium`` through Playwright) over the UI: the link
the sweep prints opens the runs view (not the GenAI overview) with each candidate's
objective, frontier flag and recipe as columns, the charts view has the quality-against-
cost scatter charts, the experiment's description links there from the GenAI overview,
and ``pareto.html`` renders (plotly's SVG) in the artifact viewer. Screenshots go to
``$ECOCOMPRESS_TEST_ARTIFACTS/ui/`` (default ``<repo>/test-artifacts/ui/``).
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from ecocompress.metrics import mlflow_ui
from ecocompress.metrics.types import parse_objectives

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PORTS = range(16050, 16100)  # this test's share of the project's 16000-16099
UI_WAIT_MS = 180_000  # a busy 2-core machine renders the UI slowly


# ---- fast: the view and the tags as data ------------------------------------------------


def test_view_state_has_objectives_frontier_recipe_and_quality_cost_charts():
    objs = parse_objectives("accuracy:max,perplexity/wikitext2:min,latency_ms:min,memory_gb:min")
    state = mlflow_ui.view_state(objs)
    cols = state["selectedColumns"]
    assert cols[:4] == [
        "metrics.`accuracy`",
        "metrics.`perplexity/wikitext2`",
        "metrics.`latency_ms`",
        "metrics.`memory_gb`",
    ]
    assert "tags.`frontier`" in cols and "params.`bits`" in cols and "params.`prune`" in cols
    assert state["orderByKey"] == "metrics.`accuracy`" and state["orderByAsc"] is False
    pairs = {(c["yaxis"]["key"], c["xaxis"]["key"]) for c in state["compareRunCharts"]}
    assert pairs == {
        (q, c) for q in ("accuracy", "perplexity/wikitext2") for c in ("latency_ms", "memory_gb")
    }
    section = state["compareRunSections"][0]["uuid"]
    assert all(c["metricSectionId"] == section for c in state["compareRunCharts"])


def test_view_envelope_is_what_the_ui_parses():
    # The UI's validator: a string name, a number createdAt and a string state (JSON).
    env = json.loads(mlflow_ui._envelope({"searchFilter": "x"}, 1234))
    assert env["name"] == mlflow_ui.VIEW_NAME and env["createdAt"] == 1234
    assert json.loads(env["state"]) == {"searchFilter": "x"}
    big = {"selectedColumns": [f"metrics.`m{i}`" for i in range(3000)]}
    packed = json.loads(mlflow_ui._envelope(big, 1))
    assert packed["state"].startswith("deflate;")
    assert len(mlflow_ui._envelope(big, 1)) <= 20000


def test_frontier_tags_yes_no_and_rank():
    import pandas as pd

    front = pd.DataFrame(
        {
            "run_id": ["a", "b", "c", None],
            "on_front": [True, False, False, False],
            "rank": pd.array([0, 1, None, None], dtype="Int64"),
        }
    )
    tags = mlflow_ui.frontier_tags(front.to_dict("records"))
    assert tags == {
        "a": {"frontier": "yes", "pareto_rank": "0"},
        "b": {"frontier": "no", "pareto_rank": "1"},
        "c": {"frontier": "no"},
    }


def test_runs_view_url_only_for_a_server():
    assert mlflow_ui.runs_view_url("sqlite:///x/mlflow.db", "3") is None
    url = mlflow_ui.runs_view_url("http://127.0.0.1:5000/", "3", mode="CHART")
    assert url.startswith("http://127.0.0.1:5000/#/experiments/3/runs?")
    assert "workflowType=machine_learning" in url and "compareRunsMode=CHART" in url
    assert f"viewStateShareKey={mlflow_ui.VIEW_ID}" in url


# ---- slow: a real server, a real sweep, a real browser -----------------------------------


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def _artifacts_dir() -> Path:
    root = os.environ.get("ECOCOMPRESS_TEST_ARTIFACTS") or str(
        Path(__file__).resolve().parents[2] / "test-artifacts"
    )
    out = Path(root) / "ui"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real ``mlflow server`` (SQLite + served artifacts in a temp dir) on 127.0.0.1,
    with ``MLFLOW_TRACKING_URI`` pointing at it; killed at teardown."""
    d = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(d / "server.log", "w")  # noqa: SIM115 - closed at teardown
    env = {**os.environ, "DO_NOT_TRACK": "true", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{d / 'mlflow.db'}",
            "--artifacts-destination",
            str(d / "artifacts"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,  # its own process group: the teardown ends it and its workers
    )
    old = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                pytest.fail(
                    f"mlflow server exited {proc.returncode}: {(d / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("mlflow server not healthy after 300 s")
            time.sleep(1)
        os.environ["MLFLOW_TRACKING_URI"] = url
        yield url
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def ui_sweep(mlflow_server, tiny_model_dir: Path, shared_data_dir: Path):
    """Two candidates of the tiny model, perplexity only, logged to the server."""
    from prefect.testing.utilities import prefect_test_harness

    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.stack import EPHEMERAL_STARTUP_TIMEOUT_S
    from ecocompress.flows.sweep import sweep_flow

    argv = [
        "--model",
        str(tiny_model_dir),
        "--bits",
        "16",
        "--prune",
        "none,magnitude",
        "--sparsity",
        "0.5",
        "--benchmarks",
        "perplexity",
        "--ppl-tokens",
        "256",
        "--data-dir",
        str(shared_data_dir),
        "--experiment",
        "ui-compare",
    ]
    # the harness's own 30 s start-up is missed on a busy machine
    with prefect_test_harness(server_startup_timeout=EPHEMERAL_STARTUP_TIMEOUT_S):
        r = resolve("sweep", parse_settings("sweep", argv))
        return sweep_flow(**flow_parameters(r), quiet=True)


_TABLE_JS = """() => {
  const rows = {};
  document.querySelectorAll('.ag-row').forEach(r => {
    const i = r.getAttribute('row-index');
    rows[i] = rows[i] || {};
    r.querySelectorAll('.ag-cell').forEach(c => { rows[i][c.getAttribute('col-id')] = c.innerText.trim(); });
  });
  return Object.values(rows);
}"""


def _table(page) -> dict[str, dict[str, str]]:
    """Runs table cells by run name (the name cell also holds the run's colour)."""
    out = {}
    for row in page.evaluate(_TABLE_JS):
        name = row.get("attributes.`Run Name`", "").splitlines()
        if name:
            out[name[-1]] = row
    return out


@pytest.mark.slow
def test_ui_shows_candidates_objectives_and_pareto_html(mlflow_server, ui_sweep):
    # a missing browser fails the test (CI installs both), it is not a reason to skip it
    try:
        import playwright  # noqa: F401
    except ImportError:
        pytest.fail("playwright missing: pip install -e '.[dev]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} missing: apt-get install -y --no-install-recommends chromium")
    from mlflow import MlflowClient
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=UI_WAIT_MS)  # its default is 5 s
    t0 = time.monotonic()
    shots = _artifacts_dir()
    exp_id = ui_sweep["experiment_id"]
    url = ui_sweep["ui_url"]
    assert url == mlflow_ui.runs_view_url(mlflow_server, exp_id)

    # What MLflow holds, read back: each candidate's objective and frontier flag.
    client = MlflowClient(mlflow_server)
    assert client.get_experiment(exp_id).tags[mlflow_ui.EXPERIMENT_KIND_TAG] == (
        mlflow_ui.EXPERIMENT_KIND
    )
    runs = client.search_runs([exp_id], filter_string="tags.candidate LIKE '%'")
    logged = {
        r.data.tags["candidate"]: (
            r.data.metrics["perplexity/wikitext2"],
            r.data.tags["frontier"],
            r.data.params["prune"],
        )
        for r in runs
    }
    assert set(logged) == {"bf16", "magnitude-0.5+bf16"}
    front = ui_sweep["front"].set_index("candidate")
    for name, (_, flag, _) in logged.items():
        assert flag == ("yes" if bool(front.loc[name, "on_front"]) else "no")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1800, "height": 1000})
            page.set_default_timeout(UI_WAIT_MS)
            # First-visit helpers (the assistant panel, a "Detect Issues" tour) open by
            # themselves and cover the page: mark them seen, as a returning user has.
            for key in (
                "mlflow.assistant.fab.autoOpenedOnFirstLoad_v1",
                "mlflow.detectIssues.guidanceShown_v1",
            ):
                page.add_init_script(f"localStorage.setItem('{key}', 'true')")

            # 1. The link the sweep printed: the runs view on the saved view, no GenAI overview.
            page.goto(url)
            page.wait_for_selector(f".ag-row >> text={next(iter(logged))}")
            expect(page.get_by_text(mlflow_ui.VIEW_NAME).first).to_be_visible()
            page.wait_for_function(
                "() => document.querySelectorAll('.ag-row').length >= 4"  # pinned + centre halves
            )
            page.screenshot(path=str(shots / "runs-table.png"))
            assert "/runs" in page.url
            body = page.inner_text("body")
            assert "No data available" not in body and "Detect Issues" not in body
            table = _table(page)
            assert set(logged) <= set(table), table
            for name, (ppl, flag, prune) in logged.items():
                row = table[name]
                assert math.isclose(
                    float(row["metrics.`perplexity/wikitext2`"]), ppl, rel_tol=1e-9
                ), row
                assert row["tags.`frontier`"] == flag
                assert row["params.`prune`"] == prune
            assert set(table) == set(logged)  # the sweep's own run is filtered out

            # 2. The charts of the same view: perplexity against each cost.
            page.goto(mlflow_ui.runs_view_url(mlflow_server, exp_id, mode="CHART"))
            for cost in ("latency_ms", "memory_gb", "energy_kwh"):
                expect(page.get_by_text(f"{cost} vs. perplexity/wikitext2").first).to_be_visible()
            page.screenshot(path=str(shots / "runs-charts.png"))

            # 3. The plain experiment link opens on the browser's workflow (GenAI by
            # default); the description there links to the runs view.
            page.goto(f"{mlflow_server}/#/experiments/{exp_id}")
            link = page.get_by_role("link", name="compare them in the runs view")
            expect(link).to_be_visible()
            page.screenshot(path=str(shots / "experiment-default-landing.png"))
            with page.context.expect_page() as opened:  # rendered markdown: a new tab
                link.click()
            runs = opened.value
            runs.set_default_timeout(UI_WAIT_MS)
            runs.wait_for_selector(f".ag-row >> text={next(iter(logged))}")
            assert "/runs?" in runs.url and mlflow_ui.VIEW_ID in runs.url
            runs.set_viewport_size({"width": 1800, "height": 1000})
            runs.screenshot(path=str(shots / "runs-from-description.png"))
            runs.close()

            # 4. pareto.html in the artifact viewer: plotly draws its SVG inside the iframe.
            parent = ui_sweep["parent_run_id"]
            page.goto(
                f"{mlflow_server}/#/experiments/{exp_id}/runs/{parent}/artifacts/pareto.html"
                "?workflowType=machine_learning"
            )
            plot = page.frame_locator("iframe").locator(".main-svg").first
            expect(plot).to_be_visible()
            assert page.frame_locator("iframe").locator(".scatterlayer").count() >= 1
            page.screenshot(path=str(shots / "pareto-html-artifact.png"))
        finally:
            browser.close()
    print(f"browser checks: {time.monotonic() - t0:.1f} s; screenshots in {shots}")
