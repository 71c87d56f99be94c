import math

import numpy as np
import pandas as pd
import pytest

from ecocompress.metrics.pareto import (
    beats_beyond_noise,
    hypervolume,
    noise_aware_front,
    objective_bounds,
    pareto_front,
)
from ecocompress.metrics.types import Objective
from ecocompress.tasks.errors import UserError

ACC = Objective(name="accuracy", direction="max")
LAT = Objective(name="latency_ms", direction="min")
MEM = Objective(name="memory_gb", direction="min")
GSM = Objective(name="exact_match/gsm8k", direction="max")
BBH = Objective(name="exact_match/bbh", direction="max")
PPL = Objective(name="perplexity/wikitext2", direction="min")


def table(rows, status=None):
    df = pd.DataFrame(rows, columns=["candidate", "accuracy", "latency_ms"])
    df["status"] = status or ["ok"] * len(df)
    return df


def test_empty_table():
    out = pareto_front(table([]), [ACC, LAT])
    assert out.empty and {"on_front", "rank", "crowding"} <= set(out.columns)
    assert hypervolume(out, [ACC, LAT]) is None  # nothing to normalise by
    assert hypervolume(out, [ACC, LAT], bounds={"accuracy": (0, 1), "latency_ms": (0, 1)}) == 0.0


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
    assert hypervolume(out, [ACC, LAT]) is None


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
    # alone and normalised by itself, the point would be the best bound on both axes and
    # "dominate" the whole box (1.1 ** 2): no number is given
    assert hypervolume(df, [ACC, LAT]) is None
    bounds = {"accuracy": (0.0, 1.0), "latency_ms": (0.0, 10.0)}  # -> (0.5, 0.5)
    assert hypervolume(df, [ACC, LAT], bounds=bounds) == pytest.approx(0.36)
    assert hypervolume(df, [ACC, LAT], ref_point=[1.0, 1.0], bounds=bounds) == pytest.approx(0.25)
    with pytest.raises(UserError, match="ref_point"):
        hypervolume(df, [ACC, LAT], ref_point=[1.0])


def test_objective_bounds_use_ok_rows_only():
    df = table([("a", 0.2, 1.0), ("b", 0.8, 3.0), ("c", 5.0, 99.0)], ["ok", "ok", "failed"])
    assert objective_bounds(df, [ACC, LAT]) == {"accuracy": (0.2, 0.8), "latency_ms": (1.0, 3.0)}


# --- dominance beyond noise -------------------------------------------------------------


def noisy(rows, status=None):
    """rows: (candidate, accuracy, accuracy_stderr, latency_ms)."""
    df = pd.DataFrame(rows, columns=["candidate", "accuracy", "accuracy_stderr", "latency_ms"])
    df["status"] = status or ["ok"] * len(df)
    return df


def test_z_none_is_the_plain_front_without_extra_column():
    df = noisy([("a", 0.30, 0.05, 1.0), ("b", 0.32, 0.05, 1.0)])
    out = pareto_front(df, [ACC, LAT])
    assert "on_front_plain" not in out.columns
    assert out["on_front"].tolist() == [False, True]


def test_overlapping_accuracies_at_equal_cost_both_stay():
    # 0.30 +- 0.05 vs 0.32 +- 0.05: the gap 0.02 is within 1 * hypot(0.05, 0.05) = 0.071
    df = noisy([("a", 0.30, 0.05, 1.0), ("b", 0.32, 0.05, 1.0)])
    out = pareto_front(df, [ACC, LAT], z=1.0)
    assert out["on_front"].tolist() == [True, True]
    assert out["on_front_plain"].tolist() == [False, True]
    # rank and crowding stay those of plain sorting
    assert out["rank"].tolist() == [1, 0]
    assert noise_aware_front(df, [ACC, LAT], 1.0).tolist() == [True, True]


