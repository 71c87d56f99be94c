"""Where a Dask worker's slowdown comes from: the same gemma-3-270m work with 1 torch thread
in a plain process and in a ``LocalCluster`` worker, with and without the environment a Dask
nanny sets before it spawns a worker (``distributed.nanny.pre-spawn-environ``, which holds
``MALLOC_TRIM_THRESHOLD_=65536``: glibc then returns freed memory to the system at once,
so each large tensor allocation faults its pages in again).

    python -m tests.perf.worker_overhead

Work, in each setting: load the model, then 5 forward passes of a 4 x 256-token batch (as
lm-eval's log-likelihood requests) and a 32-token greedy decode (as the latency step);
median seconds of each. One setting at a time, on the otherwise idle machine. Writes
``tests/perf/results/worker_overhead.json``.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time

from tests.perf import common


def work(model_dir: str) -> dict:
    """Runs in the measured process."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(1)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(10, 20000, (4, 256), generator=g)
    fwd, dec = [], []
    with torch.inference_mode():
        for _ in range(5):
            t0 = time.perf_counter()
            model(ids).logits.float().log_softmax(-1)
            fwd.append(time.perf_counter() - t0)
        for _ in range(3):
            t0 = time.perf_counter()
            model.generate(ids[:1, :16], max_new_tokens=32, min_new_tokens=32, do_sample=False)
            dec.append((time.perf_counter() - t0) / 32)
    return {
        "forward_s": statistics.median(fwd),
        "decode_ms_per_token": 1000 * statistics.median(dec),
        "malloc_trim_threshold": os.environ.get("MALLOC_TRIM_THRESHOLD_"),
        "torch_threads": torch.get_num_threads(),
    }


def in_worker(model_dir: str, pre_spawn: dict | None) -> dict:
    import dask
    from distributed import Client, LocalCluster

    cfg = {"distributed.nanny.pre-spawn-environ": pre_spawn} if pre_spawn is not None else {}
    # a nanny also sets its pre-spawn environment in this process (os.environ.update):
    # start each setting from a clean one
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set(cfg):
        with (
            LocalCluster(
                n_workers=1,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
            ) as cluster,
            Client(cluster) as client,
        ):
            return client.submit(work, model_dir, pure=False).result()


def main() -> None:
    model_dir = common.ensure_reference()
    out: dict[str, dict] = {}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MALLOC_TRIM_THRESHOLD_", None)
    code = (
        "import json, sys; from tests.perf.worker_overhead import work; "
        "print(json.dumps(work(sys.argv[1])))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, model_dir],
        env=env,
        cwd=common.REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    import json

    out["plain process"] = json.loads(proc.stdout.strip().splitlines()[-1])
    print("plain process", out["plain process"], flush=True)
    out["dask worker, default environment"] = in_worker(model_dir, None)
    print("dask default", out["dask worker, default environment"], flush=True)
    no_trim = {
        "MALLOC_TRIM_THRESHOLD_": None,
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    }
    out["dask worker, MALLOC_TRIM_THRESHOLD_ unset"] = in_worker(model_dir, no_trim)
    print("dask no trim", out["dask worker, MALLOC_TRIM_THRESHOLD_ unset"], flush=True)
    common.write("worker_overhead", {"machine": common.machine(), "settings": out})


if __name__ == "__main__":
    main()
