#!/bin/sh
# What beam search costs, in one run on SmolLM2-135M: 8 prompts, 4 beams of 32
# tokens each (ignore_eos: every beam runs its whole length), as pippy-batch's
# beam search, as pippy-batch's n = 4 sampled completions of the same prompts
# (the same tokens computed without the search and its cache copies), and as
# PyTorch's transformers generate(num_beams=4) over the 8 prompts at once (left
# padded) on the same threads. Each prints its wall time (load included for
# pippy-batch, as its runs are whole runs; generate() alone for PyTorch, its
# model loaded before) and beam tokens per second. Figures only, never
# pass/fail.
#   PIPPY_BATCH (default build/pippy-batch), PB_SRCDIR (default .), PB_PYTHON;
#   BEAM_BENCH_MODEL (default models/SmolLM2-135M-Instruct), BEAM_BENCH_RUNS (default 3),
#   BEAM_BENCH_THREADS (default 2), BEAM_BENCH_BATCH (default 16).
set -eu
NAME=beam.sh PREFIX=BEAM_BENCH
. "$(dirname "$0")/smol-runs.sh"
write_records <<'PY'
ps = ["The history of the printing press", "Once upon a time, in a small village", "def fibonacci(n):",
      "The three laws of motion are", "My favourite recipe for bread", "In 1905, Einstein published",
      "The best way to learn a language", "Paris is the capital of"]
write("beam", [{"prompt": p, "use_beam_search": True, "n": 4, "max_tokens": 32, "ignore_eos": True} for p in ps])
write("sampled", [{"prompt": p, "n": 4, "temperature": 1.0, "max_tokens": 32, "ignore_eos": True, "seed": i}
                  for i, p in enumerate(ps)])
PY
beam_tokens=$((8 * 4 * 32))
r=1
while [ "$r" -le "$runs" ]; do
    for v in beam sampled; do
        run_records "$v"
        echo "run $r pippy-batch $v: wall $wall s, $(echo "scale=1; $beam_tokens / $wall" | bc) beam tok/s," \
             "decode $(metric "$tmp/m.json" decode_tokens_per_second) tok/s"
    done
    "$py" - "$model" "$threads" "$r" "$tmp/beam.jsonl" <<'PY' || echo "run $r pytorch: failed"
import json, sys, time
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, threads, run, recs = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
torch.set_num_threads(threads)
tok = AutoTokenizer.from_pretrained(model_dir)
tok.padding_side = "left"
m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).eval()
ps = [json.loads(l)["prompt"] for l in open(recs)]
enc = tok(ps, return_tensors="pt", padding=True)
gc = m.generation_config
gc.update(num_beams=4, num_return_sequences=4, do_sample=False, max_new_tokens=32, min_new_tokens=32,
          pad_token_id=tok.pad_token_id or 2)
t0 = time.time()
with torch.no_grad():
    m.generate(**enc, generation_config=gc)
wall = time.time() - t0
print(f"run {run} pytorch generate(num_beams=4), bf16: wall {wall:.2f} s, {len(ps) * 4 * 32 / wall:.1f} beam tok/s")
PY
    r=$((r + 1))
done
