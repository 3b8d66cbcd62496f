#!/usr/bin/env python3
"""pb_tokenizer_token_bytes (constrained decoding's view of each token)
against HF `tokenizers`, on every tokenizer fixture but WordPiece's: for an
id whose bytes are whole UTF-8, decode([a, id]) == decode([a]) + its text,
a being a plain token (so the id stands inside a text, as in a completion);
a byte-fallback token <0xXX> gives that byte; a byte-level token gives the
bytes of GPT-2's byte-to-character table read backwards (written here)."""
import os
import subprocess
import sys

from tokenizers import Tokenizer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bytelevel import byte_table  # noqa: E402

TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "tok", "token_bytes_tool")
DATA = os.path.join(os.environ["PB_TESTDATA"], "tokenizers")
NAMES = ["gpt2", "llama2", "llama3", "small-nfkc-digits", "small-metaspace-fallback", "small-strip-split",
         "small-ws-fallback", "small-split-bytelevel", "small-bloom-split", "small-qwen2-style"]


BYTES = byte_table()
fails = 0
for name in NAMES:
    path = os.path.join(DATA, name + ".json.zst")
    raw = subprocess.run(["zstd", "-dqc", path], check=True, capture_output=True).stdout.decode()
    hf = Tokenizer.from_str(raw)
    p = subprocess.run([TOOL, path], capture_output=True)
    if p.returncode:
        sys.exit(f"FAIL {name}: tool exit {p.returncode}: {p.stderr.decode(errors='replace')}")
    got = {}
    for line in p.stdout.decode().splitlines():
        f = line.split(" ")
        got[int(f[0])] = f[1] if len(f) > 1 else ""
    a = next(i for i in (hf.token_to_id("a"), hf.token_to_id("\u2581a"), hf.token_to_id("Ġa")) if i is not None)
    byte_level = "ByteLevel" in raw.split('"decoder"', 1)[-1][:400]
    vocab = hf.get_vocab_size(with_added_tokens=True)
    checked = bad = 0
    for i in range(vocab):
        tok = hf.id_to_token(i)
        g = got.get(i)
        if tok is None:
            if g not in (None, "-"):
                print(f"FAIL {name}: id {i} has no token, got {g!r}")
                bad += 1
            continue
        if g == "special":
            continue
        b = bytes.fromhex(g)
        try:
            text = b.decode("utf-8")
        except UnicodeDecodeError:
            text = None
        if text is not None:
            want = hf.decode([a, i], skip_special_tokens=False)
            have = hf.decode([a], skip_special_tokens=False) + text
            ok = want == have
        elif len(tok) == 6 and tok.startswith("<0x") and tok.endswith(">"):
            ok = b == bytes([int(tok[3:5], 16)])
        elif byte_level and all(c in BYTES for c in tok):
            ok = b == bytes(BYTES[c] for c in tok)
        else:
            ok = False
        checked += 1
        if not ok:
            bad += 1
            if bad <= 5:
                print(f"FAIL {name}: id {i} {tok!r}: bytes {b!r}")
    print(f"{name}: {checked} tokens, {bad} wrong")
    fails += bad
sys.exit(1 if fails else 0)
