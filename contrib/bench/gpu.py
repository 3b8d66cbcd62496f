#!/usr/bin/env python3
"""GPU benchmark of pippy-batch --device cuda beside the GPU's own limits and
transformers generate(), measured in one run. Figures only, never pass/fail.

Run on the GPU machine, with gpu-pack carried (sh contrib/gpu/pack.sh here):
    python3 contrib/bench/gpu.py [--big] [--tokens N] [--pippy PATH]
Exits 77 when no GPU is visible (as on a machine without one).

Models, made here by transformers (from_config with its random init, bf16,
save_pretrained), with the Llama-2 tokenizer (vocabulary padded where the
shape's is larger):
  llama-1.1b  TinyLlama-1.1B's shape: hidden 2048, 22 layers, 32 heads,
              4 KV heads, FFN 5632, vocab 32000 (about 2.2 GB)
  llama-8b    Llama-3-8B's shape: hidden 4096, 32 layers, 32 heads, 8 KV
              heads, FFN 14336, vocab 128256 (about 16 GB; only with --big,
              it costs a few minutes to write and load)
Measures, for each model:
  decode_bN     N sequences of a short prompt, --tokens each (ignore_eos):
                tokens after the first of each / time after it (aggregate tok/s)
  decode_bN_gbs the bandwidth that rate achieves: (matmul weight bytes + the
                KV cache bytes read at the mean context) per step / step time
  prefill       --prefill-batch prompts of --prefill-tokens each, 1 token out:
                prompt tokens / prefill time, and the TFLOP/s it achieves
                (2 x matmul weights per token + attention at the mean context;
                the LM head only for the last token)
  hf_bN         transformers generate() on the GPU, bf16, KV cache, greedy,
                the same prompt ids and tokens: aggregate tok/s over the same
                window (tokens after the first / time after the first)
  load_gbs      weight bytes / (process wall - generation wall) of a decode run,
                beside file_read_gbs, a plain read of the same files just after
  vllm          measured when `import vllm` works there, else reported absent
Limits, measured in the same run with torch:
  copy_gbs      device-to-device copy of 2 GiB: (read + written bytes) / time
  gemm_tflops   bf16 matmul (cuBLAS through torch) at the model's prefill
                shapes (M = the tokens pippy-batch puts in one micro-batch),
                total flops / total time
Writes the table to stdout and JSON to $OUT/gpu-bench.json (or --json).
--dry-run-cpu runs the script's whole path on the CPU with a tiny model
(figures meaningless; a check of the script where there is no GPU).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

DEV = "cuda"
SHAPES = {
    "tiny-dry-run": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=32000, max_position_embeddings=1024, rope_theta=10000.0,
                         rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "llama-1.1b": dict(hidden_size=2048, num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       intermediate_size=5632, vocab_size=32000, max_position_embeddings=2048, rope_theta=10000.0,
                       rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
    "llama-8b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                     intermediate_size=14336, vocab_size=128256, max_position_embeddings=8192, rope_theta=500000.0,
                     rms_norm_eps=1e-5, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def no_gpu(why):
    print(f"gpu.py: SKIP: no GPU visible ({why}); run it on a machine with a GPU")
    sys.exit(77)


# ---------------------------------------------------------------- setup

def pack_env(pack):
    """The environment contrib/gpu/env.sh makes for the pack's programs."""
    r = subprocess.run(["bash", "-c", f'. "{SRC}/contrib/gpu/env.sh" && env -0'],
                       env=dict(os.environ, PACK=pack), capture_output=True, check=True)
    return dict(kv.split("=", 1) for kv in r.stdout.decode().split("\0") if "=" in kv)


