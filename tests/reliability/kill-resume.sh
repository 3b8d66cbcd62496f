#!/bin/sh
# kill -9 at random moments, then --resume: the finished output is byte-
# identical (decompressed) to an uninterrupted run; no record missing or
# duplicated. 10 trials with one process, 10 with 2 ranks under mpirun (the
# victim rank 0 or 1 at random). The moment is random in progress, not time
# (a tiny model finishes within a second): wait until the output holds a
# random number of records (0 = as soon as the run starts), then a random
# 0-40 ms more. Each trial prints what the interrupted run had made durable.
set -u
. "$PB_SRCDIR/tests/reliability/common.sh"
. "$PB_SRCDIR/tests/net/lock.sh"
pb_rel_model
ARGS="-q --model $M --in $IN --frame-records 3"
"$P" $ARGS --out "$T/ref.jsonl.zst" -b 3 2>"$err"
[ $? -eq 3 ] || fail "reference run (exit 3 expected: it has error records)"
pb_rel_cat "$T/ref.jsonl.zst" >"$T/ref.jsonl"
[ "$(wc -l <"$T/ref.jsonl")" -eq 60 ] || fail "reference: not 60 records"
pb_launcher_lock

mid=0 early=0
trial() { # launcher, victim rank, output
    out=$3
    rm -f "$out" "$out.partial" "$out.partial.state"
    at=$(pb_rel_rand 58)
    ms=$(pb_rel_rand 40)
    $1 "$P" $ARGS --out "$out" -b 2 --chunks 1 >/dev/null 2>"$err" &
    job=$!
    exec 3>&2 2>/dev/null # no "Killed" notices from the shell
    victim=
    while kill -0 $job 2>/dev/null; do
        if [ -z "$victim" ]; then
            for pid in $(pgrep -f -- "--out $out"); do
                [ "$(cat /proc/$pid/comm 2>/dev/null)" = pippy-batch ] || continue
                r=$(tr '\0' '\n' </proc/$pid/environ 2>/dev/null | sed -n 's/^OMPI_COMM_WORLD_RANK=//p')
                [ "${r:-0}" = "$2" ] && victim=$pid
            done
        fi
        [ -n "$victim" ] && [ -e "$out.partial" ] && [ "$(pb_rel_state_records "$out")" -ge $at ] && break
        sleep 0.005
    done
    sleep "$(printf '0.%03d' $ms)"
    [ -n "$victim" ] && kill -KILL "$victim" 2>/dev/null
    wait $job
    rc=$?
    exec 2>&3 3>&-
    n=$(pb_rel_state_records "$out")
    [ -e "$out.partial" ] && [ "$n" -gt 0 ] && mid=$((mid + 1))
    echo "trial: ${1:-one process}: rank $2 killed ${ms}ms after $at records: exit $rc, $n records durable"
    want=3 # the input has error records: a resumed run, or a complete file, exits 3
    [ $rc -eq 3 ] && early=$((early + 1)) # finished first: nothing to resume
    $1 "$P" $ARGS --out "$out" -b 5 --resume >/dev/null 2>"$err"
    rc=$?
    [ $rc -eq $want ] || fail "resume after a kill after $at records: exit $rc"
    [ ! -e "$out.partial" ] && [ ! -e "$out.partial.state" ] || fail "partial or state left"
    pb_rel_cat "$out" >"$T/got.jsonl"
    cmp "$T/ref.jsonl" "$T/got.jsonl" || fail "kill after $at records: resumed output differs"
}

for k in 1 2 3 4 5 6 7 8 9 10; do
    trial "" 0 "$T/one.jsonl.zst"
done
for k in 1 2 3 4 5 6 7 8 9 10; do
    trial "timeout 120 $MPIRUN -np 2" $(pb_rel_rand 2) "$T/two.jsonl.zst"
done
echo "kill-resume: 20 trials, $mid killed with records durable, $early finished first; all identical"
# Most kills must land while output is being written, or the test proves little.
[ $mid -ge 8 ] || fail "only $mid of 20 kills landed mid-output"
