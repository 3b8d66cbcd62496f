#!/bin/sh
# PB_READAHEAD: the stage's files are read ahead whole (by a reader thread,
# in file order, while the tensors pack) while they fit in the read-ahead
# budget; past it the loader reads each tensor just before it is packed. From
# a cold page cache the reader says at -v what it read, and the output is the
# same. On a 4-shard bf16 checkpoint: the default (half the available
# memory) reads everything ahead and says nothing; PB_READAHEAD=0 goes tensor
# by tensor from the first file, and the first file's size from a later one
# (-v names the file where it starts); all three give byte-identical output, also with 2 stages
# under the launcher. An invalid size is an error naming the variable.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
T="$PB_TEST_TMP"
err="$T/err"
fail() { echo "FAIL: $*"; tail -n 20 "$err" 2>/dev/null; exit 1; }

$PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family llama --out "$T/m" --layers 6 --hidden 128 --heads 4 \
    --kv-heads 2 --intermediate 352 --vocab 32000 --max-pos 256 --shards 4 --dtype bf16 --scale 0.2 \
    >/dev/null 2>"$err" || fail "checkpoint"
zstd -q -d -f -o "$T/m/tokenizer.json" "$PB_TESTDATA/tokenizers/llama2.json.zst" || fail "tokenizer"
ls "$T/m"/model-0000?-of-00004.safetensors >/dev/null || fail "the checkpoint has no 4 shards"
i=1
while [ $i -le 6 ]; do echo "{\"prompt\": \"Prompt number $i:\", \"max_tokens\": 12}"; i=$((i + 1)); done >"$T/in.jsonl"
RUN="-v --model $T/m --in $T/in.jsonl --threads 2 --ignore-eos --force"

"$P" $RUN --out "$T/ref.jsonl" 2>"$err" || fail "default read-ahead"
if grep -q "read ahead tensor by tensor" "$err"; then fail "a 1 MiB stage went past the default budget"; fi

# from a cold page cache (the shards' pages dropped: written back, then
# posix_fadvise, no root needed) the reader thread reads the files while the
# tensors pack, and the output is the same
drop() {
    $PB_PYTHON -c '
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)' "$T"/m/*.safetensors
}
drop || fail "cannot drop the shards' pages"
"$P" $RUN --out "$T/cold.jsonl" 2>"$err" || fail "default read-ahead, cold page cache"
line=$(grep "weights reader:" "$err") || fail "cold page cache: no reader line at -v"
mib=$(echo "$line" | sed -n 's/.*weights reader: \([0-9.]*\) of \([0-9.]*\) MiB read from the files.*/\1/p')
[ -n "$mib" ] || fail "cold page cache: reader line not understood: $line"
awk -v m="$mib" 'BEGIN { exit !(m > 0) }' || fail "cold page cache: the reader read nothing: $line"
case $line in *"stopped early"*) fail "cold page cache: $line" ;; esac
cmp "$T/ref.jsonl" "$T/cold.jsonl" || fail "cold page cache: output differs"

drop || fail "cannot drop the shards' pages"
PB_READAHEAD=0 "$P" $RUN --out "$T/w0.jsonl" 2>"$err" || fail "PB_READAHEAD=0"
grep "read ahead tensor by tensor" "$err" | grep -q "model-00001-of-00004" \
    || fail "PB_READAHEAD=0: not windowed from the first file"
if grep -q "weights reader:" "$err"; then fail "PB_READAHEAD=0: a reader thread read the whole stage"; fi
cmp "$T/ref.jsonl" "$T/w0.jsonl" || fail "PB_READAHEAD=0 output differs"

# a budget of the first file's size: it is read ahead whole, the next is not
b=$(stat -c %s "$T/m/model-00001-of-00004.safetensors")
PB_READAHEAD=$b "$P" $RUN --out "$T/w1.jsonl" 2>"$err" || fail "PB_READAHEAD=$b"
line=$(grep "read ahead tensor by tensor" "$err") || fail "PB_READAHEAD=$b: never windowed"
case $line in *model-00001-of-00004*) fail "PB_READAHEAD=$b: windowed from the first file: $line" ;; esac
cmp "$T/ref.jsonl" "$T/w1.jsonl" || fail "PB_READAHEAD=$b output differs"

pb_launcher_lock
PB_READAHEAD=0 timeout 120 $MPIRUN -np 2 -x PB_READAHEAD "$P" $RUN --out "$T/w2.jsonl" 2>"$err" \
    || fail "PB_READAHEAD=0, 2 ranks"
[ "$(grep -c "read ahead tensor by tensor" "$err")" -ge 2 ] || fail "PB_READAHEAD=0, 2 ranks: not both windowed"
cmp "$T/ref.jsonl" "$T/w2.jsonl" || fail "PB_READAHEAD=0, 2 ranks: output differs"

PB_READAHEAD=lots "$P" $RUN --out "$T/bad.jsonl" 2>"$err" && fail "PB_READAHEAD=lots accepted"
grep -q "PB_READAHEAD='lots'" "$err" || fail "PB_READAHEAD=lots: no message naming it"
[ -e "$T/bad.jsonl" ] && fail "PB_READAHEAD=lots: an output file was written"
echo "readahead: ok"
