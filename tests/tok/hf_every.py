#!/usr/bin/env python3
"""Every code point, once alone and once in "a{c}b 1{c} {c}x", through
`pippy-batch tokenize` and HF `tokenizers`, for every tokenizer fixture: the
character classes (marks, punctuation, whitespace, word characters, controls,
CJK) and normalization of each character must agree with HF's, whatever the
Unicode versions of utf8proc and PCRE2 say (see contrib/gen-tok-marks.py).
Code points assigned since Unicode 3.2 only: HF's tables lag the current
standard, and characters added later (e.g. U+32FF, 2019) still normalize as
Debian's utf8proc says, not as HF's older tables do."""
import json
import os
import subprocess
import sys
import unicodedata

from tokenizers import Tokenizer

PB = os.environ["PIPPY_BATCH"]
DATA = os.path.join(os.environ["PB_TESTDATA"], "tokenizers")
NAMES = ["gpt2", "llama2", "llama3", "small-nfkc-digits", "small-metaspace-fallback", "small-bert",
         "small-strip-split", "small-ws-fallback", "small-split-bytelevel", "small-bloom-split",
         "small-qwen2-style"]

cps = [c for c in range(0x20, 0x110000) if not 0xD800 <= c < 0xE000
       and unicodedata.ucd_3_2_0.category(chr(c)) not in ("Cn", "Cs", "Co")]
txts = [t for c in cps for t in (chr(c), f"a{chr(c)}b 1{chr(c)} {chr(c)}x")]
lines = "".join(json.dumps({"text": t}) + "\n" for t in txts).encode()
fails = 0
for name in NAMES:
    path = os.path.join(DATA, name + ".json.zst")
    hf = Tokenizer.from_str(subprocess.run(["zstd", "-dqc", path], check=True, capture_output=True).stdout.decode())
    want = [e.ids for e in hf.encode_batch(txts)]
    p = subprocess.run([PB, "tokenize", "--tokenizer", path], input=lines, capture_output=True)
    if p.returncode != 0:
        sys.exit(f"FAIL {name}: tokenize exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    got = [json.loads(l)["ids"] for l in p.stdout.decode().split("\n") if l]
    bad = [(t, w, g) for t, w, g in zip(txts, want, got) if w != g] + ([("(count)", len(want), len(got))]
                                                                      if len(got) != len(want) else [])
    for t, w, g in bad[:3]:
        print(f"FAIL {name}: {' '.join(f'U+{ord(x):04X}' for x in t) if len(t) < 20 else t!r}\n  want {w}\n  got  {g}")
    print(f"{'ok  ' if not bad else 'FAIL'} {name}: {len(txts)} texts, {len(bad)} differ")
    fails += len(bad)
sys.exit(1 if fails else 0)
