"""What the MLflow UI shows for an ecocompress experiment: the runs view, with the
objectives, the frontier flag and each candidate's recipe as columns and charts.

Read off the installed UI bundle (mlflow 3.17.2, ``mlflow/server/js/build``):

- Which view an experiment opens on is decided by the sidebar's workflow switch
  ("GenAI" or "Machine learning"), kept in the browser (localStorage
  ``mlflow.workflowType``, default GenAI) and overridden by the URL query
  ``workflowType=machine_learning``. The experiment tag ``mlflow.experimentKind`` is read
  only by UIs without that switch (3.17.2 hard-codes the switch on); it is set anyway, to
  ``custom_model_development``, so those UIs and other clients see a model experiment.
- The runs table's columns, sort order and charts are browser state, except for a saved
  view: experiment tag ``mlflow.sharedViewState.<id>`` holding
  ``{"name", "createdAt", "updatedAt", "state"}`` where ``state`` is the JSON of the search
  facets (``searchFilter``, ``orderByKey``, ``orderByAsc``) and UI state
  (``selectedColumns``, ``compareRunCharts``, ``compareRunSections``, ``runsHiddenMode``,
  ...). The page applies it when the URL carries ``viewStateShareKey=<id>``, and lists it
  under "Views". Column keys are ``metrics.`name```, ``params.`name```, ``tags.`name```.

So ``publish_view`` writes one saved view per experiment and ``runs_view_url`` gives the
link that opens on it; the flows print that link.
"""

from __future__ import annotations

import json
import time
import zlib
from base64 import b64encode
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlencode

from ecocompress.metrics.types import Objective, is_score

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"  # "Machine learning" in the UI
VIEW_TAG_PREFIX = "mlflow.sharedViewState."
VIEW_ID = "ecocompress-objectives"
VIEW_NAME = "ecocompress: objectives"
_TAG_VALUE_MAX = 20000  # MLflow's limit on an experiment tag value (characters)

FRONTIER_TAG = "frontier"  # yes | no, per candidate run, set when its command finishes
RANK_TAG = "pareto_rank"  # 0 = on the plain frontier
CANDIDATE_TAG = "candidate"  # the label every candidate run carries (flows/candidate.py)
RECIPE_PARAMS = ("bits", "quant_backend", "prune", "sparsity", "pattern")  # CandidateSpec.flat
SECTION_NAME = "ecocompress: quality against cost"
NOTE_TAG = "mlflow.note.content"  # the experiment's description, shown on every tab
NOTE_PREFIX = "Candidates of ecocompress:"


def _col(group: str, key: str) -> str:
    return f"{group}.`{key}`"


def _quality(o: Objective) -> bool:
    return is_score(o.name)


def _scatter(section: str, x: str, y: str) -> dict[str, Any]:
    return {
        "uuid": f"eco-{y}-vs-{x}".replace("/", "-"),
        "type": "SCATTER",
        "runsCountToCompare": 100,
        "metricSectionId": section,
        "deleted": False,
        "isGenerated": False,
        "displayName": f"{y} against {x}",
        "xaxis": {"key": x, "type": "METRIC"},
        "yaxis": {"key": y, "type": "METRIC"},
    }


def view_state(objectives: Sequence[Objective]) -> dict[str, Any]:
    """The saved view's state: candidate runs only, sorted by the first objective, with
    the objectives, the frontier flag and the recipe as columns, and one scatter chart of
    each quality objective against each cost objective."""
    names = [o.name for o in objectives]
    quality = [o.name for o in objectives if _quality(o)] or names[:1]
    costs = [n for n in names if n not in quality]
    section = "eco-objectives"
    first = objectives[0]
    columns = [
        *(_col("metrics", n) for n in names),
        _col("tags", FRONTIER_TAG),
        _col("tags", RANK_TAG),
        *(_col("params", p) for p in RECIPE_PARAMS),
    ]
    return {
        # a candidate run carries the ``candidate`` tag; the command's own run does not
        "searchFilter": f"tags.{CANDIDATE_TAG} LIKE '%'",
        "orderByKey": _col("metrics", first.name),
        "orderByAsc": first.direction == "min",
        "selectedColumns": columns,
        "columnOrder": columns,  # objectives first, then the frontier flag, then the recipe
        "runsHiddenMode": "SHOW_ALL",  # every candidate in the charts, not the first 10
        "hideEmptyCharts": True,
        "compareRunSections": [
            {
                "uuid": section,
                "name": SECTION_NAME,
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
            }
        ],
        "compareRunCharts": [_scatter(section, x, y) for y in quality for x in costs],
    }


def _envelope(state: dict[str, Any], now_ms: int) -> str:
    text = json.dumps(state, separators=(",", ":"))
    env = json.dumps({"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": text})
    if len(env) > _TAG_VALUE_MAX:  # the UI inflates "deflate;" + base64 of zlib data (pako)
        packed = "deflate;" + b64encode(zlib.compress(text.encode())).decode()
        env = json.dumps(
            {"name": VIEW_NAME, "createdAt": now_ms, "updatedAt": now_ms, "state": packed}
        )
    return env


def publish_view(client: Any, experiment_id: str, objectives: Sequence[Objective]) -> None:
    """Mark the experiment a model experiment, (re)write its saved comparison view, and
    link that view from the experiment's description, which the UI shows above whatever
    tab it opens on (the GenAI overview included). A description someone else wrote is
    left alone."""
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    env = _envelope(view_state(objectives), int(time.time() * 1000))
    client.set_experiment_tag(experiment_id, VIEW_TAG_PREFIX + VIEW_ID, env)
    note = client.get_experiment(experiment_id).tags.get(NOTE_TAG)
    if note is None or note.startswith(NOTE_PREFIX):
        link = runs_view_path(experiment_id)
        client.set_experiment_tag(
            experiment_id,
            NOTE_TAG,
            f"{NOTE_PREFIX} [compare them in the runs view]({link}) (objectives, `frontier` "
            f"flag and recipe as columns; charts of quality against each cost).",
        )


def runs_view_path(experiment_id: str, mode: str = "TABLE") -> str:
    """The UI route (after the server's base URL) that opens the experiment's runs view on
    the saved view; ``mode`` ``CHART`` opens its charts."""
    query = urlencode(
        {"workflowType": "machine_learning", "viewStateShareKey": VIEW_ID, "compareRunsMode": mode}
    )
    return f"#/experiments/{experiment_id}/runs?{query}"


def runs_view_url(tracking_uri: str, experiment_id: str, mode: str = "TABLE") -> str | None:
    """``runs_view_path`` on a tracking server; None for a local store (no server to open)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return None
    return f"{tracking_uri.rstrip('/')}/{runs_view_path(experiment_id, mode)}"


def _missing(v: Any) -> bool:
    import pandas as pd

    return v is None or bool(pd.isna(v))


def frontier_tags(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """Run id -> ``{frontier: yes|no[, pareto_rank]}`` from ``pareto_front``'s rows.

    A failed or eliminated candidate is ``no`` and has no rank."""
    out: dict[str, dict[str, str]] = {}
    for r in records:
        run_id = r.get("run_id")
        if _missing(run_id):
            continue
        on_front = r.get("on_front")
        tags = {FRONTIER_TAG: "no" if _missing(on_front) or not bool(on_front) else "yes"}
        if not _missing(r.get("rank")):
            tags[RANK_TAG] = str(int(r["rank"]))
        out[str(run_id)] = tags
    return out
