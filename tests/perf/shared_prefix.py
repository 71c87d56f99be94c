"""Shared-prefix scoring against lm-eval's own path on dense gemma-3-270m: per-item
agreement and CPU seconds per item, in one run of this script.

    python -m tests.perf.shared_prefix [--candidates fp32,bf16,int8,nf4] \\
        [--benchmarks commonsenseqa,truthfulqa,bbh,gsm8k] [--limit 100] \\
        [--limits bbh=34,gsm8k=20] [--quantized-limits truthfulqa=30,bbh=10,gsm8k=5] \\
        [--compare shared-prefix | lm-eval@1] [--name shared_prefix]

Each candidate is loaded as the pipeline loads it (tasks/quantize.py: fp32, bf16,
bitsandbytes LLM.int8, NF4); ``--limit`` is items per lm-eval task (BBH: per subtask,
three subtasks), ``--quantized-limits`` overrides it for int8 and NF4 (bitsandbytes on CPU
is slow). Both sides run ``tasks.evaluate.evaluate_benchmark`` on the same loaded model,
the same items, shots, seed and batch size (4), in this process one after the other:
``--evaluator lm-eval`` (lm-eval's ``HFLM``; its records equal the bare ``lm_eval`` CLI's
item by item, tests/perf/parity.py) and ``--evaluator shared-prefix``
(tasks/shared_prefix.py). CPU seconds are ``time.process_time()`` around each call (every
thread of this process, torch's included; lm-eval's task building included), divided by
the items; each benchmark is first evaluated on one item, untimed (first-use costs:
imports, the task index, the dataset's cache). Agreement, per item: the chosen answer (the
choice with the highest log-likelihood, as lm-eval's ``acc``), every log-likelihood's
absolute and relative difference, and for generation the generated text; with it the
positions ``generate`` decoded on each side (rows x new tokens: a changed generation can
change its batch's length, and with it the CPU time). ``--compare
lm-eval@1`` compares lm-eval with itself at batch size 1 instead: how much a batch shape
alone moves its answers (bf16's rounding). The token counts are the shared-prefix scorer's
own (tasks/shared_prefix.py): the positions it ran through the decoder and the head, what
lm-eval's path runs for the same requests, and the floor (the distinct positions). Writes
``tests/perf/results/<name>.json`` after each benchmark.
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.perf import common


def samples(path: str) -> dict[tuple[str, int], Any]:
    """``(task, doc_id)`` -> the filtered responses of lm-eval's written samples."""
    out = json.loads(Path(path).read_text())
    return {(t, s["doc_id"]): s["filtered_resps"] for t, ss in out["samples"].items() for s in ss}


def agreement(a: dict, b: dict) -> dict[str, Any]:
    """Per-item agreement of two ``samples`` maps (lm-eval's, shared-prefix's)."""
    assert a.keys() == b.keys()
    same_choice = same_text = n_ll = 0
    max_abs = max_rel = 0.0
    for k in a:
        ra, rb = a[k], b[k]
        if ra and isinstance(ra[0], (list, tuple)):  # log-likelihood: [[ll, greedy], ...]
            la = [float(x[0]) for x in ra]
            lb = [float(x[0]) for x in rb]
            same_choice += la.index(max(la)) == lb.index(max(lb))
            for x, y in zip(la, lb, strict=True):
                n_ll += 1
                max_abs = max(max_abs, abs(x - y))
                max_rel = max(max_rel, abs(x - y) / max(abs(x), 1e-30))
        else:  # generation: the filtered strings
            same_text += [str(x) for x in ra] == [str(x) for x in rb]
    out: dict[str, Any] = {"items": len(a)}
    if n_ll:
        out.update(
            same_choice=same_choice,
            same_choice_fraction=same_choice / len(a),
            loglikelihoods=n_ll,
            max_abs_diff=max_abs,
            max_rel_diff=max_rel,
        )
    else:
        out.update(same_generation=same_text, same_generation_fraction=same_text / len(a))
    return out


class GenerateCount:
    """Wraps a model's ``generate`` (both evaluators call ``self.model.generate`` with
    ``input_ids``): its calls, and the positions it decoded, rows x new tokens (a row that
    has met its stop sequence is decoded on until its batch ends, as lm-eval's are)."""

    def __init__(self, model: Any) -> None:
        self.generate, self.calls, self.positions = model.generate, 0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        out = self.generate(*args, **kwargs)
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        self.calls += 1
        self.positions += out.shape[0] * (out.shape[1] - ids.shape[1])
        return out


