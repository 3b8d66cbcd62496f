#!/bin/sh
# Benchmark-only peers: llama.cpp through the PyPI package llama-cpp-python,
# built from source for this CPU, in its own venv (never the project's .venv).
# The sdist also carries llama.cpp's convert_hf_to_gguf.py and gguf-py, which
# contrib/bench/run.py uses to make GGUFs from the same HF folders.
# Nothing of llama.cpp enters the project: this only installs and runs it.
#
#   contrib/bench/setup-peers.sh [DIR]     (default: build-bench, gitignored)
#
# Environment: PYTHON (base interpreter, default python3), LLAMA_CPP_VERSION
# (default 0.3.36), JOBS (parallel compile jobs, default 2).
set -eu

top=$(cd "$(dirname "$0")/../.." && pwd)
dir=${1:-$top/build-bench}
ver=${LLAMA_CPP_VERSION:-0.3.36}
py=${PYTHON:-python3}
jobs=${JOBS:-2}
mkdir -p "$dir/src"
dir=$(cd "$dir" && pwd)

src=$dir/src/llama_cpp_python-$ver
if [ ! -d "$src" ]; then
	if [ ! -f "$dir/src/llama_cpp_python-$ver.tar.gz" ]; then
		"$py" -m pip download --no-deps --no-binary :all: \
			"llama-cpp-python==$ver" -d "$dir/src"
	fi
	tar -C "$dir/src" -xzf "$dir/src/llama_cpp_python-$ver.tar.gz"
fi

if [ ! -x "$dir/venv/bin/python" ]; then
	"$py" -m venv "$dir/venv"
	"$dir/venv/bin/python" -m pip install -q --upgrade pip
fi

# Native CPU build (AVX-512/BF16 where the CPU has them), no BLAS, no
# multimodal library; OpenMP threads as llama.cpp ships by default.
CMAKE_ARGS="-DGGML_NATIVE=ON -DGGML_BLAS=OFF -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF"
CMAKE_BUILD_PARALLEL_LEVEL=$jobs
export CMAKE_ARGS CMAKE_BUILD_PARALLEL_LEVEL
"$dir/venv/bin/python" -m pip install -v "$src" > "$dir/pip-llama.log" 2>&1 ||
	{ tail -30 "$dir/pip-llama.log"; exit 1; }

# The converter's own gguf-py, matching the llama.cpp version built above;
# sentencepiece, which it imports for the llama family's vocabulary, beside
# (run.py puts both on PYTHONPATH for the project's Python, which has torch).
ln -sfn "$src/vendor/llama.cpp" "$dir/llama.cpp"
"$dir/venv/bin/python" -m pip install -q --target "$dir/pydeps" sentencepiece
"$dir/venv/bin/python" -c 'import llama_cpp; print("llama-cpp-python", llama_cpp.__version__)'
echo "converter: $dir/llama.cpp/convert_hf_to_gguf.py (PYTHONPATH=$dir/llama.cpp/gguf-py)"
