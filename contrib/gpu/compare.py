#!/usr/bin/env python3
"""Helpers of contrib/gpu/check.sh (python3 with the standard library; the
`hf` command also needs torch + transformers, `texts --tokenizer` tokenizers).

  compare.py texts A.jsonl B.jsonl [--tokenizer tokenizer.json] [--label L]
      Compare two pippy-batch outputs record by record: identical texts, and
      the token agreement (the common prefix of the re-tokenized completions
      over their length). One JSON line on stdout; exit 0 when all identical.

  compare.py hf-model DIR --dtype f32|bf16 --tokenizer T [--seed S]
      A small Llama from transformers' from_config with clear greedy margins,
      saved by save_pretrained in DIR (tokenizer copied beside it).

  compare.py hf-generate DIR IN.jsonl OUT.jsonl --dtype f32|bf16 [--device cuda]
      transformers generate() (greedy, KV cache, all-ones attention mask) of
      each record's prompt and max_tokens, written as pippy-batch writes
      records ({"text": ...}), for `texts`.
"""
import argparse
import json
import math
import os
import shutil
import sys


def load(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def cmd_texts(a):
    A, B = load(a.a), load(a.b)
    enc = None
    if a.tokenizer:
        try:
            from tokenizers import Tokenizer
            t = Tokenizer.from_file(a.tokenizer)
            enc = lambda s: t.encode(s, add_special_tokens=False).ids  # noqa: E731
        except Exception as e:  # agreement by characters instead
            print(f"compare.py: tokenizers unavailable ({e}); agreement counted in characters", file=sys.stderr)
    same = 0
    agree = total = 0
    first = None
    for i, (x, y) in enumerate(zip(A, B)):
        tx, ty = x.get("text", ""), y.get("text", "")
        if tx == ty:
            same += 1
        elif first is None:
            first = {"record": i, "a": tx[:80], "b": ty[:80]}
        ix, iy = (enc(tx), enc(ty)) if enc else (list(tx), list(ty))
        k = 0
        while k < min(len(ix), len(iy)) and ix[k] == iy[k]:
            k += 1
        agree += k
        total += max(len(ix), len(iy))
    n = max(len(A), len(B))
    r = {"label": a.label, "records": n, "identical": same, "token_agreement": round(agree / total, 4) if total else 1.0,
         "unit": "tokens" if enc else "characters"}
    if len(A) != len(B):
        r["error"] = f"{len(A)} vs {len(B)} records"
    if first:
        r["first_difference"] = first
    print(json.dumps(r))
    return 0 if same == n and len(A) == len(B) else 1


def cmd_hf_model(a):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(a.seed)
    cfg = AutoConfig.for_model("llama", hidden_size=256, num_attention_heads=8, num_key_value_heads=2,
                               num_hidden_layers=4, intermediate_size=512, vocab_size=32000,
                               max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    m = AutoModelForCausalLM.from_config(cfg)
    g = torch.Generator().manual_seed(a.seed)
    with torch.no_grad():  # unit-ish gain, so greedy choices are clear (as tests/forward/make_goldens.py)
        for mod in m.modules():
            if isinstance(mod, torch.nn.Embedding):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * 0.7)
            elif isinstance(mod, torch.nn.Linear):
                mod.weight.copy_(torch.randn(mod.weight.shape, generator=g) * (1.3 / math.sqrt(mod.weight.shape[1])))
    if a.dtype == "bf16":
        m = m.to(torch.bfloat16)
    m.save_pretrained(a.dir)
    shutil.copyfile(a.tokenizer, os.path.join(a.dir, "tokenizer.json"))
    return 0


def cmd_hf_generate(a):
    import torch
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast
    dt = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    torch.backends.cuda.matmul.allow_tf32 = False
    m = AutoModelForCausalLM.from_pretrained(a.dir, dtype=dt).to(a.device).eval()
    tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(a.dir, "tokenizer.json"))
    with open(a.out, "w") as f:
        for r in load(a.inp):
            ids = tok(r["prompt"], return_tensors="pt").input_ids.to(a.device)
            n = int(r.get("max_tokens", 16))
            with torch.no_grad():
                out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                                 do_sample=False, eos_token_id=None, pad_token_id=0)
            seq = out[0].tolist()
            text = tok.decode(seq)[len(tok.decode(ids[0].tolist())):]
            f.write(json.dumps({"text": text, "completion_tokens": len(seq) - ids.shape[1]}) + "\n")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("texts")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--tokenizer")
    p.add_argument("--label", default="")
    p = sub.add_parser("hf-model")
    p.add_argument("dir")
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--seed", type=int, default=5)
    p = sub.add_parser("hf-generate")
    p.add_argument("dir")
    p.add_argument("inp")
    p.add_argument("out")
    p.add_argument("--dtype", choices=("f32", "bf16"), default="f32")
    p.add_argument("--device", default="cuda")
    a = ap.parse_args()
    return {"texts": cmd_texts, "hf-model": cmd_hf_model, "hf-generate": cmd_hf_generate}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
