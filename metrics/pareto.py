"""Pareto frontier of the candidates: non-domination rank, crowding and hypervolume.

Pure functions on a results table (one row per candidate). Only rows with
``status == "ok"`` take part; failed candidates are never on the front. Every objective
states its direction; internally all are turned into minimisation (max -> negated).
Sorting, crowding and hypervolume come from pymoo (moocore underneath), not hand code.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from metrics.types import Objective
from tasks.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

Bounds = Mapping[str, tuple[float, float]]  # objective name -> (low, high), original units


def _ok_mask(df: pd.DataFrame, status_col: str) -> np.ndarray:
    # A table without a status column holds measured candidates only.
    if status_col not in df.columns:
        return np.ones(len(df), dtype=bool)
    return (df[status_col] == "ok").to_numpy()


def objective_matrix(
    df: pd.DataFrame, objectives: Sequence[Objective], status_col: str = "status"
) -> np.ndarray:
    """The ok rows' objectives as a minimisation matrix, shape (n_ok, n_objectives).

    Raises:
        UserError: no objectives, a missing column, or NaN/non-numeric in an ok row.
    """
    if not objectives:
        raise UserError("no objectives given: name at least one, e.g. 'accuracy:max'")
    ok = df[_ok_mask(df, status_col)]
    cols = []
    for o in objectives:
        if o.name not in df.columns:
            raise UserError(f"objective column {o.name!r} is missing from the results table")
        values = np.asarray(ok[o.name].to_numpy(), dtype=float)
        bad = np.flatnonzero(np.isnan(values))
        if bad.size:
            label = ok["candidate"].iloc[bad[0]] if "candidate" in ok.columns else ok.index[bad[0]]
            raise UserError(f"candidate {label!r} has no value (NaN) for objective {o.name!r}")
        cols.append(-values if o.direction == "max" else values)
    return np.stack(cols, axis=1) if len(ok) else np.zeros((0, len(objectives)))


def _crowding(front: np.ndarray) -> np.ndarray:
    """NSGA-II crowding distance of one front; identical points share one value."""
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance

    uniq, inverse = np.unique(front, axis=0, return_inverse=True)
    # Two or fewer distinct points are all extremes (pymoo's convention too).
    d = np.full(len(uniq), np.inf) if len(uniq) <= 2 else calc_crowding_distance(uniq)
    return d[np.asarray(inverse).reshape(-1)]


def pareto_front(
    df: pd.DataFrame, objectives: Sequence[Objective], status_col: str = "status"
) -> pd.DataFrame:
    """Rank the candidates by non-domination.

    Args:
        df: results table, one row per candidate.
        objectives: the columns to optimise, with directions.
        status_col: rows whose value here is not ``"ok"`` are excluded.

    Returns:
        A copy of ``df`` with ``on_front`` (bool), ``rank`` (nullable int, 0 = front,
        missing for excluded rows) and ``crowding`` (crowding distance within the row's
        front, ``inf`` at the extremes, NaN for excluded rows). Identical points do not
        dominate each other, so duplicates of a front point are all on the front.

    Raises:
        UserError: see ``objective_matrix``.
    """
    import pandas as pd
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    F = objective_matrix(df, objectives, status_col)
    ok_pos = np.flatnonzero(_ok_mask(df, status_col))
    rank = np.full(len(df), -1, dtype=int)
    crowding = np.full(len(df), np.nan)
    for r, front in enumerate(NonDominatedSorting().do(F) if len(F) else []):
        rows = ok_pos[front]
        rank[rows] = r
        crowding[rows] = _crowding(F[front])
    out = df.copy()
    out["on_front"] = rank == 0
    out["rank"] = pd.array([r if r >= 0 else pd.NA for r in rank], dtype="Int64")
    out["crowding"] = crowding
    return out


def objective_bounds(
    df: pd.DataFrame, objectives: Sequence[Objective], status_col: str = "status"
) -> dict[str, tuple[float, float]]:
    """Min and max of each objective over the ok rows (original units)."""
    ok = df[_ok_mask(df, status_col)]
    objective_matrix(df, objectives, status_col)  # validates columns and NaN
    return {o.name: (float(ok[o.name].min()), float(ok[o.name].max())) for o in objectives}


def normalise(
    df: pd.DataFrame, objectives: Sequence[Objective], bounds: Bounds, status_col: str = "status"
) -> np.ndarray:
    """Ok rows mapped to [0, 1] per objective, 0 = best bound, shape (n_ok, n_objectives).

    A degenerate bound (low == high) maps every value to 0.
    """
    F = objective_matrix(df, objectives, status_col)
    out = np.empty_like(F)
    for j, o in enumerate(objectives):
        if o.name not in bounds:
            raise UserError(f"hypervolume bounds lack objective {o.name!r}")
        lo, hi = (float(v) for v in bounds[o.name])
        best, worst = (-hi, -lo) if o.direction == "max" else (lo, hi)
        span = worst - best
        out[:, j] = 0.0 if span == 0 else (F[:, j] - best) / span
    return out


def hypervolume(
    df_front: pd.DataFrame,
    objectives: Sequence[Objective],
    ref_point: Sequence[float] | None = None,
    bounds: Bounds | None = None,
    status_col: str = "status",
) -> float:
    """Hypervolume dominated by the ok rows, in normalised objective space.

    Each objective is normalised to [0, 1] (0 = best) with ``bounds``; pass fixed
    bounds to compare runs, otherwise the min/max over ``df_front``'s ok rows are used.
    Dominated rows do not change the result, so the whole table may be passed.

    Args:
        df_front: results table (ok rows are used).
        objectives: objectives with directions.
        ref_point: reference point in normalised space; default 1.1 per objective.
        bounds: objective name -> (low, high) in original units.
        status_col: rows whose value here is not ``"ok"`` are ignored.

    Returns:
        Hypervolume in [0, prod(ref_point)]; 0.0 when there is no ok row.
    """
    from pymoo.indicators.hv import HV

    F = objective_matrix(df_front, objectives, status_col)
    if len(F) == 0:
        return 0.0
    if bounds is None:
        bounds = objective_bounds(df_front, objectives, status_col)
    ref = np.full(len(objectives), 1.1) if ref_point is None else np.asarray(ref_point, float)
    if ref.shape != (len(objectives),):
        raise UserError(f"ref_point has {ref.size} values for {len(objectives)} objectives")
    return float(HV(ref_point=ref)(normalise(df_front, objectives, bounds, status_col)))
