"""Extend the recorded planner grid (planner_grid.json) with what a multi-fidelity replay
needs: per-item scores, WikiText-2 perplexity per window, and the cost of each.

    python tests/perf/planner_grid_fidelity.py            # all 27 candidates (about 30 min)
    python tests/perf/planner_grid_fidelity.py --only bf16 --ppl-tokens 1024   # a quick look

For every candidate of the grid, from the grid sweep's own home
(/tmp/ecocompress-perf-planner-grid, written by planner_grid.py):

- **per-item scores**: lm-eval's per-sample records of its CommonsenseQA and BBH runs (the
  MLflow artifacts of the grid's child runs), in document order per (sub)task. lm-eval's
  ``limit=k`` scores the first k documents, so the accuracy at any smaller limit is the
  mean of a prefix (checked below on one candidate by re-running lm-eval at small limits);
- **perplexity**: ``tasks.perplexity.score_windows`` (the code the ``perplexity`` benchmark
  runs) on the grid's own pruned checkpoints, loaded at the candidate's precision by
  ``tasks.quantize.load_candidate``: NLL sum, tokens, CPU and wall seconds per window;
  a budget of ``window + k * stride`` tokens is an exact prefix of the windows;
- **lm-eval's per-evaluation fixed cost**: CPU seconds of CommonsenseQA and BBH on the
  reference at two small limits, fitted with the grid's own limit-30 run as
  ``cpu = fixed + per_item * items`` (the replay prices smaller limits with it).

Writes tests/perf/results/planner_grid_fidelity.json.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from tests.perf import common

GRID_HOME = Path("/tmp/ecocompress-perf-planner-grid")
METRIC_KEY = {"commonsenseqa": "acc", "bbh": "exact_match"}


def lm_eval_file(run_id: str, bench: str) -> Path:
    hits = list(GRID_HOME.glob(f"mlartifacts/*/{run_id}/artifacts/lm_eval/{bench}/*.json"))
    if len(hits) != 1:
        raise SystemExit(f"lm-eval output of run {run_id} ({bench}) not found under {GRID_HOME}")
    return hits[0]


def item_scores(path: Path, bench: str) -> dict[str, list[float]]:
    """Per (sub)task, the per-item score in document order."""
    out = json.loads(path.read_text())
    scores = {}
    for task, samples in out["samples"].items():
        ordered = sorted(samples, key=lambda s: s["doc_id"])
        assert [s["doc_id"] for s in ordered] == list(range(len(ordered))), task
        scores[task] = [float(s[METRIC_KEY[bench]]) for s in ordered]
    return scores


def checkpoint(row: dict) -> Path:
    """The grid's pruned folder for the row's prune spec (or the converted reference)."""
    from ecocompress.tasks.specs import PruneSpec

    # the row's "sparsity" is the achieved one (0.25002 for Wanda 25 %): the grid's nominal
    # sparsities are multiples of 0.05
    nominal = round(row["sparsity"] * 20) / 20
    spec = PruneSpec(method=row["prune"], sparsity=nominal, pattern=row["pattern"])
    if spec.method == "none":
        hits = [p.parent for p in GRID_HOME.glob("cache/gguf/*/config.json")]
    else:
        hits = [
            p.parent
            for p in GRID_HOME.glob("cache/pruned/*/ref.json")
            if json.loads(p.read_text()).get("prune_spec") == spec.canonical()
        ]
    if len(hits) != 1:
        raise SystemExit(f"no unique checkpoint for {row['candidate']}: {hits}")
    return hits[0]


def grid_ref(path: Path):
    """A ModelRef for one of the grid's checkpoint folders (loading only reads the path)."""
    from ecocompress.tasks.artifacts import ModelRef

    return ModelRef(
        id=f"grid-{path.name}",
        path=str(path),
        content_hash="grid",
        model_name="gemma-3-270m",
        source="package",
        reference_weight_bytes=1,
    )


def perplexity_windows(row: dict, tokens: int, window: int, stride: int) -> dict:
    from ecocompress.tasks.perplexity import evaluation_ids, score_windows, summarise
    from ecocompress.tasks.quantize import clear_loaded, load_candidate
    from ecocompress.tasks.specs import QuantSpec

    path = checkpoint(row)
    ref = grid_ref(path)
    quant = QuantSpec(bits=row["bits"], backend=row["quant_backend"])
    clear_loaded()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    model, tok = load_candidate(ref, quant)
    load_cpu, load_wall = time.process_time() - cpu0, time.perf_counter() - wall0
    ids, source = evaluation_ids(tok, common.data_dir())
    records = score_windows(model, ids[:tokens], tok.bos_token_id, window, stride)
    clear_loaded()
    return {
        "checkpoint": path.name,
        "source": source,
        "load_cpu_s": load_cpu,
        "load_wall_s": load_wall,
        "summary": summarise(records),
        "windows": records,
    }


