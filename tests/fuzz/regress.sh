#!/bin/sh
# make check: every libFuzzer target's entry point (LLVMFuzzerTestOneInput),
# built with the normal compiler and tests/fuzz/regress_main.c, over its seed
# corpus and the crashing inputs kept in tests/fuzz/regress-TARGET/.
set -eu
: "${PB_SRCDIR:?}" "${PB_BUILDDIR:?}"
status=0
for t in safetensors pickle record config tokenizer chat regex grammar; do
    prog="$PB_BUILDDIR/tests/fuzz/fuzz-$t"
    dirs="$PB_SRCDIR/tests/fuzz/corpus-$t"
    [ -d "$PB_SRCDIR/tests/fuzz/regress-$t" ] && dirs="$dirs $PB_SRCDIR/tests/fuzz/regress-$t"
    # quiet: the inputs are mostly bad on purpose and log their errors
    if "$prog" $dirs 2>"$PB_TEST_TMP/$t.err"; then
        echo "ok: fuzz-$t"
    else
        echo "FAIL: fuzz-$t"; tail -n 40 "$PB_TEST_TMP/$t.err"; status=1
    fi
done
exit $status
