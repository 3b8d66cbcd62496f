#!/bin/sh
# Build pippy-batch with CUDA here and put what a GPU machine needs to check
# it into gpu-pack/ (ignored by git), for contrib/gpu/check.sh to run THERE:
#
#   sh contrib/gpu/pack.sh [--builddir DIR] [--no-launcher]
#   (on the GPU machine, gpu-pack carried)  bash contrib/gpu/check.sh
#
# The GPU machine has the NVIDIA driver, the CUDA 13 runtime, cuBLAS and NCCL
# (through its python3's torch / nvidia-* packages), python3 with torch,
# transformers, tokenizers, safetensors and numpy, but no autotools, no
# package registry and none of PMIx, zstd, cJSON, OpenBLAS, PCRE2, utf8proc,
# libsodium. So the pack holds:
#   pippy-batch, tests/backend/ops, tests/forward/fwd-harness, tests/cli/cuda_probe,
#   tests/net/nccl_test, tests/net/pipe_test, tests/backend/linbench
#                        (stripped; laid out as in a build tree, so PB_BUILDDIR=gpu-pack works
#                        once contrib/gpu/env.sh has unpacked those over 4 MiB, kept as NAME.xz)
#   lib/                 every shared library they need except glibc's and
#                        the CUDA ones (libcuda, libcudart, libcublas*, libnccl);
#                        libraries over 4 MiB as NAME.xz (check.sh unpacks them
#                        with python3's lzma); lib/pmix: PMIx's plugins
#   ompi/                Open MPI's mpirun (orterun) with its libraries, plugins
#                        and help files, relocated by OPAL_PREFIX, for the
#                        2-rank checks (--no-launcher leaves it out)
#   tok/                 the test tokenizers, uncompressed
#   MANIFEST             what was built from which commit, the glibc it needs,
#                        the sizes
# The whole stays well under the 64 MiB a device run carries; the size is
# printed. Test models are made THERE by contrib/pb-make-checkpoint (numpy).
set -eu
SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD="$SRC/build-gpu"
LAUNCHER=1
while [ $# -gt 0 ]; do
    case $1 in
    --builddir) BUILD=$(cd "$2" 2>/dev/null && pwd || echo "$2"); shift 2 ;;
    --no-launcher) LAUNCHER=0; shift ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "pack.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
done
PACK="$SRC/gpu-pack"
LIMIT_KIB=$((56 * 1024))   # leave room under the 64 MiB carry limit for the tree itself

say() { echo "pack.sh: $*"; }
die() { echo "pack.sh: error: $*" >&2; exit 1; }

# ---- build (CUDA on, warnings are errors) ----
if [ ! -f "$BUILD/config.status" ]; then
    [ -x "$SRC/configure" ] || (cd "$SRC" && autoreconf -fi) || die "autoreconf failed"
    mkdir -p "$BUILD"
    say "configuring $BUILD (--enable-werror --with-cuda)"
    (cd "$BUILD" && "$SRC/configure" --enable-werror --with-cuda >configure.out 2>&1) ||
        die "configure failed: see $BUILD/configure.out (is nvcc on PATH, /usr/local/cuda there?)"
