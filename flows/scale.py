"""Scale-out: candidates as Prefect task runs on a Dask cluster (or Ray), declared once.

``ScaleParams`` holds the execution settings (where candidates run, where step results are
shared); they change no number, so they are not part of ``RunParams`` and a resumed or
cached run does not depend on them. With neither ``--workers`` nor ``--cluster`` the sweep
runs its candidates one after another in the flow's process, as before.

- ``--workers N``: a local ``distributed.LocalCluster`` of N worker processes, one Dask
  thread each and ``cores // N`` torch threads each (cores: this process's CPU affinity).
- ``--cluster tcp://host:8786``: an existing Dask scheduler; ``--cluster ray://host:10001``:
  an existing Ray cluster (``pip install 'ecocompress[ray]'``). Its workers need this
  package, the model and data paths, and the same ``ECOCOMPRESS_HOME`` and step-results
  folder (a shared file system): a step result whose file is missing on a worker is
  recomputed there.
- ``--results PATH``: the step-results folder (``ECOCOMPRESS_RESULTS``; default
  ``$ECOCOMPRESS_HOME/step-results``). A step is computed under an exclusive ``flock`` on
  ``<results>/locks/<key>.lock``, so two workers never compute the same step at once: the
  second waits and reads the first one's record.

Before anything is submitted, a worker's memory is estimated (``memory_per_worker``) and a
cluster that cannot hold it is refused with one line; a worker killed mid-candidate has its
candidate rescheduled once on another worker (``distributed.scheduler.allowed-failures``).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pydantic import Field, field_validator, model_validator

from ecocompress.flows.records import RESULTS_ENV
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import Spec

CLUSTER_SCHEMES = {"tcp": "Dask scheduler", "ray": "Ray cluster"}
CONNECT_TIMEOUT_S = 5.0  # a --cluster address that does not answer is refused after this
# A worker dying with a candidate is tolerated this many times per candidate: the candidate
# is rescheduled once on another worker, then recorded FAILED.
ALLOWED_WORKER_DEATHS = 1
# Memory of one worker, estimated: the reference weights in float32 and the candidate's
# copy, plus one batch of float32 logits over the vocabulary at this many positions.
ESTIMATE_POSITIONS = 512


def cpu_cores() -> int:
    """CPUs this process may use (its affinity: ``taskset`` and cgroups' cpusets count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


class ScaleParams(Spec):
    """Where a command's candidates run. No setting here changes a result."""

    workers: int | None = Field(
        None,
        ge=1,
        le=256,
        description="evaluate candidates in parallel on a local Dask cluster of N worker "
        "processes, each with cores/N torch threads (default: one after another)",
    )
    cluster: str | None = Field(
        None,
        description="an existing cluster: tcp://host:8786 (Dask scheduler) or "
        "ray://host:10001 (Ray, pip install 'ecocompress[ray]')",
    )
    results: str | None = Field(
        None,
        description=f"step-results folder every worker can read (default: {RESULTS_ENV}, "
        "else $ECOCOMPRESS_HOME/step-results)",
    )

    @field_validator("cluster")
    @classmethod
    def _cluster(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in CLUSTER_SCHEMES or not u.hostname:
            raise ValueError(
                f"cluster {v!r}: give tcp://host:port (a Dask scheduler) or ray://host:port (Ray)"
            )
        try:
            u.port  # noqa: B018 - raises on a bad port
        except ValueError:
            raise ValueError(f"cluster {v!r}: the port is not a number 1-65535") from None
        return v

    @field_validator("results")
    @classmethod
    def _results(cls, v: str | None) -> str | None:
        if v is None:
            return v
        u = urlparse(v)
        if u.scheme not in ("", "file"):
            raise ValueError(
                f"results {v!r}: only a folder (or file:// URL) is supported; mount the "
                "shared storage and give its path"
            )
        return str(Path(u.path if u.scheme else v).expanduser().resolve())

    @model_validator(mode="after")
    def _one_engine(self) -> ScaleParams:
        if self.workers is not None and self.cluster is not None:
            raise ValueError("give --workers (a local cluster) or --cluster, not both")
        return self

    @property
    def parallel(self) -> bool:
        return self.workers is not None or self.cluster is not None

    def threads_per_worker(self) -> int | None:
        """Torch threads of each local worker (None: a remote cluster's workers keep theirs)."""
        if self.workers is None:
            return None
        return max(1, cpu_cores() // self.workers)


@contextmanager
def results_env(scale: ScaleParams | None) -> Iterator[None]:
    """``--results`` as this process's step-results folder for the block (workers get it
    with each task); the previous value is restored after."""
    if scale is None or scale.results is None:
        yield
        return
    before = os.environ.get(RESULTS_ENV)
    os.environ[RESULTS_ENV] = scale.results
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(RESULTS_ENV, None)
        else:
            os.environ[RESULTS_ENV] = before


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Refuse a ``--cluster`` address where nothing listens, within ``timeout`` seconds.

    Raises:
        UserError: naming the address, what should answer there, and why it did not.
    """
    u = urlparse(address)
    default_port = {"tcp": 8786, "ray": 10001}[u.scheme]
    port = u.port or default_port
    try:
        with socket.create_connection((u.hostname, port), timeout=timeout):
            pass
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UserError(
            f"--cluster {address}: no {CLUSTER_SCHEMES[u.scheme]} answers at "
            f"{u.hostname}:{port} ({why})"
        ) from None


def preflight(scale: ScaleParams | None) -> None:
    """What can be checked before any server starts: the engine is installed and answers."""
    if scale is None or not scale.parallel:
        return
    if scale.cluster is not None and scale.cluster.startswith("ray://"):
        try:
            import prefect_ray  # noqa: F401
        except ImportError:
            raise UserError(
                f"--cluster {scale.cluster} needs Ray: pip install 'ecocompress[ray]'"
            ) from None
    if scale.cluster is not None:
        check_reachable(scale.cluster)


def memory_per_worker(reference_path: str | Path, batch_size: int) -> int:
    """Estimated bytes one worker needs for a candidate of this model (see
    ``ESTIMATE_POSITIONS``): twice the float32 weights plus one batch of float32 logits."""
    import json

    from ecocompress.tasks.sizes import disk_bytes

    ref = Path(reference_path)
    weights = sum(disk_bytes(f) for f in ref.glob("*.safetensors"))
    vocab = 0
    try:
        cfg = json.loads((ref / "config.json").read_text())
        vocab = int(cfg.get("vocab_size") or cfg.get("text_config", {}).get("vocab_size") or 0)
    except (OSError, ValueError):
        pass
    return 2 * weights + batch_size * ESTIMATE_POSITIONS * vocab * 4


def check_memory(scale: ScaleParams, per_worker: int, worker_limits: list[int] | None) -> None:
    """Refuse a configuration whose workers cannot hold a candidate.

    ``worker_limits``: each remote worker's memory limit in bytes (0: none set); for
    ``--workers`` the machine's available memory is shared by all of them.

    Raises:
        UserError: with the estimate and what is there.
    """
    import psutil

    from ecocompress.tasks.sizes import format_size

    if scale.workers is not None:
        avail = psutil.virtual_memory().available
        need = scale.workers * per_worker
        if need > avail:
            fit = max(0, avail // per_worker) if per_worker else 0
            raise UserError(
                f"--workers {scale.workers} needs about {format_size(need)} "
                f"({format_size(per_worker)} per worker, estimated) but "
                f"{format_size(avail)} is available: use --workers {fit} or fewer"
                if fit
                else f"one worker needs about {format_size(per_worker)} (estimated) but "
                f"{format_size(avail)} is available"
            )
        return
    limits = [x for x in (worker_limits or []) if x]
    if limits and max(limits) < per_worker:
        raise UserError(
            f"--cluster {scale.cluster}: a worker needs about {format_size(per_worker)} "
            f"(estimated) but the largest worker has {format_size(max(limits))}"
        )


def gpu_count() -> int:
    """CUDA devices visible here (0 without torch's CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - no usable CUDA is no GPU
        return 0


def task_runner(scale: ScaleParams) -> AbstractContextManager[Any]:
    """The Prefect task runner for ``scale`` (enter it to start the cluster or connect)."""
    import dask

    dask.config.set(
        {
            "distributed.scheduler.allowed-failures": ALLOWED_WORKER_DEATHS,
            # a Dask nanny spawns workers with MALLOC_TRIM_THRESHOLD_=65536: glibc then hands
            # freed memory back at once and every large tensor faults its pages in again,
            # 20-29 % slower model forwards measured (tests/perf/worker_overhead.py)
            "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
        }
    )
    if scale.cluster is not None and scale.cluster.startswith("ray://"):
        from prefect_ray import RayTaskRunner

        # the workers' own logs (Prefect's task-run lines) stay on the cluster unless verbose
        verbose = bool(os.environ.get("ECOCOMPRESS_VERBOSE"))
        return RayTaskRunner(address=scale.cluster, init_kwargs={"log_to_driver": verbose})
    from prefect_dask import DaskTaskRunner

    if scale.cluster is not None:
        return DaskTaskRunner(address=scale.cluster.removeprefix("tcp://"))
    threads = scale.threads_per_worker()
    env = {v: str(threads) for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    gpus = gpu_count()
    kwargs: dict[str, Any] = {
        "n_workers": scale.workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": None,
        "env": env,
    }
    if gpus:
        if scale.workers and scale.workers > gpus:
            raise UserError(
                f"--workers {scale.workers} on a machine with {gpus} GPU(s): each worker "
                f"holds one GPU, use --workers {gpus} or fewer"
            )
        kwargs["resources"] = {"GPU": 1}
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=kwargs)
