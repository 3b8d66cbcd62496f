#!/bin/sh
# One-process run of the demo model under valgrind memcheck: no invalid
# access, no uninitialised use, no leak (OpenPMIx's own allocations
# suppressed). Sanitizer builds cannot run under valgrind: they say so and pass.
set -u
T="$PB_TEST_TMP"
trap 'rm -rf "$T"' EXIT
if grep -a -q __asan_init "$PIPPY_BATCH"; then
    echo "sanitizer build: valgrind not applicable"
    exit 0
fi
command -v valgrind >/dev/null || { echo "FAIL: valgrind is not installed"; exit 1; }
printf '%s\n' '{"prompt": "Hello", "max_tokens": 4}' '{"prompt": "The cat", "max_tokens": 3, "stop": "x"}' \
    '{"prompt": 5}' '{"prompt": "Sampled", "max_tokens": 3, "temperature": 0.7, "seed": 3}' >"$T/in.jsonl"
valgrind -q --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite,possible \
    --suppressions="$PB_SRCDIR/tests/reliability/valgrind.supp" \
    "$PIPPY_BATCH" -q --model "$PB_DEMO_MODEL" --in "$T/in.jsonl" --out "$T/out.jsonl.zst" -b 2 2>"$T/vg"
rc=$?
cat "$T/vg"
[ $rc -eq 3 ] || { echo "FAIL: exit $rc (3 expected: one error record; 99 = valgrind errors)"; exit 1; }
[ "$(zstd -q -d -c "$T/out.jsonl.zst" | wc -l)" -eq 4 ] || { echo "FAIL: output"; exit 1; }
echo "valgrind: clean"
