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
make(name, root, kv="f16") writes OUTDIR/NAME-kvf16 instead: HF with every
key and value rounded to f16 (nearest even) as its KV cache takes them in,
the reference for --kv-dtype f16.
The goldens come from HF loading the saved folder back (in f32), so they also
check how config.json is read: transformers 5.x's rope_parameters, or the 4.x
keys (rope_theta, rope_scaling, rotary_pct) for the specs marked legacy_rope.
"""
import copy
import json
import math
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoConfig, AutoModelForCausalLM

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "ckpt"))
from common import save_bin  # noqa: E402

# transformers 5.x renamed the KV cache argument and output field past_key_values -> cache
CACHE = "cache" if "cache" in transformers.modeling_outputs.CausalLMOutputWithPast.__dataclass_fields__ \
    else "past_key_values"

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
                                vocab_size=128, max_position_embeddings=64,
                                rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                 "partial_rotary_factor": 0.25}), dict(legacy_rope=True)),
    "neox-b": ("gpt_neox", dict(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, intermediate_size=80,
                                vocab_size=110, max_position_embeddings=64, use_parallel_residual=False,
                                rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 500.0,
                                                 "partial_rotary_factor": 1.0},
                                tie_word_embeddings=True), dict(bin=True)),
    "llama-a": ("llama", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                              intermediate_size=64, vocab_size=128, max_position_embeddings=64), dict()),
    "llama-b": ("llama", dict(hidden_size=30, num_attention_heads=3, num_key_value_heads=1, num_hidden_layers=3,
                              intermediate_size=50, vocab_size=150, max_position_embeddings=64, attention_bias=True,
                              tie_word_embeddings=True, rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 20000.0}),
                dict(bin=True, legacy_rope=True)),
    "llama3-rope": ("llama", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
                                  intermediate_size=48, vocab_size=128, max_position_embeddings=64,
                                  rope_parameters={"rope_type": "llama3", "rope_theta": 5000.0, "factor": 8.0,
                                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                   "original_max_position_embeddings": 64}),
                    dict(dtype="bfloat16")),
    "mistral-a": ("mistral", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                  intermediate_size=64, vocab_size=128, max_position_embeddings=64, sliding_window=6),
                  dict()),
    "qwen2-a": ("qwen2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                              intermediate_size=64, vocab_size=128, max_position_embeddings=64, tie_word_embeddings=True),
                dict(bin=True)),
}

# Sliding / local windows as current HF has them: a query at i sees keys
# i - W < j <= i (W keys). Prompts 3-4x the window, decode well past it, prompt 1
# prefilled in chunks smaller than the window, 1, 2 and 3 stages (tests/forward/windows.py).
_WIN = dict(prompt_lens=(17, 19, 14), n_new=24, stages=(1, 2, 3), chunk=3)
WINDOW_SPECS = {
    # every layer windowed
    "mistral-win": ("mistral", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
                                    intermediate_size=64, vocab_size=128, max_position_embeddings=64, sliding_window=5),
                    dict(_WIN)),
    # Qwen2Config: layers from max_window_layers on slide when use_sliding_window
    "qwen2-win": ("qwen2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4,
                                intermediate_size=64, vocab_size=128, max_position_embeddings=64,
                                use_sliding_window=True, sliding_window=4, max_window_layers=1), dict(_WIN)),
    # explicit layer_types win over max_window_layers
    "qwen2-win-types": ("qwen2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=3,
                                      intermediate_size=64, vocab_size=128, max_position_embeddings=64,
                                      use_sliding_window=True, sliding_window=6, max_window_layers=0,
                                      layer_types=["sliding_attention", "full_attention", "sliding_attention"]),
                        dict(_WIN, bin=True)),
    # use_sliding_window false: no window anywhere, whatever sliding_window says
    "qwen2-win-off": ("qwen2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                    intermediate_size=64, vocab_size=128, max_position_embeddings=64,
                                    use_sliding_window=False, sliding_window=3, max_window_layers=0),
                      dict(_WIN, stages=(1, 2))),
    # GPT-Neo local layers: window_size keys (its own bias buffer)
    "gpt-neo-win": ("gpt_neo", dict(hidden_size=32, num_heads=4, num_layers=3, vocab_size=128, max_position_embeddings=64,
                                    attention_types=[[["local", "global", "local"], 1]], window_size=5,
                                    intermediate_size=64), dict(_WIN)),
}

# Mixture of experts (tests/forward/moe.py): many experts against few tokens, so
# that some get none; sharded safetensors in f32 and bf16; windows, top-k
# renormalisation on and off, dense layers between sparse ones.
MOE_SPECS = {
    "mixtral-a": ("mixtral", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                                  intermediate_size=48, vocab_size=128, max_position_embeddings=64,
                                  num_local_experts=16, num_experts_per_tok=2), dict()),
    "mixtral-b": ("mixtral", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=3,
                                  intermediate_size=40, vocab_size=150, max_position_embeddings=64, sliding_window=5,
                                  num_local_experts=12, num_experts_per_tok=3, tie_word_embeddings=True),
                  dict(dtype="bfloat16", prompt_lens=(5, 17, 11))),
    # explicit head_dim != hidden / heads; layers 0 and 2 dense (decoder_sparse_step 2); no top-k renormalisation
    "qwen3-moe-a": ("qwen3_moe", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                      num_hidden_layers=3, intermediate_size=64, moe_intermediate_size=24,
                                      vocab_size=128, max_position_embeddings=64, num_experts=16,
                                      num_experts_per_tok=4, norm_topk_prob=False, decoder_sparse_step=2), dict()),
    # renormalised top-k, mlp_only_layers, a window on every layer, tied embeddings, bf16
    "qwen3-moe-b": ("qwen3_moe", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=1, num_hidden_layers=3,
                                      intermediate_size=48, moe_intermediate_size=20, vocab_size=150,
                                      max_position_embeddings=64, num_experts=12, num_experts_per_tok=2,
                                      norm_topk_prob=True, mlp_only_layers=[1], use_sliding_window=True,
                                      sliding_window=5, tie_word_embeddings=True),
                    dict(dtype="bfloat16", prompt_lens=(5, 17, 11))),
}

# Qwen3 and Phi-3 (tests/forward/qwen3.py, tests/forward/phi3.py): sharded
# safetensors, f32 and bf16. Qwen3: head_dim apart from hidden / heads, q/k norms,
# tied and untied, windows from max_window_layers. Phi-3: fused qkv_proj (GQA) and
# gate_up_proj, partial rotary, LongRoPE with original_max_position_embeddings 8
# so prompts 1-2 and every decode past position 8 use the long factors (prompt 1's
# two prefill chunks both end past 8, as HF's one-call prefill).
_LF = np.random.default_rng(7)
NEW_SPECS = {
    "qwen3-a": ("qwen3", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                              num_hidden_layers=2, intermediate_size=64, vocab_size=128, max_position_embeddings=64,
                              tie_word_embeddings=False, rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
                dict()),
    "qwen3-b": ("qwen3", dict(hidden_size=48, num_attention_heads=4, num_key_value_heads=1, head_dim=8,
                              num_hidden_layers=3, intermediate_size=40, vocab_size=150, max_position_embeddings=64,
                              tie_word_embeddings=True, attention_bias=True, use_sliding_window=True,
                              sliding_window=5, max_window_layers=1),
                dict(dtype="bfloat16", legacy_rope=True, prompt_lens=(5, 17, 11))),
    "phi3-a": ("phi3", dict(pad_token_id=0, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                            intermediate_size=48, vocab_size=128, max_position_embeddings=64,
                            original_max_position_embeddings=8,
                            rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                             "partial_rotary_factor": 0.75,
                                             "short_factor": (1 + 0.5 * _LF.random(6)).tolist(),
                                             "long_factor": (1 + 7 * _LF.random(6)).tolist()}),
               dict(prompt_lens=(5, 20, 12), reencode_after=8)),
    "phi3-b": ("phi3", dict(pad_token_id=0, hidden_size=48, num_attention_heads=6, num_key_value_heads=3, num_hidden_layers=3,
                            intermediate_size=40, vocab_size=150, max_position_embeddings=64,
                            original_max_position_embeddings=8, sliding_window=7, tie_word_embeddings=True,
                            rope_parameters={"rope_type": "longrope", "rope_theta": 500.0,
                                             "short_factor": (1 + 0.5 * _LF.random(4)).tolist(),
                                             "long_factor": (1 + 7 * _LF.random(4)).tolist()}),
               dict(dtype="bfloat16", legacy_rope=True, prompt_lens=(6, 18, 13), reencode_after=8, chunk=3)),
    # no rope scaling, one-token prompt included
    "phi3-c": ("phi3", dict(pad_token_id=0, hidden_size=32, num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=2,
                            intermediate_size=64, vocab_size=100, max_position_embeddings=64), dict()),
}

# Gemma 2 and Gemma 3 text (tests/forward/gemma.py): prompts 3x the window, 32 greedy tokens,
# small soft-caps that the rescaled weights reach, explicit head_dim != hidden / heads,
# query_pre_attn_scalar != head_dim. The bf16 ones have hidden sizes whose sqrt is not a
# bf16 number (the embedding scale is cast to the embedding's dtype).
_GEM = dict(prompt_lens=(17, 19, 14), n_new=32, stages=(1, 2, 3), chunk=3)
GEMMA_SPECS = {
    "gemma2-a": ("gemma2", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                num_hidden_layers=3, intermediate_size=64, vocab_size=128, max_position_embeddings=64,
                                sliding_window=5, query_pre_attn_scalar=20, attn_logit_softcapping=2.0,
                                final_logit_softcapping=4.0), dict(_GEM)),
    "gemma2-b": ("gemma2", dict(hidden_size=48, num_attention_heads=3, num_key_value_heads=1, head_dim=24,
                                num_hidden_layers=4, intermediate_size=80, vocab_size=150, max_position_embeddings=64,
                                sliding_window=6, query_pre_attn_scalar=16, attn_logit_softcapping=3.0,
                                final_logit_softcapping=6.0, tie_word_embeddings=False,
                                layer_types=["full_attention", "sliding_attention", "sliding_attention",
                                             "full_attention"],
                                rope_parameters={"rope_type": "default", "rope_theta": 2000.0}),
                 dict(_GEM, dtype="bfloat16", legacy_rope=True)),
    "gemma3-a": ("gemma3_text", dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                                     num_hidden_layers=4, intermediate_size=64, vocab_size=128,
                                     max_position_embeddings=64, sliding_window=5, query_pre_attn_scalar=12,
                                     layer_types=["sliding_attention", "sliding_attention", "full_attention",
                                                  "sliding_attention"],
                                     rope_parameters={"full_attention": {"rope_type": "linear", "factor": 2.0,
                                                                         "rope_theta": 5000.0},
                                                      "sliding_attention": {"rope_type": "default",
                                                                            "rope_theta": 100.0}}), dict(_GEM)),
    # config.json as 4.x wrote it: sliding_window_pattern, rope_theta, rope_local_base_freq, rope_scaling;
    # final_logit_softcapping set (Gemma 3's modeling code applies it; it ignores attn_logit_softcapping,
    # which pippy-batch refuses)
    "gemma3-b": ("gemma3_text", dict(hidden_size=40, num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                     num_hidden_layers=6, intermediate_size=72, vocab_size=140,
                                     max_position_embeddings=64, sliding_window=4, query_pre_attn_scalar=24,
                                     sliding_window_pattern=3, final_logit_softcapping=5.0,
                                     rope_parameters={"full_attention": {"rope_type": "linear", "factor": 4.0,
                                                                         "rope_theta": 30000.0},
                                                      "sliding_attention": {"rope_type": "default",
                                                                            "rope_theta": 500.0}}),
                 dict(_GEM, dtype="bfloat16", legacy_rope=True, stages=(1, 3))),
}


# Larger models for memory and speed checks: saved only (no goldens).
PLAIN = {
    "llama-mem": ("llama", dict(hidden_size=512, num_attention_heads=8, num_key_value_heads=4, num_hidden_layers=4,
                                intermediate_size=1376, vocab_size=8192, max_position_embeddings=1024)),
}


def spec_of(name):
    """(model_type, config overrides, options) of any golden spec."""
    for table in (SPECS, WINDOW_SPECS, MOE_SPECS, NEW_SPECS, GEMMA_SPECS):
        if name in table:
            return table[name]
    raise KeyError(name)


def make_plain(name, root):
    model_type, over = PLAIN[name]
    torch.manual_seed(1)
    cfg = AutoConfig.for_model(model_type, **over)
    model = AutoModelForCausalLM.from_config(cfg)
    d = os.path.join(root, name, "model")
    os.makedirs(d, exist_ok=True)
    model.save_pretrained(d, max_shard_size="40MB")
    return d


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
            elif type(mod).__name__.endswith("TopKRouter"):
                # a router far from uniform, so top-k choices are clear
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (3.0 / math.sqrt(mod.weight.shape[1])))
            elif type(mod).__name__.endswith("Experts") and hasattr(mod, "gate_up_proj"):
                for p in (mod.gate_up_proj, mod.down_proj):   # [E, out, in]
                    p.copy_(torch.randn(p.shape, generator=g) * (1.3 / math.sqrt(p.shape[2])))
            elif isinstance(mod, torch.nn.LayerNorm) or type(mod).__name__.endswith("RMSNorm"):
                mod.weight.copy_(1.0 + torch.randn(mod.weight.shape, generator=g) * 0.1)
                if getattr(mod, "bias", None) is not None:
                    mod.bias.copy_(torch.randn(mod.bias.shape, generator=g) * 0.1)
        out = model.get_output_embeddings()
        if out is not None and out.weight is not model.get_input_embeddings().weight:
            h = out.weight.shape[1]
            out.weight.copy_(torch.randn(out.weight.shape, generator=g) * (3.0 / math.sqrt(h)))


class kv_rounded:
    """While active, every key and value state HF's caches take in is rounded
    to `dtype` and back to f32 first (so attention, prefill included, sees
    the rounded ones), as pippy-batch's KV cache of that dtype keeps them."""

    def __init__(self, dtype):
        self.dtype = dtype
        self.orig = transformers.cache_utils.Cache.update

    def __enter__(self):
        orig, dt = self.orig, self.dtype

        def update(cache, k, v, layer_idx, *a, **kw):
            return orig(cache, k.to(dt).to(k.dtype), v.to(dt).to(v.dtype), layer_idx, *a, **kw)
        transformers.cache_utils.Cache.update = update
        return self

    def __exit__(self, *exc):
        transformers.cache_utils.Cache.update = self.orig


