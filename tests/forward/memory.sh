#!/bin/sh
# The plan's memory estimate (src/ckpt/plan.c, from the stage's own sizing)
# agrees within 10% with the measured peak RSS of a process running the stage
# on a full batch (every slot prefilled, then decoded to max_seq_len).
set -eu
"$PB_PYTHON" "$PB_SRCDIR/tests/forward/make_goldens.py" "$PB_TEST_TMP" llama-mem >/dev/null 2>&1
"$PB_BUILDDIR/tests/forward/fwd-harness" memory "$PB_TEST_TMP/llama-mem/model" 8 160 2
