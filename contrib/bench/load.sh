#!/bin/sh
# Load throughput of one pipeline stage (pb_weights_load + pb_stage_create:
# the CPU backend packs each matrix straight from the mapped file, as stored
# or converted by --weights-dtype) beside a plain sequential read of the same
# shard files, in the same run. Page cache warm (best of REPS runs): the
# figures compare the loader's own cost with the cost of touching the bytes;
# then once each from a cold page cache (the files' pages dropped with
# posix_fadvise, no root needed): the disk's rate. Last, the same stage through
# a --weights-cache file (written by a first load, then mapped), warm and cold,
# beside a plain read of that file.
# Env: PB_BUILDDIR, PB_SRCDIR, PB_PYTHON (set by `make bench`), LOAD_BENCH_HIDDEN (default 1024),
# LOAD_BENCH_THREADS (default 2).
set -eu
b=${PB_BUILDDIR:?}; s=${PB_SRCDIR:?}; py=${PB_PYTHON:-python3}
make -s -C "$b" tests/forward/fwd-harness >/dev/null
t=$(mktemp -d "${TMPDIR:-/tmp}/pbbench.XXXXXX")
trap 'rm -rf "$t"' EXIT
h=${LOAD_BENCH_HIDDEN:-1024}
th=${LOAD_BENCH_THREADS:-2}
for fmt in safetensors bin; do
    for dt in bf16 f16; do
        "$py" "$s/contrib/pb-make-checkpoint" --family llama --out "$t/m" --format $fmt --layers 8 --hidden "$h" \
            --heads 16 --kv-heads 4 --intermediate $((h * 11 / 4)) --vocab 32000 --shards 4 --dtype $dt >/dev/null
        echo "llama hidden=$h 8 layers $dt, 4 $fmt shards ($(du -sh "$t/m" | cut -f1)), 2 stages:"
        for w in stored f32 bf16; do
            for st in 0 1; do PB_WEIGHTS_DTYPE=$w "$b/tests/forward/fwd-harness" loadbench "$t/m" 2 $st 3 "$th"; done
        done
        rm -rf "$t/m"
    done
done
