#!/usr/bin/env python3
"""pippy-batch beside llama.cpp and PyTorch, and beside the machine's limits,
in one run. Prints a table and writes JSON. Figures only, never pass/fail.

Peers, each with the same number of threads, greedy, every sequence
generating the same number of tokens:
  llama.cpp  through llama-cpp-python (built from source for this CPU by
             contrib/bench/setup-peers.sh in its own venv), on a GGUF made by
             llama.cpp's own convert_hf_to_gguf.py from the same HF folder at
             the same dtype; driven through its C API (llama_decode on a
             multi-sequence batch), outputs argmax'ed with numpy. The long
             prompts run in a context of one sequence; the batches in a
             context where each sequence has its own KV cells (kv_unified
             off; until session 35 they shared one buffer, so every step's
             attention read all sequences' cells through a mask: llama.cpp's
             batch 64 ran at 0.35-0.45x of this; PB_LLAMA_KV_UNIFIED=1 brings
             that back for comparison).
  PyTorch    eager, transformers 5.x `generate` with the KV cache, from the
             project's .venv.
Models: the real SmolLM2-135M (bf16, contrib/pb-get-smollm2), a GPT-2-124M
shape (f32 and f16) and a TinyLlama-1.1B shape (bf16: hidden 2048, 22 layers,
32 heads, 4 KV heads, FFN 5632, vocab 32000), made by HF transformers
(from_config with its random init, save_pretrained in the dtype), and a small
llama from contrib/pb-make-checkpoint for --quick.

Measures (median of --runs, peers interleaved within each run; below each
model's table, each program's lowest and highest run of prefill and every
batch, so that a median ratio can be read beside the spread behind it):
  load_s       pippy: process wall minus generation wall (start, tokenizer,
               plan, weights); peers: model + context construction. Each
               peer's weight files are read into the page cache before its
               runs, so that a load is the loader's time, not the disk's
               (llama.cpp maps its GGUF and reads it only as it computes;
               the peers' runs and PyTorch's memory evict each other's
               pages)
  load_cached_s  pippy: load_s of the prefill run made a second time with
               --weights-cache (the packed weights mapped from the file the
               first wrote); peers: their load_s
  prefill      one 512-token prompt: 512 / time to its first token (tok/s);
               every peer: the second of two such prompts in one process
               (the first touches fresh scratch and KV memory and, for
               PyTorch, creates its kernels for the shapes; its figure is
               prefill_first in the JSON). Until session 19 the peers' figure
               was their first long prompt (after a short warm-up), whose
               time varied 2x between runs for PyTorch.
  ttft_s       that time to first token
  decode_bN    N sequences of a short prompt, tokens after the first of each
               / time after the first token (aggregate tok/s)
  decode_ctx   with --context N: one sequence of an N-token prompt, tokens
               after its first / time after it (tok/s): batch-1 decode where
               each step also reads N positions of KV cache (every peer; the
               bound counts pippy's f32 cache: weights + KV bytes per step;
               llama.cpp's context, and so its peak RSS, then holds it too)
  bw_b1_gbs    pippy and llama.cpp: the memory read rate sampled just before
               and after their batch-1 decode (this machine's rate can change
               between runs; the pairs of pippy's and llama.cpp's runs at rates
               within 10% give their b1 ratio at equal rates, under the table)
  rss_mib      peak RSS of the process (pippy: the largest of its runs)
  decode_bN_kv16, rss_kv16_mib  pippy at the largest batch with --kv-dtype
               f16 (llama.cpp's own KV cache is f16: its columns there are
               its decode_bN and rss_mib)
  prefill_bf16dot, decode_bN_bf16dot  bf16 models, prefill and batches 32
               and the largest: pippy with the opt-in inexact
               --matmul-precision bf16 (vdpbf16ps, or its emulation where
               that is faster or missing, as --version says) and
               --kv-dtype bf16 (attention's products on the bf16 dots too;
               since session 25: before, the KV cache in f32). llama.cpp
               rounds activations to bf16 for its bf16 products too and
               keeps its KV cache in f16: its columns there are its prefill
               and decode_bN, as are PyTorch's, whose bf16 models multiply
               in bf16 and keep their KV cache in bf16
  prefill_amx, decode_bN_amx  where the CPU has AMX-BF16: pippy with
               --matmul-precision bf16-amx (the tile unit, as PyTorch's
               oneDNN bf16 matmuls use it), every batch; bf16 models with
               --kv-dtype bf16 (attention's products over the bf16 cache on
               the tile unit too), f16 and f32 models with the KV cache in
               their dtype, as PyTorch keeps it (their weights split exactly
               into 2 or 3 bf16 pieces; the activations rounded to bf16);
               the peers' columns as for the bf16 dots
  prefill_int8, decode_bN_int8, rss_int8_mib, bw_b1_gbs_int8  bf16 models,
               under --int8 (auto, the default: when pippy-batch lists
               --weights-dtype int8; on: llama.cpp's side even when it does
               not; off: neither): pippy with --weights-dtype int8 (each
               matrix quantized at load: int8 with an f32 scale per 64 weights
               of a row, 1.0625 bytes a weight, the products in f32; its KV
               cache f32 as in its other rows), prefill and every batch, its
               peak RSS over those runs and the memory rate around its b1 run;
               llama.cpp, in a process of its own after its bf16 one, on a
               Q8_0 GGUF of the same folder (convert_hf_to_gguf.py --outtype
               q8_0: int8 with an f16 scale per 32 weights, the same 1.0625
               bytes; a matrix whose rows are not a multiple of 32 stays F16,
               as llama-20m-bf16's down projection. Its products are int8 dots
               with the activations quantized to Q8_0 too; its KV cache f16),
               the same measures. PyTorch has no column there. Their bound at
               batch N: N x bandwidth / (the matrices a step reads at 1.0625
               bytes a weight, the rest as stored, + N x the f32 KV cache of a
               sequence at the run's mean position), at most the sgemm rate as
               above; under the table each b1 run against the memory rate
               sampled beside it. In the JSON only: load_s_int8 (pippy's
               includes the quantizing), prefill_first_int8, ttft_s_int8
  prefill_fp8, decode_bN_fp8, rss_fp8_mib  bf16 models, with pippy's
               int8 rows: pippy on the same folder converted to a fine-grained
               FP8 checkpoint (tests/forward/fp8_ref.py: the decoder layers'
               matrices e4m3 with an f32 scale per 128 x 128 block, the
               embeddings and norms as they were; cached beside the models),
               kept as stored; llama.cpp's column repeats its Q8_0 figures
               (it reads no FP8 checkpoint; the same bytes a weight). No bound.
               In the JSON only: load_s_fp8
Limits measured in the same run, before each run round (only the first
under --budget), the best kept
(contrib/bench/limits.c, same threads): memory read bandwidth, f32 FMA and
bf16-dot peaks (and AMX's where the CPU has it), cblas_sgemm at the model's layer shapes for M = 512, 8, 1.
Bounds: decode at batch 1 <= bandwidth / weight bytes read per token;
prefill <= SGEMM(M=512) / (2 * matmul weights). The kernels' own
microbenchmark (tests/cpu/kern-bench) follows the table when the build has it.

--isa avx2 holds every program to AVX2+FMA+F16C, what an AVX2-only machine
runs, on this one: pippy with PB_CPU_ISA=avx2; llama.cpp from a second build
with GGML_NATIVE=OFF, GGML_AVX2=ON, GGML_AVX512=OFF (setup-peers.sh --avx2,
loaded through LLAMA_CPP_LIB_PATH); PyTorch with ATEN_CPU_CAPABILITY=avx2 and
ONEDNN_MAX_CPU_ISA=AVX2; the limits program compiled without AVX-512 and
OpenBLAS as OPENBLAS_CORETYPE=Haswell; kern-bench on its avx2 path. The
memory is this machine's either way, so batch-1 figures change little; the
compute-bound ones (prefill, large batches) are those of the AVX2 kernels.

Usage: run.py [--quick] [--runs N] [--models a,b] [--isa native|avx2] [--json FILE] ...
(contrib/bench/run.sh sets the paths; `make bench` runs it).
"""
import argparse
import json
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(os.path.dirname(HERE))

