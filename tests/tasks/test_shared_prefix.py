"""Shared-prefix scoring (tasks/shared_prefix.py) against lm-eval's own ``HFLM`` path on the
tiny models, fp32: the same log-likelihoods (1e-5) and greedy flags for multiple-choice
requests behind a shared few-shot prefix, ragged lengths, batch sizes 1 and 4, rolling
(perplexity) requests, contexts longer than a sliding window; no cache leaks between items;
what cannot be shared goes to lm-eval's path and is counted."""

from __future__ import annotations

import random

import pytest
import torch

from tests.tiny_model import build_tiny_model

TOL = 1e-5


@pytest.fixture(scope="module", params=["gemma3", "mistral", "gemma2"])
def tiny(request, tmp_path_factory):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_model(tmp_path_factory.mktemp(request.param), family=request.param)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(path)


def lms(tiny, batch_size: int):
    from lm_eval.models.huggingface import HFLM

    from ecocompress.tasks.shared_prefix import SharedPrefixLM

    model, tok = tiny
    return (
        HFLM(pretrained=model, tokenizer=tok, batch_size=batch_size),
        SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=batch_size),
    )


def mc_requests(seed: int = 0, shots: int = 90, prefixes: int = 1) -> list:
    """Items behind one few-shot prefix (longer than the tiny gemma's 64-token sliding
    window), 3-5 choices each, contexts and choices of ragged lengths, plus one item with
    a context of its own."""
    rng = random.Random(seed)
    fixed = [[rng.randrange(5, 1000) for _ in range(shots)] for _ in range(prefixes)]
    out = []
    for item in range(5):
        ctx = fixed[item % prefixes] + [rng.randrange(5, 1000) for _ in range(rng.randint(1, 20))]
        for choice in range(rng.randint(3, 5)):
            cont = [rng.randrange(5, 1000) for _ in range(rng.randint(1, 6))]
            out.append(((f"item{item}", f"choice{choice}"), ctx, cont))
    other = [rng.randrange(5, 1000) for _ in range(7)]
    out += [(("other", "a"), other, [11, 12]), (("other", "b"), other, [13])]
    rng.shuffle(out)
    return out


def assert_same(a, b):
    assert len(a) == len(b)
    for (la, ga), (lb, gb) in zip(a, b, strict=True):
        assert abs(la - lb) <= TOL * max(1.0, abs(la)), (la, lb)
        assert ga == gb


@pytest.mark.parametrize("batch_size, prefixes", [(1, 1), (4, 1), (4, 2)])
def test_multiple_choice_log_likelihoods_match_lm_eval(tiny, batch_size, prefixes):
    ref, shared = lms(tiny, batch_size)
    reqs = mc_requests(prefixes=prefixes)
    assert_same(shared._loglikelihood_tokens(reqs), ref._loglikelihood_tokens(reqs))
    # the work: every distinct token position of the contexts once (a prefix tree), then
    # per context its distinct continuation inputs: one of them in the same forward as the
    # context, several in batches padded to their longest
    heads = {tuple(c[:-1]) for _, c, _ in reqs}
    positions = {h[:k] for h in heads for k in range(1, len(h) + 1)}
    rows_of: dict[tuple, set[tuple]] = {}
    for _, c, x in reqs:
        rows_of.setdefault(tuple(c), set()).add(tuple(x[:-1]))
    rows = 0
    for r in rows_of.values():
        n = sorted((len(x) + 1 for x in r), reverse=True)
        rows += sum(len(n[i : i + batch_size]) * n[i] for i in range(0, len(n), batch_size))
    assert shared.forward_tokens == len(positions) + rows
    # the head: on the positions read only (no padding), unless the model's logits are more
    # than its output embedding of the last hidden states (Gemma-2 soft-caps them)
    read = sum(len(x) + 1 for r in rows_of.values() for x in r)
    assert shared._head_ok == (tiny[0].config.model_type != "gemma2")
    assert shared.head_tokens == (read if shared._head_ok else rows)
    inputs = {tuple(c) + tuple(x[:-1]) for _, c, x in reqs}  # lm-eval's, one per distinct
    assert shared.naive_tokens == sum(len(i) for i in inputs)
    assert shared.forward_tokens < shared.naive_tokens / 2
    every = {i[:k] for i in inputs for k in range(1, len(i) + 1)}
    assert shared.floor_tokens == len(every) <= shared.forward_tokens
    assert len(rows_of) == 6 and not shared.fallbacks


def test_one_token_answers_run_each_context_once_with_the_head_on_its_last_position(tiny):
    """Answer letters behind each question (CommonsenseQA's form): lm-eval runs each
    context once with the head at every position; here the decoder runs each distinct
    position once and the head only where a log-likelihood is read."""
    ref, shared = lms(tiny, 4)
    rng = random.Random(3)
    shots = [rng.randrange(5, 1000) for _ in range(40)]
    questions = [[rng.randrange(5, 1000) for _ in range(8 + q)] for q in range(4)]
    reqs = [
        ((f"q{q}", letter), [*shots, *question], [letter])
        for q, question in enumerate(questions)
        for letter in (50, 51, 52, 53, 54)
    ]
    assert_same(shared._loglikelihood_tokens(reqs), ref._loglikelihood_tokens(reqs))
    assert shared.forward_tokens == shared.floor_tokens == 40 + sum(8 + q for q in range(4))
    assert shared.head_tokens == 4
    assert shared._head_ok == (tiny[0].config.model_type != "gemma2")
    assert shared.naive_tokens == 4 * 40 + sum(8 + q for q in range(4))


