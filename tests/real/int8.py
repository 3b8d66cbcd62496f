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

import numpy as np

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


def log_softmax(row):
    row = row.astype(np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def logprob_distance(o, rf, logits, n_tokens):
    """Largest difference of record o's log probabilities (every prompt token's and the first n_tokens
    completion tokens', with their top lists) from log_softmax of `logits` (rows as smol.hf_reference's)."""
    P, worst = len(rf["ids"]), 0.0
    for k, e in enumerate(o["logprobs"][:n_tokens]):
        ref = log_softmax(logits[P - 1 + k])
        top = np.sort(ref)[::-1][:len(e["top_logprobs"])]
        worst = max([worst, abs(e["logprob"] - ref[e["id"]])] +
                    [abs(t["logprob"] - ref[t["id"]]) for t in e["top_logprobs"]] +
                    [abs(t["logprob"] - v) for t, v in zip(e["top_logprobs"], top)])
    for k, e in enumerate(o["prompt_logprobs"][1:]):   # from position k's logits
        ref = log_softmax(logits[k])
        top = np.sort(ref)[::-1][:len(e["top_logprobs"])]
        worst = max([worst, abs(e["logprob"] - ref[rf["ids"][k + 1]])] +
                    [abs(t["logprob"] - ref[t["id"]]) for t in e["top_logprobs"]] +
                    [abs(t["logprob"] - v) for t, v in zip(e["top_logprobs"], top)])
    return worst


def check_generation(tok, ref, plain, data, errors):
    """Section 1 on -np 1's output `data`: returns (largest distance from the reference, from the unrounded
    one)."""
    recs = {o["id"]: o for o in map(json.loads, data.decode().splitlines())}
    ours = theirs = 0.0
    for i, rf in enumerate(ref):
        o = recs.get(i)
        if not o or "logprobs" not in o or len(o.get("prompt_logprobs") or []) != len(rf["ids"]):
            errors.append(f"prompt {i}: no result, or prompt_logprobs not one a prompt token: {str(o)[:500]}")
            continue
        ids = [e["id"] for e in o["logprobs"]]
        k = smol.first_divergence(ids, rf["stop"])
        n = len(ids) if k is None else k
        if k is None:
            want = tok.decode(rf["stop"], skip_special_tokens=True)
            if o["text"] != want:
                errors.append(f"prompt {i}: the tokens of generate() but the text {o['text']!r}, HF {want!r}")
        elif k < len(rf["margin"]) and rf["margin"][k] >= smol.TIE:
            errors.append(f"prompt {i}: greedy differs from generate() at token {k} (HF margin "
                          f"{rf['margin'][k]:.3g}):\n    ours {o['text']!r}\n    HF   "
                          f"{tok.decode(rf['stop'], skip_special_tokens=True)!r}")
        else:
            print(f"  prompt {i}: near-tie at token {k} (margin {rf['margin'][k]:.2g}), compared up to it")
        e = logprob_distance(o, rf, rf["logits"], n)
        ours, theirs = max(ours, e), max(theirs, logprob_distance(o, rf, plain[i], n))
        if e > LP_TOL:
            errors.append(f"prompt {i}: log probabilities {e:.3g} from the int8 reference's (tolerance {LP_TOL})")
        if i < 2:
            print(f"  prompt {i}: {o['text'][:90]!r}")
    return ours, theirs


def unrounded_logits(d, ref):
    """The folder's own model (f32 on the bf16 weights) on each reference path."""
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
    with torch.no_grad():
        return [m(torch.tensor([r["ids"] + r["forced"]])).logits[0].float().numpy() for r in ref]


def check_embed(d, pb, errors):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    models = {"int8": AutoModel.from_pretrained(d, dtype=torch.float32).eval(),
              "bf16": AutoModel.from_pretrained(d, dtype=torch.float32).eval()}
    int8_ref.quantize_model(models["int8"])
    hidden = {}
    with torch.no_grad():
        for k, m in models.items():
            hidden[k] = [m(torch.tensor([tok(t).input_ids])).last_hidden_state[0].double() for t in EMBED_TEXTS]
    inp = "".join(json.dumps({"id": i, "input": t}) + "\n" for i, t in enumerate(EMBED_TEXTS)).encode()
    for pooling, norm in (("last", True), ("mean", False)):
        p = subprocess.run([pb, "-q", "--model", d, "--task", "embed", "--pooling", pooling, "--weights-dtype",
                            "int8", "--no-weights-cache", "--in", "-", "--out", "-"] + ([] if norm else
                                                                                       ["--no-normalize"]),
                           input=inp, capture_output=True, timeout=600)
        if p.returncode:
            errors.append(f"--task embed --pooling {pooling}: exit {p.returncode}: {p.stderr.decode()[-1500:]}")
            continue
        got = {r["id"]: np.array(r.get("embedding", []), dtype=np.float64)
               for r in map(json.loads, p.stdout.decode().splitlines())}
        worst = {}
        for k in models:
            for i in range(len(EMBED_TEXTS)):
                h = hidden[k][i]
                v = h[-1] if pooling == "last" else h.mean(0)
                if norm:
                    v = torch.nn.functional.normalize(v, dim=0)
                v = v.numpy()
                e = got.get(i, np.zeros(0))
                diff = float(np.max(np.abs(e - v)) / (1 if norm else max(1.0, float(np.max(np.abs(v)))))) \
                    if e.shape == v.shape else float("inf")
                worst[k] = max(worst.get(k, 0.0), diff)
        print(f"--task embed --pooling {pooling}{'' if norm else ' --no-normalize'}: largest difference "
              f"{worst['int8']:.3g} from HF's with int8-rounded weights, {worst['bf16']:.3g} from HF's on the "
              f"bf16 weights")
        if worst["int8"] > EMBED_TOL:
            errors.append(f"--task embed --pooling {pooling}: {worst['int8']:.3g} from HF's with int8-rounded "
                          f"weights (tolerance {EMBED_TOL})")
        if worst["bf16"] <= MUTANT * EMBED_TOL:
            errors.append(f"--task embed --pooling {pooling}: only {worst['bf16']:.3g} from HF's on the bf16 "
                          f"weights: the check cannot tell int8 from bf16")


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
    runs = smol.run_ranks(pb, lambda n: common + ["--no-weights-cache", "--out", os.path.join(work, f"np{n}.jsonl")])
    outs = {}
    for n, r in zip((1, 2), runs):
        if r.returncode:
            errors.append(f"mpirun -np {n}: exit {r.returncode}: {r.stderr.decode()[-2000:]}")
        else:
            outs[n] = open(os.path.join(work, f"np{n}.jsonl"), "rb").read()
    if 1 in outs:
        ours, theirs = check_generation(tok, ref, plain, outs[1], errors)
        print(f"log probabilities of {sum(len(r['ids']) - 1 for r in ref)} prompt tokens and the completions: "
              f"largest difference {ours:.3g} from the int8 reference (tolerance {LP_TOL}), {theirs:.3g} from "
              f"HF's on the unrounded bf16 weights ({theirs / LP_TOL:.0f} x the tolerance)")
        if theirs <= MUTANT * LP_TOL:
            errors.append(f"the unrounded reference is only {theirs:.3g} away: the check cannot tell int8 "
                          "from bf16")
    if len(outs) == 2:
        print(f"mpirun -np 2: {'the same bytes as' if outs[1] == outs[2] else 'DIFFERS from'} -np 1")
        if outs[1] != outs[2]:
            errors.append("mpirun -np 2 wrote other bytes than -np 1")

    # the weights cache: written by the first run, mapped by the second
    cache = os.path.join(work, "cache")
    written = None
    for what in ("writes", "maps"):
        out = os.path.join(work, f"cache-{what}.jsonl")
        r = subprocess.run([pb] + common + ["--weights-cache", cache, "--out", out], capture_output=True,
                           timeout=600)
        same = r.returncode == 0 and 1 in outs and open(out, "rb").read() == outs[1]
        # one file, and after the second run with the inode and time the first left it, so the second mapped
        # it (a file that fails a check is replaced, with a warning on stderr)
        files = {}
        for f in os.listdir(cache) if os.path.isdir(cache) else []:
            st = os.stat(os.path.join(cache, f))
            files[f] = (st.st_ino, st.st_mtime_ns, st.st_size)
        size = ", ".join(f"{v[2] / 2**20:.1f} MiB" for v in files.values())
        print(f"--weights-cache, the run that {what} it ({size} there): "
              f"{'the same bytes as without' if same else 'DIFFERS from the run without'}")
        if r.returncode or not same or len(files) != 1 or r.stderr.strip() or (written and files != written):
            errors.append(f"--weights-cache, the run that {what} it: exit {r.returncode}, cache files {files} "
                          f"(after the first run: {written}), output {'same' if same else 'differs'}, stderr "
                          f"{r.stderr.decode()[-1000:]!r}")
        written = files

    check_embed(d, pb, errors)
    for e in errors:
        print("FAIL: " + e)
    if not errors:
        shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