MODELS = {
    # name: (how, dtype, family args for pb-make-checkpoint, tokenizer)
    "smollm2-135m-bf16": ("smollm2", "bf16", None, None),
    # the public shapes, made by HF transformers (from_config + save_pretrained,
    # its own random init): config class, keyword arguments
    "gpt2-124m-f32": ("hf", "f32", ("GPT2Config", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                       n_positions=1024, n_ctx=1024, bos_token_id=50256,
                                                       eos_token_id=50256)),
                      "gpt2"),
    "gpt2-124m-f16": ("hf", "f16", ("GPT2Config", dict(n_layer=12, n_embd=768, n_head=12, vocab_size=50257,
                                                       n_positions=1024, n_ctx=1024, bos_token_id=50256,
                                                       eos_token_id=50256)),
                      "gpt2"),
    "tinyllama-1.1b-bf16": ("hf", "bf16", ("LlamaConfig", dict(num_hidden_layers=22, hidden_size=2048,
                                                               num_attention_heads=32, num_key_value_heads=4,
                                                               intermediate_size=5632, vocab_size=32000,
                                                               max_position_embeddings=2048, rms_norm_eps=1e-5,
                                                               bos_token_id=1, eos_token_id=2,
                                                               tie_word_embeddings=False)),
                            "llama2"),
    # Llama-3-8B's layer shapes (hidden 4096, 32 query heads over 8 KV heads, MLP 14336) in 4 layers, with
    # Llama 2's vocabulary: 1.1 B parameters, 2.2 GB; its down product's K of 14336 outgrows the caches that
    # the 1.1B shapes fit in (only when named in --models)
    "llama3-8b-4l-bf16": ("hf", "bf16", ("LlamaConfig", dict(num_hidden_layers=4, hidden_size=4096,
                                                             num_attention_heads=32, num_key_value_heads=8,
                                                             intermediate_size=14336, vocab_size=32000,
                                                             max_position_embeddings=4096, rms_norm_eps=1e-5,
                                                             rope_theta=500000.0, bos_token_id=1, eos_token_id=2,
                                                             tie_word_embeddings=False)),
                          "llama2"),
    # small enough for a smoke check on a busy machine (--quick)
    "llama-20m-bf16": ("make", "bf16", ["--family", "llama", "--layers", "4", "--hidden", "256", "--heads", "8",
                                        "--kv-heads", "4", "--intermediate", "688", "--vocab", "32000",
                                        "--max-pos", "1024", "--eos", "2", "--bos", "1"], "llama2"),
}
PEERS = ["pippy", "llama.cpp", "pytorch"]
# --isa avx2: what each program is given to hold it to AVX2+FMA+F16C
ISA_ENV = {"avx2": {"pippy": {"PB_CPU_ISA": "avx2"},
                    "torch": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
                    "limits": {"OPENBLAS_CORETYPE": "Haswell"}}}
PIPPY_ENV = {}  # set by main from --isa
MEASURES = ["load_s", "prefill", "ttft_s"]  # + decode_bN, rss_mib


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- workers
# Run in a child process (the llama.cpp one in the peers' venv, which has no
# torch): read a job as JSON from argv, print a JSON line of the results so
# far after each measure (a run stopped by --timeout keeps what it measured).


def peak_rss_kib():
    """This process's peak RSS since its exec: VmHWM. (ru_maxrss is carried
    across execve, so a child of this harness would report at least the
    harness's own peak, torch and all.)"""
    try:
        with open("/proc/self/status") as f:
            for ln in f:
                if ln.startswith("VmHWM:"):
                    return int(ln.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def emit(res):
    res = dict(res, _rss_kib=peak_rss_kib())
    print(json.dumps(res), flush=True)

def worker_llama(job):
    import numpy as np
    import llama_cpp as L
    T = job["threads"]
    maxb = max(job["batches"])
    P, N = len(job["prompt"]), job["tokens"]
    long, ctxp = job["long"], job.get("ctx") or []
    # PB_LLAMA_KV_UNIFIED=1: the batches' sequences share one KV buffer, each
    # step's attention masking the others' cells (this benchmark's setting
    # until session 35: llama.cpp's batch 64 ran at 0.4x of its own best)
    unified = os.environ.get("PB_LLAMA_KV_UNIFIED", "0") == "1"
    L.llama_backend_init()
    t = time.perf_counter()
    mp = L.llama_model_default_params()
    # PB_LLAMA_EXTRA_BUFTS=0: no extra buffer types (the weights repacked for its AMX or other kernels); run.py
    # retries a Q8_0 run so where the first one crashed (its AMX Q8_0 path on a Xeon with AMX, session 55)
    if hasattr(mp, "use_extra_bufts"):
        mp.use_extra_bufts = os.environ.get("PB_LLAMA_EXTRA_BUFTS", "1") != "0"
    model = L.llama_model_load_from_file(job["gguf"].encode(), mp)
    if not model:
        raise SystemExit("llama.cpp: cannot load " + job["gguf"])
    nv = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))

    def context(n_seq, cells, n_batch):
        """A context of n_seq sequences; cells: KV cells each sequence needs."""
        cp = L.llama_context_default_params()
        cp.n_seq_max = n_seq
        cp.kv_unified = unified or n_seq == 1
        cp.n_ctx = cells * n_seq  # split evenly between the sequences unless unified
        cp.n_batch = n_batch
        cp.n_ubatch = 512
        cp.n_threads = T
        cp.n_threads_batch = T
        cp.no_perf = True
        ctx = L.llama_init_from_model(model, cp)
        if not ctx:
            raise SystemExit("llama.cpp: cannot create a context")
        return ctx, L.llama_batch_init(max(n_batch, n_seq), 0, 1)

    # the long prompts (prefill, --context) in a context of one sequence; the batches in one of maxb
    # sequences, each with its own KV stream, made after the first is freed (peak RSS: the larger)
    ctx, batch = context(1, max(len(long), len(ctxp) + N) + 16, max(512, len(long), len(ctxp)))
    res = {"load_s": time.perf_counter() - t}
    emit(res)

    def run(items):  # items: (token, pos, seq, want_logits) -> argmax of each output, in order
        batch.n_tokens = len(items)
        n_out = 0
        for i, (tok, pos, seq, out) in enumerate(items):
            batch.token[i] = tok
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = 1 if out else 0
            n_out += 1 if out else 0
        if L.llama_decode(ctx, batch) != 0:
            raise SystemExit("llama.cpp: llama_decode failed")
        logits = np.ctypeslib.as_array(L.llama_get_logits(ctx), shape=(n_out * nv,)).reshape(n_out, nv)
        return logits.argmax(axis=1).tolist()

    # warm-up (the weights are mmapped: touch them once, outside the timings)
    run([(job["prompt"][0], 0, 0, True)])
    mem = L.llama_get_memory(ctx)
    for first in (True, False):  # the long prompt twice: the second is the figure, as pippy's
        L.llama_memory_clear(mem, True)
        t = time.perf_counter()
        run([(tok, i, 0, i == len(long) - 1) for i, tok in enumerate(long)])
        ttft = time.perf_counter() - t
        if first:
            res["prefill_first"] = len(long) / ttft
    res["ttft_s"] = ttft
    res["prefill"] = len(long) / ttft
    emit(res)
    if ctxp:  # batch 1 after a long prompt
        L.llama_memory_clear(mem, True)
        nxt = run([(tok, i, 0, i == len(ctxp) - 1) for i, tok in enumerate(ctxp)])
        t = time.perf_counter()
        for step in range(N - 1):
            nxt = run([(nxt[0], len(ctxp) + step, 0, True)])
        res["decode_ctx"] = (N - 1) / (time.perf_counter() - t)
        emit(res)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    ctx, batch = context(maxb, P + N + 16, max(512, maxb * P))
    mem = L.llama_get_memory(ctx)
    run([(job["prompt"][0], 0, 0, True)])  # its scratch touched outside the timings
    for B in job["batches"]:
        L.llama_memory_clear(mem, True)
        nxt = run([(tok, i, s, i == P - 1) for s in range(B) for i, tok in enumerate(job["prompt"])])
        bw0 = bandwidth_now(job["bw_probe"]) if B == 1 and job.get("bw_probe") else None  # as beside pippy's
        t = time.perf_counter()
        for step in range(N - 1):
            nxt = run([(nxt[s], P + step, s, True) for s in range(B)])
        res[f"decode_b{B}"] = B * (N - 1) / (time.perf_counter() - t)
        if bw0 is not None:
            res["bw_b1_gbs"] = (bw0 + bandwidth_now(job["bw_probe"])) / 2
        emit(res)
    L.llama_batch_free(batch)
    L.llama_free(ctx)
    L.llama_model_free(model)
    return res


def worker_torch(job):
    import torch
    from transformers import AutoModelForCausalLM, StoppingCriteria, StoppingCriteriaList
    torch.set_num_threads(job["threads"])
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass
    dt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[job["dtype"]]
    t = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=dt)
    model.eval()
    res = {"load_s": time.perf_counter() - t}
    emit(res)

    class Stamp(StoppingCriteria):
        def __init__(self):
            self.t = []

        def __call__(self, input_ids, scores, **kw):
            self.t.append(time.perf_counter())
            return torch.zeros(input_ids.shape[0], dtype=torch.bool)

    P, N = len(job["prompt"]), job["tokens"]

    def gen(ids, n):
        st = Stamp()
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                       do_sample=False, use_cache=True, stopping_criteria=StoppingCriteriaList([st]),
                       pad_token_id=0, eos_token_id=None)
        return st.t

    with torch.inference_mode():
        gen(torch.tensor([job["prompt"]]), 2)  # warm-up
        long = torch.tensor([job["long"]])
        for first in (True, False):  # the long prompt twice: the second is the figure, as pippy's
            t = time.perf_counter()
            stamps = gen(long, 1)
            if first:
                res["prefill_first"] = long.shape[1] / (stamps[0] - t)
        res["ttft_s"] = stamps[0] - t
        res["prefill"] = long.shape[1] / res["ttft_s"]
        emit(res)
        for B in job["batches"]:
            stamps = gen(torch.tensor([job["prompt"]] * B), N)
            res[f"decode_b{B}"] = B * (N - 1) / (stamps[-1] - stamps[0])
            emit(res)
        if job.get("ctx"):  # batch 1 after a long prompt
            stamps = gen(torch.tensor([job["ctx"]]), N)
            res["decode_ctx"] = (N - 1) / (stamps[-1] - stamps[0])
            emit(res)
    return res


