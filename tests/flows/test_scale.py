"""Scale-out (flows/scale.py, flows/parallel.py): settings, refusals, the step lock, and a
2-worker Dask ``LocalCluster`` sweep on the tiny model against the sequential one."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from ecocompress.flows.scale import ScaleParams, check_memory, check_reachable, cpu_cores
from ecocompress.tasks.errors import UserError
from tests.flows.test_refusals import _refused, no_server  # noqa: F401 - fixture
from tests.homes import fresh_home


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "values, needle",
    [
        ({"workers": 2, "cluster": "tcp://127.0.0.1:8786"}, "not both"),
        ({"cluster": "http://127.0.0.1:8786"}, "tcp://host:port"),
        ({"cluster": "tcp://:8786"}, "tcp://host:port"),
        ({"cluster": "tcp://127.0.0.1:99999"}, "port"),
        ({"results": "s3://bucket/results"}, "mount"),
        ({"workers": 0}, "greater than or equal to 1"),
    ],
)
def test_bad_scale_settings_are_refused(values, needle):
    with pytest.raises(ValidationError, match=needle):
        ScaleParams.model_validate(values)


def test_workers_share_the_cores_and_results_resolve_to_a_folder(tmp_path):
    s = ScaleParams(workers=2, results=f"file://{tmp_path}/r")
    assert s.parallel and s.threads_per_worker() == max(1, cpu_cores() // 2)
    assert s.results == str(tmp_path / "r")
    assert ScaleParams(workers=10_000 // 100).threads_per_worker() >= 1
    assert not ScaleParams().parallel and ScaleParams().threads_per_worker() is None


def test_cluster_pointing_at_nothing_fails_fast():
    port = _free_port()  # nothing listens there now
    t0 = time.perf_counter()
    with pytest.raises(UserError, match=f"no Dask scheduler answers at 127.0.0.1:{port}"):
        check_reachable(f"tcp://127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 6


def test_sweep_with_a_dead_cluster_is_one_line_exit_2(
    tiny_model_dir,
    shared_data_dir,
    capsys,
    no_server,  # noqa: F811
):
    port = _free_port()
    argv = ["sweep", "--model", str(tiny_model_dir), "--bits", "16", "--benchmarks"]
    argv += ["perplexity", "--data-dir", str(shared_data_dir), "--cluster"]
    argv += [f"tcp://127.0.0.1:{port}"]
    err = _refused(argv, capsys, no_server, "--cluster", "no Dask scheduler answers")
    assert f"127.0.0.1:{port}" in err


def test_ray_without_its_extra_is_refused(tiny_model_dir, shared_data_dir, capsys, no_server):  # noqa: F811
    pytest.importorskip("prefect")
    try:
        import prefect_ray  # noqa: F401

        pytest.skip("prefect-ray is installed")
    except ImportError:
        pass
    argv = ["sweep", "--model", str(tiny_model_dir), "--bits", "16", "--benchmarks"]
    argv += ["perplexity", "--data-dir", str(shared_data_dir), "--cluster", "ray://127.0.0.1:1"]
    _refused(argv, capsys, no_server, "needs Ray", "ecocompress[ray]")


def test_a_configuration_that_cannot_fit_is_refused():
    import psutil

    avail = psutil.virtual_memory().available
    with pytest.raises(UserError, match=r"--workers 4 needs about .* per worker, estimated"):
        check_memory(ScaleParams(workers=4), avail // 2, None)
    with pytest.raises(UserError, match="one worker needs about"):
        check_memory(ScaleParams(workers=1), avail * 2, None)
    check_memory(ScaleParams(workers=2), 1000, None)  # fits: no error
    remote = ScaleParams(cluster="tcp://127.0.0.1:8786")
    with pytest.raises(UserError, match="the largest worker has"):
        check_memory(remote, 8 * 2**30, [2 * 2**30, 4 * 2**30])
    check_memory(remote, 8 * 2**30, [0, 0])  # no memory limits set: nothing to compare


def test_results_folder_follows_the_setting(tmp_path, monkeypatch):
    from ecocompress.flows import records
    from ecocompress.flows.scale import results_env

    monkeypatch.delenv(records.RESULTS_ENV, raising=False)
    default = records.records_dir()
    with results_env(ScaleParams(results=str(tmp_path / "shared"))):
        assert records.records_dir() == tmp_path / "shared"
    assert records.records_dir() == default


def test_a_step_being_computed_makes_a_second_worker_wait(tmp_path, monkeypatch):
    """``records.computing``: an exclusive lock per key (flock on its own open file, so two
    threads exclude each other as two processes would)."""
    from ecocompress.flows import records

    monkeypatch.setenv(records.RESULTS_ENV, str(tmp_path / "r"))
    key = "a" * 64
    held, release, second_in = threading.Event(), threading.Event(), threading.Event()

    def first():
        with records.computing(key):
            held.set()
            release.wait(30)

    def second():
        with records.computing(key):
            second_in.set()

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(30)
    b = threading.Thread(target=second)
    b.start()
    b.join(1.0)
    assert not second_in.is_set(), "the second holder got the lock while the first held it"
    release.set()
    a.join(30)
    b.join(30)
    assert second_in.is_set()
    with pytest.raises(ValueError, match="sha256"):
        with records.computing("../../etc"):
            pass


# --- a real 2-worker LocalCluster on the tiny model ---------------------------------------


def _argv(tiny: Path, data: Path, *extra: str) -> list[str]:
    argv = ["--model", str(tiny), "--bits", "16,8", "--quant-backend", "torchao"]
    argv += ["--prune", "magnitude", "--sparsity", "0.5", "--benchmarks", "perplexity"]
    # 2048 tokens: a candidate runs long enough for the killer to see it
    argv += ["--ppl-tokens", "2048", "--ppl-window", "64", "--ppl-stride", "32"]
    return [*argv, "--data-dir", str(data), "--experiment", "scale", *extra]


def _sweep(argv: list[str]) -> dict:
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow

    r = resolve("sweep", parse_settings("sweep", argv))
    return sweep_flow(**flow_parameters(r), quiet=True)


def _table(summary: dict) -> list[tuple]:
    return [
        (
            r["candidate"],
            r["status"],
            r["perplexity/wikitext2"],
            r["log_perplexity_stderr/wikitext2"],
        )
        for r in summary["rows"]
    ]


class _Killer(threading.Thread):
    """SIGKILLs the first worker process seen owning a RUNNING child run (once)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.killed: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        import os
        import signal

        from ecocompress.metrics import tracking
        from ecocompress.metrics.tracking import OWNER_PREFIX

        while not self.done.is_set() and not self.killed:
            try:
                c = tracking.client()
                exps = [e.experiment_id for e in c.search_experiments()]
                runs = c.search_runs(exps, "attributes.status = 'RUNNING'") if exps else []
            except Exception:  # noqa: BLE001 - the store is being created: look again
                runs = []
            for run in runs:
                tags = run.data.tags
                pid = int(tags.get(f"{OWNER_PREFIX}pid", os.getpid()))
                if "mlflow.parentRunId" in tags and pid != os.getpid():
                    os.kill(pid, signal.SIGKILL)
                    self.killed.append(pid)
                    break
            self.done.wait(0.1)


