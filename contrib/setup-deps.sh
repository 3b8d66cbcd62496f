#!/bin/sh
# Install everything pippy-batch needs to build and test on Debian 12:
# Debian packages (as root) and a Python venv (.venv in the source tree) with
# current PyPI torch and HuggingFace transformers 5.x as the tests' reference.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES="build-essential autoconf automake libtool pkg-config \
 libpmix-dev libzstd-dev libcjson-dev libopenblas-dev libpcre2-dev libutf8proc-dev libsodium-dev libsimde-dev \
 zstd jq openmpi-bin libopenmpi-dev slurm-wlm \
 python3 python3-venv \
 clang valgrind man-db"

# Lower bounds only: what the families and the tests need (transformers 5.x
# config keys such as rope_parameters and layer_types, torch 2.x); pip takes the
# current releases. PyPI's torch wheel is a CUDA build (about 5-6 GB installed);
# the tests use it on the CPU. xgrammar (vLLM's grammar engine) and lark are the
# references for guided_grammar; accelerate is what transformers' FP8 checkpoint
# reader asks for, compressed-tensors (vLLM's llm-compressor format) writes and
# reads the compressed-tensors FP8 checkpoints of the tests. pip honours
# PIP_INDEX_URL / PIP_EXTRA_INDEX_URL.
PIP_PACKAGES="torch>=2.4 transformers>=5,<6 tokenizers safetensors numpy gguf jsonschema regex xgrammar lark accelerate
 compressed-tensors"

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $APT_PACKAGES

# A plain venv of Debian's interpreter: no system site packages, so Debian's
# python3-torch / python3-numpy (old, if installed) never reach the tests.
# A venv made by an earlier version of this script (with system site packages) is replaced.
venv="$here/.venv"
if [ -f "$venv/pyvenv.cfg" ] && grep -q '^include-system-site-packages *= *true' "$venv/pyvenv.cfg"; then
    echo "setup-deps: $venv sees the system site packages; making it again"
    rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
    /usr/bin/python3 -m venv "$venv"
fi
# shellcheck disable=SC2086 # the version specifiers are single words
"$venv/bin/python" -m pip install -q --disable-pip-version-check $PIP_PACKAGES
"$venv/bin/python" - <<'EOF' || { echo "setup-deps: the Python reference libraries do not import" >&2; exit 1; }
import accelerate, compressed_tensors, gguf, numpy, safetensors, tokenizers, torch, transformers
assert int(transformers.__version__.split(".")[0]) == 5, transformers.__version__
print("setup-deps: torch %s, transformers %s, tokenizers %s, safetensors %s, numpy %s"
      % (torch.__version__, transformers.__version__, tokenizers.__version__, safetensors.__version__,
         numpy.__version__))
EOF
echo "setup-deps: done (Python references in $venv)"