CANDIDATES = {
    "fp32": (32, "none"),
    "bf16": (16, "none"),
    "int8": (8, "bitsandbytes"),
    "nf4": (4, "bitsandbytes"),
}


def main() -> None:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("--candidates", default="fp32,bf16,int8,nf4")
    ap.add_argument("--benchmarks", default="commonsenseqa,truthfulqa,bbh,gsm8k")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--limits", default="bbh=34,gsm8k=20")
    ap.add_argument("--quantized-limits", default="truthfulqa=30,bbh=10,gsm8k=5")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--name", default="shared_prefix")
    # what lm-eval (at --batch-size) is compared with: an evaluator, @ a batch size if not
    # --batch-size's ("lm-eval@1": lm-eval against itself, its own batch-shape noise)
    ap.add_argument("--compare", default="shared-prefix")
    a = ap.parse_args()
    model_dir, data = common.ensure_reference(), common.data_dir()
    os.environ["ECOCOMPRESS_HOME"] = str(common.base_home())

    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.evaluate import evaluate_benchmark
    from ecocompress.tasks.quantize import clear_loaded, load_candidate
    from ecocompress.tasks.specs import EvalSpec, QuantSpec

    ev2, _, bs2 = a.compare.partition("@")
    sides = {"lm-eval": ("lm-eval", a.batch_size), a.compare: (ev2, int(bs2 or a.batch_size))}
    runs: dict[str, dict[str, Any]] = {}
    warm: set[str] = set()
    for cand in a.candidates.split(","):
        bits, backend = CANDIDATES[cand]
        limits = dict(kv.split("=") for kv in a.limits.split(",") if kv)
        if bits in (8, 4):
            limits.update(kv.split("=") for kv in a.quantized_limits.split(",") if kv)
        model, tok = load_candidate(resolve_model(model_dir), QuantSpec(bits=bits, backend=backend))
        for b in a.benchmarks.split(","):
            limit = int(limits.get(b, a.limit))
            if b not in warm:  # one item, untimed: the process's and the dataset's first-use costs
                with tempfile.TemporaryDirectory() as out:
                    evaluate_benchmark(model, tok, EvalSpec(benchmark=b, limit=1), data, Path(out))
                warm.add(b)
            side: dict[str, Any] = {}
            for label, (ev, bs) in sides.items():
                spec = EvalSpec(benchmark=b, limit=limit, batch_size=bs, evaluator=ev)
                model.generate = gen = GenerateCount(model)  # on the instance, for this side
                with tempfile.TemporaryDirectory() as out:
                    t0, c0 = time.perf_counter(), time.process_time()
                    r = evaluate_benchmark(model, tok, spec, data, Path(out))
                    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
                    side[label] = {
                        "score": r.score,
                        "stderr": r.stderr,
                        "items": r.n_items,
                        "cpu_s": round(cpu, 1),
                        "wall_s": round(wall, 1),
                        "cpu_s_per_item": round(cpu / r.n_items, 3),
                        "notes": [n for n in r.notes if "shared prefixes" in n],
                        "generate_calls": gen.calls,
                        "generated_positions": gen.positions,
                        "samples": samples(r.results_path),
                    }
                del model.generate  # the class's method again
                print(cand, b, label, side[label]["cpu_s"], "s CPU", flush=True)
            agree = agreement(side["lm-eval"].pop("samples"), side[a.compare].pop("samples"))
            lm, sp = side["lm-eval"], side[a.compare]
            se = math.hypot(lm["stderr"] or 0.0, sp["stderr"] or 0.0)
            runs[f"{cand}/{b}"] = {
                "candidate": cand,
                "quant": {"bits": bits, "backend": backend},
                "benchmark": b,
                "limit": limit,
                "compared": a.compare,
                "lm-eval": lm,
                a.compare: sp,
                "agreement": agree,
                "score_difference": sp["score"] - lm["score"],
                "within_one_stderr": abs(sp["score"] - lm["score"]) <= (lm["stderr"] or 0.0),
                "combined_stderr": se,
                "cpu_ratio": round(lm["cpu_s"] / sp["cpu_s"], 2) if sp["cpu_s"] else None,
            }
            print(json.dumps(runs[f"{cand}/{b}"], indent=1), flush=True)
            common.write(  # after each benchmark: a long run keeps what it measured
                a.name,
                {
                    "machine": common.machine(),
                    "model": "gemma-3-270m (PyPI Q4_K_M GGUF dequantized), dense",
                    "batch_size": a.batch_size,
                    "runs": runs,
                },
            )
        del model, tok
        clear_loaded()


if __name__ == "__main__":
    main()
