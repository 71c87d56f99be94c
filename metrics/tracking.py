"""MLflow runs for a sweep: one parent run, one child run per candidate.

Everything goes through an explicit ``MlflowClient`` and run ids, never the fluent
``mlflow.start_run`` globals: Prefect runs tasks in worker threads, where a nested
fluent run loses its parent. A child carries the ``mlflow.parentRunId`` tag, which is
what the MLflow UI nests by.

Every run carries its owner process (``ecocompress.owner.*``: host, pid, start time), so a
later command can tell a run whose process was killed from one still going:
``close_dead_runs()`` marks the former FAILED with ``failure_reason`` "process died".
"""

from __future__ import annotations

import math
import subprocess
import sys
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from ecocompress.tasks.artifacts import code_version, home, tracking_uri
from ecocompress.tasks.processes import file_lock, identity, is_gone

_PARAM_MAX = 6000  # MLflow's limit on a param value's length (characters)
# Distribution names whose versions make a result reproducible.
_PACKAGES = (
    "torch",
    "transformers",
    "lm_eval",
    "bitsandbytes",
    "torchao",
    "codecarbon",
    "prefect",
    "mlflow",
)


OWNER_PREFIX = "ecocompress.owner."
PROCESS_DIED = "process died"


@lru_cache(maxsize=4)
def _client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://", "databricks")):
        return MlflowClient(tracking_uri=uri)
    # Opening a new SQLite store creates its tables (an alembic migration); two commands doing
    # that at once fail ("table _alembic_tmp_experiments already exists"). One at a time.
    with file_lock(home() / ".mlflow-store.lock"):
        return MlflowClient(tracking_uri=uri)


def client() -> Any:
    """The ``MlflowClient`` for ``tracking_uri()`` (cached: opening a SQLite store migrates it)."""
    return _client(tracking_uri())


def get_or_create_experiment(name: str) -> str:
    """Id of experiment ``name``, created if needed.

    With a local store (SQLite or a file path) artifacts go to
    ``<ECOCOMPRESS_HOME>/mlartifacts/<name>``, not ``./mlruns`` of whatever folder the
    process started in; a tracking server keeps its own artifact location.
    """
    from mlflow.exceptions import MlflowException

    c = client()
    exp = c.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if not tracking_uri().startswith(("http://", "https://", "databricks")):
        location = (home() / "mlartifacts" / name).as_uri()
    from ecocompress.metrics.mlflow_ui import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    try:
        # a model experiment, not a GenAI one (see metrics/mlflow_ui.py for what the UI reads)
        return c.create_experiment(
            name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except MlflowException:  # another thread created it first
        exp = c.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, f"{key}."))
        else:
            out[key] = str(v)[:_PARAM_MAX]
    return out


def _start(experiment_id: str, run_name: str, params: dict, tags: dict) -> str:
    from mlflow.entities import Param

    c = client()
    tags = {**tags, **owner_tags()}
    run = c.create_run(experiment_id, tags={k: str(v) for k, v in tags.items()}, run_name=run_name)
    flat = _flatten(params)
    if flat:
        c.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flat.items()])
    return run.info.run_id


def start_parent_run(experiment: str, run_name: str, params: dict, tags: dict) -> str:
    """Create the sweep's run in experiment ``experiment`` (created if needed).

    Args:
        experiment: experiment name.
        run_name: display name.
        params: logged as params (nested dicts flattened with dots).
        tags: logged as tags; add ``provenance_tags()`` for reproducibility.

    Returns:
        The run id.
    """
    return _start(get_or_create_experiment(experiment), run_name, params, tags)


def start_child_run(
    parent_run_id: str, experiment_id: str, run_name: str, params: dict, tags: dict
) -> str:
    """Create a candidate's run nested under ``parent_run_id``; returns its run id."""
    return _start(experiment_id, run_name, params, {**tags, "mlflow.parentRunId": parent_run_id})


