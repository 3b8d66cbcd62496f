#!/usr/bin/env python3
"""The tokenizer.json rebuilt by contrib/pb-get-smollm2 from the GGUF metadata:
`pippy-batch tokenize` ids equal HF tokenizers' on a varied corpus (the
project's 2,700-string multilingual corpus plus SmolLM2-specific strings:
digit runs, chat markup with the special tokens, code), and the facts of the
published tokenizer hold (49152 tokens, 48900 merges, 17 special tokens,
<|im_start|> = 1, <|im_end|> = 2 = EOS, digits split one per token).
"""
import importlib.util
import json
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import smol  # noqa: E402

EXTRA = smol.PROMPTS + [
    "In 2024, 12345 apples cost $3.50; 0.001% of 1e10 is 1e5.",
    "<|im_start|>user\nHi!<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>",
    "<|endoftext|><repo_name>pippy<file_sep>main.c<|im_end|><empty_output>",
    "    if (x == 42) {\n\t\treturn -1;\n    }\n",
    "Ünïcödé façade — naïve café, 東京は日本の首都です。 😀👍🏽",
    "phone: +1 (555) 010-9999, ISBN 978-3-16-148410-0",
    "   leading and trailing spaces   ",
    "",
    "\n\n\n",
    "a" * 300,
    "9" * 50,
]


def run(pb, args, lines):
    p = subprocess.run([pb] + args, input="".join(json.dumps(x) + "\n" for x in lines).encode(),
                       capture_output=True)
    if p.returncode != 0:
        sys.exit(f"FAIL {' '.join(args)}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return [json.loads(l) for l in p.stdout.decode().split("\n") if l]


def corpus():
    src = os.environ["PB_SRCDIR"]
    path = os.path.join(os.environ["PB_TESTDATA"], "tokenizers", "corpus.jsonl.zst")
    raw = subprocess.run(["zstd", "-dqc", path], check=True, capture_output=True).stdout.decode()
    out = [json.loads(l)["text"] for l in raw.split("\n") if l]
    spec = importlib.util.spec_from_file_location("corpus", os.path.join(src, "tests", "tok", "make-corpus.py"))
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    r = random.Random(11)
    return out + [gen.soup(r) for _ in range(100)] + [gen.mixed(r) for _ in range(100)] + EXTRA


def main():
    d = smol.model_dir()
    from tokenizers import Tokenizer
    pb = os.environ.get("PIPPY_BATCH", "pippy-batch")
    hf = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    errors = []

    # facts of the published SmolLM2 tokenizer
    tj = json.load(open(os.path.join(d, "tokenizer.json")))
    cfg = json.load(open(os.path.join(d, "config.json")))
    facts = [(hf.get_vocab_size(with_added_tokens=True), 49152, "tokens"),
             (len(tj["model"]["merges"]), 48900, "merges"),
             (sum(1 for t in tj["added_tokens"] if t["special"]), 17, "special tokens"),
             (hf.token_to_id("<|im_start|>"), 1, "<|im_start|>"), (hf.token_to_id("<|im_end|>"), 2, "<|im_end|>"),
             (cfg["eos_token_id"], 2, "eos_token_id"),
             (hf.encode("x 2024 y").tokens, ["x", "Ġ", "2", "0", "2", "4", "Ġy"], "digits one per token")]
    for got, want, what in facts:
        if got != want:
            errors.append(f"{what}: {got}, expected {want}")

    txts = corpus()
    for special in (True, False):
        got = run(pb, ["tokenize", "--model", d] + ([] if special else ["--no-special"]), [{"text": t} for t in txts])
        bad = 0
        for t, g in zip(txts, got):
            want = hf.encode(t, add_special_tokens=special).ids
            if g.get("ids") != want:
                bad += 1
                if bad <= 3:
                    errors.append(f"tokenize special={special}: {t[:200]!r}\n  HF   {want[:40]}\n  ours {g}")
        if len(got) != len(txts):
            errors.append(f"tokenize: {len(got)} results for {len(txts)} texts")
    ids = [hf.encode(t).ids for t in txts]
    for skip in (False, True):
        got = run(pb, ["detokenize", "--model", d] + (["--skip-special"] if skip else []), [{"ids": i} for i in ids])
        bad = 0
        for i, g in zip(ids, got):
            want = hf.decode(i, skip_special_tokens=skip)
            if g.get("text") != want:
                bad += 1
                if bad <= 3:
                    errors.append(f"detokenize skip={skip}: {i[:40]}\n  HF   {want[:200]!r}\n  ours {g}")
    print(f"SmolLM2 tokenizer: {len(txts)} texts x 2 (with/without special tokens), {len(ids)} decodes x 2"
          + (" FAIL" if errors else ", all equal to HF tokenizers"))
    for e in errors:
        print("FAIL: " + e)
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
