"""10,000 input lines, 10% malformed in many ways: exactly one error record
for each bad line (its line number and id), and every good record the same
as when the good lines run alone (greedy, --max-tokens 1, explicit ids)."""
import json
import os
import random
import shutil
import subprocess
import sys

PB = os.environ["PIPPY_BATCH"]
TMP = os.environ["PB_TEST_TMP"]
SRC = os.environ["PB_SRCDIR"]
failures = 0
# Sanitizer builds: leaks inside OpenPMIx's own init/finalize are not ours.
os.environ["LSAN_OPTIONS"] = ("suppressions=" + os.path.join(SRC, "tests/net/lsan.supp") +
                              ":print_suppressions=0:" + os.environ.get("LSAN_OPTIONS", "")).rstrip(":")


def check(cond, what):
    global failures
    if not cond:
        failures += 1
        print("FAIL:", what)


model = os.path.join(TMP, "model")
subprocess.run([sys.executable, os.path.join(SRC, "contrib/pb-make-checkpoint"), "--family", "gpt2",
                "--out", model, "--layers", "1", "--hidden", "32", "--vocab", "50257",
                "--max-pos", "64", "--scale", "0.2"], check=True, stdout=subprocess.DEVNULL)
subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(model, "tokenizer.json"),
                os.path.join(os.environ["PB_TESTDATA"], "tokenizers/gpt2.json.zst")], check=True)

# Bad lines: (text, id the error record must carry (None = the line number)).
BAD = [
    ('{"prompt": "unterminated', None),
    ('not json at all', None),
    ('{"prompt": "a",}', None),
    ('[1, 2, 3]', None),
    ('"just a string"', None),
    ('{"id": "no-prompt"}', '"no-prompt"'),
    ('{"id": 7001, "prompt": 42}', '7001'),
    ('{"id": "np", "prompt": null}', '"np"'),
    ('{"id": "arr", "prompt": ["a", "b"]}', '"arr"'),
    ('{"id": "mt", "prompt": "x", "max_tokens": "5"}', '"mt"'),
    ('{"id": "neg", "prompt": "x", "max_tokens": -3}', '"neg"'),
    ('{"id": "frac", "prompt": "x", "max_tokens": 1.5}', '"frac"'),
    ('{"id": "temp", "prompt": "x", "temperature": "hot"}', '"temp"'),
    ('{"id": "tneg", "prompt": "x", "temperature": -1}', '"tneg"'),
    ('{"id": "topp", "prompt": "x", "top_p": 2}', '"topp"'),
    ('{"id": "topk", "prompt": "x", "top_k": -2}', '"topk"'),
    ('{"id": "stop", "prompt": "x", "stop": 5}', '"stop"'),
    ('{"id": "stopl", "prompt": "x", "stop": ["a", 1]}', '"stopl"'),
    ('{"id": "seed", "prompt": "x", "seed": "s"}', '"seed"'),
    ('{"id": "long", "prompt": "%s"}' % ("word " * 200), '"long"'),
    ('{"id": {"o": 1}, "prompt": "x"}', None),
    ('{"prompt": "x", "rep", 1}', None),
]
random.seed(8)
lines, bad_at, good = [], {}, []
for n in range(1, 10001):
    if n % 10 == 3:
        text, want_id = BAD[(n // 10) % len(BAD)]
        lines.append(text)
        bad_at[n] = want_id if want_id is not None else str(n)
        if text.startswith('{"id": {"o": 1}'):
            bad_at[n] = None  # an object id may be echoed or replaced: only the line is checked
    else:
        rec = {"id": "g%d" % n, "prompt": "Item %d is %s" % (n, random.choice(["red", "a cat", "here"]))}
        lines.append(json.dumps(rec))
        good.append(rec)
inp = os.path.join(TMP, "in.jsonl")
with open(inp, "w") as f:
    f.write("\n".join(lines) + "\n")
gin = os.path.join(TMP, "good.jsonl")
with open(gin, "w") as f:
    f.write("\n".join(json.dumps(r) for r in good) + "\n")


def run(path, out):
    p = subprocess.run([PB, "-q", "--model", model, "--in", path, "--out", out, "--max-tokens", "1",
                        "-b", "16"], capture_output=True)
    return p.returncode, [json.loads(l) for l in open(out)] if os.path.exists(out) else []


rc, recs = run(inp, os.path.join(TMP, "out.jsonl"))
check(rc == 3, "exit %d with error records, not 3" % rc)
check(len(recs) == 10000, "%d output records for 10000 lines" % len(recs))
rc2, ref = run(gin, os.path.join(TMP, "good.out"))
check(rc2 == 0 and len(ref) == len(good), "good lines alone: exit %d, %d records" % (rc2, len(ref)))
ref_by_id = {r["id"]: r for r in ref}
n_err = 0
for n, r in enumerate(recs, 1):
    if n in bad_at:
        ok = "error" in r and r["error"].get("line") == n and r["error"].get("message")
        want = bad_at[n]
        if ok and want is not None:
            ok = json.dumps(r["id"]) == want
        check(ok, "line %d: expected an error record with id %s: %s" % (n, want, json.dumps(r)[:200]))
        n_err += "error" in r
    else:
        want = ref_by_id.get("g%d" % n)
        check(want is not None and r == want, "line %d: %s != %s" % (n, json.dumps(r)[:200], want))
check(n_err == 1000, "%d error records, not 1000" % n_err)
shutil.rmtree(TMP, ignore_errors=True)
print("malformed: %d records, %d errors; %d failures" % (len(recs), n_err, failures))
sys.exit(1 if failures else 0)
