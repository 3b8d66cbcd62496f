#!/bin/sh
# pippy-batch across ranks under mpirun: output byte-identical to world size 1
# (greedy and sampled records, some with n = 3 or frequency and presence
# penalties, echo, prompts of token ids, lists of prompts, beam search) with -np 2, 3, 4, each split policy,
# embeddings (--task embed, last and mean pooling, inputs in pieces) with -np 2 and 3
# and IPv6, the pipeline report in --metrics; PB_TRANSPORT; a rank killed mid-run makes the job exit
# non-zero within 15 s naming that rank, with no process left behind.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
GEN="$PB_PYTHON $PB_SRCDIR/contrib/pb-make-checkpoint"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }

$GEN --family gpt2 --out "$D/gpt2" --layers 4 --hidden 32 --vocab 50257 --max-pos 64 --scale 0.2 \
    >/dev/null 2>"$err" || fail "gpt2 checkpoint"
zstd -q -d -f -o "$D/gpt2/tokenizer.json" "$PB_TESTDATA/tokenizers/gpt2.json.zst" || fail "tokenizer"
$GEN --family llama --out "$D/llama" --layers 6 --hidden 32 --kv-heads 2 --vocab 32000 --max-pos 64 \
    --scale 0.2 --shards 2 >/dev/null 2>"$err" || fail "llama checkpoint"
zstd -q -d -f -o "$D/llama/tokenizer.json" "$PB_TESTDATA/tokenizers/llama2.json.zst" || fail "tokenizer"
schema='{"type": "object", "properties": {"a": {"type": "integer"}, "b": {"enum": ["x", "y"]}}, "required": ["a"]}'
i=1
while [ $i -le 24 ]; do
    s=""; [ $((i % 3)) -eq 0 ] && s=', "temperature": 0.9, "top_k": 40, "seed": 7'
    [ $((i % 4)) -eq 0 ] && s="$s, \"n\": 3"
    [ $((i % 5)) -eq 0 ] && s="$s, \"frequency_penalty\": 0.7, \"presence_penalty\": 0.3"
    [ $((i % 6)) -eq 1 ] && s="$s, \"logprobs\": $((i % 4 * 5))"
    [ $((i % 8)) -eq 3 ] && s="$s, \"prompt_logprobs\": 2"
    [ $((i % 9)) -eq 4 ] && s="$s, \"allowed_token_ids\": [11, 13, 262, 290, 318], \"truncate_prompt_tokens\": 4"
    [ $((i % 7)) -eq 2 ] && s="$s, \"logit_bias\": {\"13\": 3.5, \"$((100 + i))\": -100}, \"stop_token_ids\": [11, 262]"
    [ $((i % 10)) -eq 6 ] && s="$s, \"guided_regex\": \"[0-9]{2,4}( [a-z]+)?\""
    [ $((i % 13)) -eq 9 ] && s="$s, \"bad_words\": [\"the\", \"of the\", \"said\"]"
    [ $((i % 11)) -eq 7 ] && s="$s, \"guided_json\": $schema"
    [ $((i % 7)) -eq 5 ] && s="$s, \"echo\": true"
    [ $((i % 5)) -eq 2 ] && s="$s, \"return_token_ids\": true"
    [ $((i % 11)) -eq 3 ] && s="$s, \"logprobs\": 1, \"logprob_token_ids\": [13, 11, $((200 + i))]"
    p="\"Record $i says that the\""
    [ $((i % 12)) -eq 10 ] && p="[450, 3290, 318, 257, $((100 + i)), 11]" # token ids
    echo "{\"prompt\": $p, \"max_tokens\": $((4 + i % 9))$s}"
    i=$((i + 1))
done >"$D/in.jsonl"
# OpenAI's lists of several prompts in one line (each prompt its own record in the pipeline, one line out)
for b in '"prompt": ["One says", "Two says that", "Three"], "n": 2, "temperature": 0.8, "seed": 5' \
    '"prompt": [[450, 3290, 318], [11, 13], [257]], "echo": true, "logprobs": 2, "temperature": 1.1'; do
    echo "{\"custom_id\": \"l\", \"method\": \"POST\", \"url\": \"/v1/completions\", \"body\": {$b, \"max_tokens\": 7}}"
done >>"$D/in.jsonl"
# beam search: its beams' slots stepped together and moved by forks of each other's caches
echo '{"prompt": "Beams say that the", "use_beam_search": true, "n": 3, "max_tokens": 9, "logprobs": 2}' >>"$D/in.jsonl"
printf '%s%s\n' '{"prompt": [450, 3290, 11], "use_beam_search": true, "n": 2, "best_of": 4, "max_tokens": 8, ' \
    '"early_stopping": true, "length_penalty": 0.7}' >>"$D/in.jsonl"

