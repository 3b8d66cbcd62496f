# Sourced by check.sh and bench/gpu.py's shell steps: make gpu-pack's programs
# runnable on this machine. Sets PACK, LD_LIBRARY_PATH, PMIx's plugin path
# and, when the pack carries Open MPI, OPAL_PREFIX and PB_MPIRUN.
#   PACK=/path/to/gpu-pack . contrib/gpu/env.sh
: "${PACK:?PACK must name the gpu-pack folder}"
# _pb_unxz FILE.xz OUT: FILE unpacked to OUT (whole or not at all) with python3's lzma: no xz needed
_pb_unxz() {
    python3 -c 'import lzma, shutil, sys
with lzma.open(sys.argv[1]) as a, open(sys.argv[2] + ".tmp", "wb") as b:
    shutil.copyfileobj(a, b)' "$1" "$2" && chmod --reference="$1" "$2.tmp" && mv "$2.tmp" "$2"
}
# programs kept compressed in the pack (NAME.xz: each holds the kernels' whole
# fatbin) are unpacked with python3's lzma (no xz needed) into a folder of
# their own outside it, beside links to the rest of the pack, and PACK names
# that folder from here on: the pack itself stays as carried (small enough to
# carry again). PB_GPU_PACK_DIR keeps the carried one.
PB_GPU_PACK_DIR=${PB_GPU_PACK_DIR:-$PACK}
_xz=""
for _f in "$PACK"/pippy-batch.xz "$PACK"/tests/*/*.xz; do
    [ -f "$_f" ] && _xz=1
done
if [ -n "$_xz" ]; then
    _unx="${TMPDIR:-/tmp}/pbgpu-pack-$(cat "$PACK/MANIFEST" 2>/dev/null | cksum | cut -d' ' -f1)"
    mkdir -p "$_unx"
    for _f in "$PACK"/* "$PACK"/tests/*/*; do
        _r=${_f#"$PACK"/}
        [ "$_r" = tests ] && continue
        mkdir -p "$_unx/$(dirname "$_r")"
        case $_r in
        *.xz)
            _b=$_unx/${_r%.xz}
            [ -f "$_b" ] || _pb_unxz "$_f" "$_b" ;;
        *) [ -e "$_unx/$_r" ] || ln -s "$_f" "$_unx/$_r" ;;
        esac
    done
    PACK=$_unx
    export PACK PB_GPU_PACK_DIR
fi
# libraries kept compressed in the pack, unpacked outside it (so that the pack
# stays small enough to carry again) with python3's lzma: no xz needed
_unx=""
_xz=""
for _f in "$PACK"/lib/*.xz; do
    [ -f "$_f" ] && _xz=1
done
if [ -n "$_xz" ]; then
    _unx="${TMPDIR:-/tmp}/pbgpu-lib-$(cat "$PACK/MANIFEST" 2>/dev/null | cksum | cut -d' ' -f1)"
    mkdir -p "$_unx"
    for _f in "$PACK"/lib/*.xz; do
        _b=$(basename "$_f" .xz)
        [ -f "$_unx/$_b" ] || _pb_unxz "$_f" "$_unx/$_b"
    done
fi
_ld="$PACK/lib${_unx:+:$_unx}"  # absent in a build tree: harmless
# The CUDA libraries come from the machine: /usr/local/cuda, or the nvidia-*
# wheels beside python3's torch when the linker does not find them.
_missing=$(LD_LIBRARY_PATH="$_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" ldd "$PACK/pippy-batch" "$PACK"/tests/*/* 2>/dev/null |
           awk '/not found/ {print $1}' | sort -u)
if [ -n "$_missing" ]; then
    _dirs=$(python3 - $_missing <<'PY' 2>/dev/null
import glob, os, site, sys
roots = site.getsitepackages() + [site.getusersitepackages()]
try:
    import torch
    roots.append(os.path.dirname(torch.__file__))
except Exception:
    pass
roots += ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib", "/usr/lib/x86_64-linux-gnu"]
found = []
for name in sys.argv[1:]:
    for r in roots:
        hits = glob.glob(os.path.join(r, name)) + glob.glob(os.path.join(r, "nvidia", "*", "lib", name)) + \
               glob.glob(os.path.join(r, "nvidia", "*", "*", "lib", name)) + \
               glob.glob(os.path.join(r, "lib", name))
        if hits:
            d = os.path.dirname(hits[0])
            if d not in found:
                found.append(d)
            break
print(":".join(found))
PY
)
    [ -n "$_dirs" ] && _ld="$_ld:$_dirs"
fi
export LD_LIBRARY_PATH="$_ld${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d "$PB_GPU_PACK_DIR/lib/pmix" ] && export PMIX_MCA_mca_base_component_path="$PB_GPU_PACK_DIR/lib/pmix"
if [ -x "$PB_GPU_PACK_DIR/ompi/bin/mpirun" ]; then
    export OPAL_PREFIX="$PB_GPU_PACK_DIR/ompi"
    export PATH="$PB_GPU_PACK_DIR/ompi/bin:$PATH"
    # root on a lent machine; one node; no fabrics
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
    export OMPI_MCA_plm=isolated OMPI_MCA_btl_vader_single_copy_mechanism=none
    PB_MPIRUN="$PB_GPU_PACK_DIR/ompi/bin/mpirun --oversubscribe"
elif command -v mpirun >/dev/null 2>&1; then
    PB_MPIRUN="mpirun --oversubscribe --allow-run-as-root"
else
    PB_MPIRUN=""
fi
export PB_MPIRUN
unset _f _b _r _ld _missing _dirs _xz _unx
unset -f _pb_unxz
