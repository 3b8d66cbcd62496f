#!/bin/sh
# Forward pass GEMM rate: the CPU backend's linear layer (fixed row blocks for
# batch invariance) beside plain OpenBLAS sgemm on the same shapes.
set -eu
make -s -C "$PB_BUILDDIR" tests/forward/bench-forward >/dev/null
"$PB_BUILDDIR/tests/forward/bench-forward" "${PB_BENCH_THREADS:-2}"
