"""Latency, throughput and memory of a loaded model, measured on this machine.

Latency is measured with greedy ``generate`` at batch size 1 on a few fixed prompts,
forcing exactly ``new_tokens`` new tokens per run (``min_new_tokens = max_new_tokens``)
so every candidate does the same work. Memory is the process's resident set size
sampled in a background thread, plus CUDA's own peak-allocation counter on a GPU.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from types import TracebackType
from typing import Any, Literal

# Four short fixed English prompts, defined only here, so runs are comparable.
FIXED_PROMPTS: tuple[str, ...] = (
    "The capital of France is",
    "Water boils at a temperature of",
    "Once upon a time, in a small village,",
    "To compute the area of a circle, you",
)
GB = 1e9  # bytes per GB (decimal)


def _sync(device: Any) -> None:
    import torch

    if getattr(device, "type", "cpu") == "cuda":
        torch.cuda.synchronize(device)


def _timed_generate(model: Any, inputs: dict, n: int, pad_id: int | None) -> tuple[float, int]:
    """Seconds for one greedy generation of exactly ``n`` tokens, and the tokens made."""
    _sync(model.device)
    t0 = time.perf_counter()
    out = model.generate(
        **inputs, do_sample=False, min_new_tokens=n, max_new_tokens=n, pad_token_id=pad_id
    )
    _sync(model.device)
    return time.perf_counter() - t0, int(out.shape[1] - inputs["input_ids"].shape[1])


def measure_latency(
    model: Any,
    tokenizer: Any,
    prompts: list[str] | tuple[str, ...] = FIXED_PROMPTS,
    new_tokens: int = 32,
    warmup: int = 1,
    repeats: int = 1,
) -> dict[str, float | str]:
    """Time greedy generation at batch size 1.

    Args:
        model: a loaded causal LM (``transformers``), on the device it runs on.
        tokenizer: its tokenizer.
        prompts: prompts to generate from; ``FIXED_PROMPTS`` by default.
        new_tokens: tokens generated per run (exactly; end-of-text is suppressed).
        warmup: untimed generations before timing (kernel selection, caches).
        repeats: timed runs per prompt.

    Returns:
        ``latency_ms``: median over prompts x repeats of (run seconds / tokens) in ms per
        generated token, prefill included; ``ttft_ms``: median time to the first token
        (a 1-token generation) in ms; ``throughput_tps``: all generated tokens / all timed
        generation seconds; ``method``: how it was measured.
    """
    import torch

    if new_tokens < 1 or repeats < 1 or warmup < 0 or not prompts:
        raise ValueError(
            "measure_latency needs new_tokens >= 1, repeats >= 1, warmup >= 0, prompts"
        )
    pad_id = (
        tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    )
    encoded = [tokenizer(p, return_tensors="pt").to(model.device) for p in prompts]
    per_token_s: list[float] = []
    first_token_s: list[float] = []
    total_s, total_tokens = 0.0, 0
    with torch.inference_mode():
        for i in range(warmup):
            _timed_generate(model, encoded[i % len(encoded)], new_tokens, pad_id)
        for _ in range(repeats):
            for inputs in encoded:
                s, made = _timed_generate(model, inputs, new_tokens, pad_id)
                per_token_s.append(s / made)
                total_s, total_tokens = total_s + s, total_tokens + made
                first_token_s.append(_timed_generate(model, inputs, 1, pad_id)[0])
    device = str(model.device)
    return {
        "latency_ms": statistics.median(per_token_s) * 1e3,
        "ttft_ms": statistics.median(first_token_s) * 1e3,
        "throughput_tps": total_tokens / total_s,
        "method": (
            f"greedy generate on {device}, batch 1, {new_tokens} new tokens, "
            f"{len(prompts)} prompts x {repeats} repeats after {warmup} warm-up; "
            "latency = median ms per generated token (prefill included)"
        ),
    }


class RssSampler:
    """Peak resident memory of this process during a window, sampled every ``interval_s``.

    ``peak_gb`` is the largest sampled RSS (GB, 1e9 bytes): a sampled peak, so spikes
    shorter than the interval can be missed. ``cuda_peak_gb`` is
    ``torch.cuda.max_memory_allocated`` over the window when CUDA is in use, else None.
    """

    def __init__(self, interval_s: float = 0.02) -> None:
        self.interval_s = interval_s
        self.peak_gb: float | None = None
        self.cuda_peak_gb: float | None = None
        self.samples = 0
        self._stop = threading.Event()
        self._peak = 0

    def _cuda(self) -> Any:
        # Only a process that already imported torch can hold CUDA memory: never import it.
        torch = sys.modules.get("torch")
        return torch if torch is not None and torch.cuda.is_available() else None

    def _sample(self) -> None:
        import psutil

        proc = psutil.Process()
        while True:
            self._peak = max(self._peak, proc.memory_info().rss)
            self.samples += 1
            if self._stop.wait(self.interval_s):
                break
        self._peak = max(self._peak, proc.memory_info().rss)  # the window's end too

    def __enter__(self) -> RssSampler:
        torch = self._cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        self._stop.set()
        self._thread.join()
        self.peak_gb = self._peak / GB
        torch = self._cuda()
        if torch is not None:
            self.cuda_peak_gb = torch.cuda.max_memory_allocated() / GB
        return False
