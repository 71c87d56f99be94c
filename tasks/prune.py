"""Zero weights of the decoder's Linear layers: magnitude or Wanda, unstructured or N:M.

Pruning is in place and layer by layer under ``torch.no_grad`` (no ``torch.nn.utils.prune``:
its global masks took 8.7 GB on gemma-3-270m). Embeddings and the (tied) output head are
never pruned. Fused projections (Phi-3's ``qkv_proj`` and ``gate_up_proj``) are pruned part
by part, as the separate q/k/v and gate/up matrices of Llama-like families. Zeros do not
make dense kernels faster: sparsity is a size/quality trade here, not a latency claim.
"""

from __future__ import annotations

import inspect
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from ecocompress.tasks.artifacts import ModelRef, cache_dir, derive_id
from ecocompress.tasks.cache import COMPLETE, mark_used, publish, reusable
from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import PruneSpec


def decoder_linears(model: Any) -> dict[str, Any]:
    """Every ``nn.Linear`` of ``model`` except the output head and anything sharing the embedding.

    Returns:
        ``{qualified name: module}`` in module order.
    """
    from torch import nn

    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    tied = {id(emb.weight)} if emb is not None else set()
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or mod is head or name.split(".")[-1] == "lm_head":
            continue
        if id(mod.weight) in tied:
            continue
        out[name] = mod
    return out


