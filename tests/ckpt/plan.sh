#!/bin/sh
# plan command: equal_size balances bytes and gives exactly N stages; threshold
# and split points; embeddings on the first stage, head on the last; the table
# and the JSON agree; errors tell how many ranks to launch.
set -u
T=$PB_TEST_TMP
fail=0
err() { echo "FAIL: $*"; fail=1; }
"$PB_PYTHON" "$PB_SRCDIR/contrib/pb-make-checkpoint" --family opt --out "$T/m" --layers 8 --hidden 32 --heads 4 \
    --shards 4 --dtype f16 || exit 1
for n in 1 2 3 4 8; do
    "$PIPPY_BATCH" plan --model "$T/m" --ranks $n --json > "$T/p.json" || err "plan --ranks $n failed"
    jq -e --argjson n $n '
        (.stages | length) == $n and .stages[0].layers[0] == 0 and .stages[-1].layers[1] == .n_layers
        and .stages[0].has_embed and .stages[-1].has_head
        and ([.stages[] | .layers[1] - .layers[0] >= 1] | all)
        and ([range(1; $n) as $i | .stages[$i].layers[0] == .stages[$i-1].layers[1]] | all)
        and ([.stages[] | .memory.total == .memory.weights + .memory.kv_cache + .memory.activations] | all)
        and ([.stages[] | .param_bytes == ([.files[].bytes] | add)] | all)' "$T/p.json" >/dev/null \
        || err "plan --ranks $n: bad structure: $(cat "$T/p.json")"
done
# equal_size: no stage may be larger than needed: max stage <= min possible max + one layer
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --json > "$T/p2.json"
jq -e '(.stages[0].param_bytes - .stages[1].param_bytes | fabs) < (.total_param_bytes / .n_layers * 2)' "$T/p2.json" >/dev/null \
    || err "equal_size unbalanced: $(jq -c '[.stages[].param_bytes]' "$T/p2.json")"
# KV cache formula of the CPU backend (f32, keys and a head's dims in panels
# of 16): batch * round16(T) * layers * 2 * kv_heads * round16(head_dim) * 4;
# here 4 heads of 8
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 10 --json > "$T/p3.json"
jq -e '.stages[0] as $s | $s.memory.kv_cache == 3 * 16 * ($s.layers[1] - $s.layers[0]) * 2 * 4 * 16 * 4' "$T/p3.json" >/dev/null \
    || err "kv cache estimate: $(jq -c '.stages[0]' "$T/p3.json")"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 40 --json > "$T/p4.json"
jq -e '.stages[0] as $s | $s.memory.kv_cache == 3 * 48 * ($s.layers[1] - $s.layers[0]) * 2 * 4 * 16 * 4' "$T/p4.json" >/dev/null \
    || err "kv cache estimate (T = 40): $(jq -c '.stages[0]' "$T/p4.json")"
# activations for the tokens a micro-batch carries: 512 at most by default (here all 3 x 40), or
# --max-batch-tokens (more rows: more memory; above 3 x 40 taken as 3 x 40, as the run does)
jq -e '.max_batch_tokens == 120' "$T/p4.json" >/dev/null || err "plan's default micro-batch tokens: $(jq -c .max_batch_tokens "$T/p4.json")"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 40 --max-batch-tokens 16 --json > "$T/p7.json"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 40 --max-batch-tokens 999 --json > "$T/p8.json"
jq -e '.max_batch_tokens == 16' "$T/p7.json" >/dev/null && jq -e '.max_batch_tokens == 120' "$T/p8.json" >/dev/null ||
    err "plan --max-batch-tokens: $(jq -c .max_batch_tokens "$T/p7.json" "$T/p8.json")"
jq -e -n --slurpfile a "$T/p7.json" --slurpfile b "$T/p4.json" --slurpfile c "$T/p8.json" \
    '$a[0].stages[0].memory.activations < $b[0].stages[0].memory.activations and
     $b[0].stages[0].memory.activations == $c[0].stages[0].memory.activations' >/dev/null ||
    err "activations by micro-batch tokens: $(jq -c '.stages[0].memory' "$T/p7.json" "$T/p4.json" "$T/p8.json")"
# the default on GPUs: 2048 (a build with the CUDA backend plans --device cuda without a GPU)
if "$PIPPY_BATCH" plan --model "$T/m" --device cuda --batch-size 8 --max-seq-len 1000 --json > "$T/p9.json" 2>/dev/null
then
    jq -e '.max_batch_tokens == 2048' "$T/p9.json" >/dev/null || err "plan --device cuda: $(jq -c .max_batch_tokens "$T/p9.json")"
