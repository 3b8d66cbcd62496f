#!/bin/sh
# Benchmark-only peers: llama.cpp through the PyPI package llama-cpp-python,
# built from its sdist's sources for this CPU, in its own venv (never the
# project's .venv). The sdist also carries llama.cpp's convert_hf_to_gguf.py
# and gguf-py, which contrib/bench/run.py uses to make GGUFs from the same HF
# folders. Nothing of llama.cpp enters the project: this only installs and
# runs it.
#
#   contrib/bench/setup-peers.sh [--avx2] [DIR]   (default: build-bench, gitignored)
#
# --avx2 also builds llama.cpp a second time held to AVX2+FMA+F16C
# (GGML_NATIVE=OFF, GGML_AVX512=OFF) into DIR/llama-lib-avx2, for
# `run.py --isa avx2`: the AVX2-only machine's side by side, on this one.
#
# Steps (each skipped when done): download the sdist; cmake-build only
# libllama + ggml from it (native CPU, no BLAS; the package's own build would
# also compile llama.cpp's `common` library, which the bindings do not need,
# doubling the time on a small machine); install the Python package without
# building and put the libraries in its lib folder; sentencepiece for the
# converter. Environment: PYTHON (base interpreter, default python3),
# LLAMA_CPP_VERSION (default 0.3.36), JOBS (parallel compile jobs, default 2).
set -eu

avx2=no
if [ "${1:-}" = --avx2 ]; then
	avx2=yes
	shift
fi
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

# build_llama SUFFIX CMAKE_FLAGS...: libllama + ggml into DIR/llama-lib$SUFFIX
# (built in DIR/llama-build$SUFFIX), once
build_llama() {
	sfx=$1
	shift
	[ -e "$dir/llama-lib$sfx/libllama.so" ] && return 0
	cmake -S "$src/vendor/llama.cpp" -B "$dir/llama-build$sfx" -DCMAKE_BUILD_TYPE=Release \
		-DBUILD_SHARED_LIBS=ON -DGGML_BLAS=OFF -DLLAMA_CURL=OFF \
		-DLLAMA_BUILD_COMMON=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
		-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF "$@" >/dev/null
	cmake --build "$dir/llama-build$sfx" --target llama -j "$jobs"
	mkdir -p "$dir/llama-lib$sfx"
	cp -a "$dir/llama-build$sfx"/bin/lib*.so* "$dir/llama-lib$sfx/"
}
build_llama "" -DGGML_NATIVE=ON
lib=$dir/llama-lib
if [ $avx2 = yes ]; then
	build_llama -avx2 -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
		-DGGML_BMI2=ON -DGGML_AVX512=OFF
fi

if [ ! -x "$dir/venv/bin/python" ]; then
	"$py" -m venv "$dir/venv"
	"$dir/venv/bin/python" -m pip install -q --upgrade pip
fi
if ! "$dir/venv/bin/python" -c 'import llama_cpp' 2>/dev/null; then
	# the bindings only (LLAMA_BUILD=OFF), then the libraries built above
	CMAKE_ARGS="-DLLAMA_BUILD=OFF -DLLAVA_BUILD=OFF" "$dir/venv/bin/python" -m pip install -q "$src"
	pkg=$("$dir/venv/bin/python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("llama_cpp").origin))')
	mkdir -p "$pkg/lib"
	cp -a "$lib"/lib*.so* "$pkg/lib/"
fi

# The converter's own gguf-py, matching the llama.cpp version built above;
# sentencepiece, which it imports for the llama family's vocabulary, beside
# (run.py puts both on PYTHONPATH for the project's Python, which has torch).
ln -sfn "$src/vendor/llama.cpp" "$dir/llama.cpp"
[ -d "$dir/pydeps/sentencepiece" ] || "$dir/venv/bin/python" -m pip install -q --target "$dir/pydeps" sentencepiece
"$dir/venv/bin/python" -c 'import llama_cpp; llama_cpp.llama_backend_init(); print("llama-cpp-python", llama_cpp.__version__, "ok")'
echo "converter: $dir/llama.cpp/convert_hf_to_gguf.py (PYTHONPATH=$dir/llama.cpp/gguf-py:$dir/pydeps)"
