#!/usr/bin/env python3
"""Embeddings (--task embed) of every kind of final norm and block against HF transformers 5.x's base model:
tiny models of eight families (GPT-2 and OPT's LayerNorm, BLOOM's embedding norm and ALiBi, GPT-NeoX's parallel
residual, Llama, Qwen2's biases, Qwen3's q/k norms and Qwen3-Embedding's family, Gemma 2's scaled embeddings,
soft-caps and sandwich norms) made by from_config + save_pretrained, each input given as token ids (inputs of 1
to 40 tokens, chunks of 16), pooled last, mean and cls without normalizing: each within 1e-4 (relative to the
vector's largest) of the base model's last_hidden_state pooled in f64."""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

FAMILIES = {  # model_type -> config
    "gpt2": dict(n_embd=32, n_layer=2, n_head=4, n_positions=64),
    "opt": dict(hidden_size=32, ffn_dim=64, num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=64,
                word_embed_proj_dim=32),
    "bloom": dict(hidden_size=32, n_head=4, n_layer=2),
    "gpt_neox": dict(hidden_size=32, num_attention_heads=4, num_hidden_layers=2, intermediate_size=64,
                     max_position_embeddings=64, rotary_pct=0.5),
    "llama": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                  intermediate_size=48, max_position_embeddings=64),
    "qwen2": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=2,
                  intermediate_size=48, max_position_embeddings=64),
    "qwen3": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_hidden_layers=2,
                  intermediate_size=40, max_position_embeddings=64, tie_word_embeddings=True),
    "gemma2": dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_hidden_layers=2,
                   intermediate_size=48, max_position_embeddings=64, sliding_window=8),
}
INPUTS = [[5], [17, 300, 9000, 12], list(range(100, 140)), [31999, 2, 7, 7, 7, 1000, 20000, 3, 4, 5, 6, 8, 9, 10, 11,
                                                              12, 13, 14, 15]]


def main():
    import numpy as np
    import torch
    from make_goldens import rescale
    from transformers import AutoConfig, AutoModelForCausalLM

    pb = os.environ["PIPPY_BATCH"]
    tmp = os.environ["PB_TEST_TMP"]
    failures = 0
    inp = os.path.join(tmp, "embed-in.jsonl")
    with open(inp, "w") as f:
        f.writelines(json.dumps({"id": i, "input": ids}) + "\n" for i, ids in enumerate(INPUTS))
    for fam, over in FAMILIES.items():
        d = os.path.join(tmp, "embed-" + fam)
        torch.manual_seed(7)
        cfg = AutoConfig.for_model(fam, vocab_size=32000, **over)
        m = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager")
        rescale(m, 7)
        m.save_pretrained(d, max_shard_size="2MB")
        subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                        os.path.join(os.environ["PB_TESTDATA"], "tokenizers", "llama2.json.zst")], check=True)
        m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, attn_implementation="eager").eval()
        worst = 0.0
        for pooling in ("last", "mean", "cls"):
            p = subprocess.run([pb, "-q", "--model", d, "--task", "embed", "--pooling", pooling, "--no-normalize",
                                "--max-batch-tokens", "16", "--in", inp, "--out", "-"], capture_output=True,
                               timeout=300)
            if p.returncode:
                print(f"FAIL {fam} {pooling}: exit {p.returncode}: {p.stderr.decode()[-800:]}")
                failures += 1
                continue
            got = {r["id"]: r for r in map(json.loads, p.stdout.decode().splitlines())}
            for i, ids in enumerate(INPUTS):
                with torch.no_grad():
                    h = m.base_model(torch.tensor([ids])).last_hidden_state[0].double()
                want = (h[-1] if pooling == "last" else h.mean(0) if pooling == "mean" else h[0]).numpy()
                e = np.array(got.get(i, {}).get("embedding", []), dtype=np.float64)
                diff = float(np.max(np.abs(e - want)) / max(1.0, float(np.max(np.abs(want))))) \
                    if e.shape == want.shape else float("inf")
                worst = max(worst, diff)
                if diff > 1e-4 or got[i].get("prompt_tokens") != len(ids):
                    print(f"FAIL {fam} {pooling} input {i}: difference {diff:.3g}, prompt_tokens "
                          f"{got[i].get('prompt_tokens')} of {len(ids)}")
                    failures += 1
        print(f"{fam}: last, mean and cls within {worst:.2g} of HF's base model")
    if failures:
        sys.exit(f"FAIL: {failures}")
    print("ok")


main()
