#!/usr/bin/env python3
"""Golden outputs from HF transformers for the forward-pass tests.

For each tiny model spec below: build it with AutoModelForCausalLM.from_config
(random weights, rescaled so logits are far from uniform), save it with
save_pretrained (sharded safetensors or .bin, f32/f16/bf16), and record, for a
few prompts of random token ids:
  - logits at every prompt position (one forward pass),
  - the greedy continuation of 32 tokens from generate(do_sample=False),
  - the logits of each of those 32 decode steps through HF's KV cache,
  - the top-1/top-2 margin of every greedy choice (to treat near-ties).

Usage: make_goldens.py OUTDIR [NAME ...]   (default: every spec)
Writes OUTDIR/NAME/{model/, prompts.txt, forced.txt, golden.npz, spec.json}.
"""
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

N_NEW = 32
PROMPT_LENS = (5, 12, 9)

# name -> (model_type, config overrides, save options)
SPECS = {
    "gpt2-a": ("gpt2", dict(n_embd=32, n_layer=2, n_head=4, vocab_size=128, n_positions=64), dict()),
    "gpt2-b": ("gpt2", dict(n_embd=48, n_layer=3, n_head=3, vocab_size=200, n_positions=80,
                            scale_attn_by_inverse_layer_idx=True, n_inner=80), dict(bin=True)),
    "gpt2-f16": ("gpt2", dict(n_embd=32, n_layer=2, n_head=2, vocab_size=150, n_positions=64), dict(dtype="float16")),
    "opt-a": ("opt", dict(hidden_size=32, ffn_dim=64, num_attention_heads=4, num_hidden_layers=2, vocab_size=100,
                          max_position_embeddings=64, word_embed_proj_dim=32), dict()),
    "opt-b": ("opt", dict(hidden_size=32, ffn_dim=48, num_attention_heads=2, num_hidden_layers=3, vocab_size=120,
                          max_position_embeddings=64, word_embed_proj_dim=16, do_layer_norm_before=False),
              dict(bin=True)),
    "bloom-a": ("bloom", dict(hidden_size=32, n_head=4, n_layer=2, vocab_size=128), dict()),
    "bloom-b": ("bloom", dict(hidden_size=48, n_head=6, n_layer=3, vocab_size=160), dict(bin=True, dtype="bfloat16")),
    "gpt-neo-a": ("gpt_neo", dict(hidden_size=32, num_heads=4, num_layers=2, vocab_size=128, max_position_embeddings=64,
                                  attention_types=[[["global", "local"], 1]], window_size=4, intermediate_size=64), dict()),
    "gpt-neo-b": ("gpt_neo", dict(hidden_size=48, num_heads=4, num_layers=3, vocab_size=100, max_position_embeddings=64,
                                  attention_types=[[["local", "global", "local"], 1]], window_size=7), dict(bin=True)),
    "gptj-a": ("gptj", dict(n_embd=32, n_head=4, n_layer=2, rotary_dim=4, vocab_size=128, n_positions=64), dict()),
    "gptj-b": ("gptj", dict(n_embd=48, n_head=4, n_layer=3, rotary_dim=12, vocab_size=90, n_positions=64,
                            n_inner=96, tie_word_embeddings=False), dict(bin=True)),
    "codegen-a": ("codegen", dict(n_embd=32, n_head=4, n_layer=2, rotary_dim=4, vocab_size=128, n_positions=64, n_ctx=64),
                  dict()),
    "codegen-b": ("codegen", dict(n_embd=64, n_head=8, n_layer=3, rotary_dim=8, vocab_size=100, n_positions=64, n_ctx=64),
                  dict(bin=True, dtype="float16")),
    "neox-a": ("gpt_neox", dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                                vocab_size=128, max_position_embeddings=64, rotary_pct=0.25), dict()),
    "neox-b": ("gpt_neox", dict(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, intermediate_size=80,
                                vocab_size=110, max_position_embeddings=64, rotary_pct=1.0, use_parallel_residual=False,
                                rope_scaling={"type": "linear", "factor": 2.0}, rotary_emb_base=500.0,
                                tie_word_embeddings=True), dict(bin=True)),
    "llama-a": ("llama", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                              intermediate_size=64, vocab_size=128, max_position_embeddings=64), dict()),
    "llama-b": ("llama", dict(hidden_size=30, num_attention_heads=3, num_key_value_heads=1, num_hidden_layers=3,
                              intermediate_size=50, vocab_size=150, max_position_embeddings=64, attention_bias=True,
                              tie_word_embeddings=True, rope_scaling={"type": "linear", "factor": 4.0}),
                dict(bin=True)),
    "llama3-rope": ("llama", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
                                  intermediate_size=48, vocab_size=128, max_position_embeddings=64, rope_theta=10000.0),
                    dict(llama3=dict(factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                                     original_max_position_embeddings=64), dtype="bfloat16")),
    "mistral-a": ("mistral", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                  intermediate_size=64, vocab_size=128, max_position_embeddings=64, sliding_window=6),
                  dict()),
    "qwen2-a": ("qwen2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                              intermediate_size=64, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=True),
                dict(bin=True)),
}


# Larger models for memory and speed checks: saved only (no goldens).
PLAIN = {
    "llama-mem": ("llama", dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=4,
                                intermediate_size=1376, vocab_size=8192, max_position_embeddings=1024)),
}


