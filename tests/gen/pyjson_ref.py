#!/usr/bin/env python3
"""pb_pyjson_dumps (the form of a required tool call's arguments, vLLM's json.dumps(..., ensure_ascii=False))
against Python itself: random JSON texts (nesting, whitespace, escapes, surrogate pairs, duplicate keys, ints
beyond 64 bits, floats in every spelling, over- and underflow) give json.dumps(json.loads(text),
ensure_ascii=False) byte for byte, and texts json.loads refuses are refused."""
import json
import os
import random
import subprocess
import sys

TOOL = os.path.join(os.environ["PB_BUILDDIR"], "tests", "gen", "pyjson_tool")
rng = random.Random(7)

WS = [" ", "\t", "\n", "\r", "", "", "", "  \n  "]


def ws():
    return rng.choice(WS) if rng.random() < 0.5 else ""


def number():
    k = rng.randrange(12)
    if k == 0:
        return str(rng.randrange(-10**30, 10**30))
    if k == 1:
        return rng.choice(["0", "-0", "1", "-1", "18446744073709551616", "-9223372036854775809"])
    if k == 2:
        return repr(rng.uniform(-1e6, 1e6))
    if k == 3:
        return "%.17g" % rng.uniform(-1, 1) if rng.random() < 0.5 else "%.3e" % rng.uniform(-1e30, 1e30)
    if k == 4:
        return rng.choice(["1.0", "-0.0", "0.0", "1e5", "1E+5", "1e-5", "1e-7", "2.5E-3", "0.1", "0.0001",
                           "0.00001", "1e16", "1e15", "123456789012345678.0", "1e400", "-1e400", "1e-400",
                           "-1e-400", "4.9e-324", "1.7976931348623157e308", "100.5e-2", "0e0", "-0e-0"])
    if k == 5:
        return "%d.%de%d" % (rng.randrange(0, 1000), rng.randrange(0, 10**6), rng.randrange(-30, 30))
    if k == 6:
        return repr(rng.random() * 10 ** rng.randrange(-20, 25))
    return str(rng.randrange(-1000, 1000)) + (("." + str(rng.randrange(0, 10**rng.randrange(1, 8))))
                                              if rng.random() < 0.5 else "")


CHARS = ["a", "Z", " ", "é", "日本", "🙂", "\u2028", "\x7f", "'", "/"]
ESC = ["\\n", "\\t", "\\r", "\\b", "\\f", "\\\"", "\\\\", "\\/", "\\u00e9", "\\u0000", "\\u001f", "\\ud83d\\ude00",
       "\\uD83D\\uDE00", "\\u2028", "\\u0041", "\\uffff"]


def string():
    parts = []
    for _ in range(rng.randrange(0, 6)):
        parts.append(rng.choice(ESC) if rng.random() < 0.4 else rng.choice(CHARS))
    return '"' + "".join(parts) + '"'


def value(depth=0):
    k = rng.randrange(9 if depth < 4 else 5)
    if k == 0:
        return number()
    if k == 1:
        return string()
    if k == 2:
        return rng.choice(["true", "false", "null"])
    if k in (3, 4):
        return number() if rng.random() < 0.5 else string()
    if k in (5, 6):
        items = [ws() + value(depth + 1) + ws() for _ in range(rng.randrange(0, 4))]
        return "[" + ",".join(items) + (ws() if not items else "") + "]"
    keys = ['"a"', '"b"', '"a"', '"k\\u0065y"', '"key"', string()]
    mem = [ws() + rng.choice(keys) + ws() + ":" + ws() + value(depth + 1) + ws() for _ in range(rng.randrange(0, 5))]
    return "{" + ",".join(mem) + (ws() if not mem else "") + "}"


BAD = ["", " ", "[1,]", "{\"a\":1,}", "01", "1.", ".5", "-", "1e", "1e+", "tru", "nul", "\"abc", "\"a\nb\"",
       "\"\\x41\"", "\"\\u12\"", "1 2", "[1 2]", "{\"a\" 1}", "{1: 2}", "[", "]", "{\"a\":}", "+1", "0x10",
       "\"\\", "[[[]]", "'a'", "\"\t\""]


def main():
    texts = [ws() + value() + ws() for _ in range(3000)] + BAD
    texts += ["[" * 400 + "]" * 400, "{\"a\": 1, \"b\": 2, \"a\": 3}", "\"\\ud800\"", "[\"\\udc00x\"]"]
    p = subprocess.run([TOOL], input="".join(json.dumps(t) + "\n" for t in texts).encode(), capture_output=True)
    if p.returncode != 0:
        sys.exit(f"FAIL: pyjson_tool exit {p.returncode}: {p.stderr.decode()}")
    outs = p.stdout.decode().split("\n")[:-1]
    if len(outs) != len(texts):
        sys.exit(f"FAIL: {len(outs)} results for {len(texts)} texts")
    fails = valid = refused = surrogates = 0
    for t, o in zip(texts, outs):
        try:
            v = json.loads(t)
        except ValueError:
            refused += 1
            if o != "ERROR":
                fails += 1
                print(f"FAIL: {t!r}: json.loads refuses it, pyjson gave {o}")
            continue
        want = json.dumps(v, ensure_ascii=False)
        got = json.loads(o) if o != "ERROR" else None
        try:
            want.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate: written as its \\uXXXX escape, which reads back the same
            surrogates += 1
            if got is None or json.loads(got) != v:
                fails += 1
                print(f"FAIL: {t!r}: {got!r} does not read back as {v!r}")
            continue
        valid += 1
        if got != want:
            fails += 1
            print(f"FAIL: {t!r}:\n  python: {want!r}\n  pyjson: {got!r}")
    print(f"{valid} texts as json.dumps writes them, {surrogates} with lone surrogates read back, "
          f"{refused} refused as json.loads refuses them")
    if fails:
        sys.exit(f"FAIL: {fails} differences")


main()