def make_model(name, root, tok_json):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    d = os.path.join(root, name)
    if os.path.exists(os.path.join(d, "config.json")):
        return d
    cfg = AutoConfig.for_model("llama", **SHAPES[name])
    torch.manual_seed(0)
    t = time.perf_counter()
    with torch.device(DEV):
        m = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    m.save_pretrained(d, max_shard_size="4GB")
    del m
    if DEV == "cuda":
        torch.cuda.empty_cache()
    shutil.copyfile(tok_json, os.path.join(d, "tokenizer.json"))
    log(f"{name}: made in {time.perf_counter() - t:.1f}s")
    return d


def facts(name):
    c = SHAPES[name]
    H, L, nh, nkv, I, V = (c["hidden_size"], c["num_hidden_layers"], c["num_attention_heads"],
                           c["num_key_value_heads"], c["intermediate_size"], c["vocab_size"])
    hd = H // nh
    per_layer = H * (nh * hd) + 2 * H * (nkv * hd) + (nh * hd) * H + 3 * H * I
    return {"H": H, "L": L, "heads": nh, "kv_heads": nkv, "head_dim": hd, "I": I, "V": V,
            "layer_params": per_layer, "matmul_params": L * per_layer + V * H,
            "shapes": [("qkv", H, (nh + 2 * nkv) * hd), ("o", nh * hd, H), ("gate_up", H, 2 * I), ("down", I, H)]}


def prompt_of(tk, want):
    """A text of exactly `want` tokens (special tokens included)."""
    pool = ("the quick brown fox jumps over the lazy dog while a small cat sleeps in the warm sun " * want).split()
    n = lambda t: len(tk.encode(t).ids)  # noqa: E731
    lo, hi = 1, len(pool)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if n(" ".join(pool[:mid])) <= want else (lo, mid - 1)
    text = " ".join(pool[:lo])
    while n(text) < want:
        text += " a"
    return text


# ---------------------------------------------------------------- limits

class Timer:
    """Seconds of the work between start and stop: CUDA events on the GPU."""

    def __init__(self):
        import torch
        self.torch = torch
        if DEV == "cuda":
            self.e0, self.e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)

    def start(self):
        if DEV == "cuda":
            self.e0.record()
        else:
            self.t = time.perf_counter()

    def stop(self):
        if DEV == "cuda":
            self.e1.record()
            self.torch.cuda.synchronize()
            return self.e0.elapsed_time(self.e1) / 1e3
        return time.perf_counter() - self.t


def gpu_limits(f, m_tokens):
    import torch
    res = {}
    n = (1 << 30) if DEV == "cuda" else (1 << 24)  # 2 GiB of bf16 on the GPU
    x = torch.empty(n, dtype=torch.bfloat16, device=DEV)
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    tm = Timer()
    tm.start()
    for _ in range(10):
        y.copy_(x)
    res["copy_gbs"] = 2 * 2 * n * 10 / tm.stop() / 1e9
    del x, y
    flops = secs = 0.0
    per = {}
    for nm, K, N in f["shapes"]:
        a = torch.randn(m_tokens, K, dtype=torch.bfloat16, device=DEV)
        b = torch.randn(K, N, dtype=torch.bfloat16, device=DEV)
        for _ in range(3):
            a @ b
        tm.start()
        for _ in range(10):
            a @ b
        s = tm.stop() / 10
        per[nm] = round(2 * m_tokens * K * N / s / 1e12, 3)
        flops += 2 * m_tokens * K * N
        secs += s
    res["gemm_tflops"] = flops / secs / 1e12
    res["gemm_tflops_by_shape"] = per
    res["gemm_m"] = m_tokens
    if DEV == "cuda":
        torch.cuda.empty_cache()
    return res


# ---------------------------------------------------------------- pippy-batch