@pytest.mark.slow
def test_two_workers_give_the_sequential_table_through_a_killed_worker(
    tiny_model_dir, shared_data_dir, tmp_path_factory
):
    """The same sweep sequentially and on a 2-worker LocalCluster whose worker running a
    candidate is SIGKILLed: the candidate is rescheduled on another worker, the table is
    identical, the killed attempt's run ends FAILED ("process died"), no run stays RUNNING,
    and a re-run on the shared results folder executes nothing."""
    from prefect.testing.utilities import prefect_test_harness

    from ecocompress.metrics import tracking
    from ecocompress.metrics.tracking import OWNER_PREFIX, PROCESS_DIED

    with prefect_test_harness():
        with fresh_home(tmp_path_factory, "seq"):
            seq = _sweep(_argv(tiny_model_dir, shared_data_dir))
        with fresh_home(tmp_path_factory, "par") as home:
            results = home / "shared-results"
            argv = [*_argv(tiny_model_dir, shared_data_dir, "--workers", "2")]
            argv += ["--results", str(results)]
            killer = _Killer()
            killer.start()
            try:
                par = _sweep(argv)
            finally:
                killer.done.set()
                killer.join(30)
            assert killer.killed, "no worker was seen running a candidate"
            assert _table(par) == _table(seq)
            assert [r["status"] for r in par["rows"]] == ["ok", "ok"]
            assert {r["worker"] for r in par["rows"]} <= {"0", "1"}
            # both candidates prune the same way: computed at most once (the other worker
            # waits under the step's lock, then reads the record; a killed attempt's steps
            # are not reported)
            assert len([s for s in par["executed_steps"] if s.endswith(":prune")]) <= 1
            assert sorted(results.glob("*.json"))  # the records went to --results
            assert not list((home / "step-results").glob("*.json"))
            c = tracking.client()
            runs = c.search_runs([par["experiment_id"]], "")
            statuses = {r.info.run_id: r.info.status for r in runs}
            assert "RUNNING" not in statuses.values(), statuses
            failed = [r for r in runs if r.info.status == "FAILED"]
            assert len(failed) == 1 and failed[0].data.tags["failure_reason"] == PROCESS_DIED
            assert failed[0].data.tags[f"{OWNER_PREFIX}pid"] == str(killer.killed[0])
            assert statuses[par["parent_run_id"]] == "FINISHED"

            again = _sweep(argv)
            assert again["executed_steps"] == []
            assert _table(again) == _table(seq)
            runs = c.search_runs(
                [again["experiment_id"]], f"tags.mlflow.parentRunId = '{again['parent_run_id']}'"
            )
            assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}


