#!/usr/bin/env python3
"""An FP8 block-quantized checkpoint of the real SmolLM2-135M-Instruct (its folder converted by
tests/forward/fp8_ref.py's convert_checkpoint: the decoder layers' linear weights in e4m3 with an F32 scale per
block of [128, 128], partial blocks where 576 is not a multiple of 128; the tied embeddings and the norms kept in
bf16) against HF transformers 5.x in f32 on the original folder with those weights replaced by their dequantized
values (fp8_ref.dequantize_model), which is what pippy-batch computes in f32 on the FP8 folder:

1. `plan`: the weights' memory of the FP8 folder against the bf16 one's: the FP8 matrices at 1 to 1.0625 bytes a
   weight (e4m3 and a scale a block, or a float32 scale for 64 weights of a row as int8 keeps them), give or
   take PLAN_SLACK: about 0.61-0.63 here, not 0.53, as the tied embeddings (a fifth of the weights) stay bf16;
2. `mpirun -np 1` on the 8 prompts of smol.py, greedy, 64 tokens, logprobs 5 and prompt_logprobs 5: every
   prompt and completion token's log probability and the 5 most likely within 2 x smol.TOL of log_softmax of
   the reference's logits, the completion equal to generate()'s up to the first near-tie (HF's top-2 margin
   under smol.TIE, its text equal to generate()'s where no near-tie); the reference without the quantization
   (the folder's bf16 weights) must be farther than MUTANT x that tolerance, or the comparison could not tell
   FP8 from bf16;
3. `mpirun -np 2` writes the same bytes as -np 1;
4. --weights-dtype f32 (dequantized at load): the same tokens and log probabilities within SAME_F32 of the
   default's;
5. --weights-cache DIR: the run that writes the cache and the run that maps it write the same bytes as the
   runs without one;
6. --task embed (pooled last and normalized, mean and not) within embed.py's tolerance of HF AutoModel's
   last_hidden_state with the same dequantized weights, and farther than MUTANT x it from the bf16 model's.
HF's own FP8 reader is not used: it takes the block as n // (the scale grid's n), wrong for 576 (grid 5).
The figures the checks rest on are printed."""
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "forward"))
import fp8_ref  # noqa: E402
import smol  # noqa: E402

LP_TOL = 2 * smol.TOL   # log probabilities, as smollm2.py's check_logprobs
EMBED_TOL = 2e-5        # as embed.py
MUTANT = 10             # the unquantized reference must be this many tolerances away
SAME_F32 = 1e-5         # --weights-dtype f32 against the default: the same dequantized values
PLAN_SLACK = 0.01       # plan's ratio beyond the two forms' ratios
EMBED_TEXTS = [
    "The capital of France is Paris.",
    "a",
    "def add(a, b):\n    return a + b\n",
    "Der schnelle braune Fuchs springt über den faulen Hund. 日本語のテキストも少し。",
    " ".join(f"Sentence number {i} says something about the weather in city {i % 7}." for i in range(40)),
]


def same_logprobs(a, b):
    """Largest difference of the log probabilities of two runs' outputs (bytes) whose records have the same
    tokens and top lists; None where they do not."""
    ra = {o["id"]: o for o in map(json.loads, a.decode().splitlines())}
    rb = {o["id"]: o for o in map(json.loads, b.decode().splitlines())}
    if ra.keys() != rb.keys():
        return None
    worst = 0.0
    for i, o in ra.items():
        for key in ("logprobs", "prompt_logprobs"):
            ea, eb = o.get(key) or [], rb[i].get(key) or []
            if len(ea) != len(eb):
                return None
            for x, y in zip(ea, eb):
                if x is None or y is None:   # the first prompt token's
                    if x is not y:
                        return None
                    continue
                tx, ty = x.get("top_logprobs") or [], y.get("top_logprobs") or []
                if x.get("id") != y.get("id") or [t["id"] for t in tx] != [t["id"] for t in ty]:
                    return None
                if x.get("logprob") is not None:
                    worst = max(worst, abs(x["logprob"] - y["logprob"]))
                worst = max([worst] + [abs(s["logprob"] - t["logprob"]) for s, t in zip(tx, ty)])
    return worst


