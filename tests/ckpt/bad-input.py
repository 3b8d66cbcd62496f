#!/usr/bin/env python3
"""Bad checkpoints and configs: each gives one clear message naming the file
(and tensor or field), exit status 2, and no crash (this runs under ASan/UBSan
in the sanitizer build). A pickle naming a global outside the allow-list must
never run code."""
import json
import os
import shutil
import struct
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import PIPPY, TMP, TOOL, check, finish, gen  # noqa: E402

base_st = gen(os.path.join(TMP, "base-st"), "--family", "gpt2", "--layers", "2", "--hidden", "16", "--heads", "2",
              "--vocab", "32", "--max-pos", "16")
base_sh = gen(os.path.join(TMP, "base-sh"), "--family", "llama", "--layers", "4", "--hidden", "16", "--heads", "2",
              "--vocab", "32", "--shards", "4")
base_bin = gen(os.path.join(TMP, "base-bin"), "--family", "gpt2", "--layers", "2", "--hidden", "16", "--heads", "2",
               "--vocab", "32", "--max-pos", "16", "--format", "bin")
n_case = [0]


def variant(base):
    n_case[0] += 1
    d = os.path.join(TMP, "case%d" % n_case[0])
    shutil.copytree(base, d)
    return d


def expect(label, cmd, *needles):
    r = subprocess.run(cmd, capture_output=True, text=True)
    err = r.stderr
    check(r.returncode == 2, "%s: exit %d (want 2): %s" % (label, r.returncode, err.strip()))
    for n in needles:
        check(n in err, "%s: message lacks %r: %s" % (label, n, err.strip()))
    check("Sanitizer" not in err and "runtime error" not in err, "%s: sanitizer report" % label)
    check(len([l for l in err.splitlines() if l.strip()]) == 1, "%s: want one message line: %s" % (label, err))


def plan(d):
    return [PIPPY, "plan", "--model", d, "--ranks", "2"]


def load(d, stage=0, ranks=2):
    return [TOOL, "load", d, str(ranks), str(stage)]


