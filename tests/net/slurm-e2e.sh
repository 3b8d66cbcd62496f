#!/bin/sh
# pippy-batch itself under a single-node Slurm that this script starts once and
# stops at exit (slurm-env.sh):
#  1. srun --mpi=pmix -n 2 and -n 3 on gpt2, llama, gpt_neox and bloom test
#     checkpoints, each split policy (equal_size, a threshold:SIZE that gives
#     that many stages, --split-points): output byte-identical to world size 1,
#     greedy and seeded-sampling records alike.
#  2. A job array (sbatch --array, tasks of 1 and of 2 ranks) with --shard auto
#     and %a / %A in --out: every record exactly once across the shards, and the
#     union sorted by id equal to the world-1 output.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
. "$PB_SRCDIR/tests/net/slurm-env.sh"
P="$PIPPY_BATCH"
GEN="$PB_PYTHON $PB_SRCDIR/contrib/pb-make-checkpoint"
T="$PB_TEST_TMP"
err="$T/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; pb_slurm_logs; exit 1; }

# Test checkpoints (small, but with the real tokenizers and vocabularies).
tok() { zstd -q -d -f -o "$T/$1/tokenizer.json" "$PB_TESTDATA/tokenizers/$2.json.zst" || fail "$1: tokenizer"; }
for fam in gpt2 gpt_neox bloom; do
    $GEN --family $fam --out "$T/$fam" --layers 4 --hidden 32 --vocab 50257 --max-pos 64 --scale 0.2 \
        >/dev/null 2>"$err" || fail "$fam: checkpoint"
    tok $fam gpt2
done
$GEN --family llama --out "$T/llama" --layers 4 --hidden 32 --kv-heads 2 --vocab 32000 --max-pos 64 \
    --scale 0.2 --shards 2 >/dev/null 2>"$err" || fail "llama: checkpoint"
tok llama llama2

# Two records in three sample (seeded: top_k, top_p), the others are greedy.
i=1
while [ $i -le 14 ]; do
    s=""; [ $((i % 3)) -eq 0 ] && s=', "temperature": 0.9, "top_k": 40, "seed": 11'
    [ $((i % 3)) -eq 1 ] && s=', "temperature": 1.1, "top_p": 0.9, "seed": '$i
    echo "{\"prompt\": \"Record $i says that the\", \"max_tokens\": $((3 + i % 7))$s}"
    i=$((i + 1))
done >"$T/in.jsonl"
grep -q seed "$T/in.jsonl" || fail "no sampled records in the input"
sed 's/"seed": /"seed": 100/' "$T/in.jsonl" >"$T/seeds.jsonl"

# The smallest threshold (of a fixed ladder) that the planner splits into
# exactly $2 stages for model $1; checked again by the run itself.
threshold_for() {
    for k in 64 96 128 192 256 384 512 768 1024 1536 2048 3072 4096 4608 5120 6144 7168 8192 10240 \
        12288 16384 24576 32768; do
        "$P" plan --model "$1" --ranks "$2" --split-policy "threshold:${k}K" >/dev/null 2>&1 &&
            { echo "threshold:${k}K"; return 0; }
    done
    return 1
}

pb_launcher_lock
trap 'pb_slurm_stop' EXIT
trap 'exit 1' INT TERM HUP
pb_slurm_start "$T/slurm" || fail "could not start the test Slurm"
SRUN="srun --overcommit --kill-on-bad-exit=1 --mpi=pmix"
RUN="-q --in $T/in.jsonl --batch-size 4 --threads 1"

# ---- 1. srun -n 2 / -n 3, every family and split policy, against world 1.
for fam in gpt2 llama gpt_neox bloom; do
    m="$T/$fam"
    "$P" $RUN --model "$m" --out "$T/ref-$fam.jsonl" 2>"$err" || fail "$fam: world 1"
    [ "$(wc -l <"$T/ref-$fam.jsonl")" -eq 14 ] || fail "$fam: world 1 output"
    # The sampled records really sample: other seeds give other texts.
    "$P" -q --batch-size 4 --threads 1 --in "$T/seeds.jsonl" --model "$m" --out "$T/seeds.out" --force 2>"$err" ||
        fail "$fam: world 1, other seeds"
    cmp -s "$T/ref-$fam.jsonl" "$T/seeds.out" && fail "$fam: the seeds make no difference"
    for n in 2 3; do
        th=$(threshold_for "$m" $n) || fail "$fam: no threshold gives $n stages"
        pts=2; [ $n -eq 3 ] && pts=1,3
        for pol in "--split-policy equal_size" "--split-policy $th" "--split-points $pts"; do
            rm -f "$T/out.jsonl.zst"
            timeout 120 $SRUN -n $n "$P" $RUN --model "$m" --out "$T/out.jsonl.zst" $pol \
                --metrics "$T/m.json" 2>"$err" || fail "$fam: srun -n $n $pol"
            zstd -q -d -c "$T/out.jsonl.zst" >"$T/out.jsonl" || fail "$fam: srun -n $n $pol: output"
            cmp "$T/ref-$fam.jsonl" "$T/out.jsonl" || fail "$fam: srun -n $n $pol differs from world 1"
            # It really ran as n stages, one per rank.
            [ "$(grep -o '"stage":[0-9]*,"rank":[0-9]*' "$T/m.json" | tr '\n' ' ')" = \
                "$(seq 0 $((n - 1)) | sed 's/.*/"stage":&,"rank":&/' | tr '\n' ' ')" ] ||
                fail "$fam: srun -n $n $pol: not $n stages in the pipeline report"
        done
        echo "$fam: srun -n $n: equal_size, $th, --split-points $pts identical to world 1"
    done