def run_pippy(pb, env, model, prompts, tokens, batch, ctx, tmp):
    inp, out, met = (os.path.join(tmp, x) for x in ("in.jsonl", "out.jsonl", "m.json"))
    with open(inp, "w") as fp:
        for p in prompts:
            fp.write(json.dumps({"prompt": p, "max_tokens": tokens, "ignore_eos": True}) + "\n")
    cmd = [pb, "-v", "--device", DEV, "--model", model, "--in", inp, "--out", out, "--force",
           "--batch-size", str(batch), "--max-seq-len", str(ctx), "--metrics", met,
           "--no-prefix-sharing"]  # the same prompt B times: every token computed (the figures count them)
    t = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    wall = time.perf_counter() - t
    if r.returncode != 0:
        raise RuntimeError(f"pippy-batch failed ({r.returncode}): {' '.join(cmd)}: {r.stderr.strip()[-1500:]}")
    with open(met) as fp:
        m = json.load(fp)
    m["_wall"] = wall
    m["_stderr"] = r.stderr
    return m


def kv_elem_bytes(stderr, f, batch, ctx):
    """The KV element size pippy-batch's backend keeps, from the -v stage line."""
    import re
    mm = re.search(r"KV ([0-9.]+) (KiB|MiB|GiB)", stderr)
    if not mm:
        return 2
    b = float(mm.group(1)) * {"KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[mm.group(2)]
    per = batch * ctx * 2 * f["L"] * f["kv_heads"] * f["head_dim"]
    return 4 if b / per > 3 else 2


def bench_pippy(pb, env, d, f, a, tk, tmp):
    res = {}
    short = "Benchmark prompt: the quick brown fox jumps over the lazy dog"
    P = len(tk.encode(short).ids)
    N = a.tokens
    for B in a.batches:
        m = run_pippy(pb, env, d, [short] * B, N, B, P + N, tmp)
        comp, recs = m["completion_tokens"], m["records"]
        dec_s = comp / m["decode_tokens_per_second"] if m["decode_tokens_per_second"] else 0
        tps = (comp - recs) / dec_s if dec_s else 0
        kvb = kv_elem_bytes(m["_stderr"], f, B, P + N)
        ctx_mean = P + N / 2
        step_bytes = 2 * f["matmul_params"] + B * ctx_mean * 2 * f["L"] * f["kv_heads"] * f["head_dim"] * kvb
        step_s = B / tps if tps else 0
        res[f"decode_b{B}"] = tps
        res[f"decode_b{B}_gbs"] = step_bytes / step_s / 1e9 if step_s else 0
        res["load_s"] = m["_wall"] - m["wall_seconds"]  # start, tokenizer, plan, weights to the GPU
        res["kv_bytes"] = kvb
        log(f"  pippy decode b{B}: {tps:.1f} tok/s")
    res["load_gbs"] = 2 * f["matmul_params"] / res["load_s"] / 1e9 if res.get("load_s") else 0
    text = prompt_of(tk, a.prefill_tokens)
    T = len(tk.encode(text).ids)
    m = run_pippy(pb, env, d, [text] * a.prefill_batch, 1, a.prefill_batch, T + 1, tmp)
    ptps = m["prefill_tokens_per_second"]
    flops_tok = 2 * f["L"] * f["layer_params"] + 2 * 2 * f["L"] * f["heads"] * f["head_dim"] * (T / 2)
    res["prefill"] = ptps
    res["prefill_tflops"] = ptps * flops_tok / 1e12
    res["prefill_tokens"] = T
    log(f"  pippy prefill: {ptps:.0f} tok/s")
    return res


# ---------------------------------------------------------------- transformers

def file_read_gbs(d):
    """A plain read of the model's safetensors files (the page cache as pippy-batch found it)."""
    files = [os.path.join(d, x) for x in sorted(os.listdir(d)) if x.endswith(".safetensors")]
    n = 0
    t = time.perf_counter()
    for fn in files:
        with open(fn, "rb", buffering=0) as fp:
            while True:
                b = fp.read(64 << 20)
                if not b:
                    break
                n += len(b)
    return n / (time.perf_counter() - t) / 1e9


def bench_hf(d, a, tk):
    import torch
    from transformers import AutoModelForCausalLM
    res = {}
    m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).to(DEV).eval()
    short = "Benchmark prompt: the quick brown fox jumps over the lazy dog"
    ids = torch.tensor([tk.encode(short).ids], device=DEV)
    N = a.tokens

    def sync():
        if DEV == "cuda":
            torch.cuda.synchronize()

    def gen(B, n):
        x = ids.expand(B, -1).contiguous()
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            m.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, min_new_tokens=n, do_sample=False,
                       use_cache=True, eos_token_id=None, pad_token_id=0)
        sync()
        return time.perf_counter() - t

    for B in a.batches:
        gen(B, 4)  # warm-up
        t1 = gen(B, 1)
        tn = gen(B, N)
        res[f"hf_b{B}"] = B * (N - 1) / (tn - t1) if tn > t1 else 0
        log(f"  transformers b{B}: {res[f'hf_b{B}']:.1f} tok/s")
    del m
    if DEV == "cuda":
        torch.cuda.empty_cache()
    return res


