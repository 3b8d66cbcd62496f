#!/bin/sh
# What rank 0 tells the user under mpirun:
# - each stage's busy share is printed once, and the summary, --metrics'
#   "stages" and its "pipeline" report give the same figure (one definition:
#   busy time over the pipeline's wall time, first submit to last result);
# - an error on rank 0 that aborts the job is printed once, however the race
#   between PMIx_Abort returning and the launcher's kill goes (5 runs, -np 5).
set -u
. "$PB_SRCDIR/tests/net/common.sh"
tiny_gpt2 5
i=1
while [ $i -le 12 ]; do
    echo "{\"prompt\": \"Report test $i\", \"max_tokens\": 6}"
    i=$((i + 1))
done >"$D/in.jsonl"

pb_launcher_lock
timeout 120 $MPIRUN -np 3 "$P" --model "$D/m" --in "$D/in.jsonl" --out "$D/out.jsonl" \
    --batch-size 4 --chunks 2 --metrics "$D/m.json" 2>"$err" || fail "run"
for s in 0 1 2; do
    [ "$(grep -c "stage $s.*busy" "$err")" -eq 1 ] || fail "stage $s: not exactly one busy line"
done
$PB_PYTHON - "$D/m.json" "$err" <<'PY' || fail "busy figures disagree"
import json, re, sys
m = json.load(open(sys.argv[1]))
top = [s["busy_fraction"] for s in m["stages"]]
pipe = [s["busy_fraction"] for s in m["pipeline"]["stages"]]
text = [float(x) / 100 for x in re.findall(r"stage \d \(rank \d\): busy ([0-9.]+)%", open(sys.argv[2]).read())]
assert len(top) == len(pipe) == len(text) == 3, (top, pipe, text)
for a, b, c in zip(top, pipe, text):
    assert abs(a - b) < 1e-3 and abs(b - c) < 1.5e-3, (top, pipe, text)
print("busy", top)
PY

(head -3 "$D/in.jsonl"; echo '{"prompt": 5}'; tail -3 "$D/in.jsonl") >"$D/bad.jsonl"
for run in 1 2 3 4 5; do
    timeout 120 $MPIRUN -np 5 "$P" --model "$D/m" --in "$D/bad.jsonl" --out - --on-error abort \
        >/dev/null 2>"$err" && fail "run $run: a bad record with --on-error abort exited 0"
    n=$(grep -c "rank 0/5\]: error: .*bad.jsonl: line 4: field 'prompt' must be a string" "$err")
    [ "$n" -eq 1 ] || fail "run $run: rank 0's error printed $n times"
done
echo "report: ok"