def test_clear_gap_at_equal_cost_drops_the_worse():
    # 0.20 +- 0.01 vs 0.32 +- 0.01: the gap 0.12 is far beyond 1 * 0.014
    df = noisy([("a", 0.20, 0.01, 1.0), ("b", 0.32, 0.01, 1.0)])
    out = pareto_front(df, [ACC, LAT], z=1.0)
    assert out["on_front"].tolist() == [False, True]
    assert out["on_front_plain"].tolist() == [False, True]


def test_the_threshold_is_z_combined_stderr():
    # gap 0.1, combined stderr hypot(0.03, 0.04) = 0.05: beaten for z < 2, kept for z >= 2
    a = {"candidate": "a", "accuracy": 0.5, "accuracy_stderr": 0.03, "latency_ms": 1.0}
    b = {"candidate": "b", "accuracy": 0.4, "accuracy_stderr": 0.04, "latency_ms": 1.0}
    assert beats_beyond_noise(a, b, [ACC, LAT], 1.9)
    assert not beats_beyond_noise(a, b, [ACC, LAT], 2.0)
    assert not beats_beyond_noise(b, a, [ACC, LAT], 0.0)


def test_a_cheaper_candidate_within_noise_beats_a_dearer_one():
    # accuracy no better beyond noise, but strictly cheaper as measured: the cost decides
    a = {"accuracy": 0.31, "accuracy_stderr": 0.05, "latency_ms": 5.0}
    b = {"accuracy": 0.30, "accuracy_stderr": 0.05, "latency_ms": 10.0}
    assert beats_beyond_noise(a, b, [ACC, LAT], 1.0)
    # ...unless the dearer one is more accurate as measured, even within noise (it is
    # then on the plain front, and noise must not drop a plain-front row)
    b["accuracy"] = 0.32
    assert not beats_beyond_noise(a, b, [ACC, LAT], 1.0)


def test_within_noise_loss_on_one_benchmark_blocks_a_win_on_another():
    a = {"exact_match/gsm8k": 0.60, "exact_match_stderr/gsm8k": 0.01, "exact_match/bbh": 0.40}
    b = {"exact_match/gsm8k": 0.30, "exact_match_stderr/gsm8k": 0.01, "exact_match/bbh": 0.41}
    a["exact_match_stderr/bbh"] = b["exact_match_stderr/bbh"] = 0.05
    assert not beats_beyond_noise(a, b, [GSM, BBH], 1.0)  # b is on the plain front
    b["exact_match/bbh"] = 0.39  # now a is no worse anywhere and clearly better on gsm8k
    assert beats_beyond_noise(a, b, [GSM, BBH], 1.0)
    b["exact_match/gsm8k"] = 0.59  # both gaps within noise: nothing decides
    assert not beats_beyond_noise(a, b, [GSM, BBH], 1.0)


def test_missing_stderr_counts_as_zero():
    a = {"accuracy": 0.31, "latency_ms": 1.0}  # no stderr key at all
    b = {"accuracy": 0.30, "latency_ms": 1.0, "accuracy_stderr": None}
    assert beats_beyond_noise(a, b, [ACC, LAT], 3.0)
    b["accuracy_stderr"] = float("nan")
    assert beats_beyond_noise(a, b, [ACC, LAT], 3.0)
    b["accuracy_stderr"] = 0.01  # only b's stderr counts: tolerance 3 * 0.01 > 0.01
    assert not beats_beyond_noise(a, b, [ACC, LAT], 3.0)
    # a table without any stderr column gives the plain front
    df = table([("a", 0.31, 1.0), ("b", 0.30, 1.0)])
    out = pareto_front(df, [ACC, LAT], z=3.0)
    assert out["on_front"].tolist() == out["on_front_plain"].tolist() == [True, False]


