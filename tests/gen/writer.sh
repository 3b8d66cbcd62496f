#!/bin/sh
# Output writer: order restored, zstd frames decodable by the zstd CLI at
# any frame end, .partial + rename, refusal to overwrite a .partial.
set -eu
tool="$PB_BUILDDIR/tests/gen/writer_tool"
t="$PB_TEST_TMP"
fail() { echo "FAIL: $*"; exit 1; }

# 10 records arriving out of order (within a reorder window of 4)
printf '1\t{"n":1}\n0\t{"n":0}\n3\t{"n":3}\n2\t{"n":2}\n4\t{"n":4}\n7\t{"n":7}\n5\t{"n":5}\n6\t{"n":6}\n9\t{"n":9}\n8\t{"n":8}\n' > "$t/in"
seq 0 9 | sed 's/.*/{"n":&}/' > "$t/want"

"$tool" "$t/out.jsonl" 3 4 < "$t/in"
cmp "$t/out.jsonl" "$t/want" || fail "plain output order"
[ ! -e "$t/out.jsonl.partial" ] || fail "plain .partial left behind"

"$tool" "$t/out.jsonl.zst" 3 4 < "$t/in" 2> "$t/frames"
zstd -q -t "$t/out.jsonl.zst" || fail "zstd -t"
zstd -q -d -c "$t/out.jsonl.zst" | cmp - "$t/want" || fail "zstd output"
# frames of 3 records: ends at 3, 6, 9 and the last one (10) at close
[ "$(grep -c frame "$t/frames")" -ge 4 ] || fail "frame ends: $(cat "$t/frames")"
frames=$(zstd -lv "$t/out.jsonl.zst" 2>/dev/null | sed -n 's/^# Zstandard Frames: *//p')
[ "$frames" = 4 ] || fail "expected 4 zstd frames, zstd -lv says '$frames'"
zstd -lv "$t/out.jsonl.zst" 2>/dev/null | grep -q 'Check: XXH64' || fail "frames without checksum"

# crash after 7 input lines (outputs 0..6 in order -> frames at 3 and 6 complete):
# the .partial decodes to exactly the records of the complete frames.
rc=0; "$tool" "$t/crash.jsonl.zst" 3 4 7 < "$t/in" 2>/dev/null || rc=$?
[ "$rc" = 9 ] || fail "crash helper exit $rc"
[ -e "$t/crash.jsonl.zst.partial" ] && [ ! -e "$t/crash.jsonl.zst" ] || fail "partial/rename"
zstd -q -t "$t/crash.jsonl.zst.partial" || fail "partial not a valid zstd stream"
zstd -q -d -c "$t/crash.jsonl.zst.partial" | cmp - "$(head -n 6 "$t/want" > "$t/want6" && echo "$t/want6")" \
    || fail "partial content"

# an existing .partial is never overwritten silently
rc=0; "$tool" "$t/crash.jsonl.zst" 3 4 < "$t/in" 2> "$t/err" || rc=$?
[ "$rc" = 2 ] || fail "existing .partial: exit $rc"
grep -q -- '--resume' "$t/err" || fail "message: $(cat "$t/err")"

# a record too far ahead of the window is an error, not unbounded memory
rc=0; printf '5\t{"n":5}\n' | "$tool" "$t/far.jsonl" 3 4 2> "$t/err" || rc=$?
[ "$rc" = 1 ] && grep -q 'reorder buffer' "$t/err" || fail "window overflow: $rc $(cat "$t/err")"

# stdout
"$tool" - 2 4 < "$t/in" | cmp - "$t/want" || fail "stdout output"
echo "writer ok"
