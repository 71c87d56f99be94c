"""Model resolution: local folders, error messages, and (e2e) the built-in gemma-3-270m."""

from __future__ import annotations

import shutil
import time

import pytest

from ecocompress.tasks.errors import UserError


@pytest.fixture()
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("ECOCOMPRESS_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def test_local_folder_stable_hash_and_weight_bytes(tiny_model_dir, home, tmp_path) -> None:
    from transformers import AutoModelForCausalLM

    from ecocompress.tasks.download import resolve_model

    a = resolve_model(str(tiny_model_dir))
    b = resolve_model(str(tiny_model_dir))
    assert (
        a == b and a.source == "local" and a.id == a.content_hash[:24] and len(a.content_hash) == 64
    )
    assert a.checkpoint_dtype == "float32" and a.prune_spec is None and a.quant_spec is None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied: counted once
    assert a.reference_weight_bytes == 4 * sum(p.numel() for p in model.parameters())

    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    assert resolve_model(str(copy)).content_hash == a.content_hash  # content, not location
    time.sleep(0.01)
    (copy / "config.json").write_text((copy / "config.json").read_text() + " ")
    assert resolve_model(str(copy)).content_hash != a.content_hash  # memo invalidated by the edit


def test_load_reference_model(tiny_model_dir, home) -> None:
    import torch

    from ecocompress.tasks.download import load_reference_model, resolve_model

    model, tok = load_reference_model(resolve_model(str(tiny_model_dir)), "bfloat16")
    assert not model.training and model.dtype == torch.bfloat16 and tok.pad_token == "<pad>"


@pytest.mark.parametrize(
    ("model", "message"),
    [
        (
            "nobody-xyz/not-a-model",
            r"model 'nobody-xyz/not-a-model' is not in the local Hugging Face cache "
            r"and the Hub is offline \(HF_HUB_OFFLINE=1\); pass a local folder",
        ),
        ("/does/not/exist", r"model path '/does/not/exist' does not exist"),
        ("./missing.gguf", r"model path './missing.gguf' does not exist"),
        ("what is this?", r"unknown model 'what is this\?': pass gemma-3-270m"),
        ("gpt2", r"unknown model 'gpt2'"),
    ],
)
def test_resolve_errors(model: str, message: str, home, monkeypatch) -> None:
    import huggingface_hub.constants as hc

    from ecocompress.tasks.download import resolve_model

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match=message):
        resolve_model(model)


def test_folder_without_config_and_non_gguf_file(tmp_path, home) -> None:
    from ecocompress.tasks.download import resolve_model

    with pytest.raises(UserError, match="has no config.json"):
        resolve_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(UserError, match=r"no \*\.safetensors weights in .*: only safetensors"):
        resolve_model(str(tmp_path))
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(UserError, match="is not a .gguf file"):
        resolve_model(str(f))


@pytest.mark.e2e
def test_gemma_alias_converts_once(monkeypatch) -> None:
    """Uses the session's home, so the e2e sweep reuses this conversion."""
    import transformers

    from ecocompress.tasks.download import resolve_model

    ref = resolve_model("gemma-3-270m")
    assert ref.source == "package" and ref.checkpoint_dtype == "float32"
    # 268M unique parameters in fp32, the tied head counted once.
    assert 1.0e9 < ref.reference_weight_bytes < 1.1e9
    loads = []
    real = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(
        transformers.AutoModelForCausalLM,
        "from_pretrained",
        lambda *a, **k: loads.append(a) or real(*a, **k),
    )
    assert resolve_model("gemma-3-270m") == ref
    assert loads == []  # the second call converts nothing