pb_launcher_lock
for fam in gpt2 llama; do
    "$P" -q --model "$D/$fam" --in "$D/in.jsonl" --out "$D/ref.jsonl" --force --batch-size 6 --chunks 2 2>"$err" ||
        fail "$fam: world 1"
    [ "$(wc -l <"$D/ref.jsonl")" -eq 28 ] || fail "$fam: world 1 output"
    [ "$(grep -c '"index": 5, "text"' "$D/ref.jsonl")" -eq 1 ] || fail "$fam: world 1: a list of prompts' choices"
    for nc in "2 2" "3 3" "4 4" "2 1"; do
        set -- $nc
        [ $fam = gpt2 ] && [ $1 -eq 4 ] && continue
        timeout 120 $MPIRUN -np $1 "$P" -q --model "$D/$fam" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
            --batch-size 6 --chunks $2 --metrics "$D/m.json" 2>"$err" || fail "$fam: -np $1 --chunks $2"
        cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "$fam: -np $1 --chunks $2 differs from world 1"
        grep -q "\"pipeline\":{\"stages\":\[{\"stage\":0,\"rank\":0,\"busy_seconds\"" "$D/m.json" ||
            fail "$fam: -np $1: pipeline metrics"
        grep -q "\"bubble_filldrain\"" "$D/m.json" || fail "$fam: -np $1: bubble in metrics"
    done
done
for args in "2 --split-policy threshold:4400K" "3 --split-points 2,3" "3 --split-points 1,5"; do
    set -- $args
    n=$1; shift
    timeout 120 $MPIRUN -np $n "$P" -q --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
        --batch-size 6 --chunks 3 "$@" 2>"$err" || fail "llama: -np $n $*"
    cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "llama: -np $n $* differs from world 1"
done
# embeddings (--task embed): inputs prefilled in 5-token pieces through the stages, pooled on rank 0
{ for i in 1 2 3 4 5 6 7; do echo "{\"input\": \"Embed record $i: the quick brown fox jumps over\"}"; done
  echo '{"input": [[450, 3290, 318], [11, 13]]}'
  printf '%s%s\n' '{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"input": ["a", "b c"], ' \
      '"encoding_format": "base64", "dimensions": 8}}'
} >"$D/emb.jsonl"
for pool in last mean; do
    "$P" -q --model "$D/llama" --task embed --pooling $pool --in "$D/emb.jsonl" --out "$D/emb-ref.jsonl" --force \
        --batch-size 6 --chunks 2 --max-batch-tokens 5 2>"$err" || fail "embed $pool: world 1"
    [ "$(grep -c '"embedding"' "$D/emb-ref.jsonl")" -eq 9 ] || fail "embed $pool: world 1 output"
    for n in 2 3; do
        timeout 120 $MPIRUN -np $n "$P" -q --model "$D/llama" --task embed --pooling $pool --in "$D/emb.jsonl" \
            --out "$D/emb.out" --force --batch-size 6 --chunks $n --max-batch-tokens 5 2>"$err" ||
            fail "embed $pool: -np $n"
        cmp "$D/emb-ref.jsonl" "$D/emb.out" || fail "embed $pool: -np $n differs from world 1"
    done
done
# IPv6 between the stages: over loopback, and through the published ::1 (--iface lo)
for args in "2 --ip-family 6" "3 --ip-family 6 --iface lo"; do
    set -- $args
    n=$1; shift
    timeout 120 $MPIRUN -np $n "$P" -vv --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
        --batch-size 6 --chunks 2 "$@" 2>"$err" || fail "llama: -np $n $*"
    cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "llama: -np $n $* differs from world 1"
    [ "$(grep -c 'tcp: rank [0-9] (.*) listens at \[::1\]:' "$err")" -eq $n ] || fail "llama: -np $n $*: not IPv6"
done
"$P" --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force --ip-family 5 2>"$err"
[ $? -eq 2 ] && grep -q "ip-family 5: expected auto, 4 or 6" "$err" || fail "--ip-family 5 not refused"

# --max-batch-tokens: micro-batches of 3 tokens (prompts prefilled in pieces, beside decode steps) and of 300
# give world 1's output, alone and over 2 ranks; fewer tokens than a micro-batch's sequences are refused
for args in "1 3" "2 3" "1 300"; do
    set -- $args
    if [ $1 -eq 1 ]; then
        "$P" -v --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force --batch-size 6 --chunks 2 \
            --max-batch-tokens $2 2>"$err" || fail "llama: --max-batch-tokens $2"
        grep -q "in 2 chunks, $2 tokens per micro-batch" "$err" || fail "--max-batch-tokens $2: not taken"
    else
        timeout 120 $MPIRUN -np $1 "$P" -q --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
            --batch-size 6 --chunks 2 --max-batch-tokens $2 2>"$err" || fail "llama: -np $1 --max-batch-tokens $2"
    fi
    cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "llama: -np $1 --max-batch-tokens $2 differs from world 1"