def test_optimize_refuses_workers_its_batch_would_leave_idle(tiny_model_dir, shared_data_dir):
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve

    argv = ["--model", str(tiny_model_dir), "--data-dir", str(shared_data_dir)]
    with pytest.raises(UserError, match=r"--workers 2 with --batch 1: .* pass --batch 2"):
        resolve("optimize", parse_settings("optimize", [*argv, "--workers", "2"]))
    r = resolve("optimize", parse_settings("optimize", [*argv, "--workers", "2", "--batch", "3"]))
    assert r.settings is not None and r.settings.batch == 3
    assert flow_parameters(r)["scale"] == ScaleParams(workers=2)
    # what a deployment stores (JSON) is read back by the flow as ScaleParams
    from ecocompress.deployments.serve import jsonable
    from ecocompress.flows.optimize import optimize_flow

    stored = optimize_flow.validate_parameters(jsonable(flow_parameters(r)))
    assert stored["scale"] == ScaleParams(workers=2) and stored["settings"].batch == 3
    # a remote cluster's size is not known here: any batch goes
    r = resolve(
        "optimize", parse_settings("optimize", [*argv, "--cluster", "tcp://127.0.0.1:8786"])
    )
    assert r.settings is not None and r.settings.batch == 1
    assert "scale" not in flow_parameters(resolve("optimize", parse_settings("optimize", argv)))


def test_a_scheduled_sweep_carries_its_workers(tiny_model_dir, shared_data_dir):
    """``deploy --workers 2``: the scheduled sweep's stored parameters hold ``scale``, which
    ``sweep_flow`` reads back as ScaleParams; a sweep without it stores none."""
    from ecocompress.deployments.serve import jsonable
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve

    argv = ["--model", str(tiny_model_dir), "--bits", "16", "--benchmarks", "perplexity"]
    argv += ["--data-dir", str(shared_data_dir)]
    stored = jsonable(flow_parameters(resolve("sweep", parse_settings("sweep", argv))))
    assert "scale" not in stored
    stored = jsonable(
        flow_parameters(resolve("sweep", parse_settings("sweep", [*argv, "--workers", "2"])))
    )
    assert ScaleParams.model_validate(stored["scale"]) == ScaleParams(workers=2)


def test_local_workers_keep_glibc_memory_behaviour():
    """A Dask nanny would spawn workers with MALLOC_TRIM_THRESHOLD_=65536 (measured 20-29 %
    slower model forwards: tests/perf/worker_overhead.py); ours are spawned without it, with
    the torch threads of their share of the cores."""
    import os

    from ecocompress.flows.scale import task_runner

    saved = dict(os.environ)  # a nanny also writes its spawn environment here
    try:
        with task_runner(ScaleParams(workers=1)) as runner:
            seen = runner.client.run(
                lambda: (os.environ.get("MALLOC_TRIM_THRESHOLD_"), os.environ["OMP_NUM_THREADS"])
            )
    finally:
        os.environ.clear()
        os.environ.update(saved)
    assert list(seen.values()) == [(None, str(cpu_cores()))]
