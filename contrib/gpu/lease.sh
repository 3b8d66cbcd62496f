#!/bin/bash
# One device call: the GPU checks, then the GPU benchmark, inside a time budget.
#
#   here:   sh contrib/gpu/pack.sh
#   device: run(command="bash contrib/gpu/lease.sh [SECONDS]", carry=["gpu-pack"])
#
# SECONDS (default 480) is split: the op test alone first (its whole output in
# $OUT/ops.txt; on failure a compute-sanitizer memcheck of it in
# $OUT/sanitizer.txt), then contrib/gpu/check.sh (summary.txt, check.log,
# version.txt, nvidia-smi.txt), then contrib/bench/gpu.py (bench.txt,
# gpu-bench.json) in what is left. Eight files at most come back from $OUT.
# Before check.sh: ops again with the tensor-core kernels' other shapes, and
# tests/backend/linbench (linbench.txt: the linear op's GB/s and TFLOP/s).
# Then batch-1 decode with settings alternated (PB_LEASE_B1; default session 42's fusions on and off), and ncu's
# kernel times over one batch-1 decode step (both appended to bench.txt).
# Then prefill by --max-batch-tokens and attention's form, decode at batch 64 by attention's form and sampled
# with the picks on the device or the host (PB_CUDA_SAMPLE), ncu over a
# prefill by form and the attention and product kernels' % of peak (SM, memory, tensor pipe, warps)
# (appended to bench.txt).
# PB_LEASE_SKIP="ops ops2 linbench check bench mbt b1 profile" leaves parts out (default: none).
set -u
HERE=$(cd "$(dirname "$0")/../.." && pwd)
BUDGET=${1:-480}
OUTD=${OUT:-$HERE/gpu-check-out}
mkdir -p "$OUTD"
export OUT=$OUTD PYTHONUNBUFFERED=1
T0=$(date +%s)
left() { echo $((BUDGET - ($(date +%s) - T0))); }
skip() { case " ${PB_LEASE_SKIP-} " in *" $1 "*) return 0 ;; esac; return 1; }
PACK=$HERE/gpu-pack
export PACK
(. "$HERE/contrib/gpu/env.sh") # the pack's compressed programs unpacked, once
# attention's form by letter: g grouped (the default), q a block a query, l scores a key a thread
form_env() {
    case $1 in
    g) echo PB_CUDA_ATTN_GROUP=1 ;; # the default: grouped from 1024 queries a call
    q) echo PB_CUDA_ATTN_GROUP=0 ;;
    l) echo PB_CUDA_ATTN_GROUP=0 PB_CUDA_ATTN_LANE=1 ;;
    esac
}

if ! skip ops; then
    (
        . "$HERE/contrib/gpu/env.sh"
        echo "== ops cuda (default KV cache)"
        timeout -k 5 60 "$PACK/tests/backend/ops" cuda
        rc=$?
        echo "== exit $rc"
        if [ $rc -ne 0 ] && [ $rc -ne 77 ] && command -v compute-sanitizer >/dev/null; then
            timeout -k 5 75 compute-sanitizer --tool memcheck --print-limit 20 "$PACK/tests/backend/ops" cuda \
                >"$OUT/sanitizer.txt" 2>&1
            echo "== compute-sanitizer exit $?" >>"$OUT/sanitizer.txt"
        fi
    ) >"$OUT/ops.txt" 2>&1
    tail -n 3 "$OUT/ops.txt"
fi
if ! skip ops2; then  # the kernels' other shapes (kern_cuda.cu's PB_CUDA_*, as ops-emu.sh's runs) on the device
    (
        . "$HERE/contrib/gpu/env.sh"
        for e in "PB_CUDA_TC_COLS=8 PB_CUDA_TC_SKINNY=32 PB_CUDA_TC_TILE=64 PB_CUDA_TC_PIPE=0 PB_CUDA_TC_XB=0 \
PB_CUDA_ATTN_CHUNK=8 PB_CUDA_ATTN_SPLIT=1 PB_CUDA_NORM_REGS=0" \
            "PB_CUDA_TC_PIPE=0 PB_CUDA_TC_TILE=128 PB_CUDA_TC_XB=0 PB_CUDA_ATTN_LANE=1" "PB_CUDA_TC_STAGES=3" \
            "PB_CUDA_TC_SPANS=2" "PB_CUDA_GLU_LOAD=1 PB_CUDA_ATTN_ROPE=0 PB_CUDA_TC_PREFETCH=2" \
            "PB_CUDA_TC_COLS=8 PB_CUDA_TC_PIPE_ROWS=128 PB_CUDA_PDL=1 PB_CUDA_ATTN_GROUP=0 PB_CUDA_TC_PREFETCH=1"; do
            echo "== ops cuda, $e"
            env $e timeout -k 5 60 "$PACK/tests/backend/ops" cuda
            echo "== exit $?"
        done
    ) >>"$OUT/ops.txt" 2>&1
    tail -n 4 "$OUT/ops.txt"
