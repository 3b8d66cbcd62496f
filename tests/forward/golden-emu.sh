#!/bin/sh
# tests/forward/golden.py's checks with the CUDA backend on its CPU stand-in (fwd-harness-emu: fwd-harness linked
# with tests/backend's ops-emu objects): logits within 1e-4 of HF transformers at every prompt position and decode
# step, greedy continuations equal to generate(), 1 and 2-3 stages bit-identical; the exact f32 products and an
# f32 cache, as contrib/gpu/check.sh's step 3 on a GPU. That step runs the original ten families; here the ones it
# does not: Mixtral's experts (top-2 routing, experts without a token), Gemma 2 (sandwich norms, soft-caps, local
# and global layers with their own windows) and Phi-3 (fused qkv and gate_up, LongRoPE past the original context),
# and GPT-2 with f16 weights. About 2.5 minutes of one core.
set -u
PB_FWD_HARNESS="$PB_BUILDDIR/tests/forward/fwd-harness-emu" PB_FWD_DEVICE=cuda PB_CUDA_KV_DTYPE=f32 \
    PB_MATMUL_PRECISION=f32 exec $PB_PYTHON "$PB_SRCDIR/tests/forward/golden.py" mixtral-a gemma2-a phi3-a gpt2-f16
