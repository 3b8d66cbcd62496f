#!/bin/sh
# Batch invariance: a sequence gives bit-identical logits alone and inside a
# batch of 16 sequences of mixed lengths (prefill and decode steps), for
# families with different attention paths, with 1 and 2 compute threads;
# also with bf16 weights and --matmul-precision bf16 (its products are
# batch-invariant too), on the CPU's own path and on the AVX2 emulation,
# and with --matmul-precision bf16-amx where the CPU has AMX-BF16 (with an
# f32 and a bf16 KV cache; and f32 and f16 weights, split into bf16 pieces).
set -eu
H="$PB_BUILDDIR/tests/forward/fwd-harness"
"$PB_PYTHON" "$PB_SRCDIR/tests/forward/make_goldens.py" "$PB_TEST_TMP" gpt2-b llama-b bloom-b mistral-a gpt2-f16 \
    >/dev/null 2>&1
fail=0
for m in gpt2-b llama-b bloom-b mistral-a; do
    for t in 1 2; do
        if ! out=$("$H" invariance "$PB_TEST_TMP/$m/model" $t 2>&1); then
            echo "FAIL $m threads=$t: $out"
            fail=1
        else
            echo "$m threads=$t: $out"
        fi
    done
done
for isa in "" avx2; do
    for t in 1 2; do
        if ! out=$(PB_WEIGHTS_DTYPE=bf16 PB_MATMUL_PRECISION=bf16 PB_CPU_ISA=$isa \
            "$H" invariance "$PB_TEST_TMP/llama-b/model" $t 2>&1); then
            echo "FAIL llama-b bf16 products ${isa:-default path} threads=$t: $out"
            fail=1
        else
            echo "llama-b bf16 products ${isa:-default path} threads=$t: $out"
        fi
    done
done
if "$PB_BUILDDIR/pippy-batch" --version | grep -q "AMX-BF16: yes"; then
    for t in 1 2; do
        if ! out=$(PB_WEIGHTS_DTYPE=bf16 PB_MATMUL_PRECISION=bf16-amx \
            "$H" invariance "$PB_TEST_TMP/llama-b/model" $t 2>&1); then
            echo "FAIL llama-b bf16-amx threads=$t: $out"
            fail=1
        else
            echo "llama-b bf16-amx threads=$t: $out"
        fi
    done
    # f32 (gpt2-b, llama-b) and f16 weights (gpt2-f16) as stored: split into
    # 3 and 2 bf16 pieces on the tile unit
    for m in gpt2-b llama-b gpt2-f16; do
        for t in 1 2; do
            if ! out=$(PB_MATMUL_PRECISION=bf16-amx "$H" invariance "$PB_TEST_TMP/$m/model" $t 2>&1); then
                echo "FAIL $m bf16-amx, weights as stored threads=$t: $out"
                fail=1
            else
                echo "$m bf16-amx, weights as stored threads=$t: $out"
            fi
        done
    done
    # a bf16 KV cache: attention's products on the tile unit too (mistral-a:
    # a sliding window, so items start their keys past 0)
    for m in llama-b mistral-a; do
        for t in 1 2; do
            if ! out=$(PB_WEIGHTS_DTYPE=bf16 PB_MATMUL_PRECISION=bf16-amx PB_KV_DTYPE=bf16 \
                "$H" invariance "$PB_TEST_TMP/$m/model" $t 2>&1); then
                echo "FAIL $m bf16-amx, bf16 KV threads=$t: $out"
                fail=1
            else
                echo "$m bf16-amx, bf16 KV threads=$t: $out"
            fi
        done
    done
else
    echo "llama-b bf16-amx: this CPU has no AMX-BF16"
fi
exit $fail
