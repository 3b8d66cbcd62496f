#!/bin/sh
# TCP transport under mpirun: 2, 3 and 4 ranks pass checked messages round
# the ring (several in flight); --iface lo; IPv6; a second, tagged transport in the
# same job; an oversized frame is rejected;
# a rank killed mid-stream is named by the others and the job ends.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
T="$PB_BUILDDIR/tests/net/ring_test"
out="$PB_TEST_TMP/out"; err="$PB_TEST_TMP/err"
fail() { echo "FAIL: $*"; cat "$out" "$err" 2>/dev/null; exit 1; }

pb_launcher_lock
for n in 2 3 4; do
    timeout 120 $MPIRUN -np $n "$T" --window 6 >"$out" 2>"$err" || fail "ring of $n"
    [ "$(grep -c 'messages round the ring ok' "$out")" -eq $n ] || fail "ring of $n: not every rank"
done
timeout 120 $MPIRUN -np 3 "$T" --iface lo --rounds 50 >"$out" 2>"$err" || fail "--iface lo"
[ "$(grep -c 'round the ring ok' "$out")" -eq 3 ] || fail "--iface lo: not every rank"

timeout 120 $MPIRUN -np 3 "$T" --tag second --rounds 50 >"$out" 2>"$err" || fail "--tag"
[ "$(grep -c 'round the ring ok' "$out")" -eq 3 ] || fail "--tag: not every rank"
timeout 120 $MPIRUN -np 2 "$T" --tag 'no-dash' >"$out" 2>"$err" && fail "bad tag accepted"
grep -q "bad tag 'no-dash'" "$err" || fail "bad tag message"

# The transport choice: TCP unless every rank has a GPU (and the build has
# NCCL); PB_TRANSPORT (rank 0's) forces one.
timeout 120 $MPIRUN -np 3 "$T" --select -1,-1,-1 --rounds 20 >"$out" 2>"$err" || fail "select cpu"
[ "$(grep -c 'transport tcp' "$out")" -eq 3 ] || fail "select cpu: not tcp"
timeout 120 $MPIRUN -np 2 "$T" --select 0,-1 --rounds 20 >"$out" 2>"$err" || fail "select mixed"
[ "$(grep -c 'transport tcp' "$out")" -eq 2 ] || fail "select mixed: not tcp"
timeout 120 $MPIRUN -np 2 -x PB_TRANSPORT=tcp "$T" --select 0,0 --rounds 20 >"$out" 2>"$err" || fail "PB_TRANSPORT=tcp"
[ "$(grep -c 'transport tcp' "$out")" -eq 2 ] || fail "PB_TRANSPORT=tcp: not tcp"
timeout 120 $MPIRUN -np 2 -x PB_TRANSPORT=nccl "$T" --select 0,-1 >"$out" 2>"$err" && fail "nccl with a CPU rank accepted"
grep -q "PB_TRANSPORT=nccl: rank 1 has no GPU" "$err" || fail "nccl with a CPU rank: message"
timeout 120 $MPIRUN -np 2 -x PB_TRANSPORT=udp "$T" --select -1,-1 >"$out" 2>"$err" && fail "PB_TRANSPORT=udp accepted"
grep -q "PB_TRANSPORT=udp: expected auto, tcp or nccl" "$err" || fail "PB_TRANSPORT=udp: message"

timeout 120 $MPIRUN -np 2 "$T" --iface no-such-if0 >"$out" 2>"$err" && fail "unknown --iface accepted"
grep -q "no-such-if0: no interface of that name is up with an IP address (up: lo (IPv4" "$err" ||
    fail "unknown --iface message"

# IPv6 (--ip-family 6): over loopback between ranks of one host, through the
# published ::1 with --iface lo, and through this host's first routable IPv6
# address where it has one (the ranks' own debug lines say where each listens).
v6ring() { # expected-address ring_test-arguments...
    want=$1
    shift
    timeout 120 $MPIRUN -np 3 "$T" --debug --rounds 50 "$@" >"$out" 2>"$err" || fail "IPv6 ring $*"
    [ "$(grep -c 'round the ring ok' "$out")" -eq 3 ] || fail "IPv6 ring $*: not every rank"
    [ "$(grep -c "listens at \[$want\]:" "$err")" -eq 3 ] || fail "IPv6 ring $*: not at [$want]"
}
v6ring ::1 --ip-family 6
v6ring ::1 --ip-family 6 --iface lo
g6=$(ip -6 -o addr show scope global 2>/dev/null | awk '$4 !~ /^fe80/ {print $2, $4; exit}')
if [ -n "$g6" ]; then
    set -- $g6
    v6ring "${2%/*}" --ip-family 6 --iface "$1"
    echo "ring: IPv6 through $1 (${2%/*})"
else
    echo "ring: no routable IPv6 address on this host: IPv6 over loopback only"
fi
timeout 120 $MPIRUN -np 2 "$T" --ip-family 4 --iface lo --debug --rounds 5 >"$out" 2>"$err" || fail "--ip-family 4"
[ "$(grep -c 'listens at 127.0.0.1:' "$err")" -eq 2 ] || fail "--ip-family 4: not at 127.0.0.1"

timeout 120 $MPIRUN -np 2 "$T" --oversize >"$out" 2>"$err" || fail "oversize"
grep -q "rank 1 saw: invalid frame from rank 0: .* 2097152 bytes (limit 1048576)" "$out" || fail "oversize: rank 1"
grep -q "rank 0 saw: rank 1 .* closed its connection" "$out" || fail "oversize: rank 0"

timeout 15 $MPIRUN -np 3 "$T" --die 1 --rounds 1000 >"$out" 2>"$err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "killed rank: exit $rc"
grep -q "rank 1 .*failed or was killed" "$err" || fail "killed rank not named"
grep -Eq "link (to|from) rank 1 down: rank 1 .*failed or was killed" "$err" || fail "killed rank: link not down"
sleep 1
pgrep -f "$T" >/dev/null && fail "processes left behind: $(pgrep -af "$T")"
echo "ring: ok"
