#!/usr/bin/env python3
"""Qwen3 and Phi-3 against HF transformers 5.x (make_goldens.NEW_SPECS).

usage: families_new.py qwen3|phi3 [SPEC ...]

For each spec of the family, golden.check: logits at every prompt position and
decode step within 1e-4 of HF (f32), 32-token free-running greedy equal to
generate(), 1 stage and 2-3 stages bit-identical. Then configs the code cannot
run are refused naming the field (`pippy-batch plan` on an edited config.json).
"""
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import golden  # noqa: E402
import make_goldens  # noqa: E402

# family -> [(description, base spec, edit of config.json, text the error must name)]
REFUSALS = {
    "qwen3": [
        ("unknown rope type", "qwen3-a",
         lambda c: c["rope_parameters"].update(rope_type="dynamic", factor=2.0), "dynamic"),
        ("rope_scaling without a type", "qwen3-b", lambda c: c.update(rope_scaling={"factor": 2.0}), "rope_scaling"),
    ],
    "phi3": [
        ("linear rope on Phi-3", "phi3-c",
         lambda c: c.update(rope_scaling={"type": "linear", "factor": 2.0}), "rope_parameters"),
        ("short_factor of the wrong length", "phi3-a",
         lambda c: c["rope_parameters"].update(short_factor=[1.0, 1.0]), "short_factor"),
        ("long_factor missing", "phi3-a", lambda c: c["rope_parameters"].pop("long_factor"), "long_factor"),
        ("partial_rotary_factor above 1", "phi3-a",
         lambda c: c["rope_parameters"].update(partial_rotary_factor=1.5), "partial_rotary_factor"),
    ],
}


def refused(tmp, pb, what, base, edit, needle):
    src = os.path.join(tmp, base, "model")
    bad = os.path.join(tmp, f"{base}-bad")
    os.makedirs(bad, exist_ok=True)
    for f in os.listdir(bad):
        os.remove(os.path.join(bad, f))
    for f in os.listdir(src):
        if f != "config.json":
            os.symlink(os.path.join(src, f), os.path.join(bad, f))
    c = json.load(open(os.path.join(src, "config.json")))
    edit(c)
    json.dump(c, open(os.path.join(bad, "config.json"), "w"))
    r = subprocess.run([pb, "plan", "--model", bad], capture_output=True, text=True)
    good = r.returncode != 0 and needle in r.stderr
    print(f"{what}: rc {r.returncode}: {r.stderr.strip()}" + ("" if good else f" FAIL (want '{needle}')"))
    return good


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in REFUSALS:
        sys.exit(__doc__)
    fam = sys.argv[1]
    tmp = os.environ.get("PB_TEST_TMP") or "/tmp"
    build = os.environ.get("PB_BUILDDIR", ".")
    harness = os.path.join(build, "tests", "forward", "fwd-harness")
    pb = os.environ.get("PIPPY_BATCH") or os.path.join(build, "pippy-batch")
    names = sys.argv[2:] or [n for n, s in make_goldens.NEW_SPECS.items() if s[0] == fam]
    import torch
    torch.set_num_threads(1)
    ok = True
    for n in names:
        ok &= golden.check(n, tmp, harness, 2)
    for what, base, edit, needle in REFUSALS[fam]:
        if base in names:
            ok &= refused(tmp, pb, what, base, edit, needle)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
