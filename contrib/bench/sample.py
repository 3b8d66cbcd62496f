#!/usr/bin/env python3
"""Sampler speed: pippy-batch's sampler (tests/gen/sample-bench, every vector
table this CPU runs) beside HF transformers' logits processors + softmax +
torch.multinomial (what generate() does each step) on the same rows, one
thread each, microseconds a row; and a plain libm expf pass over each row
(a scalar softmax's floor) in the same run. Figures only, never pass/fail.

Rows: Gaussian logits (scales 1 and 3: flat and broad), a peaked row, and
where the SmolLM2 folder exists, real next-token logits of SmolLM2-135M
(transformers) for 64 prompts.

  python3 contrib/bench/sample.py [--build build] [--rows 64] [--reps 5]
      [--vocab 49152] [--smollm2 models/SmolLM2-135M-Instruct] [--json out.json]
      [--compare EXE]   (another build's sample-bench, same arguments: a column beside)
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from transformers.generation.logits_process import (
    LogitsProcessorList, MinPLogitsWarper, RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
    TopKLogitsWarper, TopPLogitsWarper)

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

SETTINGS = [  # name, temperature, top_k, top_p, min_p, repetition_penalty
    ("greedy", 0.0, 0, 1.0, 0.0, 1.0),
    ("t=1", 1.0, 0, 1.0, 0.0, 1.0),
    ("t=0.8 top_p=0.9", 0.8, 0, 0.9, 0.0, 1.0),
    ("t=1 top_p=0.95", 1.0, 0, 0.95, 0.0, 1.0),
    ("t=0.7 top_k=50 top_p=0.9", 0.7, 50, 0.9, 0.0, 1.0),
    ("t=0.7 min_p=0.05", 0.7, 0, 1.0, 0.05, 1.0),
    ("t=0.8 top_k=50 top_p=0.9 rep=1.1", 0.8, 50, 0.9, 0.0, 1.1),
]


def smollm2_rows(path, n):
    import transformers
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    prompts = [f"Write a short story about a fox, part {i}. Once upon a time" for i in range(n)]
    rows = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt").input_ids
            rows.append(model(ids).logits[0, -1].float().numpy())
    return np.stack(rows)


def hf_time(rows, s, reps, hist):
    _, t, k, p, mp, rep = s
    x = torch.tensor(rows)
    procs = LogitsProcessorList()
    if rep != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(rep))
    if t != 0.0:
        if t != 1.0:
            procs.append(TemperatureLogitsWarper(t))
        if k:
            procs.append(TopKLogitsWarper(k))
        if p < 1.0:
            procs.append(TopPLogitsWarper(p))
        if mp:
            procs.append(MinPLogitsWarper(mp))
    best = 1e30
    gen = torch.Generator().manual_seed(1)
    for _ in range(reps):
        t0 = time.perf_counter()
        scores = procs(hist, x.clone())
        if t == 0.0:
            scores.argmax(-1)
        else:
            torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=gen)
        best = min(best, time.perf_counter() - t0)
    return best / len(rows) * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.environ.get("PB_BUILDDIR", os.path.join(SRC, "build")))
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=49152)
    ap.add_argument("--smollm2", default=os.path.join(SRC, "models", "SmolLM2-135M-Instruct"))
    ap.add_argument("--json")
    ap.add_argument("--compare", help="another build's tests/gen/sample-bench (its first figure as a column)")
    a = ap.parse_args()
    exe = os.path.join(a.build, "tests", "gen", "sample-bench")
    subprocess.run(["make", "-s", "-C", a.build, "tests/gen/sample-bench"], check=True)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    R, V = a.rows, a.vocab
    sets = {"gaussian sd 1": rng.normal(0, 1, (R, V)), "gaussian sd 3": rng.normal(0, 3, (R, V)),
            "peaked": rng.normal(0, 2, (R, V)) + np.where(rng.random((R, V)) < 0.001, 12.0, 0.0)}
    if os.path.exists(os.path.join(a.smollm2, "config.json")):
        sets["SmolLM2 real logits"] = smollm2_rows(a.smollm2, R)
    hist = torch.tensor([[(i * 7919) % V for i in range(32)]] * R)
    out = []
    print(f"microseconds a row ({R} rows, one thread); HF: its logits processors + softmax + multinomial")
    with tempfile.TemporaryDirectory() as tmp:
        for name, rows in sets.items():
            rows = np.ascontiguousarray(rows, dtype=np.float32)
            vocab = rows.shape[1]
            path = os.path.join(tmp, "rows.f32")
            rows.tofile(path)
            print(f"\n{name} (vocab {vocab})")
            print(f"  {'settings':34s} {'portable':>9s} {'sse2':>9s} {'avx2':>9s} {'HF torch':>9s} {'libm expf':>9s}"
                  + (f" {'compare':>9s}" if a.compare else ""))
            for s in SETTINGS:
                r = subprocess.run([exe, path, str(vocab), str(R), str(a.reps)] + [str(v) for v in s[1:]],
                                   capture_output=True, text=True, check=True).stdout
                got = dict((ln.split()[0], float(ln.split()[1])) for ln in r.splitlines())
                hf = hf_time(rows, s, a.reps, hist)
                cmp = None
                if a.compare:
                    c = subprocess.run([a.compare, path, str(vocab), str(R), str(a.reps)] + [str(v) for v in s[1:]],
                                       capture_output=True, text=True, check=True).stdout
                    cmp = float(c.splitlines()[0].split()[1])
                cols = [got.get(k) for k in ("portable", "sse2", "avx2")]
                print(f"  {s[0]:34s} " + " ".join(f"{c:9.1f}" if c is not None else f"{'-':>9s}" for c in cols) +
                      f" {hf:9.1f} {got['libm-expf']:9.1f}" + (f" {cmp:9.1f}" if cmp is not None else ""))
                out.append({"rows": name, "settings": s[0], "us_per_row": got, "hf_us_per_row": hf,
                            "compare_us_per_row": cmp})
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
