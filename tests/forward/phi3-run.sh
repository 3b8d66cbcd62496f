#!/bin/sh
# phi3 end to end, HF generate() and mpirun (tests/forward/family-run.sh).
exec sh "$PB_SRCDIR/tests/forward/family-run.sh" phi3