def row_parts(name: str, rows: int, config: Any) -> list[slice]:
    """Row blocks of a decoder Linear that other families hold as separate matrices.

    ``qkv_proj`` (Phi-3) stacks q, k and v: ``heads * head_dim``, then ``kv_heads * head_dim``
    twice; ``gate_up_proj`` stacks gate and up, two halves. Any other layer is one block.
    Row-wise methods (Wanda, N:M) give the same zeros either way; a layer-wise magnitude
    threshold would otherwise be shared between q, k and v.

    Raises:
        UserError: a fused layer whose rows do not match the sizes its config implies.
    """
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "gate_up_proj":
        sizes = [rows // 2, rows // 2]
    elif leaf == "qkv_proj" and config is not None:
        cfg = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = cfg.num_attention_heads
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
        kv = (getattr(cfg, "num_key_value_heads", None) or heads) * head_dim
        sizes = [heads * head_dim, kv, kv]
    elif leaf == "qkv_proj":
        sizes = []  # no config to split it by
    else:
        return [slice(0, rows)]
    if not sizes or sum(sizes) != rows:
        raise UserError(
            f"layer {name} is a fused projection of {rows} rows that cannot be split into "
            f"{'+'.join(map(str, sizes)) or 'q, k, v (no config)'}: pruning it is not supported"
        )
    ends = [sum(sizes[: i + 1]) for i in range(len(sizes))]
    return [slice(end - size, end) for size, end in zip(sizes, ends, strict=True)]


def activation_norms(
    model: Any, layers: dict[str, Any], calib: Any, micro_batch: int = 4
) -> dict[str, Any]:
    """L2 norm of every input feature of each layer over all calibration tokens.

    Args:
        model: the model, called as ``model(input_ids)``.
        layers: the Linear layers to observe.
        calib: ``[n_samples, seq_len]`` token ids.
        micro_batch: rows per forward pass (bounds the activation memory).

    Returns:
        ``{name: [in_features] float32 tensor}``, ``||X_j||_2`` over the ``n_samples * seq_len`` tokens.
    """
    import torch

    sq = {
        n: torch.zeros(m.in_features, dtype=torch.float32, device=m.weight.device)
        for n, m in layers.items()
    }

    def hook(name: str):
        def fn(_mod: Any, args: tuple) -> None:
            x = args[0].detach().float()  # [..., in_features]
            sq[name] += x.reshape(-1, x.shape[-1]).pow(2).sum(0)

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    # Causal LMs accept logits_to_keep: skip the [batch, seq, vocab] logits (1 GB for gemma).
    kwargs = (
        {"logits_to_keep": 1, "use_cache": False}
        if "logits_to_keep" in inspect.signature(model.forward).parameters
        else {}
    )
    device = next(model.parameters()).device
    try:
        with torch.no_grad():
            for rows in calib.split(micro_batch):
                model(rows.to(device), **kwargs)
    finally:
        for h in handles:
            h.remove()
    return {n: s.sqrt() for n, s in sq.items()}


def _prune_weight(name: str, w: Any, score: Any, spec: PruneSpec) -> None:
    """Zero the lowest-score entries of ``w`` [out, in] in place."""
    import torch

    out_f, in_f = w.shape
    if spec.nm is not None:
        n, m = spec.nm
        if in_f % m:
            raise UserError(
                f"layer {name} has in_features {in_f}, not divisible by M={m} of pattern {spec.pattern}"
            )
        groups = score.view(out_f, in_f // m, m)  # [out, groups, M]
        drop = torch.topk(groups, m - n, dim=-1, largest=False).indices  # [out, groups, M-N]
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, drop, True)
        w.masked_fill_(mask.view(out_f, in_f), 0)
    elif spec.method == "wanda":  # per output row, as in the Wanda paper
        k = round(spec.sparsity * in_f)
        if k:
            drop = torch.topk(score, k, dim=1, largest=False).indices  # [out, k]
            w.scatter_(1, drop, 0)
    else:  # magnitude: one threshold per layer (global collapses gemma: ppl 4165 at 50 %)
        k = round(spec.sparsity * w.numel())
        if k:
            drop = torch.topk(score.view(-1), k, largest=False).indices
            w.view(-1)[drop] = 0


def prune_model(model: Any, spec: PruneSpec, calib: Any | None = None) -> dict[str, Any]:
    """Prune ``model``'s decoder Linear layers in place.

    ``magnitude`` scores ``|W|`` with a layer-wise threshold for unstructured sparsity (not
    global: global magnitude collapses gemma-3-270m, ppl 4165 at 50 %); a fused projection
    gets one threshold per part (``row_parts``). ``wanda`` scores
    ``|W_ij| * ||X_j||_2`` and compares within each output row. An ``N:M`` pattern keeps the
    N best of every M consecutive input weights of a row, for either method. Weights that are
    already zero count as zeros, so the achieved sparsity can exceed the target (gemma's
    dequantized GGUF has 4.5 % exact zeros).

    Args:
        model: a causal LM (or any module with Linear layers).
        spec: method, sparsity and pattern.
        calib: ``[n_samples, seq_len]`` token ids, required for ``wanda``.

    Returns:
        ``{"achieved_sparsity": zeros / weights, "layers": n, "params_pruned": weights, "zeros": zeros}``
        over the pruned layers' weights.
    """
    import torch

    layers = decoder_linears(model)
    config = getattr(model, "config", None)
    if not layers:
        raise UserError(f"model {type(model).__name__} has no decoder Linear layers to prune")
    if spec.method == "wanda" and calib is None:
        raise UserError("wanda pruning needs calibration token ids (calib)")
    norms = activation_norms(model, layers, calib) if spec.method == "wanda" else {}
    zeros = total = 0
    with torch.no_grad():
        for name, mod in layers.items():
            w = mod.weight.data  # [out, in]
            score = w.abs().float()
            if spec.method == "wanda":
                score.mul_(norms[name].to(score.device))  # broadcast over rows
            for part in row_parts(name, w.shape[0], config):  # views: pruned in place
                _prune_weight(name, w[part], score[part], spec)
            del score
            zeros += int((w == 0).sum())
            total += w.numel()
    return {
        "achieved_sparsity": zeros / total,
        "layers": len(layers),
        "params_pruned": total,
        "zeros": zeros,
    }


def _calibration_source(spec: PruneSpec, data_dir: Path | None) -> str:
    """Identity of Wanda's calibration text, so a changed text never reuses a pruned model."""
    if spec.method != "wanda":
        return ""
    if data_dir is None:
        return "|hub:wikitext/wikitext-2-raw-v1:train"
    from ecocompress.tasks.artifacts import sha256_file
    from ecocompress.tasks.benchmarks.wikitext import WIKITEXT_TEST

    f = Path(data_dir) / WIKITEXT_TEST
    return f"|{sha256_file(f)}" if f.is_file() else "|missing"


def checkpoint_path(ref: ModelRef, spec: PruneSpec, data_dir: Path | None) -> Path | None:
    """Where ``prune(ref, spec, data_dir)`` keeps its checkpoint (cache entry ``pruned/<id>``);
    ``None`` for a no-op spec (the reference itself is used)."""
    if spec.is_noop:
        return None
    new_id = derive_id(ref.id, "prune", spec.canonical() + _calibration_source(spec, data_dir))
    return cache_dir("pruned") / new_id


def prune(ref: ModelRef, spec: PruneSpec, data_dir: Path | None) -> ModelRef:
    """Prune ``ref`` and save it as safetensors under ``cache_dir('pruned') / <id>`` (cached).

    Args:
        ref: the reference model.
        spec: what to prune; a no-op spec returns ``ref`` unchanged.
        data_dir: benchmark data folder holding the WikiText-2 calibration text (Wanda).

    Returns:
        The pruned model's ref: the parent's lineage fields plus ``prune_spec`` and
        ``achieved_sparsity``.
    """
    out = checkpoint_path(ref, spec, data_dir)
    if out is None:
        return ref
    new_id = out.name
    marker = COMPLETE["pruned"]  # ref.json, written last
    if reusable("pruned", out):  # every file re-hashed against the entry's manifest
        mark_used("pruned", new_id)
        return ModelRef.model_validate_json((out / marker).read_text())

    import torch

    from ecocompress.tasks.download import load_reference_model

    model, tok = load_reference_model(ref, "float32")
    calib = None
    if spec.method == "wanda":
        from ecocompress.tasks.calibration import calibration_batches

        calib = calibration_batches(tok, spec.calibration, data_dir)
    report = prune_model(model, spec, calib)
    new = ref.model_copy(
        update={
            "id": new_id,
            "path": str(out),
            "prune_spec": spec.canonical(),
            "achieved_sparsity": report["achieved_sparsity"],
        }
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{new_id}-", dir=out.parent))
    try:
        # Scored in fp32, stored in the checkpoint's dtype: surviving weights are exact (they
        # were upcast from it) and a bf16 model's pruned copy stays the size of the original.
        model.to(getattr(torch, ref.checkpoint_dtype, torch.float32))
        model.save_pretrained(tmp)  # safetensors
        tok.save_pretrained(tmp)
        (tmp / "prune_report.json").write_text(json.dumps(report, indent=1))
        # ref.json is written last: its presence marks a complete folder.
        (tmp / marker).write_text(new.model_dump_json(indent=1))
        publish(tmp, out, "pruned")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return new
