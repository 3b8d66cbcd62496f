#!/bin/sh
# Install everything pippy-batch needs to build and test on Debian 12:
# Debian packages (as root) and a Python venv (.venv in the source tree) with
# HuggingFace's reference libraries pinned, for the tests' reference checks.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)

APT_PACKAGES="build-essential autoconf automake libtool pkg-config \
 libpmix-dev libzstd-dev libcjson-dev libopenblas-dev libpcre2-dev libutf8proc-dev \
 zstd jq openmpi-bin libopenmpi-dev slurm-wlm \
 python3 python3-venv python3-numpy python3-torch \
 clang valgrind man-db"

# Versions that work with Debian's torch 1.13 (transformers >= 4.41 wants torch 2).
PIP_PACKAGES="transformers==4.40.2 tokenizers==0.19.1 safetensors==0.4.3"

if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends $APT_PACKAGES

# Debian's own interpreter: its python3-torch and python3-numpy are visible in the venv.
if [ ! -x "$here/.venv/bin/python" ]; then
    /usr/bin/python3 -m venv --system-site-packages "$here/.venv"
fi
"$here/.venv/bin/python" -m pip install -q --disable-pip-version-check $PIP_PACKAGES
"$here/.venv/bin/python" -c 'import torch, transformers, tokenizers, safetensors, numpy' \
    || { echo "setup-deps: the Python reference libraries do not import" >&2; exit 1; }
echo "setup-deps: done (Python references in $here/.venv)"
