"""Do two 1-thread torch processes at once run as fast as one? (the scale-out's premise)

    python -m tests.perf.core_scaling

Two kernels, each timed for 8 s: a 1024x1024 fp32 matmul, and gemma-3-270m's output head
shape (256 positions x 640 -> 262,144 vocabulary, bf16). Each is run as one process with
1 thread, one process with 2 threads, and two 1-thread processes at the same time. Writes
``tests/perf/results/core_scaling.json`` (operations per second of each process).
"""

from __future__ import annotations

import json
import subprocess
import sys

from tests.perf import common

KERNEL = r"""
import json, sys, time, torch
threads, kind = int(sys.argv[1]), sys.argv[2]
torch.set_num_threads(threads)
if kind == "matmul":
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    op = lambda: a @ b
else:
    x = torch.randn(256, 640, dtype=torch.bfloat16)
    w = torch.randn(262144, 640, dtype=torch.bfloat16)
    op = lambda: x @ w.T
for _ in range(2):
    op()
t, n = time.perf_counter(), 0
while time.perf_counter() - t < 8:
    op()
    n += 1
print(json.dumps(n / (time.perf_counter() - t)))
"""


def run(threads: int, kind: str, copies: int) -> list[float]:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", KERNEL, str(threads), kind], stdout=subprocess.PIPE, text=True
        )
        for _ in range(copies)
    ]
    return [round(json.loads(p.communicate()[0]), 2) for p in procs]


def main() -> None:
    out = {}
    for kind in ("matmul", "lm_head"):
        out[kind] = {
            "one_process_1_thread": run(1, kind, 1),
            "one_process_2_threads": run(2, kind, 1),
            "two_processes_1_thread_each": run(1, kind, 2),
        }
        print(kind, out[kind], flush=True)
    common.write("core_scaling", {"machine": common.machine(), "ops_per_s": out})


if __name__ == "__main__":
    main()
