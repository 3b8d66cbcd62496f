#!/bin/sh
# Mixture of experts across ranks: a tiny Mixtral and a tiny Qwen3-MoE (dense
# and sparse layers) made with transformers 5.x from_config + save_pretrained
# (sharded; the Llama-2 tokenizer) give byte-identical output records under
# mpirun -np 2 and -np 3 (each stage holding all experts of its layers) and at
# world size 1, greedy and sampled records alike.
set -u
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }

"$PB_PYTHON" - "$D" "$PB_SRCDIR/tests/forward" <<'PY' >/dev/null 2>"$err" || fail "checkpoints"
import os, sys, torch
sys.path.insert(0, sys.argv[2])
from make_goldens import rescale
from transformers import AutoConfig, AutoModelForCausalLM
common = dict(hidden_size=32, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=4, vocab_size=32000,
              max_position_embeddings=128, num_experts_per_tok=2)
for name, mt, over in (("mixtral", "mixtral", dict(intermediate_size=40, num_local_experts=8)),
                       ("qwen3_moe", "qwen3_moe", dict(intermediate_size=48, moe_intermediate_size=24, num_experts=8,
                                                       head_dim=16, decoder_sparse_step=2, norm_topk_prob=True))):
    torch.manual_seed(3)
    m = AutoModelForCausalLM.from_config(AutoConfig.for_model(mt, **common, **over))
    rescale(m, 3)
    m.save_pretrained(os.path.join(sys.argv[1], name), max_shard_size="2MB")
PY
for fam in mixtral qwen3_moe; do
    zstd -q -d -f -o "$D/$fam/tokenizer.json" "$PB_TESTDATA/tokenizers/llama2.json.zst" || fail "tokenizer"
done
i=1
while [ $i -le 18 ]; do
    s=""; [ $((i % 3)) -eq 0 ] && s=', "temperature": 0.9, "top_k": 40, "seed": 7'
    echo "{\"prompt\": \"Record $i says that the\", \"max_tokens\": $((4 + i % 9))$s}"
    i=$((i + 1))
done >"$D/in.jsonl"

pb_launcher_lock
for fam in mixtral qwen3_moe; do
    "$P" -q --model "$D/$fam" --in "$D/in.jsonl" --out "$D/ref.jsonl" --force --batch-size 6 --chunks 2 2>"$err" ||
        fail "$fam: world 1"
    [ "$(wc -l <"$D/ref.jsonl")" -eq 18 ] || fail "$fam: world 1 output"
    for n in 2 3; do
        timeout 120 $MPIRUN -np $n "$P" -q --model "$D/$fam" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
            --batch-size 6 --chunks 2 2>"$err" || fail "$fam: -np $n"
        cmp "$D/ref.jsonl" "$D/out.jsonl" || fail "$fam: -np $n differs from world 1"
        echo "$fam: -np $n output identical to world size 1"
    done
done
exit 0
