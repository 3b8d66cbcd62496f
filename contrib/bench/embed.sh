#!/bin/sh
# What embeddings cost, in one run on SmolLM2-135M: 128 inputs of 20 to 200
# tokens embedded by pippy-batch --task embed (last-token pooling, normalized;
# wall time with its load, and the --metrics prefill rate) and by PyTorch's
# transformers AutoModel in bf16 over the same texts in batches of 16 (right
# padded, each input's last real token pooled; the forward passes alone, the
# model loaded before) on the same threads. Figures only, never pass/fail.
#   PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON;
#   EMBED_BENCH_MODEL (default models/SmolLM2-135M-Instruct), EMBED_BENCH_RUNS (default 3),
#   EMBED_BENCH_THREADS (default 2), EMBED_BENCH_BATCH (default 16).
set -eu
NAME=embed.sh PREFIX=EMBED_BENCH
. "$(dirname "$0")/smol-runs.sh"
write_records <<'PY'
import random
rng = random.Random(5)
words = ("the river city market light winter music paper garden system north table story green question "
         "engine window morning history number").split()
texts = [" ".join(rng.choice(words) for _ in range(rng.randrange(15, 170))) for _ in range(128)]
write("embed", [{"input": t} for t in texts])
PY
r=1
while [ "$r" -le "$runs" ]; do
    run_records embed --task embed
    n_tok=$(metric "$tmp/m.json" prompt_tokens)
    echo "run $r pippy-batch --task embed: wall $wall s, $(echo "scale=1; 128 / $wall" | bc) inputs/s," \
         "prefill $(metric "$tmp/m.json" prefill_tokens_per_second) tok/s ($n_tok tokens)"
    "$py" - "$model" "$threads" "$r" "$tmp/embed.jsonl" <<'PY' || echo "run $r pytorch: failed"
import json, sys, time
import torch
from transformers import AutoModel, AutoTokenizer
model_dir, threads, run, recs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "right"
if tok.pad_token is None:
    tok.pad_token = tok.eos_token
m = AutoModel.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
texts = [json.loads(l)["input"] for l in open(recs)]
t0, n_tok = time.time(), 0
with torch.no_grad():
    for i in range(0, len(texts), 16):
        enc = tok(texts[i:i + 16], return_tensors="pt", padding=True)
        h = m(**enc).last_hidden_state
        last = enc.attention_mask.sum(1) - 1
        e = torch.nn.functional.normalize(h[torch.arange(h.shape[0]), last].float(), dim=-1)
        n_tok += int(enc.attention_mask.sum())
wall = time.time() - t0
print(f"run {run} pytorch AutoModel bf16, batches of 16: wall {wall:.2f} s, {len(texts) / wall:.1f} inputs/s, "
      f"{n_tok / wall:.1f} tok/s")
PY
    r=$((r + 1))
done