def unquantized_logits(d, ref):
    """The folder's own model (f32 on the bf16 weights) on each reference path."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        return [m(torch.tensor([r["ids"] + r["forced"]])).logits[0].float().numpy() for r in ref]


def tensor_bytes(d):
    """(number of F8_E4M3 weights, bytes of their scales, bytes of the other tensors) of folder d."""
    from safetensors import safe_open

    n8 = scales = other = 0
    for fn in os.listdir(d):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), "pt") as f:
                for k in f.keys():
                    sl = f.get_slice(k)
                    n = int(np.prod(sl.get_shape()))
                    if sl.get_dtype() == "F8_E4M3":
                        n8 += n
                    elif k.endswith("_scale_inv"):
                        scales += n * {"BF16": 2, "F32": 4}[sl.get_dtype()]
                    else:
                        other += n * {"BF16": 2, "F16": 2, "F32": 4}[sl.get_dtype()]
    return n8, scales, other


def check_plan(d, fp8, pb, errors):
    """The FP8 matrices kept as 1 byte a weight and a scale (a block's, or a float32 one for 64 weights of a row
    as --weights-dtype int8 keeps them: 1.0625 bytes a weight), the rest as stored: plan's ratio of the weights'
    memory to the bf16 folder's between those of the two forms, give or take PLAN_SLACK."""
    w = {}
    for what, m in (("bf16", d), ("fp8", fp8)):
        p = subprocess.run([pb, "plan", "--model", m, "--json"], capture_output=True, text=True)
        if p.returncode:
            errors.append(f"plan --model {m}: exit {p.returncode}: {p.stderr.strip()[-1000:]}")
            return
        w[what] = sum(s["memory"]["weights"] for s in json.loads(p.stdout)["stages"])
    n8, scales, other = tensor_bytes(fp8)
    bf16 = sum(tensor_bytes(d))
    lo, hi = (n8 + scales + other) / bf16, (n8 * 1.0625 + other) / bf16
    r = w["fp8"] / w["bf16"]
    print(f"plan: weights {w['fp8'] / 2**20:.2f} MiB for the FP8 folder, {w['bf16'] / 2**20:.2f} MiB for the bf16 "
          f"one: {r:.4f} x (the FP8 folder's tensors {lo:.4f} x, with a float32 scale for 64 weights {hi:.4f} x; "
          f"{n8 / (n8 + other / 2):.0%} of the weights quantized, the tied embeddings not)")
    if not lo - PLAN_SLACK <= r <= hi + PLAN_SLACK:
        errors.append(f"plan: the FP8 folder's weights {r:.4f} x the bf16 one's, not between {lo:.4f} and "
                      f"{hi:.4f} (give or take {PLAN_SLACK})")


def main():
    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    work = os.path.join(smol.tmpdir(), "real-fp8")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    fp8_ref.selftest()
    fp8 = os.path.join(work, "model")
    names = fp8_ref.convert_checkpoint(d, fp8)
    print(f"converted: {len(names)} matrices to FP8 [128, 128] with F32 scales")
    errors = []
    check_plan(d, fp8, pb, errors)
    if errors:   # no FP8 at all: say so once
        for e in errors:
            print("FAIL: " + e)
        sys.exit(1)

    tok, ref = smol.hf_reference(d, edit=fp8_ref.dequantize_model)
    plain = unquantized_logits(d, ref)
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        f.writelines(json.dumps({"id": i, "prompt": r["prompt"], "max_tokens": smol.N_NEW, "logprobs": 5,
                                 "prompt_logprobs": 5}) + "\n" for i, r in enumerate(ref))
    common = ["-q", "--model", fp8, "--in", inp, "--force", "--temperature", "0", "--batch-size", "8",
              "--threads", "1"]
    outs = smol.check_runs(pb, common, work, tok, ref, plain, errors, "FP8", LP_TOL, MUTANT)

    # --weights-dtype f32: the same values, dequantized at load
    out = os.path.join(work, "f32.jsonl")
    r = subprocess.run([pb] + common + ["--no-weights-cache", "--weights-dtype", "f32", "--out", out],
                       capture_output=True, timeout=600)
    if r.returncode:
        errors.append(f"--weights-dtype f32: exit {r.returncode}: {r.stderr.decode()[-1500:]}")
    elif 1 in outs:
        same = same_logprobs(outs[1], open(out, "rb").read())
        print("--weights-dtype f32: " + ("other tokens than the default's" if same is None else
                                          f"log probabilities {same:.3g} from the default's"))
        if same is None or same > SAME_F32:
            errors.append(f"--weights-dtype f32: {'other tokens' if same is None else same} against the default "
                          f"(tolerance {SAME_F32})")

    def edit(m):
        if len(fp8_ref.dequantize_model(m)) != 7 * 30:
            errors.append("--task embed: dequantize_model did not find AutoModel's 210 linear layers")

    smol.check_embed(d, pb, errors, "FP8", edit, fp8, [], EMBED_TEXTS, EMBED_TOL, MUTANT)
    for e in errors:
        print("FAIL: " + e)
    if not errors:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
