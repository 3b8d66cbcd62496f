#!/bin/sh
# SIGTERM, SIGUSR1, SIGINT: exit 75 with a durable OUT.partial, then --resume
# gives output identical to an uninterrupted run (zstd and plain); --grace 0
# drops what is in flight and is still resumable; SIGTERM to every rank under
# mpirun; refusals: an existing .partial without --resume, a different model,
# input or settings, a .partial without its state.
set -u
. "$PB_SRCDIR/tests/reliability/common.sh"
. "$PB_SRCDIR/tests/net/lock.sh"
pb_rel_model
i=61
cp "$IN" "$T/long.jsonl"
while [ $i -le 400 ]; do echo "{\"prompt\": \"Line $i is\", \"max_tokens\": 6}"; i=$((i + 1)); done >>"$T/long.jsonl"
IN="$T/long.jsonl"
ARGS="--model $M --in $IN --frame-records 5"
"$P" -q $ARGS --out "$T/ref.jsonl" -b 2 2>"$err"
[ $? -eq 3 ] || fail "reference run"

# Wait until OUT's state holds at least N records (the job still running).
wait_records() {
    while kill -0 $2 2>/dev/null; do
        [ "$(pb_rel_state_records "$1")" -ge $3 ] && return 0
        sleep 0.005
    done
    fail "the run ended before $3 records"
}

stop_resume() { # signal, output, extra options
    sig=$1 out=$2; shift 2
    rm -f "$out" "$out.partial" "$out.partial.state"
    "$P" $ARGS --out "$out" -b 2 "$@" 2>"$err" &
    job=$!
    wait_records "$out" $job 20
    kill -$sig $job
    wait $job
    rc=$?
    [ $rc -eq 75 ] || fail "$sig $*: exit $rc, not 75"
    grep -q "interrupted by SIG$sig" "$err" || fail "$sig: no message"
    [ -e "$out.partial" ] && [ ! -e "$out" ] || fail "$sig: no .partial kept"
    n=$(pb_rel_state_records "$out")
    [ "$n" -ge 20 ] && [ "$n" -lt 400 ] || fail "$sig: $n records durable"
    [ "$(pb_rel_cat_partial "$out" | wc -l)" -eq "$n" ] || fail "$sig: .partial and state disagree"
    "$P" -q $ARGS --out "$out" -b 3 --resume 2>"$err"
    rc=$?
    [ $rc -eq 3 ] || fail "$sig: resume exit $rc"
    pb_rel_cat "$out" | cmp - "$T/ref.jsonl" || fail "$sig $*: resumed output differs"
    [ ! -e "$out.partial.state" ] || fail "$sig: state left"
    echo "$sig $*: exit 75 with $n records durable, resumed identical"
}
stop_resume TERM "$T/a.jsonl.zst"
stop_resume USR1 "$T/b.jsonl"
stop_resume INT "$T/c.jsonl.zst"
stop_resume TERM "$T/d.jsonl.zst" --grace 0

# Refusals (exit 2, nothing touched).
out="$T/e.jsonl.zst"
"$P" $ARGS --out "$out" -b 2 2>"$err" &
job=$!
wait_records "$out" $job 10
kill -TERM $job
wait $job
[ $? -eq 75 ] || fail "e: not 75"
cp "$out.partial" "$T/saved"
expect2() { # what, grep pattern, options...
    what=$1 pat=$2; shift 2
    "$P" -q --out "$out" -b 2 "$@" 2>"$err"
    rc=$?
    [ $rc -eq 2 ] || fail "$what: exit $rc, not 2"
    grep -q -- "$pat" "$err" || fail "$what: message"
    cmp "$out.partial" "$T/saved" || fail "$what: .partial changed"
}
expect2 "no --resume" "exists: an interrupted run left it; continue it with --resume" $ARGS
expect2 "settings" "different settings" $ARGS --resume --max-tokens 3
expect2 "seed" "different settings" $ARGS --resume --seed 5
head -n 300 "$IN" >"$T/short.jsonl"
expect2 "input" "different input" --model "$M" --in "$T/short.jsonl" --frame-records 5 --resume
cp -r "$M" "$T/model2"
sed -i 's/"layer_norm_epsilon": 1e-05/"layer_norm_epsilon": 2e-05/' "$T/model2/config.json"
grep -q '"layer_norm_epsilon": 2e-05' "$T/model2/config.json" || fail "model2"
expect2 "model" "different model" --model "$T/model2" --in "$IN" --frame-records 5 --resume
mv "$out.partial.state" "$T/state"
expect2 "no state" "has no state file" $ARGS --resume
mv "$T/state" "$out.partial.state"
"$P" -q $ARGS --out "$out" -b 2 --resume 2>"$err"
[ $? -eq 3 ] || fail "e: resume"
pb_rel_cat "$out" | cmp - "$T/ref.jsonl" || fail "e: resumed output differs"
"$P" -q $ARGS --out "$out" -b 2 --resume 2>"$err"
[ $? -eq 3 ] || fail "e: --resume of a complete output (with error records: exit 3)"

# Under mpirun: SIGTERM to every rank (as srun delivers it), exit 75, resume.
pb_launcher_lock
out="$T/f.jsonl.zst"
timeout 120 $MPIRUN -np 2 "$P" $ARGS --out "$out" -b 2 >/dev/null 2>"$err" &
job=$!
wait_records "$out" $job 20
for pid in $(pgrep -f -- "--out $out"); do
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = pippy-batch ] && kill -TERM $pid
done
wait $job
rc=$?
[ $rc -eq 75 ] || fail "mpirun: exit $rc, not 75"
grep -q "error: .*rank 1" "$err" && fail "mpirun: rank 1 failed"
timeout 120 $MPIRUN -np 2 "$P" -q $ARGS --out "$out" -b 2 --resume 2>"$err"
[ $? -eq 3 ] || fail "mpirun: resume"
pb_rel_cat "$out" | cmp - "$T/ref.jsonl" || fail "mpirun: resumed output differs"
echo "signal: ok"
