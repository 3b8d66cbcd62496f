#!/bin/sh
# Under a single-node Slurm (tests/net/slurm-env.sh): a 2-task srun job sent
# `scancel --signal=USR1` exits 75 with a durable .partial; the job run again
# with --resume gives output identical to an uninterrupted run.
set -u
. "$PB_SRCDIR/tests/reliability/common.sh"
. "$PB_SRCDIR/tests/net/lock.sh"
. "$PB_SRCDIR/tests/net/slurm-env.sh"
RT=$T
pb_rel_model
k=61
cp "$IN" "$RT/long.jsonl"
while [ $k -le 400 ]; do echo "{\"prompt\": \"Line $k is\", \"max_tokens\": 6}"; k=$((k + 1)); done >>"$RT/long.jsonl"
ARGS="--model $M --in $RT/long.jsonl --frame-records 5 -b 2"
"$P" -q $ARGS --out "$RT/ref.jsonl" 2>"$err"
[ $? -eq 3 ] || fail "reference run"

pb_launcher_lock
trap 'pb_slurm_stop; rm -rf "$RT"' EXIT
trap 'exit 1' INT TERM HUP
pb_slurm_start "$RT/slurm" || fail "could not start the test Slurm"
SRUN="srun --overcommit --kill-on-bad-exit=0 --mpi=pmix -n 2 -J pbrel"
out="$RT/out.jsonl.zst"
timeout 120 $SRUN "$P" $ARGS --out "$out" >/dev/null 2>"$err" &
job=$!
while kill -0 $job 2>/dev/null && [ "$(pb_rel_state_records "$out")" -lt 20 ]; do sleep 0.005; done
kill -0 $job 2>/dev/null || fail "the job ended before 20 records"
jid=$(squeue -h -n pbrel -o %i)
[ -n "$jid" ] || fail "no job id"
scancel --signal=USR1 "$jid" || fail "scancel"
wait $job
rc=$?
[ $rc -eq 75 ] || fail "srun after scancel --signal=USR1: exit $rc, not 75"
grep -q "interrupted by SIGUSR1" "$err" || fail "no interruption message"
n=$(pb_rel_state_records "$out")
echo "scancel --signal=USR1: exit 75, $n records durable"
timeout 120 $SRUN "$P" -q $ARGS --out "$out" --resume 2>"$err"
rc=$?
[ $rc -eq 3 ] || fail "resumed job: exit $rc"
pb_rel_cat "$out" | cmp - "$RT/ref.jsonl" || fail "resumed output differs"
echo "slurm: ok"
