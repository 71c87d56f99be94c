"""The results table printed at the end of a command."""

from __future__ import annotations

from typing import Any


def print_summary(summary: dict[str, Any], params: Any) -> None:
    """Print the results table (accuracy ± stderr, costs, frontier) and where to find the run."""
    from ecocompress.metrics.table import format_results_table

    print(format_results_table(summary["front"]))
    executed = summary["executed_steps"]
    hv = summary.get("hypervolume")
    print(
        f"hypervolume (normalised objectives {params.objectives}): "
        f"{'n/a' if hv is None else f'{hv:.4f}'}"
    )
    print(
        f"steps executed: {len(executed)} (0 = everything came from the caches); "
        f"energy of evaluations run now: {summary['energy_spent_kwh']:.6f} kWh, "
        f"{summary['search_co2_kg']:.6f} kg CO2eq"
    )
    print(
        f"MLflow parent run {summary['parent_run_id']} (experiment {summary['experiment_id']}); "
        + _ui_hint(summary)
    )


def _ui_hint(summary: dict[str, Any]) -> str:
    """Where to compare the candidates: the saved runs view on the server, or how to
    start a UI on the local store and the page to open there."""
    if summary.get("ui_url"):
        return f"compare in the MLflow UI: {summary['ui_url']}"
    from ecocompress.metrics.mlflow_ui import runs_view_path

    path = runs_view_path(summary["experiment_id"])
    return f"compare with: ecocompress ui, then open http://127.0.0.1:5000/{path}"


def print_optimize_summary(summary: dict[str, Any]) -> None:
    """The stop reason, the recommendation and where it was registered."""
    rec = summary.get("recommendation") or {}
    print(f"evaluations: {summary.get('evaluations')}; stopped: {summary.get('stop_reason')}")
    if rec.get("candidate"):
        print(f"recommended ({rec.get('alias')}): {rec['candidate']}")
        print(f"  why: {rec['reason']}")
    else:
        print(f"no recommendation: {rec.get('reason')}")
    if summary.get("registered_version"):
        print(
            f"registered as model version {summary['registered_version']} "
            f"(alias {rec.get('alias')})"
        )
    print(
        f"decisions: decisions.json on the parent run; resume with --thread-id {summary['thread_id']}"
    )