def make(name, root, kv=None):
    if kv:
        with kv_rounded({"f16": torch.float16, "bf16": torch.bfloat16}[kv]):
            return make_in(name, os.path.join(root, f"{name}-kv{kv}"))
    return make_in(name, os.path.join(root, name))


def make_in(name, d):
    model_type, over, opts = spec_of(name)
    n_new = opts.get("n_new", N_NEW)
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    cfg = AutoConfig.for_model(model_type, **over)
    cfg.use_cache = True
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
    model.eval()
    rescale(model, seed)
    dtype = opts.get("dtype", "float32")
    tdt = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]
    mdir = os.path.join(d, "model")
    os.makedirs(mdir, exist_ok=True)
    save_model = copy.deepcopy(model).to(tdt) if tdt != torch.float32 else model
    if opts.get("bin"):
        save_bin(save_model, mdir, max_shard_size="40KB")   # as transformers 4.x wrote .bin
    else:
        save_model.save_pretrained(mdir, max_shard_size="40KB")
    with open(os.path.join(mdir, "config.json")) as f:
        c = json.load(f)
    assert c["dtype"] == dtype, "saved dtype"
    if opts.get("legacy_rope"):
        # config.json as transformers 4.x wrote it (most checkpoints on the Hub still are)
        rp = c.pop("rope_parameters")
        if model_type == "gpt_neox":
            c["rotary_emb_base"] = rp.pop("rope_theta")
            c["rotary_pct"] = rp.pop("partial_rotary_factor")
        elif model_type == "gemma3_text":
            c["rope_local_base_freq"] = rp.pop("sliding_attention")["rope_theta"]
            rp = rp.pop("full_attention")
            c["rope_theta"] = rp.pop("rope_theta")
            if "sliding_window_pattern" in over:
                del c["layer_types"]
                c["sliding_window_pattern"] = over["sliding_window_pattern"]
            if rp.get("rope_type", "default") != "default":
                c["rope_scaling"] = rp   # the Hub's Gemma 3 configs: {"factor": 8.0, "rope_type": "linear"}
                rp = {}
        else:
            c["rope_theta"] = rp.pop("rope_theta")
        if rp.get("rope_type", "default") != "default":
            c["rope_scaling"] = dict(rp, type=rp.pop("rope_type"))
        with open(os.path.join(mdir, "config.json"), "w") as f:
            json.dump(c, f, indent=2)
    # The golden is HF reading the saved folder (config.json as written), in f32 on the
    # checkpoint's (maybe rounded) weights.
    model, info = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32, attn_implementation="eager",
                                                       output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), (name, info)
    model.eval()
    scale = getattr(getattr(model, "model", None), "embed_tokens", None)
    if tdt != torch.float32 and scale is not None and hasattr(scale, "embed_scale"):
        # Gemma: HF casts sqrt(hidden) to the embedding's dtype; the checkpoint's dtype when run as stored
        scale.embed_scale.fill_(float(scale.embed_scale.to(tdt)))

    V = cfg.vocab_size
    rng = np.random.default_rng(seed)
    prompts = [rng.integers(0, V, size=n).tolist() for n in opts.get("prompt_lens", PROMPT_LENS)]
    res = {}
    forced = []
    with torch.no_grad():
        for i, p in enumerate(prompts):
            ids = torch.tensor([p])
            mask = torch.ones_like(ids)
            out = model(input_ids=ids, attention_mask=mask, use_cache=True)
            res[f"prefill_{i}"] = out.logits[0].float().numpy()
            gen = model.generate(ids, attention_mask=mask, do_sample=False, num_beams=1, max_new_tokens=n_new,
                                 min_new_tokens=n_new, pad_token_id=0, eos_token_id=None,
                                 repetition_penalty=1.0, no_repeat_ngram_size=0)
            toks = gen[0, len(p):].tolist()
            assert len(toks) == n_new, (name, len(toks))
            forced.append(toks)
            # the decode steps through HF's KV cache, fed the greedy tokens
            past = getattr(out, CACHE)
            last = out.logits[0, -1]
            steps, margins = [], []
            for k, t in enumerate(toks):
                top = torch.topk(last, 2).values
                margins.append(float(top[0] - top[1]))
                mask = torch.ones(1, len(p) + k + 1, dtype=torch.long)
                o = model(input_ids=torch.tensor([[t]]), attention_mask=mask, use_cache=True, **{CACHE: past})
                past = getattr(o, CACHE)
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
    names = sys.argv[2:] or list(SPECS) + list(WINDOW_SPECS) + list(MOE_SPECS) + list(NEW_SPECS) + list(GEMMA_SPECS)
    torch.set_num_threads(1)
    for n in names:
        if n in PLAIN:
            make_plain(n, root)
            continue
        make(n, root)
        print("made", n, flush=True)


if __name__ == "__main__":
    main()
