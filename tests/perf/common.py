"""Shared plumbing of the performance scripts: fresh homes, timed commands, run records.

Not tests: scripts that measure and write JSON under tests/perf/results/ with the
machine, versions and exact commands, so every README number can be traced and re-run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from ecocompress.flows.environment import HUB_OFFLINE, TELEMETRY_OFF

REPO = Path(__file__).resolve().parents[2]
RESULTS = Path(__file__).resolve().parent / "results"
OFFLINE = {**HUB_OFFLINE, **TELEMETRY_OFF}


def data_dir() -> Path:
    return Path(
        os.environ.get("ECOCOMPRESS_DATA_DIR", REPO.parent / "shared" / "data" / "benchmarks")
    ).resolve()


def base_home() -> Path:
    """A persistent home holding the converted GGUF, shared by every fresh home below."""
    return Path(os.environ.get("ECOCOMPRESS_PERF_BASE", "/tmp/ecocompress-perf-base"))


def fresh_home(name: str) -> Path:
    """An empty ECOCOMPRESS_HOME (cold caches, new MLflow store) that reuses the base home's
    GGUF conversion, so model download/conversion is not part of what is timed."""
    home = Path(f"/tmp/ecocompress-perf-{name}")
    shutil.rmtree(home, ignore_errors=True)
    (home / "cache").mkdir(parents=True)
    for kind in ("gguf", "hashes"):
        src = base_home() / "cache" / kind
        if src.exists():
            shutil.copytree(src, home / "cache" / kind, symlinks=True)
    return home


def env(home: Path) -> dict[str, str]:
    hf = base_home() / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        **OFFLINE,
        "ECOCOMPRESS_HOME": str(home),
        "HF_HOME": str(hf),
        "PREFECT_HOME": str(home / "prefect"),
    }


def timed(cmd: list[str], home: Path) -> dict:
    """Run ``cmd`` and return its wall and child CPU seconds; raise on failure."""
    t0 = time.perf_counter()
    r0 = os.times()
    proc = subprocess.run(cmd, env=env(home), cwd=REPO, capture_output=True, text=True)
    r1 = os.times()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-3000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return {
        "cmd": " ".join(cmd),
        "wall_s": wall,
        "cpu_s": (r1.children_user - r0.children_user) + (r1.children_system - r0.children_system),
        "stdout_tail": proc.stdout[-4000:],
    }


def ensure_reference() -> str:
    """Convert gemma-3-270m once into the base home; return the safetensors folder."""
    home = base_home()
    code = "from tasks.download import resolve_model; print(resolve_model('gemma-3-270m').path)"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip().splitlines()[-1]


def last_parent_artifacts(home: Path, names: tuple[str, ...]) -> dict[str, object]:
    """JSON artifacts of the newest parent run in ``home``'s MLflow store."""
    code = (
        "import json,sys; from mlflow import MlflowClient; import mlflow\n"
        f"c = MlflowClient('sqlite:///{home}/mlflow.db')\n"
        "exps = [e.experiment_id for e in c.search_experiments()]\n"
        "runs = [r for r in c.search_runs(exps, order_by=['attribute.start_time DESC']) "
        "if 'mlflow.parentRunId' not in r.data.tags]\n"
        "out = {}\n"
        f"for n in {names!r}:\n"
        "    p = mlflow.artifacts.download_artifacts(run_id=runs[0].info.run_id, artifact_path=n, "
        f"tracking_uri='sqlite:///{home}/mlflow.db')\n"
        "    out[n] = json.load(open(p))\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=env(home), capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict[str, object]:
    import importlib.metadata as md

    cpu = platform.processor()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    vers = {}
    for pkg in (
        "torch",
        "transformers",
        "lm_eval",
        "prefect",
        "mlflow",
        "codecarbon",
        "bitsandbytes",
    ):
        try:
            vers[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            vers[pkg] = None
    git = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True
    ).stdout.strip()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "versions": vers,
        "git_sha": git,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
    }


def write(name: str, record: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps({"machine": machine(), **record}, indent=1))
    print(f"wrote {out}")
    return out