def test_contexts_branching_at_hundreds_of_depths_need_no_recursion(tiny):
    """A prefix tree hundreds of branch points deep is walked with an explicit stack: it
    scores alike under a recursion limit only a little above the current depth."""
    import inspect
    import sys

    ref, shared = lms(tiny, 2)
    base = list(range(5, 305))
    reqs = [((f"d{k}", "x"), [*base[:k], 900 + k % 50], [7, 8]) for k in range(1, 300)]
    want = ref._loglikelihood_tokens(reqs)
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 200)
    try:
        got = shared._loglikelihood_tokens(reqs)
    finally:
        sys.setrecursionlimit(old)
    assert_same(got, want)
    assert not shared.fallbacks


def test_a_changed_context_changes_only_its_own_item(tiny):
    _, shared = lms(tiny, 4)
    reqs = mc_requests()
    before = shared._loglikelihood_tokens(reqs)
    target = next(r[0][0] for r in reqs if r[0][0].startswith("item"))
    changed = []
    for s, ctx, cont in reqs:
        if s[0] == target:
            ctx = [*ctx[:-1], (ctx[-1] + 1) % 1000 + 5]  # its last context token
        changed.append((s, ctx, cont))
    after = shared._loglikelihood_tokens(changed)
    for (s, _, _), b, a in zip(reqs, before, after, strict=True):
        if s[0] == target:
            assert a[0] != b[0]
        else:
            assert a == b  # bit-identical: nothing of another item's cache reached it


def test_rolling_requests_match_lm_eval(tiny):
    from lm_eval.api.instance import Instance

    ref, shared = lms(tiny, 2)
    rng = random.Random(1)
    model, tok = tiny
    texts = [" ".join(str(rng.randrange(1000)) for _ in range(n)) for n in (30, 80, 5)]
    inst = [
        Instance("loglikelihood_rolling", doc={}, arguments=(t,), idx=i)
        for i, t in enumerate(texts)
    ]
    a = shared.loglikelihood_rolling(inst, disable_tqdm=True)
    b = ref.loglikelihood_rolling(inst, disable_tqdm=True)
    for x, y in zip(a, b, strict=True):
        assert abs(x - y) <= TOL * max(1.0, abs(x))


def test_what_cannot_be_shared_goes_to_lm_eval_and_is_counted(tiny):
    ref, shared = lms(tiny, 2)
    shared._max_length = ref._max_length = 40  # the window lm-eval truncates to
    reqs = [(("long", "a"), list(range(5, 60)), [7, 8]), (("short", "a"), [5, 6, 7], [9])]
    assert_same(shared._loglikelihood_tokens(reqs), ref._loglikelihood_tokens(reqs))
    assert shared.fallbacks == {"context and continuation longer than the model's window": 1}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["commonsenseqa", "truthfulqa"])
def test_benchmark_through_lm_eval_gives_the_same_samples(
    name, tiny_model_dir, shared_data_dir, tmp_path, monkeypatch
):
    """``--evaluator shared-prefix`` through ``evaluate_benchmark``: lm-eval builds the same
    requests and scores the items; every per-sample log-likelihood agrees (fp32, 1e-5), the
    score is the same, and the result says how it was scored."""
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ecocompress.tasks.evaluate import evaluate_benchmark
    from ecocompress.tasks.specs import EvalSpec

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    out = {}
    for ev in ("lm-eval", "shared-prefix"):
        spec = EvalSpec(benchmark=name, limit=3, evaluator=ev)
        r = evaluate_benchmark(model, tok, spec, shared_data_dir, tmp_path / ev)
        saved = json.loads(Path(r.results_path).read_text())
        logliks = {
            (t, s["doc_id"]): [float(x[0]) for x in s["filtered_resps"]]
            for t, samples in saved["samples"].items()
            for s in samples
        }
        out[ev] = (r, logliks)
    (a, la), (b, lb) = out["lm-eval"], out["shared-prefix"]
    assert la.keys() == lb.keys() and len(la) == 3
    for k in la:
        assert la[k] == pytest.approx(lb[k], rel=TOL, abs=TOL)
    assert (a.score, a.stderr) == (b.score, b.stderr)
    assert any("shared prefixes" in n for n in b.notes)
    assert not any("shared prefixes" in n for n in a.notes)


