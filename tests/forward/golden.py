#!/usr/bin/env python3
"""Forward pass against HF transformers goldens, for every family.

For each model of make_goldens.py (or those named in PB_FWD_MODELS, or on the
command line): make the model and goldens in $PB_TEST_TMP, run fwd-harness with
1 stage and with 2 or 3 stages chained, and check
  - logits at every prompt position and at every decode step (HF KV cache)
    within TOL of HF's (f32 compute; f16/bf16 checkpoints are compared with HF
    run in f32 on the same rounded weights, so the same tolerance holds),
  - the same logits, bit for bit, whatever the number of stages,
  - greedy choices equal to HF's, except at a near-tie (HF's top-2 margin
    below TIE) after which the continuations may legitimately differ,
  - the free-running greedy continuation of 32 tokens equal to generate()'s,
    up to the first near-tie.
"""
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_goldens  # noqa: E402

TOL = 1e-4
TIE = 1e-3
KV_TOL, KV_MEAN, KV_TIE = 5e-3, 0.1, 2e-2  # an f16 KV cache (see check)


def first_divergence(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None


def check(name, root, harness, threads, kv=None):
    """kv: a --kv-dtype (f16) to check against HF with its keys and values so
    rounded. Rounding is not continuous: a key whose f32 value differs from
    HF's in the last bit may round to the neighbouring f16 (2^-11 apart) and
    move every later logit a little, so there the bound is KV_TOL on every
    logit, the mean distance to HF's rounded run at most KV_MEAN of the
    distance between HF's rounded and unrounded runs (so the cache rounds as
    HF's does, not merely somehow), and the greedy choices are compared up to
    a margin of KV_TIE."""
    tol, tie = (KV_TOL, KV_TIE) if kv else (TOL, TIE)
    plain = np.load(os.path.join(make_goldens.make(name, root), "golden.npz")) if kv else None
    d = make_goldens.make(name, root, kv)
    env = dict(os.environ, PB_KV_DTYPE=kv) if kv else None
    model = os.path.join(d, "model")
    opts = make_goldens.spec_of(name)[2]
    gold = np.load(os.path.join(d, "golden.npz"))
    forced = [list(map(int, l.split())) for l in open(os.path.join(d, "forced.txt"))]
    n_layers = int(__import__("json").load(open(os.path.join(d, "spec.json")))["layers"])
    stage_counts = list(opts.get("stages") or ([1, min(3, n_layers)] if n_layers > 1 else [1]))
    chunk = str(opts.get("chunk", 0))
    errors = []
    outs = {}
    for ns in stage_counts:
        r = subprocess.run([harness, "golden", model, d, str(ns), str(threads), chunk], capture_output=True, text=True,
                           env=env)
        if r.returncode != 0:
            errors.append(f"{ns} stages: harness failed ({r.returncode}): {r.stderr.strip()}")
            continue
        outs[ns] = os.path.join(d, f"out-{ns}")
    worst = 0.0
    for ns, od in outs.items():
        for i in range(len(forced)):
            V = gold[f"prefill_{i}"].shape[1]
            pre = np.fromfile(os.path.join(od, f"prefill_{i}.f32"), dtype=np.float32).reshape(-1, V)
            dec = np.fromfile(os.path.join(od, f"decode_{i}.f32"), dtype=np.float32).reshape(-1, V)
            gp, gd, margin = gold[f"prefill_{i}"], gold[f"decode_{i}"], gold[f"margin_{i}"]
            e1 = float(np.abs(pre - gp).max())
            e2 = float(np.abs(dec - gd).max())
            worst = max(worst, e1, e2)
            if kv:
                mine = np.abs(np.concatenate([pre - gp, dec - gd])).mean()
                rounding = np.abs(np.concatenate([plain[f"prefill_{i}"] - gp, plain[f"decode_{i}"] - gd])).mean()
                if mine > KV_MEAN * rounding:
                    errors.append(f"{ns} stages, prompt {i}: mean |logit - HF's rounded run| {mine:.3g}, more than "
                                  f"{KV_MEAN} x {rounding:.3g} (HF's rounded run against its f32 one)")
            if e1 > tol:
                errors.append(f"{ns} stages, prompt {i}: prefill logits differ by {e1:.3g} (row "
                              f"{int(np.abs(pre - gp).max(axis=1).argmax())})")
            if e2 > tol:
                errors.append(f"{ns} stages, prompt {i}: decode logits differ by {e2:.3g} (step "
                              f"{int(np.abs(dec - gd).max(axis=1).argmax())})")
            # greedy choices along HF's path: token k was chosen from the logits before it
            mine = [int(pre[-1].argmax())] + [int(x.argmax()) for x in dec[:-1]]
            # LongRoPE: past original_max_position_embeddings HF's generate() feeds the
            # whole sequence again (long factors everywhere) while the cached decode
            # steps above keep the short-factor keys: the two paths differ from there
            ra = opts.get("reencode_after")
            for k, (m, t) in enumerate(zip(mine, forced[i])):
                if ra and len(gp) <= ra < len(gp) + k:
                    break
                if m != t and margin[k] >= tie:
                    errors.append(f"{ns} stages, prompt {i}: greedy step {k} chose {m}, HF {t} (margin {margin[k]:.3g})")
            greedy = list(map(int, open(os.path.join(od, f"greedy_{i}.txt")).read().split()))
            k = first_divergence(greedy, forced[i])
            if k is not None and margin[k] >= tie:
                errors.append(f"{ns} stages, prompt {i}: free-running greedy differs from generate() at token {k} "
                              f"(HF margin {margin[k]:.3g})")
            elif k is not None:
                print(f"  {name}: prompt {i}: near-tie at token {k} (margin {margin[k]:.2g}), continuation compared up to it")
    if 1 in outs:
        for ns, od in outs.items():
            if ns == 1:
                continue
            for f in sorted(os.listdir(outs[1])):
                a = open(os.path.join(outs[1], f), "rb").read()
                b = open(os.path.join(od, f), "rb").read()
                if a != b:
                    errors.append(f"{ns} stages: {f} differs from 1 stage")
    print(f"{name}{' (' + kv + ' KV cache)' if kv else ''}: stages {sorted(outs)}, max |logit - HF| = {worst:.3g}" +
          (" FAIL" if errors else " ok"))
    for e in errors:
        print("  " + e)
    return not errors


def main():
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    build = os.environ.get("PB_BUILDDIR", ".")
    # PB_FWD_HARNESS: another build of it (golden-emu.sh: on the CUDA backend's CPU stand-in)
    harness = os.environ.get("PB_FWD_HARNESS") or os.path.join(build, "tests", "forward", "fwd-harness")
    names = sys.argv[1:] or (os.environ.get("PB_FWD_MODELS", "").split() or list(make_goldens.SPECS))
    import torch
    torch.set_num_threads(1)
    ok = True
    for n in names:
        ok &= check(n, tmp, harness, 2)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