done

# ---- 2. Job arrays with --shard auto.
# Waits (bounded) until job $1 has left the queue, then checks that every
# array task completed with exit code 0.
wait_job() {
    n=0
    while [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null)" ]; do
        [ $n -lt 1800 ] || { scancel "$1"; fail "job $1 still queued or running after 180 s"; }
        sleep 0.1; n=$((n + 1))
    done
    scontrol -o show job "$1" >"$T/job.txt" 2>&1 || fail "job $1: scontrol: $(cat "$T/job.txt")"
    [ "$(grep -c 'JobState=COMPLETED .*ExitCode=0:0' "$T/job.txt")" -eq "$2" ] ||
        { cat "$T/job.txt" "$T"/job-*.log; fail "job $1: not all $2 tasks completed with exit 0"; }
}
# The union of the shard files $3.. (sorted by id) must equal the world-1 output $1,
# each record exactly once, each of the $2 shards non-empty.
check_union() {
    $PB_PYTHON - "$@" <<'PYEOF' || fail "job array: union of the shards differs from world 1"
import json, subprocess, sys
ref, nshards, files = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
if len(files) != nshards:
    sys.exit("expected %d shard files, got %s" % (nshards, files))
seen = {}
for f in files:
    data = subprocess.run(["zstd", "-q", "-d", "-c", f], check=True, stdout=subprocess.PIPE).stdout \
        if f.endswith(".zst") else open(f, "rb").read()
    lines = data.splitlines(keepends=True)
    if not lines:
        sys.exit("%s: empty shard" % f)
    for line in lines:
        i = json.loads(line)["id"]
        if i in seen:
            sys.exit("record %r in %s and in %s" % (i, seen[i][0], f))
        seen[i] = (f, line)
want = open(ref, "rb").read().splitlines(keepends=True)
ids = sorted(seen)
if [json.loads(l)["id"] for l in want] != ids:
    sys.exit("ids across the shards %s, world 1 has %d records" % (ids, len(want)))
got = [seen[i][1] for i in ids]
for a, b in zip(got, want):
    if a != b:
        sys.exit("differs from world 1:\n  %s  %s" % (a.decode(), b.decode()))
PYEOF
}
ref="$T/ref-llama.jsonl"
cd "$T" || fail "cd $T"
# Tasks 0 and 2 run one rank, tasks 1 and 3 two ranks (llama split in two).
job=$(sbatch --parsable --array=0-3 -n 2 --overcommit -o "$T/job-%A_%a.log" --wrap \
    "srun --overcommit --mpi=pmix -n \$((SLURM_ARRAY_TASK_ID % 2 + 1)) $P $RUN --model $T/llama \
     --shard auto --out $T/out-%a.jsonl.zst --metrics $T/m-\$SLURM_ARRAY_TASK_ID.json") || fail "sbatch --array=0-3"
job=${job%%;*}
wait_job "$job" 4
for a in 1 3; do
    grep -q '"stage":1,"rank":1' "$T/m-$a.json" 2>/dev/null || fail "array task $a did not run 2 stages"
done
check_union "$ref" 4 "$T"/out-?.jsonl.zst
echo "job array 0-3 (1 and 2 ranks), --shard auto, out-%a: union identical to world 1"

# %A and an array with a step: tasks 1, 3, 5 are shards 0, 1, 2 of 3.
job=$(sbatch --parsable --array=1-5:2 -n 1 -o "$T/job-%A_%a.log" --wrap \
    "srun --mpi=pmix $P $RUN --model $T/llama --shard auto --out $T/A-%A-%a.jsonl") ||
    fail "sbatch --array=1-5:2"
job=${job%%;*}
wait_job "$job" 3
check_union "$ref" 3 "$T/A-$job-1.jsonl" "$T/A-$job-3.jsonl" "$T/A-$job-5.jsonl"
[ "$(ls "$T"/A-*.jsonl | wc -l)" -eq 3 ] || fail "%A: unexpected files: $(ls "$T"/A-*)"
echo "job array 1-5:2, --shard auto, out-%A-%a: union identical to world 1"
echo "slurm-e2e: ok"