fi
"$PIPPY_BATCH" plan --model "$T/m" --device cpu --batch-size 8 --max-seq-len 1000 --json > "$T/p10.json"
jq -e '.max_batch_tokens == 512' "$T/p10.json" >/dev/null || err "plan --device cpu: $(jq -c .max_batch_tokens "$T/p10.json")"
"$PIPPY_BATCH" plan --model "$T/m" --max-batch-tokens 64 | grep -q "activations for 64 tokens a micro-batch" ||
    err "plan's table does not name the micro-batch tokens"
# --kv-dtype f16 halves it (2 bytes an element) and says so; bf16 too
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 40 --kv-dtype f16 --json > "$T/p5.json"
jq -e '.kv_dtype == "f16" and (.stages[0] as $s | $s.memory.kv_cache == 3 * 48 * ($s.layers[1] - $s.layers[0]) * 2 * 4 * 16 * 2)' \
    "$T/p5.json" >/dev/null || err "kv cache estimate (f16): $(jq -c '.kv_dtype, .stages[0]' "$T/p5.json")"
jq -e '.kv_dtype == "f32"' "$T/p4.json" >/dev/null || err "plan --json lacks kv_dtype f32: $(jq -c .kv_dtype "$T/p4.json")"
"$PIPPY_BATCH" plan --model "$T/m" --kv-dtype f16 | grep -q "KV cache f16" || err "plan's table does not name the f16 KV cache"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --batch-size 3 --max-seq-len 39 --kv-dtype bf16 --json > "$T/p6.json"
jq -e '.kv_dtype == "bf16" and (.stages[0] as $s | $s.memory.kv_cache == 3 * 48 * ($s.layers[1] - $s.layers[0]) * 2 * 4 * 16 * 2)' \
    "$T/p6.json" >/dev/null || err "kv cache estimate (bf16, 39 positions): $(jq -c '.kv_dtype, .stages[0]' "$T/p6.json")"
"$PIPPY_BATCH" plan --model "$T/m" --kv-dtype q8 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -q "kv-dtype: 'q8' is not auto, f32, f16 or bf16" "$T/e" || err "--kv-dtype q8: rc $rc $(cat "$T/e")"
# split points
"$PIPPY_BATCH" plan --model "$T/m" --ranks 3 --split-points 2,7 --json | jq -e -c '[.stages[].layers] == [[0,2],[2,7],[7,8]]' >/dev/null \
    || err "split points"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --split-points 2,7 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -q "3 stages" "$T/e" || err "split points/ranks mismatch: rc $rc $(cat "$T/e")"
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 --split-points 9 2> "$T/e"; rc=$?
[ $rc -eq 2 ] || err "split point past the last layer accepted"
# threshold: stage count fixed by the size; a mismatch names the rank count to launch
total=$(jq .total_param_bytes "$T/p2.json")
"$PIPPY_BATCH" plan --model "$T/m" --ranks 1 --split-policy threshold:$((total / 2)) 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -Eq "launch [0-9]+ ranks" "$T/e" || err "threshold mismatch message: rc $rc $(cat "$T/e")"
k=$(sed -n 's/.*launch \([0-9]*\) rank.*/\1/p' "$T/e")
"$PIPPY_BATCH" plan --model "$T/m" --ranks "$k" --split-policy threshold:$((total / 2)) --json > "$T/p4.json" \
    || err "threshold with the advised $k ranks failed"
jq -e --argjson t $((total / 2)) '[.stages[] | select(.layers[1] - .layers[0] > 1) | .param_bytes <= $t] | all' "$T/p4.json" >/dev/null \
    || err "threshold exceeded by a multi-layer stage"
# more ranks than layers
"$PIPPY_BATCH" plan --model "$T/m" --ranks 9 2> "$T/e"; rc=$?
[ $rc -eq 2 ] && grep -q "at most 8" "$T/e" || err "ranks > layers: rc $rc $(cat "$T/e")"
# the human table names every stage and the files it reads
"$PIPPY_BATCH" plan --model "$T/m" --ranks 2 > "$T/table" || err "table"
grep -q "reads .* from model-00001-of-00004.safetensors" "$T/table" || err "table lacks files: $(cat "$T/table")"
[ "$(grep -c '^[01] ' "$T/table")" -eq 2 ] || err "table lacks stage rows"
exit $fail
