"""Pruning on toy modules (exact counts) and on the tiny Gemma-3 model (save, reload, cache)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import CalibrationSpec, PruneSpec


class ToyLM(nn.Module):
    """Embedding -> two Linears -> tied head; the embedding columns have very uneven scales."""

    def __init__(self, vocab: int = 50, hidden: int = 32, inner: int = 64) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, hidden)
        with torch.no_grad():  # input feature j scaled by 10**(j/hidden*3): non-uniform activations
            self.embed.weight.mul_(torch.logspace(0, 3, hidden))
        self.up = nn.Linear(hidden, inner)
        self.down = nn.Linear(inner, hidden)
        self.lm_head = nn.Linear(hidden, vocab, bias=False)
        self.lm_head.weight = self.embed.weight

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.down(torch.relu(self.up(self.embed(ids)))))


def _calib() -> torch.Tensor:
    return torch.randint(0, 50, (4, 16), generator=torch.Generator().manual_seed(1))


def test_decoder_linears_skip_embedding_and_head() -> None:
    from ecocompress.tasks.prune import decoder_linears

    assert list(decoder_linears(ToyLM())) == ["up", "down"]


@pytest.mark.parametrize("method", ["magnitude", "wanda"])
@pytest.mark.parametrize("target", [0.3, 0.5, 0.7])
def test_unstructured_sparsity_matches_target(method: str, target: float) -> None:
    from ecocompress.tasks.prune import prune_model

    model = ToyLM()
    emb = model.embed.weight.clone()
    report = prune_model(model, PruneSpec(method=method, sparsity=target), _calib())
    for lin in (model.up, model.down):
        assert abs((lin.weight == 0).float().mean().item() - target) < 1e-3 + 1 / lin.in_features
    assert abs(report["achieved_sparsity"] - target) < 1e-3 + 1 / 32
    assert report["layers"] == 2 and report["params_pruned"] == 32 * 64 * 2
    assert torch.equal(model.embed.weight, emb) and model.lm_head.weight is model.embed.weight
    assert (model.up.bias != 0).all()  # biases are not pruned


def test_magnitude_sparsity_exact_on_one_linear() -> None:
    from ecocompress.tasks.prune import prune_model

    model = ToyLM(hidden=100, inner=300)
    report = prune_model(model, PruneSpec(method="magnitude", sparsity=0.437))
    assert abs(report["achieved_sparsity"] - 0.437) < 1e-3
    assert abs((model.up.weight == 0).float().mean().item() - 0.437) < 1e-3


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
@pytest.mark.parametrize("method", ["magnitude", "wanda"])
def test_n_m_pattern_holds_in_every_group(pattern: str, method: str) -> None:
    from ecocompress.tasks.prune import prune_model

    n, m = map(int, pattern.split(":"))
    model = ToyLM()
    report = prune_model(model, PruneSpec(method=method, pattern=pattern), _calib())
    for lin in (model.up, model.down):
        groups = lin.weight.view(lin.out_features, -1, m)  # [out, in/M, M]
        assert ((groups == 0).sum(-1) >= m - n).all()
    assert abs(report["achieved_sparsity"] - (1 - n / m)) < 1e-6


def test_n_m_needs_divisible_in_features() -> None:
    from ecocompress.tasks.prune import prune_model

    model = ToyLM(hidden=30, inner=64)
    with pytest.raises(UserError, match=r"layer up has in_features 30, not divisible by M=4"):
        prune_model(model, PruneSpec(method="magnitude", pattern="2:4"))


def test_existing_zeros_count_toward_sparsity() -> None:
    from ecocompress.tasks.prune import prune_model

    model = ToyLM()
    with torch.no_grad():
        model.up.weight[:, :16] = 0  # half of `up` already zero
    report = prune_model(model, PruneSpec(method="magnitude", sparsity=0.25))
    assert (model.up.weight == 0).float().mean().item() == pytest.approx(0.5)
    assert report["achieved_sparsity"] > 0.25


def test_wanda_mask_differs_from_magnitude_and_follows_activations() -> None:
    from ecocompress.tasks.prune import prune_model

    mag, wan = ToyLM(), ToyLM()
    prune_model(mag, PruneSpec(method="magnitude", sparsity=0.5))
    prune_model(wan, PruneSpec(method="wanda", sparsity=0.5), _calib())
    mag_mask, wan_mask = mag.up.weight == 0, wan.up.weight == 0
    assert (mag_mask != wan_mask).float().mean() > 0.2
    # Features with large activations (high j) are kept far more often by Wanda.
    assert wan_mask[:, -8:].float().mean() < 0.1 < wan_mask[:, :8].float().mean()
    assert (wan_mask.sum(1) == 16).all()  # per output row: 50 % of 32 inputs


def test_wanda_without_calibration_is_an_error() -> None:
    from ecocompress.tasks.prune import prune_model

    with pytest.raises(UserError, match="calibration"):
        prune_model(ToyLM(), PruneSpec(method="wanda", sparsity=0.5))


def test_calibration_windows_come_from_second_half(tiny_model_dir, shared_data_dir) -> None:
    from ecocompress.tasks.calibration import (
        CALIBRATION_OFFSET_FRACTION,
        calibration_batches,
        calibration_text,
    )
    from ecocompress.tasks.download import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    spec = CalibrationSpec(n_samples=5, seq_len=32, seed=3)
    a = calibration_batches(tok, spec, shared_data_dir)
    assert a.shape == (5, 32) and a.dtype == torch.long
    assert (a[:, 0] == tok.bos_token_id).all()
    assert torch.equal(a, calibration_batches(tok, spec, shared_data_dir))  # seeded
    assert not torch.equal(
        a,
        calibration_batches(tok, CalibrationSpec(n_samples=5, seq_len=32, seed=4), shared_data_dir),
    )
    text, offset = calibration_text(shared_data_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    second = ids[int(CALIBRATION_OFFSET_FRACTION * len(ids)) :]
    joined = ",".join(map(str, second))
    for row in a[:, 1:].tolist():  # each window is a contiguous run of second-half tokens
        assert ",".join(map(str, row)) in joined


def test_calibration_missing_file(tiny_model_dir, tmp_path) -> None:
    from ecocompress.tasks.calibration import calibration_batches
    from ecocompress.tasks.download import load_tokenizer

    with pytest.raises(UserError, match=r"calibration text not found: .*wiki\.test\.raw\.gz"):
        calibration_batches(load_tokenizer(tiny_model_dir), CalibrationSpec(), tmp_path)


def test_prune_saves_reloads_and_caches(
    tiny_model_dir, shared_data_dir, tmp_path, monkeypatch
) -> None:
    from transformers import AutoModelForCausalLM

    import ecocompress.tasks.prune as prune_mod
    from ecocompress.tasks.download import resolve_model

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path))
    ref = resolve_model(str(tiny_model_dir))
    spec = PruneSpec(
        method="wanda", sparsity=0.5, calibration=CalibrationSpec(n_samples=4, seq_len=32)
    )
    assert prune_mod.prune(ref, PruneSpec(), shared_data_dir) is ref  # no-op
    pruned = prune_mod.prune(ref, spec, shared_data_dir)
    assert pruned.id != ref.id and pruned.path.startswith(str(tmp_path))
    assert pruned.content_hash == ref.content_hash and pruned.prune_spec == spec.canonical()
    assert abs(pruned.achieved_sparsity - 0.5) < 1e-3

    model = AutoModelForCausalLM.from_pretrained(pruned.path)
    orig = AutoModelForCausalLM.from_pretrained(ref.path)
    lins = prune_mod.decoder_linears(model)
    zeros = sum(int((m.weight == 0).sum()) for m in lins.values())
    assert zeros / sum(m.weight.numel() for m in lins.values()) == pytest.approx(
        pruned.achieved_sparsity
    )
    assert torch.equal(model.model.embed_tokens.weight, orig.model.embed_tokens.weight)

    def boom(*a, **k):
        raise AssertionError("prune_model must not run again for a cached result")

    monkeypatch.setattr(prune_mod, "prune_model", boom)
    assert prune_mod.prune(ref, spec, shared_data_dir) == pruned


def test_pruned_copy_keeps_checkpoint_dtype(tiny_model_dir, tmp_path, monkeypatch) -> None:
    from transformers import AutoModelForCausalLM

    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.prune import prune

    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    src = tmp_path / "bf16"
    AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).save_pretrained(src)
    for f in tiny_model_dir.glob("tokenizer*"):
        (src / f.name).write_bytes(f.read_bytes())
    ref = resolve_model(str(src))
    assert ref.checkpoint_dtype == "bfloat16"
    pruned = prune(ref, PruneSpec(method="magnitude", sparsity=0.3), None)
    reloaded = resolve_model(pruned.path)  # its own weight bytes, read from the safetensors
    assert reloaded.checkpoint_dtype == "bfloat16"
    assert (
        reloaded.reference_weight_bytes
        == ref.reference_weight_bytes
        == pruned.reference_weight_bytes
    )


def test_calibration_text_too_short_and_no_linears(tiny_model_dir, tmp_path) -> None:
    import gzip

    from ecocompress.tasks.calibration import calibration_batches
    from ecocompress.tasks.download import load_tokenizer
    from ecocompress.tasks.prune import prune_model

    (tmp_path / "wikitext2").mkdir()
    with gzip.open(tmp_path / "wikitext2" / "wiki.test.raw.gz", "wt") as f:
        f.write(" = Title = \n A few words only . \n")
    with pytest.raises(UserError, match="calibration text too short for seq_len 64"):
        calibration_batches(load_tokenizer(tiny_model_dir), CalibrationSpec(), tmp_path)
    with pytest.raises(UserError, match="has no decoder Linear layers"):
        prune_model(nn.Sequential(nn.Embedding(4, 4)), PruneSpec(method="magnitude", sparsity=0.5))
