#!/usr/bin/env python3
"""SmolLM2-135M-Instruct (real weights) against HF transformers 5.x.

HF's reference is computed once (f32 on the folder's bf16 weights). Then:

1. fwd-harness loads the folder through the real loader and chains 1, 2 and 3
   stages (the same stage code each rank runs). For 8 varied prompts:
  - logits at every prompt position and at each of the 64 decode steps
    along HF's greedy path within TOL (1e-3) of HF run in f32 on the same
    bf16 weights;
  - the free-running 64-token greedy continuation equal to generate()'s,
    up to the first near-tie (HF top-2 margin < TIE);
  - the same logits, bit for bit, for 1, 2 and 3 stages.
2. `pippy-batch` itself under `mpirun -np 1, 2, 3` (one stage per rank) on the
   same prompts, greedy, max_tokens 64: the text and token counts equal
   generate(do_sample=False)'s (stopping at EOS), up to the first near-tie;
   the output files byte-identical whatever the number of ranks.
3. --matmul-precision bf16 (activations rounded to bf16 in the products with
   the bf16 weights; vdpbf16ps where the CPU has AVX512-BF16, emulated with
   the same bits elsewhere), with the KV cache in f32 and in bf16 (then
   attention's products take the bf16 dots too, the queries and softmax
   weights rounded): the logits of 1 and 2 stages identical bit for bit (on
   an AVX-512 CPU the 2 stages run the AVX2 emulation), and no farther from
   HF f32 than HF's own bf16 run (the same model in torch.bfloat16) is;
   `mpirun -np 1` and `-np 2` write identical files.
4. --matmul-precision bf16-amx (those products on the AMX tile unit, where
   the CPU has AMX-BF16), with the KV cache in f32 and in bf16 (attention's
   products on the tile unit too): the logits of 1 and 2 stages identical
   bit for bit, and no farther from HF f32 than HF's own bf16 run is; and
   with the weights kept as f32 (--weights-dtype f32: split into three bf16
   pieces, of which the bf16 values fill the first), the logits of the bf16
   weights' run bit for bit.
"""
import fcntl
import json
import os
import shutil
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smol  # noqa: E402


MPIRUN = ["mpirun", "--allow-run-as-root", "--oversubscribe"]


