#!/bin/sh
# tests/backend/ops' cuda cases on src/cuda/*.cu built as C++ against a CPU
# stand-in of the CUDA runtime (tests/backend/cuda_emu: each GPU thread a
# fiber, so barriers and warp shuffles synchronize): the CUDA backend's logic
# checked on every machine, GPU or not; with the bf16 KV cache (default) and
# the f32 one (PB_CUDA_KV_DTYPE=f32).
"${PB_BUILDDIR:?}/tests/backend/ops-emu" cuda || exit $?
PB_CUDA_KV_DTYPE=f32 exec "$PB_BUILDDIR/tests/backend/ops-emu" cuda
