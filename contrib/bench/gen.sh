#!/bin/sh
# Generation throughput: tokens/s and time to first token of pippy-batch on a
# 124M-parameter GPT-2-shaped checkpoint (random weights, real GPT-2
# tokenizer) at batch sizes 1, 8 and 32, in one process. Prints figures; never
# pass/fail. Baseline in the same run: batch size 1.
#   PIPPY_BATCH, PB_SRCDIR, PB_PYTHON as set by `make bench`;
#   GEN_BENCH_PROMPTS (default 32), GEN_BENCH_TOKENS (default 32),
#   GEN_BENCH_BATCHES (default "1 8 32"), GEN_BENCH_THREADS (default: all cores).
set -eu
pb=${PIPPY_BATCH:?}
src=${PB_SRCDIR:?}
py=${PB_PYTHON:-python3}
n=${GEN_BENCH_PROMPTS:-32}
toks=${GEN_BENCH_TOKENS:-32}
batches=${GEN_BENCH_BATCHES:-1 8 32}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
model="$tmp/gpt2-124m"
zstd -q -d -c "$src/tests/data/tokenizers/gpt2.json.zst" > "$tmp/tokenizer.json"
"$py" "$src/contrib/pb-make-checkpoint" --family gpt2 --out "$model" --layers 12 --hidden 768 \
    --heads 12 --vocab 50257 --max-pos 1024 --eos 50256 --bos 50256 --tokenizer "$tmp/tokenizer.json" >/dev/null
# prompts of about 20 tokens each
i=0
while [ $i -lt "$n" ]; do
    echo "{\"prompt\": \"Benchmark prompt number $i: the quick brown fox jumps over the lazy dog again and\"}"
    i=$((i + 1))
done > "$tmp/prompts.jsonl"
thr=""
[ -n "${GEN_BENCH_THREADS:-}" ] && thr="--threads $GEN_BENCH_THREADS"
printf '%-6s %-7s %9s %9s %12s %12s %10s %10s\n' batch records tokens wall_s tokens/s decode_tok/s ttft_mean first_tok
for b in $batches; do
    # shellcheck disable=SC2086
    "$pb" -q --model "$model" --in "$tmp/prompts.jsonl" --out "$tmp/out.jsonl" --max-tokens "$toks" \
        --batch-size "$b" --metrics "$tmp/m.json" $thr
    "$py" - "$tmp/m.json" "$b" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
print(f"{sys.argv[2]:<6} {m['records']:<7} {m['completion_tokens']:9d} {m['wall_seconds']:9.2f} "
      f"{m['tokens_per_second']:12.1f} {m['decode_tokens_per_second']:12.1f} "
      f"{m['time_to_first_token_mean']:10.3f} {m['first_token_seconds']:10.3f}")
PY
    rm -f "$tmp/out.jsonl"
done
