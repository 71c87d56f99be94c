"""GPU check of the CUDA paths (run on a GPU machine; not a test, CI has no GPU).

    python tests/perf/gpu_check.py --tokenizer DIR --out DIR

Builds a randomly initialised Gemma-3 causal LM with gemma-3-270m's layer shapes (hidden
640, intermediate 2048, 18 layers, 4 heads, 1 KV head, head dim 256; the vocabulary of the
given small tokenizer instead of 262k) and checks, through the project's own code:

- ``tasks.quantize.load_candidate`` at bits 16 / 8 / 4: on ``cuda:0``, the bitsandbytes
  layer types, bytes held (``tasks.footprint.tensor_bytes``), and the logits against
  bf16 on fixed inputs (cosine similarity, top-1 agreement). Random weights: this checks
  that the kernels and our loading run and agree, not model quality.
- ``metrics.measure.measure_latency`` and ``RssSampler`` (CUDA peak memory) on the GPU.
- ``metrics.energy.EnergyMeter`` around a fixed GPU workload: NVML's total-energy counter
  and codecarbon, with the method string.
- ``tasks.prune.prune_model`` on the GPU model: magnitude 50 %, 2:4 (pattern verified),
  Wanda 50 % with activation norms from CUDA forward passes.

Writes gpu_check.json to --out.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path


def build_model(tok_dir: Path, out: Path, layers: int = 18) -> Path:
    import torch
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig

    tok = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=640,
        intermediate_size=2048,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        max_position_embeddings=4096,
        sliding_window=512,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        tie_word_embeddings=True,
    )
    Gemma3ForCausalLM(cfg).eval().save_pretrained(out)
    for f in tok_dir.iterdir():
        shutil.copy(f, out / f.name)
    return out


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=18)
    ap.add_argument("--seconds", type=float, default=8.0, help="energy workload per candidate")
    ap.add_argument("--allow-cpu", action="store_true", help="dry run of the script on a CPU")
    a = ap.parse_args()
    assert torch.cuda.is_available() or a.allow_cpu, "no CUDA device"
    from ecocompress.metrics.energy import EnergyMeter
    from ecocompress.metrics.measure import RssSampler, measure_latency
    from ecocompress.tasks.download import resolve_model
    from ecocompress.tasks.footprint import tensor_bytes
    from ecocompress.tasks.prune import activation_norms, decoder_linears, prune_model
    from ecocompress.tasks.quantize import clear_loaded, device, load_candidate
    from ecocompress.tasks.specs import PruneSpec, QuantSpec

    work = Path(tempfile.mkdtemp())
    ref = resolve_model(str(build_model(Path(a.tokenizer), work / "model", a.layers)))
    report: dict = {
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (dry run)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "device_used": device(),
        "model": "random Gemma-3, gemma-3-270m layer shapes, vocab of the test tokenizer",
        "candidates": {},
    }
    import bitsandbytes

    report["bitsandbytes"] = bitsandbytes.__version__
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, 1000, (8, 128), generator=g)
    ref_logits = None
    for bits in (16, 8, 4):
        spec = QuantSpec(bits=bits)
        model, tok = load_candidate(ref, spec)
        kinds = sorted({type(m).__name__ for m in decoder_linears(model).values()})
        with torch.no_grad():
            logits = model(ids.to(model.device)).logits.float().cpu()
        if ref_logits is None:
            ref_logits = logits
        cos = torch.nn.functional.cosine_similarity(
            logits.flatten(0, 1), ref_logits.flatten(0, 1), dim=-1
        )
        agree = (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item()
        with RssSampler() as rss:
            lat = measure_latency(model, tok)
        meter = EnergyMeter(work / f"energy-{bits}", "USA", measure_power_secs=1.0)
        with meter, torch.no_grad():
            t0 = time.perf_counter()
            big = torch.randint(4, 1000, (16, 512) if not a.allow_cpu else (1, 32), generator=g)
            big = big.to(model.device)
            n = 0
            while time.perf_counter() - t0 < a.seconds:
                model(big)
                n += 1
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        report["candidates"][spec.canonical()] = {
            "param_device": str(next(model.parameters()).device),
            "linear_types": kinds,
            "tensor_bytes": tensor_bytes(model),
            "logits_cosine_vs_bf16_mean": cos.mean().item(),
            "logits_cosine_vs_bf16_min": cos.min().item(),
            "top1_agreement_vs_bf16": agree,
            "latency": lat,
            "cuda_peak_gb": rss.cuda_peak_gb,
            "energy_workload": f"{n} forward passes of 16x512 tokens in {time.perf_counter() - t0:.1f} s",
            "energy": meter.as_dict(),
        }
        print(bits, json.dumps(report["candidates"][spec.canonical()], default=str)[:600])
        clear_loaded()
        del model
        torch.cuda.empty_cache()

    prune_out = {}
    for pspec in (
        PruneSpec(method="magnitude", sparsity=0.5),
        PruneSpec(method="magnitude", pattern="2:4"),
        PruneSpec(method="wanda", sparsity=0.5),
    ):
        model, _ = load_candidate(ref, QuantSpec(bits=16))
        calib = torch.randint(4, 1000, (8, 64), generator=g).to(model.device)
        t0 = time.perf_counter()
        info = prune_model(model, pspec, calib if pspec.method == "wanda" else None)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        secs = time.perf_counter() - t0
        lin = decoder_linears(model)
        zeros = sum(int((m.weight == 0).sum()) for m in lin.values())
        total = sum(m.weight.numel() for m in lin.values())
        ok_nm = None
        if pspec.nm:
            w = next(iter(lin.values())).weight
            groups = (w.reshape(w.shape[0], -1, 4) == 0).sum(-1)
            ok_nm = bool((groups >= 2).all())
        prune_out[pspec.canonical()] = {
            "achieved_sparsity": zeros / total,
            "weights_on": str(next(iter(lin.values())).weight.device),
            "seconds": secs,
            "nm_pattern_holds_first_layer": ok_nm,
            "info_keys": sorted(info) if isinstance(info, dict) else None,
        }
        print(pspec.canonical(), prune_out[pspec.canonical()])
        clear_loaded()
        del model
        torch.cuda.empty_cache()
    del activation_norms  # imported to fail fast if the GPU path lacks it
    report["pruning"] = prune_out
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    print("wrote gpu_check.json")


if __name__ == "__main__":
    main()
