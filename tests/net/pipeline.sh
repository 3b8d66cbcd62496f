#!/bin/sh
# The pipeline across ranks on test checkpoints of every family: token ids
# (greedy and sampled with fixed seeds) under mpirun -np 2, 3, 4 and several
# --chunks are identical to the single-process run; each split policy; the
# picks made by the last stage's backend (--sample-op) equal the host's; a
# rank killed mid-run makes the job end non-zero, naming it, within 15 s.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
T="$PB_BUILDDIR/tests/net/pipe_test"
GEN="$PB_PYTHON $PB_SRCDIR/contrib/pb-make-checkpoint"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; cat "$err" 2>/dev/null; exit 1; }

pb_launcher_lock
for fam in gpt2 opt bloom gpt_neo gptj codegen gpt_neox llama mistral qwen2; do
    m="$D/$fam"
    $GEN --family $fam --out "$m" --layers 4 >/dev/null 2>"$err" || fail "$fam: checkpoint"
    "$T" "$m" "$D/ref" --chunks 2 2>"$err" || fail "$fam: world 1"
    [ "$(wc -l <"$D/ref")" -eq 8 ] || fail "$fam: world 1 output"
    for nc in "2 1" "3 2" "4 4"; do
        set -- $nc
        timeout 120 $MPIRUN -np $1 "$T" "$m" "$D/out" --chunks $2 2>"$err" || fail "$fam: -np $1 --chunks $2"
        cmp "$D/ref" "$D/out" || fail "$fam: -np $1 --chunks $2 differs from world 1"
        grep -q "^pipeline: $1 stages, .* bubble measured .*FillDrain" "$err" || fail "$fam: report"
    done
done

# Split policies (6 layers; f16 and sharded to vary the loader too).
m="$D/split"
$GEN --family llama --out "$m" --layers 6 --kv-heads 2 --dtype f16 --shards 3 >/dev/null 2>"$err" || fail "split: checkpoint"
"$T" "$m" "$D/ref" --chunks 4 2>"$err" || fail "split: world 1"
for args in "2 --chunks 3" "3 --points 1,5 --chunks 2" "3 --points 2,4 --chunks 4" \
            "2 --threshold 380K --chunks 2" "3 --threshold 300K --chunks 3" "4 --chunks 8"; do
    set -- $args
    n=$1; shift
    timeout 120 $MPIRUN -np $n "$T" "$m" "$D/out" "$@" 2>"$err" || fail "split: -np $n $*"
    cmp "$D/ref" "$D/out" || fail "split: -np $n $* differs from world 1"
done
# balanced (compute per token) on a model whose LM head outweighs several
# layers, so that its split differs from equal_size's.
m="$D/heavy"
$GEN --family llama --out "$m" --layers 6 --kv-heads 2 --vocab 3000 >/dev/null 2>"$err" || fail "balanced: checkpoint"
"$T" "$m" "$D/ref" --chunks 2 2>"$err" || fail "balanced: world 1"
for n in 2 3; do
    timeout 120 $MPIRUN -np $n "$T" "$m" "$D/out" --balanced --chunks $n 2>"$err" || fail "balanced: -np $n"
    cmp "$D/ref" "$D/out" || fail "balanced: -np $n differs from world 1"
done
# The picks made by the last stage's backend (a sample op, as the CUDA backend has): the rows' settings, keys,
# histories and the head's row chunks reach it, so the ids are the host sampler's (world 1 and 2 ranks).
"$T" "$m" "$D/out" --chunks 2 --sample-op 2>"$err" || fail "sample op: world 1"
cmp "$D/ref" "$D/out" || fail "sample op: world 1 differs from the host sampler's"
timeout 120 $MPIRUN -np 2 "$T" "$m" "$D/out" --chunks 2 --sample-op 2>"$err" || fail "sample op: -np 2"
cmp "$D/ref" "$D/out" || fail "sample op: -np 2 differs from the host sampler's"
# A threshold that gives another number of stages than ranks is refused.
timeout 120 $MPIRUN -np 2 "$T" "$m" "$D/out" --threshold 100K 2>"$err" && fail "threshold/rank mismatch accepted"
grep -q "launch [0-9]* ranks" "$err" || fail "threshold mismatch message"

# A rank killed after the connections are up.
timeout 15 $MPIRUN -np 3 "$T" "$D/llama" "$D/out" --die 2 >/dev/null 2>"$err"
rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "killed rank: exit $rc"
grep -q "rank 2" "$err" || fail "killed rank not named"
sleep 1
pgrep -f "$T" >/dev/null && fail "processes left behind: $(pgrep -af "$T")"
echo "pipeline: ok"
