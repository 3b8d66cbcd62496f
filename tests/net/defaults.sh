#!/bin/sh
# Defaults the man page promises:
# --chunks: the world size, at most --batch-size; 1 for a single rank.
# --threads: the node's cores (this process's affinity mask, as nproc counts
#   them) shared among the ranks on the node: unbound ranks split the cores,
#   ranks bound one core each get one thread each.
set -u
. "$PB_SRCDIR/tests/net/common.sh"
tiny_gpt2 3
echo '{"prompt": "Defaults", "max_tokens": 3}' >"$D/in.jsonl"
cores=$(nproc)
half=$((cores / 2)); [ $half -ge 1 ] || half=1
run() { "$@" -v --model "$D/m" --in "$D/in.jsonl" --out - >/dev/null 2>"$err"; }
expect() { # ranks chunks threads
    n=$(grep -c "model .*; batch [0-9]* in $2 chunks, [0-9]* tokens per micro-batch, $3 threads" "$err")
    [ "$n" -eq "$1" ] || fail "expected $1 rank(s) with $2 chunks and $3 threads"
}

run "$P" || fail "world 1"
expect 1 1 "$cores"
pb_launcher_lock
run timeout 120 $MPIRUN -np 2 "$P" || fail "-np 2"
expect 2 2 $half
run timeout 120 $MPIRUN -np 3 "$P" --batch-size 2 || fail "-np 3 --batch-size 2"
expect 3 2 $((cores / 3 >= 1 ? cores / 3 : 1))
if [ "$cores" -ge 2 ]; then
    run timeout 120 mpirun --allow-run-as-root -np 2 --bind-to core "$P" || fail "-np 2 --bind-to core"
    expect 2 2 1
fi
echo "defaults: ok"
