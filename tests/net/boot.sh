#!/bin/sh
# PMIx bootstrap: alone = world 1; under mpirun 2 and 3 ranks exchange values;
# several Slurm tasks without a PMIx server are refused.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
T="$PB_BUILDDIR/tests/net/boot_test"
out="$PB_TEST_TMP/out"; err="$PB_TEST_TMP/err"
fail() { echo "FAIL: $*"; cat "$out" "$err" 2>/dev/null; exit 1; }

env -u SLURM_NTASKS -u SLURM_STEP_NUM_TASKS -u OMPI_COMM_WORLD_SIZE -u PMI_SIZE \
    "$T" >"$out" 2>"$err" || fail "alone"
grep -qx "rank 0 of 1 local 0/1 node .* singleton 1 ok" "$out" || fail "alone: world size 1"

SLURM_NTASKS=1 "$T" >"$out" 2>"$err" || fail "SLURM_NTASKS=1 alone"

SLURM_NTASKS=3 "$T" >"$out" 2>"$err"
rc=$?
[ $rc -eq 2 ] || fail "SLURM_NTASKS=3 without PMIx: exit $rc, expected 2"
grep -q "SLURM_NTASKS=3.*no PMIx server" "$err" || fail "refusal message"
[ ! -s "$out" ] || fail "refused run printed results"

pb_launcher_lock
for n in 2 3; do
    timeout 120 $MPIRUN -np $n "$T" >"$out" 2>"$err" || fail "mpirun -np $n"
    for r in $(seq 0 $((n - 1))); do
        grep -qx "rank $r of $n local $r/$n node .* singleton 0 ok" "$out" || fail "mpirun -np $n: rank $r"
    done
    [ "$(wc -l <"$out")" -eq $n ] || fail "mpirun -np $n: line count"
done
echo "boot: ok"
