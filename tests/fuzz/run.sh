#!/bin/sh
# Build the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined)
# and run each for N seconds (default 60) on a copy of its seed corpus.
#   tests/fuzz/run.sh [SECONDS]        (from anywhere; builds in $TMPDIR)
set -eu
secs=${1:-60}
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
cc=${FUZZ_CC:-clang}
work=$(mktemp -d "${TMPDIR:-/tmp}/pbfuzz.XXXXXX")
# the few config.h defines these sources need
printf '#define _POSIX_C_SOURCE 200809L\n#define _DEFAULT_SOURCE 1\n' > "$work/config.h"
cflags="-g -O1 -std=c11 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I$work -I$src/src $(pkg-config --cflags libcjson)"
libs="$(pkg-config --libs libcjson) -lm"
common="$src/src/common/status.c $src/src/common/util.c $src/src/common/tensor.c $src/src/common/log.c"
$cc $cflags -o "$work/fuzz_safetensors" "$here/fuzz_safetensors.c" "$src/src/ckpt/safetensors.c" $common $libs
$cc $cflags -o "$work/fuzz_pickle" "$here/fuzz_pickle.c" "$src/src/ckpt/pickle.c" $common $libs
status=0
for t in safetensors pickle; do
    mkdir -p "$work/corpus-$t"
    cp "$here/corpus-$t"/* "$work/corpus-$t/"
    echo "== fuzz_$t for ${secs}s"
    "$work/fuzz_$t" -max_total_time="$secs" -max_len=65536 -print_final_stats=1 "$work/corpus-$t" || status=1
done
echo "fuzz work dir (crashes as crash-*): $work"
exit $status
