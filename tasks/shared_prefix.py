"""Shared-prefix scoring: lm-eval's ``HFLM`` with each shared prefix computed once.

lm-eval scores a log-likelihood request ``(context, continuation)`` by running the model on
``context + continuation[:-1]`` and reading the continuation's tokens off the logits, so a
multiple-choice item with five choices runs its context five times, and a fixed few-shot
prompt is run again for every item. ``SharedPrefixLM`` runs, per call:

1. the contexts (without their last token) on a prefix tree: the tokens all contexts of a
   branch share - a fixed few-shot prompt, a task's description, one item's question behind
   its choices - run once, and each branch goes on from its own copy of the KV cache, so
   every distinct token position of the contexts runs once;
2. per batch of continuations of one context, the context's last token and the
   continuations but their last tokens, on a copy of the context's cache repeated along
   the batch (right-padded: positions after a continuation's end are never read, and a
   causal model's earlier positions do not see them).

The log-probabilities and greedy flags of step 2 are those lm-eval reads, in the request
order, with lm-eval's ``cache_hook`` fed alike; lm-eval still builds the requests, scores
the items and writes the samples. What cannot be shared - a request longer than the
model's window (lm-eval truncates it from the left), or a model that returns no cache - is
passed to ``HFLM``'s own path, and the reason counted in ``fallbacks``.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

log = logging.getLogger(__name__)

Request = tuple[tuple[str, str], list[int], list[int]]


def common_prefix(seqs: list[tuple[int, ...]]) -> int:
    """Length of the longest prefix all of ``seqs`` share."""
    if not seqs:
        return 0
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for i in range(n):
        t = first[i]
        if any(s[i] != t for s in seqs):
            return i
    return n


class SharedPrefixLM(HFLM):
    """``HFLM`` scoring log-likelihood requests on copies of shared KV caches (module doc).

    Counters, of the log-likelihood requests this class scored: ``forward_tokens``, the
    tokens it ran through the model (generation: the prompt tokens past the shared prefix
    are added too); ``naive_tokens``, what ``HFLM`` runs for the same requests (each
    context and continuation but its last token); ``floor_tokens``, what must be run at
    least (each distinct context position once, each continuation token once: no
    padding). ``fallbacks``: requests given to ``HFLM``'s path, by reason.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # transformers 5 renames the argument ``past_key_values`` to ``cache`` model by model
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keeps_logits = "logits_to_keep" in params
        self.forward_tokens = 0
        self.naive_tokens = 0
        self.floor_tokens = 0
        self.fallbacks: dict[str, int] = {}

    def _fallback(self, reason: str, n: int) -> None:
        if n:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n
            log.info("shared-prefix scoring: %d request(s) on lm-eval's own path: %s", n, reason)

    def _forward(
        self, ids: list[list[int]], cache: Any, logits: bool = True
    ) -> tuple[torch.Tensor, Any]:
        """Logits of ``ids`` (one row per batch member) after ``cache``; the extended cache.
        ``logits=False``: a prefix, whose logits are not read - only the last position's
        are computed (the vocabulary head is most of a small model's work per token)."""
        x = torch.tensor(ids, dtype=torch.long, device=self.device)
        self.forward_tokens += x.numel()
        kwargs = {self._cache_arg: cache}
        if not logits and self._keeps_logits:
            kwargs["logits_to_keep"] = 1
        out = self.model(input_ids=x, use_cache=True, **kwargs)
        if out.past_key_values is None:
            raise _NoCache
        return out.logits, out.past_key_values

    def _loglikelihood_tokens(
        self,
        requests: list[Request],
        disable_tqdm: bool = False,
        override_bs: int | None = None,
    ) -> list[tuple[float, bool]]:
        if self.backend != "causal":
            self._fallback(f"backend {self.backend}: no shared causal prefix", len(requests))
            return super()._loglikelihood_tokens(requests, disable_tqdm, override_bs)
        res: list[tuple[float, bool] | None] = [None] * len(requests)
        own: list[int] = []  # requests for HFLM's path
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            if len(ctx) + len(cont) > self.max_length + 1 or not ctx or not cont:
                own.append(i)
            else:
                groups.setdefault(tuple(ctx), []).append(i)
                self.naive_tokens += len(ctx) + len(cont) - 1
                self.floor_tokens += len(cont)
        self._fallback("context and continuation longer than the model's window", len(own))
        try:
            self._score_groups(requests, groups, res, override_bs)
        except _NoCache:
            self._fallback("the model returns no KV cache", sum(len(g) for g in groups.values()))
            own = list(range(len(requests)))
            res = [None] * len(requests)
        if own:
            for i, r in zip(
                own,
                super()._loglikelihood_tokens([requests[i] for i in own], True, override_bs),
                strict=True,
            ):
                res[i] = r
        assert all(r is not None for r in res)
        return res  # type: ignore[return-value]

    @torch.inference_mode()
    def _score_groups(
        self,
        requests: list[Request],
        groups: dict[tuple[int, ...], list[int]],
        res: list[tuple[float, bool] | None],
        override_bs: int | None,
    ) -> None:
        bs = self.batch_size if self.batch_size != "auto" else (override_bs or 1)
        self._score_node(requests, groups, sorted(groups), 0, None, res, max(1, int(bs)))

    def _score_node(
        self,
        requests: list[Request],
        groups: dict[tuple[int, ...], list[int]],
        ctxs: list[tuple[int, ...]],
        start: int,
        cache: Any,
        res: list[tuple[float, bool] | None],
        bs: int,
    ) -> None:
        """Score the contexts ``ctxs``, whose first ``start`` tokens ``cache`` holds, on a
        prefix tree: the tokens all of them share next run once, then each branch (the
        contexts going on with the same token) goes on from its own copy of the cache."""
        heads = [c[:-1] for c in ctxs]
        shared = start + common_prefix([h[start:] for h in heads])
        self.floor_tokens += shared - start
        if shared > start:
            _, cache = self._forward([list(heads[0][start:shared])], cache, logits=False)
        branches: dict[int, list[tuple[int, ...]]] = {}
        for c, h in zip(ctxs, heads, strict=True):
            if len(h) == shared:  # its whole context but the last token is in the cache
                self._score_continuations(requests, c, groups[c], cache, res, bs)
            else:
                branches.setdefault(h[shared], []).append(c)
        for sub in branches.values():
            branch = copy.deepcopy(cache) if cache is not None else None
            self._score_node(requests, groups, sub, shared, branch, res, bs)

    def _score_continuations(
        self,
        requests: list[Request],
        ctx: tuple[int, ...],
        idxs: list[int],
        cache: Any,
        res: list[tuple[float, bool] | None],
        bs: int,
    ) -> None:
        """The requests ``idxs`` of context ``ctx`` (``cache`` holds all of it but its last
        token), ``bs`` continuations per forward on a copy of the cache."""
        for start in range(0, len(idxs), bs):
            chunk = idxs[start : start + bs]
            conts = [requests[i][2] for i in chunk]
            width = max(len(c) for c in conts)
            pad = conts[0][0]  # any token: padded positions are never read
            rows = [[ctx[-1], *c[:-1]] + [pad] * (width - len(c)) for c in conts]
            c = copy.deepcopy(cache) if cache is not None else None
            if c is not None and len(chunk) > 1:
                c.batch_repeat_interleave(len(chunk))
            logits, _ = self._forward(rows, c)
            logp = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
            for j, i in enumerate(chunk):
                cont = torch.tensor(conts[j], dtype=torch.long, device=logp.device)
                lp = logp[j, : len(cont)]
                greedy = bool((lp.argmax(dim=-1) == cont).all())
                answer = (float(lp.gather(1, cont[:, None]).sum()), greedy)
                res[i] = answer
                self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)

    # generation: the prompt prefix every request shares, prefilled once

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """lm-eval's ``generate_until``, one request at a time (a batch is left-padded, so a
        shared prefix would sit at other positions in each row), each continuing from a copy
        of the KV cache of the prefix all the requests' prompts share."""
        if self.backend != "causal" or not requests:
            self._fallback(f"backend {self.backend}: no shared causal prefix", len(requests))
            return super().generate_until(requests, disable_tqdm)
        encoded = [tuple(self.tok_encode(r.args[0])) for r in requests]
        shared = common_prefix(encoded)
        shared = min(shared, min(len(e) for e in encoded) - 1)  # one token left to run
        self._gen_prefix = None
        if shared > 0:
            try:
                with torch.inference_mode():
                    _, cache = self._forward([list(encoded[0][:shared])], None, logits=False)
                self._gen_prefix = (list(encoded[0][:shared]), cache)
            except _NoCache:
                self._fallback("the model returns no KV cache", len(requests))
        saved = self.batch_size_per_gpu
        self.batch_size_per_gpu = 1
        try:
            return super().generate_until(requests, disable_tqdm)
        finally:
            self.batch_size_per_gpu = saved
            self._gen_prefix = None

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **kwargs: Any):
        prefix = getattr(self, "_gen_prefix", None)
        if prefix is not None and context.shape[0] == 1:
            tokens, cache = prefix
            n = len(tokens)
            if context.shape[1] > n and context[0, :n].tolist() == tokens:
                # generate computes only the tokens the cache does not hold
                kwargs[self._cache_arg] = copy.deepcopy(cache)
                self.forward_tokens += context.shape[1] - n
            else:  # truncated from the left, or tokenized otherwise in its batch
                self._fallback("prompt does not start with the shared prefix", 1)
        return super()._model_generate(context, max_length, stop, **kwargs)


class _NoCache(Exception):
    """The model returned no KV cache."""
