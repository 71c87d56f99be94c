"""Parity with the bare lm-eval CLI: `ecocompress evaluate` and `python -m lm_eval` on the same
model folder, generated task YAML, items, shots, dtype, batch size and seed, compared item by item.

    python tests/perf/parity.py --benchmarks gsm8k,truthfulqa,commonsenseqa,bbh --limit 100
    python tests/perf/parity.py --benchmarks humaneval --limit 20

Per benchmark: the pipeline runs in a fresh ECOCOMPRESS_HOME holding the converted GGUF
(dense, ``--bits 32`` = float32 by default), and its lm-eval output file (per-sample records
included) is read from the home's evaluation cache; then the CLI runs with ``--include_path``
set to the generated task folder the pipeline used, ``--log_samples`` and ``--seed``. Each
sample record, keyed by (task, doc_id, filter), must have the same document, prompt and
target hashes and request arguments, the same filtered response (strings equal; for
loglikelihood requests every choice's log-likelihood within 1e-5 relative, and the same
is-greedy flag) and the same per-item metric values. Writes
``tests/perf/results/parity_<benchmark>.json``: counts equal/different, the first
differences, both aggregate scores with stderr, and both wall times.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.perf import common

REL_TOL = 1e-5  # relative tolerance on log-likelihoods and float per-item metrics


def _close(a: Any, b: Any) -> bool:
    """Equal strings, or numbers (possibly written as strings) within ``REL_TOL``."""
    if a == b:
        return True
    try:
        x, y = float(a), float(b)
    except (TypeError, ValueError):
        return False
    return math.isclose(x, y, rel_tol=REL_TOL, abs_tol=1e-9)


def _flat(v: Any) -> list[Any]:
    if isinstance(v, (list, tuple)):
        return [y for x in v for y in _flat(x)]
    return [v]


def normalise(sample: dict) -> dict:
    """A sample record as the CLI writes it (``EvaluationTracker.save_results_samples``
    stringifies responses and arguments), from either the CLI's or the pipeline's file."""
    args = sample["arguments"]
    if isinstance(args, list):  # pipeline: simple_evaluate's raw list of argument tuples
        args = {
            f"gen_args_{i}": {f"arg_{j}": x for j, x in enumerate(arg)}
            for i, arg in enumerate(args)
        }
    return {
        "doc_hash": sample.get("doc_hash"),
        "prompt_hash": sample.get("prompt_hash"),
        "target": str(sample["target"]),
        "arguments": json.loads(json.dumps(args, default=str)),
        "filtered": [str(x) for x in _flat(sample["filtered_resps"])],
        "metrics": {m: sample.get(m) for m in sample.get("metrics", [])},
    }


def compare_item(p: dict, c: dict) -> list[str]:
    """Why pipeline record ``p`` and CLI record ``c`` (both ``normalise``d) differ; [] if equal."""
    why = [k for k in ("doc_hash", "prompt_hash", "target", "arguments") if p[k] != c[k]]
    if len(p["filtered"]) != len(c["filtered"]) or not all(
        _close(x, y) for x, y in zip(p["filtered"], c["filtered"], strict=False)
    ):
        why.append("filtered_resps")
    if set(p["metrics"]) != set(c["metrics"]) or not all(
        _close(p["metrics"][m], c["metrics"][m]) for m in p["metrics"]
    ):
        why.append("metrics")
    return why


def max_rel_diff(p: dict, c: dict) -> float:
    """Largest relative difference between numeric filtered responses (log-likelihoods)."""
    worst = 0.0
    for x, y in zip(p["filtered"], c["filtered"], strict=False):
        try:
            a, b = float(x), float(y)
        except ValueError:
            continue
        if a != b:
            worst = max(worst, abs(a - b) / max(abs(a), abs(b), 1e-30))
    return worst


def compare_samples(pipe: dict[str, list[dict]], cli: dict[str, list[dict]]) -> dict:
    """Item-by-item comparison of two ``{task: [sample record]}`` maps."""
    index = {
        side: {
            (t, s["doc_id"], s.get("filter")): normalise(s) for t, recs in d.items() for s in recs
        }
        for side, d in (("pipeline", pipe), ("cli", cli))
    }
    keys = sorted(set(index["pipeline"]) | set(index["cli"]), key=str)
    equal, diffs, worst = 0, [], 0.0
    for k in keys:
        p, c = index["pipeline"].get(k), index["cli"].get(k)
        why = ["missing in pipeline"] if p is None else ["missing in CLI"] if c is None else []
        if p is not None and c is not None:
            why = compare_item(p, c)
            worst = max(worst, max_rel_diff(p, c))
        if why:
            diffs.append({"task": k[0], "doc_id": k[1], "filter": k[2], "why": why})
        else:
            equal += 1
    docs = {(k[0], k[1]) for k in keys}
    return {
        "records": len(keys),
        "items": len(docs),
        "records_equal": equal,
        "records_different": len(diffs),
        "items_different": len({(d["task"], d["doc_id"]) for d in diffs}),
        "max_rel_diff_loglikelihood": worst,
        "first_differences": diffs[:10],
    }


def aggregate(results: dict, tasks: list[str], metric: str, kind: str = "") -> dict:
    """The benchmark score as the pipeline reports it (item-weighted over subtasks; a
    group: lm-eval's own aggregate)."""
    from ecocompress.tasks.evaluate import _stderr, pooled

    name, _, filt = metric.partition(",")
    if kind == "group":
        res = results["results"][tasks[0]]
        n = sum(int(v["effective"]) for v in results["n-samples"].values())
        return {
            "score": float(res[metric]),
            "stderr": _stderr(res.get(f"{name}_stderr,{filt}")),
            "n": n,
        }
    per = {
        t: {
            "score": float(results["results"][t][metric]),
            "stderr": _stderr(results["results"][t].get(f"{name}_stderr,{filt}")),
            "n": int(results["n-samples"][t]["effective"]),
        }
        for t in tasks
    }
    score, se, n = pooled(per)
    return {"score": score, "stderr": se, "n": n}


SETUP = """
import json, sys
from pathlib import Path
from ecocompress.tasks.benchmarks import get_benchmark
from ecocompress.tasks.benchmarks.base import STATIC_DIR
from ecocompress.tasks.evaluate import task_source
from ecocompress.tasks.specs import EvalSpec
s = EvalSpec(benchmark=sys.argv[1])
b = get_benchmark(s.benchmark, s.include_path)
names, include, source, _ = task_source(b, s, Path(sys.argv[2]))
# the CLI takes one include folder: the generated one (our static folder is only
# include:d from it by absolute path)
rest = [p for p in include[:-1] if p != str(STATIC_DIR)]
if rest:
    raise SystemExit(f"more than one include folder: {include}")
shots = s.num_fewshot if s.num_fewshot is not None else b.default_shots
print(json.dumps({"tasks": list(names), "include": include[-1] if include else None,
                  "shots": shots, "metric": b.metric, "kind": b.kind, "source": source}))
"""


def task_setup(benchmark: str, data: Path, home: Path) -> dict:
    """The pipeline's own lm-eval task names, include folder, shots and metric, from the
    function ``evaluate_benchmark`` itself uses (``tasks.evaluate.task_source``)."""
    out = subprocess.run(
        [sys.executable, "-c", SETUP, benchmark, str(data)],
        env=common.env(home),
        cwd=common.REPO,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def pipeline_cmd(b: str, limit: int, a: argparse.Namespace, data: Path) -> list[str]:
    cmd = [sys.executable, "-m", "ecocompress.flows.cli", "evaluate", "--bits", str(a.bits)]
    cmd += ["--benchmarks", b, "--limit", str(limit), "--batch-size", str(a.batch_size)]
    cmd += ["--data-dir", str(data), "--quiet"]
    if a.max_gen_toks:
        cmd += ["--max-gen-toks", str(a.max_gen_toks)]
    if b == "humaneval":
        cmd.append("--allow-code-execution")
    return cmd


def cli_cmd(setup: dict, limit: int, a: argparse.Namespace, model: str, out: Path) -> list[str]:
    dtype = "float32" if a.bits == 32 else "bfloat16"
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf"]
    cmd += ["--model_args", f"pretrained={model},dtype={dtype}"]
    cmd += ["--tasks", ",".join(setup["tasks"])]
    if setup["include"]:
        cmd += ["--include_path", setup["include"]]
    if setup["shots"] is not None:  # None: the task's own setting, as in the pipeline
        cmd += ["--num_fewshot", str(setup["shots"])]
    cmd += ["--limit", str(limit)]
    cmd += ["--batch_size", str(a.batch_size), "--device", "cpu", "--seed", str(a.seed)]
    cmd += ["--log_samples", "--output_path", str(out)]
    if a.max_gen_toks:
        cmd += ["--gen_kwargs", f"max_gen_toks={a.max_gen_toks}"]
    if any("humaneval" in t for t in setup["tasks"]):
        cmd.append("--confirm_run_unsafe_code")
    return cmd


def read_cli_output(out: Path, tasks: list[str]) -> tuple[dict, dict[str, list[dict]]]:
    """The CLI's results JSON and its per-task sample records."""
    results = json.loads(
        Path(sorted(glob.glob(f"{out}/**/results_*.json", recursive=True))[-1]).read_text()
    )
    samples = {}
    for t in tasks:
        (path,) = glob.glob(f"{out}/**/samples_{t}_*.jsonl", recursive=True)
        samples[t] = [json.loads(x) for x in Path(path).read_text().splitlines() if x.strip()]
    return results, samples


def run_one(b: str, limit: int, a: argparse.Namespace, model: str, data: Path) -> dict:
    home = common.fresh_home(f"parity-{b}")
    pipe = common.timed(pipeline_cmd(b, limit, a, data), home)
    (pipe_file,) = glob.glob(str(home / "cache" / "evaluations" / "*" / f"lm_eval_{b}.json"))
    setup = task_setup(b, data, home)
    pipe_res = json.loads(Path(pipe_file).read_text())
    steps = common.last_parent_artifacts(home, ("steps.json",))["steps.json"]["wall_seconds"]
    out = Path(f"/tmp/ecocompress-perf-parity-cli-{b}")
    subprocess.run(["rm", "-rf", str(out)], check=True)
    cli = common.timed(cli_cmd(setup, limit, a, model, out), home)
    cli_res, cli_samples = read_cli_output(out, setup["tasks"])
    cmp = compare_samples(pipe_res["samples"], cli_samples)
    return {
        "benchmark": b,
        "limit": limit,
        "bits": a.bits,
        "dtype": "float32" if a.bits == 32 else "bfloat16",
        "batch_size": a.batch_size,
        "num_fewshot": setup["shots"],
        "max_gen_toks": a.max_gen_toks,
        "seed": a.seed,
        "lm_eval_tasks": setup["tasks"],
        "metric": setup["metric"],
        **cmp,
        "pipeline": aggregate(pipe_res, setup["tasks"], setup["metric"], setup["kind"]),
        "cli": aggregate(cli_res, setup["tasks"], setup["metric"], setup["kind"]),
        "data_source": setup["source"],
        "pipeline_wall_s": round(pipe["wall_s"], 1),
        "pipeline_evaluate_step_s": round(sum(v for k, v in steps.items() if ":evaluate " in k), 1),
        "cli_wall_s": round(cli["wall_s"], 1),
        "cli_total_evaluation_time_s": cli_res.get("total_evaluation_time_seconds"),
        "pipeline_cmd": pipe["cmd"],
        "cli_cmd": cli["cmd"],
    }


def table(names: list[str]) -> str:
    """The README's parity table, from the ``parity_<benchmark>.json`` files present."""
    lines = [
        "| benchmark | dtype, batch | items | equal items | max rel. diff (loglik) "
        "| ecocompress | `lm_eval` CLI | ecocompress s (evaluate step) | CLI s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for b in names:
        f = common.RESULTS / f"parity_{b}.json"
        if not f.is_file():
            continue
        r = json.loads(f.read_text())

        def fmt(x: dict) -> str:
            se = "n/a" if x["stderr"] is None else f"{x['stderr']:.3f}"
            return f"{x['score']:.3f} ± {se}"

        lines.append(
            f"| {b} | {r['dtype']}, {r['batch_size']} | {r['items']} "
            f"| {r['items'] - r['items_different']} | {r['max_rel_diff_loglikelihood']:.1e} "
            f"| {fmt(r['pipeline'])} | {fmt(r['cli'])} "
            f"| {r['pipeline_wall_s']:.0f} ({r['pipeline_evaluate_step_s']:.0f}) "
            f"| {r['cli_wall_s']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--benchmarks", default="gsm8k,truthfulqa,commonsenseqa,bbh,humaneval")
    ap.add_argument("--limit", type=int, default=100, help="items per (sub)task")
    ap.add_argument("--limits", default="", help="per-benchmark limits, e.g. humaneval=20")
    ap.add_argument("--bits", type=int, default=32, choices=(32, 16))
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-gen-toks", type=int, default=None)
    ap.add_argument("--seed", type=int, default=1234, help="the pipeline's EvalSpec default")
    ap.add_argument("--table", action="store_true", help="print the README table and exit")
    a = ap.parse_args()
    if a.table:
        print(table(a.benchmarks.split(",")))
        return
    limits = dict(kv.split("=") for kv in a.limits.split(",") if kv)
    model, data = common.ensure_reference(), common.data_dir()
    for b in a.benchmarks.split(","):
        row = run_one(b, int(limits.get(b, a.limit)), a, model, data)
        common.write(f"parity_{b}", row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_cmd")}, indent=1))


if __name__ == "__main__":
    main()
