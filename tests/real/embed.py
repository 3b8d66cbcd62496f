#!/usr/bin/env python3
"""Embeddings (--task embed) on the real SmolLM2-135M-Instruct against HF transformers 5.x's AutoModel in f32 on
the same bf16 weights: its last_hidden_state (after the final norm) pooled as sentence-transformers pools it
(the last token's, the mean, the first token's) and L2-normalized as torch.nn.functional.normalize, for texts of
1 to ~1200 tokens (prefill in chunks); OpenAI /v1/embeddings lines with a list of inputs, base64 and dimensions;
a copy of the folder with a sentence-transformers modules.json (mean pooling, Normalize) taken as the default;
1 and 2 ranks and -b 2 give the same bytes; errors: generation options with --task embed, an embeddings line in
a run that generates, dimensions over the hidden size."""
import base64
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smol  # noqa: E402

TOL = 2e-5  # normalized embeddings' largest difference (measured: see the printed figures)
TEXTS = [
    "The capital of France is Paris.",
    "a",
    "Embeddings turn text into vectors; similar texts get similar vectors.",
    "def add(a, b):\n    return a + b\n",
    "Der schnelle braune Fuchs springt über den faulen Hund. 日本語のテキストも少し。",
    " ".join(f"Sentence number {i} says something about the weather in city {i % 7}." for i in range(90)),
]