def test_perplexity_gap_is_judged_on_its_log():
    # log(1010 / 1000) = 0.00995 < 1 * hypot(0.02, 0.02) = 0.028: within noise, although the
    # raw gap (10) is far larger than the stderr
    a = {"perplexity/wikitext2": 1000.0, "log_perplexity_stderr/wikitext2": 0.02}
    b = {"perplexity/wikitext2": 1010.0, "log_perplexity_stderr/wikitext2": 0.02}
    assert not beats_beyond_noise(a, b, [PPL], 1.0)
    # log(16 / 15) = 0.0645 > hypot(0.02, 0.02): beyond noise, and lower perplexity wins
    a["perplexity/wikitext2"], b["perplexity/wikitext2"] = 15.0, 16.0
    assert beats_beyond_noise(a, b, [PPL], 1.0)
    assert not beats_beyond_noise(b, a, [PPL], 1.0)
    assert not beats_beyond_noise(a, b, [PPL], 3.0)  # 3 * 0.028 = 0.085 > 0.0645
    # the accuracy stderr is not used for perplexity
    a["accuracy_stderr"] = b["accuracy_stderr"] = 10.0
    assert beats_beyond_noise(a, b, [PPL], 1.0)


def test_perplexity_only_table_front():
    df = pd.DataFrame(
        {
            "candidate": ["bf16", "int8", "nf4", "prune-0.5"],
            "status": ["ok"] * 4,
            "perplexity/wikitext2": [15.0, 15.2, 18.0, 4000.0],
            "log_perplexity_stderr/wikitext2": [0.02] * 4,
            "memory_gb": [1.0, 0.6, 0.4, 0.5],
        }
    )
    out = pareto_front(df, [PPL, MEM], z=2.0)
    assert out["on_front_plain"].tolist() == [True, True, True, False]
    assert out["on_front"].tolist() == [True, True, True, False]
    out = pareto_front(df.assign(memory_gb=1.0), [PPL, MEM], z=2.0)
    # at equal memory: 15.0 vs 15.2 is within 2 stderr (log gap 0.013 < 0.057), 18 is not
    assert out["on_front"].tolist() == [True, True, False, False]
    assert out["on_front_plain"].tolist() == [True, False, False, False]


def test_failed_rows_never_on_the_noise_front():
    df = noisy([("a", 0.9, 0.1, 1.0), ("b", 0.5, 0.1, 2.0)], ["failed", "ok"])
    out = pareto_front(df, [ACC, LAT], z=1.0)
    assert out["on_front"].tolist() == [False, True]
    assert out["on_front_plain"].tolist() == [False, True]
    empty = pareto_front(noisy([]), [ACC, LAT], z=1.0)
    assert empty.empty and {"on_front", "on_front_plain"} <= set(empty.columns)


def test_bad_inputs_raise():
    a = {"candidate": "a", "accuracy": 0.5, "latency_ms": 1.0}
    b = {"candidate": "b", "accuracy": 0.4, "latency_ms": float("nan")}
    with pytest.raises(UserError, match=r"'b'.*'latency_ms'"):
        beats_beyond_noise(a, b, [ACC, LAT], 1.0)
    with pytest.raises(UserError, match="z = -1"):
        beats_beyond_noise(a, a, [ACC], -1.0)
    with pytest.raises(UserError, match="z = nan"):
        pareto_front(table([("a", 0.5, 1.0)]), [ACC], z=float("nan"))
    with pytest.raises(UserError, match="no objectives"):
        beats_beyond_noise(a, a, [], 1.0)
    with pytest.raises(UserError, match="must be > 0"):
        beats_beyond_noise({"perplexity/wikitext2": 0.0}, {"perplexity/wikitext2": 2.0}, [PPL], 1)


