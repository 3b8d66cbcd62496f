#!/bin/sh
# Build the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined)
# and run each for N seconds (default 60) on a copy of its seed corpus, one
# after another.
#   tests/fuzz/run.sh [SECONDS] [TARGET...]   (from anywhere; builds in $TMPDIR)
# TARGET: safetensors pickle record config tokenizer chat regex grammar (default: all).
# FUZZ_RUNS=N: each target runs N inputs from seed FUZZ_SEED (default 1)
# instead, the same inputs on every machine (make check: libfuzzer.sh).
# Crashes are written to the work dir as crash-*; keep each one as a
# regression in tests/fuzz/regress-TARGET/ (make check runs them).
set -eu
secs=${1:-60}
[ $# -gt 0 ] && shift
targets=${*:-safetensors pickle record config tokenizer chat regex grammar}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cc=${FUZZ_CC:-clang}
work=$(mktemp -d "${TMPDIR:-/tmp}/pbfuzz.XXXXXX")
# the few config.h defines these sources need
printf '#define _POSIX_C_SOURCE 200809L\n#define _DEFAULT_SOURCE 1\n' > "$work/config.h"
pc="libcjson libpcre2-8 libutf8proc libzstd"
cflags="-g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DPCRE2_CODE_UNIT_WIDTH=8 -I$work -I$src/src $(pkg-config --cflags $pc)"
libs="$(pkg-config --libs $pc) -lm -pthread"
common="$src/src/common/status.c $src/src/common/util.c $src/src/common/tensor.c $src/src/common/log.c"
tok="$src/src/tok/tok_util.c $src/src/tok/tok_load.c $src/src/tok/tok_normalize.c $src/src/tok/tok_pretok.c $src/src/tok/tok_bpe.c $src/src/tok/tok_encode.c $src/src/tok/tok_decode.c"
for t in $targets; do
    case $t in
    safetensors) extra="$src/src/ckpt/safetensors.c" ;;
    pickle) extra="$src/src/ckpt/pickle.c" ;;
    record) extra="$src/src/gen/record.c $src/src/gen/schema.c $src/src/gen/sample.c $src/src/gen/sample_vec.c
                   $src/src/chat/chat.c $src/src/chat/jinja.c
                   $src/src/gen/jbuf.c $tok" ;;
    config) extra="$src/src/model/config.c $src/src/model/family.c" ;;
    tokenizer) extra="$tok" ;;
    chat) extra="$src/src/chat/jinja.c" ;;
    regex) extra="$src/src/gen/regex.c" ;;
    grammar) extra="$src/src/gen/grammar.c $src/src/gen/regex.c" ;;
    *) echo "run.sh: unknown target $t" >&2; exit 2 ;;
    esac
    echo "== building fuzz_$t"
    $cc $cflags -o "$work/fuzz_$t" "$here/fuzz_$t.c" $extra $common $libs
done
status=0
for t in $targets; do
    mkdir -p "$work/corpus-$t"
    cp "$here/corpus-$t"/* "$work/corpus-$t/"
    for r in "$here/regress-$t"/*; do [ -f "$r" ] && cp "$r" "$work/corpus-$t/"; done
    if [ -n "${FUZZ_RUNS:-}" ]; then
        limit="-runs=$FUZZ_RUNS -seed=${FUZZ_SEED:-1}"
        echo "== fuzz_$t for $FUZZ_RUNS inputs"
    else
        limit="-max_total_time=$secs"
        echo "== fuzz_$t for ${secs}s"
    fi
    # shellcheck disable=SC2086 # limit: one or two options
    (cd "$work" && ./fuzz_$t $limit -max_len=65536 -rss_limit_mb=2048 \
        -artifact_prefix="$work/$t-" -print_final_stats=1 "$work/corpus-$t") || status=1
done
echo "fuzz work dir (crashes as TARGET-crash-*): $work"
exit $status
