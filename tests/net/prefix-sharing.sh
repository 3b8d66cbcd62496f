#!/bin/sh
# Prefix sharing: prompts that begin alike (a long shared "system" part, some
# prompts whole copies of others, some sharing only a few tokens) start as a
# copy of another slot's KV cache and token history. The output must be the
# same bytes as --no-prefix-sharing: greedy, sampled, with a repetition
# penalty (the copied history) and min_tokens; at batch 4 with 2 chunks, on
# 2 and 3 ranks (every stage copies its own layers), and over f16 and bf16
# caches (their panel layouts); at batch 1 only finished sequences' caches,
# kept in their slots, can be shared. prompt_tokens_shared in --metrics must
# show that prefixes were shared, so that the comparison means something.
set -u
. "$PB_SRCDIR/tests/net/common.sh"
# GQA, head width 12 (not a multiple of the caches' 16-key panels)
$PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family llama --out "$D/m" --layers 3 --hidden 48 \
    --heads 4 --kv-heads 2 --vocab 32000 --max-pos 256 --scale 0.2 >/dev/null 2>"$err" || fail "checkpoint"
zstd -q -d -f -o "$D/m/tokenizer.json" "$PB_TESTDATA/tokenizers/llama2.json.zst" || fail "tokenizer"
sys="You are a careful assistant. Answer in one short sentence, and never repeat the question back."
i=1
while [ $i -le 10 ]; do
    echo "{\"prompt\": \"$sys Question $i: what comes next after $i?\", \"max_tokens\": 6}"
    echo "{\"prompt\": \"$sys Question $i: what comes next after $i?\", \"max_tokens\": 6," \
        "\"temperature\": 0.9, \"top_p\": 0.9, \"seed\": $i}"
    echo "{\"prompt\": \"$sys Tell me about $i.\", \"max_tokens\": 5, \"repetition_penalty\": 1.5," \
        "\"temperature\": 0.7, \"seed\": $i}"
    echo "{\"prompt\": \"$sys\", \"max_tokens\": 4, \"min_tokens\": 4}"
    echo "{\"prompt\": \"You are a careful reader $i\", \"max_tokens\": 3}"
    echo "{\"prompt\": \"Something else entirely, number $i\", \"max_tokens\": 3}"
    i=$((i + 1))
done >"$D/in.jsonl"
shared() { $PB_PYTHON -c 'import json, sys; print(json.load(open(sys.argv[1]))["prompt_tokens_shared"])' "$1"; }
run="--model $D/m --in $D/in.jsonl --batch-size 4 --chunks 2 --max-seq-len 128"
for kv in f32 f16 bf16; do
    "$P" -q $run --kv-dtype $kv --out "$D/ref-$kv.jsonl" --no-prefix-sharing --metrics "$D/mr.json" 2>"$err" ||
        fail "$kv: --no-prefix-sharing"
    [ "$(shared "$D/mr.json")" = 0 ] || fail "$kv: tokens shared under --no-prefix-sharing"
    "$P" -q $run --kv-dtype $kv --out "$D/out-$kv.jsonl" --metrics "$D/ms.json" 2>"$err" || fail "$kv: shared"
    n=$(shared "$D/ms.json")
    [ "$n" -gt 200 ] || fail "$kv: only $n prompt tokens shared"
    cmp "$D/ref-$kv.jsonl" "$D/out-$kv.jsonl" || fail "$kv: output differs with prefixes shared"
    echo "kv $kv: $n prompt tokens shared, output identical"
done
# batch 1: no sequence in flight beside a new one, only finished ones' caches kept in their slots
"$P" -q $run --batch-size 1 --chunks 1 --out "$D/ref-b1.jsonl" --no-prefix-sharing 2>"$err" || fail "batch 1 reference"
"$P" -q $run --batch-size 1 --chunks 1 --out "$D/out-b1.jsonl" --metrics "$D/m1.json" 2>"$err" || fail "batch 1"
n=$(shared "$D/m1.json")
[ "$n" -gt 200 ] || fail "batch 1: only $n prompt tokens shared"
cmp "$D/ref-b1.jsonl" "$D/out-b1.jsonl" || fail "batch 1: output differs with prefixes shared"
cmp "$D/ref-f32.jsonl" "$D/out-b1.jsonl" || fail "batch 1 differs from batch 4"
echo "batch 1: $n prompt tokens shared from finished sequences' caches, output identical"
pb_launcher_lock
for n in 2 3; do
    timeout 120 $MPIRUN -np $n "$P" -q $run --kv-dtype f32 --out "$D/out-np$n.jsonl" --metrics "$D/mn.json" \
        2>"$err" || fail "-np $n"
    [ "$(shared "$D/mn.json")" -gt 200 ] || fail "-np $n: no prefixes shared"
    cmp "$D/ref-f32.jsonl" "$D/out-np$n.jsonl" || fail "-np $n with prefixes shared differs from world size 1"
done
echo "prefix-sharing: ok"
