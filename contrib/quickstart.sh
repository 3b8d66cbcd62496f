#!/bin/sh
# Quick start on a fresh Debian 12 machine: install dependencies, build in
# ./build, and run pippy-batch on the demo model with data/prompts.jsonl.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
sh contrib/setup-deps.sh
autoreconf -fi
mkdir -p build
cd build
[ -f Makefile ] || ../configure
make -j"$(nproc)"
echo
echo "== pippy-batch --version"
./pippy-batch --version
echo
echo "== pippy-batch plan --model ../data/demo --ranks 2"
./pippy-batch plan --model ../data/demo --ranks 2 || true
echo
echo "== pippy-batch --model ../data/demo --in ../data/prompts.jsonl --out demo-out.jsonl.zst"
echo "   (the demo model has random weights: its text is noise)"
./pippy-batch --model ../data/demo --in ../data/prompts.jsonl --out demo-out.jsonl.zst \
    && { zstdcat demo-out.jsonl.zst | jq -c .; } \
    || echo "quickstart: batch generation did not run (see the message above)"
