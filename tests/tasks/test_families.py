"""Model families beyond Gemma-3: pruning, quantization, GGUF and a sweep on each.

Every family is a tiny model built from its transformers config class
(``tests/tiny_model.py``: Llama with grouped-query attention and an untied head, Qwen2 with
q/k/v biases and a tied head, Mistral with a sliding window, Phi-3 with fused ``qkv_proj`` and
``gate_up_proj``, Gemma-2, Gemma-3). The GGUF round trip writes a tiny Llama with the ``gguf``
package's writer and loads it through ``resolve_model``. The slow tier runs each family
through a real sweep.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ecocompress.tasks.errors import UserError
from ecocompress.tasks.specs import PruneSpec, QuantSpec
from tests.tiny_gguf import GGUF_ARCHS, write_gguf
from tests.tiny_model import FAMILIES, build_tiny_model

TEXT = "The game 's opening theme was composed by Hitoshi Sakimoto , who also wrote the score ."
TIED = {f: f in ("gemma3", "qwen2", "gemma2") for f in FAMILIES}  # the others: untied lm_head


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    return {f: build_tiny_model(root / f, family=f) for f in FAMILIES}


def _load(folder: Path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _linear_names(model: nn.Module) -> set[str]:
    """Every nn.Linear except the output head: what pruning must touch, found independently."""
    return {
        n
        for n, m in model.named_modules()
        if isinstance(m, nn.Linear) and not n.endswith("lm_head")
    }


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_is_what_it_claims(family, family_dirs) -> None:
    model = _load(family_dirs[family])
    cfg = model.config
    names = _linear_names(model)
    assert cfg.model_type == {"gemma3": "gemma3_text"}.get(family, family)
    assert cfg.num_key_value_heads < cfg.num_attention_heads  # grouped-query attention
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == TIED[family]
    leaves = {n.rsplit(".", 1)[-1] for n in names}
    assert ({"qkv_proj", "gate_up_proj"} <= leaves) == (family == "phi3")
    if family == "qwen2":
        assert model.model.layers[0].self_attn.q_proj.bias is not None
    if family in ("mistral", "gemma2", "gemma3"):
        assert cfg.sliding_window in (32, 64)


@pytest.fixture(scope="module")
def calib(family_dirs) -> torch.Tensor:
    """[4, 32] token ids of real text (every family shares the tokenizer). The pipeline's own
    calibration windows are tested in test_prune.py and used by the sweeps below."""
    from ecocompress.tasks.download import load_tokenizer

    ids = load_tokenizer(family_dirs["llama"])(TEXT * 8).input_ids  # one row of text
    return torch.tensor(ids[: 4 * 32]).view(4, 32)


SPECS = {
    "magnitude-0.5": PruneSpec(method="magnitude", sparsity=0.5),
    "wanda-0.5": PruneSpec(method="wanda", sparsity=0.5),
    "wanda-2:4": PruneSpec(method="wanda", pattern="2:4"),
}


@pytest.mark.parametrize("spec_id", SPECS)
@pytest.mark.parametrize("family", FAMILIES)
def test_pruning_hits_exactly_the_decoder_linears(family, spec_id, family_dirs, calib) -> None:
    from ecocompress.tasks.prune import decoder_linears, prune_model

    spec = SPECS[spec_id]
    model = _load(family_dirs[family])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    report = prune_model(model, spec, calib)

    expected = _linear_names(model)
    assert set(decoder_linears(model)) == expected and report["layers"] == len(expected)
    weights = {f"{n}.weight" for n in expected}
    # no head counted: the pruned weights are the decoder Linears' and nothing else
    assert report["params_pruned"] == sum(before[w].numel() for w in weights)
    for name, p in model.named_parameters():
        if name in weights:
            zeros = (p == 0).float().mean().item()
            assert zeros == pytest.approx(0.5, abs=1 / p.shape[1]), name
            if spec.nm:
                assert ((p.view(p.shape[0], -1, 4) == 0).sum(-1) >= 2).all(), name
        else:  # embeddings, lm_head, norms, biases: untouched
            assert torch.equal(p, before[name]), name
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == TIED[family]
    with torch.no_grad():
        assert torch.isfinite(model(calib[:1]).logits).all()


def test_fused_projections_are_pruned_part_by_part(family_dirs) -> None:
    """Phi-3's qkv_proj holds q (64 rows), k and v (32 each); gate_up_proj gate and up (128
    each). With v and up scaled 10x, one threshold per fused matrix would leave them almost
    dense; one per part prunes each to the target, as Llama's separate matrices are."""
    from ecocompress.tasks.prune import prune_model

    model = _load(family_dirs["phi3"])
    attn, mlp = model.model.layers[0].self_attn, model.model.layers[0].mlp
    with torch.no_grad():
        attn.qkv_proj.weight[96:].mul_(10)
        mlp.gate_up_proj.weight[128:].mul_(10)
    prune_model(model, PruneSpec(method="magnitude", sparsity=0.5))
    q, k, v = attn.qkv_proj.weight.split([64, 32, 32])
    gate, up = mlp.gate_up_proj.weight.split([128, 128])
    for part in (q, k, v, gate, up):
        assert (part == 0).float().mean().item() == pytest.approx(0.5, abs=1e-3)


