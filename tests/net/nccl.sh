#!/bin/sh
# NCCL transport (needs a GPU; exit 77 without one or without NCCL in the
# build): under mpirun -np 2 the same messages arrive in the same order over
# NCCL as over TCP (0 B to 4 MiB, inline and through NCCL, both ranks on one
# device too); a receive timeout is reported and breaks the transport; a rank
# killed mid-stream is named by the other and the job ends within 15 s.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
T="$PB_BUILDDIR/tests/net/nccl_test"
out="$PB_TEST_TMP/out"; err="$PB_TEST_TMP/err"
fail() { echo "FAIL: $*"; cat "$out" "$err" 2>/dev/null; exit 1; }

env -u OMPI_COMM_WORLD_SIZE -u PMI_SIZE -u SLURM_NTASKS -u SLURM_STEP_NUM_TASKS "$T" --probe >"$out" 2>&1
rc=$?
[ $rc -eq 77 ] && { cat "$out"; exit 77; }
[ $rc -eq 0 ] || fail "probe: exit $rc"

pb_launcher_lock
for args in "" "--inline -1" "--inline 100000" "--same-device"; do
    timeout 300 $MPIRUN -np 2 "$T" --exchange $args >"$out" 2>"$err" || fail "exchange $args"
    [ "$(grep -c 'nccl and tcp delivered the same 300 messages' "$out")" -eq 2 ] || fail "exchange $args: not every rank"
done
grep -q "on device 0: " "$out" || fail "--same-device: rank not on device 0"

timeout 120 $MPIRUN -np 2 "$T" --timeout >"$out" 2>"$err" || fail "timeout"
grep -q "rank 0: timeout ok: no message from rank 1 within 2 s" "$out" || fail "timeout: rank 0"
grep -q "rank 1: timeout ok: no message from rank 0 within 2 s" "$out" || fail "timeout: rank 1"

timeout 15 $MPIRUN -np 2 "$T" --die 1 >"$out" 2>"$err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "killed rank: exit $rc (124: not within 15 s)"
grep -Eq "nccl_test: rank 0: .*rank 1 .*(failed or was killed|failed: )" "$err" || fail "killed rank not named by rank 0"
sleep 1
pgrep -f "$T" >/dev/null && fail "processes left behind: $(pgrep -af "$T")"
echo "nccl: ok"
