#!/bin/sh
# The whole CLI with --device cuda on the CPU stand-in of the CUDA runtime
# (tests/backend/pippy-batch-emu: src/cli/main.c linked with src/cuda's backend
# built as C++ on tests/backend/cuda_emu, as ops-emu): what the stage, the
# scheduler and the sampler do with a device backend, on every machine, GPU or
# not. The checks of contrib/gpu/check.sh that need no NCCL and no GPU speed:
#   - generated checkpoints of six families (learned positions, ALiBi, GPT-J's
#     and NeoX's rotary and parallel residuals, OPT, a GQA Mistral with a
#     window), f32 weights and KV cache: the same bytes as --device cpu;
#   - bf16 weights and the default bf16 cache (the tensor-core products):
#     sampling on the device (temperature, top-k, top-p, min-p, repetition
#     penalty, min_tokens with EOS masked, records of n = 2) the same bytes as the host sampler
#     (PB_CUDA_SAMPLE=0) on the same logits; prefix sharing (kv_copy) the same
#     bytes as --no-prefix-sharing; 2 ranks over TCP (the stage's input and
#     output through host memory) the same bytes as 1 rank;
#   - the device memory a stage holds at most within plan --device cuda's figure,
#     and a GPU too small for it refused before the load (PB_EMU_GPU_MIB);
#   - --weights-dtype int8 (the CPU backend's) refused by run and plan;
#   - an FP8 checkpoint: kept as stored (the CPU backend's) refused by run and
#     plan; --weights-dtype f32 (dequantized on the host) the same bytes as
#     --device cpu --weights-dtype f32.
# About 1.5 minutes of one core: the stand-in runs each GPU thread as a fiber.
set -u
. "$PB_SRCDIR/tests/net/common.sh"
E="$PB_BUILDDIR/tests/backend/pippy-batch-emu"
"$E" --version 2>"$err" | grep -q "cuda: yes (backend built)" || fail "pippy-batch-emu has no CUDA backend"
zstd -q -d -f -o "$D/tok.json" "$PB_TESTDATA/tokenizers/small-split-bytelevel.json.zst" || fail "tokenizer"
# ckpt NAME FAMILY DTYPE [ARGS...]: a 2-layer checkpoint in $D/NAME, in 2 shards, with the 3000-token tokenizer
ckpt() {
    n=$1 f=$2 t=$3
    shift 3
    $PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family "$f" --out "$D/$n" --layers 2 --hidden 64 --heads 4 \
        --vocab 3000 --max-pos 128 --window 8 --scale 0.2 --dtype "$t" --tokenizer "$D/tok.json" --shards 2 "$@" \
        >/dev/null 2>"$err" || fail "$n: pb-make-checkpoint"
}
i=0
while [ $i -lt 4 ]; do
    echo "{\"prompt\": \"Record $i says that the quick brown fox\", \"max_tokens\": $((6 + i % 3)), \"ignore_eos\": true}"
    i=$((i + 1))
done >"$D/in.jsonl"
# beam search: its forks of one slot's cache into another on the device
echo '{"prompt": "Beams of the quick brown fox", "use_beam_search": true, "n": 3, "max_tokens": 7}' >>"$D/in.jsonl"
# embeddings: every position's final hidden state downloaded, pooled on the host
printf '%s\n' '{"input": "The quick brown fox"}' '{"input": ["jumps over", "the lazy dog and the cat"]}' >"$D/emb.jsonl"
for fam in gpt2 opt bloom gptj gpt_neox mistral; do
    kv=""
    [ $fam = mistral ] && kv="--kv-heads 2"
    ckpt "m-$fam" $fam f32 $kv
    "$P" -q --device cpu --model "$D/m-$fam" --in "$D/in.jsonl" --out "$D/cpu-$fam.jsonl" -b 4 2>"$err" ||
        fail "$fam: --device cpu"
    "$E" -v --device cuda --kv-dtype f32 --model "$D/m-$fam" --in "$D/in.jsonl" --out "$D/cuda-$fam.jsonl" -b 4 \
        2>"$err" || fail "$fam: --device cuda"
    grep -q "device cuda: GPU 0 of 1 visible.*CPU emulation" "$err" || fail "$fam: not run on the stand-in's device"
    grep -q "backend cuda" "$err" || fail "$fam: the stage's backend is not cuda"
    cmp "$D/cpu-$fam.jsonl" "$D/cuda-$fam.jsonl" || fail "$fam f32: --device cuda differs from --device cpu"
    for dev in cpu cuda; do
        "$E" -q --device $dev --kv-dtype f32 --task embed --pooling mean --model "$D/m-$fam" --in "$D/emb.jsonl" \
            --out "$D/emb-$dev-$fam.jsonl" -b 4 2>"$err" || fail "$fam: --task embed --device $dev"
    done
    $PB_PYTHON - "$D/emb-cpu-$fam.jsonl" "$D/emb-cuda-$fam.jsonl" <<'PYEOF' || fail "$fam: embeddings differ"
