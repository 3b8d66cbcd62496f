#!/bin/sh
# qwen3 end to end, HF generate() and mpirun (tests/forward/family-run.sh).
exec sh "$PB_SRCDIR/tests/forward/family-run.sh" qwen3
