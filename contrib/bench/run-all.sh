#!/bin/sh
# make bench: run every benchmark script in contrib/bench that exists.
# Each prints its figures beside a baseline measured in the same run.
builddir=$1
srcdir=$2
export PIPPY_BATCH="$builddir/pippy-batch" PB_BUILDDIR="$builddir" PB_SRCDIR="$srcdir"
py="$srcdir/.venv/bin/python"; [ -x "$py" ] || py=python3
export PB_PYTHON="$py"
status=0
for b in "$srcdir"/contrib/bench/*; do
    case $(basename "$b") in run-all.sh) continue ;; esac
    [ -f "$b" ] || continue
    echo "== $(basename "$b")"
    case $b in
        *.py) "$py" "$b" || status=1 ;;
        *) sh "$b" || status=1 ;;
    esac
done
exit $status
