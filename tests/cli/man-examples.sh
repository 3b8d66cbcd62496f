#!/bin/sh
# Run the man page's examples (those marked `.\" example: NAME`) as written,
# with the demo model, so the documentation and the behaviour cannot drift.
set -u
PB=${PIPPY_BATCH:?}
SRC=${PB_SRCDIR:?}
T=${PB_TEST_TMP:-$(mktemp -d)}/man
mkdir -p "$T/data" "$T/bin"
cp "$SRC/data/prompts.jsonl" "$T/data/"
# the examples say `pippy-batch`: put the built binary first on PATH under that name
ln -sf "$PB" "$T/bin/pippy-batch"
PATH="$T/bin:$PATH"
export PIPPY_BATCH_MODEL="$SRC/data/demo"
printf '%s\n' '{"q": "What is the capital of France?"}' '{"q": "Name a prime number."}' >"$T/questions.jsonl"
cd "$T" || exit 1

fail=0
n=0
# extract: NAME<TAB>command lines of the .Bd block that follows each marker
awk '
    /^\.\\" example: / { name = $3; want = 1; next }
    want && /^\.Bd/ { inblk = 1; next }
    inblk && /^\.Ed/ { inblk = 0; want = 0; next }
    inblk { gsub(/\\e/, "\\"); print name "\t" $0 }
' "$SRC/man/pippy-batch.1" >examples.tsv

while IFS="$(printf '\t')" read -r name cmd; do
    n=$((n + 1))
    printf '%s\n' "$cmd" >"cmd$n.sh"
    if sh "cmd$n.sh" >"out$n" 2>"err$n"; then
        echo "ok   $name: $cmd"
    else
        echo "FAIL $name: $cmd"; sed 's/^/     /' "err$n"; fail=1
        continue
    fi
    # what each example must show
    case $cmd in
        *Hello*tokenize*) jq -e '.ids == [15496, 995, 0]' "out$n" >/dev/null || { echo "FAIL wrong ids: $(cat "out$n")"; fail=1; } ;;
        *detokenize*) jq -e '.text == "Hello world!"' "out$n" >/dev/null || { echo "FAIL wrong text: $(cat "out$n")"; fail=1; } ;;
        *plan*) grep -qi 'stage' "out$n" || { echo "FAIL plan shows no stages"; fail=1; } ;;
        *questions.jsonl*) [ -s "out$n" ] || { echo "FAIL pipeline: no text"; fail=1; } ;;
        *out.jsonl.zst*)
            [ -f out.jsonl.zst ] && [ ! -e out.jsonl.zst.partial ] || { echo "FAIL no out.jsonl.zst"; fail=1; }
            zstd -dc out.jsonl.zst | jq -e -s "length == $(wc -l <data/prompts.jsonl)" >/dev/null \
                || { echo "FAIL out.jsonl.zst does not hold one record per prompt"; fail=1; } ;;
    esac
done <examples.tsv
[ "$n" -ge 5 ] || { echo "FAIL only $n examples found"; fail=1; }
exit $fail