fi
grep -q '^#define PB_HAVE_CUDA 1' "$BUILD/config.h" || die "$BUILD is configured without CUDA"
PROGS="pippy-batch tests/backend/ops tests/forward/fwd-harness tests/cli/cuda_probe"
# the NCCL transport's tests (tests/net/nccl.sh), when the build has them
for p in tests/net/nccl_test tests/net/pipe_test tests/backend/linbench; do
    grep -q "^${p%%/*}_$(echo "${p#*/}" | tr / _)_SOURCES" "$BUILD/Makefile" 2>/dev/null && PROGS="$PROGS $p"
done
say "building $PROGS in $BUILD"
make -C "$BUILD" -j2 $PROGS >"$BUILD/pack-make.out" 2>&1 || { tail -30 "$BUILD/pack-make.out"; die "build failed"; }

# ---- binaries ----
rm -rf "$PACK"
mkdir -p "$PACK/lib" "$PACK/tok" "$PACK/tests/backend" "$PACK/tests/forward" "$PACK/tests/cli" "$PACK/tests/net"
for p in $PROGS; do
    strip -o "$PACK/$p" "$BUILD/$p" 2>/dev/null || cp "$BUILD/$p" "$PACK/$p"
done

# ---- shared libraries: what ldd resolves, minus glibc and CUDA (there already) ----
skip_lib() {
    case $1 in
    linux-vdso*|ld-linux*|libc.so*|libm.so*|libpthread.so*|libdl.so*|librt.so*|libutil.so*|libresolv.so*) return 0 ;;
    libcuda.so*|libcudart.so*|libcublas*|libcublasLt*|libnccl*|libnvidia*|libnvrtc*) return 0 ;;
    libgcc_s.so*|libstdc++.so*|libz.so*) return 0 ;;  # every Linux with python3 has them (and an older
                                                     # copy first on LD_LIBRARY_PATH could break python3)
    esac
    return 1
}
copy_libs_of() { # copy_libs_of FILE...: the libraries of FILEs into $PACK/lib
    for f in "$@"; do
        ldd "$f" 2>/dev/null | awk '/=>/ && $3 ~ /^\// {print $1, $3}'
    done | sort -u | while read -r name path; do
        skip_lib "$name" && continue
        [ -e "$PACK/lib/$name" ] || [ -e "$PACK/lib/$name.xz" ] && continue
        cp -L "$path" "$PACK/lib/$name"
    done
}
for p in $PROGS; do copy_libs_of "$PACK/$p"; done

