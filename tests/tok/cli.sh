#!/bin/sh
# pippy-batch tokenize / detokenize: ids as HF gives them, --model folder,
# --no-special / --skip-special, bad lines (exit 2, message naming the line).
set -u
PB=${PIPPY_BATCH:?}
D=${PB_TESTDATA:?}/tokenizers
T=${PB_TEST_TMP:-$(mktemp -d)}
fail=0
ok() { printf 'ok   %s\n' "$1"; }
bad() { printf 'FAIL %s\n' "$1"; fail=1; }
# same DESC GOT WANT
same() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1: got '$2', want '$3'"; fi; }

out=$(printf '{"text": "Hello world!"}\n' | "$PB" tokenize --tokenizer "$D/gpt2.json.zst")
same "gpt2 Hello world!" "$out" '{"ids": [15496, 995, 0]}'
out=$(printf '{"text": "Hello world!"}\n\n{"text": "a<|endoftext|>b"}\n' | "$PB" tokenize --tokenizer "$D/llama3.json.zst")
same "llama3, blank line skipped" "$out" '{"ids": [9906, 1917, 0]}
{"ids": [64, 27, 91, 8862, 728, 428, 91, 29, 65]}'

# a model folder with a plain tokenizer.json
mkdir -p "$T/model"
zstd -dqf "$D/llama2.json.zst" -o "$T/model/tokenizer.json"
out=$(printf '{"text": "Hello"}\n' | "$PB" tokenize --model "$T/model")
same "llama2 --model adds <s>" "$out" '{"ids": [1, 22557]}'
out=$(printf '{"text": "Hello"}\n' | "$PB" tokenize --model "$T/model" --no-special)
same "llama2 --no-special" "$out" '{"ids": [22557]}'
out=$(printf '{"ids": [1, 22557, 28725, 2]}\n' | "$PB" detokenize --model "$T/model")
same "llama2 detokenize" "$out" '{"text": "<s> Hello,</s>"}'
out=$(printf '{"ids": [1, 22557, 28725, 2]}\n' | "$PB" detokenize --model "$T/model" --skip-special)
same "llama2 detokenize --skip-special" "$out" '{"text": "Hello,"}'
out=$(printf '{"ids": [40, 447, 247, 76, 220, 27, 91, 50256]}\n' | "$PB" detokenize --tokenizer "$D/gpt2.json.zst")
same "gpt2 detokenize escapes and specials" "$out" '{"text": "I’m <|<|endoftext|>"}'

out=$(printf '{"text": "a\\u0000b"}\n' | "$PB" tokenize --tokenizer "$D/gpt2.json.zst")
same "NUL escape in text" "$out" '{"ids": [64, 188, 65]}'
out=$(printf '{"ids": [64, 188, 65]}\n' | "$PB" detokenize --tokenizer "$D/gpt2.json.zst")
same "NUL in decoded text" "$out" '{"text": "a\u0000b"}'

# round trip of the whole corpus through both commands
zstd -dqc "$D/corpus.jsonl.zst" | head -400 >"$T/c.jsonl"
"$PB" tokenize --tokenizer "$D/llama3.json.zst" --no-special <"$T/c.jsonl" >"$T/ids.jsonl" &&
    "$PB" detokenize --tokenizer "$D/llama3.json.zst" <"$T/ids.jsonl" >"$T/back.jsonl" &&
    [ "$(wc -l <"$T/back.jsonl")" -eq "$(wc -l <"$T/c.jsonl")" ] &&
    jq -c .text "$T/c.jsonl" >"$T/a" && jq -c .text "$T/back.jsonl" >"$T/b" && cmp -s "$T/a" "$T/b" &&
    ok "llama3 corpus round trip (400 texts)" || bad "llama3 corpus round trip"

# bad input: exit 2, one line naming the input line
expect_err() {
    desc=$1 pat=$2 cmd=$3 input=$4
    printf '%s' "$input" | "$PB" "$cmd" --tokenizer "$D/gpt2.json.zst" >"$T/out" 2>"$T/err"
    rc=$?
    if [ "$rc" -eq 2 ] && grep -q -- "$pat" "$T/err"; then ok "$desc"; else bad "$desc (rc=$rc): $(cat "$T/err")"; fi
}
expect_err "not JSON" "line 2" tokenize '{"text": "a"}
nope
'
expect_err "text not a string" 'line 1: expected {"text": string}' tokenize '{"text": 5}
'
expect_err "ids out of range" "line 1: ids\[1\] = 2147483648 is out of range" detokenize '{"ids": [1, 2147483648]}
'
expect_err "negative id" "line 1: ids\[0\] = -1 is out of range" detokenize '{"ids": [-1]}
'
# ids past the tokenizer (padded model rows) decode to nothing, as HF's decode skips them
out=$(printf '{"ids": [15496, 50257, 50300, 15496]}\n' | "$PB" detokenize --tokenizer "$D/gpt2.json.zst" 2>"$T/err")
[ "$out" = '{"text": "HelloHello"}' ] && ok "detokenize skips ids past the vocabulary" ||
    bad "detokenize past the vocabulary: $out $(cat "$T/err")"
expect_err "ids not integers" "line 1: ids\[0\] is not an integer" detokenize '{"ids": [1.5]}
'
expect_err "missing ids" "line 3" detokenize '{"ids": []}

{"text": "x"}
'
printf '{"text": "x"}\n' | "$PB" tokenize --tokenizer "$T/none.json" >/dev/null 2>"$T/err"
rc=$?
[ "$rc" -ne 0 ] && grep -q "none.json" "$T/err" && ok "missing tokenizer file named" || bad "missing tokenizer file (rc=$rc)"
printf '{"model": {"type": "WordPiece", "vocab": {}}}' >"$T/wp.json"
printf '{"text": "x"}\n' | "$PB" tokenize --tokenizer "$T/wp.json" >/dev/null 2>"$T/err"
rc=$?
[ "$rc" -eq 2 ] && grep -q "wp.json: model: unsupported model type 'WordPiece'" "$T/err" && ok "unsupported model: exit 2" ||
    bad "unsupported model (rc=$rc): $(cat "$T/err")"
exit $fail
