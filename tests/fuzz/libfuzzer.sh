#!/bin/sh
# make check: the libFuzzer targets as tests/fuzz/run.sh builds them (clang,
# -fsanitize=fuzzer,address,undefined, linking the sources it lists), each
# over a fixed number of inputs from a fixed seed, the same inputs on every
# machine. So the list of sources run.sh links stays whole (session 30 found
# two targets that no longer linked: gen/jbuf.c and model/family.c had come
# since), and every check fuzzes each parser a little beyond regress.sh's
# fixed corpora. A crash fails the test; run.sh's work dir under
# $PB_TEST_TMP (PB_KEEP_TEST_TMP=1 keeps it) holds the input as TARGET-crash-*.
set -eu
: "${PB_SRCDIR:?}" "${PB_TEST_TMP:?}"
cc=${FUZZ_CC:-clang}
if ! command -v "$cc" >/dev/null 2>&1; then
    echo "libfuzzer.sh: $cc not found (contrib/setup-deps.sh installs clang)" >&2
    exit 1
fi
TMPDIR=$PB_TEST_TMP FUZZ_RUNS=${FUZZ_RUNS:-20000} FUZZ_SEED=${FUZZ_SEED:-1} exec sh "$PB_SRCDIR/tests/fuzz/run.sh"
