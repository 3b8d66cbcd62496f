#!/bin/sh
# Stopping a job under mpirun, as the man page's SIGNALS section says:
# - SIGUSR1 to mpirun is forwarded to every rank: exit 75, the resume hint;
# - Ctrl-C (SIGINT to mpirun alone: ranks run in their own process groups)
#   makes mpirun SIGTERM then SIGKILL the ranks and exit non-zero;
# either way OUT.partial and its state are kept and --resume completes the
# output byte-identical to an uninterrupted run.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }
records() { sed -n 's/.*"records": \([0-9]*\).*/\1/p' "$1.partial.state" 2>/dev/null | grep . || echo 0; }

$PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family gpt2 --out "$D/m" --layers 4 --hidden 32 \
    --vocab 50257 --max-pos 64 --scale 0.2 >/dev/null 2>"$err" || fail "checkpoint"
zstd -q -d -f -o "$D/m/tokenizer.json" "$PB_TESTDATA/tokenizers/gpt2.json.zst" || fail "tokenizer"
i=1
while [ $i -le 600 ]; do echo "{\"prompt\": \"Signal line $i\", \"max_tokens\": 30}"; i=$((i + 1)); done >"$D/in.jsonl"
ARGS="-q --model $D/m --in $D/in.jsonl --batch-size 4 --frame-records 8"
"$P" $ARGS --out "$D/ref.jsonl" 2>"$err" || fail "reference run"

pb_launcher_lock
for sig in USR1 INT; do
    out="$D/$sig.jsonl"
    $MPIRUN -np 2 "$P" $ARGS --out "$out" 2>"$err" &
    job=$!
    n=0
    while [ "$(records "$out")" -lt 16 ] && kill -0 $job 2>/dev/null && [ $n -lt 1200 ]; do
        sleep 0.05; n=$((n + 1))
    done
    kill -0 $job 2>/dev/null || fail "$sig: the job ended before the signal"
    kill -$sig $job
    wait $job
    rc=$?
    if [ $sig = USR1 ]; then
        [ $rc -eq 75 ] || fail "USR1 to mpirun: exit $rc, not 75"
        grep -q "interrupted by SIGUSR1: .* continue with --resume" "$err" || fail "USR1: no resume hint"
    else
        [ $rc -ne 0 ] || fail "INT to mpirun: exit 0"
    fi
    [ -e "$out.partial" ] && [ -e "$out.partial.state" ] && [ ! -e "$out" ] || fail "$sig: .partial not kept"
    n=$(records "$out")
    [ "$n" -ge 16 ] && [ "$n" -lt 600 ] || fail "$sig: $n records durable"
    sleep 1
    pgrep -f "$D/in.jsonl" >/dev/null && fail "$sig: ranks left behind"
    timeout 120 $MPIRUN -np 2 "$P" $ARGS --out "$out" --resume 2>"$err" || fail "$sig: --resume"
    cmp "$D/ref.jsonl" "$out" || fail "$sig: resumed output differs"
    echo "$sig to mpirun: exit $rc with $n records durable; resumed identical"
done
echo "signals: ok"
