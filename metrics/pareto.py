"""Pareto frontier of the candidates: non-domination rank, crowding and hypervolume.

Pure functions on a results table (one row per candidate). Only rows with
``status == "ok"`` take part; failed candidates are never on the front. Every objective
states its direction; internally all are turned into minimisation (max -> negated).
Sorting, crowding and hypervolume come from pymoo (moocore underneath), not hand code.

Dominance beyond noise (``pareto_front(..., z=...)``, ``beats_beyond_noise``): scores are
measured on a sample of items or tokens, so a gap smaller than ``z`` combined standard
errors must not decide that one candidate beats another. Row ``a`` beats row ``b``
beyond noise iff

1. ``a`` Pareto-dominates ``b`` as measured (no worse on every objective, strictly better
   on at least one), and
2. ``a`` is better by more than the noise on at least one objective: strictly better on
   an exact objective (a cost, taken as measured), or better by more than
   ``z * sqrt(se_a**2 + se_b**2)`` on a noisy one.

Noisy objectives are ``accuracy`` / a benchmark's score ``<metric>/<b>`` (gap in its units,
stderr from ``accuracy_stderr`` / ``<metric>_stderr/<b>``) and ``perplexity/<b>`` (gap in
log(perplexity), stderr from ``log_perplexity_stderr/<b>``, nats); a missing stderr counts
as 0. Consequences: (i) with every stderr 0 (or ``z == 0``) this is plain Pareto dominance;
(ii) beating implies plain dominance, so the beyond-noise front (rows no ok row beats)
contains the whole plain front: noise only keeps more candidates; (iii) a gap within
``z`` stderr on a noisy objective never makes a row beat another: two candidates with
equal costs whose accuracies overlap within noise both stay.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ecocompress.metrics.types import Objective, Status, is_log_scale, stderr_column
from ecocompress.tasks.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

Bounds = Mapping[str, tuple[float, float]]  # objective name -> (low, high), original units


def _ok_mask(df: pd.DataFrame, status_col: str) -> np.ndarray:
    # A table without a status column holds measured candidates only.
    if status_col not in df.columns:
        return np.ones(len(df), dtype=bool)
    return (df[status_col] == Status.OK).to_numpy()


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


def _check_z(z: float) -> float:
    z = float(z)
    if not (math.isfinite(z) and z >= 0):
        raise UserError(f"noise threshold z = {z} must be a finite number >= 0 (stderr units)")
    return z


def _value(row: Mapping[str, Any], name: str) -> float:
    v = row.get(name)
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        x = math.nan
    if math.isnan(x):
        label = row.get("candidate", "?")
        raise UserError(f"candidate {label!r} has no value (NaN) for objective {name!r}")
    return x


def _stderr(row: Mapping[str, Any], col: str | None) -> float:
    """The row's standard error in ``col``; absent, None or NaN counts as 0."""
    if col is None:
        return 0.0
    try:
        se = float(row.get(col))  # type: ignore[arg-type]
    except (TypeError, ValueError):  # absent, None, pd.NA
        return 0.0
    return 0.0 if math.isnan(se) else abs(se)


def beats_beyond_noise(
    a: Mapping[str, Any], b: Mapping[str, Any], objectives: Sequence[Objective], z: float
) -> bool:
    """Whether row ``a`` beats row ``b`` beyond noise (definition in the module docstring).

    ``a`` must Pareto-dominate ``b`` as measured and be better than ``b`` on at least one
    objective by more than the noise: strictly, on an exact objective (costs); by more
    than ``z * sqrt(se_a**2 + se_b**2)`` on an accuracy-type objective (accuracy units,
    stderr from ``accuracy_stderr`` or ``<metric>_stderr/<b>``) or on log(perplexity) for ``perplexity/<b>``
    (stderr from ``log_perplexity_stderr/<b>``, nats). A missing stderr counts as 0.

    Args:
        a: candidate row (column -> value), e.g. one record of the results table.
        b: the other candidate row.
        objectives: objectives with directions; every one must have a value in both rows.
        z: noise threshold in standard errors (>= 0); 0 gives plain Pareto dominance.

    Returns:
        True when ``a`` beats ``b`` beyond noise. Never true for ``a`` against itself or
        an identical row, and never true in both directions.

    Raises:
        UserError: no objectives, a missing/NaN objective value, a negative or non-finite
            ``z``, or a perplexity <= 0 (its log is compared).
    """
    if not objectives:
        raise UserError("no objectives given: name at least one, e.g. 'accuracy:max'")
    z = _check_z(z)
    strictly_better = beyond_noise = False
    for o in objectives:
        va, vb = _value(a, o.name), _value(b, o.name)
        gap = va - vb if o.direction == "max" else vb - va  # > 0: a is better as measured
        if gap < 0:
            return False  # a is worse on this objective as measured: no dominance
        if gap == 0:
            continue
        strictly_better = True
        col = stderr_column(o.name)
        if col is None:
            beyond_noise = True  # exact objective (a cost): taken as measured
            continue
        if is_log_scale(o.name):
            if va <= 0 or vb <= 0:
                raise UserError(
                    f"objective {o.name!r} must be > 0 to compare its log: "
                    f"{a.get('candidate', '?')!r} = {va}, {b.get('candidate', '?')!r} = {vb}"
                )
            gap = abs(math.log(va) - math.log(vb))
        tol = z * math.hypot(_stderr(a, col), _stderr(b, col))
        beyond_noise = beyond_noise or gap > tol
    return strictly_better and beyond_noise


