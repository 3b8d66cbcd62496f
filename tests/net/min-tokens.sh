#!/bin/sh
# min_tokens and ignore_eos across ranks: the last rank samples, so it must
# mask the model's EOS ids exactly as a single rank does. The model's EOS is
# made the tokens its greedy continuation starts with, so without min_tokens
# a completion stops at once; with min_tokens / ignore_eos it runs on, and
# -np 2 and -np 3 give byte-identical output to world size 1.
set -u
. "$PB_SRCDIR/tests/net/common.sh"
tiny_gpt2 3
for i in 1 2 3 4 5 6; do echo "{\"prompt\": \"Masked end $i\", \"max_tokens\": 5}"; done >"$D/plain.jsonl"
"$P" -q --model "$D/m" --in "$D/plain.jsonl" --out "$D/greedy.jsonl" 2>"$err" || fail "greedy run"
# EOS := the first token of every greedy completion (re-encoded)
$PB_PYTHON - "$D" <<'PY' || fail "EOS config"
import json, sys
from tokenizers import Tokenizer
d = sys.argv[1]
tok = Tokenizer.from_file(d + "/m/tokenizer.json")
first = []
for l in open(d + "/greedy.jsonl"):
    ids = tok.encode(json.loads(l)["text"]).ids
    if ids and ids[0] not in first:
        first.append(ids[0])
for name in ("config.json", "generation_config.json"):
    p = d + "/m/" + name
    try:
        c = json.load(open(p))
    except FileNotFoundError:
        c = {}
    c["eos_token_id"] = first[:8]
    json.dump(c, open(p, "w"))
PY
"$P" -q --model "$D/m" --in "$D/plain.jsonl" --out "$D/stop.jsonl" 2>"$err" || fail "EOS run"
[ "$(grep -c '"finish_reason": "stop", "prompt_tokens": [0-9]*, "completion_tokens": 1}' "$D/stop.jsonl")" -ge 3 ] ||
    fail "the new EOS does not end most completions at once: $(cat "$D/stop.jsonl")"
i=1
while [ $i -le 6 ]; do
    echo "{\"prompt\": \"Masked end $i\", \"max_tokens\": 5, \"min_tokens\": $((i % 3 + 3))}"
    echo "{\"prompt\": \"Masked end $i\", \"max_tokens\": 5, \"ignore_eos\": true}"
    echo "{\"prompt\": \"Masked end $i\", \"max_tokens\": 5, \"min_tokens\": 5, \"temperature\": 0.8, \"seed\": $i}"
    i=$((i + 1))
done >"$D/in.jsonl"
"$P" -q --model "$D/m" --in "$D/in.jsonl" --out "$D/ref.jsonl" --batch-size 4 2>"$err" || fail "world 1"
[ "$(grep -c '"completion_tokens": 5}' "$D/ref.jsonl")" -ge 12 ] || fail "min_tokens 5 / ignore_eos: not 5 tokens"
pb_launcher_lock
for n in 2 3; do
    timeout 120 $MPIRUN -np $n "$P" -q --model "$D/m" --in "$D/in.jsonl" --out "$D/out$n.jsonl" \
        --batch-size 4 2>"$err" || fail "-np $n"
    cmp "$D/ref.jsonl" "$D/out$n.jsonl" || fail "-np $n differs from world size 1"
done
echo "min-tokens: ok"
