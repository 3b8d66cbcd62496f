#!/usr/bin/env python3
"""Every family, several formats: the generator's checkpoints are read by HF
safetensors / torch.load / transformers (no missing or unexpected weights),
config.json is parsed as transformers parses it, and every stage loaded by
pb_weights_load matches the independent readers tensor by tensor."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TMP, check, compare_stage, finish, gen, state_dict, tool  # noqa: E402

import transformers as T  # noqa: E402

T.logging.set_verbosity_error()

CASES = [
    ("gpt2", ["--format", "safetensors", "--shards", "3", "--dtype", "f32"]),
    ("opt", ["--format", "bin", "--shards", "2", "--dtype", "f16"]),
    ("bloom", ["--format", "safetensors", "--dtype", "bf16"]),
    ("gpt_neo", ["--format", "bin", "--dtype", "f32", "--bin-views"]),
    ("gptj", ["--format", "safetensors", "--shards", "2", "--dtype", "f16", "--rotary-dim", "8"]),
    ("codegen", ["--format", "bin", "--shards", "3", "--dtype", "bf16", "--bin-views"]),
    ("gpt_neox", ["--format", "safetensors", "--shards", "2", "--dtype", "f32"]),
    ("llama", ["--format", "bin", "--shards", "2", "--dtype", "bf16", "--kv-heads", "2",
               "--set", 'rope_scaling={"type": "linear", "factor": 2.0}']),
    ("mistral", ["--format", "safetensors", "--shards", "2", "--dtype", "f16", "--kv-heads", "1",
                 "--eos", "[1, 3]", "--generation-config", '{"max_new_tokens": 7, "do_sample": true, "temperature": 0.5, "eos_token_id": [1, 5], '
                 '"num_beams": 3, "length_penalty": 0.75, "early_stopping": "never"}']),
    ("qwen2", ["--format", "safetensors", "--dtype", "f32", "--kv-heads", "2", "--tie", "1"]),
]

for fam, args in CASES:
    d = gen(os.path.join(TMP, fam), "--family", fam, "--layers", "4", "--hidden", "32", "--heads", "4", *args)
    sd = state_dict(d)
    # transformers loads it with nothing missing or unexpected
    try:
        m, info = T.AutoModelForCausalLM.from_pretrained(d, output_loading_info=True)
        check(not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"],
              "%s: transformers loading info %s" % (fam, info))
    except Exception as e:  # noqa: BLE001
        check(False, "%s: transformers cannot load the generated checkpoint: %s" % (fam, e))
        continue
    hf = m.config
    r = tool("config", d)
    check(r.returncode == 0, "%s: config: %s" % (fam, r.stderr))
    c = json.loads(r.stdout)
    check(c["vocab_size"] == hf.vocab_size, fam + ": vocab")
    check(c["hidden_size"] == hf.hidden_size, fam + ": hidden")
    check(c["n_layers"] == hf.num_hidden_layers, fam + ": layers")
    check(c["n_heads"] == hf.num_attention_heads, fam + ": heads")
    check(c["tie_word_embeddings"] == bool(hf.tie_word_embeddings), fam + ": tie")
    kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    check(c["n_kv_heads"] == kv, fam + ": kv heads")
    # MLP inner size as the HF module has it
    mods = dict(m.named_modules())
    inner = {"gpt2": lambda: m.transformer.h[0].mlp.c_fc.nf,
             "opt": lambda: m.model.decoder.layers[0].fc1.out_features,
             "bloom": lambda: m.transformer.h[0].mlp.dense_h_to_4h.out_features,
             "gpt_neo": lambda: m.transformer.h[0].mlp.c_fc.out_features,
             "gptj": lambda: m.transformer.h[0].mlp.fc_in.out_features,
             "codegen": lambda: m.transformer.h[0].mlp.fc_in.out_features,
             "gpt_neox": lambda: m.gpt_neox.layers[0].mlp.dense_h_to_4h.out_features}.get(
                 fam, lambda: m.model.layers[0].mlp.gate_proj.out_features)()
    check(c["intermediate_size"] == inner, "%s: intermediate %d vs %d" % (fam, c["intermediate_size"], inner))
    if fam == "gpt_neo":
        check(c["layer_local"] == [t == "local" for t in hf.attention_layers], fam + ": local layers")
    if fam in ("gptj", "codegen"):
        check(c["rotary_dim"] == hf.rotary_dim and c["rope_style"] == 0, fam + ": rotary")
    if fam == "gpt_neox":
        pct = hf.rope_parameters["partial_rotary_factor"]  # transformers 5.x: rotary_pct lives here
        check(c["rotary_dim"] == int(hf.hidden_size // hf.num_attention_heads * pct), fam + ": rotary_pct")
        check(c["residual"] == 2, fam + ": parallel residual")
    if fam == "llama":
        check(c["rope_scaling"] == 1 and c["rope_factor"] == hf.rope_parameters["factor"], fam + ": linear scaling")
    if fam in ("gpt_neox", "llama", "mistral", "qwen2"):
        check(c["rope_theta"] == hf.rope_parameters["rope_theta"], fam + ": rope_theta")
    if fam == "mistral":
        check(c["eos"] == [1, 3, 5], "%s: eos merged %s" % (fam, c["eos"]))
        check(c["gen"] == {"max_new_tokens": 7, "temperature": 0.5, "do_sample": True, "num_beams": 3,
                           "length_penalty": 0.75, "early_stopping": "never"}, "%s: gen %s" % (fam, c["gen"]))
        check(c["sliding_window"] == hf.sliding_window and all(c["layer_local"]), fam + ": sliding window")
    if fam == "opt":
        check(c["pos_offset"] == 2 and c["act"] == 2, fam + ": opt positions/act")
    # every stage of 1, 2 and 3 ranks matches the independent readers
    for ranks in (1, 2, 3):
        seen = compare_stage(d, ranks, sd, "%s ranks=%d" % (fam, ranks))
        want = {k for k in sd}
        check(seen == want, "%s ranks=%d: loaded %d of %d tensors: missing %s" % (fam, ranks, len(seen), len(want),
                                                                                  sorted(want - seen)[:4]))
finish()
