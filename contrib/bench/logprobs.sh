#!/bin/sh
# What log probabilities and scoring cost, in one run on SmolLM2-135M: decode
# of 32 records x 64 tokens plain, with "logprobs": 5 and with 20; prefill of
# 16 prompts of about 500 tokens (max_tokens 1) against scoring them
# ("max_tokens": 0 with "prompt_logprobs": 0 and 5). The runs alternate; each
# prints its wall time and the --metrics rate. Figures only, never pass/fail.
#   PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON;
#   LOGPROBS_BENCH_MODEL (default models/SmolLM2-135M-Instruct), LOGPROBS_BENCH_RUNS (default 3),
#   LOGPROBS_BENCH_THREADS (default 2), LOGPROBS_BENCH_BATCH (default 16).
set -eu
src=${PB_SRCDIR:-.}
pb=${PIPPY_BATCH:-$src/build/pippy-batch}
py=${PB_PYTHON:-python3}
model=${LOGPROBS_BENCH_MODEL:-$src/models/SmolLM2-135M-Instruct}
runs=${LOGPROBS_BENCH_RUNS:-3}
threads=${LOGPROBS_BENCH_THREADS:-2}
batch=${LOGPROBS_BENCH_BATCH:-16}
if [ ! -f "$model/config.json" ]; then
    echo "logprobs.sh: no model at $model (contrib/pb-get-smollm2 fetches SmolLM2): skipped"
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
dec = [{"prompt": f"Record {i}: once upon a time there was", "max_tokens": 64, "ignore_eos": True} for i in range(32)]
write("plain", dec)
write("lp5", [dict(r, logprobs=5) for r in dec])
write("lp20", [dict(r, logprobs=20) for r in dec])
long = " ".join(["The quick brown fox jumps over the lazy dog near the river bank."] * 36)
pf = [{"prompt": f"{i}. {long}", "max_tokens": 1} for i in range(16)]
write("prefill", pf)
write("score0", [dict(r, max_tokens=0, prompt_logprobs=0) for r in pf])
write("score5", [dict(r, max_tokens=0, prompt_logprobs=5) for r in pf])
PY
metric() { "$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
r=1
while [ "$r" -le "$runs" ]; do
    for v in plain lp5 lp20 prefill score0 score5; do
        t0=$(date +%s.%N)
        "$pb" -q --model "$model" --in "$tmp/$v.jsonl" --out "$tmp/out.jsonl" --force -b "$batch" \
            --threads "$threads" --metrics "$tmp/m.json"
        t1=$(date +%s.%N)
        case $v in
        plain | lp*) what="decode $(metric "$tmp/m.json" decode_tokens_per_second) tok/s" ;;
        *) what="prefill $(metric "$tmp/m.json" prefill_tokens_per_second) tok/s over $(metric "$tmp/m.json" prompt_tokens) prompt tokens" ;;
        esac
        echo "run $r $v: wall $(echo "$t1 - $t0" | bc) s, $what"
    done
    r=$((r + 1))
done
