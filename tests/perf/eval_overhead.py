"""Evaluation overhead: `ecocompress evaluate` on the reference candidate against the
`lm_eval` CLI on the same model folder, task definition, limit, dtype and batch size.

    python tests/perf/eval_overhead.py --limit 100 --benchmarks commonsenseqa,truthfulqa

Both run as fresh processes, one benchmark per process pair. The pipeline runs in a new
ECOCOMPRESS_HOME holding the converted GGUF, after a 1-item warm-up on another benchmark
that creates the MLflow/Prefect databases and measures the candidate: what is timed is a
steady-state command whose evaluation of this benchmark is uncached. Reported per
benchmark: both wall times, the pipeline's measure step (latency/memory measurement,
which the CLI does not do) and ratio = (pipeline - measure step) / lm_eval CLI; the
target is <= 1.10. The CLI reads the same generated local-data task YAML the pipeline
uses, so both score the same items with the same prompts; scores are compared too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ecocompress.tasks.benchmarks import REGISTRY
from tests.perf import common


def lm_eval_task(benchmark: str, data: Path, home: Path) -> tuple[str, str, int]:
    """(task name, include path, shots) of the pipeline's own local-data task."""
    code = (
        "import json; from pathlib import Path; from tasks.specs import EvalSpec\n"
        "from tasks.benchmarks import get_benchmark; from tasks.benchmarks.local import local_task_dir\n"
        f"s = EvalSpec(benchmark='{benchmark}')\n"
        "unit = get_benchmark(s.benchmark).units(())[0]\n"
        f"print(json.dumps([unit.local_task, str(local_task_dir(Path('{data}'))), s.num_fewshot]))\n"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code],
        env=common.env(home),
        cwd=common.REPO,
        capture_output=True,
        text=True,
    )
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    name, inc, shots = json.loads(out.stdout.strip().splitlines()[-1])
    return name, inc, shots


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--benchmarks", default="commonsenseqa,truthfulqa")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--tag", default="", help="suffix of the results file name")
    a = ap.parse_args()
    ref_dir = common.ensure_reference()
    data = common.data_dir()
    rows = []
    for b in a.benchmarks.split(","):
        home = common.fresh_home(f"overhead-{b}")
        # Warm-up on another benchmark: creates the MLflow and Prefect databases (one-time
        # set-up of a new home) and measures the candidate; this benchmark stays uncached.
        other = "truthfulqa" if b != "truthfulqa" else "commonsenseqa"

        def evaluate(bench: str, limit: int) -> dict:
            cmd = [
                sys.executable,
                "-m",
                "ecocompress.flows.cli",
                "evaluate",
                "--bits",
                "16",
                "--benchmarks",
                bench,
                "--limit",
                str(limit),
                "--batch-size",
                str(a.batch_size),
                "--data-dir",
                str(data),
                "--quiet",
            ]
            return common.timed(cmd, home)  # noqa: B023 - called within this iteration

        evaluate(other, 1)
        pipe = evaluate(b, a.limit)
        art = common.last_parent_artifacts(home, ("steps.json", "results.json"))
        steps = art["steps.json"]["wall_seconds"]
        measure_s = sum(v for k, v in steps.items() if k.endswith(":measure"))
        eval_s = sum(v for k, v in steps.items() if ":evaluate " in k)
        task, inc, shots = lm_eval_task(b, data, home)
        cli_out = Path(f"/tmp/ecocompress-perf-lmeval-{b}")
        cli = common.timed(
            [
                sys.executable,
                "-m",
                "lm_eval",
                "--model",
                "hf",
                "--model_args",
                f"pretrained={ref_dir},dtype=bfloat16",
                "--tasks",
                task,
                "--include_path",
                inc,
                "--num_fewshot",
                str(shots),
                "--limit",
                str(a.limit),
                "--batch_size",
                str(a.batch_size),
                "--device",
                "cpu",
                "--seed",
                "1234",
                "--output_path",
                str(cli_out),
            ],
            home,
        )
        row = {
            "benchmark": b,
            "limit": a.limit,
            "batch_size": a.batch_size,
            "dtype": "bfloat16",
            "num_fewshot": shots,
            "lm_eval_task": task,
            "pipeline_wall_s": pipe["wall_s"],
            "pipeline_measure_step_s": measure_s,
            "pipeline_evaluate_steps_s": eval_s,
            "lm_eval_cli_wall_s": cli["wall_s"],
            "ratio_excluding_measure": (pipe["wall_s"] - measure_s) / cli["wall_s"],
            "ratio_total": pipe["wall_s"] / cli["wall_s"],
            "pipeline_accuracy": art["results.json"][0].get(REGISTRY[b].column),
            "pipeline_stderr": art["results.json"][0].get(f"accuracy_stderr/{b}"),
            "lm_eval_cli_table": cli["stdout_tail"][-1200:],
            # set when the pipeline talked to a running Prefect server instead of starting one
            "prefect_api_url": os.environ.get("PREFECT_API_URL"),
            "pipeline_cmd": pipe["cmd"],
            "lm_eval_cmd": cli["cmd"],
        }
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "lm_eval_cli_table"}, indent=1))
    name = f"eval_overhead_{a.benchmarks.replace(',', '_')}{'_' + a.tag if a.tag else ''}"
    common.write(name, {"rows": rows})


if __name__ == "__main__":
    main()
