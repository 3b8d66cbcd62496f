#!/bin/sh
# Every rank computes its stage the way rank 0 does: a rank started with
# another --weights-dtype, --kv-dtype or matmul precision (--matmul-precision,
# or PB_CPU_ISA=avx512bf16 where the CPU has the bf16 dot products) stops
# the job at the pipeline's setup, with a message that names the options, in
# place of writing records computed two ways. Ranks that agree run, also
# where they name one setting two ways (--kv-dtype auto and f32 on the CPU).
set -u
. "$PB_SRCDIR/tests/net/common.sh"
tiny_gpt2 2
echo '{"prompt": "Agree", "max_tokens": 3}' >"$D/in.jsonl"
pb_launcher_lock
args="-q --model $D/m --in $D/in.jsonl --out $D/out.jsonl --force"
# differ RANK1_OPTS... : rank 1 gets extra options (or env) that rank 0 lacks
differ() {
    desc=$1; shift
    rm -f "$D/out.jsonl"
    # shellcheck disable=SC2086
    timeout 120 $MPIRUN -np 1 "$P" $args : -np 1 "$@" >/dev/null 2>"$err"
    rc=$?
    [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "$desc: exit $rc (expected a refusal)"
    grep -q "rank 1 planned a different split of the layers, or keeps its weights or KV cache or multiplies in \
another precision, than rank 0.*--matmul-precision" "$err" \
        || fail "$desc: no message naming the options"
    [ ! -s "$D/out.jsonl" ] || fail "$desc: records written"
    echo "$desc: refused (exit $rc)"
}
# shellcheck disable=SC2086
timeout 120 $MPIRUN -np 2 "$P" $args --weights-dtype bf16 >/dev/null 2>"$err" || fail "agreeing ranks"
[ "$(wc -l <"$D/out.jsonl")" -eq 1 ] || fail "agreeing ranks: no record"
differ "rank 1 with --weights-dtype bf16" "$P" $args --weights-dtype bf16
differ "rank 1 with --kv-dtype f16" "$P" $args --kv-dtype f16
# the same KV cache named two ways (auto is f32 on the CPU) is agreement
rm -f "$D/out.jsonl"
# shellcheck disable=SC2086
timeout 120 $MPIRUN -np 1 "$P" $args : -np 1 "$P" $args --kv-dtype f32 >/dev/null 2>"$err" \
    || fail "rank 0 --kv-dtype auto, rank 1 --kv-dtype f32: refused: $(cat "$err")"
[ "$(wc -l <"$D/out.jsonl")" -eq 1 ] || fail "--kv-dtype auto beside f32: no record"
echo "rank 1 with --kv-dtype f32 beside auto: ran"
differ "rank 1 with --matmul-precision bf16" "$P" $args --matmul-precision bf16
if "$P" --version | grep -q "AVX512-BF16: yes"; then
    differ "rank 1 with PB_CPU_ISA=avx512bf16" env PB_CPU_ISA=avx512bf16 "$P" $args
fi
# shellcheck disable=SC2086
timeout 120 $MPIRUN -np 2 "$P" $args --matmul-precision bf16 >/dev/null 2>"$err" \
    || fail "agreeing ranks with --matmul-precision bf16"
echo "both ranks with --matmul-precision bf16: ran"
# ranks on different kernel paths agree: their bf16 products are the same
# bits, so rank 1 on the portable path writes the file one rank writes
# shellcheck disable=SC2086
timeout 120 $MPIRUN -np 1 "$P" $args --weights-dtype bf16 --matmul-precision bf16 >/dev/null 2>"$err" \
    || fail "one rank with bf16 products: $(cat "$err")"
mv "$D/out.jsonl" "$D/one.jsonl"
# shellcheck disable=SC2086
timeout 120 $MPIRUN -np 1 "$P" $args --weights-dtype bf16 --matmul-precision bf16 : \
    -np 1 env PB_CPU_ISA=portable "$P" $args --weights-dtype bf16 --matmul-precision bf16 >/dev/null 2>"$err" \
    || fail "bf16 products on two kernel paths: $(cat "$err")"
cmp -s "$D/one.jsonl" "$D/out.jsonl" || fail "bf16 products: rank 1 on the portable path wrote another file"
echo "rank 1 on the portable path with --matmul-precision bf16: the same file as one rank"
echo "agree: ok"
