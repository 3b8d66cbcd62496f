#!/bin/sh
# The benchmark in one command: pippy-batch beside llama.cpp and PyTorch on
# the same models and threads, beside the machine's measured limits; prints a
# table and writes bench.json (see contrib/bench/run.py for the measures).
#
#   contrib/bench/run.sh [--quick] [--all] [run.py options]
#
#   --quick   one model, one run, batches 1 and 8: a smoke check
#   --all     then the component benchmarks too (forward, load, pipeline, gen,
#             tokenizer, sampler, prefix sharing, log probabilities, constrained
#             decoding, beam search, embeddings: figures beside their own baselines)
# Environment: PB_BUILDDIR (default: build in the source tree), PB_PYTHON
# (default: the project's .venv). llama.cpp joins when
# contrib/bench/setup-peers.sh has installed it (build-bench/, gitignored).
set -eu
src=$(cd "$(dirname "$0")/../.." && pwd)
PB_SRCDIR=${PB_SRCDIR:-$src}
PB_BUILDDIR=${PB_BUILDDIR:-$src/build}
py=${PB_PYTHON:-$src/.venv/bin/python}
[ -x "$py" ] || py=python3
PIPPY_BATCH=${PIPPY_BATCH:-$PB_BUILDDIR/pippy-batch}
PB_PYTHON=$py
export PB_SRCDIR PB_BUILDDIR PB_PYTHON PIPPY_BATCH

all=0
n=$#
while [ "$n" -gt 0 ]; do # drop --all from the arguments, keep the rest in order
	a=$1
	shift
	n=$((n - 1))
	if [ "$a" = --all ]; then all=1; else set -- "$@" "$a"; fi
done
status=0
"$py" "$src/contrib/bench/run.py" --build "$PB_BUILDDIR" "$@" || status=1
if [ $all = 1 ]; then
	for b in forward.sh load.sh pipeline.sh gen.sh tokenizer.py sample.py prefix.sh logprobs.sh guided.sh beam.sh embed.sh; do
		[ -f "$src/contrib/bench/$b" ] || continue
		echo
		echo "== $b"
		case $b in
		*.py) "$py" "$src/contrib/bench/$b" || status=1 ;;
		*) sh "$src/contrib/bench/$b" || status=1 ;;
		esac
	done
fi
exit $status