def log_metrics(run_id: str, metrics: dict[str, float | None], step: int = 0) -> None:
    """Log the measured metrics; ``None`` and NaN (not measured) are skipped, never faked."""
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    batch = [
        Metric(k, float(v), now, step)
        for k, v in metrics.items()
        if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    if batch:
        client().log_batch(run_id, metrics=batch)


def log_artifact(run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
    """Copy a file or folder into the run's artifacts."""
    p = Path(path)
    if p.is_dir():
        client().log_artifacts(run_id, str(p), artifact_path)
    else:
        client().log_artifact(run_id, str(p), artifact_path)


def log_dict(run_id: str, obj: Any, name: str) -> None:
    """Write ``obj`` as JSON (or YAML for ``.yaml``/``.yml``) artifact ``name``."""
    client().log_dict(run_id, obj, name)


def set_tags(run_id: str, tags: dict[str, Any]) -> None:
    """Set string tags on a run (values converted with ``str``)."""
    c = client()
    for k, v in tags.items():
        c.set_tag(run_id, k, str(v))


def publish_comparison(experiment_id: str, objectives: list, front: Any) -> str | None:
    """Make a finished command's results comparable in the MLflow UI.

    Tags each candidate run ``frontier=yes|no`` and ``pareto_rank`` (from ``front``, the
    ``pareto_front`` table with ``run_id``), and (re)writes the experiment's saved view
    (objectives, frontier flag and recipe as columns, quality-against-cost charts).

    Returns:
        The link that opens that view on a tracking server; None for a local store.
    """
    from ecocompress.metrics import mlflow_ui

    records = front.to_dict("records") if hasattr(front, "to_dict") else list(front)
    for run_id, tags in mlflow_ui.frontier_tags(records).items():
        set_tags(run_id, tags)
    mlflow_ui.publish_view(client(), experiment_id, objectives)
    return mlflow_ui.runs_view_url(tracking_uri(), experiment_id)


def log_text(run_id: str, text: str, name: str) -> None:
    """Write ``text`` as artifact ``name`` (e.g. a failure traceback)."""
    client().log_text(run_id, text, name)


def end_run(run_id: str, status: Literal["FINISHED", "FAILED", "KILLED"] = "FINISHED") -> None:
    """Mark a run terminated with ``status``."""
    if status not in ("FINISHED", "FAILED", "KILLED"):
        raise ValueError(f"run status {status!r}: allowed FINISHED, FAILED, KILLED")
    client().set_terminated(run_id, status=status)


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def provenance_tags() -> dict[str, str]:
    """Tags that let a run reproduce itself: git sha, code version, package versions."""
    return dict(_provenance())


@lru_cache(maxsize=1)
def _provenance() -> dict[str, str]:
    dirty = _git("status", "--porcelain", "--untracked-files=no")
    tags = {
        "ecocompress.git_sha": _git("rev-parse", "HEAD") or "unknown",
        "ecocompress.git_dirty": "unknown" if dirty is None else str(bool(dirty)).lower(),
        "ecocompress.code_version": code_version(),
        "ecocompress.version.python": sys.version.split()[0],
    }
    for pkg in _PACKAGES:
        try:
            tags[f"ecocompress.version.{pkg}"] = metadata.version(pkg.replace("_", "-"))
        except metadata.PackageNotFoundError:
            tags[f"ecocompress.version.{pkg}"] = "not installed"
    return tags


def reopen_run(run_id: str) -> None:
    """Mark a run RUNNING again (a resumed command continues its own runs), owned by this
    process; a failure reason it was closed with no longer holds."""
    from mlflow.exceptions import MlflowException

    c = client()
    set_tags(run_id, {**owner_tags(), "resumed": "true"})  # owner first: never RUNNING unowned
    if "failure_reason" in c.get_run(run_id).data.tags:
        try:
            c.delete_tag(run_id, "failure_reason")
        except MlflowException:  # deleted meanwhile
            pass
    c.update_run(run_id, status="RUNNING")


def owner_tags() -> dict[str, str]:
    """Tags naming this process as the owner of a run (see ``close_dead_runs``)."""
    return {f"{OWNER_PREFIX}{k}": v for k, v in identity().items()}


def close_dead_runs() -> list[str]:
    """Mark FAILED ("process died") every RUNNING run of the store whose owner process is gone.

    A run whose owner runs on another host, or that carries no owner (made before owners were
    recorded), is left as it is: its liveness cannot be told from here. Returns the run ids.
    """
    c = client()
    ids = [e.experiment_id for e in c.search_experiments()]
    running: list[Any] = []
    token = None
    while ids:  # every page first: closing runs while paging would shift the pages
        page = c.search_runs(
            ids, filter_string="attributes.status = 'RUNNING'", max_results=1000, page_token=token
        )
        running.extend(page)
        token = page.token
        if not token:
            break
    closed: list[str] = []
    for run in running:
        tags = run.data.tags
        owner = {k[len(OWNER_PREFIX) :]: v for k, v in tags.items() if k.startswith(OWNER_PREFIX)}
        if is_gone(owner):
            c.set_tag(run.info.run_id, "failure_reason", PROCESS_DIED)
            c.set_terminated(run.info.run_id, status="FAILED")
            closed.append(run.info.run_id)
    return closed


def find_runs(experiment_id: str, tags: dict[str, str]) -> list[Any]:
    """Runs of the experiment carrying every tag of ``tags`` (any status), oldest first."""
    flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return list(
        client().search_runs(
            [experiment_id], filter_string=flt, order_by=["attribute.start_time ASC"]
        )
    )


def register_candidate(
    name: str, run_id: str, artifact_path: str, alias: str, tags: dict[str, str], description: str
) -> str:
    """Register ``runs:/<run_id>/<artifact_path>`` as a new version of model ``name`` with
    lineage ``tags`` and point ``alias`` at it; returns the version."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.get_registered_model(name)
    except MlflowException:
        c.create_registered_model(
            name, description="compressed candidates recommended by ecocompress optimize"
        )
    v = c.create_model_version(
        name,
        source=f"runs:/{run_id}/{artifact_path}",
        run_id=run_id,
        tags={k: str(val) for k, val in tags.items()},
        description=description,
    )
    c.set_registered_model_alias(name, alias, v.version)
    return str(v.version)


def model_version_tags() -> list[dict[str, str]]:
    """Tags of every version of every registered model in the tracking store's registry.

    Raises whatever the store raises when the registry cannot be read: a caller deciding
    what is safe to delete must not mistake an unreadable registry for an empty one.
    """
    c = client()
    out: list[dict[str, str]] = []
    token = None
    while True:
        page = c.search_model_versions(max_results=1000, page_token=token)
        out.extend(dict(v.tags or {}) for v in page)
        token = page.token
        if not token:
            return out