fi
if ! skip linbench && { [ -x "$PACK/tests/backend/linbench" ] || [ -f "$PACK/tests/backend/linbench.xz" ]; }; then
    # the linear op alone: the default kernels, the pipelined kernel's shallower ring, the tiled kernel where
    # the pipelined one takes over, the exact f32 products
    (
        . "$HERE/contrib/gpu/env.sh"
        L="$PACK/tests/backend/linbench"
        echo "== defaults"
        timeout -k 5 60 "$L" cuda bf16 1,8,32,64,128,256,512,4096
        echo "== PB_CUDA_TC_STAGES=3 (session 40's ring: spans loaded 2 ahead, not 5)"
        PB_CUDA_TC_STAGES=3 timeout -k 5 60 "$L" cuda bf16 128,256,512,4096
        echo "== PB_CUDA_TC_SPANS=2 (6 stages of 2 spans: a barrier for two spans' mmas, 192 KB)"
        PB_CUDA_TC_SPANS=2 timeout -k 5 60 "$L" cuda bf16 128,256,512,4096
        echo "== PB_CUDA_TC_STAGES=3 PB_CUDA_TC_SPANS=2 (96 KB)"
        PB_CUDA_TC_STAGES=3 PB_CUDA_TC_SPANS=2 timeout -k 5 60 "$L" cuda bf16 512,4096
        echo "== PB_CUDA_TC_PREFETCH=1 (the skinny kernel's next round of slices loaded a round ahead: the down product)"
        PB_CUDA_TC_PREFETCH=1 timeout -k 5 60 "$L" cuda bf16 1,8,32,64
        echo "== PB_CUDA_TC_PREFETCH=2 (and products of waves so, the resident blocks taking the groups in turn)"
        PB_CUDA_TC_PREFETCH=2 timeout -k 5 60 "$L" cuda bf16 1,8,32,64
        echo "== PB_CUDA_TC_PIPE=0 (tiled, 128 x 128)"
        PB_CUDA_TC_PIPE=0 timeout -k 5 60 "$L" cuda bf16 128,512
        echo "== PB_MMPREC=f32 (exact products)"
        PB_MMPREC=f32 timeout -k 5 60 "$L" cuda bf16 1,8
    ) >"$OUT/linbench.txt" 2>&1
    cat "$OUT/linbench.txt"
fi
if ! skip check; then
    t=$(( $(left) * 60 / 100 ))
    echo "== check.sh (${t}s)"
    timeout -k 5 "$t" bash "$HERE/contrib/gpu/check.sh"
    echo "== check.sh exit $?"
fi
if ! skip bench; then
    t=$(( $(left) - 10 ))
    if [ "$t" -gt 60 ]; then
        echo "== gpu.py (${t}s)"
        WORK=$(mktemp -d /tmp/pbbench.XXXXXX)
        timeout -k 5 "$t" python3 "$HERE/contrib/bench/gpu.py" --tokens 32 --batches 1,64 --work "$WORK" \
            >"$OUT/bench.txt" 2>&1
        echo "== gpu.py exit $?"
        tail -n 20 "$OUT/bench.txt"
    else
        echo "== gpu.py: no time left (${t}s)"
    fi
