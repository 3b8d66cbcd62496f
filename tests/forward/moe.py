#!/usr/bin/env python3
"""Mixture-of-experts families (Mixtral, Qwen3-MoE) against HF transformers 5.x.

For each MOE_SPECS model of make_goldens.py:
  - golden.check: logits at every prompt position and decode step within 1e-4
    of HF's (f32), greedy continuations equal to generate(), 1 stage and 2-3
    stages bit-identical;
  - HF's own router leaves some experts without a token in every sparse layer
    for prompt 0 (so the run above had experts with no rows);
  - batch invariance: a sequence alone and inside a batch of 16 gives
    bit-identical logits (fwd-harness invariance), 1 and 2 threads;
  - `pippy-batch plan` counts every expert: its total parameter bytes equal
    the checkpoint's tensor bytes, and the stages' weight memory covers them;
  - the plan's memory estimate of a stage with experts is within 10% of the
    running stage's peak RSS (fwd-harness memory);
  - configs and checkpoints the experts code cannot run are refused, naming
    the field (top-k above the expert count) or the layout (fused 3-D experts).
"""
import json
import os
import subprocess
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402
import make_goldens  # noqa: E402


def unused_experts(model_dir, prompt):
    """Per sparse layer, the experts HF's router gives none of the prompt's tokens."""
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    m.eval()
    cfg = m.config
    n_exp = getattr(cfg, "num_local_experts", None) or cfg.num_experts
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out = m(input_ids=ids, attention_mask=torch.ones_like(ids), output_router_logits=True)
    res = []
    for logits in out.router_logits:
        probs = torch.softmax(logits.float(), dim=-1)
        top = torch.topk(probs, cfg.num_experts_per_tok, dim=-1).indices
        used = set(top.flatten().tolist())
        res.append(sorted(set(range(n_exp)) - used))
    return res


def safetensors_bytes(model_dir):
    total = 0
    for f in os.listdir(model_dir):
        if f.endswith(".safetensors"):
            with open(os.path.join(model_dir, f), "rb") as fh:
                n = int.from_bytes(fh.read(8), "little")
                hdr = json.loads(fh.read(n))
            total += sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in hdr.items() if k != "__metadata__")
    return total


def main():
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    build = os.environ.get("PB_BUILDDIR", ".")
    harness = os.path.join(build, "tests", "forward", "fwd-harness")
    pb = os.environ.get("PIPPY_BATCH") or os.path.join(build, "pippy-batch")
    names = sys.argv[1:] or list(make_goldens.MOE_SPECS)
    torch.set_num_threads(1)
    ok = True
    for name in names:
        ok &= golden.check(name, tmp, harness, 2)
        d = os.path.join(tmp, name)
        model = os.path.join(d, "model")
        prompt0 = list(map(int, open(os.path.join(d, "prompts.txt")).readline().split()))
        un = unused_experts(model, prompt0)
        if not un or not all(un):
            print(f"FAIL {name}: HF's router uses every expert on prompt 0 in some layer: {un}")
            ok = False
        else:
            print(f"{name}: experts without a token of prompt 0, per sparse layer: {un}")
        for t in (1, 2):
            r = subprocess.run([harness, "invariance", model, str(t)], capture_output=True, text=True)
            line = (r.stdout + r.stderr).strip()
            print(f"{name} invariance threads={t}: {line}")
            if r.returncode != 0:
                print(f"FAIL {name}: batch invariance")
                ok = False
        with open(os.path.join(d, "spec.json")) as f:
            layers = json.load(f)["layers"]
        for ranks in sorted({1, min(3, layers)}):
            r = subprocess.run([pb, "plan", "--model", model, "--ranks", str(ranks), "--json"], capture_output=True,
                               text=True)
            if r.returncode != 0:
                print(f"FAIL {name}: plan --ranks {ranks}: {r.stderr.strip()}")
                ok = False
                continue
            p = json.loads(r.stdout)
            want = safetensors_bytes(model)
            params = sum(s["param_bytes"] for s in p["stages"])
            wmem = sum(s["memory"]["weights"] for s in p["stages"])
            # a tied embedding is held (and counted) by the first and the last stage
            # (the backend pads each weight a little: 64-byte aligned vectors, packed panels)
            nt = sum(s["n_tensors"] for s in p["stages"])
            good = p["total_param_bytes"] == want and want <= params and want <= wmem <= params * 1.25 + 128 * nt
            print(f"{name} plan --ranks {ranks}: param bytes {params} (checkpoint {want}), weight memory {wmem}"
                  + ("" if good else " FAIL"))
            ok &= good
    # a config the experts code cannot run is refused, naming the field
    if "mixtral-a" in names:
        bad = os.path.join(tmp, "mixtral-bad")
        os.makedirs(bad, exist_ok=True)
        src = os.path.join(tmp, "mixtral-a", "model")
        for f in os.listdir(src):
            if not os.path.exists(os.path.join(bad, f)):
                os.symlink(os.path.join(src, f), os.path.join(bad, f))
        c = json.load(open(os.path.join(src, "config.json")))
        c["num_experts_per_tok"] = c["num_local_experts"] + 1
        os.remove(os.path.join(bad, "config.json"))
        json.dump(c, open(os.path.join(bad, "config.json"), "w"))
        r = subprocess.run([pb, "plan", "--model", bad], capture_output=True, text=True)
        good = r.returncode != 0 and "num_experts_per_tok" in r.stderr
        print(f"top-k above the expert count: rc {r.returncode}: {r.stderr.strip()}" + ("" if good else " FAIL"))
        ok &= good
        # transformers 5.x's in-memory layout (experts fused into 3-D tensors) is refused, saying so
        from safetensors.torch import save_file
        from transformers import AutoModelForCausalLM
        fused = os.path.join(tmp, "mixtral-fused")
        os.makedirs(fused, exist_ok=True)
        m = AutoModelForCausalLM.from_pretrained(src, dtype=torch.float32)
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, os.path.join(fused, "model.safetensors"))
        json.dump(json.load(open(os.path.join(src, "config.json"))), open(os.path.join(fused, "config.json"), "w"))
        r = subprocess.run([pb, "plan", "--model", fused], capture_output=True, text=True)
        good = r.returncode != 0 and "fused 3-D expert tensors" in r.stderr
        print(f"fused experts: rc {r.returncode}: {r.stderr.strip()}" + ("" if good else " FAIL"))
        ok &= good
    # the plan's memory estimate (experts included) against the peak RSS of the running stage
    if "mixtral-a" in names:
        from transformers import AutoConfig, AutoModelForCausalLM
        torch.manual_seed(0)
        cfg = AutoConfig.for_model("mixtral", hidden_size=256, num_attention_heads=8, num_key_value_heads=4,
                                   num_hidden_layers=4, intermediate_size=512, vocab_size=4096,
                                   max_position_embeddings=256, num_local_experts=8, num_experts_per_tok=2)
        mem = os.path.join(tmp, "mixtral-mem")
        AutoModelForCausalLM.from_config(cfg).save_pretrained(mem, max_shard_size="20MB")
        r = subprocess.run([harness, "memory", mem, "8", "160", "2"], capture_output=True, text=True)
        print("mixtral memory: " + (r.stdout + r.stderr).strip().replace("\n", "; ") + ("" if r.returncode == 0 else " FAIL"))
        ok &= r.returncode == 0
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
