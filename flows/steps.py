"""Prefect tasks: thin, cached wrappers around the plain functions in ``tasks`` and ``metrics``.

Cache keys are explicit content keys (parent artifact id, canonical spec, data file
hashes, code version, and for timings the machine), never the run id, so re-running
a command reuses every finished step and changing one benchmark's spec re-runs only
that benchmark. ``RESULT_KEYS`` maps each cached task to its key; the results persist as
typed JSON records (``flows.records``), not through Prefect's result persistence, which
would unpickle whatever a record in its folder names as its serializer. Every cached task
returns JSON: ``ModelRef``, ``dict`` of plain values, ``float | None``. Only small
references and numbers cross task boundaries, never ``nn.Module``s.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, get_type_hints

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from ecocompress.tasks.artifacts import (
    ModelRef,
    cache_dir,
    code_version,
    sha256_file,
    sha256_text,
)
from ecocompress.tasks.specs import EvalSpec, PruneSpec, QuantSpec


def _key(*parts: object) -> str:
    return sha256_text(*(str(p) for p in parts), code_version())


def machine_fingerprint() -> str:
    """What timings depend on besides the candidate: CPU model, core count, accelerator."""
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = "none"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:  # pragma: no cover
        pass
    return f"{platform.node()}|{cpu}|{os.cpu_count()}|{gpu}"


def data_hash(files: list[Path]) -> str:
    """Hash of the benchmark data files (names and contents); '' when read from the Hub."""
    return sha256_text(*(f"{f.name}:{sha256_file(f)}" for f in sorted(files))) if files else ""


@task(name="download", persist_result=False)
def download_step(model: str, revision: str | None) -> ModelRef:
    """Resolve ``--model`` to a local safetensors folder (GGUF converted once, cached)."""
    from ecocompress.tasks.download import resolve_model

    return resolve_model(model, revision)


def _prune_key(p: dict[str, Any]) -> str:
    return _key("prune", p["ref"].id, p["spec"].canonical(), p["calib_hash"])


@task(name="prune", persist_result=False, cache_policy=NO_CACHE)
def prune_step(ref: ModelRef, spec: PruneSpec, data_dir: str | None, calib_hash: str) -> ModelRef:
    """Prune the decoder's Linear layers; returns the pruned model's ref (saved as safetensors)."""
    from ecocompress.tasks.prune import prune

    return prune(ref, spec, Path(data_dir) if data_dir else None)


def _quantize_key(p: dict[str, Any]) -> str:
    return _key("quantize", p["ref"].id, p["spec"].canonical())


@task(name="quantize", persist_result=False, cache_policy=NO_CACHE)
def quantize_step(ref: ModelRef, spec: QuantSpec) -> ModelRef:
    """The quantization recipe: 4-bit cannot be saved and reloaded on CPU, so the weights are
    quantized at load time from the (pruned) safetensors; the id keys every later cache."""
    from ecocompress.tasks.quantize import quantize

    return quantize(ref, spec)


def _measure_key(p: dict[str, Any]) -> str:
    return _key("measure", p["ref"].id, p["quant"].canonical(), machine_fingerprint())


@task(name="measure", persist_result=False, cache_policy=NO_CACHE)
def measure_step(ref: ModelRef, quant: QuantSpec) -> dict[str, Any]:
    """Load the candidate and measure weight bytes, peak RSS, latency and throughput."""
    import gc

    from ecocompress.metrics.measure import RssSampler, measure_latency
    from ecocompress.tasks.footprint import tensor_bytes
    from ecocompress.tasks.quantize import clear_loaded, load_candidate

    clear_loaded()
    gc.collect()
    with RssSampler() as rss:
        model, tokenizer = load_candidate(ref, quant)
        lat = measure_latency(model, tokenizer)
    held = tensor_bytes(model)
    out: dict[str, Any] = {
        "memory_gb": held / 1e9,
        "weight_bytes": held,
        "compression_ratio": ref.reference_weight_bytes / held,
        "peak_rss_gb": rss.peak_gb,
        "gpu_peak_gb": rss.cuda_peak_gb,
        "latency_ms": lat["latency_ms"],
        "throughput_tps": lat["throughput_tps"],
        "latency_method": lat["method"],
        "machine": machine_fingerprint(),
    }
    return out


def _eval_key(p: dict[str, Any]) -> str:
    return _key(
        "evaluate", p["ref"].id, p["quant"].canonical(), p["spec"].canonical(), p["data_hash"]
    )


@task(
    name="evaluate",
    task_run_name="evaluate-{spec.benchmark}",
    persist_result=False,
    cache_policy=NO_CACHE,
)
def evaluate_step(
    ref: ModelRef,
    quant: QuantSpec,
    spec: EvalSpec,
    data_dir: str | None,
    data_hash: str,
    allow_code_execution: bool,
    country: str,
) -> dict[str, Any]:
    """Evaluate one benchmark on the candidate with lm-eval, metering its energy."""
    from ecocompress.metrics.energy import EnergyMeter
    from ecocompress.tasks.evaluate import evaluate_benchmark
    from ecocompress.tasks.quantize import load_candidate

    out_dir = cache_dir("evaluations") / _eval_key(locals())[:24]
    out_dir.mkdir(parents=True, exist_ok=True)
    model, tokenizer = load_candidate(ref, quant)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with EnergyMeter(out_dir, country) as meter:
        result = evaluate_benchmark(
            model,
            tokenizer,
            spec,
            Path(data_dir) if data_dir else None,
            out_dir,
            allow_code_execution,
        )
    cpu_s, wall_s = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "result": result.model_dump(mode="json"),
        "energy": meter.as_dict(),
        # process CPU seconds (all threads) and wall seconds of the metered evaluation
        "cpu_seconds": cpu_s,
        "wall_seconds": wall_s,
    }


def _carbon_key(p: dict[str, Any]) -> str:
    return _key("carbon", repr(p["energy_kwh"]), repr(p["intensity_g_per_kwh"]))


@task(name="carbon", persist_result=False, cache_policy=NO_CACHE)
def carbon_step(energy_kwh: float | None, intensity_g_per_kwh: float) -> float | None:
    """CO2 (kg) of an energy (kWh) at a grid intensity (g CO2eq/kWh); None when energy is unknown."""
    from ecocompress.metrics.carbon import co2_kg

    return None if energy_kwh is None else co2_kg(energy_kwh, intensity_g_per_kwh)


# cached task name -> its key from the task's parameters (see flows.records)
RESULT_KEYS: dict[str, Callable[[dict[str, Any]], str]] = {
    "prune": _prune_key,
    "quantize": _quantize_key,
    "measure": _measure_key,
    "evaluate": _eval_key,
    "carbon": _carbon_key,
}


def return_type(step: Task) -> Any:
    """The declared return type of a task's function (what its cached record validates as)."""
    return get_type_hints(step.fn)["return"]