def child(python, kind, job, timeout, omp_wait):
    """Run a worker in a fresh process; it reports its own peak RSS."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
        path = f.name
    try:
        p = subprocess.Popen([python, os.path.abspath(__file__), "--worker", kind, path],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=dict(os.environ, OMP_NUM_THREADS=str(job["threads"]),
                                      OPENBLAS_NUM_THREADS=str(job["threads"]),
                                      MKL_NUM_THREADS=str(job["threads"]),
                                      **({"OMP_WAIT_POLICY": omp_wait} if omp_wait else {}),
                                      **job.get("env", {}).get(kind, {})))
        stopped = False
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            stopped = True
    finally:
        os.unlink(path)
    lines = [ln for ln in out.strip().splitlines() if ln.startswith("{")]
    if stopped:
        if not lines:
            raise RuntimeError(f"{kind} worker still running after {timeout} s: stopped, nothing measured")
        res = json.loads(lines[-1])
        res["_stopped"] = f"stopped after {timeout} s"
    elif p.returncode != 0 or not lines:
        raise RuntimeError(f"{kind} worker failed (exit {p.returncode}): {err.strip()[-800:]}")
    else:
        res = json.loads(lines[-1])
    res["rss_mib"] = res.pop("_rss_kib", 0) / 1024
    return res


# ---------------------------------------------------------------- pippy

def pippy_help(pb):
    return subprocess.run([pb, "--help"], capture_output=True, text=True).stdout


def has_int8_weights(helptext):
    """Whether --help's entry for --weights-dtype (its line and those after it
    up to the next option) names int8."""
    lines = helptext.splitlines()
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("--weights-dtype"):
            entry = [ln]
            for nxt in lines[i + 1:]:
                if nxt.lstrip().startswith("-") or not nxt.strip():
                    break
                entry.append(nxt)
            return "int8" in " ".join(entry)
    return False


def run_pippy(pb, model, records, max_tokens, batch, seq, threads, ignore_eos, tmp, extra=(), env=None):
    """One pippy-batch process; returns (metrics, wall_s, peak_rss_kib)."""
    inp, out, met = (os.path.join(tmp, n) for n in ("in.jsonl", "out.jsonl", "m.json"))
    for p in (out, met):
        if os.path.exists(p):
            os.unlink(p)
    with open(inp, "w") as f:
        for r in records:
            f.write(json.dumps({"prompt": r}) + "\n")
    cmd = [pb, "-q", "--model", model, "--in", inp, "--out", out, "--metrics", met, "--threads", str(threads),
           "--batch-size", str(batch), "--max-tokens", str(max_tokens), "--max-seq-len", str(seq),
           "--temperature", "0", "--no-prefix-sharing"]  # identical prompts: every token computed, as the peers do
    if ignore_eos:
        cmd.append("--ignore-eos")
    cmd += list(extra)
    t = time.perf_counter()
    env = dict(PIPPY_ENV, **(env or {}))
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                         env=dict(os.environ, **env) if env else None)
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    err = p.stderr.read()
    p.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"pippy-batch failed: {' '.join(cmd)}: {err.strip()[-800:]}")
    with open(met) as f:
        m = json.load(f)
    # its own VmHWM (ru_maxrss from wait4 starts at this harness's peak)
    rss_kib = m["peak_rss_bytes"] / 1024 if "peak_rss_bytes" in m else ru.ru_maxrss
    return m, wall, rss_kib


def decode_rate(met):
    """Tokens after the first of each sequence / the time after the first
    token, from pippy-batch's metrics (its decode time is all the generated
    tokens / decode_tokens_per_second)."""
    comp, recs, rate = met["completion_tokens"], met["records"], met["decode_tokens_per_second"]
    dec_s = comp / rate if rate else 0
    return (comp - recs) / dec_s if dec_s else 0


def two_ttfts(met):
    """The times to first token of a run's two records, in their order: the
    metrics give their mean and max, and first_token_seconds (from the run's
    start, so the first record's plus its reading and tokenizing) tells which
    of the two the first was."""
    hi = met["time_to_first_token_max"]
    lo = 2 * met["time_to_first_token_mean"] - hi
    t = met["first_token_seconds"]
    return (hi, lo) if abs(t - hi) <= abs(t - lo) else (lo, hi)


def dot_batches(batches):
    """Batches measured again with the bf16 dot products: 32 (the batched
    decode goal's) and the largest."""
    return sorted({b for b in batches if b == 32 or b == max(batches)})


def peer_files(m, peer):
    """The weight files a peer reads: llama.cpp its GGUF, the others the HF folder's."""
    if peer == "llama.cpp":
        return [m["gguf"]] if m["gguf"] else []
    d = m["dir"]
    return [os.path.join(d, n) for n in sorted(os.listdir(d)) if n.endswith((".safetensors", ".bin"))]


def warm_page_cache(paths):
    """Reads the files once, in 1 MiB pieces, so that they are in the page cache."""
    buf = bytearray(1 << 20)
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def measure_pippy(pb, m, job, ignore_eos, bw_sample):
    res = {}
    rss = 0
    with tempfile.TemporaryDirectory(prefix="pbbench.") as tmp:
        # --max-seq-len: exactly the positions a run needs (prompt + tokens; the
        # last token is never fed back), so the KV cache pippy holds is the one
        # the RSS bound counts; a prompt that tokenized longer than HF's would
        # stop short and be noted below
        # the long prompt twice, one after the other: the second's time to first token is the prefill
        # figure (the first also touches the process's fresh scratch and KV memory, which llama.cpp
        # clears when it creates its context and warms up before its timings)
        met, wall, r = run_pippy(pb, m["dir"], [m["long_text"]] * 2, 1, 1, len(job["long"]) + 1, job["threads"],
                                 ignore_eos, tmp)
        rss = max(rss, r)
        if met["prompt_tokens"] != 2 * len(job["long"]):
            job["notes"].append(f"{m['name']}: pippy counted {met['prompt_tokens'] // 2} prompt tokens, "
                                f"HF {len(job['long'])}")
        res["load_s"] = wall - met["wall_seconds"]
        first, second = two_ttfts(met)
        res["prefill_first"] = met["prompt_tokens"] / 2 / first
        if job.get("wcache"):  # the same run twice with --weights-cache: the second maps the packed weights
            wc = ("--weights-cache", os.path.join(tmp, "wcache"))
            for _ in range(2):
                met2, wall2, r = run_pippy(pb, m["dir"], [m["long_text"]], 1, 1, len(job["long"]) + 1,
                                           job["threads"], ignore_eos, tmp, wc)
            res["load_cached_s"] = wall2 - met2["wall_seconds"]
            shutil.rmtree(os.path.join(tmp, "wcache"), ignore_errors=True)
        res["ttft_s"] = second
        res["prefill"] = met["prompt_tokens"] / 2 / second
        P, N = len(job["prompt"]), job["tokens"]
        for B in job["batches"]:
            if B == 1:  # the memory rate just before and after: what the bound was during this run
                bw0 = bw_sample()
            met, wall, r = run_pippy(pb, m["dir"], [m["short_text"]] * B, N, B, P + N, job["threads"],
                                     ignore_eos, tmp)
            if B == 1:
                res["bw_b1_gbs"] = (bw0 + bw_sample()) / 2
            rss = max(rss, r)
            comp = met["completion_tokens"]
            if comp != B * N:
                job["notes"].append(f"{m['name']}: pippy generated {comp} tokens at batch {B}, not {B * N} "
                                    "(EOS reached)")
            res[f"decode_b{B}"] = decode_rate(met)
        if job.get("ctx"):  # batch 1 after a long prompt
            C = len(job["ctx"])
            met, wall, r = run_pippy(pb, m["dir"], [m["ctx_text"]], N, 1, C + N, job["threads"], ignore_eos, tmp)
            if met["prompt_tokens"] != C:
                job["notes"].append(f"{m['name']}: pippy counted {met['prompt_tokens']} tokens in the --context "
                                    f"prompt, HF {C}")
            res["decode_ctx"] = decode_rate(met)
        if job.get("kv16"):  # the largest batch again, its KV cache in f16 (as llama.cpp keeps it)
            B = max(job["batches"])
            met, wall, r = run_pippy(pb, m["dir"], [m["short_text"]] * B, N, B, P + N, job["threads"], ignore_eos,
                                     tmp, ("--kv-dtype", "f16"))
            res[f"decode_b{B}_kv16"] = decode_rate(met)
            res["rss_kv16_mib"] = r / 1024
        if job.get("bf16dot") and m["dtype"] == "bf16":
            # the opt-in inexact path (--matmul-precision bf16: activations rounded
            # to bf16 for vdpbf16ps, as llama.cpp's and PyTorch's bf16 products),
            # the KV cache in bf16 as PyTorch's (attention on the bf16 dots too)
            flag = ("--matmul-precision", "bf16", "--kv-dtype", "bf16")
            met, wall, r = run_pippy(pb, m["dir"], [m["long_text"]] * 2, 1, 1, len(job["long"]) + 1,
                                     job["threads"], ignore_eos, tmp, flag)
            res["prefill_bf16dot"] = met["prompt_tokens"] / 2 / two_ttfts(met)[1]
            for B in dot_batches(job["batches"]):
                met, wall, r = run_pippy(pb, m["dir"], [m["short_text"]] * B, N, B, P + N, job["threads"],
                                         ignore_eos, tmp, flag)
                res[f"decode_b{B}_bf16dot"] = decode_rate(met)
        if job.get("amx"):
            # --matmul-precision bf16-amx: the products on the AMX tile unit (f16 and f32
            # weights split into bf16 pieces), the KV cache in the model's dtype (as
            # PyTorch's run keeps it; bf16: attention's products on the tile unit too)
            flag = ("--matmul-precision", "bf16-amx", "--kv-dtype", m["dtype"])
            met, wall, r = run_pippy(pb, m["dir"], [m["long_text"]] * 2, 1, 1, len(job["long"]) + 1,
                                     job["threads"], ignore_eos, tmp, flag)
            res["prefill_amx"] = met["prompt_tokens"] / 2 / two_ttfts(met)[1]
            for B in job["batches"]:
                met, wall, r = run_pippy(pb, m["dir"], [m["short_text"]] * B, N, B, P + N, job["threads"],
                                         ignore_eos, tmp, flag)
                res[f"decode_b{B}_amx"] = decode_rate(met)
        if job.get("int8") and m["dtype"] == "bf16":
            # the matrices quantized at load (int8, an f32 scale per 64 weights), products in f32, KV f32
            flag = ("--weights-dtype", "int8")
            met, wall, r = run_pippy(pb, m["dir"], [m["long_text"]] * 2, 1, 1, len(job["long"]) + 1,
                                     job["threads"], ignore_eos, tmp, flag)
            rss8 = r
            res["load_s_int8"] = wall - met["wall_seconds"]
            res["prefill_int8"] = met["prompt_tokens"] / 2 / two_ttfts(met)[1]
            for B in job["batches"]:
                if B == 1:
                    bw0 = bw_sample()
                met, wall, r = run_pippy(pb, m["dir"], [m["short_text"]] * B, N, B, P + N, job["threads"],
                                         ignore_eos, tmp, flag)
                if B == 1:
                    res["bw_b1_gbs_int8"] = (bw0 + bw_sample()) / 2
                rss8 = max(rss8, r)
                res[f"decode_b{B}_int8"] = decode_rate(met)
            res["rss_int8_mib"] = rss8 / 1024
        if job.get("int8") and m.get("dir_fp8"):
            # the same folder as an FP8 checkpoint (e4m3 with a scale per 128 x 128 block), kept as stored
            d8 = m["dir_fp8"]
            warm_page_cache([os.path.join(d8, n) for n in sorted(os.listdir(d8)) if n.endswith(".safetensors")])
            met, wall, r = run_pippy(pb, m["dir_fp8"], [m["long_text"]] * 2, 1, 1, len(job["long"]) + 1,
                                     job["threads"], ignore_eos, tmp, ())
            rssf = r
            res["load_s_fp8"] = wall - met["wall_seconds"]
            res["prefill_fp8"] = met["prompt_tokens"] / 2 / two_ttfts(met)[1]
            for B in job["batches"]:
                met, wall, r = run_pippy(pb, m["dir_fp8"], [m["short_text"]] * B, N, B, P + N, job["threads"],
                                         ignore_eos, tmp, ())
                rssf = max(rssf, r)
                res[f"decode_b{B}_fp8"] = decode_rate(met)
            res["rss_fp8_mib"] = rssf / 1024
    res["rss_mib"] = rss / 1024
    return res


# ---------------------------------------------------------------- models

def st_headers(d):
    """{name: (dtype, shape, nbytes)} over the folder's safetensors files."""
    out = {}
    for fn in sorted(os.listdir(d)):
        if not fn.endswith(".safetensors"):
            continue
        with open(os.path.join(d, fn), "rb") as f:
            n = struct.unpack("<Q", f.read(8))[0]
            h = json.loads(f.read(n))
        for k, v in h.items():
            if k != "__metadata__":
                out[k] = (v["dtype"], v["shape"], v["data_offsets"][1] - v["data_offsets"][0])
    return out


def model_facts(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    H = cfg.get("hidden_size") or cfg.get("n_embd")
    L = cfg.get("num_hidden_layers") or cfg.get("n_layer")
    heads = cfg.get("num_attention_heads") or cfg.get("n_head")
    kvh = cfg.get("num_key_value_heads") or heads
    hd = cfg.get("head_dim") or H // heads
    inter = cfg.get("intermediate_size") or cfg.get("n_inner") or 4 * H
    V = cfg["vocab_size"]
    gated = cfg.get("model_type") != "gpt2"
    shapes = [(heads * hd, H), (kvh * hd, H), (kvh * hd, H), (H, heads * hd)]
    shapes += [(inter, H), (inter, H), (H, inter)] if gated else [(inter, H), (H, inter)]
    layer_params = sum(n * k for n, k in shapes)
    hdr = st_headers(d)
    tied = cfg.get("tie_word_embeddings", cfg.get("model_type") == "gpt2")
    read = 0  # bytes a decode step reads: every weight but the lookup tables (the tied one as the head)
    weight_bytes = 0
    read8 = w8 = 0  # the same with every matrix at int8 + an f32 scale per 64 weights of a row (--weights-dtype
    for k, (_, shape, nb) in hdr.items():  # int8; llama.cpp's Q8_0, an f16 scale per 32, is as large)
        q8 = shape[0] * (shape[1] + 4 * -(-shape[1] // 64)) if len(shape) == 2 else nb
        weight_bytes += nb
        w8 += q8
        lookup = any(s in k for s in ("embed_tokens", "wte.", "wpe."))
        if not lookup or (tied and ("embed_tokens" in k or "wte." in k)):
            read += nb
            read8 += q8
    kv_per_token = 2 * L * kvh * hd * 4  # f32 K and V, as pippy's cache
    max_pos = cfg.get("max_position_embeddings") or cfg.get("n_positions") or 2048
    return {"hidden": H, "layers": L, "vocab": V, "heads": heads, "kv_heads": kvh, "intermediate": inter,
            "matmul_params": L * layer_params + V * H, "weight_bytes": weight_bytes, "read_bytes": read,
            "weight_bytes_int8": w8, "read_bytes_int8": read8,
            "kv_bytes_per_token": kv_per_token, "max_pos": max_pos,
            "shapes": shapes + [(V, H)]}


def make_hf(d, dtype, spec, tokenizer_json):
    """A random-weight checkpoint of a public shape, as HF makes and saves it."""
    import torch
    import transformers
    cls, kw = spec
    tdt = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    torch.manual_seed(0)
    cfg = getattr(transformers, cls)(**kw)
    model = transformers.AutoModelForCausalLM.from_config(cfg, torch_dtype=tdt)
    model.generation_config.do_sample = False
    model.save_pretrained(d)
    shutil.copy(tokenizer_json, os.path.join(d, "tokenizer.json"))


def convert_gguf(name, d, outtype, a, py, converter):
    """The cached GGUF of the HF folder d at outtype (f32, f16, bf16, q8_0), made by
    llama.cpp's convert_hf_to_gguf.py when absent; None when it fails."""
    gguf = os.path.join(a.cache, f"{name}.{outtype}.gguf")
    if os.path.exists(gguf):
        return gguf
    log(f"converting {name} to GGUF {outtype} with llama.cpp's convert_hf_to_gguf.py")
    # its own gguf-py, and sentencepiece from setup-peers.sh (the llama family's vocab)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(os.path.dirname(converter), "gguf-py"),
                                                      os.path.join(a.peers_dir, "pydeps")]))
    r = subprocess.run([py, converter, d, "--outtype", outtype, "--outfile", gguf + ".tmp"], env=env,
                       capture_output=True, text=True)
    if r.returncode != 0:
        log(f"llama.cpp converter failed on {name} ({outtype}): {r.stderr.strip()[-600:]}")
        return None
    os.rename(gguf + ".tmp", gguf)
    return gguf


def prepare_model(name, a, py, converter, int8=False):
    how, dtype, fam, tok = MODELS[name]
    cache = a.cache
    if how == "smollm2":
        d = a.smollm2
        if not os.path.exists(os.path.join(d, "config.json")):
            tool = os.path.join(SRC, "contrib", "pb-get-smollm2")
            if not os.path.exists(tool):
                log(f"skip {name}: no {d} and no contrib/pb-get-smollm2")
                return None
            log(f"fetching SmolLM2-135M into {d} (contrib/pb-get-smollm2)")
            subprocess.run([py, tool, "--dest", d], check=True, stdout=sys.stderr)
    else:
        d = os.path.join(cache, name)
        if not os.path.exists(os.path.join(d, "config.json")):
            tj = os.path.join(cache, tok + ".tokenizer.json")
            if not os.path.exists(tj):
                with open(tj, "wb") as f:
                    subprocess.run(["zstd", "-dqc", os.path.join(SRC, "tests", "data", "tokenizers",
                                                              tok + ".json.zst")], check=True, stdout=f)
            tmpd = d + ".tmp"
            shutil.rmtree(tmpd, ignore_errors=True)
            if how == "hf":
                log(f"making {name} with transformers (from_config + save_pretrained)")
                make_hf(tmpd, dtype, fam, tj)
            else:
                log(f"making {name} with contrib/pb-make-checkpoint")
                subprocess.run([py, os.path.join(SRC, "contrib", "pb-make-checkpoint"), "--out", tmpd,
                                "--dtype", dtype, "--tokenizer", tj] + fam, check=True, stdout=subprocess.DEVNULL)
            os.rename(tmpd, d)
    gguf = convert_gguf(name, d, dtype, a, py, converter) if converter else None
    # llama.cpp's int8 peer (--int8): Q8_0 of the same folder
    gguf_q8 = convert_gguf(name, d, "q8_0", a, py, converter) if converter and int8 and dtype == "bf16" else None
    # pippy's FP8 rows (--int8): the folder as a fine-grained FP8 checkpoint (tests/forward/fp8_ref.py)
    d_fp8 = os.path.join(cache, name + "-fp8") if int8 and dtype == "bf16" else None
    if d_fp8 and not os.path.exists(os.path.join(d_fp8, "config.json")):
        log(f"converting {name} to an FP8 checkpoint (tests/forward/fp8_ref.py)")
        shutil.rmtree(d_fp8 + ".tmp", ignore_errors=True)
        subprocess.run([py, "-c", "import sys; sys.path.insert(0, sys.argv[1]); import fp8_ref; "
                        "fp8_ref.convert_checkpoint(sys.argv[2], sys.argv[3])",
                        os.path.join(SRC, "tests", "forward"), d, d_fp8 + ".tmp"], check=True,
                       stdout=subprocess.DEVNULL)
        os.rename(d_fp8 + ".tmp", d_fp8)
    from tokenizers import Tokenizer
    tk = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
    # a prefill prompt of exactly --prefill-tokens (HF count, special tokens included), a short one, and one
    # of --context tokens
    text = exact_prompt(tk, a.prefill_tokens, name)
    facts = model_facts(d)
    ctx = exact_prompt(tk, a.context, name) if a.context and a.context + a.tokens <= facts["max_pos"] else None
    short = "Benchmark prompt: the quick brown fox jumps over the lazy dog"
    return {"name": name, "dir": d, "dir_fp8": d_fp8, "dtype": dtype, "gguf": gguf, "gguf_q8": gguf_q8,
            "long_text": text,
            "long": tk.encode(text).ids, "short_text": short, "prompt": tk.encode(short).ids,
            "ctx_text": ctx, "ctx": tk.encode(ctx).ids if ctx else None, "facts": facts}


def exact_prompt(tk, want, name):
    """A prompt of exactly want tokens by tk's count (special tokens included)."""
    pool = ("the quick brown fox jumps over the lazy dog while a small cat sleeps in the warm sun " * want).split()
    ntok = lambda t: len(tk.encode(t).ids)  # noqa: E731
    lo, hi = 1, len(pool)                   # the most words whose count stays <= want
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if ntok(" ".join(pool[:mid])) <= want else (lo, mid - 1)
    text = " ".join(pool[:lo])
    while ntok(text) < want:
        text += " a"
    if ntok(text) != want:
        raise RuntimeError(f"{name}: cannot make a {want}-token prompt")
    return text


# ---------------------------------------------------------------- limits

def limits_exe(a):
    exe = os.path.join(a.cache, "limits" if a.isa == "native" else "limits-" + a.isa)
    src = os.path.join(HERE, "limits.c")
    if not os.path.exists(exe) or os.path.getmtime(exe) < os.path.getmtime(src):
        flags = subprocess.run(["pkg-config", "--cflags", "--libs", "openblas"], capture_output=True,
                               text=True).stdout.split() or ["-lopenblas"]
        arch = ["-march=native"] if a.isa == "native" else ["-mavx2", "-mfma", "-mf16c"]
        subprocess.run([os.environ.get("CC", "cc"), "-O2"] + arch + ["-o", exe, src] + flags + ["-lpthread"],
                       check=True)
    return exe


def limits_isa_env(a):
    """What the limits program's environment adds for --isa."""
    return ISA_ENV.get(a.isa, {}).get("limits", {})


def limits_env(a):
    return dict(os.environ, **limits_isa_env(a))


def bandwidth_probe(a):
    """The command and the environment additions that sample the memory read
    rate (about 0.2 s): what bandwidth_now runs, here and in the llama worker."""
    return {"cmd": [limits_exe(a), str(a.threads), "--bandwidth"], "env": limits_isa_env(a)}


def bandwidth_now(probe):
    r = subprocess.run(probe["cmd"], capture_output=True, text=True, check=True, env=dict(os.environ, **probe["env"]))
    return json.loads(r.stdout)["bandwidth_gbs"]


def bandwidth_sample(a):
    """The memory read rate now: taken beside each batch-1 run."""
    return bandwidth_now(bandwidth_probe(a))


def run_limits(a, models):
    exe = limits_exe(a)
    sets = [m["name"] + "=" + ",".join(f"{n}:{k}" for n, k in m["facts"]["shapes"]) for m in models]
    r = subprocess.run([exe, str(a.threads)] + sets, capture_output=True, text=True, check=True, env=limits_env(a))
    return json.loads(r.stdout)


def best_limits(lims):
    """Each figure's best over the measurements: what the machine can do when
    the other jobs on it let it."""
    out = dict(lims[0])
    for x in lims[1:]:
        for k in ("bandwidth_gbs", "fma_peak_gflops", "bf16_dot_gflops", "bf16_dpbf16_gflops"):
            if k in out:
                out[k] = max(out[k], x[k])
        out["gemm"] = {n: {mm: max(v, x["gemm"][n][mm]) for mm, v in g.items()} for n, g in out["gemm"].items()}
    return out


def kern_bench(a):
    """The kernels' own microbenchmark, when the build has one."""
    exe = os.path.join(a.build, "tests", "cpu", "kern-bench")
    if subprocess.run(["make", "-s", "-C", a.build, "tests/cpu/kern-bench"], capture_output=True).returncode != 0 \
            or not os.path.exists(exe):
        return None
    try:
        r = subprocess.run([exe, str(a.threads), "0.5"], capture_output=True, text=True, timeout=600,
                           env=dict(os.environ, **PIPPY_ENV))
    except subprocess.TimeoutExpired:
        return "(kern-bench stopped after 600 s)"
    return r.stdout + r.stderr


# ---------------------------------------------------------------- report

def fmt(v, kind):
    if v is None:
        return "-"
    if kind in ("load_s", "load_cached_s", "ttft_s"):
        return f"{v:.3f}" if v < 10 else f"{v:.1f}"
    if kind in ("rss_mib", "rss_kv16_mib", "rss_int8_mib"):
        return f"{v:.0f}"
    return f"{v:.1f}" if v < 1000 else f"{v:.0f}"


def ratio(a, b, higher_better=True):
    if a is None or b is None or a == 0 or b == 0:
        return None
    return a / b if higher_better else b / a


def int8_step_bytes(m, tokens, B=1):
    """Bytes a decode step of B sequences reads with int8 matrices: those and
    the f32 KV cache of each sequence of the short prompt's run at its mean
    position."""
    f = m["facts"]
    return f["read_bytes_int8"] + B * f["kv_bytes_per_token"] * (len(m["prompt"]) + tokens / 2)


def bounds(m, lim, batches, context=0, tokens=0, int8=False):
    f = m["facts"]
    g = lim["gemm"].get(m["name"], {})
    flops_tok = 2 * f["matmul_params"]
    bw_tok = lim["bandwidth_gbs"] * 1e9 / f["read_bytes"]
    out = {"prefill": g.get("512", 0) * 1e9 / flops_tok, "ttft_s": None}
    if int8:  # the products in f32 after dequantizing: sgemm's rates, fewer bytes
        out["prefill_int8"] = out["prefill"]
    for B in batches:
        gr = g.get("1" if B == 1 else "8" if B <= 8 else "512", 0) * 1e9 / flops_tok
        out[f"decode_b{B}"] = min(B * bw_tok, gr) if B > 1 else bw_tok
        if int8:
            bw8 = B * lim["bandwidth_gbs"] * 1e9 / int8_step_bytes(m, tokens, B)
            out[f"decode_b{B}_int8"] = min(bw8, gr) if B > 1 else bw8
    if context:  # the weights and the f32 KV cache of the positions before the step (mean over the run)
        out["decode_ctx"] = lim["bandwidth_gbs"] * 1e9 / (f["read_bytes"] + f["kv_bytes_per_token"] *
                                                           (context + tokens / 2))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="one small model (llama-20m-bf16 unless --models), one run, batches 1 and 8: a smoke check")
    ap.add_argument("--models", help="comma list of " + ",".join(MODELS))
    ap.add_argument("--peers", default=",".join(PEERS), help="comma list of " + ",".join(PEERS))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batches", default="1,8,32,64")
    ap.add_argument("--tokens", type=int, default=32, help="tokens generated per sequence in decode runs")
    ap.add_argument("--prefill-tokens", type=int, default=512, help="prompt length of the prefill run")
    ap.add_argument("--context", type=int, default=0,
                    help="also decode at batch 1 after a prompt of this many tokens (decode_ctx)")
    ap.add_argument("--budget", type=float, default=0,
                    help="seconds: start no new peer run after this (medians over the runs done)")
    ap.add_argument("--torch-runs", type=int, default=0,
                    help="PyTorch joins only the first N runs (0: every run); it is 10x slower than the others")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: every program held to AVX2+FMA+F16C, as on an AVX2-only machine (llama.cpp from "
                         "the build of setup-peers.sh --avx2)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds one peer may take for one model and run")
    ap.add_argument("--omp-wait", choices=("auto", "passive", "active", "default"), default="auto",
                    help="OMP_WAIT_POLICY for the peers (llama.cpp and PyTorch use OpenMP); auto: passive when "
                         "the load average exceeds the cores (spinning barriers lose whole time slices on a "
                         "shared machine), else their default")
    ap.add_argument("--build", default=os.environ.get("PB_BUILDDIR", os.path.join(SRC, "build")))
    ap.add_argument("--peers-dir", default=os.path.join(SRC, "build-bench"),
                    help="where contrib/bench/setup-peers.sh installed llama-cpp-python")
    ap.add_argument("--cache", help="generated models and GGUFs (default: PEERS_DIR/models)")
    ap.add_argument("--smollm2", default=os.path.join(SRC, "models", "SmolLM2-135M-Instruct"),
                    help="SmolLM2-135M HF folder (made by contrib/pb-get-smollm2 when absent)")
    ap.add_argument("--int8", choices=("auto", "on", "off"), default="auto",
                    help="bf16 models: pippy with --weights-dtype int8 beside llama.cpp on a Q8_0 GGUF; auto: when "
                         "pippy-batch has it; on: llama.cpp's Q8_0 even when it has not")
    ap.add_argument("--json", default="bench.json", help="results file (default bench.json)")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.worker:
        kind, path = a.worker
        job = json.load(open(path))
        emit(worker_llama(job) if kind == "llama" else worker_torch(job))
        return 0

    if a.quick:
        a.runs = 1
        a.batches = "1,8"
        a.tokens = min(a.tokens, 16)
    batches = [int(b) for b in a.batches.split(",")]
    peers = a.peers.split(",")
    a.cache = a.cache or os.path.join(a.peers_dir, "models")
    os.makedirs(a.cache, exist_ok=True)
    pb = os.path.join(a.build, "pippy-batch")
    if not os.access(pb, os.X_OK):
        raise SystemExit(f"no {pb}: build first (or --build DIR)")
    py = sys.executable
    peers_py = os.path.join(a.peers_dir, "venv", "bin", "python")
    PIPPY_ENV.clear()
    PIPPY_ENV.update(ISA_ENV.get(a.isa, {}).get("pippy", {}))
    peer_env = {k: v for k, v in ISA_ENV.get(a.isa, {}).items() if k in ("llama", "torch")}
    if a.isa != "native":
        lib = os.path.join(a.peers_dir, "llama-lib-" + a.isa)
        if "llama.cpp" in peers and not os.path.exists(os.path.join(lib, "libllama.so")):
            raise SystemExit(f"--isa {a.isa}: no {lib}/libllama.so (run contrib/bench/setup-peers.sh --{a.isa})")
        peer_env["llama"] = {"LLAMA_CPP_LIB_PATH": lib}
    converter = os.path.join(a.peers_dir, "llama.cpp", "convert_hf_to_gguf.py")
    notes = []
    if "llama.cpp" in peers and not (os.access(peers_py, os.X_OK) and os.path.exists(converter)):
        notes.append(f"llama.cpp skipped: no {peers_py} (run contrib/bench/setup-peers.sh)")
        peers.remove("llama.cpp")
        converter = None
    if "llama.cpp" not in peers:
        converter = None
    ignore_eos = "--ignore-eos" in pippy_help(pb)
    kv16 = "--kv-dtype" in pippy_help(pb)
    wcache = "--weights-cache" in pippy_help(pb)
    ver = subprocess.run([pb, "--version"], capture_output=True, text=True).stdout
    # pippy's versions before session 15 refused it without AVX512-BF16
    bf16dot = a.isa == "native" and ("--matmul-precision bf16: yes" in ver or "AVX512-BF16: " in ver)
    if bf16dot:
        how = [l.split("--matmul-precision bf16: ")[1].split(";")[0].rstrip(")") for l in ver.splitlines()
               if "--matmul-precision bf16: " in l]
        notes.append(f"bf16 dots (--matmul-precision bf16 --kv-dtype bf16) on this CPU: {how[0] if how else '?'}")
    amx = a.isa == "native" and "AMX-BF16: yes" in ver
    if amx:
        notes.append("AMX-BF16 on this CPU: pippy's bf16 models also run with --matmul-precision bf16-amx "
                     "--kv-dtype bf16 (matmuls and attention on the tile unit)")
    # --weights-dtype int8 (bf16 models) beside llama.cpp's Q8_0
    int8 = a.int8 != "off" and has_int8_weights(pippy_help(pb))
    int8_peer = int8 or a.int8 == "on"
    if a.int8 == "on" and not int8:
        notes.append("pippy-batch has no --weights-dtype int8: llama.cpp's Q8_0 alone in the int8 rows")
    if not ignore_eos:
        notes.append("pippy-batch has no --ignore-eos yet: its runs stop at EOS (a note below says when one did)")

    if a.models:
        names = a.models.split(",")
    elif a.quick:
        names = ["llama-20m-bf16"]
    else:
        names = [n for n in MODELS if n not in ("llama-20m-bf16", "llama3-8b-4l-bf16")]
    models = []
    for n in names:
        if n not in MODELS:
            raise SystemExit(f"unknown model {n}: one of {', '.join(MODELS)}")
        m = prepare_model(n, a, py, converter, int8_peer)
        if m:
            models.append(m)
            if a.context and not m["ctx"]:
                notes.append(f"{n}: no --context run ({a.context} + {a.tokens} tokens is more than its "
                             f"{m['facts']['max_pos']} positions)")
    if not models:
        raise SystemExit("no model to run")

    load0 = os.getloadavg()
    omp_wait = {"passive": "PASSIVE", "active": "ACTIVE", "default": None}.get(a.omp_wait)
    if a.omp_wait == "auto":
        omp_wait = "PASSIVE" if load0[0] > (os.cpu_count() or 1) else None
    if omp_wait:
        notes.append(f"peers run with OMP_WAIT_POLICY={omp_wait} (load average {load0[0]:.1f} "
                     f"on {os.cpu_count()} cores at the start)")
    lims = []
    results = {m["name"]: {p: [] for p in peers} for m in models}
    t_start = time.time()
    for r in range(a.runs):
        if r == 0 or not a.budget:  # under a budget, the runs come first
            log(f"run {r + 1}/{a.runs}: the machine's limits")
            lims.append(run_limits(a, models))
        for m in models:
            for p in peers:
                if a.budget and time.time() - t_start > a.budget:
                    if not any("budget" in n for n in notes):
                        notes.append(f"--budget {a.budget:.0f} s spent during run {r + 1}: later runs not started")
                    continue
                if p == "pytorch" and a.torch_runs and r >= a.torch_runs:
                    continue
                job = {"threads": a.threads, "batches": batches, "tokens": a.tokens, "long": m["long"],
                       "prompt": m["prompt"], "model": m["dir"], "gguf": m["gguf"], "dtype": m["dtype"],
                       "env": peer_env, "ctx": m["ctx"]}
                log(f"run {r + 1}/{a.runs}: {m['name']}: {p}")
                res = None
                try:
                    if p == "pippy":
                        warm_page_cache(peer_files(m, p))
                        res = measure_pippy(pb, m, dict(job, notes=notes, kv16=kv16, bf16dot=bf16dot, amx=amx,
                                                        wcache=wcache, int8=int8), ignore_eos,
                                            lambda: bandwidth_sample(a))
                    elif p == "llama.cpp":
                        if m["gguf"]:
                            warm_page_cache(peer_files(m, p))
                            res = child(peers_py, "llama", dict(job, bw_probe=bandwidth_probe(a)), a.timeout,
                                        omp_wait)
                    else:
                        warm_page_cache(peer_files(m, p))
                        res = child(py, "torch", job, a.timeout, omp_wait)
                except (RuntimeError, OSError, ValueError) as e:
                    log(f"{m['name']} {p}: {e}")
                    notes.append(f"{m['name']} {p} run {r + 1} failed: {str(e)[:300]}")
                if res and "_stopped" in res:
                    notes.append(f"{m['name']} {p} run {r + 1}: {res.pop('_stopped')} (--timeout); "
                                 f"measured: {', '.join(k for k in res if k != 'rss_mib')}")
                if p == "llama.cpp" and m["gguf_q8"]:  # its int8 rows: the Q8_0 GGUF in a process of its own
                    log(f"run {r + 1}/{a.runs}: {m['name']}: llama.cpp Q8_0")
                    try:
                        warm_page_cache([m["gguf_q8"]])
                        q8job = dict(job, gguf=m["gguf_q8"], ctx=None, bw_probe=bandwidth_probe(a))
                        try:
                            q8 = child(peers_py, "llama", q8job, a.timeout, omp_wait)
                        except RuntimeError as e:
                            if "exit -11" not in str(e):
                                raise
                            # a crash in its repacked (extra buffer type) Q8_0 kernels: again without them
                            note = f"{m['name']} llama.cpp Q8_0: crashed with its extra buffer types (repacked " \
                                   f"weights: AMX on this CPU); run without them (use_extra_bufts off)"
                            if note not in notes:
                                notes.append(note)
                            env = dict(job.get("env", {}))
                            env["llama"] = dict(env.get("llama", {}), PB_LLAMA_EXTRA_BUFTS="0")
                            q8 = child(peers_py, "llama", dict(q8job, env=env), a.timeout, omp_wait)
                    except (RuntimeError, OSError, ValueError) as e:
                        log(f"{m['name']} llama.cpp Q8_0: {e}")
                        notes.append(f"{m['name']} llama.cpp Q8_0 run {r + 1} failed: {str(e)[:300]}")
                    else:
                        if "_stopped" in q8:
                            notes.append(f"{m['name']} llama.cpp Q8_0 run {r + 1}: {q8.pop('_stopped')} "
                                         f"(--timeout); measured: {', '.join(k for k in q8 if k != 'rss_mib')}")
                        res = dict(res or {}, **{"rss_int8_mib" if k == "rss_mib" else k + "_int8": v
                                                 for k, v in q8.items()})
                if res:
                    results[m["name"]][p].append(res)
    if a.torch_runs and "pytorch" in peers and a.runs > a.torch_runs:
        notes.append(f"PyTorch ran in the first {a.torch_runs} of the {a.runs} runs (--torch-runs)")
    lim = best_limits(lims)
    kb = kern_bench(a)

    bmax = max(batches)
    keys = ["load_s", "prefill", "ttft_s"] + [f"decode_b{b}" for b in batches] + \
        (["decode_ctx"] if a.context else []) + ["rss_mib"]
    if wcache:
        keys.insert(1, "load_cached_s")
    if kv16:
        keys += [f"decode_b{bmax}_kv16", "rss_kv16_mib"]
    if bf16dot and any(m["dtype"] == "bf16" for m in models):
        keys += ["prefill_bf16dot"] + [f"decode_b{b}_bf16dot" for b in dot_batches(batches)]
    if amx:
        keys += ["prefill_amx"] + [f"decode_b{b}_amx" for b in batches]
    int8_rows = int8_peer and any(m["dtype"] == "bf16" for m in models)
    if int8_rows:
        keys += ["prefill_int8"] + [f"decode_b{b}_int8" for b in batches] + ["rss_int8_mib"]
        if int8:  # pippy on the FP8 checkpoint of the folder, beside llama.cpp's Q8_0 (the same size)
            keys += ["prefill_fp8"] + [f"decode_b{b}_fp8" for b in batches] + ["rss_fp8_mib"]
    pt = a.prefill_tokens
    labels = {"load_s": "load s", "load_cached_s": "load s, cached", "prefill": f"prefill {pt} tok/s", "ttft_s": f"TTFT {pt} s",
              "rss_mib": "peak RSS MiB", f"decode_b{bmax}_kv16": f"b{bmax}, f16 KV tok/s",
              "rss_kv16_mib": "RSS, f16 KV MiB", "prefill_bf16dot": f"prefill, bf16 dots"}
    labels.update({f"decode_b{b}_bf16dot": f"b{b}, bf16 dots" for b in dot_batches(batches)})
    labels["prefill_amx"] = "prefill, AMX"
    labels.update({f"decode_b{b}_int8": f"b{b}, int8" for b in batches})
    labels.update({"prefill_int8": "prefill, int8", "rss_int8_mib": "RSS, int8 MiB"})
    labels.update({f"decode_b{b}_fp8": f"b{b}, FP8 ckpt" for b in batches})
    labels.update({"prefill_fp8": "prefill, FP8 ckpt", "rss_fp8_mib": "RSS, FP8 ckpt MiB"})
    labels.update({f"decode_b{b}_amx": f"b{b}, AMX" for b in batches})
    labels.update({f"decode_b{b}": f"decode b{b} tok/s" for b in batches})
    labels["decode_ctx"] = f"b1 at {a.context} ctx"
    med = {}
    for m in models:
        med[m["name"]] = {}
        for p in peers:
            runs = results[m["name"]][p]
            med[m["name"]][p] = {k: statistics.median([x[k] for x in runs if k in x])
                                 if any(k in x for x in runs) else None for k in keys}
            if p != "pippy" and wcache:  # the peers' own load (llama.cpp maps its GGUF)
                med[m["name"]][p]["load_cached_s"] = med[m["name"]][p]["load_s"]
            if p == "llama.cpp" and kv16:  # its KV cache is f16 in every run
                med[m["name"]][p][f"decode_b{bmax}_kv16"] = med[m["name"]][p][f"decode_b{bmax}"]
                med[m["name"]][p]["rss_kv16_mib"] = med[m["name"]][p]["rss_mib"]
            if p == "llama.cpp" and "prefill_fp8" in keys:  # its FP8 rows: its Q8_0 (llama.cpp reads no FP8)
                for k in keys:
                    if k.endswith("_fp8") or k == "rss_fp8_mib":
                        med[m["name"]][p][k] = med[m["name"]][p].get(k.replace("fp8", "int8"))
            if p != "pippy":  # their bf16 products round the activations too; their only f16/f32 runs
                for sfx in ("_bf16dot", "_amx") if m["dtype"] == "bf16" else ("_amx",):
                    med[m["name"]][p]["prefill" + sfx] = med[m["name"]][p].get("prefill")
                    for b in batches:
                        med[m["name"]][p][f"decode_b{b}{sfx}"] = med[m["name"]][p].get(f"decode_b{b}")

    # ---- table
    out = []
    w = out.append
    done = [len(results[m["name"]][p]) for m in models for p in peers]
    nruns = f"{min(done)}" if min(done) == max(done) else f"{min(done)}-{max(done)}"
    w(f"pippy-batch benchmark: {a.threads} threads, median of {nruns} run(s) (peers interleaved), "
      f"{a.tokens} tokens per sequence in decode runs; load average {load0[0]:.1f} at the start"
      + ("" if a.isa == "native" else f"; every program held to {a.isa} (--isa)"))
    w(f"limits: memory read {lim['bandwidth_gbs']:.1f} GB/s, f32 FMA peak {lim['fma_peak_gflops']:.0f} GFLOP/s, "
      f"bf16 dot {lim['bf16_dot_gflops']:.0f} GFLOP/s ({lim['bf16_dot_kind']})"
      + (f", vdpbf16ps {lim['bf16_dpbf16_gflops']:.0f} GFLOP/s" if "bf16_dpbf16_gflops" in lim else "")
      + (f", AMX tdpbf16ps {lim['amx_bf16_gflops']:.0f} GFLOP/s" if "amx_bf16_gflops" in lim else "")
      + f"; the best of {len(lims)} "
      f"measurement(s) before the runs (bandwidth {', '.join('%.1f' % x['bandwidth_gbs'] for x in lims)})")
    for m in models:
        g = lim["gemm"][m["name"]]
        f = m["facts"]
        w("")
        w(f"{m['name']}: {f['weight_bytes'] / 2**20:.0f} MiB of weights, {f['read_bytes'] / 2**20:.0f} MiB read per "
          f"decode step, {f['matmul_params'] / 1e6:.0f} M matmul weights; sgemm at its shapes: "
          f"M=512 {g['512']:.1f}, M=8 {g['8']:.1f}, M=1 {g['1']:.1f} GFLOP/s")
        m8 = int8_rows and m["dtype"] == "bf16"  # its int8 rows
        bd = bounds(m, lim, batches, a.context if m["ctx"] else 0, a.tokens, m8)
        bd["rss_mib"] = (f["weight_bytes"] + f["kv_bytes_per_token"] * max(batches) * (len(m["prompt"]) + a.tokens)) \
            / 2**20
        bd["rss_int8_mib"] = (f["weight_bytes_int8"] + f["kv_bytes_per_token"] * bmax * (len(m["prompt"]) + a.tokens)) \
            / 2**20
        bd["rss_kv16_mib"] = (f["weight_bytes"] + f["kv_bytes_per_token"] / 2 * bmax * (len(m["prompt"]) + a.tokens)) \
            / 2**20
        hdr = f"  {'measure':20} " + " ".join(f"{p:>10}" for p in peers) + f" {'bound':>10}"
        hdr += "".join(f" {'pb/' + q[:5]:>9}" for q in peers if q != "pippy") + f" {'pb/bound':>9}"
        w(hdr)
        for k in keys:
            if (k.endswith("_bf16dot") or "int8" in k or "fp8" in k) and m["dtype"] != "bf16":
                continue
            row = f"  {labels[k]:20} " + " ".join(f"{fmt(med[m['name']][p][k], k):>10}" for p in peers)
            b = bd.get(k)
            row += f" {fmt(b, k):>10}"
            hb = k not in ("load_s", "load_cached_s", "ttft_s", "rss_mib", "rss_kv16_mib", "rss_int8_mib",
                           "rss_fp8_mib")
            pv = med[m["name"]].get("pippy", {}).get(k) if "pippy" in peers else None
            for q in peers:
                if q != "pippy":
                    rr = ratio(pv, med[m["name"]][q][k], hb)
                    row += f" {('%.2f' % rr) if rr else '-':>9}"
            rb = ratio(pv, b, hb) if b else None
            row += f" {('%.2f' % rb) if rb else '-':>9}"
            w(row)
        # each program's spread over its runs: a median ratio is only as firm as the runs beside it
        spread_keys = ["prefill"] + [f"decode_b{b}" for b in batches]
        if m8:
            spread_keys += ["prefill_int8"] + [f"decode_b{b}_int8" for b in batches]
            if "prefill_fp8" in keys:
                spread_keys += ["prefill_fp8"] + [f"decode_b{b}_fp8" for b in batches]
        for p in peers:
            runs_p = results[m["name"]].get(p, [])
            parts = []
            for k in spread_keys:
                v = [x[k] for x in runs_p if x.get(k)]
                if len(v) > 1:
                    parts.append(f"{labels[k].replace(' tok/s', '')} {min(v):.1f}-{max(v):.1f}")
            if parts:
                w(f"  {p}'s runs, lowest-highest: " + ", ".join(parts))
        def b1_vs_rate(p):  # each run's (rate sampled beside its b1, b1 as a fraction of the bound at it)
            return [(x["bw_b1_gbs"], x["decode_b1"] * m["facts"]["read_bytes"] / (x["bw_b1_gbs"] * 1e9))
                    for x in results[m["name"]].get(p, []) if x.get("bw_b1_gbs") and x.get("decode_b1")]
        rated, rated_ll = b1_vs_rate("pippy"), b1_vs_rate("llama.cpp")
        adj, adj_ll = [f for _, f in rated], [f for _, f in rated_ll]
        # pairs of runs whose rates were within 10% of each other (this VM's rate has two states, and a
        # program reaches a smaller share of the higher one)
        same = [f / g for r, f in rated for q, g in rated_ll if abs(r - q) <= 0.1 * max(r, q)]
        pf = med[m["name"]].get("pippy", {}).get("prefill") if "pippy" in peers else None
        if pf and lim.get("fma_peak_gflops"):
            # per prompt token every layer's matmuls; the LM head runs for the last token only
            gf = pf * 2 * (f["matmul_params"] - f["vocab"] * f["hidden"]) / 1e9
            w(f"  prefill 512: {gf:.0f} GFLOP/s of layer matmuls = {gf / lim['fma_peak_gflops']:.2f} of the f32 FMA "
              f"peak ({lim['fma_peak_gflops']:.0f}; the time of attention and the rest not taken out)")
        for p in peers:
            firsts = [x["prefill_first"] for x in results[m["name"]].get(p, []) if x.get("prefill_first")]
            if firsts:
                w(f"  prefill 512 of {p}'s first long prompt (its scratch and KV memory fresh): "
                  f"{statistics.median(firsts):.0f} tok/s (the table: the second's)")
        if adj:
            w(f"  decode b1 against the memory rate sampled just before and after each of pippy's b1 runs "
              f"({', '.join('%.1f' % x['bw_b1_gbs'] for x in results[m['name']]['pippy'] if x.get('bw_b1_gbs'))}"
              f" GB/s): {', '.join('%.2f' % v for v in adj)} of that bound (median {statistics.median(adj):.2f})")
        if adj and adj_ll:
            # the memory rate of this machine may change between the programs' runs: their ratio is taken
            # over pairs of runs at about the same rate
            w(f"  llama.cpp's b1 against the rate sampled beside its runs "
              f"({', '.join('%.1f' % x['bw_b1_gbs'] for x in results[m['name']]['llama.cpp'] if x.get('bw_b1_gbs'))}"
              f" GB/s): {', '.join('%.2f' % v for v in adj_ll)} (median {statistics.median(adj_ll):.2f}); "
              + (f"pb/llama over the {len(same)} pair(s) of runs at rates within 10%: median "
                 f"{statistics.median(same):.2f}" if same else "no pair of runs at rates within 10%"))
        if m8:  # the same for the int8 rows, against their own bytes a step
            by8 = int8_step_bytes(m, a.tokens)
            rated8 = {p: [(x["bw_b1_gbs_int8"], x["decode_b1_int8"] * by8 / (x["bw_b1_gbs_int8"] * 1e9))
                          for x in results[m["name"]].get(p, [])
                          if x.get("bw_b1_gbs_int8") and x.get("decode_b1_int8")]
                      for p in ("pippy", "llama.cpp")}
            parts = []
            for p, who in (("pippy", "pippy"), ("llama.cpp", "llama.cpp Q8_0")):
                if rated8[p]:
                    parts.append(f"{who} {', '.join('%.2f' % g for _, g in rated8[p])} at "
                                 f"{', '.join('%.1f' % q for q, _ in rated8[p])} GB/s "
                                 f"(median {statistics.median(g for _, g in rated8[p]):.2f})")
            if rated8["pippy"] and rated8["llama.cpp"]:
                same8 = [g / h for q, g in rated8["pippy"] for q2, h in rated8["llama.cpp"]
                         if abs(q - q2) <= 0.1 * max(q, q2)]
                parts.append(f"pb/llama over the {len(same8)} pair(s) of runs at rates within 10%: median "
                             f"{statistics.median(same8):.2f}" if same8 else "no pair of runs at rates within 10%")
            if parts:
                w(f"  int8 decode b1 against the memory rate sampled just before and after each b1 run "
                  f"({by8 / 2**20:.0f} MiB a step): " + "; ".join(parts))
    w("")
    w("bound: decode b1 = bandwidth / bytes read per step; decode bN = min(N x that, sgemm rate at M=8 (N<=8) "
      "or 512 / 2 x matmul weights); prefill = sgemm(M=512) / 2 x matmul weights; peak RSS = weights + f32 KV "
      "cache of the largest batch (f16 KV rows: an f16 cache; llama.cpp's cache is f16 in all its rows). "
      "Ratios > 1 favour pippy-batch (for load, TTFT and RSS: the peer's / pippy's)."
      + (" int8 rows: pippy --weights-dtype int8 beside llama.cpp on a Q8_0 GGUF; their bounds count the matrices "
         "at 1.0625 bytes a weight, the rest as stored, and the f32 KV cache of every sequence at the decode "
         "run's mean position (peak RSS: every matrix at 1.0625 bytes a weight, as a Q8_0 GGUF holds them, + "
         "the f32 KV cache of the largest batch)." if int8_rows else ""))
    for n in notes:
        w("note: " + n)
    text = "\n".join(out)
    print(text)
    if kb:
        print("\nkernel microbenchmark (tests/cpu/kern-bench):\n" + kb)
    doc = {"threads": a.threads, "isa": a.isa, "runs": a.runs, "tokens": a.tokens, "batches": batches, "peers": peers,
           "int8": {"mode": a.int8, "pippy": int8, "llama.cpp": int8_peer and "llama.cpp" in peers},
           "loadavg_start": load0, "omp_wait_policy": omp_wait, "limits": lim, "limits_each_run": lims, "notes": notes,
           "models": {m["name"]: {"dtype": m["dtype"], "facts": m["facts"], "gguf": m["gguf"],
                                  "prompt_tokens": len(m["prompt"]), "median": med[m["name"]],
                                  "runs": results[m["name"]],
                                  "gguf_q8_0": m["gguf_q8"],
                                  "bounds": bounds(m, lim, batches, a.context if m["ctx"] else 0, a.tokens,
                                                   int8_rows and m["dtype"] == "bf16")}
                      for m in models},
           "kern_bench": kb, "table": text}
    with open(a.json, "w") as f:
        json.dump(doc, f, indent=1)
    log(f"wrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
