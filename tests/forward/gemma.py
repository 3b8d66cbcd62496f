#!/usr/bin/env python3
"""Gemma 2 and Gemma 3 (text) against HF transformers 5.x.

1. The goldens of make_goldens.GEMMA_SPECS (sharded safetensors, f32 and bf16,
   5.x and 4.x config spellings) through golden.check: logits at every prompt
   position and decode step within 1e-4 of HF (f32), 32-token greedy equal to
   generate(), bit-identical for 1, 2 and 3 stages.
2. That each feature bites, so a wrong rule cannot pass:
   - soft-caps: HF's values before the cap exceed it somewhere (attention scores
     through eager_attention_forward, logits out of lm_head);
   - windows: HF with a window longer than the prompt differs after the window, not before;
   - Gemma 3's local rotary base: HF with the global base on local layers differs;
   - bf16 embedding scale: HF with sqrt(hidden) left in f32 differs from us.
3. pippy-batch itself on a Gemma 2 model with the GPT-2 tokenizer: world 1 gives
   generate()'s greedy text, and mpirun -np 3 the same bytes.
4. Refusals naming the field: attn_logit_softcapping on Gemma 3 (HF ignores it),
   use_bidirectional_attention, a non-default rotary on local layers, and the
   soft-cap keys in another family's config (Llama).
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402
import make_goldens  # noqa: E402

errors = []


def hf_model(d, dtype_scale=None, **over):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    cfg = AutoConfig.from_pretrained(os.path.join(d, "model"))
    for k, v in over.items():
        setattr(cfg, k, v)
    m = AutoModelForCausalLM.from_pretrained(os.path.join(d, "model"), config=cfg, dtype=torch.float32,
                                             attn_implementation="eager").eval()
    if dtype_scale is not None:
        e = m.model.embed_tokens
        e.embed_scale.fill_(float(e.embed_scale.to(dtype_scale)))
    return m


def prompts(d):
    return [list(map(int, l.split())) for l in open(os.path.join(d, "prompts.txt"))]


def prefill(m, p):
    import torch
    with torch.no_grad():
        return m(input_ids=torch.tensor([p])).logits[0].numpy()


def ours(d, i, V):
    return np.fromfile(os.path.join(d, "out-1", f"prefill_{i}.f32"), dtype=np.float32).reshape(-1, V)


def caps_bite(name, d):
    """HF's pre-cap attention scores and logits exceed the caps."""
    import torch
    mt = make_goldens.spec_of(name)[0]
    m = hf_model(d)
    mod = sys.modules[type(m).__module__]
    cfg = m.config
    seen = {"attn": 0.0, "final": 0.0}
    orig = mod.eager_attention_forward

    def spy(module, query, key, value, attention_mask, scaling=None, softcap=None, **kw):
        k = mod.repeat_kv(key, module.num_key_value_groups)
        s = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:   # masked keys do not count
            s = s.masked_fill(attention_mask != 0, 0.0)
        seen["attn"] = max(seen["attn"], float(s.abs().max()))
        return orig(module, query, key, value, attention_mask, scaling=scaling, softcap=softcap, **kw)

    mod.eager_attention_forward = spy
    h = m.lm_head.register_forward_hook(lambda _m, _i, o: seen.__setitem__("final", max(seen["final"],
                                                                                     float(o.abs().max()))))
    try:
        for p in prompts(d):
            prefill(m, p)
    finally:
        mod.eager_attention_forward = orig
        h.remove()
    for kind, cap in (("attn", cfg.attn_logit_softcapping if mt == "gemma2" else None),
                      ("final", cfg.final_logit_softcapping)):
        if cap is None:
            continue
        ok = seen[kind] > 1.5 * cap
        print(f"{name}: {kind} soft-cap {cap}: HF's largest value before it {seen[kind]:.3g}" + ("" if ok else " FAIL"))
        if not ok:
            errors.append(f"{name}: the {kind} soft-cap {cap} is never reached (max {seen[kind]:.3g})")


def differs_after(name, what, ref, other, w):
    """other equals ref before position w (when w) and differs after it."""
    diff = np.abs(other - ref).max(axis=1)
    before = float(diff[:w].max()) if w else 0.0
    after = float(diff[w:].max())
    ok = before < 1e-4 and after > 1e-2
    print(f"{name}: {what}: HF without it differs by {before:.2g} before position {w}, {after:.2g} after"
          + ("" if ok else " FAIL"))
    if not ok:
        errors.append(f"{name}: {what} does not bite")


def features_bite(name, d):
    import torch
    mt, over, opts = make_goldens.spec_of(name)
    tdt = {"float32": None, "bfloat16": torch.bfloat16}[opts.get("dtype", "float32")]
    m = hf_model(d, tdt)
    V = m.config.vocab_size
    p = prompts(d)[0]
    ref = prefill(m, p)
    mine = ours(d, 0, V)
    w = m.config.sliding_window
    # the window made longer than the prompt (local layers keep their own rotary)
    full = hf_model(d, tdt, sliding_window=4 * len(p))
    differs_after(name, f"window {w}", ref, prefill(full, p), w)
    if mt == "gemma3_text":
        rp = json.loads(json.dumps(m.config.rope_parameters))
        rp["sliding_attention"]["rope_theta"] = rp["full_attention"]["rope_theta"]
        g = hf_model(d, tdt, rope_parameters=rp)
        differs_after(name, "local rotary base", ref, prefill(g, p), 1)
    if tdt is not None:
        f32 = prefill(hf_model(d), p)
        e = float(np.abs(f32 - mine).max())
        ok = e > 1e-3
        print(f"{name}: embedding scale sqrt({m.config.hidden_size}) in f32 instead of bf16 would differ by {e:.3g}"
              + ("" if ok else " FAIL"))
        if not ok:
            errors.append(f"{name}: the bf16 embedding scale does not bite")


