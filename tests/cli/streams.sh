#!/bin/sh
# Prompts from a pipe that is not standard input (a FIFO, as bash's
# `--in <(zstdcat p.jsonl.zst)` gives): read once, in order; --resume refuses it clearly.
set -u
PB=${PIPPY_BATCH:?}
T=${PB_TEST_TMP:-$(mktemp -d)}/streams
mkdir -p "$T"
export PIPPY_BATCH_MODEL="${PB_SRCDIR:?}/data/demo"
fail=0
printf '{"id": "a", "prompt": "One"}\n{"id": "b", "prompt": "Two"}\n{"id": "c", "prompt": "Three"}\n' >"$T/p.jsonl"

"$PB" -q --max-tokens 3 --in "$T/p.jsonl" --out "$T/ref.jsonl" || { echo "FAIL reference run"; fail=1; }

mkfifo "$T/fifo"
cat "$T/p.jsonl" >"$T/fifo" &
timeout 60 "$PB" -q --max-tokens 3 --in "$T/fifo" --out "$T/got.jsonl.zst"
rc=$?
wait
[ $rc -eq 0 ] || { echo "FAIL FIFO input: exit $rc"; fail=1; }
zstd -dc "$T/got.jsonl.zst" | cmp - "$T/ref.jsonl" || { echo "FAIL FIFO input: output differs from a file input"; fail=1; }

cat "$T/p.jsonl" >"$T/fifo" &
timeout 60 "$PB" -q --max-tokens 3 --in "$T/fifo" --out "$T/res.jsonl" --resume 2>"$T/err"
rc=$?
kill $! 2>/dev/null; wait 2>/dev/null
if [ $rc -eq 2 ] && grep -q "needs --in to be a regular file" "$T/err"; then
    echo "ok   --resume refuses a pipe"
else
    echo "FAIL --resume with a FIFO: exit $rc: $(cat "$T/err")"; fail=1
fi
[ $fail -eq 0 ] && echo "ok   FIFO input equals file input"
exit $fail