done
# without it, ranks on CPUs agree on the CPU's default (a job wholly on GPUs takes 2048: contrib/gpu/check.sh)
timeout 120 $MPIRUN -np 2 "$P" -v --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
    --batch-size 12 --chunks 2 --max-seq-len 64 2>"$err" || fail "llama: -np 2, the default micro-batch tokens"
[ "$(grep -c "in 2 chunks, 512 tokens per micro-batch" "$err")" -eq 2 ] ||
    fail "-np 2: not 512 tokens per micro-batch on both ranks: $(grep 'per micro-batch' "$err")"
"$P" -q --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" --force --batch-size 6 --max-batch-tokens 5 \
    2>"$err"
[ $? -eq 2 ] || fail "--max-batch-tokens 5 for 6 sequences: not a usage error"
grep -q "max-batch-tokens 5 is less than a micro-batch's 6 sequences" "$err" || fail "--max-batch-tokens 5: message"

# Rows sampled on the backend's host threads (one per compute thread): the same draws as in turn, with
# EOS masked under min_tokens too (each worker's own masked row)
i=1
while [ $i -le 18 ]; do
    echo "{\"prompt\": \"Record $i says\", \"max_tokens\": 12, \"min_tokens\": $((i % 4 * 3)), \"temperature\": 1.3, \
\"top_p\": 0.95, \"seed\": $i}"
    i=$((i + 1))
done >"$D/sampled.jsonl"
for t in 1 2 3; do
    "$P" -q --model "$D/llama" --in "$D/sampled.jsonl" --out "$D/s$t.jsonl" --force --batch-size 9 --threads $t \
        2>"$err" || fail "sampled records, --threads $t"
done
cmp "$D/s1.jsonl" "$D/s2.jsonl" && cmp "$D/s1.jsonl" "$D/s3.jsonl" ||
    fail "sampled records: --threads 2 or 3 (rows sampled on the host threads) differ from --threads 1"

# The transport: PB_TRANSPORT=tcp gives the same output; nccl with CPU ranks is refused.
timeout 120 $MPIRUN -np 2 -x PB_TRANSPORT=tcp "$P" -v --model "$D/llama" --in "$D/in.jsonl" --out "$D/out.jsonl" \
    --force --batch-size 6 --chunks 3 2>"$err" || fail "PB_TRANSPORT=tcp"
cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "PB_TRANSPORT=tcp differs from world 1"
grep -q "transport: tcp (PB_TRANSPORT)" "$err" || fail "PB_TRANSPORT=tcp: not logged"
timeout 120 $MPIRUN -np 2 -x PB_TRANSPORT=nccl "$P" -q --device cpu --model "$D/llama" --in "$D/in.jsonl" \
    --out "$D/out.jsonl" --force --batch-size 6 2>"$err" && fail "PB_TRANSPORT=nccl on cpu ranks accepted"
grep -q "PB_TRANSPORT=nccl: rank 0 has no GPU" "$err" || fail "PB_TRANSPORT=nccl on cpu ranks: message"

# Kill rank 1 while the job runs: far more work than the 2 s before the kill
# (400 prompts ended within them on a Zen 5); the job never gets to finish it.
i=1
while [ $i -le 20000 ]; do echo "{\"prompt\": \"Long run $i\", \"max_tokens\": 40}"; i=$((i + 1)); done >"$D/long.jsonl"
$MPIRUN -np 3 "$P" -q --model "$D/gpt2" --in "$D/long.jsonl" --out "$D/long.out" --batch-size 4 \
    --chunks 2 >/dev/null 2>"$err" &
job=$!
victim=
n=0
while [ -z "$victim" ] && [ $n -lt 300 ]; do
    for pid in $(pgrep -f "$D/long.jsonl"); do
        tr '\0' '\n' </proc/$pid/environ 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=1" &&
            [ "$(cat /proc/$pid/comm 2>/dev/null)" = pippy-batch ] && victim=$pid
    done
    sleep 0.1; n=$((n + 1))
done
[ -n "$victim" ] || { kill $job; fail "rank 1 never started"; }
sleep 2
kill -0 $job 2>/dev/null || fail "the job ended before rank 1 was killed"
kill -KILL "$victim"
n=0
while kill -0 $job 2>/dev/null && [ $n -lt 150 ]; do sleep 0.1; n=$((n + 1)); done
if kill -0 $job 2>/dev/null; then kill $job; fail "the job still runs 15 s after rank 1 was killed"; fi
wait $job
rc=$?
[ $rc -ne 0 ] || fail "killed rank: exit 0"
grep -q "rank 1" "$err" || fail "killed rank not named"
sleep 1
pgrep -f "$D/long.jsonl" >/dev/null && fail "processes left behind"
echo "e2e: ok"
