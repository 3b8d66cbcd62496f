#!/bin/sh
# make bench: contrib/bench/run.sh --all from the build tree (the peer table,
# then every component benchmark). BENCH_ARGS passes options, e.g.
#   make bench BENCH_ARGS=--quick
builddir=$1
srcdir=$2
shift 2
PB_BUILDDIR="$builddir" exec sh "$srcdir/contrib/bench/run.sh" --all --json "$builddir/bench.json" "$@"