def refusals(root):
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    src = os.path.join(root, "gemma3-a", "model")
    cases = [("attn_logit_softcapping", {"attn_logit_softcapping": 50.0}),
             ("use_bidirectional_attention", {"use_bidirectional_attention": True}),
             ("rope_parameters.sliding_attention.rope_type",
              {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                   "sliding_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}}})]
    llama = {"model_type": "llama", "hidden_size": 32, "num_attention_heads": 4, "num_hidden_layers": 2,
             "intermediate_size": 64, "vocab_size": 128}
    cases += [("final_logit_softcapping", dict(llama, final_logit_softcapping=30.0)),
              ("attn_logit_softcapping", dict(llama, attn_logit_softcapping=50.0))]
    for field, change in cases:
        d = os.path.join(root, "gemma-refuse")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(src, d)
        c = json.load(open(os.path.join(d, "config.json")))
        if change.get("model_type") == "llama":   # another family with Gemma's keys
            c = {}
        c.update(change)
        json.dump(c, open(os.path.join(d, "config.json"), "w"))
        r = subprocess.run([pb, "plan", "--model", d], capture_output=True, text=True)
        ok = r.returncode != 0 and f"'{field}'" in r.stderr
        print(f"refused {field}: exit {r.returncode}: {r.stderr.strip()[:160]}" + ("" if ok else " FAIL"))
        if not ok:
            errors.append(f"a config with {field} = {change} is not refused naming it")


def cli_ranks(root):
    """pippy-batch on a Gemma 2 model with the GPT-2 tokenizer: generate()'s text, -np 3 = -np 1."""
    import torch
    from tokenizers import Tokenizer
    from transformers import AutoConfig, AutoModelForCausalLM
    d = os.path.join(root, "gemma2-cli")
    os.makedirs(d, exist_ok=True)
    subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                    os.path.join(os.environ["PB_TESTDATA"], "tokenizers", "gpt2.json.zst")], check=True)
    tok = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    torch.manual_seed(5)
    cfg = AutoConfig.for_model("gemma2", hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               num_hidden_layers=3, intermediate_size=64, vocab_size=50257,
                               max_position_embeddings=128, sliding_window=4, query_pre_attn_scalar=16,
                               attn_logit_softcapping=2.0, final_logit_softcapping=8.0, bos_token_id=50256,
                               eos_token_id=50256, pad_token_id=50256)
    m = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval()
    make_goldens.rescale(m, 5)
    m.save_pretrained(d, max_shard_size="2MB")
    texts = ["The quick brown fox jumps over", "Gemma soft-caps its logits, and", "In a hole in the ground there lived",
             "1, 2, 3, 4, 5,"]
    inp = os.path.join(d, "in.jsonl")
    with open(inp, "w") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": i, "prompt": t, "max_tokens": 32}) + "\n")
    want = []
    with torch.no_grad():
        for t in texts:
            ids = torch.tensor([tok.encode(t).ids])
            g = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=32,
                           pad_token_id=50256)
            want.append(tok.decode(g[0, ids.shape[1]:].tolist(), skip_special_tokens=True))
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    env = dict(os.environ, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    first = None
    lock = open("/tmp/.pippy-batch-launcher.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)   # as tests/net/lock.sh: one launcher test at a time
    try:
        for n in (1, 3):
            out = os.path.join(d, f"out-{n}.jsonl")
            cmd = ([pb] if n == 1 else ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(n), pb])
            cmd += ["-q", "--model", d, "--in", inp, "--out", out, "--force", "--temperature", "0",
                    "--batch-size", "3", "--threads", "1"]
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
            if r.returncode != 0:
                errors.append(f"cli -np {n}: exit {r.returncode}: {r.stderr.strip()[-1500:]}")
                continue
            data = open(out, "rb").read()
            if first is None:
                first = data
                recs = {o["id"]: o for o in map(json.loads, data.decode().splitlines())}
                for i, w in enumerate(want):
                    if recs.get(i, {}).get("text") != w:
                        errors.append(f"cli: prompt {i}: {recs.get(i)!r} but generate() gives {w!r}")
                print(f"gemma2-cli: world 1: {len(recs)} texts as generate() (e.g. {recs[0]['text'][:60]!r})")
            elif data != first:
                errors.append(f"cli: mpirun -np {n} output differs from world 1")
            else:
                print(f"gemma2-cli: mpirun -np {n}: identical to world 1")
    finally:
        lock.close()


def main():
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    build = os.environ.get("PB_BUILDDIR", ".")
    harness = os.path.join(build, "tests", "forward", "fwd-harness")
    names = sys.argv[1:] or list(make_goldens.GEMMA_SPECS)
    import torch
    torch.set_num_threads(1)
    for n in names:
        if not golden.check(n, tmp, harness, 2):
            errors.append(f"{n}: goldens")
        d = os.path.join(tmp, n)
        caps_bite(n, d)
        features_bite(n, d)
    if "gemma3-a" in names:
        refusals(tmp)
    if not sys.argv[1:]:
        cli_ranks(tmp)
    for e in errors:
        print("FAIL: " + e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
