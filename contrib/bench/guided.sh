#!/bin/sh
# What constrained decoding costs, in one run on SmolLM2-135M: decode of 32
# records x 64 tokens (ignore_eos) plain, with a guided_regex, with a
# guided_json array of strings and in JSON mode (response_format json_object:
# the any-object pattern, compiled once in the run). The runs alternate; each
# prints its wall time and the --metrics decode rate. Figures only, never
# pass/fail.
#   PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON;
#   GUIDED_BENCH_MODEL (default models/SmolLM2-135M-Instruct), GUIDED_BENCH_RUNS (default 3),
#   GUIDED_BENCH_THREADS (default 2), GUIDED_BENCH_BATCH (default 16).
set -eu
src=${PB_SRCDIR:-.}
pb=${PIPPY_BATCH:-$src/build/pippy-batch}
py=${PB_PYTHON:-python3}
model=${GUIDED_BENCH_MODEL:-$src/models/SmolLM2-135M-Instruct}
runs=${GUIDED_BENCH_RUNS:-3}
threads=${GUIDED_BENCH_THREADS:-2}
batch=${GUIDED_BENCH_BATCH:-16}
if [ ! -f "$model/config.json" ]; then
    echo "guided.sh: no model at $model (contrib/pb-get-smollm2 fetches SmolLM2): skipped"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp" <<'PY'
import json, os, sys
d = sys.argv[1]
def write(name, recs):
    with open(os.path.join(d, name + ".jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
dec = [{"prompt": f"Record {i}: a list of words:", "max_tokens": 64, "ignore_eos": True} for i in range(32)]
write("plain", dec)
write("regex", [dict(r, guided_regex="( [a-z]+,)*") for r in dec])
write("array", [dict(r, guided_json={"type": "array", "items": {"type": "string"}}) for r in dec])
write("json_object", [dict(r, response_format={"type": "json_object"}) for r in dec])
PY
metric() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
r=1
while [ "$r" -le "$runs" ]; do
    for v in plain regex array json_object; do
        t0=$(date +%s.%N)
        "$pb" -q --model "$model" --in "$tmp/$v.jsonl" --out "$tmp/out.jsonl" --force -b "$batch" \
            --threads "$threads" --metrics "$tmp/m.json"
        t1=$(date +%s.%N)
        rate=$(metric "$tmp/m.json" decode_tokens_per_second)
        echo "run $r $v: wall $(echo "$t1 - $t0" | bc) s, decode $rate tok/s, $(metric "$tmp/m.json" completion_tokens)" \
             "tokens"
    done
    r=$((r + 1))
done