import json, sys
def vecs(path):
    out = []
    for line in open(path):
        r = json.loads(line)
        out += [r["embedding"]] if "embedding" in r else [d["embedding"] for d in r["data"]]
    return out
a, b = (vecs(p) for p in sys.argv[1:])
sys.exit(0 if len(a) == len(b) == 3 and all(len(x) == len(y) > 0 and max(abs(p - q) for p, q in zip(x, y)) <= 1e-5
                                            for x, y in zip(a, b)) else 1)
PYEOF
    echo "$fam f32: --device cuda (the stand-in) the same bytes as --device cpu; embeddings within 1e-5"
done

ckpt m-llama llama bf16 --kv-heads 2
M="$D/m-llama"
# sampling: the device's sampler against the host's, over the same logits
. "$PB_SRCDIR/tests/backend/sample-records.sh"
pb_sample_records 8 16 >"$D/sample.jsonl"
PB_CUDA_SAMPLE=0 "$E" -q --device cuda --model "$M" --in "$D/sample.jsonl" --out "$D/smp-host.jsonl" -b 8 2>"$err" ||
    fail "sampling: the host sampler's run"
"$E" -q --device cuda --model "$M" --in "$D/sample.jsonl" --out "$D/smp-dev.jsonl" -b 8 2>"$err" ||
    fail "sampling: the device sampler's run"
[ "$(grep -c '"finish_reason"' "$D/smp-dev.jsonl")" = 8 ] || fail "sampling: not 8 records"
cmp "$D/smp-host.jsonl" "$D/smp-dev.jsonl" || fail "sampling on the device differs from the host sampler's"
echo "bf16 sampling: the device sampler the same bytes as the host sampler"

# prefix sharing: slots' first cache rows copied from another's
sys="You are a careful assistant. Answer in one short sentence."
for i in 1 2 3; do
    echo "{\"prompt\": \"$sys Question $i: what comes next?\", \"max_tokens\": 5}"
    echo "{\"prompt\": \"$sys Tell me about $i.\", \"max_tokens\": 4, \"temperature\": 0.7, \"seed\": $i," \
        "\"repetition_penalty\": 1.3}"
done >"$D/prefix.jsonl"
"$E" -q --device cuda --model "$M" --in "$D/prefix.jsonl" --out "$D/pfx-ref.jsonl" -b 4 --no-prefix-sharing \
    2>"$err" || fail "prefix sharing: --no-prefix-sharing"
"$E" -q --device cuda --model "$M" --in "$D/prefix.jsonl" --out "$D/pfx.jsonl" -b 4 --metrics "$D/pfx.json" \
    2>"$err" || fail "prefix sharing"
n=$($PB_PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["prompt_tokens_shared"])' "$D/pfx.json")
[ "${n:-0}" -gt 100 ] || fail "prefix sharing: only ${n:-0} prompt tokens shared"
cmp "$D/pfx-ref.jsonl" "$D/pfx.jsonl" || fail "prefix sharing on the device differs from --no-prefix-sharing"
echo "bf16 prefix sharing: $n prompt tokens shared, the same bytes as --no-prefix-sharing"

# the device memory plan's figure is what the stage holds at most: the stand-in's peak of allocations
# (PB_EMU_PEAK_FILE) within plan --device cuda's total (sampled bf16 rows: the sampler's and the rounded
# rows' buffers; greedy f32), and a GPU smaller than the plan refused before the load, in MiB
for c in "m-llama sample.jsonl 8" "m-gpt2 in.jsonl 4"; do
    set -- $c
    PB_EMU_PEAK_FILE="$D/peak" "$E" -q --device cuda --model "$D/$1" --in "$D/$2" --out "$D/peak-$1.jsonl" -b $3 \
        2>"$err" || fail "$1: the peak run"
    "$E" plan --device cuda --model "$D/$1" --batch-size $3 --json >"$D/plan.json" 2>"$err" || fail "$1: plan"
    $PB_PYTHON - "$D/plan.json" "$D/peak" "$1" <<'PYEOF' || fail "$1: device memory beyond the plan"
