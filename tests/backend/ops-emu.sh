#!/bin/sh
# tests/backend/ops' cuda cases on src/cuda/*.cu built as C++ against a CPU
# stand-in of the CUDA runtime (tests/backend/cuda_emu: each GPU thread a
# fiber, so barriers and warp shuffles synchronize): the CUDA backend's logic
# checked on every machine, GPU or not; with the bf16 KV cache (default) and
# the f32 one (PB_CUDA_KV_DTYPE=f32).
# an unknown cache type is refused by name, not taken as the default
out=$(PB_CUDA_KV_DTYPE=f16 "${PB_BUILDDIR:?}/tests/backend/ops-emu" cuda 2>&1)
case $out in
*"PB_CUDA_KV_DTYPE=f16: expected bf16 or f32"*) ;;
*) echo "FAIL: PB_CUDA_KV_DTYPE=f16 was not refused: $out"; exit 1 ;;
esac
"$PB_BUILDDIR/tests/backend/ops-emu" cuda || exit $?
PB_CUDA_KV_DTYPE=f32 exec "$PB_BUILDDIR/tests/backend/ops-emu" cuda
