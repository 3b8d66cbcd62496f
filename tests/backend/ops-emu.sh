#!/bin/sh
# tests/backend/ops' cuda cases on src/cuda/*.cu built as C++ against a CPU
# stand-in of the CUDA runtime (tests/backend/cuda_emu: each GPU thread a
# fiber, so barriers and warp shuffles synchronize): the CUDA backend's logic
# checked on every machine, GPU or not. The attention cases run over each KV
# cache type the backend has (f32, bf16, f16); run twice, with the default
# cache bf16 and f32 (PB_CUDA_KV_DTYPE=f32, what contrib/gpu/check.sh sets).
# an unknown default is refused by name, not taken as bf16
out=$(PB_CUDA_KV_DTYPE=q8 "${PB_BUILDDIR:?}/tests/backend/ops-emu" cuda 2>&1)
case $out in
*"PB_CUDA_KV_DTYPE=q8: expected bf16 or f32"*) ;;
*) echo "FAIL: PB_CUDA_KV_DTYPE=q8 was not refused: $out"; exit 1 ;;
esac
# The first run with the default kernels: the skinny tensor-core kernel's 16-column warps, 17-64 rows
# rounded once first (PB_CUDA_TC_XB), the pipelined kernel above 64 rows (x rounded once, a ring of 6
# cp.async stages), norms with the row in registers, attention's queries grouped by KV head and tile of
# tokens, here at every size (PB_CUDA_ATTN_GROUP=2; by default from 1024 queries a call)
PB_CUDA_ATTN_GROUP=2 "$PB_BUILDDIR/tests/backend/ops-emu" cuda || exit $?
# the second with the others: 8-column warps reading f32 x, the tiled kernel from 33 rows
# (PB_CUDA_TC_SKINNY) in 128 x 64 tiles, attention in chunks of 8 keys, a block a chunk (flash-decoding:
# PB_CUDA_ATTN_*), norms' loops over memory (PB_CUDA_NORM_REGS=0): the same bounds and invariance
(
    export PB_CUDA_TC_COLS=8 PB_CUDA_TC_SKINNY=32 PB_CUDA_TC_TILE=64 PB_CUDA_TC_PIPE=0 PB_CUDA_TC_XB=0
    export PB_CUDA_ATTN_CHUNK=8 PB_CUDA_ATTN_SPLIT=1 PB_CUDA_NORM_REGS=0
    PB_CUDA_KV_DTYPE=f32 exec "$PB_BUILDDIR/tests/backend/ops-emu" cuda
) || exit $?
# the third: 16-column warps reading f32 x, the tiled kernel in 128 x 128 tiles, attention's scores a key a
# thread (PB_CUDA_ATTN_LANE), glu_linear's activation in the skinny kernel's loads at every row count it
# takes (PB_CUDA_GLU_LOAD=1; by default k_glu first up to 16 rows, k_round_x's above), attention's rotary by
# k_rope first (PB_CUDA_ATTN_ROPE=0; by default as the keys are stored), the skinny kernel's next unit's
# slices loaded a round ahead, for products of more column groups than the device holds blocks at once in a
# grid of those (PB_CUDA_TC_PREFETCH=2: the stand-in's 3, so that blocks take several groups)
PB_CUDA_TC_PIPE=0 PB_CUDA_TC_TILE=128 PB_CUDA_TC_XB=0 PB_CUDA_ATTN_LANE=1 PB_CUDA_GLU_LOAD=1 PB_CUDA_ATTN_ROPE=0 \
    PB_CUDA_TC_PREFETCH=2 "$PB_BUILDDIR/tests/backend/ops-emu" cuda ||
    exit $?
# the fourth: 8-column warps on rounded rows, the pipelined kernel in rounds of 128 rows
# (PB_CUDA_TC_PIPE_ROWS; a call of 130 rows takes two), launched as programmatic dependents (PB_CUDA_PDL;
# a plain launch here) with a ring of 3 stages of 2 spans (PB_CUDA_TC_STAGES, PB_CUDA_TC_SPANS: a call
# of an odd number of spans ends in half a stage), attention a block a query where the default groups a
# KV head's queries (PB_CUDA_ATTN_GROUP=0), the activation in the skinny kernel's loads up to 16 rows
# (PB_CUDA_GLU_LOAD=1), the next round's slices loaded ahead (PB_CUDA_TC_PREFETCH=1)
PB_CUDA_TC_COLS=8 PB_CUDA_TC_PIPE_ROWS=128 PB_CUDA_PDL=1 PB_CUDA_ATTN_GROUP=0 PB_CUDA_TC_STAGES=3 PB_CUDA_TC_SPANS=2 \
    PB_CUDA_GLU_LOAD=1 PB_CUDA_TC_PREFETCH=1 \
    exec "$PB_BUILDDIR/tests/backend/ops-emu" cuda
