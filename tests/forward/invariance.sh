#!/bin/sh
# Batch invariance: a sequence gives bit-identical logits alone and inside a
# batch of 16 sequences of mixed lengths (prefill and decode steps), for
# families with different attention paths, with 1 and 2 compute threads.
set -eu
H="$PB_BUILDDIR/tests/forward/fwd-harness"
"$PB_PYTHON" "$PB_SRCDIR/tests/forward/make_goldens.py" "$PB_TEST_TMP" gpt2-b llama-b bloom-b mistral-a >/dev/null 2>&1
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
exit $fail
