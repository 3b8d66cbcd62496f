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
NAME=logprobs.sh PREFIX=LOGPROBS_BENCH
. "$(dirname "$0")/smol-runs.sh"
write_records <<'PY'
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
r=1
while [ "$r" -le "$runs" ]; do
    for v in plain lp5 lp20 prefill score0 score5; do
        run_records "$v"
        case $v in
        plain | lp*) what="decode $(metric "$tmp/m.json" decode_tokens_per_second) tok/s" ;;
        *) what="prefill $(metric "$tmp/m.json" prefill_tokens_per_second) tok/s over $(metric "$tmp/m.json" prompt_tokens) prompt tokens" ;;
        esac
        echo "run $r $v: wall $wall s, $what"
    done
    r=$((r + 1))
done
