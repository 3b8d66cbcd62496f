#!/bin/sh
# Qwen3 against HF transformers 5.x (tests/forward/families_new.py).
exec $PB_PYTHON "$PB_SRCDIR/tests/forward/families_new.py" qwen3
