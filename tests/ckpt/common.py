"""Helpers shared by the checkpoint tests (imported from the test scripts)."""
import json
import os
import subprocess
import sys

SRC = os.environ.get("PB_SRCDIR", os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
BUILD = os.environ.get("PB_BUILDDIR", ".")
TMP = os.environ.get("PB_TEST_TMP") or "/tmp"
TOOL = os.path.join(BUILD, "tests", "ckpt", "ckpt-tool")
PIPPY = os.environ.get("PIPPY_BATCH", os.path.join(BUILD, "pippy-batch"))
GEN = os.path.join(SRC, "contrib", "pb-make-checkpoint")

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, flush=True)


def finish():
    if failures:
        print("%d failure(s)" % len(failures))
        sys.exit(1)
    print("ok")
    sys.exit(0)


def gen(out, *args):
    subprocess.run([sys.executable, GEN, "--out", out] + list(args), check=True)
    return out


def tool(*args, env=None):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([TOOL] + [str(a) for a in args], capture_output=True, text=True, env=e)


def load_stage(model, ranks, stage, index=None, verbose=False):
    args = ["load", model, ranks, stage] + ([index] if index else [])
    r = tool(*args, env={"PB_VERBOSE": "1"} if verbose else None)
    if r.returncode != 0:
        raise RuntimeError("ckpt-tool %s failed (%d): %s" % (args, r.returncode, r.stderr))
    return json.loads(r.stdout), r.stderr


def state_dict(model):
    """Every tensor of a checkpoint folder, read with HF safetensors / torch.load (float64 numpy)."""
    import torch
    from safetensors.numpy import load_file
    out = {}
    names = sorted(os.listdir(model))
    for n in names:
        p = os.path.join(model, n)
        if n.endswith(".safetensors"):
            from safetensors.torch import load_file as tload
            for k, v in tload(p).items():
                out[k] = v.to(torch.float64).numpy()
        elif n.endswith(".bin"):
            for k, v in torch.load(p, map_location="cpu").items():
                out[k] = v.to(torch.float64).numpy()
    return out


def compare_stage(model, ranks, sd, label, rtol=1e-6):
    """Load every stage; each tensor's sum/sumsq must match the reference state dict."""
    seen = set()
    for s in range(ranks):
        res, _ = load_stage(model, ranks, s)
        for canon, t in res["tensors"].items():
            ref = sd.get(t["name"])
            check(ref is not None, "%s: stage %d tensor %s not in reference" % (label, s, t["name"]))
            if ref is None:
                continue
            check(list(ref.shape) == t["shape"], "%s: %s shape %s vs %s" % (label, t["name"], t["shape"], list(ref.shape)))
            rs, rs2 = float(ref.sum()), float((ref * ref).sum())
            ok = abs(rs - t["sum"]) <= rtol * max(1.0, abs(rs2)) + 1e-6 and abs(rs2 - t["sumsq"]) <= rtol * max(1.0, rs2)
            check(ok, "%s: %s checksum %g/%g vs reference %g/%g" % (label, t["name"], t["sum"], t["sumsq"], rs, rs2))
            check(abs(float(ref.reshape(-1)[0]) - t["first"]) <= 1e-6 * max(1, abs(t["first"])) if ref.size else True,
                  "%s: %s first element" % (label, t["name"]))
            seen.add(t["name"])
    return seen


def save_bin(model, d, max_shard_size="8KB"):
    """Write model into d as PyTorch .bin files, as transformers 4.x's
    save_pretrained(safe_serialization=False) did (5.x writes only safetensors):
    save_pretrained's safetensors shards (checkpoint tensor names, e.g. GPT-NeoX's
    embed_out) become pytorch_model.bin, or pytorch_model-0000K-of-0000N.bin with
    pytorch_model.bin.index.json."""
    import torch
    from safetensors.torch import load_file
    model.save_pretrained(d, max_shard_size=max_shard_size)
    index = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(index):
        torch.save(load_file(os.path.join(d, "model.safetensors")), os.path.join(d, "pytorch_model.bin"))
        os.remove(os.path.join(d, "model.safetensors"))
        return
    with open(index) as f:
        idx = json.load(f)
    rename = {}
    for st in sorted(set(idx["weight_map"].values())):
        # model-00001-of-00004.safetensors -> pytorch_model-00001-of-00004.bin
        rename[st] = "pytorch_" + st[:-len(".safetensors")] + ".bin"
        torch.save(load_file(os.path.join(d, st)), os.path.join(d, rename[st]))
        os.remove(os.path.join(d, st))
    idx["weight_map"] = {k: rename[v] for k, v in idx["weight_map"].items()}
    with open(os.path.join(d, "pytorch_model.bin.index.json"), "w") as f:
        json.dump(idx, f, indent=2)
    os.remove(index)
