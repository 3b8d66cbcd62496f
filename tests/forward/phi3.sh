#!/bin/sh
# Phi-3 / Phi-3.5 / Phi-4-mini shapes against HF transformers 5.x (tests/forward/families_new.py).
exec $PB_PYTHON "$PB_SRCDIR/tests/forward/families_new.py" phi3