def noise_aware_front(
    df: pd.DataFrame, objectives: Sequence[Objective], z: float, status_col: str = "status"
) -> np.ndarray:
    """Beyond-noise Pareto membership: the ok rows no ok row beats beyond noise.

    O(n^2) comparisons with ``beats_beyond_noise`` (fine for the sub-100-row tables of a
    sweep). The result contains every row of the plain front (see the module docstring).

    Args:
        df: results table, one row per candidate (objective and stderr columns).
        objectives: objectives with directions.
        z: noise threshold in standard errors (>= 0).
        status_col: rows whose value here is not ``"ok"`` are excluded (False).

    Returns:
        Boolean array of ``len(df)``, aligned with the rows of ``df``.

    Raises:
        UserError: see ``objective_matrix`` and ``beats_beyond_noise``.
    """
    z = _check_z(z)
    objective_matrix(df, objectives, status_col)  # validates columns and NaN
    mask = _ok_mask(df, status_col)
    ok_pos = np.flatnonzero(mask)
    rows = df.iloc[ok_pos].to_dict("records")
    out = np.zeros(len(df), dtype=bool)
    for i, b in zip(ok_pos, rows, strict=True):
        out[i] = not any(beats_beyond_noise(a, b, objectives, z) for a in rows if a is not b)
    return out


def pareto_front(
    df: pd.DataFrame,
    objectives: Sequence[Objective],
    status_col: str = "status",
    *,
    z: float | None = None,
) -> pd.DataFrame:
    """Rank the candidates by non-domination.

    Args:
        df: results table, one row per candidate.
        objectives: the columns to optimise, with directions.
        status_col: rows whose value here is not ``"ok"`` are excluded.
        z: None for plain Pareto dominance (values as measured); a number of standard
            errors (>= 0) to mark the front beyond noise (``noise_aware_front``).

    Returns:
        A copy of ``df`` with ``on_front`` (bool), ``rank`` (nullable int, 0 = front,
        missing for excluded rows) and ``crowding`` (crowding distance within the row's
        front, ``inf`` at the extremes, NaN for excluded rows). Identical points do not
        dominate each other, so duplicates of a front point are all on the front.
        With ``z`` given, ``on_front`` is the beyond-noise membership (a superset of the
        plain front), ``on_front_plain`` holds the plain one, and ``rank``/``crowding``
        stay those of plain non-dominated sorting (so an ``on_front`` row may have
        ``rank`` > 0).

    Raises:
        UserError: see ``objective_matrix``; a negative or non-finite ``z``.
    """
    import pandas as pd
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    if z is not None:
        z = _check_z(z)
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
    if z is not None:
        out["on_front_plain"] = rank == 0
        out["on_front"] = noise_aware_front(df, objectives, z, status_col)
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
) -> float | None:
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
        Hypervolume in [0, prod(ref_point)]; with fixed ``bounds``, 0.0 when there is no ok
        row. ``None`` without bounds and fewer than two ok rows: normalised by its own
        min/max, one point is the best bound on every axis and would "dominate" the whole
        reference box (1.1^k), a number that measures nothing.
    """
    from pymoo.indicators.hv import HV

    F = objective_matrix(df_front, objectives, status_col)
    ref = np.full(len(objectives), 1.1) if ref_point is None else np.asarray(ref_point, float)
    if ref.shape != (len(objectives),):
        raise UserError(f"ref_point has {ref.size} values for {len(objectives)} objectives")
    if bounds is None:
        if len(F) < 2:
            return None
        bounds = objective_bounds(df_front, objectives, status_col)
    if len(F) == 0:
        return 0.0
    return float(HV(ref_point=ref)(normalise(df_front, objectives, bounds, status_col)))