import json, sys
plan = json.load(open(sys.argv[1]))["stages"][0]["memory"]["total"]
peak = int(open(sys.argv[2]).read())
print(f"{sys.argv[3]}: plan {plan} bytes of device memory, the run held at most {peak}")
sys.exit(0 if 0 < peak <= plan else 1)
PYEOF
done
PB_EMU_GPU_MIB=1 "$E" --device cuda --model "$M" --in "$D/sample.jsonl" --out "$D/small.jsonl" -b 8 2>"$err"
rc=$?
[ $rc -eq 2 ] && grep -q "stage 0 needs about [0-9.]* MiB on GPU 0 .* has only 1.00 MiB free of 1.00 MiB" "$err" ||
    fail "a 1 MiB GPU: exit $rc, not refused with the sizes in MiB"
[ ! -e "$D/small.jsonl" ] || fail "a 1 MiB GPU: an output file was made"
echo "a 1 MiB GPU refused before the load: $(sed -n 's/.*error: //p' "$err" | cut -c1-60)..."

# --weights-dtype int8: the CPU backend's alone, refused with --device cuda before anything loads
for cmd in run plan; do
    if [ $cmd = run ]; then
        "$E" --device cuda --weights-dtype int8 --model "$M" --in "$D/sample.jsonl" --out "$D/int8.jsonl" 2>"$err"
    else
        "$E" plan --device cuda --weights-dtype int8 --model "$M" >/dev/null 2>"$err"
    fi
    rc=$?
    [ $rc -eq 2 ] && grep -q -- "--weights-dtype int8: the cuda backend keeps weights as f32, f16 or bf16" "$err" ||
        fail "--device cuda --weights-dtype int8 ($cmd): exit $rc, not refused by name"
done
[ ! -e "$D/int8.jsonl" ] || fail "--device cuda --weights-dtype int8: an output file was made"
echo "--device cuda --weights-dtype int8: refused (exit 2) by run and plan"

# an FP8 checkpoint (F8_E4M3 with block scales): as stored the CPU backend's alone; f32 the same bytes on both
ckpt m-fp8 llama bf16 --kv-heads 2 --fp8 16,64
for cmd in run plan; do
    if [ $cmd = run ]; then
        "$E" --device cuda --model "$D/m-fp8" --in "$D/in.jsonl" --out "$D/fp8.jsonl" 2>"$err"
    else
        "$E" plan --device cuda --model "$D/m-fp8" >/dev/null 2>"$err"
    fi
    rc=$?
    [ $rc -eq 2 ] && grep -q -- "FP8 checkpoint .*cuda backend does not keep F8_E4M3.*--weights-dtype bf16" "$err" ||
        fail "--device cuda, an FP8 checkpoint as stored ($cmd): exit $rc, not refused by name"
done
[ ! -e "$D/fp8.jsonl" ] || fail "--device cuda, an FP8 checkpoint as stored: an output file was made"
"$P" -q --device cpu --weights-dtype f32 --model "$D/m-fp8" --in "$D/in.jsonl" --out "$D/cpu-fp8.jsonl" -b 4 \
    2>"$err" || fail "fp8: --device cpu --weights-dtype f32"
"$E" -q --device cuda --weights-dtype f32 --kv-dtype f32 --model "$D/m-fp8" --in "$D/in.jsonl" \
    --out "$D/cuda-fp8.jsonl" -b 4 2>"$err" || fail "fp8: --device cuda --weights-dtype f32"
cmp "$D/cpu-fp8.jsonl" "$D/cuda-fp8.jsonl" || fail "fp8 as f32: --device cuda differs from --device cpu"
echo "an FP8 checkpoint: as stored refused by --device cuda (exit 2); as f32 the same bytes as --device cpu"

# 2 ranks, a stage each (the stand-in's device in each process), over TCP: NCCL needs a GPU
pb_launcher_lock
PB_TRANSPORT=tcp timeout 120 $MPIRUN -np 2 "$E" -q --device cuda --model "$M" --in "$D/sample.jsonl" \
    --out "$D/np2.jsonl" -b 8 --chunks 2 2>"$err" || fail "2 ranks"
cmp "$D/smp-dev.jsonl" "$D/np2.jsonl" || fail "2 ranks differ from 1"
echo "bf16, 2 ranks over TCP: the same bytes as 1 rank"
echo "cli-emu: ok"
