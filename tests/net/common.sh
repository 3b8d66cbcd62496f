# Shared start of the tests/net shell tests: the launcher lock, the usual
# names, and a tiny GPT-2 model with the real GPT-2 tokenizer.
. "$PB_SRCDIR/tests/net/lock.sh"
P="$PIPPY_BATCH"
D="$PB_TEST_TMP"
err="$D/err"
fail() { echo "FAIL: $*"; tail -n 30 "$err" 2>/dev/null; exit 1; }

# tiny_gpt2 LAYERS: a generated GPT-2-shaped checkpoint in $D/m.
tiny_gpt2() {
    $PB_PYTHON "$PB_SRCDIR/contrib/pb-make-checkpoint" --family gpt2 --out "$D/m" --layers "$1" --hidden 32 \
        --vocab 50257 --max-pos 64 --scale 0.2 >/dev/null 2>"$err" || fail "checkpoint"
    zstd -q -d -f -o "$D/m/tokenizer.json" "$PB_TESTDATA/tokenizers/gpt2.json.zst" || fail "tokenizer"
}
