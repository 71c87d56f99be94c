"""Sliding-window perplexity: windows, the exact-prefix property, the interval, the
non-overlap with Wanda's calibration text, and agreement with a direct computation."""

from __future__ import annotations

import gzip
import math

import pytest

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.perplexity import evaluation_ids, score_windows, summarise, windows
from ecocompress.tasks.specs import EvalSpec


def test_windows_score_every_token_once():
    ws = windows(1024, 512, 256)
    assert ws == [(0, 512, 512), (256, 768, 256), (512, 1024, 256)]
    for n, w, s in ((1000, 512, 256), (7, 4, 3), (513, 512, 512), (5, 8, 2)):
        ws = windows(n, w, s)
        assert sum(k for _, _, k in ws) == n
        # scored ranges [end - k, end) tile [0, n)
        covered = [i for _, end, k in ws for i in range(end - k, end)]
        assert covered == list(range(n))
        assert all(end - begin <= w for begin, end, _ in ws)


def test_windows_reject_stride_beyond_window():
    with pytest.raises(UserError, match="stride"):
        windows(100, 8, 9)


def test_budget_aligned_on_windows_is_a_prefix():
    big = windows(8192, 512, 256)
    small = windows(1024, 512, 256)
    assert big[: len(small)] == small


def test_summarise_interval_and_stderr():
    recs = [{"n": 100, "nll_sum": 100 * m} for m in (2.0, 2.2, 1.8, 2.0)]
    s = summarise(recs)
    assert s["mean_nll"] == pytest.approx(2.0)
    assert s["perplexity"] == pytest.approx(math.exp(2.0))
    # ratio estimator with equal n: the plain stderr of the window means
    means = [2.0, 2.2, 1.8, 2.0]
    sd = math.sqrt(sum((m - 2.0) ** 2 for m in means) / 3)
    assert s["nll_stderr"] == pytest.approx(sd / 2)
    assert s["ci_low"] < s["perplexity"] < s["ci_high"]
    assert s["ci_low"] == pytest.approx(math.exp(2.0 - 1.959964 * sd / 2), rel=1e-5)
    one = summarise([{"n": 10, "nll_sum": 5.0}])
    assert one["nll_stderr"] == 0.0 and one["ci_low"] == one["ci_high"]
    with pytest.raises(UserError, match="no tokens"):
        summarise([])


def test_spec_normalises_perplexity_fields():
    p = EvalSpec(benchmark="perplexity", limit=30, num_fewshot=5, ppl_tokens=1024)
    assert p.limit is None and p.num_fewshot == 0 and p.ppl_tokens == 1024
    # other benchmarks ignore the ppl fields, so they do not change their cache keys
    a = EvalSpec(benchmark="bbh", ppl_tokens=99).canonical()
    assert a == EvalSpec(benchmark="bbh").canonical()
    with pytest.raises(ValueError, match="ppl_stride"):
        EvalSpec(benchmark="perplexity", ppl_window=128, ppl_stride=256)


def test_matches_direct_computation_on_tiny_model(tiny_model_dir, shared_data_dir):
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    ids, source = evaluation_ids(tok, shared_data_dir)
    assert source.startswith("local:")
    ids = ids[:40]
    # window >= budget: one window, compare with a plain forward over [BOS] + ids
    recs = score_windows(model, ids, tok.bos_token_id, window=64, stride=16)
    x = torch.cat([torch.tensor([tok.bos_token_id]), ids]).unsqueeze(0)
    with torch.inference_mode():
        logits = model(input_ids=x).logits[0, :-1].float()
    direct = F.cross_entropy(logits, x[0, 1:], reduction="sum").item()
    assert len(recs) == 1 and recs[0]["n"] == 40
    assert recs[0]["nll_sum"] == pytest.approx(direct, rel=1e-5)
    # sliding windows score the same 40 tokens, each once, with shorter contexts
    slid = score_windows(model, ids, tok.bos_token_id, window=16, stride=8)
    assert sum(r["n"] for r in slid) == 40 and len(slid) == 4
    assert all(r["cpu_s"] >= 0 and r["wall_s"] > 0 for r in slid)


def test_evaluation_text_does_not_overlap_calibration(tiny_model_dir, shared_data_dir):
    from transformers import AutoTokenizer

    from ecocompress.tasks.calibration import calibration_batches
    from ecocompress.tasks.specs import CalibrationSpec

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids, _ = evaluation_ids(tok, shared_data_dir)
    with gzip.open(shared_data_dir / "wikitext2" / "wiki.test.raw.gz", "rt", encoding="utf-8") as f:
        n_all = len(tok(f.read(), add_special_tokens=False)["input_ids"])
    assert ids.numel() == int(0.5 * n_all)
    spec = CalibrationSpec(n_samples=64, seq_len=32, seed=3)
    calib = calibration_batches(tok, spec, shared_data_dir)  # [64, 32] with BOS first
    # every calibration window is a run of tokens at or after the evaluation range's end:
    # find each window's body in the full token list and check where it starts
    import torch

    with gzip.open(shared_data_dir / "wikitext2" / "wiki.test.raw.gz", "rt", encoding="utf-8") as f:
        full = torch.tensor(tok(f.read(), add_special_tokens=False)["input_ids"])
    body = calib[:, 1:]
    starts = full.unfold(0, body.shape[1], 1)  # [n_all - 30, 31]
    for row in body:
        hits = (starts == row).all(dim=1).nonzero().flatten()
        assert hits.numel() >= 1
        assert int(hits.max()) >= ids.numel()  # the window sits in the second half


def test_budget_beyond_usable_tokens_is_refused(tiny_model_dir, shared_data_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecocompress.tasks.perplexity import evaluate_perplexity

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    spec = EvalSpec(benchmark="perplexity", ppl_tokens=10_000_000)
    with pytest.raises(UserError, match="do not overlap Wanda's calibration"):
        evaluate_perplexity(model, tok, spec, shared_data_dir, tmp_path)


def test_evaluate_benchmark_perplexity_result(tiny_model_dir, shared_data_dir, tmp_path):
    import json

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecocompress.tasks.evaluate import evaluate_benchmark

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    spec = EvalSpec(benchmark="perplexity", ppl_tokens=256, ppl_window=128, ppl_stride=64)
    r = evaluate_benchmark(model, tok, spec, shared_data_dir, tmp_path)
    assert r.metric == "perplexity" and r.n_items == 256
    # random weights over a 1k vocabulary: near-uniform, perplexity in the hundreds
    assert 100 < r.score < 5000
    assert r.extra["ci_low"] < r.score < r.extra["ci_high"]
    assert r.extra["windows"] == 3 and r.stderr > 0
    saved = json.loads(open(r.results_path).read())
    assert sum(w["n"] for w in saved["windows"]) == 256
    assert saved["settings"] == {"tokens": 256, "window": 128, "stride": 64}


def test_missing_text_is_a_user_error(tmp_path):
    from ecocompress.tasks.perplexity import wikitext_test_text

    with pytest.raises(UserError, match="perplexity text not found"):
        wikitext_test_text(tmp_path)
    (tmp_path / "wikitext2").mkdir()
    (tmp_path / "wikitext2" / "wiki.test.raw.gz").write_bytes(b"not gzip")
    with pytest.raises(UserError, match="unreadable"):
        wikitext_test_text(tmp_path)
