#!/bin/sh
# Load throughput of one pipeline stage (pb_weights_load + conversion of its
# tensors to f32, as the CPU backend does) beside a plain sequential read of
# the same shard files, in the same run. Page cache warm (best of REPS runs):
# the figures compare the loader's overhead with the cost of touching the bytes.
# Env: PB_BUILDDIR, PB_SRCDIR, PB_PYTHON (set by `make bench`), LOAD_BENCH_HIDDEN (default 512).
set -eu
b=${PB_BUILDDIR:?}; s=${PB_SRCDIR:?}; py=${PB_PYTHON:-python3}
make -s -C "$b" tests/ckpt/ckpt-tool >/dev/null
t=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$t"' EXIT
h=${LOAD_BENCH_HIDDEN:-512}
for fmt in safetensors bin; do
    "$py" "$s/contrib/pb-make-checkpoint" --family llama --out "$t/$fmt" --format $fmt --layers 8 --hidden "$h" \
        --heads 8 --vocab 8192 --shards 4 --dtype f16
    echo "llama hidden=$h 8 layers f16, 4 $fmt shards ($(du -sh "$t/$fmt" | cut -f1)), 2 stages:"
    for st in 0 1; do "$b/tests/ckpt/ckpt-tool" bench "$t/$fmt" 2 $st 5; done
done
