#!/usr/bin/env python3
"""Tokenizer benchmark: pippy-batch's C tokenizer beside HF `tokenizers`
(Rust, one thread) on the same text, same chunks, in the same run.

Prints MB/s and tokens/s for encode and decode on one core, for each real
tokenizer in tests/data/tokenizers. Figures only, never pass/fail.
Environment (set by `make bench`): PB_BUILDDIR, PB_SRCDIR; optional
PB_BENCH_MB (text size, default 8), PB_BENCH_CHUNK (bytes per call, default 4096).
"""
import os
import subprocess
import sys
import tempfile
import time

os.environ["RAYON_NUM_THREADS"] = "1"          # HF: one thread
os.environ["TOKENIZERS_PARALLELISM"] = "false"

build = os.environ.get("PB_BUILDDIR", ".")
src = os.environ.get("PB_SRCDIR", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
data = os.path.join(src, "tests", "data", "tokenizers")
mb = float(os.environ.get("PB_BENCH_MB", "8"))
chunk = int(os.environ.get("PB_BENCH_CHUNK", "4096"))
reps = 3

exe = os.path.join(build, "tests", "tok", "bench-tokenizer")
if not os.path.exists(exe):
    subprocess.run(["make", "-C", build, "tests/tok/bench-tokenizer"], check=True,
                   stdout=subprocess.DEVNULL)


def hf_side(path, text_bytes):
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    tok = Tokenizer.from_str(subprocess.run(["zstd", "-dqc", path], check=True,
                                            capture_output=True).stdout.decode())
    # same chunk boundaries as the C side (computed on bytes there)
    parts, p, n = [], 0, len(text_bytes)
    while p < n:
        e = min(p + chunk, n)
        while e < n and text_bytes[e - 1] != 0x0A:
            e += 1
        parts.append(text_bytes[p:e].decode())
        p = e
    enc_first, enc_best, dec_best, ids = None, 1e30, 1e30, None
    for r in range(reps):
        t = time.perf_counter()
        ids = [tok.encode(s, add_special_tokens=False).ids for s in parts]
        t = time.perf_counter() - t
        enc_first = t if enc_first is None else enc_first
        enc_best = min(enc_best, t)
    for r in range(reps):
        t = time.perf_counter()
        for i in ids:
            tok.decode(i, skip_special_tokens=False)
        dec_best = min(dec_best, time.perf_counter() - t)
    return dict(tokens=sum(len(i) for i in ids), encode_first_s=enc_first, encode_best_s=enc_best,
                decode_best_s=dec_best)


def bench_text(kind, txt):
    subprocess.run([sys.executable, os.path.join(src, "tests", "tok", "make-corpus.py"), txt,
                    "--" + kind, str(int(mb * 1e6))], check=True)
    with open(txt, "rb") as f:
        return f.read()


def main():
    try:   # one core for both sides (the C program inherits it)
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    except (AttributeError, OSError):
        pass
    with tempfile.TemporaryDirectory() as tmp:
        for kind, what in (("prose", "English-like prose (Zipf over 20k pseudo-words)"),
                           ("train", "multilingual/code/number/emoji mix")):
            txt = os.path.join(tmp, kind + ".txt")
            text_bytes = bench_text(kind, txt)
            mbytes = len(text_bytes) / 1e6
            print(f"text: {mbytes:.1f} MB {what} (make-corpus.py --{kind}), {chunk}-byte chunks, "
                  f"best of {reps}; one core (sched_setaffinity), HF with RAYON_NUM_THREADS=1")
            print(f"{'tokenizer':10} {'impl':9} {'enc MB/s':>9} {'enc Mtok/s':>11} {'cold MB/s':>10} "
                  f"{'dec MB/s':>9} {'dec Mtok/s':>11} {'load s':>7}")
            for name in ["gpt2", "llama2", "llama3"]:
                path = os.path.join(data, name + ".json.zst")
                out = subprocess.run([exe, path, txt, str(chunk), str(reps)], check=True,
                                     capture_output=True, text=True).stdout
                c = {k: float(v) for k, v in (kv.split("=") for kv in out.split())}
                print(f"{name:10} {'pippy':9} {mbytes / c['encode_best_s']:9.1f} "
                      f"{c['tokens'] / c['encode_best_s'] / 1e6:11.2f} {mbytes / c['encode_first_s']:10.1f} "
                      f"{mbytes / c['decode_best_s']:9.1f} {c['tokens'] / c['decode_best_s'] / 1e6:11.2f} "
                      f"{c['load_s']:7.2f}")
                h = hf_side(path, text_bytes)
                if h is None:
                    print(f"{name:10} {'HF':9} (tokenizers not installed)")
                    continue
                print(f"{name:10} {'HF':9} {mbytes / h['encode_best_s']:9.1f} "
                      f"{h['tokens'] / h['encode_best_s'] / 1e6:11.2f} {mbytes / h['encode_first_s']:10.1f} "
                      f"{mbytes / h['decode_best_s']:9.1f} {h['tokens'] / h['decode_best_s'] / 1e6:11.2f}")
                if h["tokens"] != c["tokens"]:
                    print(f"  note: token counts differ (pippy {int(c['tokens'])}, HF {h['tokens']})")
            print()


if __name__ == "__main__":
    main()