def bench_vllm():
    try:
        import vllm  # noqa: F401
    except Exception as e:
        return {"vllm": f"absent ({type(e).__name__}: {str(e)[:80]})"}
    return {"vllm": "importable but not measured by this script yet"}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pack", default=os.path.join(SRC, "gpu-pack"))
    ap.add_argument("--pippy", help="pippy-batch to measure (default: the pack's)")
    ap.add_argument("--big", action="store_true", help="also the Llama-3-8B shape (minutes)")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per sequence in the decode runs")
    ap.add_argument("--batches", default="1,64")
    ap.add_argument("--prefill-tokens", type=int, default=512)
    ap.add_argument("--prefill-batch", type=int, default=16)
    ap.add_argument("--work", help="folder for the models (default: a temporary one)")
    ap.add_argument("--json", help="JSON output (default: $OUT/gpu-bench.json, else ./gpu-bench.json)")
    ap.add_argument("--dry-run-cpu", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global DEV
    if a.dry_run_cpu:
        DEV = "cpu"
    a.batches = [int(x) for x in a.batches.split(",")]

    try:
        import torch
    except Exception as e:
        if shutil.which("nvidia-smi") and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode == 0:
            print(f"gpu.py: a GPU is there but python3 has no torch ({e})", file=sys.stderr)
            return 1
        no_gpu(f"no torch: {e}")
    if DEV == "cuda" and not torch.cuda.is_available():
        no_gpu("torch.cuda.is_available() is False")
    t0 = time.perf_counter()
    if DEV == "cuda":
        props = torch.cuda.get_device_properties(0)
        out = {"gpu": props.name, "gpu_memory_gib": round(props.total_memory / 2**30, 1)}
    else:
        out = {"gpu": "none (--dry-run-cpu: figures meaningless)", "gpu_memory_gib": 0}
    out.update({"torch": torch.__version__, "models": {}, "notes": []})
    try:
        import transformers
        out["transformers"] = transformers.__version__
    except Exception as e:
        out["notes"].append(f"transformers absent: {e}")
        transformers = None
    pb = a.pippy or os.path.join(a.pack, "pippy-batch")
    env = dict(os.environ)
    if not a.pippy:
        if not os.path.exists(pb) and not os.path.exists(pb + ".xz"):
            out["notes"].append(f"no pack at {a.pack} (sh contrib/gpu/pack.sh): pippy-batch not measured")
            pb = None
        else:
            env = pack_env(os.path.abspath(a.pack))
            pb = os.path.join(env["PACK"], "pippy-batch")  # env.sh's unpacked copy where the pack holds .xz
    if pb:
        v = subprocess.run([pb, "--version"], env=env, capture_output=True, text=True)
        out["pippy_version"] = v.stdout.strip().replace("\n", "; ")
        if DEV == "cuda" and "backend built" not in v.stdout:
            out["notes"].append("this pippy-batch has no CUDA backend: not measured")
            pb = None
    tok_json = os.path.join(a.pack, "tok", "llama2.json")
    if not os.path.exists(tok_json):
        tok_json = os.path.join(tempfile.mkdtemp(prefix="pbtok."), "llama2.json")
        subprocess.run(["zstd", "-q", "-d", "-o", tok_json, os.path.join(SRC, "tests/data/tokenizers/llama2.json.zst")],
                       check=True)
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(tok_json)
    out.update(bench_vllm())

    work = a.work or tempfile.mkdtemp(prefix="pbgpubench.")
    names = ["llama-1.1b"] + (["llama-8b"] if a.big else [])
    if DEV == "cpu":
        names = ["tiny-dry-run"]
    for name in names:
        log(f"{name}:")
        f = facts(name)
        r = {"weight_bytes": 2 * f["matmul_params"]}
        if transformers is None:
            out["models"][name] = r
            continue
        d = make_model(name, work, tok_json)
        # rows pippy-batch puts in one micro-batch (stage.h: PB_BATCH_TOKENS_GPU, _CPU on the dry run's CPU)
        mbt = max(512 if a.dry_run_cpu else 2048, a.prefill_batch)
        r.update(gpu_limits(f, min(mbt, a.prefill_batch * a.prefill_tokens)))
        if pb:
            with tempfile.TemporaryDirectory(prefix="pbrun.") as tmp:
                try:
                    r["pippy"] = bench_pippy(pb, env, d, f, a, tk, tmp)
                except Exception as e:
                    r["pippy"] = {"error": str(e)[-1500:]}
                    log(f"  pippy-batch failed: {str(e)[-600:]}")
        r["file_read_gbs"] = file_read_gbs(d)
        r["transformers"] = bench_hf(d, a, tk)
        out["models"][name] = r
        if not a.work:
            shutil.rmtree(d, ignore_errors=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)

    # ---- table ----
    print(f"\nGPU {out['gpu']} ({out['gpu_memory_gib']} GiB), torch {out['torch']}, "
          f"transformers {out.get('transformers', '-')}, vLLM: {out['vllm']}")
    hdr = f"{'model':<12} {'what':<34} {'pippy-batch':>12} {'limit / peer':>14} {'ratio':>7} {'goal':>6}"
    print(hdr)
    print("-" * len(hdr))
    for name, r in out["models"].items():
        p = r.get("pippy", {})
        h = r.get("transformers", {})

        def row(what, mine, ref, goal=""):
            ratio = f"{mine / ref:.2f}" if isinstance(mine, (int, float)) and ref else "-"
            fm = f"{mine:.1f}" if isinstance(mine, (int, float)) else "-"
            fr = f"{ref:.1f}" if isinstance(ref, (int, float)) else "-"
            print(f"{name:<12} {what:<34} {fm:>12} {fr:>14} {ratio:>7} {goal:>6}")
        # the goals of issue 14: batch-1 decode at 70% of the copy bandwidth, prefill at
        # 60% of the GEMM rate, 3x transformers' tok/s at batch 64
        for B in a.batches:
            row(f"decode b{B} GB/s vs copy", p.get(f"decode_b{B}_gbs"), r.get("copy_gbs"), ">=0.70" if B == 1 else "")
            row(f"decode b{B} tok/s vs transformers", p.get(f"decode_b{B}"), h.get(f"hf_b{B}"),
                ">=3.00" if B == 64 else "")
        row("prefill TFLOP/s vs cuBLAS GEMM", p.get("prefill_tflops"), r.get("gemm_tflops"), ">=0.60")
        row("load GB/s vs file read (warm)", p.get("load_gbs"), r.get("file_read_gbs"))
        if "error" in p:
            print(f"{name:<12} pippy-batch failed: {p['error'][-300:]}")
    for n in out["notes"]:
        print("note:", n)
    print(f"({out['seconds']} s)")
    path = a.json or os.path.join(os.environ.get("OUT") or ".", "gpu-bench.json")
    with open(path, "w") as fp:
        json.dump(out, fp, indent=1)
    print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
