"""Shared-prefix scoring: lm-eval's ``HFLM`` with each shared prefix computed once.

lm-eval scores a log-likelihood request ``(context, continuation)`` by running the model on
``context + continuation[:-1]`` and reading the continuation's tokens off the logits of every
position (requests whose ``context + continuation[:-1]`` are equal, such as one-token answer
letters behind one question, share one run). So a multiple-choice item with multi-token
choices runs its context once per choice, a fixed few-shot prompt is run again for every item,
and the vocabulary head runs at every position. ``SharedPrefixLM`` runs, per call:

1. the contexts (without their last token) on a prefix tree: the tokens all contexts of a
   branch share - a fixed few-shot prompt, a task's description, one item's question behind
   its choices - run once through the decoder (not the vocabulary head: no logit of theirs is
   read), and each branch goes on from its own copy of the KV cache, so every distinct token
   position of the contexts runs once;
2. per context, its distinct continuation inputs (``continuation[:-1]``; equal ones once):
   a context with one of them runs it in the same forward as the rest of its branch, with the
   head on those positions only; otherwise ``batch_size`` of them per forward, right-padded,
   each behind the context's last token on a copy of the context's cache repeated along the
   batch (positions after a row's end are never read, and a causal model's earlier positions
   do not see them).

The log-probabilities and greedy flags are those lm-eval reads, in the request order, with
lm-eval's ``cache_hook`` fed alike; lm-eval still builds the requests, scores the items and
writes the samples. Generation goes group by group of prompts sharing a prefix (a few-shot
prompt: GSM8K's, each BBH subtask's), in lm-eval's own batches: the prefix runs once, and
each left-padded batch continues from its keys and values placed where lm-eval's padding puts
them (decoding itself is the same work on both paths). What cannot be shared - a request
longer than the model's window (lm-eval truncates it from the left), a model that returns no
cache, a prompt sharing no prefix - goes to ``HFLM``'s own path, the reason counted in
``fallbacks``.
"""

from __future__ import annotations

import copy
import inspect
import logging
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.models.huggingface import HFLM

from ecocompress.tasks.prefix_tree import common_prefix, distinct_positions, prefix_groups

log = logging.getLogger(__name__)

Request = tuple[tuple[str, str], list[int], list[int]]


