#!/bin/sh
# NCCL transport (needs a GPU; exit 77 without one or without NCCL in the
# build): under mpirun -np 2 the same messages arrive in the same order over
# NCCL as over TCP (0 B to 4 MiB, inline and through NCCL, both ranks on one
# device too); a receive timeout is reported and breaks the transport; a rank
# killed mid-stream is named by the other and the job ends within 15 s. Then
# the pipeline (CPU stages) over NCCL gives the token ids of one process.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
T="${PB_NCCL_TEST:-$PB_BUILDDIR/tests/net/nccl_test}" # nccl-emu.sh: the CPU stand-in builds
out="$PB_TEST_TMP/out"; err="$PB_TEST_TMP/err"
fail() { echo "FAIL: $*"; cat "$out" "$err" 2>/dev/null; exit 1; }

env -u OMPI_COMM_WORLD_SIZE -u PMI_SIZE -u SLURM_NTASKS -u SLURM_STEP_NUM_TASKS "$T" --probe >"$out" 2>&1
rc=$?
[ $rc -eq 77 ] && { cat "$out"; exit 77; }
[ $rc -eq 0 ] || fail "probe: exit $rc"

P="${PB_PIPE_TEST:-$PB_BUILDDIR/tests/net/pipe_test}"
m="$PB_TEST_TMP/llama"
$PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family llama --out "$m" --layers 4 --kv-heads 2 \
    >/dev/null 2>"$err" || fail "checkpoint"
"$P" "$m" "$PB_TEST_TMP/ref" --chunks 2 2>"$err" || fail "pipeline: world 1"

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

# The pipeline's messages (HELLO, micro-batches, results, STATS, END and the
# closing) over NCCL; 3 ranks share the GPUs round-robin.
for nc in "2 1" "2 2" "3 3"; do
    set -- $nc
    timeout 300 $MPIRUN -np $1 "$P" "$m" "$PB_TEST_TMP/pout" --chunks $2 --nccl 2>"$err" ||
        fail "pipeline over nccl: -np $1 --chunks $2"
    cmp "$PB_TEST_TMP/ref" "$PB_TEST_TMP/pout" || fail "pipeline over nccl: -np $1 --chunks $2 differs from world 1"
done
timeout 15 $MPIRUN -np 3 "$P" "$m" "$PB_TEST_TMP/pout" --nccl --die 2 >/dev/null 2>"$err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "pipeline over nccl, killed rank: exit $rc (124: not within 15 s)"
grep -q "rank 2" "$err" || fail "pipeline over nccl: killed rank not named"
sleep 1
pgrep -f "$P" >/dev/null && fail "processes left behind: $(pgrep -af "$P")"
echo "nccl: ok"