def check_cli(d, tok, ref, work):
    errors = []
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    inp = os.path.join(work, "in.jsonl")
    with open(inp, "w") as f:
        for i, r in enumerate(ref):
            f.write(json.dumps({"id": i, "prompt": r["prompt"], "max_tokens": smol.N_NEW, "logprobs": 5,
                                "prompt_logprobs": 2}) + "\n")
    first = None
    # as tests/net/lock.sh: one launcher test at a time on the machine, ranks over loopback only
    env = dict(os.environ, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    lock = open("/tmp/.pippy-batch-launcher.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    for n in (1, 2, 3):
        out = os.path.join(work, f"cli-{n}.jsonl")
        cmd = MPIRUN + ["-np", str(n), pb, "-q", "--model", d, "--in", inp, "--out", out, "--temperature", "0",
                        "--batch-size", "8", "--threads", "1"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
        if r.returncode != 0:
            errors.append(f"mpirun -np {n}: exit {r.returncode}: stderr: {r.stderr.strip()[-2000:]!r} "
                          f"stdout: {r.stdout.strip()[-1000:]!r}")
            continue
        data = open(out, "rb").read()
        if first is None:
            first = data
        elif data != first:
            errors.append(f"mpirun -np {n}: output differs from -np 1")
        recs = {}
        for line in data.decode().splitlines():
            o = json.loads(line)
            recs[o["id"]] = o
        for i, rf in enumerate(ref):
            o = recs.get(i)
            if o is None or "text" not in o:
                errors.append(f"mpirun -np {n}, prompt {i}: no result ({o})")
                continue
            want = tok.decode(rf["stop"], skip_special_tokens=True)
            if o["text"] == want:
                reason = "stop" if rf["stop"] and rf["stop"][-1] == tok.eos_token_id else "length"
                if o["completion_tokens"] != len(rf["stop"]) or o["prompt_tokens"] != len(rf["ids"]):
                    errors.append(f"mpirun -np {n}, prompt {i}: tokens {o['prompt_tokens']}+{o['completion_tokens']}"
                                  f", HF {len(rf['ids'])}+{len(rf['stop'])}")
                if o["finish_reason"] != reason:
                    errors.append(f"mpirun -np {n}, prompt {i}: finish_reason {o['finish_reason']}, HF {reason}")
                if n == 1:
                    errors += check_logprobs(tok, o, rf, i)
                continue
            k, margin = smol.text_divergence(tok, o["text"], rf)
            if margin >= smol.TIE:
                errors.append(f"mpirun -np {n}, prompt {i}: text differs from generate() at token {k} "
                              f"(HF margin {margin:.3g}):\n    ours {o['text']!r}\n    HF   {want!r}")
            else:
                print(f"  mpirun -np {n}, prompt {i}: near-tie at token {k} (margin {margin:.2g})")
        if n == 1:
            for i in range(min(3, len(ref))):
                print(f"  prompt {i}: {recs[i]['text'][:100]!r}")
        print(f"mpirun -np {n}: {len(recs)} results" + ("" if n == 1 else ", identical to -np 1" if data == first else ""))
    lock.close()
    return errors


def check_logprobs(tok, o, rf, i):
    """Each token's log probability and the 5 most likely against log_softmax of HF's f32 logits on the
    same path (its logits within smol.TOL of ours), texts against tokenizers' decode([id])."""
    import numpy as np
    errors, worst = [], 0.0
    P = len(rf["ids"])
    if len(o.get("logprobs", [])) != o["completion_tokens"]:
        return [f"prompt {i}: {len(o.get('logprobs', []))} logprobs for {o['completion_tokens']} tokens"]
    for k, e in enumerate(o["logprobs"]):
        row = rf["logits"][P - 1 + k].astype(np.float64)
        ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
        top = np.sort(ref)[::-1][:5]
        d = max([abs(e["logprob"] - ref[e["id"]])] + [abs(t["logprob"] - ref[t["id"]]) for t in e["top_logprobs"]] +
                [abs(t["logprob"] - v) for t, v in zip(e["top_logprobs"], top)])
        worst = max(worst, d)
        if e["id"] != rf["stop"][k] or len(e["top_logprobs"]) != 5 or d > 2 * smol.TOL:
            errors.append(f"prompt {i}, token {k}: {e} vs HF id {rf['stop'][k]}, log p {ref[rf['stop'][k]]:.6g}, "
                          f"top {top}")
        if any(t["token"] != tok.decode([t["id"]]) for t in [e] + e["top_logprobs"]):
            errors.append(f"prompt {i}, token {k}: texts {[t['token'] for t in [e] + e['top_logprobs']]}")
    pl = o.get("prompt_logprobs") or []
    if len(pl) != P or pl[0] is not None:
        return errors + [f"prompt {i}: {len(pl)} prompt_logprobs for {P} prompt tokens"]
    for k, e in enumerate(pl[1:]):  # from position k's logits
        row = rf["logits"][k].astype(np.float64)
        ref = row - row.max() - np.log(np.exp(row - row.max()).sum())
        top = np.sort(ref)[::-1][:2]
        d = max([abs(e["logprob"] - ref[rf["ids"][k + 1]])] +
                [abs(t["logprob"] - v) for t, v in zip(e["top_logprobs"], top)])
        worst = max(worst, d)
        x = ref[rf["ids"][k + 1]]
        if e["id"] != rf["ids"][k + 1] or d > 2 * smol.TOL or not (
                (ref > x + 2 * smol.TOL).sum() + 1 <= e["rank"] <= (ref > x - 2 * smol.TOL).sum() + 1):
            errors.append(f"prompt {i}, prompt token {k + 1}: {e} vs HF id {rf['ids'][k + 1]}, log p {x:.6g}")
    print(f"  prompt {i}: {len(o['logprobs'])} tokens' and {P - 1} prompt tokens' log probabilities within "
          f"{worst:.2g} of HF's")
    return errors


def hf_bf16_logits(d, ref):
    """HF's own bf16 computation (the model in torch.bfloat16) on each
    reference path (prompt + forced tokens), as f32 [P + n_new, V]."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16)
    m.eval()
    out = []
    with torch.no_grad():
        for r in ref:
            full = torch.tensor([r["ids"] + r["forced"]])
            out.append(m(full).logits[0].float().numpy())
    return out


def inexact_vs_hf(work, tag, what, ref, hf16):
    """The logits in out-1-TAG against HF f32 (no farther than HF's own bf16
    run, prompt by prompt), and out-1-TAG and out-2-TAG identical. Returns
    (errors, our worst distance, HF bf16's worst distance)."""
    errors = []
    ours, theirs = 0.0, 0.0
    for i, rf in enumerate(ref):
        V = rf["logits"].shape[1]
        mine = np.concatenate([np.fromfile(os.path.join(work, f"out-1-{tag}", f"{w}_{i}.f32"),
                                           dtype=np.float32).reshape(-1, V) for w in ("prefill", "decode")])
        n = min(len(mine), len(rf["logits"]))
        e_pb = float(np.abs(mine[:n] - rf["logits"][:n]).max())
        e_hf = float(np.abs(hf16[i][:n] - rf["logits"][:n]).max())
        ours, theirs = max(ours, e_pb), max(theirs, e_hf)
        if e_pb > e_hf:
            errors.append(f"{what}, prompt {i}: max |logit - HF f32| {e_pb:.3g}, farther than HF's own bf16 "
                          f"run ({e_hf:.3g})")
    for f in sorted(os.listdir(os.path.join(work, f"out-1-{tag}"))):
        with open(os.path.join(work, f"out-1-{tag}", f), "rb") as a, \
                open(os.path.join(work, f"out-2-{tag}", f), "rb") as b:
            if a.read() != b.read():
                errors.append(f"{what}: {f} differs between 1 and 2 stages")
    return errors, ours, theirs


def inexact_stages(d, ref, harness, work, hf16, tag, what, envs):
    """fwd-harness golden runs of 1 and 2 stages (envs[ns - 1]: the environment
    of each), kept as out-N-TAG, then inexact_vs_hf over them: (errors, ours,
    theirs); ours None when a run failed."""
    for ns in (1, 2):
        r = subprocess.run([harness, "golden", d, work, str(ns), "2"], capture_output=True, text=True,
                           env=envs[ns - 1])
        if r.returncode != 0:
            return [f"{what}, {ns} stages: fwd-harness failed ({r.returncode}): {r.stderr.strip()}"], None, None
        od = os.path.join(work, f"out-{ns}")
        shutil.rmtree(f"{od}-{tag}", ignore_errors=True)
        os.replace(od, f"{od}-{tag}")
    return inexact_vs_hf(work, tag, what, ref, hf16)


def check_bf16_dots(d, ref, harness, work, hf16):
    """--matmul-precision bf16 (section 3 of the docstring)."""
    errors = []
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    ver = subprocess.run([pb, "--version"], capture_output=True, text=True).stdout
    how = "vdpbf16ps" if "AVX512-BF16: yes" in ver else "emulated with fmas"
    # the KV cache in f32 (attention exact), then in bf16 (attention's
    # products on the bf16 dots too)
    for kv, tag, what in (("f32", "bf16", "bf16 dots"), ("bf16", "bf16-kv", "bf16 dots, bf16 KV cache")):
        envs = []
        for ns in (1, 2):
            env = dict(os.environ, PB_MATMUL_PRECISION="bf16", PB_KV_DTYPE=kv)
            env.pop("PB_CPU_ISA", None)
            if ns == 1 and "AVX512-BF16: yes" in ver:
                env["PB_CPU_ISA"] = "avx512bf16"  # the instruction, even where the emulation is preferred
            if ns == 2 and "best on this CPU: avx512" in ver:
                # the AVX2 emulation, which must give the bits of 1 stage's
                # vdpbf16ps
                env["PB_CPU_ISA"] = "avx2"
            envs.append(env)
        e, ours, theirs = inexact_stages(d, ref, harness, work, hf16, tag, what, envs)
        if ours is None:
            return errors + e
        print(f"{what} ({how}): max |logit - HF f32| = {ours:.3g} (HF's own bf16 run: {theirs:.3g}); 1 and 2 "
              f"stages {'differ' if any('stages' in x for x in e) else 'identical'}")
        errors += e
    if errors:
        return errors
    inp = os.path.join(work, "in.jsonl")
    cenv = dict(os.environ, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    cenv.pop("PB_CPU_ISA", None)
    lock = open("/tmp/.pippy-batch-launcher.lock", "w")
    fcntl.flock(lock, fcntl.LOCK_EX)
    outs = []
    for n in (1, 2):
        out = os.path.join(work, f"cli-bf16-{n}.jsonl")
        r = subprocess.run(MPIRUN + ["-np", str(n), pb, "-q", "--model", d, "--in", inp, "--out", out,
                                     "--temperature", "0", "--batch-size", "8", "--threads", "1",
                                     "--matmul-precision", "bf16"],
                           capture_output=True, text=True, timeout=1800, env=cenv)
        if r.returncode != 0:
            errors.append(f"--matmul-precision bf16, mpirun -np {n}: exit {r.returncode}: {r.stderr.strip()[-2000:]!r}")
            continue
        outs.append(open(out, "rb").read())
    lock.close()
    if len(outs) == 2:
        if outs[0] != outs[1]:
            errors.append("--matmul-precision bf16: mpirun -np 2 wrote another file than -np 1")
        else:
            print(f"--matmul-precision bf16: mpirun -np 1 and -np 2 wrote identical files "
                  f"({len(outs[0].splitlines())} records)")
    return errors


def check_amx(d, ref, harness, work, hf16):
    """--matmul-precision bf16-amx (section 4 of the docstring)."""
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    ver = subprocess.run([pb, "--version"], capture_output=True, text=True).stdout
    if "AMX-BF16: yes" not in ver:
        print("bf16-amx: this CPU has no AMX-BF16 (section 4 not applicable)")
        return []
    errors = []
    # the KV cache in f32 (attention exact), then in bf16 (attention's
    # products on the tile unit too)
    for kv, tag, what in (("f32", "amx", "bf16-amx"), ("bf16", "amx-kv", "bf16-amx, bf16 KV cache")):
        env = dict(os.environ, PB_MATMUL_PRECISION="bf16-amx", PB_KV_DTYPE=kv)
        env.pop("PB_CPU_ISA", None)
        e, ours, theirs = inexact_stages(d, ref, harness, work, hf16, tag, what, [env, env])
        if ours is None:
            return errors + e
        print(f"{what}: max |logit - HF f32| = {ours:.3g} (HF's own bf16 run: {theirs:.3g}); 1 and 2 stages "
              f"{'differ' if any('stages' in x for x in e) else 'identical'}")
        errors += e
    # the weights as f32: split into bf16 pieces on the tile unit, the
    # second and third of them zero here, so the bf16 weights' bits
    env = dict(os.environ, PB_MATMUL_PRECISION="bf16-amx", PB_KV_DTYPE="f32", PB_WEIGHTS_DTYPE="f32")
    env.pop("PB_CPU_ISA", None)
    r = subprocess.run([harness, "golden", d, work, "2", "2"], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        return errors + [f"bf16-amx, f32 weights: fwd-harness failed ({r.returncode}): {r.stderr.strip()}"]
    od = os.path.join(work, "out-2")
    files = sorted(os.listdir(od))
    same = 0
    for f in files:
        with open(os.path.join(od, f), "rb") as a, open(os.path.join(work, "out-2-amx", f), "rb") as b:
            if a.read() != b.read():
                errors.append(f"bf16-amx, f32 weights (2 stages): {f} differs from the bf16 weights' run")
            else:
                same += 1
    print(f"bf16-amx, f32 weights split into bf16 pieces: {same} of {len(files)} logit files identical to the "
          "bf16 weights' run")
    return errors


def main():
    d = smol.model_dir()
    work = os.path.join(smol.tmpdir(), "real-forward")
    os.makedirs(work, exist_ok=True)
    harness = os.path.join(os.environ.get("PB_BUILDDIR", "."), "tests", "forward", "fwd-harness")
    tok, ref = smol.hf_reference(d)
    with open(os.path.join(work, "prompts.txt"), "w") as f:
        f.writelines(" ".join(map(str, r["ids"])) + "\n" for r in ref)
    with open(os.path.join(work, "forced.txt"), "w") as f:
        f.writelines(" ".join(map(str, r["forced"])) + "\n" for r in ref)
    errors = []
    worst = {}
    for ns in (1, 2, 3):
        r = subprocess.run([harness, "golden", d, work, str(ns), "2"], capture_output=True, text=True)
        if r.returncode != 0:
            errors.append(f"{ns} stages: fwd-harness failed ({r.returncode}): {r.stderr.strip()}")
            continue
        od = os.path.join(work, f"out-{ns}")
        worst[ns] = 0.0
        for i, rf in enumerate(ref):
            P, n = len(rf["ids"]), len(rf["forced"])
            V = rf["logits"].shape[1]
            pre = np.fromfile(os.path.join(od, f"prefill_{i}.f32"), dtype=np.float32).reshape(-1, V)
            dec = np.fromfile(os.path.join(od, f"decode_{i}.f32"), dtype=np.float32).reshape(-1, V)
            e1 = float(np.abs(pre - rf["logits"][:P]).max())
            e2 = float(np.abs(dec - rf["logits"][P:P + n]).max())
            worst[ns] = max(worst[ns], e1, e2)
            if e1 > smol.TOL:
                errors.append(f"{ns} stages, prompt {i}: prompt logits differ from HF by {e1:.3g}")
            if e2 > smol.TOL:
                errors.append(f"{ns} stages, prompt {i}: decode logits differ from HF by {e2:.3g}")
            greedy = list(map(int, open(os.path.join(od, f"greedy_{i}.txt")).read().split()))
            k = smol.first_divergence(greedy, rf["forced"])
            if k is not None and rf["margin"][k] >= smol.TIE:
                errors.append(f"{ns} stages, prompt {i}: greedy differs from generate() at token {k} "
                              f"(HF margin {rf['margin'][k]:.3g})")
            elif k is not None:
                print(f"  {ns} stages, prompt {i}: near-tie at token {k} (margin {rf['margin'][k]:.2g}), "
                      "compared up to it")
        if ns > 1 and os.path.isdir(os.path.join(work, "out-1")):
            for f in sorted(os.listdir(os.path.join(work, "out-1"))):
                with open(os.path.join(work, "out-1", f), "rb") as a, open(os.path.join(od, f), "rb") as b:
                    if a.read() != b.read():
                        errors.append(f"{ns} stages: {f} differs from 1 stage")
            shutil.rmtree(od)
    errors += check_cli(d, tok, ref, work)
    hf16 = hf_bf16_logits(d, ref)
    errors += check_bf16_dots(d, ref, harness, work, hf16)
    errors += check_amx(d, ref, harness, work, hf16)
    for ns, w in worst.items():
        print(f"SmolLM2 {ns} stage(s): max |logit - HF f32| = {w:.3g} over {len(ref)} prompts "
              f"({sum(len(r['ids']) for r in ref)} prompt positions + {sum(len(r['forced']) for r in ref)} decode steps)")
    for e in errors:
        print("FAIL: " + e)
    shutil.rmtree(work, ignore_errors=True)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
