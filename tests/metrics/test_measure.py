"""Latency measurement and the RSS sampler on the tiny model."""

import time

import pytest

from ecocompress.metrics.measure import FIXED_PROMPTS, RssSampler, measure_latency


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


def test_measure_latency_on_tiny_model(tiny):
    model, tok = tiny
    out = measure_latency(model, tok, new_tokens=8, repeats=2)
    assert out["latency_ms"] > 0 and out["ttft_ms"] > 0 and out["throughput_tps"] > 0
    assert "8 new tokens" in out["method"] and f"{len(FIXED_PROMPTS)} prompts x 2" in out["method"]


def test_generates_exactly_new_tokens(tiny, monkeypatch):
    model, tok = tiny
    made = []
    original = model.generate

    def spy(**kw):
        out = original(**kw)
        made.append(out.shape[1] - kw["input_ids"].shape[1])
        return out

    monkeypatch.setattr(model, "generate", spy)
    measure_latency(model, tok, prompts=["Hello there"], new_tokens=5, warmup=0)
    assert made == [5, 1]  # the timed run, then the time-to-first-token run


def test_bad_arguments(tiny):
    with pytest.raises(ValueError, match="new_tokens"):
        measure_latency(*tiny, new_tokens=0)


def test_rss_sampler_sees_an_allocation():
    with RssSampler() as before:
        pass
    with RssSampler() as sampler:
        block = bytearray(300_000_000)  # 0.3 GB, touched so it is resident
        block[::4096] = b"x" * len(block[::4096])
        # Sampling is periodic (20 ms): hold the block until two samples have seen it.
        seen, deadline = sampler.samples, time.monotonic() + 10
        while sampler.samples < seen + 2 and time.monotonic() < deadline:
            time.sleep(0.005)
        del block
    assert sampler.samples >= 1
    assert sampler.peak_gb >= before.peak_gb + 0.25
    assert sampler.cuda_peak_gb is None  # CPU-only test machine
