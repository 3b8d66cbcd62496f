#!/bin/sh
# Resource errors, each with a clear message and nothing already written
# lost: output directory missing or read-only (exit 2, before loading), disk
# full (exit 1, the .partial keeps its last durable frame and resumes once
# there is room), a KV cache that cannot fit in memory (exit 2, refused from
# the plan before loading). The tmpfs cases need root (mount).
set -u
. "$PB_SRCDIR/tests/reliability/common.sh"
pb_rel_model
ARGS="-q --model $M --in $IN --frame-records 2"
"$P" $ARGS --out "$T/ref.jsonl" 2>"$err"
[ $? -eq 3 ] || fail "reference run"

"$P" $ARGS --out "$T/nodir/out.jsonl" 2>"$err"
rc=$?
[ $rc -eq 2 ] && grep -q "directory $T/nodir: No such file or directory" "$err" || fail "missing dir: exit $rc"

# KV cache: 65536 sequences x 4096 tokens cannot fit anywhere.
$PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family gpt2 --out "$T/big" --layers 2 \
    --hidden 64 --vocab 50257 --max-pos 4096 --scale 0.2 >/dev/null 2>"$err" || fail "checkpoint"
cp "$M/tokenizer.json" "$T/big/"
"$P" -q --model "$T/big" --in "$IN" --out "$T/kv.jsonl" -b 65536 2>"$err"
rc=$?
[ $rc -eq 2 ] && grep -q "KV cache .* GiB for --batch-size 65536 .* is available" "$err" ||
    fail "KV cache too big: exit $rc"
[ ! -e "$T/kv.jsonl.partial" ] || fail "KV cache too big: output created"

umounts=
cleanup() { for d in $umounts; do umount "$d" 2>/dev/null; done; rm -rf "$T"; }
trap cleanup EXIT
if [ "$(id -u)" -ne 0 ]; then
    echo "not root: the read-only and disk-full cases need mount"
    exit 0
fi
mkdir "$T/ro" "$T/small"
mount -t tmpfs -o ro,size=64k tmpfs "$T/ro" || fail "mount ro"
umounts="$T/ro"
"$P" $ARGS --out "$T/ro/out.jsonl" 2>"$err"
rc=$?
[ $rc -eq 2 ] && grep -q "directory $T/ro is not writable: Read-only file system" "$err" ||
    fail "read-only dir: exit $rc"

# Disk full: a 12 KiB tmpfs holds only part of the output.
mount -t tmpfs -o size=12k tmpfs "$T/small" || fail "mount small"
umounts="$T/ro $T/small"
out="$T/small/out.jsonl"
"$P" $ARGS --out "$out" 2>"$err"
rc=$?
[ $rc -eq 1 ] && grep -q "No space left on device" "$err" || fail "disk full: exit $rc"
n=$(pb_rel_state_records "$out")
[ "$n" -gt 0 ] && [ "$n" -lt 60 ] || fail "disk full: $n records durable"
head -c "$(sed -n 's/.*"bytes": \([0-9]*\).*/\1/p' "$out.partial.state")" "$out.partial" |
    cmp - "$T/ref.jsonl" 2>&1 | grep -q "EOF on -" || fail "disk full: durable prefix differs"
# Room again: the run resumes from the last durable frame.
mount -o remount,size=1m "$T/small" || fail "remount"
"$P" $ARGS --out "$out" --resume 2>"$err"
[ $? -eq 3 ] || fail "disk full: resume"
cmp "$out" "$T/ref.jsonl" || fail "disk full: resumed output differs"
echo "resources: ok ($n records durable when the disk filled)"