def main():
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    d = smol.model_dir()
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    work = os.path.join(smol.tmpdir(), "real-embed")
    os.makedirs(work, exist_ok=True)
    failures = 0

    def check(cond, what):
        nonlocal failures
        if not cond:
            failures += 1
            print("FAIL:", what)

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(d)
    m = AutoModel.from_pretrained(d, dtype=torch.float32).eval()
    hidden = m.config.hidden_size

    def ref(text, pooling, normalize=True, dims=None):
        ids = tok(text).input_ids
        with torch.no_grad():
            h = m(torch.tensor([ids])).last_hidden_state[0].double()
        v = h[-1] if pooling == "last" else h.mean(0) if pooling == "mean" else h[0]
        if dims:
            v = v[:dims]
        if normalize:
            v = torch.nn.functional.normalize(v, dim=0)
        return v.numpy(), len(ids)

    def run(args, inp, rc=0):
        p = subprocess.run([pb, "-q", "--model", d, "--in", "-", "--out", "-"] + args, input=inp.encode(),
                           capture_output=True, timeout=900)
        check(p.returncode == rc, f"{args}: exit {p.returncode}: {p.stderr.decode()[-1500:]}")
        return p

    def lines(p):
        return [json.loads(x) for x in p.stdout.decode().splitlines()]

    native = "".join(json.dumps({"id": i, "input": t}) + "\n" for i, t in enumerate(TEXTS))
    worst = {}
    for pooling, norm in (("last", True), ("mean", False), ("cls", True)):
        args = ["--task", "embed", "--pooling", pooling] + ([] if norm else ["--no-normalize"])
        p = run(args, native)
        got = lines(p)
        check(len(got) == len(TEXTS), f"{pooling}: {len(got)} lines")
        for r in got:
            want, n = ref(TEXTS[r["id"]], pooling, norm)
            e = np.array(r.get("embedding", []), dtype=np.float64)
            diff = float(np.max(np.abs(e - want) / (1 if norm else max(1.0, float(np.max(np.abs(want))))))) \
                if e.shape == want.shape else float("inf")
            worst[pooling] = max(worst.get(pooling, 0.0), diff)
            check(e.shape == (hidden,) and diff <= TOL, f"{pooling}: text {r['id']}: {e.shape}, largest difference "
                  f"{diff:.3g} from HF's")
            check(r.get("prompt_tokens") == n, f"{pooling}: text {r['id']}: prompt_tokens {r.get('prompt_tokens')} "
                  f"vs HF's {n}")
        if pooling == "last":  # the same bytes at 2 ranks, and at -b 2 (texts in other micro-batches)
            with open(os.path.join(work, "in.jsonl"), "w") as f:
                f.write(native)
            runs = smol.run_ranks(pb, lambda n: ["-q", "--model", d, "--in", os.path.join(work, "in.jsonl"),
                                                 "--out", os.path.join(work, f"out-{n}.jsonl"), "--force",
                                                 "--task", "embed", "--threads", "1"])
            outs = [open(os.path.join(work, f"out-{n}.jsonl"), "rb").read() for n in (1, 2)]
            check(all(r.returncode == 0 for r in runs) and outs[0] == outs[1] == p.stdout,
                  "1 and 2 ranks (and the plain run) differ")
            check(run(args + ["-b", "2"], native).stdout == p.stdout, "-b 2 differs")
    print("largest differences from HF's:", {k: f"{v:.2g}" for k, v in worst.items()})

    # OpenAI lines: a list of inputs, base64, dimensions (cut, then normalized)
    oa = [{"custom_id": "two", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "m", "input": TEXTS[:2], "encoding_format": "float"}},
          {"custom_id": "b64", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "m", "input": TEXTS[2], "encoding_format": "base64", "dimensions": 16}},
          {"custom_id": "big", "method": "POST", "url": "/v1/embeddings",
           "body": {"model": "m", "input": "x", "dimensions": hidden + 1}}]
    got = {r["custom_id"]: r for r in lines(run(["--task", "embed"], "".join(json.dumps(x) + "\n" for x in oa),
                                                rc=3))}
    body = (got.get("two", {}).get("response") or {}).get("body", {})
    data = body.get("data", [])
    check([x.get("index") for x in data] == [0, 1] and all(x.get("object") == "embedding" for x in data),
          f"a list of inputs: {str(body)[:300]}")
    for i, x in enumerate(data):
        want, _ = ref(TEXTS[i], "last")
        check(np.max(np.abs(np.array(x["embedding"]) - want)) <= TOL, f"list input {i}")
    check(body.get("usage", {}).get("prompt_tokens") == sum(ref(t, "last")[1] for t in TEXTS[:2]) and
          body.get("object") == "list", f"usage: {body.get('usage')}")
    b64 = ((got.get("b64", {}).get("response") or {}).get("body", {}).get("data") or [{}])[0].get("embedding", "")
    vec = np.array(struct.unpack("<16f", base64.b64decode(b64)), dtype=np.float64) if len(b64) == 88 else None
    want, _ = ref(TEXTS[2], "last", dims=16)
    check(vec is not None and np.max(np.abs(vec - want)) <= TOL, f"base64 of 16 dimensions: {b64!r}")
    err = (got.get("big", {}).get("error") or {}).get("message", "")
    check(f"more than the model's {hidden}" in err, f"dimensions over the hidden size: {err!r}")

    # a sentence-transformers folder: modules.json's Pooling (mean) and Normalize are the defaults
    st = os.path.join(work, "st-model")
    shutil.rmtree(st, ignore_errors=True)
    os.makedirs(os.path.join(st, "1_Pooling"))
    for f in os.listdir(d):
        if os.path.isfile(os.path.join(d, f)):
            os.symlink(os.path.join(os.path.abspath(d), f), os.path.join(st, f))
    smol.write_json(os.path.join(st, "modules.json"), [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}])
    smol.write_json(os.path.join(st, "1_Pooling", "config.json"), {
        "word_embedding_dimension": hidden, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False, "pooling_mode_lasttoken": False})
    p = subprocess.run([pb, "-q", "--model", st, "--task", "embed", "--in", "-", "--out", "-"],
                       input=json.dumps({"input": TEXTS[0]}).encode() + b"\n", capture_output=True, timeout=600)
    e = np.array(json.loads(p.stdout)["embedding"]) if p.returncode == 0 else np.zeros(1)
    want, _ = ref(TEXTS[0], "mean")
    check(e.shape == want.shape and np.max(np.abs(e - want)) <= TOL, f"sentence-transformers defaults: exit "
          f"{p.returncode} {p.stderr.decode()[-500:]}")

    # errors
    p = subprocess.run([pb, "-q", "--model", d, "--task", "embed", "--temperature", "0.5", "--in", "-", "--out", "-"],
                       input=b"", capture_output=True)
    check(p.returncode == 2 and b"--task embed generates nothing" in p.stderr, f"--temperature with --task embed: "
          f"exit {p.returncode} {p.stderr[-300:]!r}")
    p = run([], json.dumps({"custom_id": "e", "url": "/v1/embeddings", "body": {"input": "x"}}) + "\n", rc=3)
    check(b"needs a run with --task embed" in p.stdout, f"an embeddings line in a run that generates: {p.stdout!r}")
    if failures:
        print(f"{failures} failures")
        sys.exit(1)
    print("ok")


main()
