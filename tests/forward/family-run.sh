#!/bin/sh
# usage: family-run.sh phi3|qwen3 (from phi3-run.sh, qwen3-run.sh)
# End to end through pippy-batch run: a tiny model of the family
# (transformers 5.x from_config + save_pretrained, sharded, Llama-2 tokenizer)
# answers greedy records exactly as HF's generate() (all-ones attention_mask);
# byte-identical records under mpirun -np 2 and 3, and with --batch-size 1.
# phi3: LongRoPE with original_max_position_embeddings 8: prompts shorter
# than 8 tokens grow past it (the engine feeds them again whole, as Phi-3's
# generate() drops its cache), longer ones use the long factors from the start.
# qwen3: q/k norms, head_dim 16 apart from hidden / heads, a window of 5 on
# the layers from 1 on, tied embeddings.
set -u
FAM="$1"
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }

"$PB_PYTHON" - "$D/model" "$PB_SRCDIR/tests/forward" "$PB_TESTDATA" "$FAM" <<'PY' 2>"$err" || fail "checkpoint and HF reference"
import json, os, subprocess, sys
import numpy as np, torch
sys.path.insert(0, sys.argv[2])
from make_goldens import rescale
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast
d = sys.argv[1]
torch.manual_seed(5)
r = np.random.default_rng(5)
if sys.argv[4] == "phi3":
    cfg = AutoConfig.for_model("phi3", hidden_size=48, num_attention_heads=4, num_key_value_heads=2,
                               num_hidden_layers=3, intermediate_size=40, vocab_size=32000, max_position_embeddings=64,
                               pad_token_id=0, original_max_position_embeddings=8,
                               rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                                                "partial_rotary_factor": 0.5,
                                                "short_factor": (1 + 0.5 * r.random(3)).tolist(),
                                                "long_factor": (1 + 7 * r.random(3)).tolist()})
else:
    cfg = AutoConfig.for_model("qwen3", hidden_size=32, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                               num_hidden_layers=3, intermediate_size=40, vocab_size=32000, max_position_embeddings=64,
                               tie_word_embeddings=True, use_sliding_window=True, sliding_window=5,
                               max_window_layers=1)
m = AutoModelForCausalLM.from_config(cfg)
rescale(m, 5)
m.save_pretrained(d, max_shard_size="2MB")
subprocess.run(["zstd", "-q", "-d", "-f", "-o", os.path.join(d, "tokenizer.json"),
                os.path.join(sys.argv[3], "tokenizers", "llama2.json.zst")], check=True)
m = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
tok = PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"))
prompts = ["Hi", "The cat", "Once upon a time", "Record 4 says that the", "a b c d e f g h i j k l",
           "Paris is the capital of France and the", "x", "Seven words are in this short line"]
with open(os.path.join(d, "..", "in.jsonl"), "w") as f, open(os.path.join(d, "..", "ref.txt"), "w") as g:
    for i, p in enumerate(prompts):
        ids = tok(p, return_tensors="pt").input_ids
        with torch.no_grad():
            out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=14, min_new_tokens=14,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
        gen = out[0, ids.shape[1]:].tolist()
        f.write(json.dumps({"prompt": p, "max_tokens": 14, "ignore_eos": True}) + "\n")
        # the completion's text as HF decodes the whole sequence
        text = tok.decode(out[0].tolist())[len(tok.decode(ids[0].tolist())):]
        g.write(json.dumps({"prompt_tokens": ids.shape[1], "ids": gen, "text": text}) + "\n")
PY

pb_launcher_lock
"$P" -q --model "$D/model" --in "$D/in.jsonl" --out "$D/out1.jsonl" --force --batch-size 4 --chunks 2 2>"$err" ||
    fail "world 1"
"$PB_PYTHON" - "$D" <<'PY' 2>"$err" || fail "output differs from HF generate()"
import json, os, sys
d = sys.argv[1]
bad = 0
for i, (o, r) in enumerate(zip(open(os.path.join(d, "out1.jsonl")), open(os.path.join(d, "ref.txt")))):
    o, r = json.loads(o), json.loads(r)
    want = r["text"]
    ok = o["text"] == want and o["completion_tokens"] == len(r["ids"]) and o["prompt_tokens"] == r["prompt_tokens"]
    print(f"record {i}: {o['prompt_tokens']} prompt tokens: " + ("same as generate()" if ok else
          f"FAIL: {o['text']!r} vs {want!r}"), file=sys.stderr)
    bad += not ok
sys.exit(1 if bad else 0)
PY
cat "$err"
"$P" -q --model "$D/model" --in "$D/in.jsonl" --out "$D/out.jsonl" --force --batch-size 1 2>"$err" || fail "batch 1"
cmp "$D/out1.jsonl" "$D/out.jsonl" || fail "--batch-size 1 differs"
for n in 2 3; do
    timeout 120 $MPIRUN -np $n "$P" -q --model "$D/model" --in "$D/in.jsonl" --out "$D/out.jsonl" --force \
        --batch-size 4 --chunks 2 2>"$err" || fail "-np $n"
    cmp "$D/out1.jsonl" "$D/out.jsonl" || fail "-np $n differs from world 1"
    echo "$FAM: -np $n output identical to world size 1"
done
exit 0
