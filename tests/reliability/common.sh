# Sourced by the reliability tests: a tiny GPT-2-shaped checkpoint with the
# GPT-2 tokenizer in $M, a 60-record input in $IN (some lines of three prompts), helpers.
P="$PIPPY_BATCH"
T="$PB_TEST_TMP"
err="$T/err"
M="$T/model"
IN="$T/in.jsonl"
fail() { echo "FAIL: $*"; tail -n 20 "$err" 2>/dev/null; exit 1; }
trap 'rm -rf "$T"' EXIT
# Sanitizer builds: leaks inside OpenPMIx's own init/finalize are not ours.
export LSAN_OPTIONS="suppressions=$PB_SRCDIR/tests/net/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

pb_rel_model() {
    $PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family gpt2 --out "$M" --layers 2 \
        --hidden 32 --vocab 50257 --max-pos 64 --scale 0.2 >/dev/null 2>"$err" || fail "checkpoint"
    zstd -q -d -f -o "$M/tokenizer.json" "$PB_TESTDATA/tokenizers/gpt2.json.zst" || fail "tokenizer"
    i=1
    while [ $i -le 60 ]; do
        s=""; [ $((i % 4)) -eq 0 ] && s=', "temperature": 0.8, "top_k": 20'
        [ $((i % 5)) -eq 0 ] && s="$s, \"n\": 2" # two completions in one record
        [ $((i % 7)) -eq 0 ] && s="$s, \"logprobs\": 3" # log probabilities with each token
        [ $((i % 11)) -eq 0 ] && s="$s, \"prompt_logprobs\": 1" # and the prompt's
        mt=$((3 + i % 6)); [ $((i % 13)) -eq 0 ] && mt=-1   # an error record
        if [ $((i % 9)) -eq 0 ]; then # OpenAI's list of prompts: three records in the pipeline, one line out
            echo "{\"custom_id\": \"r$i\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": [\"Record $i says\", \
\"Record $i then\", \"And $i\"], \"max_tokens\": $mt$s}}"
        else
            echo "{\"prompt\": \"Record $i says that the\", \"max_tokens\": $mt$s}"
        fi
        i=$((i + 1))
    done >"$IN"
}

# Output records as text, decompressed when needed.
pb_rel_cat() {
    case "$1" in *.zst) zstd -q -d -c "$1" ;; *) cat "$1" ;; esac
}

# A random number in [0, $1) from /dev/urandom.
pb_rel_rand() {
    echo $(( $(od -An -N2 -tu2 /dev/urandom) % $1 ))
}

# The state file's "records" (0 when there is none).
pb_rel_state_records() {
    sed -n 's/.*"records": \([0-9]*\).*/\1/p' "$1.partial.state" 2>/dev/null | grep . || echo 0
}

# OUT.partial's records as text.
pb_rel_cat_partial() {
    case "$1" in *.zst) zstd -q -d -c <"$1.partial" ;; *) cat "$1.partial" ;; esac
}
