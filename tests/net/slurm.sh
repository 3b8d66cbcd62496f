#!/bin/sh
# Under a single-node Slurm that this script starts and stops (slurm-env.sh):
# bootstrap, TCP ring (IPv4 and IPv6) and the pipeline under srun --mpi=pmix with 2 and 3 tasks, srun
# without PMIx refused, and a killed task named by the others.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
. "$PB_SRCDIR/tests/net/slurm-env.sh"
B="$PB_BUILDDIR/tests/net/boot_test"
R="$PB_BUILDDIR/tests/net/ring_test"
P="$PB_BUILDDIR/tests/net/pipe_test"
out="$PB_TEST_TMP/out"; err="$PB_TEST_TMP/err"
fail() { echo "FAIL: $*"; cat "$out" "$err" 2>/dev/null; pb_slurm_logs; exit 1; }

pb_launcher_lock
trap 'pb_slurm_stop' EXIT
trap 'exit 1' INT TERM HUP
pb_slurm_start "$PB_TEST_TMP/slurm" || fail "could not start the test Slurm"

SRUN="srun --overcommit --kill-on-bad-exit=0"
for n in 2 3; do
    timeout 120 $SRUN --mpi=pmix -n $n "$B" >"$out" 2>"$err" || fail "srun -n $n boot_test"
    for r in $(seq 0 $((n - 1))); do
        grep -qx "rank $r of $n local $r/$n node .* singleton 0 ok" "$out" || fail "srun -n $n: rank $r"
    done
    timeout 120 $SRUN --mpi=pmix -n $n "$R" --window 6 >"$out" 2>"$err" || fail "srun -n $n ring_test"
    [ "$(grep -c 'messages round the ring ok' "$out")" -eq $n ] || fail "srun -n $n ring: not every rank"
done
timeout 120 $SRUN --mpi=pmix -n 3 "$R" --ip-family 6 --iface lo --debug --rounds 50 >"$out" 2>"$err" ||
    fail "srun ring_test over IPv6"
[ "$(grep -c 'round the ring ok' "$out")" -eq 3 ] && [ "$(grep -c 'listens at \[::1\]:' "$err")" -eq 3 ] ||
    fail "srun ring over IPv6: not every rank, or not at [::1]"

# The pipeline on test checkpoints: identical to the single-process run.
for fam in gpt2 llama; do
    m="$PB_TEST_TMP/$fam"
    $PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family $fam --out "$m" --layers 3 >/dev/null 2>"$err" ||
        fail "$fam: checkpoint"
    "$P" "$m" "$PB_TEST_TMP/ref" --chunks 3 2>"$err" || fail "$fam: world 1"
    for n in 2 3; do
        timeout 120 $SRUN --mpi=pmix -n $n "$P" "$m" "$PB_TEST_TMP/res" --chunks 3 >"$out" 2>"$err" ||
            fail "$fam: srun -n $n pipe_test"
        cmp "$PB_TEST_TMP/ref" "$PB_TEST_TMP/res" || fail "$fam: srun -n $n differs from world 1"
    done
done

# Several tasks but no PMIx: every task refuses rather than run as rank 0.
timeout 120 $SRUN --mpi=none -n 2 "$B" >"$out" 2>"$err" && fail "srun --mpi=none accepted"
[ "$(grep -c 'SLURM_NTASKS=2 says this job has 2 tasks, but no PMIx server' "$err")" -eq 2 ] ||
    fail "srun --mpi=none: refusal message"
[ ! -s "$out" ] || fail "srun --mpi=none: a task ran"

# A task killed mid-stream: the others name it and abort the step.
timeout 15 $SRUN --mpi=pmix -n 3 "$R" --die 2 --rounds 1000 >"$out" 2>"$err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "killed task: exit $rc"
grep -q "rank 2 .*failed or was killed" "$err" || fail "killed task not named"
sleep 1
pgrep -f "$R" >/dev/null && fail "processes left behind: $(pgrep -af "$R")"
echo "slurm: ok"