def random_noisy_table(rng, n, se_scale):
    """Rounded values (ties occur) for two accuracies, a perplexity and a cost."""
    return pd.DataFrame(
        {
            "candidate": [f"c{i}" for i in range(n)],
            "status": ["ok"] * n,
            "accuracy": rng.integers(0, 10, n) / 10,
            "accuracy_stderr": rng.random(n) * se_scale,
            "exact_match/gsm8k": rng.integers(0, 10, n) / 10,
            "exact_match_stderr/gsm8k": rng.random(n) * se_scale,
            "perplexity/wikitext2": 10.0 + rng.integers(0, 10, n),
            "log_perplexity_stderr/wikitext2": rng.random(n) * se_scale,
            "latency_ms": rng.integers(0, 5, n).astype(float),
        }
    )


OBJS = [ACC, GSM, PPL, LAT]


@pytest.mark.parametrize("seed", range(5))
def test_zero_stderr_or_zero_z_gives_the_plain_front(seed):
    rng = np.random.default_rng(seed)
    df = random_noisy_table(rng, 40, se_scale=0.3)
    plain = pareto_front(df, OBJS)["on_front"].tolist()
    assert pareto_front(df, OBJS, z=0.0)["on_front"].tolist() == plain
    exact = df.assign(
        accuracy_stderr=0.0,
        **{"exact_match_stderr/gsm8k": 0.0, "log_perplexity_stderr/wikitext2": 0.0},
    )
    assert pareto_front(exact, OBJS, z=2.0)["on_front"].tolist() == plain
    # pairwise, beats with zero noise is exactly plain dominance
    F = np.stack(
        [-df["accuracy"], -df["exact_match/gsm8k"], df["perplexity/wikitext2"], df["latency_ms"]],
        axis=1,
    )
    recs = exact.to_dict("records")
    for i in range(0, 40, 3):
        for j in range(40):
            assert beats_beyond_noise(recs[i], recs[j], OBJS, 2.0) == _dominates(F[i], F[j])


@pytest.mark.parametrize("seed", range(5))
def test_noise_front_contains_the_plain_front_and_grows_with_z(seed):
    rng = np.random.default_rng(100 + seed)
    df = random_noisy_table(rng, 40, se_scale=0.1)
    prev = pareto_front(df, OBJS)["on_front"].to_numpy()
    assert 0 < prev.sum() < 40
    sizes = []
    for z in (0.5, 1.0, 2.0, 4.0):
        out = pareto_front(df, OBJS, z=z)
        on, plain = out["on_front"].to_numpy(), out["on_front_plain"].to_numpy()
        assert (plain <= on).all()  # every plain-front row stays
        assert (prev <= on).all()  # a larger z only keeps more
        prev = on
        sizes.append(on.sum())
    assert sizes[-1] > sizes[0] >= pareto_front(df, OBJS)["on_front"].sum()


@pytest.mark.parametrize("seed", range(5))
def test_a_gap_within_noise_never_decides(seed):
    # b equals a on the cost and trails it on every noisy objective by less than z * se:
    # a must not beat b (and b, worse as measured, must not beat a)
    rng = np.random.default_rng(200 + seed)
    z = 1.5
    for a in random_noisy_table(rng, 30, se_scale=0.1).to_dict("records"):
        b = dict(a)
        for name, se in (
            ("accuracy", "accuracy_stderr"),
            ("exact_match/gsm8k", "exact_match_stderr/gsm8k"),
        ):
            b[se] = rng.random() * 0.1
            b[name] = a[name] - rng.random() * 0.99 * z * math.hypot(a[se], b[se])
        se = "log_perplexity_stderr/wikitext2"
        b[se] = rng.random() * 0.1
        b["perplexity/wikitext2"] = a["perplexity/wikitext2"] * math.exp(
            rng.random() * 0.99 * z * math.hypot(a[se], b[se])
        )
        assert not beats_beyond_noise(a, b, OBJS, z)
        assert not beats_beyond_noise(b, a, OBJS, z)
        # one exact cost advantage is enough to decide
        assert beats_beyond_noise({**a, "latency_ms": a["latency_ms"] - 1}, b, OBJS, z)