def test_a_fused_projection_that_does_not_split_is_refused(family_dirs) -> None:
    from ecocompress.tasks.prune import prune_model

    model = _load(family_dirs["phi3"])
    model.config.num_key_value_heads = 1  # the config no longer describes qkv_proj's rows
    with pytest.raises(
        UserError,
        match=r"layer model.layers.0.self_attn.qkv_proj is a fused projection of 128 rows "
        r"that cannot be split into 64\+16\+16",
    ):
        prune_model(model, PruneSpec(method="wanda", pattern="2:4"), torch.zeros(1, 8).long())


def test_a_model_without_linear_layers_is_refused_by_name() -> None:
    """GPT-2 keeps its projections in Conv1D modules, which no pruning here handles."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from ecocompress.tasks.prune import prune_model

    ids = dict(bos_token_id=0, eos_token_id=0)
    model = GPT2LMHeadModel(GPT2Config(n_embd=64, n_layer=1, n_head=4, vocab_size=64, **ids))
    with pytest.raises(UserError, match="model GPT2LMHeadModel has no decoder Linear layers"):
        prune_model(model, PruneSpec(method="magnitude", sparsity=0.5))


@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_checkpoint_reloads_with_its_head(family, family_dirs, shared_data_dir) -> None:
    """The real task: prune, save, reload. Tied heads stay tied, untied heads stay unpruned.
    (Magnitude: Wanda's calibration tokenizes all of WikiText-2, 5 s; the sweeps run it.)"""
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.prune import prune

    ref = resolve_model(str(family_dirs[family]))
    new = prune(ref, PruneSpec(method="magnitude", pattern="2:4"), shared_data_dir)
    assert new.achieved_sparsity == pytest.approx(0.5)
    a, b = _load(family_dirs[family]), _load(Path(new.path))
    assert torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert torch.equal(a.lm_head.weight, b.lm_head.weight)
    assert (b.lm_head.weight is b.model.embed_tokens.weight) == TIED[family]
    assert new.reference_weight_bytes == ref.reference_weight_bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_weight_bytes_count_a_tied_head_once(family, family_dirs, tmp_path) -> None:
    """What the loaded model holds, also when config.json does not say whether the head is tied
    (its config class's default decides: Llama untied) and when a tied head is stored too."""
    import shutil

    from safetensors.torch import load_file, save_file

    from ecocompress.tasks.weights import weight_bytes

    model = _load(family_dirs[family])
    unique = 4 * sum(p.numel() for p in model.parameters())  # tied parameters listed once
    assert weight_bytes(family_dirs[family]) == unique
    silent = Path(shutil.copytree(family_dirs[family], tmp_path / "silent"))
    cfg = json.loads((silent / "config.json").read_text())
    del cfg["tie_word_embeddings"]
    (silent / "config.json").write_text(json.dumps(cfg))
    assert weight_bytes(silent) == unique
    if TIED[family]:  # a checkpoint that stores the tied head as well
        both = Path(shutil.copytree(family_dirs[family], tmp_path / "both"))
        tensors = load_file(str(both / "model.safetensors"))
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
        save_file(tensors, str(both / "model.safetensors"), metadata={"format": "pt"})
        assert weight_bytes(both) == unique


@pytest.fixture(scope="module")
def loaded_candidates():
    """The process-local loaded candidate is freed once, after the last test (each load frees
    the previous one: a gc pass of about 0.6 s)."""
    from ecocompress.tasks.quantize import clear_loaded

    yield
    clear_loaded()


@pytest.mark.parametrize("bits", [16, 8, 4])
@pytest.mark.parametrize("family", FAMILIES)
def test_quantized_family_loads_and_runs(family, bits, family_dirs, loaded_candidates) -> None:
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.footprint import tensor_bytes
    from ecocompress.tasks.quantize import load_candidate, quantize

    ref = resolve_model(str(family_dirs[family]))
    spec = QuantSpec(bits=bits)
    model, tok = load_candidate(quantize(ref, spec), spec)
    ids = tok(TEXT, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits.float()).all()
    kinds = {type(m).__name__ for n, m in model.named_modules() if n in _linear_names(model)}
    assert kinds >= {16: {"Linear"}, 8: {"Linear8bitLt"}, 4: {"Linear4bit"}}[bits]
    head = model.get_output_embeddings()
    assert type(head).__name__ == "Linear" and head.weight.dtype == torch.bfloat16
    assert (head.weight is model.get_input_embeddings().weight) == TIED[family]
    assert tensor_bytes(model) < ref.reference_weight_bytes * (0.51 if bits == 16 else 0.5)


# --- GGUF ------------------------------------------------------------------------------


def test_llama_permutation_is_inverted_by_its_inverse() -> None:
    from tests.tiny_gguf import llama_permute, llama_unpermute

    x = torch.arange(64 * 3.0).view(64, 3).numpy()
    assert np.array_equal(llama_unpermute(llama_permute(x, 4), 4), x)
    assert not np.array_equal(llama_permute(x, 4), x)  # the permutation moves rows


@pytest.mark.parametrize("family", GGUF_ARCHS)
def test_gguf_round_trip_through_resolve_model(family, family_dirs, tmp_path) -> None:
    """A GGUF written as llama.cpp writes one (Llama's q/k permuted, Gemma's norms as 1 + w,
    Phi-3's projections fused, tied heads omitted, Linears Q8_0) comes back, through the
    project's own path, as exactly the values the file holds, in transformers' layout, with
    a tokenizer that encodes like the source folder's."""
    from safetensors.torch import load_file

    from ecocompress.tasks.download import load_reference_model, load_tokenizer, resolve_model
    from ecocompress.tasks.tokenizer_save import PROBE

    src = family_dirs[family]
    gguf_file = tmp_path / f"tiny-{family}.gguf"
    held = write_gguf(src, gguf_file, linear_type="Q8_0")
    ref = resolve_model(str(gguf_file))
    assert ref.source == "gguf" and ref.checkpoint_dtype == "float32"
    assert resolve_model(str(gguf_file)) == ref  # converted once, then the cache
    model, tok = load_reference_model(ref)
    assert type(model).__name__ == type(_load(src)).__name__
    state = {n: p for n, p in model.state_dict().items() if n in held or n != "lm_head.weight"}
    assert set(state) == set(held)  # a tied head is not stored, and comes back tied
    for name, values in held.items():
        assert torch.equal(state[name], torch.from_numpy(values)), name
    original = load_file(str(src / "model.safetensors"))
    down = "model.layers.0.mlp.down_proj.weight"
    assert not torch.equal(state[down], original[down])  # Q8_0: the file's values
    assert (state[down] - original[down]).abs().max() < 0.01 * original[down].abs().max()
    assert torch.equal(state["model.embed_tokens.weight"], original["model.embed_tokens.weight"])
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == TIED[family]
    attn = model.model.layers[0].self_attn  # the shapes the file's metadata rebuilt
    assert (model.config.num_key_value_heads, attn.head_dim) == (
        _load(src).config.num_key_value_heads,
        16,
    )
    mine = load_tokenizer(src)
    assert tok(PROBE).input_ids == mine(PROBE).input_ids
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == ("<bos>", "<eos>", "<pad>")
    assert ref.reference_weight_bytes == 4 * sum(p.numel() for p in model.parameters())


def test_gguf_tokenizer_that_would_change_on_reload_is_refused(family_dirs, tmp_path) -> None:
    """A Qwen2 GGUF whose tokenizer splits text GPT-2's way: its folder would load Qwen2's
    split (digits one by one), so the conversion is refused instead of tokenizing silently
    differently."""
    from ecocompress.tasks.download import resolve_model

    g = tmp_path / "tiny-qwen2.gguf"
    write_gguf(family_dirs["qwen2"], g, pre="default")
    with pytest.raises(UserError, match=r"tiny-qwen2.gguf: its tokenizer \(Qwen2Tokenizer\) "):
        resolve_model(str(g))


def _gguf_of(path: Path, architecture: str) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), architecture)
    w.add_name("tiny")
    w.add_tensor("token_embd.weight", np.ones((32, 32), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.mark.parametrize("architecture", ["rwkv6", "bert"])
def test_gguf_of_an_unsupported_architecture_is_refused_by_name(architecture, tmp_path) -> None:
    from ecocompress.tasks.download import check_model, resolve_model

    g = _gguf_of(tmp_path / "m.gguf", architecture)
    needle = rf"has GGUF architecture '{architecture}', which transformers cannot load: supported .*llama"
    with pytest.raises(UserError, match=needle) as err:
        check_model(str(g))  # the preflight, before any server
    assert "\n" not in str(err.value) and "phi3" in str(err.value) and "qwen2" in str(err.value)
    with pytest.raises(UserError, match=needle):
        resolve_model(str(g))


def test_unsupported_gguf_is_refused_by_the_cli_before_any_server(
    tmp_path, shared_data_dir, capsys, monkeypatch
) -> None:
    import ecocompress.flows.stack as stack
    from tests.flows.test_refusals import _data, _refused

    calls: list[bool] = []
    monkeypatch.setattr(stack, "connect", lambda quiet=False: calls.append(quiet))
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    g = _gguf_of(tmp_path / "m.gguf", "rwkv6")
    argv = ["evaluate", "--model", str(g), *_data(shared_data_dir)]
    _refused(argv, capsys, calls, "m.gguf has GGUF architecture 'rwkv6'", "supported", "llama")


@pytest.mark.parametrize("architecture", ["llama", "qwen2moe", "gpt-oss", "gemma3"])
def test_gguf_architecture_spellings_of_llama_cpp_pass(architecture, tmp_path) -> None:
    from ecocompress.tasks.model_files import check_gguf

    check_gguf(_gguf_of(tmp_path / "m.gguf", architecture))


# --- slow: every family through a real sweep -----------------------------------------


@pytest.fixture(scope="module")
def sweep_home(tmp_path_factory: pytest.TempPathFactory):
    from prefect.testing.utilities import prefect_test_harness

    from tests.homes import fresh_home

    with fresh_home(tmp_path_factory, "eco-home-families") as home, prefect_test_harness():
        yield home


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_family_through_a_sweep(family, family_dirs, shared_data_dir, sweep_home, tmp_path):
    """bf16 and Wanda 2:4 + bf16 on CommonsenseQA (2 items) and 256 tokens of perplexity.
    Llama enters as its GGUF file (converted by the download step), the others as folders."""
    from ecocompress.flows.cli import parse_settings
    from ecocompress.flows.resolve import flow_parameters, resolve
    from ecocompress.flows.sweep import sweep_flow

    model = str(family_dirs[family])
    if family == "llama":
        write_gguf(Path(model), tmp_path / "tiny-llama.gguf")
        model = str(tmp_path / "tiny-llama.gguf")
    argv = ["--model", model, "--bits", "16", "--prune", "none,wanda", "--pattern", "2:4"]
    argv += ["--benchmarks", "commonsenseqa,perplexity", "--limit", "2", "--max-gen-toks", "8"]
    argv += ["--ppl-tokens", "256", "--ppl-window", "128", "--ppl-stride", "64"]
    argv += ["--data-dir", str(shared_data_dir), "--experiment", f"family-{family}"]
    s = sweep_flow(**flow_parameters(resolve("sweep", parse_settings("sweep", argv))), quiet=True)
    assert s["n_ok"] == 2, [r.get("failure_reason") for r in s["rows"]]
    by = {r["candidate"]: r for r in s["rows"]}
    assert set(by) == {"bf16", "wanda-2:4+bf16"}
    for row in by.values():
        assert 0 <= row["acc/commonsenseqa"] <= 1
        assert 1 <= row["perplexity/wikitext2"] < float("inf")
    assert by["bf16"]["sparsity"] == 0
    assert by["wanda-2:4+bf16"]["sparsity"] == pytest.approx(0.5)
    assert by["bf16"]["compression_ratio"] == pytest.approx(2.0, rel=0.01)  # fp32 -> bf16
