#!/bin/sh
# Prefix sharing: the same job with and without --no-prefix-sharing, in one
# run (the baseline: every prompt computed whole), on SmolLM2-135M: records
# that share a few-shot prefix, chat records that share a system prompt, and
# a control whose prompts share nothing. Prints wall time, prompt tokens and
# those shared, and checks that the outputs are the same bytes. Figures only,
# never pass/fail (a differing output is reported).
#   PIPPY_BATCH, PB_SRCDIR, PB_PYTHON as set by `make bench`;
#   PREFIX_BENCH_MODEL (default models/SmolLM2-135M-Instruct), PREFIX_BENCH_RECORDS (default 256),
#   PREFIX_BENCH_BATCH (default 32), PREFIX_BENCH_THREADS (default: all cores).
set -eu
pb=${PIPPY_BATCH:?}
src=${PB_SRCDIR:?}
py=${PB_PYTHON:-python3}
model=${PREFIX_BENCH_MODEL:-$src/models/SmolLM2-135M-Instruct}
n=${PREFIX_BENCH_RECORDS:-256}
batch=${PREFIX_BENCH_BATCH:-32}
if [ ! -f "$model/config.json" ]; then
    echo "prefix.sh: no model at $model (contrib/pb-get-smollm2 fetches SmolLM2): skipped"
    exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
"$py" - "$tmp" "$n" <<'PY'
import json, random, sys
d, n = sys.argv[1], int(sys.argv[2])
shots = "".join(f"Q: What is {a} plus {b}?\nA: {a + b}.\n" for a, b in
                [(2, 3), (10, 7), (41, 1), (6, 6), (13, 29), (100, 250), (8, 9), (71, 18)])
shots = "Answer each arithmetic question with the sum and a full stop.\n" + shots * 2
with open(d + "/fewshot.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"prompt": shots + f"Q: What is {i} plus {2 * i + 1}?\nA:", "max_tokens": 8}) + "\n")
with open(d + "/chat.jsonl", "w") as f:
    for i in range(n):
        f.write(json.dumps({"messages": [
            {"role": "system", "content": "You are a terse assistant for a hardware store. Answer in a few words, "
                                          "name the aisle when you can, and never ask a question back."},
            {"role": "user", "content": f"Where do I find item number {i}?"}], "max_tokens": 8}) + "\n")
words = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar".split()
with open(d + "/distinct.jsonl", "w") as f:  # the control: prompts that share (almost) nothing
    for i in range(n):
        r = random.Random(i)
        f.write(json.dumps({"prompt": f"{i}: " + " ".join(r.choice(words) for _ in range(20)), "max_tokens": 8}) + "\n")
PY
thr=""
[ -n "${PREFIX_BENCH_THREADS:-}" ] && thr="--threads $PREFIX_BENCH_THREADS"
printf '%-9s %-22s %8s %8s %8s %10s %8s\n' job run wall_s prompt shared decode_t/s output
for job in fewshot chat distinct; do
    for mode in no-sharing sharing no-sharing sharing; do
        flag=""
        [ $mode = no-sharing ] && flag=--no-prefix-sharing
        # shellcheck disable=SC2086
        "$pb" -q --model "$model" --in "$tmp/$job.jsonl" --out "$tmp/$job-$mode.jsonl" --force --batch-size "$batch" \
            --max-seq-len 512 --metrics "$tmp/m.json" $flag $thr
        same=-
        [ $mode = sharing ] && { cmp -s "$tmp/$job-no-sharing.jsonl" "$tmp/$job-sharing.jsonl" && same=same || same=DIFFERS; }
        "$py" - "$tmp/m.json" "$job" "$mode" "$same" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<9} {sys.argv[3]:<22} {m['wall_seconds']:8.2f} {m['prompt_tokens']:8d} "
      f"{m['prompt_tokens_shared']:8d} {m['decode_tokens_per_second']:10.1f} {sys.argv[4]:>8}")
PY
    done
done