@pytest.mark.parametrize("batch_size", [1, 4])
def test_greedy_generations_continue_from_the_shared_prefix_identically(tiny, batch_size):
    """Two groups of prompts behind two few-shot prompts (two BBH subtasks' form, longer
    than the tiny models' sliding windows) and a prompt alone, in lm-eval's left-padded
    batches: each group's prefix runs once, every generation is lm-eval's."""
    from lm_eval.api.instance import Instance

    ref, shared = lms(tiny, batch_size)
    _, tok = tiny
    rng = random.Random(2)
    shots = [" ".join(str(rng.randrange(1000)) for _ in range(n)) for n in (60, 45)]
    gen = {"until": ["\n\n"], "max_gen_toks": 12, "do_sample": False}
    prompts = [
        f"{shots[i % 2]} Q: {' '.join(str(rng.randrange(1000)) for _ in range(n))} A:"
        for i, n in enumerate((3, 9, 1, 5, 2, 14))
    ] + ["alone 1 2 3"]
    inst = [
        Instance("generate_until", doc={}, arguments=(p, gen), idx=i) for i, p in enumerate(prompts)
    ]
    a = shared.generate_until(inst, disable_tqdm=True)
    b = ref.generate_until(inst, disable_tqdm=True)
    assert a == b and all(a)
    assert shared.fallbacks == {"prompt shares no prefix with another": 1}
    enc = [tuple(tok(p)["input_ids"]) for p in prompts]
    assert shared.naive_tokens == sum(len(e) for e in enc)
    if batch_size == 1:  # no padding: each prompt past its group's prefix, each prefix once
        lcp = [
            min(next(k for k in range(len(x)) if x[k] != y[k]) for x in g for y in g if x != y)
            for g in (enc[0:6:2], enc[1:6:2])
        ]
        assert shared.forward_tokens == sum(len(e) for e in enc) - 2 * lcp[0] - 2 * lcp[1]
    else:
        assert shared.forward_tokens < shared.naive_tokens


def test_generation_without_shared_prompts_keeps_lm_eval_batches(tiny):
    from lm_eval.api.instance import Instance

    from ecocompress.tasks.shared_prefix import SharedPrefixLM

    model, tok = tiny
    shared = SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=4)
    gen = {"until": ["\n\n"], "max_gen_toks": 4, "do_sample": False}
    inst = [
        Instance("generate_until", doc={}, arguments=(p, gen), idx=i)
        for i, p in enumerate(["1 2 3", "4 5 6 7"])
    ]
    seen = []
    real = SharedPrefixLM._model_generate

    def spy(self, context, *a, **k):
        seen.append(context.shape[0])
        return real(self, context, *a, **k)

    SharedPrefixLM._model_generate = spy
    try:
        shared.generate_until(inst, disable_tqdm=True)
    finally:
        SharedPrefixLM._model_generate = real
    assert seen == [2] and shared.fallbacks == {"prompt shares no prefix with another": 2}


def test_prefix_groups_and_distinct_positions():
    from ecocompress.tasks.prefix_tree import distinct_positions, prefix_groups

    a = tuple(range(20))
    prompts = [(*a, 1), (*a, 2, 3), (*a, 2, 4), (9, *a), tuple(range(100, 130)), (*a, 1)]
    assert prefix_groups(prompts, 16) == [a]  # the lone and the repeated prompt share none
    assert prefix_groups(prompts, 21) == [(*a, 2)]
    assert prefix_groups(prompts, 22) == []
    assert prefix_groups([(*a, 5), (*a, 5, 6)], 16) == [a]  # one token of each left to run
    assert distinct_positions({(1, 2, 3), (1, 2, 4), (1, 5), (7,)}) == 6
    assert distinct_positions(set()) == 0


@pytest.mark.parametrize(
    "bits, backend", [(16, "none"), (8, "bitsandbytes"), (4, "bitsandbytes"), (8, "torchao")]
)
def test_quantized_models_score_alike(bits, backend, tiny_model_dir, tmp_path, monkeypatch):
    """bf16, LLM.int8, NF4 and torchao int8 models as the pipeline loads them: the shared
    path picks the same choices, with log-likelihoods within bf16 rounding of lm-eval's
    (the same kernels on other batch shapes)."""
    from lm_eval.models.huggingface import HFLM

    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.quantize import clear_loaded, load_candidate
    from ecocompress.tasks.shared_prefix import SharedPrefixLM
    from ecocompress.tasks.specs import QuantSpec

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    model, tok = load_candidate(
        resolve_model(str(tiny_model_dir)), QuantSpec(bits=bits, backend=backend)
    )
    try:
        reqs = mc_requests(shots=30)
        ref = HFLM(pretrained=model, tokenizer=tok, batch_size=4)._loglikelihood_tokens(reqs)
        lm = SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=4)
        got = lm._loglikelihood_tokens(reqs)
    finally:
        clear_loaded()
    assert not lm.fallbacks
    worst = max(abs(a[0] - b[0]) / max(1.0, abs(a[0])) for a, b in zip(ref, got, strict=True))
    assert worst < 0.02, worst
    items: dict[str, list[int]] = {}
    for i, (s, _, _) in enumerate(reqs):
        items.setdefault(s[0], []).append(i)
    for idx in items.values():  # the choice each path picks for each item
        pick = max(idx, key=lambda i: ref[i][0])
        assert max(idx, key=lambda i: got[i][0]) == pick or abs(
            max(got[i][0] for i in idx) - got[pick][0]
        ) < 0.02 * max(1.0, abs(got[pick][0]))
