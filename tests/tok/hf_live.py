#!/usr/bin/env python3
"""Live parity with HF `tokenizers`: fresh random texts (not the committed
corpus), encoded by `pippy-batch tokenize` and by HF in the same run, with and
without special tokens; HF's ids decoded by `pippy-batch detokenize` against
HF's decode; raw invalid UTF-8 lines against HF's ids for the U+FFFD-repaired
text. Needs `tokenizers` in $PB_PYTHON (CI installs it): a missing module fails."""
import importlib.util
import json
import os
import random
import subprocess
import sys

PB = os.environ["PIPPY_BATCH"]
DATA = os.path.join(os.environ["PB_TESTDATA"], "tokenizers")
SRC = os.environ["PB_SRCDIR"]

try:
    from tokenizers import Tokenizer
except ImportError:
    sys.exit("FAIL: the Python package `tokenizers` is not installed in " + sys.executable)

spec = importlib.util.spec_from_file_location("corpus", os.path.join(SRC, "tests", "tok", "make-corpus.py"))
corpus = importlib.util.module_from_spec(spec)
spec.loader.exec_module(corpus)

NAMES = ["gpt2", "llama2", "llama3", "small-nfkc-digits", "small-metaspace-fallback", "small-bert",
         "small-strip-split", "small-ws-fallback", "small-split-bytelevel", "small-bloom-split",
         "small-qwen2-style"]
fails = 0


def run(args, data):
    p = subprocess.run([PB] + args, input=data, capture_output=True)
    if p.returncode != 0:
        raise SystemExit(f"FAIL {' '.join(args)}: exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    return [json.loads(l) for l in p.stdout.decode().split("\n") if l]


def texts():
    r = random.Random(os.getpid())   # new texts each run; the seed is printed on failure
    seed = r.randrange(1 << 30)
    r = random.Random(seed)
    out = [corpus.soup(r) for _ in range(150)] + [corpus.mixed(r) for _ in range(150)]
    # random code points from many blocks, assigned since Unicode 3.2: character
    # properties here come from utf8proc and PCRE2, whose Unicode versions
    # (13, 14 on Debian 12) lag HF's; newer characters may classify differently
    import unicodedata
    for _ in range(100):
        s = []
        while len(s) < r.randint(1, 40):
            c = chr(r.choice([r.randrange(0x20, 0x250), r.randrange(0x370, 0x2000), r.randrange(0x2000, 0x3100),
                              r.randrange(0x3040, 0xA000), r.randrange(0xAC00, 0xD7A0), r.randrange(0x1F300, 0x1FA00)]))
            if unicodedata.ucd_3_2_0.category(c) not in ("Cn", "Cs", "Co") and c != "\x00":
                s.append(c)
        out.append("".join(s))
    out += ["a\x00b", "\x00", "<s>\x00</s> \x00\x00 x", "\\u0000 is not \x00"]   # NUL travels as \u0000
    out += [" " * 20000 + "x", "\n" * 20000 + "y", " \r\n" * 5000, "!" * 20000 + " z", " ?" * 10000,
            "9" * 20000, "é" * 20000]   # long runs (regex backtracking, long BPE words)
    return seed, out


def main():
    global fails
    seed, txts = texts()
    lines = "".join(json.dumps({"text": t}) + "\n" for t in txts).encode()
    invalid = [bytes([r]) for r in (0x80, 0xFF, 0xC3)] + [b"ab\xe2\x82", b"\xf0\x9f\x98 x", b"\xed\xa0\x80z",
                                                         b"<s>\xc0\xaf</s>", b"\xf4\x90\x80\x80", b"ok\xfe\xff"]
    inv_lines = b"".join(b'{"text": "' + b + b'"}\n' for b in invalid)
    for name in NAMES:
        path = os.path.join(DATA, name + ".json.zst")
        hf = Tokenizer.from_str(subprocess.run(["zstd", "-dqc", path], check=True, capture_output=True).stdout.decode())
        bad = 0
        for special in (True, False):
            got = run(["tokenize", "--tokenizer", path] + ([] if special else ["--no-special"]), lines)
            for t, g in zip(txts, got):
                want = hf.encode(t, add_special_tokens=special).ids
                if g["ids"] != want:
                    bad += 1
                    if bad <= 3:
                        print(f"FAIL {name} special={special} seed={seed}: {t!r}\n  want {want}\n  got  {g['ids']}")
        ids = [hf.encode(t).ids for t in txts]
        for skip in (False, True):
            got = run(["detokenize", "--tokenizer", path] + (["--skip-special"] if skip else []),
                      "".join(json.dumps({"ids": i}) + "\n" for i in ids).encode())
            for i, g in zip(ids, got):
                want = hf.decode(i, skip_special_tokens=skip)
                if g["text"] != want:
                    bad += 1
                    if bad <= 6:
                        print(f"FAIL {name} decode skip={skip} seed={seed}: {i}\n  want {want!r}\n  got  {g['text']!r}")
        got = run(["tokenize", "--tokenizer", path], inv_lines)
        for b, g in zip(invalid, got):
            want = hf.encode(b.decode("utf-8", "replace")).ids
            if g["ids"] != want:
                bad += 1
                print(f"FAIL {name} invalid UTF-8 {b!r}: want {want}, got {g['ids']}")
        print(f"{'ok  ' if not bad else 'FAIL'} {name}: {len(txts)} texts x 2, {len(ids)} decodes x 2, "
              f"{len(invalid)} invalid UTF-8 lines")
        fails += bad
    sys.exit(1 if fails else 0)


if __name__ == "__main__":
    main()