# PMIx's plugins (a singleton's PMIx_Init looks for them too)
PMIX_LIB=$(ldd "$PACK/pippy-batch" | awk '$1 ~ /^libpmix/ {print $3}')
if [ -n "$PMIX_LIB" ] && [ -d "$(dirname "$PMIX_LIB")/pmix" ]; then
    mkdir -p "$PACK/lib/pmix"
    cp -L "$(dirname "$PMIX_LIB")"/pmix/*.so "$PACK/lib/pmix/"
    copy_libs_of "$PACK"/lib/pmix/*.so
fi

# ---- the launcher: Open MPI's orterun, relocated ----
if [ $LAUNCHER = 1 ]; then
    ORTERUN=$(readlink -f "$(command -v mpirun || true)" 2>/dev/null || true)
    OMPI_PKGLIB=$(ompi_info --path pkglibdir --parsable 2>/dev/null | sed -n 's/^path:pkglibdir://p')
    OMPI_PREFIX=$(ompi_info --path prefix --parsable 2>/dev/null | sed -n 's/^path:prefix://p')
    OMPI_DATA=$(ompi_info --path pkgdatadir --parsable 2>/dev/null | sed -n 's/^path:pkgdatadir://p')
    if [ -n "$ORTERUN" ] && [ -n "$OMPI_PKGLIB" ] && [ -n "$OMPI_PREFIX" ] && [ "${ORTERUN##*/}" = orterun ]; then
        O="$PACK/ompi"
        rel() { echo "${1#$OMPI_PREFIX/}"; }   # a path below the prefix, relative to it
        mkdir -p "$O/bin" "$O/$(rel "$OMPI_PKGLIB")" "$O/$(rel "$OMPI_DATA")"
        cp -L "$ORTERUN" "$O/bin/mpirun"
        ORTED=$(dirname "$ORTERUN")/orted
        [ -x "$ORTED" ] && cp -L "$ORTED" "$O/bin/orted"
        # the run-time plugins of ORTE and OPAL (not the MPI library's, not the
        # ones for fabrics and batch systems the GPU machine does not have)
        for f in "$OMPI_PKGLIB"/mca_*.so; do
            b=${f##*/}
            case $b in
            mca_allocator_*|mca_atomic_*|mca_bml_*|mca_btl_*|mca_coll_*|mca_fbtl_*|mca_fcoll_*|mca_fs_*|mca_io_*|\
            mca_memheap_*|mca_mpool_*|mca_mtl_*|mca_op_*|mca_osc_*|mca_pml_*|mca_rcache_*|mca_scoll_*|\
            mca_sharedfp_*|mca_spml_*|mca_sshmem_*|mca_topo_*|mca_vprotocol_*) continue ;;
            *_ucx.so|*_psm.so|*_psm2.so|*_ofi.so|*_openib.so|*_verbs.so|*_slurm.so|*_gridengine.so|*_flux.so|*_tm.so) continue ;;
            esac
            cp -L "$f" "$O/$(rel "$OMPI_PKGLIB")/"
        done
        # help texts (error messages) and the default parameter files
        cp -L "$OMPI_DATA"/help-*.txt "$O/$(rel "$OMPI_DATA")/" 2>/dev/null || true
        cp -L "$OMPI_DATA"/*.txt "$O/$(rel "$OMPI_DATA")/" 2>/dev/null || true
        copy_libs_of "$O/bin/mpirun" "$O"/bin/orted "$O/$(rel "$OMPI_PKGLIB")"/*.so
        echo "$(rel "$OMPI_PKGLIB")" >"$O/PKGLIBDIR"
    else
        say "no Open MPI orterun here: the pack carries no launcher (check.sh skips the 2-rank checks)"
    fi
fi

# big libraries compressed (python3's lzma unpacks them there)
for f in "$PACK"/lib/*.so* "$PACK"/lib/pmix/*.so; do
    [ -f "$f" ] || continue
    case $f in *.xz) continue ;; esac
    if [ "$(stat -c %s "$f")" -gt $((4 * 1024 * 1024)) ]; then
        xz -6 -T2 "$f" || die "xz $f"
    fi
done

# ---- tokenizers ----
for t in small-split-bytelevel llama2 gpt2; do
    zstd -q -d -f -o "$PACK/tok/$t.json" "$SRC/tests/data/tokenizers/$t.json.zst" || die "tokenizer $t"
done

# ---- manifest ----
GLIBC=$(find "$PACK" -type f ! -name '*.xz' ! -name '*.json' ! -name '*.txt' -exec objdump -T {} \; 2>/dev/null |
        grep -o 'GLIBC_[0-9][0-9.]*' | sort -u -V | tail -1)
CUDA_LIBS=$(ldd "$PACK/pippy-batch" | awk '$1 ~ /^lib(cudart|cublas|nccl)/ {printf "%s ", $1}')
"$PACK/pippy-batch" --version >/dev/null 2>&1 || die "the packed pippy-batch does not run here"
# big programs compressed too (contrib/gpu/env.sh unpacks them there): each holds the kernels' whole fatbin
for p in $PROGS; do
    if [ "$(stat -c %s "$PACK/$p")" -gt $((4 * 1024 * 1024)) ]; then
        xz -6 -T2 "$PACK/$p" || die "xz $p"
    fi
done
TOTAL_KIB=$(du -sk "$PACK" | cut -f1)
{
    echo "built:   $(date -u '+%Y-%m-%d %H:%M UTC') on $(uname -n) ($(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"))"
    echo "commit:  $(git -C "$SRC" describe --always --dirty 2>/dev/null || echo unknown)"
    echo "glibc:   needs $GLIBC (check.sh compares with the machine's)"
    echo "nvcc:    $(nvcc --version 2>/dev/null | sed -n 's/.*release \([0-9.]*\).*/\1/p') ($(grep -o 'CUDA_GENCODE = .*' "$BUILD/Makefile" | head -1))"
    echo "cuda libraries linked: $CUDA_LIBS"
    echo "size:    $TOTAL_KIB KiB"
    echo "files:"
    (cd "$PACK" && find . -type f | sort | while read -r f; do printf '  %8d  %s\n' "$(stat -c %s "$f")" "$f"; done)
} >"$PACK/MANIFEST"
say "wrote $PACK: $(find "$PACK" -type f | wc -l) files, $((TOTAL_KIB / 1024)) MiB ($TOTAL_KIB KiB; limit $((LIMIT_KIB / 1024)) MiB)"
[ "$TOTAL_KIB" -le "$LIMIT_KIB" ] || die "the pack is too big to carry"
say "on a GPU machine: bash contrib/gpu/check.sh   (device run: carry [\"gpu-pack\"])"