def make_plain(name, root):
    model_type, over = PLAIN[name]
    torch.manual_seed(1)
    cfg = AutoConfig.for_model(model_type, **over)
    model = AutoModelForCausalLM.from_config(cfg)
    d = os.path.join(root, name, "model")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, safe_serialization=True, max_shard_size="40MB")
    return d


def llama3_inv_freq(inv_freq, factor, low_freq_factor, high_freq_factor, original_max_position_embeddings):
    """Llama 3.1 rope scaling as later transformers releases compute it
    (_compute_llama3_parameters); transformers 4.40 predates it, so the
    golden model gets these frequencies patched in."""
    old = original_max_position_embeddings
    lo_wl, hi_wl = old / low_freq_factor, old / high_freq_factor
    out = []
    for f in inv_freq.tolist():
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(f)
        elif wl > lo_wl:
            out.append(f / factor)
        else:
            s = (old / wl - low_freq_factor) / (high_freq_factor - low_freq_factor)
            out.append((1 - s) * f / factor + s * f)
    return torch.tensor(out, dtype=torch.float32)


def rescale(model, seed):
    """HF's default init (std 0.02) gives nearly uniform logits: draw weights
    with unit-ish gain so greedy choices are clear."""
    g = torch.Generator().manual_seed(seed)
    conv1d = transformers.pytorch_utils.Conv1D
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, torch.nn.Embedding):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.7)
            elif isinstance(mod, (torch.nn.Linear, conv1d)):
                fan_in = mod.weight.shape[0] if isinstance(mod, conv1d) else mod.weight.shape[1]
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.3 / math.sqrt(fan_in)))
                if mod.bias is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
            elif isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm"):
                mod.weight.copy_(1.0 + torch.randn(mod.weight.shape, generator=g) * 0.1)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not model.get_input_embeddings().weight:
            h = out.weight.shape[1]
            out.weight.copy_(torch.randn(out.weight.shape, generator=g) * (3.0 / math.sqrt(h)))


def make(name, root):
    model_type, over, opts = SPECS[name]
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **over)
    cfg.use_cache = True
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval()
    rescale(model, seed)
    dtype = opts.get("dtype", "float32")
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    if tdt != torch.float32:
        # the checkpoint holds rounded weights; the golden runs them in f32
        model.to(tdt)
        model.to(torch.float32)
    d = os.path.join(root, name)
    mdir = os.path.join(d, "model")
    os.makedirs(mdir, exist_ok=True)
    save_model = model
    if tdt != torch.float32:
        save_model = model.to(tdt)
    save_model.save_pretrained(mdir, safe_serialization=not opts.get("bin", False), max_shard_size="40KB")
    model.to(torch.float32)
    if "llama3" in opts:
        # after any dtype round trip: .to() would round this buffer too
        for layer in model.model.layers:
            re = layer.self_attn.rotary_emb
            dim = re.dim
            base = 1.0 / (re.base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
            re.inv_freq = llama3_inv_freq(base, **opts["llama3"])
        with open(os.path.join(mdir, "config.json")) as f:
            c = json.load(f)
        c["rope_scaling"] = dict(rope_type="llama3", **opts["llama3"])
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
    with open(os.path.join(mdir, "config.json")) as f:
        assert json.load(f)["dtype"] == dtype, "saved dtype"

    V = cfg.vocab_size
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, V, size=n).tolist() for n in PROMPT_LENS]
    res = {}
    forced = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            mask = torch.ones_like(ids)
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            res[f"prefill_{i}"] = out.logits[0].float().numpy()
            gen = model.generate(ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=N_NEW,
                                 min_new_tokens=N_NEW, pad_token_id=0, eos_token_id=None,
                                 repetition_penalty=1.0, no_repeat_ngram_size=0)
            toks = gen[0, len(p):].tolist()
            assert len(toks) == N_NEW, (name, len(toks))
            forced.append(toks)
            # the decode steps through HF's KV cache, fed the greedy tokens
            past = out.past_key_values
            last = out.logits[0, -1]
            steps, margins = [], []
            for k, t in enumerate(toks):
                top = torch.topk(last, 2).values
                margins.append(float(top[0] - top[1]))
                mask = torch.ones(1, len(p) + k + 1, dtype=torch.long)
                o = model(input_ids=torch.tensor([[t]]), attention_mask=mask, past_key_values=past, use_cache=True)
                past = o.past_key_values
                last = o.logits[0, -1]
                steps.append(last.float().numpy())
            res[f"decode_{i}"] = np.stack(steps)
            res[f"margin_{i}"] = np.array(margins, dtype=np.float32)
    np.savez(os.path.join(d, "golden.npz"), **res)
    with open(os.path.join(d, "prompts.txt"), "w") as f:
        for p in prompts:
            f.write(" ".join(map(str, p)) + "\n")
    with open(os.path.join(d, "forced.txt"), "w") as f:
        for t in forced:
            f.write(" ".join(map(str, t)) + "\n")
    with open(os.path.join(d, "spec.json"), "w") as f:
        json.dump(dict(name=name, model_type=model_type, layers=cfg.num_hidden_layers, dtype=dtype,
                       format="bin" if opts.get("bin") else "safetensors"), f)
    return d


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    root = sys.argv[1]
    names = sys.argv[2:] or list(SPECS)
    torch.set_num_threads(1)
    for n in names:
        if n in PLAIN:
            make_plain(n, root)
            continue
        make(n, root)
        print("made", n, flush=True)


if __name__ == "__main__":
    main()