fi
# prefill by tokens a micro-batch (--max-batch-tokens 512, 2048, 8192, alternated twice): 16 distinct prompts of
# about 600 tokens, 1 token out, the benchmark's 1.1B model; the prefill rate from --metrics (appended to bench.txt)
if ! skip mbt && [ "$(left)" -gt 40 ] && [ -f "${WORK:-/nonexistent}/llama-1.1b/config.json" ]; then
    (
        . "$HERE/contrib/gpu/env.sh"
        python3 -c "
import json
for r in range(16):
    print(json.dumps({'prompt': ' '.join(f'w{r}x{i}' for i in range(150)), 'max_tokens': 1}))" >"$WORK/pf.jsonl"
        # N:F = --max-batch-tokens N with attention's form F: g grouped (the default), q a block a query
        # (PB_CUDA_ATTN_GROUP=0), l a block a query with scores a key a thread (PB_CUDA_ATTN_LANE=1)
        for i in 1 2; do
            for c in 512:g 2048:g 8192:g 8192:q 8192:l; do
                n=${c%:*} f=${c#*:}
                env $(form_env $f) "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" \
                    --in "$WORK/pf.jsonl" --out "$WORK/pf$n-$f.jsonl" --force -b 16 --no-prefix-sharing \
                    --max-batch-tokens $n --metrics "$WORK/pf.json" || { echo "mbt $c: FAILED"; continue; }
                echo "--max-batch-tokens $n, attention $(form_env $f) run $i: $(python3 -c "import json; \
m = json.load(open('$WORK/pf.json')); print(m['prompt_tokens'], 'prompt tokens, prefill', \
round(m['prefill_tokens_per_second']), 'tok/s')")"
            done
            same=1
            for f in 512-g 2048-g 8192-q 8192-l; do cmp -s "$WORK/pf$f.jsonl" "$WORK/pf8192-g.jsonl" || same=0; done
            [ $same = 1 ] && echo "mbt: same text" || echo "mbt: TEXT DIFFERS"
        done
        # decode at batch 64 (32 tokens each), attention grouped or a block a query, alternated
        python3 -c "
import json
for r in range(64):
    print(json.dumps({'prompt': f'story {r}: the', 'max_tokens': 32, 'ignore_eos': True}))" >"$WORK/b64.jsonl"
        for i in 1 2; do
            for f in g q; do
                env $(form_env $f) "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" \
                    --in "$WORK/b64.jsonl" --out "$WORK/b64-$f.jsonl" --force -b 64 --temperature 0 \
                    --metrics "$WORK/b64.json" || { echo "b64 $f: FAILED"; continue; }
                echo "b64 decode, attention $(form_env $f) run $i: $(python3 -c "import json; \
print(round(json.load(open('$WORK/b64.json'))['decode_tokens_per_second'], 1))") tok/s"
            done
            cmp -s "$WORK/b64-g.jsonl" "$WORK/b64-q.jsonl" && echo "mbt: b64 same text" || echo "mbt: b64 TEXT DIFFERS"
        done
        # sampled decode at batch 64 (temperature 0.8, top-p 0.9, top-k 50, repetition penalty 1.1): the picks on
        # the device (kc_sample, the default) or the logits to the host sampler (PB_CUDA_SAMPLE=0), alternated
        for i in 1 2; do
            for d in 1 0; do
                PB_CUDA_SAMPLE=$d "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" \
                    --in "$WORK/b64.jsonl" --out "$WORK/b64s-$d.jsonl" --force -b 64 --temperature 0.8 --top-p 0.9 \
                    --top-k 50 --repetition-penalty 1.1 --seed 7 --metrics "$WORK/b64.json" ||
                    { echo "b64 sampled PB_CUDA_SAMPLE=$d: FAILED"; continue; }
                echo "b64 decode sampled, PB_CUDA_SAMPLE=$d run $i: $(python3 -c "import json; \
print(round(json.load(open('$WORK/b64.json'))['decode_tokens_per_second'], 1))") tok/s"
            done
            cmp -s "$WORK/b64s-1.jsonl" "$WORK/b64s-0.jsonl" && echo "mbt: b64 sampled same text" ||
                echo "mbt: b64 sampled TEXT DIFFERS"
        done
    ) >>"$OUT/bench.txt" 2>&1
    grep -E '^(--max-batch|mbt|b64 decode)' "$OUT/bench.txt"
fi
# batch 1 with settings alternated (PB_LEASE_B1: words of VAR=VALUE[,VAR=VALUE]; default session 42's
# launches fewer a layer: the activation in the skinny kernel's loads (PB_CUDA_GLU_LOAD=1, off by default until
# this measures it) and the rotary in the KV store (PB_CUDA_ATTN_ROPE=1, the default), each off and both off;
# session 43's next round of slices loaded ahead (PB_CUDA_TC_PREFETCH=1, off until measured: the 1.1B's down
# product, 3 rounds) and session 46's =2 (that, and a product the plain form runs in waves so, its grid the
# device's resident blocks taking the column groups in turn: the 1.1B's gate|up has 704 groups); session 40
# measured PB_CUDA_PDL=1 so: no gain), on the benchmark's 1.1B model: decode tok/s, the text the same
# (appended to bench.txt)
if ! skip b1 && [ "$(left)" -gt 40 ] && [ -f "${WORK:-/nonexistent}/llama-1.1b/config.json" ]; then
    (
        . "$HERE/contrib/gpu/env.sh"
        echo '{"prompt": "the quick brown fox", "max_tokens": 128, "ignore_eos": true}' >"$WORK/p2.jsonl"
        for i in 1 2; do
            n=0
            for e in ${PB_LEASE_B1:-PB_CUDA_GLU_LOAD=1 PB_CUDA_GLU_LOAD=0 PB_CUDA_ATTN_ROPE=0 \
                PB_CUDA_GLU_LOAD=0,PB_CUDA_ATTN_ROPE=0 PB_CUDA_TC_PREFETCH=1 PB_CUDA_TC_PREFETCH=2}; do
                rm -f "$WORK/b1-$n.json" "$WORK/b1-$n.jsonl"
                env ${e//,/ } "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" \
                    --in "$WORK/p2.jsonl" --out "$WORK/b1-$n.jsonl" --temperature 0 --metrics "$WORK/b1-$n.json" &&
                    echo "b1 $e run $i: decode $(python3 -c "import json; \
print(round(json.load(open('$WORK/b1-$n.json'))['decode_tokens_per_second'], 1))") tok/s" ||
                    echo "b1 $e run $i: FAILED"
                n=$((n + 1))
            done
            same=1
            for f in "$WORK"/b1-*.jsonl; do cmp -s "$f" "$WORK/b1-0.jsonl" || same=0; done
            [ $same = 1 ] && echo "b1: same text" || echo "b1: TEXT DIFFERS (or a run failed)"
        done
    ) >>"$OUT/bench.txt" 2>&1
    grep '^b1' "$OUT/bench.txt"
fi
# where one decode step's GPU time goes: ncu's kernel durations over about one
# step of batch-1 decode of the benchmark's 1.1B model (appended to bench.txt)
t=$(( $(left) - 10 ))
if ! skip profile && [ "$t" -gt 45 ] && command -v ncu >/dev/null &&
    [ -f "${WORK:-/nonexistent}/llama-1.1b/config.json" ]; then
    echo "== ncu (${t}s)"
    (
        . "$HERE/contrib/gpu/env.sh"
        echo '{"prompt": "the quick brown fox", "max_tokens": 24, "ignore_eos": true}' >"$WORK/p.jsonl"
        s0=$(date +%s.%N)
        "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" --in "$WORK/p.jsonl" --out "$WORK/o0.jsonl" \
            --temperature 0 --metrics "$WORK/m0.json"
        echo "plain run: $(python3 -c "print(round($(date +%s.%N) - $s0, 2))") s;" \
             "metrics: $(head -c 600 "$WORK/m0.json")"
        timeout -k 5 "$t" ncu --clock-control none --metrics gpu__time_duration.sum --csv --launch-skip 600 \
            --launch-count 260 "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" --in "$WORK/p.jsonl" \
            --out "$WORK/o1.jsonl" --temperature 0 >"$WORK/ncu.csv" 2>"$WORK/ncu.err"
        echo "ncu exit $?; $(tail -n 3 "$WORK/ncu.err")"
        cat >"$WORK/ncusum.py" <<'PY'
# ncu --csv rows: each kernel name's launches and time (gpu__time_duration.sum); any other metric (a % of
# peak) as its mean over the name's launches
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows:
    sys.exit("no ncu rows")
h = rows[0]
ki, vi, ui = h.index("Kernel Name"), h.index("Metric Value"), h.index("Metric Unit")
mi = h.index("Metric Name") if "Metric Name" in h else None
tot = collections.defaultdict(float); cnt = collections.Counter()
other = collections.defaultdict(list)  # (kernel, metric) -> values
unit = {"nsecond": 1e-3, "ns": 1e-3, "usecond": 1, "us": 1, "msecond": 1e3, "ms": 1e3}
timed = [r for r in rows[1:] if mi is None or r[mi] == "gpu__time_duration.sum"]
odd = {r[ui] for r in timed} - set(unit)
if odd:
    print(f"ncu: units {sorted(odd)} not known: taken as ns")
for r in rows[1:]:
    name = r[ki].split("(")[0].split("<")[0]
    try:
        v = float(r[vi].replace(",", ""))
    except ValueError:
        continue
    if mi is None or r[mi] == "gpu__time_duration.sum":
        tot[name] += v * unit.get(r[ui], 1e-3); cnt[name] += 1
    else:
        other[(name, r[mi].split(".")[0])].append(v)
all_us = sum(tot.values())
print(f"ncu: {sum(cnt.values())} launches, {all_us:.0f} us of kernel time")
for n, v in sorted(tot.items(), key=lambda x: -x[1]):
    print(f"  {n:<28} {cnt[n]:5d} launches {v:9.1f} us  {v / cnt[n]:7.2f} us each  {100 * v / all_us:5.1f}%")
    for (k, m), vals in sorted(other.items()):
        if k == n:
            print(f"      {m:<44} {sum(vals) / len(vals):6.1f} (mean of {len(vals)})")
PY
        python3 "$WORK/ncusum.py" "$WORK/ncu.csv"
        # prefill: the first 300 kernels of 16 prompts of about 850 tokens in micro-batches of 8192 tokens
        for f in g q; do
            t2=$(( $(left) - 10 ))
            [ -f "$WORK/pf.jsonl" ] && [ "$t2" -gt 30 ] || break
            echo "ncu, prefill (--max-batch-tokens 8192, $(form_env $f)):"
            env $(form_env $f) timeout -k 5 "$t2" ncu --clock-control none --metrics gpu__time_duration.sum --csv \
                --launch-count 300 "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" \
                --in "$WORK/pf.jsonl" --out "$WORK/pf-ncu.jsonl" --force -b 16 --no-prefix-sharing \
                --max-batch-tokens 8192 >"$WORK/ncu2.csv" 2>"$WORK/ncu2.err"
            echo "ncu exit $?"
            python3 "$WORK/ncusum.py" "$WORK/ncu2.csv"
        done
        # the same prefill's attention and product kernels against their limits (% of peak: SM issue, memory,
        # the tensor pipe, warps resident), the default forms, a few launches of each (replayed per metric)
        t3=$(( $(left) - 10 ))
        if [ -f "$WORK/pf.jsonl" ] && [ "$t3" -gt 30 ]; then
            echo "ncu, prefill (--max-batch-tokens 8192), the attention and product kernels' limits:"
            timeout -k 5 "$t3" ncu --clock-control none --csv --launch-count 24 \
                -k 'regex:k_attention|k_linear_tc_pipe' \
                --metrics gpu__time_duration.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,\
gpu__compute_memory_throughput.avg.pct_of_peak_sustained_elapsed,\
sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,\
sm__warps_active.avg.pct_of_peak_sustained_active \
                "$PACK/pippy-batch" -q --device cuda --model "$WORK/llama-1.1b" --in "$WORK/pf.jsonl" \
                --out "$WORK/pf-ncu.jsonl" --force -b 16 --no-prefix-sharing --max-batch-tokens 8192 \
                >"$WORK/ncu3.csv" 2>"$WORK/ncu3.err"
            echo "ncu exit $?; $(tail -n 2 "$WORK/ncu3.err")"
            python3 "$WORK/ncusum.py" "$WORK/ncu3.csv"
        fi
    ) >>"$OUT/bench.txt" 2>&1
    tail -n 40 "$OUT/bench.txt"
fi
echo "== lease.sh done in $(( $(date +%s) - T0 ))s"
