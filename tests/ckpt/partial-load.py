#!/usr/bin/env python3
"""Each rank reads only its own part: for every stage of a plan, a copy of the
model folder that holds only the shard files the plan lists for that stage
still loads; the files opened (verbose log) are exactly the plan's, the bytes
read are the plan's, and the tensors match the independent readers."""
import json
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PIPPY, TMP, check, compare_stage, finish, gen, load_stage, state_dict  # noqa: E402

for fmt, extra in (("safetensors", []), ("bin", ["--bin-views"])):
    for fam in ("llama", "gpt2"):
        src = gen(os.path.join(TMP, "%s-%s" % (fam, fmt)), "--family", fam, "--layers", "6", "--hidden", "32",
                  "--heads", "4", "--format", fmt, "--shards", "5", "--dtype", "f16", *extra)
        sd = state_dict(src)
        ranks = 3
        plan = json.loads(subprocess.run([PIPPY, "plan", "--model", src, "--ranks", str(ranks), "--json"],
                                         check=True, capture_output=True, text=True).stdout)
        all_shards = sorted(f for f in os.listdir(src) if f.endswith((".safetensors", ".bin")))
        for st in plan["stages"]:
            files = [os.path.basename(f["path"]) for f in st["files"]]
            check(len(files) < len(all_shards), "%s/%s stage %d opens every shard" % (fam, fmt, st["stage"]))
            d = os.path.join(TMP, "%s-%s-stage%d" % (fam, fmt, st["stage"]))
            os.makedirs(d)
            for f in os.listdir(src):
                if f not in all_shards or f in files:
                    shutil.copyfile(os.path.join(src, f), os.path.join(d, f))
            res, log = load_stage(d, ranks, st["stage"], verbose=True)
            opened = [l.split("opened ", 1)[1] for l in log.splitlines() if "opened " in l]
            check([os.path.basename(p) for p in opened] == files,
                  "%s/%s stage %d opened %s, plan says %s" % (fam, fmt, st["stage"], opened, files))
            check(res["layers"] == st["layers"], "%s/%s stage %d layers" % (fam, fmt, st["stage"]))
            if fmt == "safetensors":
                check(res["bytes_read"] == sum(f["bytes"] for f in st["files"]) == st["param_bytes"],
                      "%s/%s stage %d read %d bytes, plan says %d" % (fam, fmt, st["stage"], res["bytes_read"],
                                                                       st["param_bytes"]))
            for t in res["tensors"].values():
                ref = sd[t["name"]]
                check(abs(float(ref.sum()) - t["sum"]) < 1e-5 * max(1, abs(float((ref * ref).sum()))),
                      "%s/%s stage %d: %s differs" % (fam, fmt, st["stage"], t["name"]))
            # the plan computed inside the partial copy is the same (index only)
            p2 = json.loads(subprocess.run([PIPPY, "plan", "--model", d, "--ranks", str(ranks), "--json"],
                                           check=True, capture_output=True, text=True).stdout)
            check([s["layers"] for s in p2["stages"]] == [s["layers"] for s in plan["stages"]],
                  "%s/%s: plan differs without the other shards" % (fam, fmt))
            # and a stage whose files were removed does fail, naming the file
            other = (st["stage"] + 1) % ranks
            missing = [os.path.basename(f["path"]) for f in plan["stages"][other]["files"]
                       if os.path.basename(f["path"]) not in files]
            if missing:
                r = subprocess.run([os.path.join(os.environ.get("PB_BUILDDIR", "."), "tests/ckpt/ckpt-tool"), "load",
                                    d, str(ranks), str(other)], capture_output=True, text=True)
                check(r.returncode == 2 and missing[0] in r.stderr,
                      "%s/%s: stage %d without %s: rc %d, %s" % (fam, fmt, other, missing[0], r.returncode, r.stderr))
finish()