def lm_eval_fixed_cost(row: dict, limits: list[int]) -> dict:
    """Re-run lm-eval on the reference at several limits in one warm process (the task
    index is built by a 1-item warm-up first, as an optimize process builds it once): CPU
    seconds per limit, a least-squares ``cpu = fixed + per_item * items``, and how many
    items score differently from the first items of the grid's limit-30 run."""
    import tempfile

    from ecocompress.tasks.evaluate import evaluate_benchmark
    from ecocompress.tasks.quantize import load_candidate
    from ecocompress.tasks.specs import EvalSpec, QuantSpec

    model, tok = load_candidate(
        grid_ref(checkpoint(row)), QuantSpec(bits=row["bits"], backend=row["quant_backend"])
    )
    out: dict = {}
    for bench in ("commonsenseqa", "bbh"):
        full = item_scores(lm_eval_file(row["run_id"], bench), bench)
        with tempfile.TemporaryDirectory() as d:  # warm-up: task index, first-call costs
            evaluate_benchmark(
                model,
                tok,
                EvalSpec(benchmark=bench, limit=1, max_gen_toks=16),
                common.data_dir(),
                Path(d),
            )
        runs = []
        for k in limits:
            spec = EvalSpec(benchmark=bench, limit=k, max_gen_toks=16)
            with tempfile.TemporaryDirectory() as d:
                cpu0, wall0 = time.process_time(), time.perf_counter()
                res = evaluate_benchmark(model, tok, spec, common.data_dir(), Path(d))
                cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
                small = item_scores(Path(res.results_path), bench)
            differ = sum(a != b for t in small for a, b in zip(small[t], full[t][:k], strict=True))
            runs.append(
                {
                    "limit": k,
                    "n_items": res.n_items,
                    "cpu_s": cpu,
                    "wall_s": wall,
                    "items_scored_differently_from_grid_prefix": differ,
                }
            )
        pts = [(r["n_items"], r["cpu_s"]) for r in runs]
        n_bar = sum(n for n, _ in pts) / len(pts)
        c_bar = sum(c for _, c in pts) / len(pts)
        b = sum((n - n_bar) * (c - c_bar) for n, c in pts) / sum((n - n_bar) ** 2 for n, _ in pts)
        out[bench] = {
            "runs": runs,
            "fit": {"fixed_cpu_s": c_bar - b * n_bar, "cpu_s_per_item": b},
            "grid_limit30_cpu_s": row["eval_cost"][bench]["cpu_s"],
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ppl-tokens", type=int, default=8192)
    ap.add_argument("--ppl-window", type=int, default=512)
    ap.add_argument("--ppl-stride", type=int, default=256)
    ap.add_argument("--only", default=None, help="comma list of candidate labels")
    ap.add_argument("--fixed-cost-limits", default="5,10,15,30")
    ap.add_argument("--name", default="planner_grid_fidelity")
    ap.add_argument(
        "--replace",
        action="store_true",
        help="re-measure the --only candidates and replace them in the existing results file "
        "(e.g. ones measured while the machine was busy)",
    )
    a = ap.parse_args()
    import os

    for k, v in common.env(GRID_HOME).items():
        os.environ.setdefault(k, v)
    grid = json.loads((common.RESULTS / "planner_grid.json").read_text())
    only = set(a.only.split(",")) if a.only else None
    t0 = time.perf_counter()
    cands = []
    for row in grid["rows"]:
        if only and row["candidate"] not in only:
            continue
        items = {b: item_scores(lm_eval_file(row["run_id"], b), b) for b in grid["benchmarks"]}
        # the per-item records reproduce the grid's accuracies exactly
        for b, per_task in items.items():
            flat = [x for s in per_task.values() for x in s]
            assert math.isclose(sum(flat) / len(flat), row[f"accuracy/{b}"]), (row["candidate"], b)
        ppl = perplexity_windows(row, a.ppl_tokens, a.ppl_window, a.ppl_stride)
        s = ppl["summary"]
        print(
            f"{row['candidate']:28s} ppl {s['perplexity']:9.2f} "
            f"[{s['ci_low']:.2f}, {s['ci_high']:.2f}]  "
            f"cpu {sum(w['cpu_s'] for w in ppl['windows']):6.1f} s",
            flush=True,
        )
        cands.append({"candidate": row["candidate"], "items": items, "perplexity": ppl})
    if a.replace:
        old = json.loads((common.RESULTS / f"{a.name}.json").read_text())
        assert old["perplexity_settings"]["tokens"] == a.ppl_tokens
        new = {c["candidate"]: c for c in cands}
        for c in old["candidates"]:
            if c["candidate"] in new:
                c.update(new[c["candidate"]])
        if a.fixed_cost_limits:
            ref_row = next(r for r in grid["rows"] if r["candidate"] == "bf16")
            limits = [int(x) for x in a.fixed_cost_limits.split(",")]
            old["lm_eval_fixed_cost"] = lm_eval_fixed_cost(ref_row, limits)
        old.setdefault("first_run_machine", old["machine"])
        old.setdefault("remeasured", []).append(
            {"candidates": sorted(new), "date": common.machine()["date"]}
        )
        common.write(a.name, {k: v for k, v in old.items() if k != "machine"})
        return
    ref_row = next(r for r in grid["rows"] if r["candidate"] == "bf16")
    limits = [int(x) for x in a.fixed_cost_limits.split(",") if x]
    fixed = lm_eval_fixed_cost(ref_row, limits) if limits and not only else None
    common.write(
        a.name,
        {
            "what": "per-item scores, per-window perplexity and evaluation costs of the "
            "planner grid's candidates (see the script's docstring)",
            "grid_fixture": "planner_grid.json",
            "grid_home": str(GRID_HOME),
            "perplexity_settings": {
                "tokens": a.ppl_tokens,
                "window": a.ppl_window,
                "stride": a.ppl_stride,
            },
            "lm_eval_fixed_cost": fixed,
            "wall_s": time.perf_counter() - t0,
            "candidates": cands,
        },
    )


if __name__ == "__main__":
    main()