def _cache_arg(module: torch.nn.Module) -> str:
    # transformers 5 renames the argument ``past_key_values`` to ``cache`` model by model
    params = inspect.signature(module.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


class SharedPrefixLM(HFLM):
    """``HFLM`` scoring log-likelihood requests on copies of shared KV caches (module doc).

    Counters, in token positions: ``forward_tokens``, run through the decoder by this class
    (batch padding included; generation: each batch's slots past its cached prefix, and each
    prefix once; generated tokens are not counted); ``head_tokens``, run through the
    vocabulary head for log-likelihood requests; ``naive_tokens``, what ``HFLM`` runs for the
    same requests (generation: the prompts), through the decoder and (log-likelihood) the
    head alike, batch padding not included; ``floor_tokens``, the distinct positions of those
    inputs (their prefix tree): the least any exact scorer must run through the decoder.
    ``fallbacks``: requests given to ``HFLM``'s path unchanged, by reason.
    """

    # log-likelihood: positions per vocabulary-head batch (one call reads all of the head's
    # weights, ~0.7 GB for gemma-3-270m in fp32, whether for 1 row or 256)
    HEAD_ROWS = 256
    # generation: prompts share a prefix cache when they share at least this many tokens
    MIN_SHARED_PROMPT = 16

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cache_arg = _cache_arg(self.model)
        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        # the decoder without the vocabulary head, where the model has one apart
        trunk = getattr(self.model, "base_model", None)
        self._trunk = (
            trunk if isinstance(trunk, torch.nn.Module) and trunk is not self.model else None
        )
        self._trunk_cache_arg = _cache_arg(self._trunk) if self._trunk is not None else ""
        self._head = self.model.get_output_embeddings() if self._trunk is not None else None
        self._head_ok: bool | None = None  # see _head_applies
        self._pending: list[tuple[list[int], torch.Tensor]] = []  # (requests, hidden states)
        self.forward_tokens = 0
        self.head_tokens = 0
        self.naive_tokens = 0
        self.floor_tokens = 0
        self.fallbacks: dict[str, int] = {}
        self._gen_prefix: tuple[int, ...] | None = None  # the group being generated
        self._gen_states: list[tuple[torch.Tensor, torch.Tensor]] | None = None

    def _fallback(self, reason: str, n: int) -> None:
        if n:
            self.fallbacks[reason] = self.fallbacks.get(reason, 0) + n
            log.info("shared-prefix scoring: %d request(s) on lm-eval's own path: %s", n, reason)

    def _forward(self, ids: list[list[int]], cache: Any, keep: int | None) -> tuple[Any, Any]:
        """Run ``ids`` (one row per batch member) after ``cache``: the logits of the last
        ``keep`` positions of each row (``None``: all; 0: none, the vocabulary head is not run
        - it is most of a small model's work per token - and the trunk's last hidden states
        come back instead, or ``None`` without a trunk) and the extended cache."""
        x = torch.tensor(ids, dtype=torch.long, device=self.device)
        self.forward_tokens += x.numel()
        logits = None
        if keep == 0 and self._trunk is not None:
            out = self._trunk(input_ids=x, use_cache=True, **{self._trunk_cache_arg: cache})
            logits = out.last_hidden_state
        else:
            kwargs: dict[str, Any] = {self._cache_arg: cache}
            if keep is not None and self._keeps_logits:
                kwargs["logits_to_keep"] = max(keep, 1)
            out = self.model(input_ids=x, use_cache=True, **kwargs)
            if keep != 0:
                logits = out.logits if keep is None else out.logits[:, -keep:]
                self.head_tokens += logits.shape[0] * logits.shape[1]
        if out.past_key_values is None:
            raise _NoCache
        return logits, out.past_key_values

    def _head_applies(self) -> bool:
        """Whether the logits are the output embedding applied to the trunk's last hidden
        states, nothing after it (Gemma-2's soft-capping, a logit scale: no), checked once
        on three tokens (not counted); then the head runs apart from the decoder, on the positions whose
        log-likelihoods are read only, ``HEAD_ROWS`` of them per call."""
        if self._head_ok is None:
            self._head_ok = False
            if isinstance(self._head, torch.nn.Module):
                x = torch.tensor([[1, 2, 3]], dtype=torch.long, device=self.device)
                with torch.inference_mode():
                    want = self.model(input_ids=x, use_cache=False).logits
                    got = self._head(self._trunk(input_ids=x, use_cache=False).last_hidden_state)
                self._head_ok = got.shape == want.shape and torch.allclose(
                    got.float(), want.float(), rtol=1e-5, atol=1e-5
                )
        return self._head_ok

    def _defer(
        self,
        requests: list[Request],
        idxs: list[int],
        hidden: torch.Tensor,
        res: list[tuple[float, bool] | None],
    ) -> None:
        """Queue requests ``idxs`` with the hidden states of their read positions; score
        the queue once it holds ``HEAD_ROWS`` positions."""
        self._pending.append((idxs, hidden))
        if sum(h.shape[0] for _, h in self._pending) >= self.HEAD_ROWS:
            self._flush(requests, res)

    def _flush(self, requests: list[Request], res: list[tuple[float, bool] | None]) -> None:
        """The vocabulary head on every queued position in one call; score the requests."""
        if not self._pending:
            return
        logits = self._head(torch.cat([h for _, h in self._pending]))
        self.head_tokens += logits.shape[0]
        at = 0
        for idxs, h in self._pending:
            self._answer(requests, idxs, logits[at : at + h.shape[0]], res)
            at += h.shape[0]
        self._pending.clear()

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
        # context -> its distinct continuation inputs (continuation[:-1]) -> requests
        groups: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]] = {}
        for i, (_, ctx, cont) in enumerate(requests):
            if len(ctx) + len(cont) > self.max_length + 1 or not ctx or not cont:
                own.append(i)
            else:
                groups.setdefault(tuple(ctx), {}).setdefault(tuple(cont[:-1]), []).append(i)
        # HFLM's inputs: one per distinct context + continuation[:-1] (its one-token lookup)
        inputs = {c + r for c, rows in groups.items() for r in rows}
        self.naive_tokens += sum(len(s) for s in inputs)
        self.floor_tokens += distinct_positions(inputs)
        self._fallback("context and continuation longer than the model's window", len(own))
        try:
            self._score_groups(requests, groups, res, override_bs)
        except _NoCache:
            self._pending.clear()
            self._fallback("the model returns no KV cache", len(requests) - len(own))
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
        groups: dict[tuple[int, ...], dict[tuple[int, ...], list[int]]],
        res: list[tuple[float, bool] | None],
        override_bs: int | None,
    ) -> None:
        """Walk the prefix tree of the contexts depth first, with an explicit stack (no
        recursion limit): a node is (its contexts, the tokens its cache holds, the cache)."""
        bs = self.batch_size if self.batch_size != "auto" else (override_bs or 1)
        bs = max(1, int(bs))
        defer = self._head_applies()
        # (contexts, tokens the cache holds, the cache, whether to copy it first); a node's
        # last branch takes its cache and is pushed first, so it runs after its siblings
        # copied theirs (each copy made only when its branch runs)
        stack: list[tuple[list[tuple[int, ...]], int, Any, bool]] = [
            (sorted(groups), 0, None, False)
        ]
        while stack:
            ctxs, start, cache, copy_it = stack.pop()
            if copy_it and cache is not None:
                cache = copy.deepcopy(cache)
            if len(ctxs) == 1 and len(groups[ctxs[0]]) == 1:
                # one context with one continuation input: the rest of both in one forward
                ctx = ctxs[0]
                ((row, idxs),) = groups[ctx].items()
                ids = [[*ctx[start:], *row]]
                if defer:
                    hidden, _ = self._forward(ids, cache, keep=0)
                    self._defer(requests, idxs, hidden[0, -(len(row) + 1) :], res)
                else:
                    logits, _ = self._forward(ids, cache, keep=len(row) + 1)
                    self._answer(requests, idxs, logits[0], res)
                continue
            heads = [c[:-1] for c in ctxs]
            shared = start + common_prefix([h[start:] for h in heads])
            if shared > start:
                _, cache = self._forward([list(heads[0][start:shared])], cache, keep=0)
            branches: dict[int, list[tuple[int, ...]]] = {}
            for c, h in zip(ctxs, heads, strict=True):
                if len(h) == shared:  # all of its context but the last token is in the cache
                    self._score_continuations(requests, c, groups[c], cache, res, bs, defer)
                else:
                    branches.setdefault(h[shared], []).append(c)
            subs = list(branches.values())
            if subs:
                stack.append((subs[-1], shared, cache, False))
                stack.extend((sub, shared, cache, True) for sub in reversed(subs[:-1]))
        self._flush(requests, res)

    def _score_continuations(
        self,
        requests: list[Request],
        ctx: tuple[int, ...],
        rows: dict[tuple[int, ...], list[int]],
        cache: Any,
        res: list[tuple[float, bool] | None],
        bs: int,
        defer: bool,
    ) -> None:
        """The continuation inputs ``rows`` of context ``ctx`` (``cache`` holds all of it but
        its last token), ``bs`` per forward on a copy of the cache, longest first; ``defer``:
        the head later, on each row's own positions (``_defer``)."""
        order = sorted(rows, key=len, reverse=True)
        for start in range(0, len(order), bs):
            chunk = order[start : start + bs]
            width = len(chunk[0]) + 1
            ids = [[ctx[-1], *r] + [ctx[-1]] * (width - 1 - len(r)) for r in chunk]
            c = copy.deepcopy(cache) if cache is not None else None
            if c is not None and len(chunk) > 1:
                c.batch_repeat_interleave(len(chunk))
            out, _ = self._forward(ids, c, keep=0 if defer else None)
            for j, r in enumerate(chunk):
                if defer:
                    self._defer(requests, rows[r], out[j, : len(r) + 1], res)
                else:
                    self._answer(requests, rows[r], out[j, : len(r) + 1], res)

    def _answer(
        self,
        requests: list[Request],
        idxs: list[int],
        logits: torch.Tensor,
        res: list[tuple[float, bool] | None],
    ) -> None:
        """Score requests ``idxs`` (one context and continuation input) on ``logits``, the
        positions from the context's last token on."""
        logp = F.log_softmax(logits, dim=-1, dtype=self.softmax_dtype)
        for i in idxs:
            cont = torch.tensor(requests[i][2], dtype=torch.long, device=logp.device)
            lp = logp[: len(cont)]
            greedy = bool((lp.argmax(dim=-1) == cont).all())
            answer = (float(lp.gather(1, cont[:, None]).sum()), greedy)
            res[i] = answer
            self.cache_hook.add_partial("loglikelihood", requests[i][0], answer)

    # generation: each group's shared prompt prefix prefilled once

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        """lm-eval's ``generate_until``, one group of prompts sharing a prefix
        (``prefix_groups``) after the other, in lm-eval's batches: each batch continues from
        the group's prefix cache, laid out as lm-eval lays out its left-padded batch."""
        if self.backend != "causal" or not requests:
            self._fallback(f"backend {self.backend}: no shared causal prefix", len(requests))
            return super().generate_until(requests, disable_tqdm)
        encoded = [tuple(self.tok_encode(r.args[0])) for r in requests]
        self.naive_tokens += sum(len(e) for e in encoded)
        self.floor_tokens += distinct_positions(set(encoded))
        prefixes = sorted(prefix_groups(encoded, self.MIN_SHARED_PROMPT), key=len, reverse=True)
        parts: dict[tuple[int, ...] | None, list[int]] = {}
        for i, e in enumerate(encoded):
            p = next((p for p in prefixes if len(e) > len(p) and e[: len(p)] == p), None)
            parts.setdefault(p, []).append(i)
        out: list[str | None] = [None] * len(requests)
        for prefix, idxs in parts.items():
            if prefix is None:
                self._fallback("prompt shares no prefix with another", len(idxs))
            self._gen_prefix, self._gen_states = prefix, None
            try:
                got = super().generate_until([requests[i] for i in idxs], disable_tqdm)
            finally:
                self._gen_prefix, self._gen_states = None, None
            for i, text in zip(idxs, got, strict=True):
                out[i] = text
        return out  # type: ignore[return-value]

    def _prefix_states(self, prefix: tuple[int, ...]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every layer's keys and values of ``prefix`` (batch 1, all positions: a cache of
        full layers, so a sliding-window layer keeps the past that padded rows still see)."""
        from transformers import DynamicCache

        with torch.inference_mode():
            _, cache = self._forward([list(prefix)], DynamicCache(), keep=0)
        states = [(layer.keys, layer.values) for layer in getattr(cache, "layers", ())]
        if not states or any(k.shape[-2] != len(prefix) for k, _ in states):
            raise _NoCache
        return states

    def _batch_cache(
        self, states: list[tuple[torch.Tensor, torch.Tensor]], pads: list[int], n: int
    ):
        """The cache of the first ``n`` slots of a left-padded batch whose row ``r`` has
        ``pads[r]`` padding slots and then the prefix: zeros on padding (masked, never
        read), the prefix's states after; in the cache layers ``generate`` would make."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)

        def rows(t: torch.Tensor) -> torch.Tensor:
            out = []
            for pad in pads:
                z = min(pad, n)
                zeros = t.new_zeros((*t.shape[:-2], z, t.shape[-1]))
                out.append(torch.cat([zeros, t[..., : n - z, :]], dim=-2))
            return torch.cat(out, dim=0)

        for idx, (k, v) in enumerate(states):
            cache.update(rows(k), rows(v), idx)
        return cache

    def _model_generate(self, context: Any, max_length: int, stop: list[str], **kwargs: Any):
        prefix = self._gen_prefix
        if prefix is not None:
            mask = kwargs.get("attention_mask")
            real = [
                context[r][mask[r].bool()] if mask is not None else context[r]
                for r in range(context.shape[0])
            ]
            if all(
                len(x) > len(prefix) and tuple(x[: len(prefix)].tolist()) == prefix for x in real
            ):
                try:
                    if self._gen_states is None:
                        self._gen_states = self._prefix_states(prefix)
                except _NoCache:
                    self._fallback("the model returns no cache of full layers", context.shape[0])
                    self._gen_prefix = None
                else:
                    pads = [context.shape[1] - len(x) for x in real]
                    n = len(prefix) + min(
                        pads
                    )  # slots that hold padding or the prefix in every row
                    # generate computes only the slots the cache does not hold
                    kwargs[self._cache_arg] = self._batch_cache(self._gen_states, pads, n)
                    self.forward_tokens += context.shape[0] * (context.shape[1] - n)
                    return super()._model_generate(context, max_length, stop, **kwargs)
            else:
                self._fallback(
                    "prompt truncated from the left: its group's prefix is cut", context.shape[0]
                )
        self.forward_tokens += context.numel()
        return super()._model_generate(context, max_length, stop, **kwargs)


class _NoCache(Exception):
    """The model returned no KV cache."""
