#!/bin/sh
# The GPU checks of contrib/gpu/check.sh --quick on this build tree: ops cuda,
# the family models through the CLI on --device cuda against --device cpu,
# and 2 ranks on one GPU when mpirun is there. Exits 77 (skipped) where no
# GPU is visible, as on CI; contrib/gpu/check.sh (all steps) is the full run.
PB_GPU_PACK="$PB_BUILDDIR" OUT="$PB_TEST_TMP/gpu-check" exec bash "$PB_SRCDIR/contrib/gpu/check.sh" --quick
