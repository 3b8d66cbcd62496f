#!/usr/bin/env python3
"""--weights-dtype int8 on the real SmolLM2-135M-Instruct against HF transformers 5.x in f32 with every weight
pippy-batch quantizes replaced by its rounded value (tests/forward/int8_ref.py: groups of 64 of a row, a float32
scale amax / 127, round half to even), which is what pippy-batch then computes in f32:

1. `mpirun -np 1` on the 8 prompts of smol.py, greedy, 64 tokens, logprobs 5 and prompt_logprobs 5: every
   prompt and completion token's log probability and the 5 most likely within 2 x smol.TOL of log_softmax of
   the reference's logits, the completion equal to generate()'s up to the first near-tie (HF's top-2 margin
   under smol.TIE); the reference without the rounding (the folder's bf16 weights) must be farther than
   MUTANT x that tolerance, or the comparison could not tell int8 from bf16;
2. `mpirun -np 2` writes the same bytes as -np 1;
3. --weights-cache DIR: the run that writes the cache and the run that maps it write the same bytes as the
   runs without one;
4. --task embed (pooled last and normalized, mean and not) within embed.py's tolerance of HF AutoModel's
   last_hidden_state with the same rounded weights, and farther than MUTANT x it from the unrounded model's;
5. `plan`: the weights' memory under int8 about 1.0625 / 2 of that under bf16 (1 byte a weight and a float32
   scale for 64): between 0.5 and 0.6 of it.
The figures the checks rest on are printed."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "forward"))
import int8_ref  # noqa: E402
import smol  # noqa: E402

LP_TOL = 2 * smol.TOL   # log probabilities, as smollm2.py's check_logprobs
EMBED_TOL = 2e-5        # as embed.py
MUTANT = 10             # the unrounded reference must be this many tolerances away
EMBED_TEXTS = [
    "The capital of France is Paris.",
    "a",
    "def add(a, b):\n    return a + b\n",
    "Der schnelle braune Fuchs springt über den faulen Hund. 日本語のテキストも少し。",
    " ".join(f"Sentence number {i} says something about the weather in city {i % 7}." for i in range(40)),
]


def unrounded_logits(d, ref):
    """The folder's own model (f32 on the bf16 weights) on each reference path."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        return [m(torch.tensor([r["ids"] + r["forced"]])).logits[0].float().numpy() for r in ref]


def check_plan(d, pb, errors):
    w = {}
    for dt in ("bf16", "int8"):
        p = subprocess.run([pb, "plan", "--model", d, "--json", "--weights-dtype", dt], capture_output=True,
                           text=True)
        if p.returncode:
            errors.append(f"plan --weights-dtype {dt}: exit {p.returncode}: {p.stderr.strip()[-1000:]}")
            return
        w[dt] = sum(s["memory"]["weights"] for s in json.loads(p.stdout)["stages"])
    r = w["int8"] / w["bf16"]
    print(f"plan: weights {w['int8'] / 2**20:.2f} MiB under int8, {w['bf16'] / 2**20:.2f} MiB under bf16: "
          f"{r:.4f} x (1.0625 / 2 = 0.53125)")
    if not 0.5 < r < 0.6:
        errors.append(f"plan: int8's weights {r:.4f} x bf16's, not between 0.5 and 0.6")


def main():
    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    work = os.path.join(smol.tmpdir(), "real-int8")
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    errors = []
    check_plan(d, pb, errors)
    if errors:   # no int8 at all: say so once
        for e in errors:
            print("FAIL: " + e)
        sys.exit(1)

    int8_ref.selftest()
    tok, ref = smol.hf_reference(d, edit=int8_ref.quantize_model)
    plain = unrounded_logits(d, ref)
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        f.writelines(json.dumps({"id": i, "prompt": r["prompt"], "max_tokens": smol.N_NEW, "logprobs": 5,
                                 "prompt_logprobs": 5}) + "\n" for i, r in enumerate(ref))
    common = ["-q", "--model", d, "--in", inp, "--force", "--temperature", "0", "--batch-size", "8",
              "--threads", "1", "--weights-dtype", "int8"]
    smol.check_runs(pb, common, work, tok, ref, plain, errors, "int8", LP_TOL, MUTANT)

    smol.check_embed(d, pb, errors, "int8", int8_ref.quantize_model, d, ["--weights-dtype", "int8"], EMBED_TEXTS,
                     EMBED_TOL, MUTANT)
    for e in errors:
        print("FAIL: " + e)
    if not errors:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
