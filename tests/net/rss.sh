#!/bin/sh
# Each rank holds its own stage only: on a checkpoint whose weights dominate
# (llama, hidden 256, 8 layers, 86 MiB of f32 parameters), under mpirun with 2
# and 4 ranks (weights kept f32), and with 2 ranks keeping them bf16
# (--weights-dtype bf16: half the bytes), the pipeline report's peak RSS of
# every stage
#  - is at least that stage's weights as kept (plan --json, which asks the
#    backend for its bytes per weight: it really holds them),
#  - is within a band of the stage's own plan estimate: the estimate plus the
#    process's fixed overhead (the peak RSS of the same launch on a tiny
#    model) and 32 MiB (the loader returns each mapped tensor's pages once
#    it is converted, so mapped and converted weights are not both resident),
#  - is below the peak RSS of the world-1 run of the same job minus half the
#    other stages' weights (a fixed share would not do: the process's own
#    overhead, some 40 MiB under mpirun, is as large as the bf16 weights).
# Outputs are also compared with world 1. RSS is not meaningful under ASan
# (shadow memory): there only the runs and outputs are checked.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
GEN="$PB_PYTHON $PB_SRCDIR/contrib/pb-make-checkpoint"
T="$PB_TEST_TMP"
err="$T/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }

$GEN --family llama --out "$T/big" --layers 8 --hidden 256 --heads 8 --kv-heads 4 --vocab 32000 \
    --max-pos 256 --scale 0.2 >/dev/null 2>"$err" || fail "big checkpoint"
$GEN --family llama --out "$T/tiny" --layers 4 --hidden 32 --heads 4 --kv-heads 2 --vocab 32000 \
    --max-pos 256 --scale 0.2 >/dev/null 2>"$err" || fail "tiny checkpoint"
for m in big tiny; do
    zstd -q -d -f -o "$T/$m/tokenizer.json" "$PB_TESTDATA/tokenizers/llama2.json.zst" || fail "tokenizer"
done
i=1
while [ $i -le 16 ]; do echo "{\"prompt\": \"Prompt number $i:\", \"max_tokens\": 8}"; i=$((i + 1)); done >"$T/in.jsonl"
RUN="-q --in $T/in.jsonl --threads 1"

sanitized=0
ldd "$P" 2>/dev/null | grep -q 'libasan' && sanitized=1

pb_launcher_lock
# World 1 on the big model: reference output and its peak RSS (KiB), with the
# weights kept f32 as stored and rounded to bf16 (--weights-dtype, which
# every rank must apply alike).
for d in stored bf16; do
    w=$($PB_PYTHON -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[1:]).returncode
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if r == 0 else "")' \
        "$P" $RUN --model "$T/big" --out "$T/ref-$d.jsonl" --force --weights-dtype $d --metrics "$T/w1.json" \
        2>"$err")
    [ -n "$w" ] || fail "world 1, weights $d"
    # the metrics' own peak_rss_bytes (VmHWM) against what wait4 saw of the process
    $PB_PYTHON - "$T/w1.json" "$w" <<'PYEOF' || fail "world 1, weights $d: metrics peak_rss_bytes"
import json, sys
m = json.load(open(sys.argv[1]))["peak_rss_bytes"] / 1024
w = int(sys.argv[2])
print("world 1: peak RSS %.1f MiB in --metrics, %.1f MiB from wait4" % (m / 1024, w / 1024))
if abs(m - w) > max(0.05 * w, 16 * 1024):
    sys.exit("metrics peak_rss_bytes %.0f KiB, wait4 %d KiB" % (m, w))
PYEOF
    eval "w1_$d=$w"
done
for c in 2:stored 4:stored 2:bf16; do
    n=${c%%:*}; d=${c#*:}
    eval "w1=\$w1_$d"
    timeout 120 $MPIRUN -np $n "$P" $RUN --model "$T/tiny" --out "$T/tiny.jsonl" --force --metrics "$T/tiny.json" \
        --weights-dtype $d 2>"$err" || fail "tiny: -np $n, weights $d"
    timeout 120 $MPIRUN -np $n "$P" $RUN --model "$T/big" --out "$T/out.jsonl" --force --metrics "$T/big.json" \
        --weights-dtype $d 2>"$err" || fail "big: -np $n, weights $d"
    cmp "$T/ref-$d.jsonl" "$T/out.jsonl" || fail "big: -np $n differs from world 1 (weights $d)"
    "$P" plan --model "$T/big" --ranks $n --json --weights-dtype $d >"$T/plan.json" 2>"$err" || fail "plan --ranks $n"
    echo "-np $n, weights $d:"
    $PB_PYTHON - "$T/plan.json" "$T/big.json" "$T/tiny.json" "$w1" "$sanitized" <<'PYEOF' || fail "-np $n, weights $d: peak RSS"
import json, sys
plan = json.load(open(sys.argv[1]))
big = json.load(open(sys.argv[2]))["pipeline"]["stages"]
tiny = json.load(open(sys.argv[3]))["pipeline"]["stages"]
world1 = int(sys.argv[4]) * 1024
sanitized = sys.argv[5] == "1"
MiB = 1048576.0
stages = plan["stages"]
if len(big) != len(stages) or len(tiny) != len(stages):
    sys.exit("stages: plan %d, report %d / %d" % (len(stages), len(big), len(tiny)))
whole = plan["total_param_bytes"]
overhead = max(s["peak_rss_bytes"] for s in tiny)
bad = []
for p, s in zip(stages, big):
    w, est, rss = p["memory"]["weights"], p["memory"]["total"], s["peak_rss_bytes"]
    if s["plan_mem_bytes"] != est:
        bad.append("stage %d: report's plan %d != plan --json %d" % (p["stage"], s["plan_mem_bytes"], est))
    band = est + overhead + 32 * MiB
    print("stage %d: weights %.1f MiB, plan %.1f MiB, peak RSS %.1f MiB (band %.1f MiB, world 1 %.1f MiB, "
          "whole model %.1f MiB)" % (p["stage"], w / MiB, est / MiB, rss / MiB, band / MiB, world1 / MiB,
                                     whole / MiB))
    if sanitized:
        continue
    if rss < w:
        bad.append("stage %d: peak RSS below its own weights" % p["stage"])
    if rss > band:
        bad.append("stage %d: peak RSS above its plan + own weights + overhead" % p["stage"])
    # world 1 holds every stage's weights: a rank must save at least half of the others'
    # (not all: a launched rank carries PMIx and the TCP links, which world 1 does not)
    others = sum(q["memory"]["weights"] for q in stages) - w
    if rss >= world1 - 0.5 * others:
        bad.append("stage %d: peak RSS not below world 1's minus half the other stages' weights (%.1f MiB)"
                   % (p["stage"], (world1 - 0.5 * others) / MiB))
if bad:
    sys.exit("\n".join(bad))
PYEOF
done
[ $sanitized -eq 1 ] && echo "rss: sanitizer build, RSS bounds not checked"
echo "rss: ok"
