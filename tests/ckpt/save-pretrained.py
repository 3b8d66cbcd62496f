#!/usr/bin/env python3
"""Checkpoints written by transformers' own save_pretrained (sharded
safetensors; transformers 5.x writes no .bin) and sharded .bin files as
transformers 4.x wrote them (common.save_bin): every stage loads and matches
the state dict."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import TMP, check, compare_stage, finish, save_bin, state_dict, tool  # noqa: E402

import torch  # noqa: E402
import transformers as T  # noqa: E402

T.logging.set_verbosity_error()
torch.manual_seed(0)
CFGS = {
    "gpt2": T.GPT2Config(n_embd=32, n_layer=3, n_head=4, vocab_size=96, n_positions=64),
    "opt": T.OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=3, num_attention_heads=4, vocab_size=96,
                       max_position_embeddings=64, word_embed_proj_dim=16),
    "gpt_neox": T.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
                                vocab_size=96, max_position_embeddings=64),
    "llama": T.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=4,
                           num_key_value_heads=2, vocab_size=96, max_position_embeddings=64),
    "bloom": T.BloomConfig(hidden_size=32, n_layer=3, n_head=4, vocab_size=96),
}
for fam, cfg in CFGS.items():
    m = T.AutoModelForCausalLM.from_config(cfg)
    for safe in (True, False):
        d = os.path.join(TMP, "hf-%s-%s" % (fam, "st" if safe else "bin"))
        if safe:
            m.save_pretrained(d, max_shard_size="8KB")
        else:
            save_bin(m, d, max_shard_size="8KB")
        check(any(f.endswith(".safetensors" if safe else ".bin") for f in os.listdir(d)), fam + ": format")
        r = tool("config", d)   # transformers 5.x writes "dtype" (4.x "torch_dtype")
        check(r.returncode == 0 and json.loads(r.stdout)["torch_dtype"] == str(m.dtype).split(".")[-1],
              "%s: dtype from config.json: %s" % (fam, r.stderr))
        sd = state_dict(d)
        check(len([f for f in os.listdir(d) if f.endswith((".bin", ".safetensors"))]) > 2, fam + ": not sharded")
        for ranks in (1, 2, 3):
            seen = compare_stage(d, ranks, sd, "%s %s ranks=%d" % (fam, "st" if safe else "bin", ranks))
            # a tied LM head is the embedding: .bin files repeat it, the loader need not read it
            want = set(sd) - ({"lm_head.weight"} if cfg.tie_word_embeddings else set())
            check(seen == want, "%s ranks=%d: loaded %d of %d: %s" % (fam, ranks, len(seen), len(want), sorted(want - seen)))
finish()