def st_parts(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def st_write(path, header, data, hlen=None):
    h = json.dumps(header).encode()
    with open(path, "wb") as fp:
        fp.write(struct.pack("<Q", len(h) if hlen is None else hlen) + h + data)


ST = "model.safetensors"
# --- safetensors ---
d = variant(base_st); p = os.path.join(d, ST)
raw = open(p, "rb").read(); open(p, "wb").write(raw[: len(raw) // 2])
expect("truncated safetensors", plan(d), p)
d = variant(base_st); p = os.path.join(d, ST); open(p, "wb").write(b"\x01\x02")
expect("file shorter than the length field", plan(d), p, "truncated")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
st_write(p, h, data, hlen=10 ** 9)
expect("header length past the end", plan(d), p, "past the end")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
h["transformer.wte.weight"]["data_offsets"][1] += 4 * 10 ** 6
st_write(p, h, data)
expect("offsets out of range", plan(d), p, "transformer.wte.weight", "out of range")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
order = sorted(((v["data_offsets"], k) for k, v in h.items() if k != "__metadata__"))
(b, e), second = order[1]
h[second]["data_offsets"] = [b - 4, e - 4]  # starts inside the tensor before it
st_write(p, h, data)
expect("overlapping offsets", plan(d), p, "overlap")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
h["transformer.h.1.ln_2.weight"]["shape"] = [17]
st_write(p, h, data)
expect("shape and size disagree", plan(d), p, "transformer.h.1.ln_2.weight", "span")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
h["transformer.h.0.attn.c_attn.bias"]["dtype"] = "F12"
st_write(p, h, data)
expect("unknown dtype", plan(d), p, "transformer.h.0.attn.c_attn.bias", "unknown dtype")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
h["transformer.h.0.attn.c_attn.bias"]["dtype"] = "F8_E5M2"
st_write(p, h, data)
expect("an FP8 tensor not read", plan(d), p, "transformer.h.0.attn.c_attn.bias", "F8_E5M2", "pre-quantized",
       "--weights-dtype int8")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
del h["transformer.h.1.mlp.c_fc.weight"]
st_write(p, h, data)  # now a hole in the buffer
expect("tensor removed from header (hole)", plan(d), p, "hole")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
b, e = h["transformer.h.1.mlp.c_fc.weight"]["data_offsets"]
h["zz.renamed"] = h.pop("transformer.h.1.mlp.c_fc.weight")
st_write(p, h, data)
expect("missing tensor", plan(d), p, "h.1.mlp.c_fc.weight", "missing")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
h["transformer.wte.weight"]["shape"] = [16, 32]
st_write(p, h, data)
expect("shape differs from config", plan(d), p, "transformer.wte.weight", "config.json")
d = variant(base_st); p = os.path.join(d, ST); h, data = st_parts(p)
open(p, "wb").write(struct.pack("<Q", 5) + b"{\"a\":" + data)
expect("header not JSON", plan(d), p, "JSON")

# --- sharded: missing shard, index naming an absent file, bad index ---
idx = "model.safetensors.index.json"
d = variant(base_sh); os.remove(os.path.join(d, "model-00004-of-00004.safetensors"))
expect("missing shard file", load(d, 1), "model-00004-of-00004.safetensors", idx)
d = variant(base_sh); j = json.load(open(os.path.join(d, idx)))
j["weight_map"]["model.norm.weight"] = "model-00009-of-00004.safetensors"
json.dump(j, open(os.path.join(d, idx), "w"))
expect("index naming an absent file", load(d, 1), "model-00009-of-00004.safetensors")
d = variant(base_sh); j = json.load(open(os.path.join(d, idx)))
del j["weight_map"]["model.layers.2.mlp.up_proj.weight"]
json.dump(j, open(os.path.join(d, idx), "w"))
expect("tensor missing from index", plan(d), idx, "layers.2.mlp.up_proj.weight", "missing")
d = variant(base_sh); j = json.load(open(os.path.join(d, idx)))
j["weight_map"]["model.norm.weight"] = "../../etc/passwd"
json.dump(j, open(os.path.join(d, idx), "w"))
expect("index escaping the folder", plan(d), idx, "model.norm.weight")
d = variant(base_sh); j = json.load(open(os.path.join(d, idx)))
j["weight_map"]["model.norm.weight"] = "model-00001-of-00004.safetensors"
json.dump(j, open(os.path.join(d, idx), "w"))
expect("index pointing at the wrong shard", load(d, 1), "model.norm.weight", "not in this file")
d = variant(base_sh); open(os.path.join(d, idx), "w").write('{"weight_map": [1, 2]}')
expect("index weight_map wrong type", plan(d), idx, "weight_map")
d = variant(base_sh)
expect("--index naming an absent file", plan(d) + ["--index", os.path.join(d, "nope.json")], "nope.json")

# --- config.json ---
for field, value, needle in (("hidden_size", "\"64\"", "hidden_size"), ("num_attention_heads", "2.5", "num_attention_heads"),
                             ("rope_scaling", '{"type": "yarn", "factor": 2}', "rope_scaling"),
                             ("rope_scaling", '{"type": "dynamic", "factor": 2}', "rope_scaling"),
                             ("tie_word_embeddings", "1", "tie_word_embeddings"),
                             ("eos_token_id", '[2, "x"]', "eos_token_id"),
                             ("hidden_act", '"tanh"', "hidden_act"),
                             ("model_type", '"t5"', "supported: gpt2"),
                             ("quantization_config", '{"quant_method": "gptq", "bits": 4}', "gptq"),
                             ("quantization_config", '{"quant_method": "awq", "bits": 4}', "--weights-dtype int8"),
                             ("quantization_config", '{"quant_method": "fp8", "fmt": "e5m2"}', "e4m3"),
                             ("quantization_config", '{"quant_method": "fp8", "weight_block_size": [128, 96]}',
                              "multiple of 64"),
                             ("quantization_config", '{"quant_method": "fp8", "weight_block_size": [128]}',
                              "weight_block_size"),
                             ("quantization_config", '{"quant_method": "fp8", "activation_scheme": "tensor"}',
                              "activation_scheme")):
    d = variant(base_sh); c = json.load(open(os.path.join(d, "config.json")))
    c[field] = json.loads(value)
    json.dump(c, open(os.path.join(d, "config.json"), "w"))
    expect("config %s=%s" % (field, value), plan(d), "config.json", needle)
d = variant(base_sh); open(os.path.join(d, "generation_config.json"), "w").write('{"top_k": "many"}')
expect("generation_config wrong type", plan(d), "generation_config.json", "top_k")
d = variant(base_st); c = json.load(open(os.path.join(d, "config.json"))); c["model_type"] = "bloom"
c["apply_residual_connection_post_layernorm"] = True
json.dump(c, open(os.path.join(d, "config.json"), "w"))
expect("bloom post-layernorm residual", plan(d), "apply_residual_connection_post_layernorm")

# --- FP8 checkpoints (quant_method fp8: F8_E4M3 matrices with scale_inv blocks): one file (the catalog reads
# every header) and shards (the index only: the loader finds the dtypes); a run loads the stage ---
TOK = os.path.join(os.environ.get("PB_TESTDATA") or os.path.join(os.path.dirname(__file__), "..", "data"),
                   "tokenizers", "llama2.json.zst")
base_f8 = gen(os.path.join(TMP, "base-f8"), "--family", "llama", "--layers", "2", "--hidden", "64", "--heads", "2",
              "--vocab", "32000", "--fp8", "16,64")
subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(base_f8, "tokenizer.json"), TOK], check=True)
base_f8sh = gen(os.path.join(TMP, "base-f8sh"), "--family", "llama", "--layers", "2", "--hidden", "64", "--heads",
                "2", "--vocab", "32", "--fp8", "128,128", "--shards", "3")
PROMPTS = os.path.join(TMP, "f8-in.jsonl")
open(PROMPTS, "w").write('{"id": 0, "prompt": [1, 2, 3], "max_tokens": 2}\n')


def run(d):
    return [PIPPY, "-q", "--model", d, "--in", PROMPTS, "--out", "-", "--no-weights-cache"]


r = subprocess.run(run(base_f8), capture_output=True, text=True)
check(r.returncode == 0, "the FP8 base runs: exit %d: %s" % (r.returncode, r.stderr.strip()))
Q = "layers.1.mlp.down_proj.weight"
for label, edit, cmd, needles in (
        ("scales missing", lambda h: h.update({"zz.renamed": h.pop("model.%s_scale_inv" % Q)}), plan,
         ("model." + Q, "_scale_inv")),
        ("scales of the wrong shape", lambda h: h["model.%s_scale_inv" % Q].update(shape=[6, 2]), plan,
         ("model.%s_scale_inv" % Q, "[6, 2]", "[4, 3]", "weight_block_size")),
        ("scales as F8_E8M0", lambda h: h["model.%s_scale_inv" % Q].update(dtype="F8_E8M0"), plan,
         ("model.%s_scale_inv" % Q, "F8_E8M0", "pre-quantized")),
        ("scales as I32", lambda h: h["model.%s_scale_inv" % Q].update(dtype="I32"), plan,
         ("model.%s_scale_inv" % Q, "I32"))):
    d = variant(base_f8); p = os.path.join(d, ST); h, data = st_parts(p)
    edit(h)
    st_write(p, h, data)
    expect("FP8 " + label, cmd(d), p, *needles)
for label, name, at, value, needles in (
        ("a NaN scale", "model.%s_scale_inv" % Q, 5, struct.pack("<f", float("nan")), ("_scale_inv", "element 5")),
        ("a negative scale", "model.%s_scale_inv" % Q, 0, struct.pack("<f", -0.5), ("_scale_inv", "element 0")),
        ("an e4m3 NaN byte", "model." + Q, 77, b"\xff", (Q, "element 77", "NaN"))):
    d = variant(base_f8); p = os.path.join(d, ST); h, data = st_parts(p)
    b = h[name]["data_offsets"][0] + at * len(value)
    st_write(p, h, data[:b] + value + data[b + len(value):])
    expect("FP8 " + label, run(d), name, *needles)
d = variant(base_f8); c = json.load(open(os.path.join(d, "config.json"))); del c["quantization_config"]
json.dump(c, open(os.path.join(d, "config.json"), "w"))
expect("FP8 tensors without quantization_config", plan(d), "F8_E4M3", "quant_method")
d = variant(base_f8sh); c = json.load(open(os.path.join(d, "config.json"))); del c["quantization_config"]
json.dump(c, open(os.path.join(d, "config.json"), "w"))
expect("FP8 shards without quantization_config", load(d, 0, 1), "F8_E4M3", "quant_method")
d = variant(base_f8sh); j = json.load(open(os.path.join(d, idx)))
del j["weight_map"]["model.%s_scale_inv" % Q]
json.dump(j, open(os.path.join(d, idx), "w"))
expect("FP8 shards: scales missing from the index", load(d, 0, 1), "model." + Q, "F8_E4M3", "_scale_inv")
# compressed-tensors FP8 (float-quantized; scales X.weight_scale, one a row here): its other forms refused by name
base_ct = gen(os.path.join(TMP, "base-ct"), "--family", "llama", "--layers", "2", "--hidden", "64", "--heads", "2",
              "--vocab", "32", "--fp8", "channel", "--fp8-format", "compressed-tensors")
r = subprocess.run(plan(base_ct), capture_output=True, text=True)
check(r.returncode == 0, "the compressed-tensors base plans: exit %d: %s" % (r.returncode, r.stderr.strip()))
for label, edit, needle in (
        ("int4 packed", lambda q: q.update(format="pack-quantized"), "pack-quantized"),
        ("int8 weights", lambda q: q.update(format="int-quantized"), "int-quantized"),
        ("4-bit float weights", lambda q: q["config_groups"]["group_0"]["weights"].update(num_bits=4), "group_0"),
        ("group strategy", lambda q: q["config_groups"]["group_0"]["weights"].update(strategy="group", group_size=128),
         "group"),
        ("blocks of 32 columns", lambda q: q["config_groups"]["group_0"]["weights"].update(
            strategy="block", block_structure=[128, 32]), "multiple of 64"),
        ("2:4 sparsity", lambda q: q.update(sparsity_config={"format": "sparse-24-bitmask"}), "sparsity"),
        ("scales per block where rows are stored", lambda q: q["config_groups"]["group_0"]["weights"].update(
            strategy="block", block_structure=[128, 128]), "_scale")):
    d = variant(base_ct); c = json.load(open(os.path.join(d, "config.json")))
    edit(c["quantization_config"])
    json.dump(c, open(os.path.join(d, "config.json"), "w"))
    expect("compressed-tensors " + label, plan(d), needle)
d = variant(base_ct); p = os.path.join(d, ST); h, data = st_parts(p)
h["zz.renamed"] = h.pop("model.%s_scale" % Q)
st_write(p, h, data)
expect("compressed-tensors scales missing", plan(d), p, "model." + Q, "_scale")

d = variant(base_f8); c = json.load(open(os.path.join(d, "config.json")))
c["quantization_config"]["weight_block_size"] = [16, 128]
json.dump(c, open(os.path.join(d, "config.json"), "w"))
expect("FP8 scales of another block size", plan(d), "_scale_inv", "[4, 3]", "[4, 2]")

# --- PyTorch .bin ---
BIN = "pytorch_model.bin"
marker = os.path.join(TMP, "pwned")
evil = (b"\x80\x02cos\nsystem\n(X" + struct.pack("<I", len("touch " + marker)) + ("touch " + marker).encode() + b"tR.")
sys.path.insert(0, os.path.join(os.environ.get("PB_SRCDIR", "."), "contrib"))
import importlib.machinery  # noqa: E402
import importlib.util  # noqa: E402
loader = importlib.machinery.SourceFileLoader("pbgen", os.path.join(os.environ.get("PB_SRCDIR", "."), "contrib", "pb-make-checkpoint"))
spec = importlib.util.spec_from_loader("pbgen", loader)
pbgen = importlib.util.module_from_spec(spec)
loader.exec_module(pbgen)
d = variant(base_bin); p = os.path.join(d, BIN)
pbgen.write_zip(p, [("archive/data.pkl", evil), ("archive/byteorder", b"little")])
expect("pickle with a global outside the allow-list", plan(d), p, "os.system", "not allowed")
check(not os.path.exists(marker), "the pickle's code ran")
d = variant(base_bin); p = os.path.join(d, BIN)
open(p, "wb").write(b"\x80\x02\x8a\x0alz\xe8\x6a\x00\x00\x00\x00\x00\x00\x00")
expect("legacy torch.save format", plan(d), p, "legacy")
d = variant(base_bin); p = os.path.join(d, BIN); raw = open(p, "rb").read()
open(p, "wb").write(raw[: len(raw) - 30])
expect("truncated .bin", plan(d), p)
d = variant(base_bin); p = os.path.join(d, BIN)
pbgen.write_zip(p, [("archive/data.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01ctorch._utils\n_rebuild_tensor_v2\n"
                    b"q\x02((X\x07\x00\x00\x00storageq\x03ctorch\nFloatStorage\nq\x04X\x01\x00\x00\x000q\x05X\x03\x00\x00\x00cpuq\x06K\x04tq\x07QK\x00K\x08\x85K\x01\x85\x89)tRu."),
                   ("archive/byteorder", b"little"), ("archive/data/0", b"\x00" * 16)])
expect("view outside its storage", plan(d), p, "outside its storage")
d = variant(base_bin); p = os.path.join(d, BIN)
pbgen.write_zip(p, [("archive/data.pkl", b"\x80\x02}q\x00."), ("archive/byteorder", b"big")])
expect("big-endian .bin", plan(d), p, "byteorder")
d = variant(base_bin); p = os.path.join(d, BIN)
pbgen.write_zip(p, [("archive/data.pkl", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01"), ("archive/byteorder", b"little")])
expect("truncated pickle", plan(d), p, "truncated pickle")
finish()
