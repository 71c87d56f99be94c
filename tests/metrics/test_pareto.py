import math

import numpy as np
import pandas as pd
import pytest

from metrics.pareto import hypervolume, objective_bounds, pareto_front
from metrics.types import Objective
from tasks.errors import UserError

ACC = Objective(name="accuracy", direction="max")
LAT = Objective(name="latency_ms", direction="min")
MEM = Objective(name="memory_gb", direction="min")


def table(rows, status=None):
    df = pd.DataFrame(rows, columns=["candidate", "accuracy", "latency_ms"])
    df["status"] = status or ["ok"] * len(df)
    return df


def test_empty_table():
    out = pareto_front(table([]), [ACC, LAT])
    assert out.empty and {"on_front", "rank", "crowding"} <= set(out.columns)
    assert hypervolume(out, [ACC, LAT]) == 0.0


def test_single_candidate_is_the_front():
    out = pareto_front(table([("a", 0.5, 10.0)]), [ACC, LAT])
    assert out["on_front"].tolist() == [True]
    assert out["rank"].tolist() == [0]
    assert math.isinf(out["crowding"][0])


def test_failed_rows_never_on_front_and_unranked():
    df = table(
        [("a", 0.9, 1.0), ("b", 0.5, 10.0), ("c", np.nan, np.nan)], ["failed", "ok", "failed"]
    )
    out = pareto_front(df, [ACC, LAT])
    assert out["on_front"].tolist() == [False, True, False]
    assert out["rank"].isna().tolist() == [True, False, True]
    assert out["crowding"].isna().tolist() == [True, False, True]


def test_all_failed():
    out = pareto_front(table([("a", 0.9, 1.0)], ["failed"]), [ACC, LAT])
    assert not out["on_front"].any() and out["rank"].isna().all()
    assert hypervolume(out, [ACC, LAT]) == 0.0


def test_duplicates_and_ties_are_all_on_front():
    df = table([("a", 0.5, 10.0), ("b", 0.5, 10.0), ("c", 0.7, 20.0), ("d", 0.4, 30.0)])
    out = pareto_front(df, [ACC, LAT])
    assert out["on_front"].tolist() == [True, True, True, False]
    assert out["rank"].tolist() == [0, 0, 0, 1]
    # identical points share one crowding value, whatever their order
    assert out["crowding"][0] == out["crowding"][1]


def test_one_objective_ranks_by_value():
    df = table([("a", 0.2, 0), ("b", 0.9, 0), ("c", 0.5, 0), ("d", 0.9, 0)])
    out = pareto_front(df, [ACC])
    assert out["rank"].tolist() == [2, 0, 1, 0]


def test_nan_in_ok_row_names_candidate_and_column():
    df = table([("a", 0.5, 10.0), ("bad", 0.6, np.nan)])
    with pytest.raises(UserError, match=r"'bad'.*'latency_ms'"):
        pareto_front(df, [ACC, LAT])


def test_missing_column_and_no_objectives_raise():
    with pytest.raises(UserError, match="'memory_gb' is missing"):
        pareto_front(table([("a", 0.5, 1.0)]), [ACC, MEM])
    with pytest.raises(UserError, match="no objectives"):
        pareto_front(table([("a", 0.5, 1.0)]), [])


def _dominates(p, q):
    return np.all(p <= q) and np.any(p < q)


def test_random_points_match_brute_force():
    rng = np.random.default_rng(0)
    n = 80
    # rounded so that ties and duplicates occur
    df = pd.DataFrame(
        {
            "candidate": [f"c{i}" for i in range(n)],
            "status": ["ok"] * n,
            "accuracy": rng.integers(0, 10, n) / 10,
            "latency_ms": rng.integers(0, 10, n).astype(float),
            "memory_gb": rng.integers(0, 10, n).astype(float),
        }
    )
    out = pareto_front(df, [ACC, LAT, MEM])
    F = np.stack([-df["accuracy"], df["latency_ms"], df["memory_gb"]], axis=1)
    # brute-force ranks by peeling non-dominated layers
    remaining, expected, r = set(range(n)), np.empty(n, int), 0
    while remaining:
        layer = {i for i in remaining if not any(_dominates(F[j], F[i]) for j in remaining)}
        for i in layer:
            expected[i] = r
        remaining -= layer
        r += 1
    assert out["rank"].to_numpy(dtype=int).tolist() == expected.tolist()
    assert out["on_front"].tolist() == (expected == 0).tolist()


def test_crowding_matches_pymoo_on_each_front():
    from pymoo.operators.survival.rank_and_crowding.metrics import calc_crowding_distance
    from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

    rng = np.random.default_rng(1)
    F = rng.random((50, 2))
    df = table([(f"c{i}", -a, b) for i, (a, b) in enumerate(F)])  # accuracy = -F[:, 0]
    out = pareto_front(df, [ACC, LAT])
    fronts = NonDominatedSorting().do(F)
    assert len(fronts) > 3
    for front in fronts:
        expected = calc_crowding_distance(F[front]) if len(front) > 2 else np.inf
        np.testing.assert_allclose(out["crowding"].to_numpy()[front], expected)


def test_hypervolume_of_three_points_by_hand():
    # normalised (0 = best): a -> (0, 1), b -> (1, 0), c -> (0.5, 0.5); reference 1.1.
    # union of boxes: 0.11 + 0.11 + 0.36 - 0.01 - 0.06 - 0.06 + 0.01 = 0.46
    df = table([("a", 1.0, 1.0), ("b", 0.0, 0.0), ("c", 0.5, 0.5)])
    assert hypervolume(df, [ACC, LAT]) == pytest.approx(0.46)


def test_hypervolume_ignores_dominated_and_failed_rows():
    base = table([("a", 1.0, 1.0), ("b", 0.0, 0.0), ("c", 0.5, 0.5)])
    more = table(
        [("a", 1.0, 1.0), ("b", 0.0, 0.0), ("c", 0.5, 0.5), ("d", 0.4, 0.6), ("e", 2.0, -1.0)],
        ["ok", "ok", "ok", "ok", "failed"],
    )
    assert hypervolume(more, [ACC, LAT]) == pytest.approx(hypervolume(base, [ACC, LAT]))


def test_hypervolume_with_fixed_bounds_and_ref_point():
    df = table([("a", 0.5, 5.0)])
    # alone, the point is the best bound in both: (0, 0) -> 1.1 ** 2
    assert hypervolume(df, [ACC, LAT]) == pytest.approx(1.21)
    bounds = {"accuracy": (0.0, 1.0), "latency_ms": (0.0, 10.0)}  # -> (0.5, 0.5)
    assert hypervolume(df, [ACC, LAT], bounds=bounds) == pytest.approx(0.36)
    assert hypervolume(df, [ACC, LAT], ref_point=[1.0, 1.0], bounds=bounds) == pytest.approx(0.25)
    with pytest.raises(UserError, match="ref_point"):
        hypervolume(df, [ACC, LAT], ref_point=[1.0])


def test_objective_bounds_use_ok_rows_only():
    df = table([("a", 0.2, 1.0), ("b", 0.8, 3.0), ("c", 5.0, 99.0)], ["ok", "ok", "failed"])
    assert objective_bounds(df, [ACC, LAT]) == {"accuracy": (0.2, 0.8), "latency_ms": (1.0, 3.0)}
