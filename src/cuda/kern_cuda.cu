// Kernels of the CUDA backend: a batch-invariant GEMV-style linear, gather,
// norms, rotary, activations, attention over a bf16, f16 or f32 KV cache, and
// small element-wise ops. Semantics follow src/cpu/cpu.c op by op.
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/kern_cuda.cuh"

#define FULL_MASK 0xffffffffu

// kernel launch (tests/backend/cuda-emu runs these kernels on the CPU with
// its own KLAUNCH)
#ifndef KLAUNCH
#define KLAUNCH(kern, grid, block, stream, ...) kern<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
#define KLAUNCH_SMEM(kern, grid, block, smem, stream, ...) kern<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#endif

// Programmatic dependent launch (sm_90; PB_CUDA_PDL=1, off until measured): the skinny linear kernel,
// launched with KLAUNCH_PDL, may start while the kernel before it in the stream finishes, and issues
// its first weight loads (which no kernel writes) before pdl_wait(), which waits for that kernel's
// completion and writes (griddepcontrol.wait), so that the loads' DRAM latency overlaps that kernel's
// tail. Kernels call pdl_trigger() first, which lets such a launch begin once all their blocks have
// run it (griddepcontrol.launch_dependents). Both are no-ops below sm_90 and where no launch asked
// for it; a device or driver that refuses the attribute gets a plain launch.
__device__ __forceinline__ void pdl_wait()
{
#if !defined(PB_CUDA_EMU_RUNTIME_H) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger()
{
#if !defined(PB_CUDA_EMU_RUNTIME_H) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

#ifndef KLAUNCH_PDL
template <typename... P, typename... A>
static void launch_pdl(void (*kern)(P...), dim3 grid, dim3 block, cudaStream_t st, A... args)
{
    cudaLaunchAttribute at[1];
    at[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    at[0].val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = st;
    cfg.attrs = at;
    cfg.numAttrs = 1;
    if (cudaLaunchKernelEx(&cfg, kern, args...) != cudaSuccess) {
        (void)cudaGetLastError();
        KLAUNCH(kern, grid, block, st, args...);
    }
}
#define KLAUNCH_PDL(kern, grid, block, stream, ...) launch_pdl(kern, dim3(grid), dim3(block), (stream), __VA_ARGS__)
#endif

// ---- element conversions (exact, as src/common/tensor.c) ----

__device__ __forceinline__ float bf16_f32(uint16_t b) { return __uint_as_float((uint32_t)b << 16); }
__device__ __forceinline__ float f16_f32(uint16_t h) { return __half2float(__ushort_as_half(h)); }

// round to nearest even, NaN quieted: pb_f32_to_bf16's bits
__device__ __forceinline__ uint16_t f32_bf16(float f)
{
    uint32_t x = __float_as_uint(f);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

template <int DT> __device__ __forceinline__ float ld_w(const void *W, size_t i)
{
    if (DT == KC_F32)
        return ((const float *)W)[i];
    if (DT == KC_BF16)
        return bf16_f32(((const uint16_t *)W)[i]);
    return f16_f32(((const uint16_t *)W)[i]);
}

// ---- activations (cpu.c act_f; codes are pb_act) ----

__device__ __forceinline__ float act_f(int act, float x)
{
    switch (act) {
    case 0: /* PB_ACT_GELU_TANH: HF NewGELUActivation */
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case 1: /* PB_ACT_GELU_ERF */
        return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case 2: /* PB_ACT_RELU */
        return x > 0 ? x : 0.0f;
    case 3: /* PB_ACT_SILU */
        return x / (1.0f + expf(-x));
    case 4: /* PB_ACT_BLOOM_GELU */
        return x * 0.5f * (1.0f + tanhf(0.79788456f * x * (1.0f + 0.044715f * x * x)));
    }
    return x;
}

// the gated MLP's activation of one element: act(gate) * up, rounded once (k_glu's, and the products' that
// take the activation as they load x: the same bits, the same code). Not inlined: the skinny kernel's
// unrolled loads would hold hundreds of copies of act_f (tanhf, erff), doubling the programs' fatbins.
__device__ __noinline__ float glu_f(int act, float g, float u) { return __fmul_rn(act_f(act, g), u); }

static int blocks_for(size_t n, int per)
{
    size_t b = (n + (size_t)per - 1) / (size_t)per;
    return b > 65535u * 16u ? 65535 * 16 : (int)b; // grid-stride loops cover the rest
}

// ---- linear ----
//
// One warp per (output column n, block of LIN_ROWS rows of x). Lane l owns the
// 8-element chunks l, l + 32, l + 64, ... of K: it accumulates them in order
// with one fmaf chain per row, then a fixed xor butterfly adds the 32 lane
// sums (every lane ends with the same bits) and the bias is added last. So
// each y element's reduction order depends only on K: the bits of a row are
// the same alone or among any M rows, and the vector and scalar load paths
// (chosen by alignment) give the same result. The W row is read once per
// LIN_ROWS rows of x.
//
// Prefill (large M) rereads W once per 8 rows: a cuBLAS / tensor-core GEMM
// path for M above a threshold belongs here later, but cuBLAS chooses its
// algorithm (and split-K reduction order) by M, which breaks batch
// invariance; it would need a fixed-order tiled kernel of our own (K split in
// the same fixed slices for every M) to stay invariant.

#define LIN_ROWS 8
#define LIN_WARPS 8

template <int DT, bool VEC> __device__ __forceinline__ void lin_load_w(const void *W, size_t at, int kn, float w[8])
{
    if (VEC) {
        if (DT == KC_F32) {
            const float4 a = *(const float4 *)((const float *)W + at);
            const float4 b = *(const float4 *)((const float *)W + at + 4);
            w[0] = a.x, w[1] = a.y, w[2] = a.z, w[3] = a.w, w[4] = b.x, w[5] = b.y, w[6] = b.z, w[7] = b.w;
        } else {
            const uint4 u = *(const uint4 *)((const uint16_t *)W + at);
            const uint32_t p[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
            for (int i = 0; i < 4; i++) {
                const uint16_t lo = (uint16_t)(p[i] & 0xffffu), hi = (uint16_t)(p[i] >> 16);
                w[2 * i] = DT == KC_BF16 ? bf16_f32(lo) : f16_f32(lo);
                w[2 * i + 1] = DT == KC_BF16 ? bf16_f32(hi) : f16_f32(hi);
            }
        }
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            w[i] = i < kn ? ld_w<DT>(W, at + i) : 0.0f;
    }
}

template <int DT, bool VEC>
__global__ void __launch_bounds__(LIN_WARPS * 32)
    k_linear(const float *__restrict__ x, int ldx, int M, const void *__restrict__ W, const float *__restrict__ bias,
             float *__restrict__ y, int ldy, int N, int K)
{
    pdl_trigger();
    const int lane = threadIdx.x & 31, n = blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    const int m0 = blockIdx.y * LIN_ROWS;
    if (n >= N)
        return; // the whole warp: no block-wide barrier below
    const int rows = M - m0 < LIN_ROWS ? M - m0 : LIN_ROWS;
    float acc[LIN_ROWS];
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++)
        acc[r] = 0.0f;
    const int nchunks = (K + 7) / 8;
    const size_t wrow = (size_t)n * K;
    for (int c = lane; c < nchunks; c += 32) {
        const int k0 = c * 8, kn = K - k0 < 8 ? K - k0 : 8;
        float w[8];
        lin_load_w<DT, VEC>(W, wrow + k0, kn, w);
#pragma unroll
        for (int r = 0; r < LIN_ROWS; r++) {
            if (r < rows) {
                const float *xr = x + (size_t)(m0 + r) * ldx + k0;
                float xv[8];
                if (VEC) {
                    const float4 a = *(const float4 *)xr, b = *(const float4 *)(xr + 4);
                    xv[0] = a.x, xv[1] = a.y, xv[2] = a.z, xv[3] = a.w;
                    xv[4] = b.x, xv[5] = b.y, xv[6] = b.z, xv[7] = b.w;
                } else {
#pragma unroll
                    for (int i = 0; i < 8; i++)
                        xv[i] = i < kn ? xr[i] : 0.0f;
                }
#pragma unroll
                for (int i = 0; i < 8; i++)
                    if (i < kn)
                        acc[r] = fmaf(xv[i], w[i], acc[r]);
            }
        }
    }
#pragma unroll
    for (int r = 0; r < LIN_ROWS; r++)
#pragma unroll
        for (int off = 16; off >= 1; off >>= 1)
            acc[r] = __fadd_rn(acc[r], __shfl_xor_sync(FULL_MASK, acc[r], off));
    if (lane == 0) {
        const float b = bias ? bias[n] : 0.0f;
#pragma unroll
        for (int r = 0; r < LIN_ROWS; r++)
            if (r < rows)
                y[(size_t)(m0 + r) * ldy + n] = bias ? __fadd_rn(acc[r], b) : acc[r];
    }
}

template <int DT>
static void linear_launch(cudaStream_t st, bool vec, const float *x, int ldx, int M, const void *W, const float *bias,
                          float *y, int ldy, int N, int K)
{
    dim3 grid((unsigned)((N + LIN_WARPS - 1) / LIN_WARPS), (unsigned)((M + LIN_ROWS - 1) / LIN_ROWS));
    if (vec)
        KLAUNCH((k_linear<DT, true>), grid, LIN_WARPS * 32, st, x, ldx, M, W, bias, y, ldy, N, K);
    else
        KLAUNCH((k_linear<DT, false>), grid, LIN_WARPS * 32, st, x, ldx, M, W, bias, y, ldy, N, K);
}

cudaError_t kc_linear(cudaStream_t st, const float *x, int ldx, int M, const void *W, kc_dtype dt, const float *bias,
                      float *y, int ldy, int N, int K)
{
    if (M <= 0 || N <= 0)
        return cudaSuccess;
    if ((M + LIN_ROWS - 1) / LIN_ROWS > 65535)
        return cudaErrorInvalidValue;
    // 16-byte loads: W rows and x rows start 16-byte aligned, whole chunks
    const bool vec = K % 8 == 0 && ldx % 4 == 0 && ((uintptr_t)x & 15u) == 0;
    switch (dt) {
    case KC_F32: linear_launch<KC_F32>(st, vec, x, ldx, M, W, bias, y, ldy, N, K); break;
    case KC_BF16: linear_launch<KC_BF16>(st, vec, x, ldx, M, W, bias, y, ldy, N, K); break;
    default: linear_launch<KC_F16>(st, vec, x, ldx, M, W, bias, y, ldy, N, K); break;
    }
    return cudaGetLastError();
}

// ---- linear on the tensor cores (bf16 and f16 weights) ----
//
// x is rounded to the weight's type (bf16 or f16, nearest even) and the
// products run as m16n8k16 mma with f32 accumulation. Every output element
// takes one fixed order, whatever the kernel, tile or row count: K in spans
// of 32 (the last one zero-padded), each span two mmas, the first taking the
// span's elements {8t .. 8t + 3} and the second {8t + 4 .. 8t + 7} of each
// quarter t (so a lane loads 8 consecutive elements of a row with one 16-byte
// load for both mmas, as A and B alike); spans in slices of TC_SLICE_SPANS,
// each slice's chain starting from zero; the slices' sums added in order
// (f32, nearest); the bias last. The mma's result for an element depends
// only on that element's row of x, column of W and accumulator, so a row's
// bits are the same alone or among any M rows, in the skinny kernel (M <=
// TC_SKINNY_ROWS: a warp a slice of 8 or 16 columns, W streamed once), the
// pipelined one (larger M: x rounded once, 128 x 128 tiles fed by cp.async)
// or the tiled one (128 x 64 or 128 x 128 tiles through shared memory).

#define TC_SPAN 32
#define TC_SLICE_SPANS 8
#define TC_SKINNY_ROWS 64

#ifdef PB_CUDA_EMU_RUNTIME_H
// the CPU stand-in: the warp's fragments exchanged, each lane computing its
// four elements as a chain of exact products (the tensor core's own
// accumulation differs; tests/backend/ops' bounds hold for both)
template <int DT> __device__ __forceinline__ float tc_elem(uint32_t pair, int hi)
{
    const uint16_t h = (uint16_t)(hi ? pair >> 16 : pair & 0xffffu);
    return DT == KC_BF16 ? bf16_f32(h) : f16_f32(h);
}

template <int DT> __device__ __forceinline__ void tc_mma(float d[4], const uint32_t a[4], const uint32_t b[2])
{
    unsigned mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]}, all[32 * 6];
    emu_warp_exchange(mine, 6, all);
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    float A[2][16], B[2][16];
    for (int src = 0; src < 32; src++) {
        const int sg = src >> 2, st = src & 3;
        const unsigned *f = all + src * 6;
        for (int h = 0; h < 2; h++) {
            if (sg == g) { // a0: row g, k 2st, 2st + 1; a1: row g + 8; a2, a3: k + 8
                A[0][2 * st + h] = tc_elem<DT>(f[0], h);
                A[1][2 * st + h] = tc_elem<DT>(f[1], h);
                A[0][2 * st + 8 + h] = tc_elem<DT>(f[2], h);
                A[1][2 * st + 8 + h] = tc_elem<DT>(f[3], h);
            }
            for (int c = 0; c < 2; c++)
                if (sg == 2 * t + c) { // b0: k 2st, 2st + 1 of column sg; b1: k + 8
                    B[c][2 * st + h] = tc_elem<DT>(f[4], h);
                    B[c][2 * st + 8 + h] = tc_elem<DT>(f[5], h);
                }
        }
    }
    for (int i = 0; i < 4; i++)
        for (int k = 0; k < 16; k++)
            d[i] = fmaf(A[i >> 1][k], B[i & 1][k], d[i]);
}
#else
template <int DT> __device__ __forceinline__ void tc_mma(float d[4], const uint32_t a[4], const uint32_t b[2])
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    if (DT == KC_BF16)
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
    else
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
                     "{%8, %9}, {%0, %1, %2, %3};"
                     : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
    (void)d, (void)a, (void)b;
    __trap(); // kc_linear_tc refuses devices below sm_80 before launching
#endif
}
#endif

// x rounded to DT's type, two elements a word (the lower k in the low half)
template <int DT> __device__ __forceinline__ uint32_t tc_pack(float lo, float hi)
{
    if (DT == KC_BF16)
        return (uint32_t)f32_bf16(lo) | (uint32_t)f32_bf16(hi) << 16;
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | (uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16;
}

// 8 consecutive elements of a row as 4 words
template <int DT> __device__ __forceinline__ uint4 tc_pack8(const float v[8])
{
    return make_uint4(tc_pack<DT>(v[0], v[1]), tc_pack<DT>(v[2], v[3]), tc_pack<DT>(v[4], v[5]),
                      tc_pack<DT>(v[6], v[7]));
}

// elements k0 .. k0 + 7 of x's row m as 4 words (zeros past M or K)
template <int DT, bool VEC>
__device__ __forceinline__ uint4 tc_load_x(const float *x, int ldx, int M, int K, int m, int k0)
{
    uint4 r = {0u, 0u, 0u, 0u};
    if (m >= M || k0 >= K)
        return r;
    const float *p = x + (size_t)m * ldx + k0;
    float v[8];
    if (VEC) {
        const float4 a = *(const float4 *)p, b = *(const float4 *)(p + 4);
        v[0] = a.x, v[1] = a.y, v[2] = a.z, v[3] = a.w, v[4] = b.x, v[5] = b.y, v[6] = b.z, v[7] = b.w;
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] = k0 + i < K ? p[i] : 0.0f;
    }
    return tc_pack8<DT>(v);
}

// elements k0 .. k0 + 7 of W's row n (16-bit elements; zeros past N or K)
template <bool VEC> __device__ __forceinline__ uint4 tc_load_w(const uint16_t *W, int N, int K, int n, int k0)
{
    uint4 r = {0u, 0u, 0u, 0u};
    if (n >= N || k0 >= K)
        return r;
    const uint16_t *p = W + (size_t)n * K + k0;
    if (VEC) {
        r = __ldg((const uint4 *)p); // weights: read-only for the kernel's life
    } else {
        uint32_t e[8];
#pragma unroll
        for (int i = 0; i < 8; i++)
            e[i] = k0 + i < K ? p[i] : 0u;
        r.x = e[0] | e[1] << 16;
        r.y = e[2] | e[3] << 16;
        r.z = e[4] | e[5] << 16;
        r.w = e[6] | e[7] << 16;
    }
    return r;
}

// elements k0 .. k0 + 7 of row m of the gated MLP's activation, glu_f of f32 rows gu [gate K | up K]
// (row stride ldgu), as 4 words rounded as tc_load_x rounds (zeros past M or K)
template <int DT, bool VEC>
__device__ __forceinline__ uint4 tc_load_glu(const float *gu, int ldgu, int M, int K, int m, int k0, int act)
{
    uint4 r = {0u, 0u, 0u, 0u};
    if (m >= M || k0 >= K)
        return r;
    const float *g = gu + (size_t)m * ldgu + k0, *u = g + K;
    float v[8];
    if (VEC) {
        const float4 ga = *(const float4 *)g, gb = *(const float4 *)(g + 4);
        const float4 ua = *(const float4 *)u, ub = *(const float4 *)(u + 4);
        v[0] = glu_f(act, ga.x, ua.x), v[1] = glu_f(act, ga.y, ua.y), v[2] = glu_f(act, ga.z, ua.z);
        v[3] = glu_f(act, ga.w, ua.w), v[4] = glu_f(act, gb.x, ub.x), v[5] = glu_f(act, gb.y, ub.y);
        v[6] = glu_f(act, gb.z, ub.z), v[7] = glu_f(act, gb.w, ub.w);
    } else {
#pragma unroll
        for (int i = 0; i < 8; i++)
            v[i] = k0 + i < K ? glu_f(act, g[i], u[i]) : 0.0f;
    }
    return tc_pack8<DT>(v);
}

// where the products' x comes from: f32 rows, rows rounded already (k_round_x: 16-bit elements, row stride
// ldx, zeros past K), or f32 rows gu whose gated activation (act) is x (glu_linear: tc_load_glu)
enum { XS_F32 = 0, XS_ROUNDED = 1, XS_GLU = 2 };

// elements k0 .. k0 + 7 of row m as 4 words, from source XS
template <int DT, bool VEC, int XS>
__device__ __forceinline__ uint4 tc_load_row(const void *x, int ldx, int M, int K, int m, int k0, int act)
{
    if (XS == XS_F32)
        return tc_load_x<DT, VEC>((const float *)x, ldx, M, K, m, k0);
    if (XS == XS_GLU)
        return tc_load_glu<DT, VEC>((const float *)x, ldx, M, K, m, k0, act);
    if (m >= M)
        return make_uint4(0u, 0u, 0u, 0u);
    return *(const uint4 *)((const uint16_t *)x + (size_t)m * ldx + k0);
}

// one span of a 16-row tile: xa rows g, xb rows g + 8; w column g
template <int DT> __device__ __forceinline__ void tc_span(float acc[4], uint4 xa, uint4 xb, uint4 w)
{
    const uint32_t a1[4] = {xa.x, xb.x, xa.y, xb.y}, b1[2] = {w.x, w.y};
    tc_mma<DT>(acc, a1, b1);
    const uint32_t a2[4] = {xa.z, xb.z, xa.w, xb.w}, b2[2] = {w.z, w.w};
    tc_mma<DT>(acc, a2, b2);
}

#define TCS_WARPS 8

// K's slices of TC_SLICE_SPANS spans (the skinny kernel's rounds take TCS_WARPS of them)
__host__ __device__ inline int tc_nslices(int K)
{
    return ((K + TC_SPAN - 1) / TC_SPAN + TC_SLICE_SPANS - 1) / TC_SLICE_SPANS;
}

// a warp's W slice s of a skinny block (zeros past the slices and past K's spans): all its loads issued at once
template <int NG, bool VEC>
__device__ __forceinline__ void tc_load_slice(uint4 w[NG][TC_SLICE_SPANS], const uint16_t *__restrict__ W, int N,
                                              int K, int n0, int s, int nslices, int nspans, int g, int t)
{
    const int sp0 = s * TC_SLICE_SPANS;
#pragma unroll
    for (int j = 0; j < TC_SLICE_SPANS; j++)
#pragma unroll
        for (int c = 0; c < NG; c++)
            w[c][j] = s < nslices && sp0 + j < nspans
                          ? tc_load_w<VEC>(W, N, K, n0 + 8 * c + g, (sp0 + j) * TC_SPAN + 8 * t)
                          : make_uint4(0u, 0u, 0u, 0u);
}

// Skinny: one block per 8 NG columns and 16 MT rows; its warps take the
// slices in rounds (warp w slice 8r + w), stream their W slice once (all of a
// slice's loads issued first: NG x 8 x 16 bytes a lane) and leave the slice's
// sums in shared memory, which the block adds in slice order after each round.
// PF (PB_CUDA_TC_PREFETCH=1: calls of more than one round; =2: those and calls
// of more groups than the device runs plain blocks at once):
// each warp issues its next unit's slice loads (the next round, or the first
// of the block's next column group) before this round's products and sums, so
// that the units' loads overlap instead of each waiting out a load's latency
// (twice the registers for W: its own instances); a PF block takes the column
// groups blockIdx.x, + gridDim.x, ... in turn (=2's grid: the blocks the
// device runs at once), the others one group. The same products and sums in
// the same order.
template <int DT, int MT, int NG, bool VEC, int XS, bool PF>
__global__ void __launch_bounds__(TCS_WARPS * 32)
    k_linear_tc_skinny(const void *__restrict__ x, int ldx, int M, const uint16_t *__restrict__ W,
                       const float *__restrict__ bias, float *__restrict__ y, int ldy, int N, int K, int act)
{
    constexpr int COLS = 8 * NG, ELEMS = MT * 16 * COLS, PER = (ELEMS + TCS_WARPS * 32 - 1) / (TCS_WARPS * 32);
    __shared__ float part[TCS_WARPS][ELEMS];
    pdl_trigger();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.y * 16 * MT, ncg = (N + COLS - 1) / COLS;
    const int nspans = (K + TC_SPAN - 1) / TC_SPAN, nslices = tc_nslices(K);
    if (nslices == 0)
        pdl_wait();
    uint4 w[NG][TC_SLICE_SPANS];
    if (PF)
        tc_load_slice<NG, VEC>(w, W, N, K, (int)blockIdx.x * COLS, warp, nslices, nspans, g, t);
    // column group cg (PF: w holds its first unit's slice, and on return the block's next group's)
    auto group = [&](const int cg) {
        const int n0 = cg * COLS;
        float tot[PER];
#pragma unroll
        for (int q = 0; q < PER; q++)
            tot[q] = 0.0f;
        for (int r0 = 0; r0 < nslices; r0 += TCS_WARPS) {
            const int s = r0 + warp;
            float acc[NG][MT][4];
#pragma unroll
            for (int c = 0; c < NG; c++)
#pragma unroll
                for (int i = 0; i < MT; i++)
                    acc[c][i][0] = acc[c][i][1] = acc[c][i][2] = acc[c][i][3] = 0.0f;
            const int sp0 = s * TC_SLICE_SPANS;
            const int nsp = nspans - sp0 < TC_SLICE_SPANS ? nspans - sp0 : TC_SLICE_SPANS;
            uint4 wn[NG][TC_SLICE_SPANS]; // PF: the next unit's slice (zeros past the block's last group)
            if (PF) {
                const bool last = r0 + TCS_WARPS >= nslices;
                tc_load_slice<NG, VEC>(wn, W, N, K, last ? n0 + (int)gridDim.x * COLS : n0,
                                       last ? warp : s + TCS_WARPS, nslices, nspans, g, t);
            } else {
                tc_load_slice<NG, VEC>(w, W, N, K, n0, s, nslices, nspans, g, t);
            }
            if (r0 == 0 && cg == (int)blockIdx.x)
                pdl_wait(); // x and y from here on (every thread), before the block's first group's products
            if (s < nslices) { // the whole warp
#pragma unroll
                for (int j = 0; j < TC_SLICE_SPANS; j++) {
                    if (j < nsp) {
                        const int k0 = (sp0 + j) * TC_SPAN + 8 * t;
#pragma unroll
                        for (int i = 0; i < MT; i++) {
                            const uint4 xa = tc_load_row<DT, VEC, XS>(x, ldx, M, K, m0 + 16 * i + g, k0, act);
                            const uint4 xb = tc_load_row<DT, VEC, XS>(x, ldx, M, K, m0 + 16 * i + g + 8, k0, act);
#pragma unroll
                            for (int c = 0; c < NG; c++)
                                tc_span<DT>(acc[c][i], xa, xb, w[c][j]);
                        }
                    }
                }
            }
            // element e of the block's tile: row e / COLS, column e % COLS
#pragma unroll
            for (int c = 0; c < NG; c++)
#pragma unroll
                for (int i = 0; i < MT; i++) {
                    float *p = part[warp] + (16 * i + g) * COLS + 8 * c + 2 * t;
                    p[0] = acc[c][i][0];
                    p[1] = acc[c][i][1];
                    p[8 * COLS] = acc[c][i][2];
                    p[8 * COLS + 1] = acc[c][i][3];
                }
            __syncthreads();
            const int ns = nslices - r0 < TCS_WARPS ? nslices - r0 : TCS_WARPS;
#pragma unroll
            for (int q = 0; q < PER; q++) {
                const int e = (int)threadIdx.x + q * TCS_WARPS * 32;
                if (e < ELEMS)
                    for (int w2 = 0; w2 < ns; w2++)
                        tot[q] = __fadd_rn(tot[q], part[w2][e]);
            }
            __syncthreads();
            if (PF) {
#pragma unroll
                for (int j = 0; j < TC_SLICE_SPANS; j++)
#pragma unroll
                    for (int c = 0; c < NG; c++)
                        w[c][j] = wn[c][j];
            }
        }
#pragma unroll
        for (int q = 0; q < PER; q++) {
            const int e = (int)threadIdx.x + q * TCS_WARPS * 32;
            const int m = m0 + e / COLS, n = n0 + e % COLS;
            if (e < ELEMS && m < M && n < N)
                y[(size_t)m * ldy + n] = bias ? __fadd_rn(tot[q], bias[n]) : tot[q];
        }
    };
    if (PF) {
        for (int cg = (int)blockIdx.x; cg < ncg; cg += (int)gridDim.x)
            group(cg);
    } else {
        group((int)blockIdx.x);
    }
}

// The tiled kernels' warp tile: MI x NJ mma tiles (16 x 8 each) at rows wm, columns wn of a stage
// (a span of each operand's rows, 16 words a row), one span's products added to acc
template <int DT, int MI, int NJ>
__device__ __forceinline__ void tc_warp_span(const uint32_t *xs, const uint32_t *ws, int wm, int wn, int g, int t,
                                             float acc[MI][NJ][4])
{
    uint4 fa[MI][2], fb[NJ];
#pragma unroll
    for (int i = 0; i < MI; i++) {
        fa[i][0] = *(const uint4 *)&xs[(wm + 16 * i + g) * 16 + 4 * t];
        fa[i][1] = *(const uint4 *)&xs[(wm + 16 * i + g + 8) * 16 + 4 * t];
    }
#pragma unroll
    for (int j = 0; j < NJ; j++)
        fb[j] = *(const uint4 *)&ws[(wn + 8 * j + g) * 16 + 4 * t];
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
            tc_span<DT>(acc[i][j], fa[i][0], fa[i][1], fb[j]);
}

// a slice's sums added to the running ones, in slice order; the next slice from zero
template <int MI, int NJ> __device__ __forceinline__ void tc_slice_add(float acc[MI][NJ][4], float tot[MI][NJ][4])
{
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                tot[i][j][e] = __fadd_rn(tot[i][j][e], acc[i][j][e]);
                acc[i][j][e] = 0.0f;
            }
}

// the warp tile's y (rows from m0, columns from n0), bias last
template <int MI, int NJ>
__device__ __forceinline__ void tc_warp_store(const float tot[MI][NJ][4], float *y, int ldy, const float *bias, int M,
                                              int N, int m0, int n0, int g, int t)
{
#pragma unroll
    for (int i = 0; i < MI; i++)
#pragma unroll
        for (int j = 0; j < NJ; j++)
#pragma unroll
            for (int e = 0; e < 4; e++) {
                const int m = m0 + 16 * i + g + (e >> 1) * 8, n = n0 + 8 * j + 2 * t + (e & 1);
                if (m < M && n < N)
                    y[(size_t)m * ldy + n] = bias ? __fadd_rn(tot[i][j][e], bias[n]) : tot[i][j][e];
            }
}

// Tiled: 128 x 32 WNW tiles of y per block of 4 x WNW warps (32 x 32 each),
// a span of x (rounded) and W through shared memory, double-buffered: the
// next span's global loads are issued before this span's mmas.
#define TCB_M 128

template <int DT, int WNW, bool VEC>
__global__ void __launch_bounds__(128 * WNW, 4 / WNW)
    k_linear_tc_tiled(const float *__restrict__ x, int ldx, int M, const uint16_t *__restrict__ W,
                      const float *__restrict__ bias, float *__restrict__ y, int ldy, int N, int K)
{
    pdl_trigger();
    // a span of a row: 32 elements, 64 bytes, 16 words (8 rows of 64 bytes
    // per quarter warp's 16-byte loads: no bank conflicts)
    constexpr int BN = 32 * WNW, NT = 128 * WNW, XC = TCB_M * 4 / NT; // x chunks a thread
    __shared__ __align__(16) uint32_t xs[2][TCB_M * 16];
    __shared__ __align__(16) uint32_t ws[2][BN * 16];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.y * TCB_M, n0 = blockIdx.x * BN;
    const int wm = (warp & 3) * 32, wn = (warp >> 2) * 32;
    const int nspans = (K + TC_SPAN - 1) / TC_SPAN;
    // loads: x chunks tid + NT h (row c / 4, quarter c % 4), W chunk tid
    uint4 lx[XC], lw;
    auto load = [&](int sp) {
        const int kb = sp * TC_SPAN;
#pragma unroll
        for (int h = 0; h < XC; h++) {
            const int c = tid + NT * h;
            lx[h] = tc_load_x<DT, VEC>(x, ldx, M, K, m0 + (c >> 2), kb + 8 * (c & 3));
        }
        lw = tc_load_w<VEC>(W, N, K, n0 + (tid >> 2), kb + 8 * (tid & 3));
    };
    auto store = [&](int b) {
#pragma unroll
        for (int h = 0; h < XC; h++)
            *(uint4 *)&xs[b][(tid + NT * h) * 4] = lx[h];
        *(uint4 *)&ws[b][tid * 4] = lw;
    };
    float acc[2][4][4] = {}, tot[2][4][4] = {};
    load(0);
    store(0);
    __syncthreads();
    for (int sp = 0; sp < nspans; sp++) {
        const int b = sp & 1;
        if (sp + 1 < nspans)
            load(sp + 1);
        tc_warp_span<DT, 2, 4>(xs[b], ws[b], wm, wn, g, t, acc);
        if ((sp + 1) % TC_SLICE_SPANS == 0 || sp + 1 == nspans)
            tc_slice_add<2, 4>(acc, tot);
        if (sp + 1 < nspans)
            store(b ^ 1);
        __syncthreads();
    }
    tc_warp_store<2, 4>(tot, y, ldy, bias, M, N, m0 + wm, n0 + wn, g, t);
}

// ---- pipelined: x rounded once, cp.async stages ----
//
// x rounded to W's type by k_round_x (tc_load_x's words, row stride ldb: the
// spans rounded up, zeros past K); then 128 x 128 tiles of y per block of 8
// warps (2 x 4, 64 x 32 each), a span of both operands a stage copied by
// cp.async into a ring of stages (3 or 6), the mmas on the stage before. Each
// element's mmas and slice adds are the other kernels' (tc_span over the
// same words), so its bits are theirs. Taken for more rows than the skinny
// kernel's (unless PB_CUDA_TC_PIPE=0) where x and W rows are 16-byte aligned
// and the backend gave scratch for the rounded rows (kc_linear_tc_scratch).
#define TCP_BM 128
#define TCP_BN 128
#define TCP_STAGE_WORDS ((TCP_BM + TCP_BN) * 16) // a stage's 32-bit words: a span of both operands (16 KB)
#define TCP_ROWS 4096 // rows a conversion + product round takes at most (the scratch's size)

// 16 bytes global -> shared without the registers, zeros where !valid
__device__ __forceinline__ void cp_async16(void *smem, const void *gmem, bool valid)
{
#ifdef PB_CUDA_EMU_RUNTIME_H
    if (valid)
        memcpy(smem, gmem, 16);
    else
        memset(smem, 0, 16);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned s = (unsigned)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(valid ? 16 : 0));
#else
    (void)smem, (void)gmem, (void)valid;
    __trap(); // kc_linear_tc refuses devices below sm_80 before launching
#endif
}

__device__ __forceinline__ void cp_async_commit()
{
#if !defined(PB_CUDA_EMU_RUNTIME_H) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

// until at most N of this thread's groups are in flight (the stand-in's copies are done at once)
template <int N> __device__ __forceinline__ void cp_async_wait()
{
#if !defined(PB_CUDA_EMU_RUNTIME_H) && defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
#endif
}

// xb[m, 0:ldb] = x[m, 0:K] rounded to DT's type as tc_load_x rounds it, zeros past K (K % 8 == 0); where
// GLU x[m] is the gated activation of the f32 row [gate K | up K] at x + m ldx (tc_load_glu's words)
template <int DT, bool GLU>
__global__ void k_round_x(const float *__restrict__ x, int ldx, int M, int K, int act, uint16_t *xb, int ldb)
{
    pdl_trigger();
    const int per = ldb / 8;
    const size_t total = (size_t)M * per;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
        const int m = (int)(i / per), c = (int)(i % per);
        *(uint4 *)(xb + (size_t)m * ldb + 8 * c) =
            GLU ? tc_load_glu<DT, true>(x, ldx, M, K, m, 8 * c, act) : tc_load_x<DT, true>(x, ldx, M, K, m, 8 * c);
    }
}

// k_round_x of M rows (act >= 0: of their gated activation) into xb (row stride ldb)
template <int DT>
static void round_launch(cudaStream_t st, const float *x, int ldx, int M, int K, int act, uint16_t *xb, int ldb)
{
    const int blocks = blocks_for((size_t)M * (ldb / 8), 256);
    if (act >= 0)
        KLAUNCH((k_round_x<DT, true>), blocks, 256, st, x, ldx, M, K, act, xb, ldb);
    else
        KLAUNCH((k_round_x<DT, false>), blocks, 256, st, x, ldx, M, K, act, xb, ldb);
}

// ST stages in the ring of SPS spans each (dynamic shared memory, ST x SPS x 16 KB: PB_CUDA_TC_STAGES,
// PB_CUDA_TC_SPANS): a barrier a stage, its spans' mmas in order
template <int DT, int ST, int SPS>
__global__ void __launch_bounds__(256, 1)
    k_linear_tc_pipe(const uint16_t *__restrict__ xb, int ldb, int M, const uint16_t *__restrict__ W,
                     const float *__restrict__ bias, float *__restrict__ y, int ldy, int N, int K)
{
    pdl_trigger();
    // a span's words: 128 rows of x's, then 128 of W's (64 bytes a row, as k_linear_tc_tiled's); stage b's
    // span u at (b SPS + u) TCP_STAGE_WORDS
#ifdef PB_CUDA_EMU_RUNTIME_H
    __shared__ __align__(16) uint32_t smem[ST * SPS * TCP_STAGE_WORDS];
#else
    extern __shared__ __align__(16) uint32_t smem[];
#endif
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, g = lane >> 2, t = lane & 3;
    const int m0 = blockIdx.y * TCP_BM, n0 = blockIdx.x * TCP_BN;
    const int wm = (warp & 1) * 64, wn = (warp >> 1) * 32;
    const int nspans = (K + TC_SPAN - 1) / TC_SPAN, nstages = (nspans + SPS - 1) / SPS;
    // chunk c = tid + 256 h of a span: row c / 4, quarter c % 4; one group a stage (empty past the last span)
    auto load = [&](int q) {
#pragma unroll
        for (int u = 0; u < SPS; u++) {
            const int sp = q * SPS + u;
            if (sp < nspans) {
                uint32_t *xs = smem + (size_t)((q % ST) * SPS + u) * TCP_STAGE_WORDS, *ws = xs + TCP_BM * 16;
                const int kb = sp * TC_SPAN;
#pragma unroll
                for (int h = 0; h < 2; h++) {
                    const int c = tid + 256 * h, r = c >> 2, k = kb + 8 * (c & 3);
                    const bool okx = m0 + r < M, okw = n0 + r < N && k < K;
                    cp_async16(&xs[c * 4], okx ? xb + (size_t)(m0 + r) * ldb + k : xb, okx);
                    cp_async16(&ws[c * 4], okw ? W + (size_t)(n0 + r) * K + k : W, okw);
                }
            }
        }
        cp_async_commit();
    };
    float acc[4][4][4] = {}, tot[4][4][4] = {};
#pragma unroll
    for (int q = 0; q < ST - 1; q++)
        load(q);
    for (int q = 0; q < nstages; q++) {
        cp_async_wait<ST - 2>(); // this thread's copies of stage q landed
        __syncthreads();         // everyone's; and the stage q - 1 read is free
        load(q + ST - 1);
#pragma unroll
        for (int u = 0; u < SPS; u++) {
            const int sp = q * SPS + u;
            if (sp < nspans) {
                const uint32_t *xs = smem + (size_t)((q % ST) * SPS + u) * TCP_STAGE_WORDS;
                tc_warp_span<DT, 4, 4>(xs, xs + TCP_BM * 16, wm, wn, g, t, acc);
                if ((sp + 1) % TC_SLICE_SPANS == 0 || sp + 1 == nspans)
                    tc_slice_add<4, 4>(acc, tot);
            }
        }
    }
    cp_async_wait<0>();
    tc_warp_store<4, 4>(tot, y, ldy, bias, M, N, m0 + wm, n0 + wn, g, t);
}

// the rounded rows' stride: whole spans
static int tcp_ldb(int K) { return (K + TC_SPAN - 1) / TC_SPAN * TC_SPAN; }

// the pipelined kernel for more rows than the skinny kernel takes (default; PB_CUDA_TC_PIPE=0: the tiled one).
// On an H100 (session 40) it ran at 84-100 TFLOP/s at 512 rows and 161-182 at 4096, the tiled one at 50-81 and 85-102.
static bool tcp_on(void)
{
    static const int on = kc_env_int("PB_CUDA_TC_PIPE", 1, 0, 1);
    return on != 0;
}

// the skinny kernel launched to overlap the kernel before it (PB_CUDA_PDL=1; off: on an H100 no gain
// beyond the noise, session 40)
static bool pdl_on(void)
{
    static const int on = kc_env_int("PB_CUDA_PDL", 0, 0, 1);
    return on != 0;
}

// the skinny kernel's 17-64 rows rounded once first (default; PB_CUDA_TC_XB=0 reads f32 x in every block).
// On an H100 (session 40) 64 rows took 0.44-0.55 of the time without it.
static bool tcx_on(void)
{
    static const int on = kc_env_int("PB_CUDA_TC_XB", 1, 0, 1);
    return on != 0;
}

// rows a round takes at most: TCP_ROWS, or fewer (PB_CUDA_TC_PIPE_ROWS, whole tiles) for the tests
static int tcp_rows(void)
{
    static const int rows = kc_env_int("PB_CUDA_TC_PIPE_ROWS", TCP_ROWS, TCP_BM, TCP_ROWS) / TCP_BM * TCP_BM;
    return rows;
}

// PB_CUDA_GLU_LOAD=1: glu_linear's activation computed in the skinny kernel's loads of x (up to 16 rows, or
// more where PB_CUDA_TC_XB=0), one launch a gated MLP fewer than k_glu's, but each of its blocks computes all
// of x's activations, and at one row only the 4 lanes of the row's fragment do, a chain of 8 glu_f a span
// that may outlast the weight loads (the down product's 3 rounds of slices at 1.1B): off (k_glu first) until
// a GPU measures it (lease.sh's batch-1 runs). Above 16 rows the activation is taken where x is rounded
// (k_round_x) in any case.
static bool glu_load_on(void)
{
    static const int on = kc_env_int("PB_CUDA_GLU_LOAD", 0, 0, 1);
    return on != 0;
}

// the most rows the skinny kernel takes (PB_CUDA_TC_SKINNY)
static int skinny_rows(void)
{
    static const int rows = kc_env_int("PB_CUDA_TC_SKINNY", TC_SKINNY_ROWS, 0, TC_SKINNY_ROWS);
    return rows;
}

size_t kc_linear_tc_scratch(int M, int K)
{
    if (K <= 0 || K % 8)
        return 0;
    if (M <= skinny_rows())
        return tcx_on() && M > 16 ? (size_t)M * (size_t)tcp_ldb(K) * sizeof(uint16_t) : 0;
    if (!tcp_on())
        return 0;
    const int rows = M < tcp_rows() ? M : tcp_rows();
    return (size_t)rows * (size_t)tcp_ldb(K) * sizeof(uint16_t);
}

// the most kc_linear_tc_scratch asks for a call of at most max_M rows and at most K columns: the skinny
// kernel's at its most rows, or the pipelined kernel's (K rounded up to the 8 it takes; the rows grow it)
size_t kc_linear_tc_scratch_max(int max_M, int K)
{
    if (max_M <= 0 || K <= 0)
        return 0;
    const int k8 = (K + 7) / 8 * 8, skinny = max_M < skinny_rows() ? max_M : skinny_rows();
    const size_t a = kc_linear_tc_scratch(skinny, k8), b = kc_linear_tc_scratch(max_M, k8);
    return a > b ? a : b;
}

// the pipelined kernel's ring: PB_CUDA_TC_STAGES=3 (48 KB of shared memory, session 40's) or 6 (96 KB, the
// default: spans of 32 k are loaded 5 ahead instead of 2, where a 128 x 128 tile's span took ~0.8 us, about a
// load's latency, whatever the rows), of PB_CUDA_TC_SPANS=1 (the default) or 2 spans a stage (a barrier for
// two spans' mmas; twice the memory); 3 stages of 1 where the device refuses the memory. Not yet measured on
// a GPU.
typedef void (*pipe_kern)(const uint16_t *, int, int, const uint16_t *, const float *, float *, int, int, int);
template <int DT> static pipe_kern pipe_kernel(int *smem)
{
    static const int want_st = kc_env_int("PB_CUDA_TC_STAGES", 6, 3, 6) >= 6 ? 6 : 3;
    static const int want_sps = kc_env_int("PB_CUDA_TC_SPANS", 1, 1, 2);
    const pipe_kern k = want_st == 6 ? (want_sps == 2 ? k_linear_tc_pipe<DT, 6, 2> : k_linear_tc_pipe<DT, 6, 1>)
                                     : (want_sps == 2 ? k_linear_tc_pipe<DT, 3, 2> : k_linear_tc_pipe<DT, 3, 1>);
    const int bytes = want_st * want_sps * TCP_STAGE_WORDS * 4;
    static int got[64]; // 1: this device takes the wanted ring, -1: it refused (0: not asked yet)
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64)
        dev = 0;
    if (!got[dev]) {
        got[dev] = bytes <= 48 * 1024 ||
                           cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes) == cudaSuccess
                       ? 1
                       : -1;
        (void)cudaGetLastError(); // a refusal is not the product's error
    }
    if (got[dev] < 0) {
        *smem = 3 * TCP_STAGE_WORDS * 4;
        return k_linear_tc_pipe<DT, 3, 1>;
    }
    *smem = bytes;
    return k;
}

// the product in rounds of the rows the scratch holds: each a conversion (of the gated activation where
// act >= 0), then the tiles
template <int DT>
static cudaError_t pipe_launch(cudaStream_t st, const float *x, int ldx, int M, const uint16_t *W, const float *bias,
                               float *y, int ldy, int N, int K, uint16_t *xb, size_t xb_bytes, int act)
{
    const int ldb = tcp_ldb(K);
    const size_t row_bytes = (size_t)ldb * sizeof(uint16_t);
    const int rows = (int)(xb_bytes / row_bytes < (size_t)tcp_rows() ? xb_bytes / row_bytes : (size_t)tcp_rows());
    for (int r0 = 0; r0 < M; r0 += rows) {
        const int m = M - r0 < rows ? M - r0 : rows;
        round_launch<DT>(st, x + (size_t)r0 * ldx, ldx, m, K, act, xb, ldb);
        const dim3 grid((unsigned)((N + TCP_BN - 1) / TCP_BN), (unsigned)((m + TCP_BM - 1) / TCP_BM));
        int smem = 0;
        const pipe_kern kern = pipe_kernel<DT>(&smem);
        KLAUNCH_SMEM(kern, grid, 256, smem, st, xb, ldb, m, W, bias, y + (size_t)r0 * ldy, ldy, N, K);
    }
    return cudaGetLastError();
}

// PB_CUDA_TC_COLS=8|16 (columns a warp of the skinny kernel streams; default 16), PB_CUDA_TC_SKINNY=ROWS (the
// most rows it takes, 0..64; default 64) and PB_CUDA_TC_TILE=64|128 (the tiled kernel's columns a block; default
// 128): kernel choices for contrib/gpu's benchmarks; every choice gives the same bits. The defaults are the
// faster shapes on an H100 (session 40's tests/backend/linbench).
int kc_env_int(const char *name, int dflt, int lo, int hi)
{
    const char *v = getenv(name);
    const int n = v && *v ? atoi(v) : dflt;
    return n < lo ? lo : n > hi ? hi : n;
}

// PB_CUDA_TC_PREFETCH=1: a call of more than one round of slices (K above TCS_WARPS x 256: TinyLlama's down
// product, every product of a 7B) takes the skinny kernel's form that loads the next round's slices before
// this round's products. =2: so too, and a call of more column groups than the device runs blocks of the
// plain form at once (which would run in waves: the 1.1B's gate|up product, 704 groups) takes that form in a
// grid of the blocks the device runs at once (its multiprocessors times the form's blocks on each), each
// block its column groups in turn, the next group's first slices loaded before the last round of this one:
// no block waits out a load's latency at its start, and none sits idle in a last partial wave. Off until a
// GPU measures it (lease.sh's batch-1 runs and linbench).
static int tc_prefetch_mode(void)
{
    static const int mode = kc_env_int("PB_CUDA_TC_PREFETCH", 0, 0, 2);
    return mode;
}

typedef void (*skinny_kern)(const void *, int, int, const uint16_t *, const float *, float *, int, int, int, int);

// the blocks of kern the device runs at once (at least 1; UINT_MAX, no bound, where the device does not say)
static unsigned resident_blocks(skinny_kern kern)
{
    int dev = 0, sms = 0, per = 0;
    if (cudaGetDevice(&dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess ||
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, kern, TCS_WARPS * 32, 0) != cudaSuccess || sms < 1 ||
        per < 1) {
        (void)cudaGetLastError(); // not sticky: clear it for the launch's check
        return UINT_MAX;
    }
    return (unsigned)sms * (unsigned)per;
}

// x from source XS (ldx its row stride; act: XS_GLU's activation)
template <int DT, int NG, bool VEC, int XS>
static void skinny_launch(cudaStream_t st, const void *x, int ldx, int M, const uint16_t *W, const float *bias,
                          float *y, int ldy, int N, int K, int act)
{
    const unsigned groups = (unsigned)((N + 8 * NG - 1) / (8 * NG));
    const int mode = tc_prefetch_mode();
    bool pf = mode >= 1 && tc_nslices(K) > TCS_WARPS;
    const int mi = M <= 16 ? 0 : M <= 32 ? 1 : 2;
    static const skinny_kern kerns[2][3] = {
        {k_linear_tc_skinny<DT, 1, NG, VEC, XS, false>, k_linear_tc_skinny<DT, 2, NG, VEC, XS, false>,
         k_linear_tc_skinny<DT, 4, NG, VEC, XS, false>},
        {k_linear_tc_skinny<DT, 1, NG, VEC, XS, true>, k_linear_tc_skinny<DT, 2, NG, VEC, XS, true>,
         k_linear_tc_skinny<DT, 4, NG, VEC, XS, true>}};
    unsigned gx = groups;
    if (mode == 2) {
        static unsigned resident[2][3]; // by form (plain, PF) and rows; 0: not asked yet (a process, one device)
        if (!resident[0][mi])
            resident[0][mi] = resident_blocks(kerns[0][mi]);
        if (groups > resident[0][mi]) {
            if (!resident[1][mi])
                resident[1][mi] = resident_blocks(kerns[1][mi]);
            pf = true;
            gx = resident[1][mi] < groups ? resident[1][mi] : groups;
        }
    }
    const skinny_kern kern = kerns[pf][mi];
    const dim3 grid(gx, 1u);
    if (pdl_on())
        KLAUNCH_PDL(kern, grid, TCS_WARPS * 32, st, x, ldx, M, W, bias, y, ldy, N, K, act);
    else
        KLAUNCH(kern, grid, TCS_WARPS * 32, st, x, ldx, M, W, bias, y, ldy, N, K, act);
}

// x: f32 rows, or where act >= 0 (VEC only) f32 rows [gate K | up K] whose gated activation is x (ldx their
// stride); cudaErrorNotSupported, nothing launched, where the activation has no kernel to go into (the
// tiled kernel's calls: more rows than the skinny kernel takes, no scratch or PB_CUDA_TC_PIPE=0)
template <int DT, bool VEC>
static cudaError_t linear_tc_launch(cudaStream_t st, const float *x, int ldx, int M, const uint16_t *W,
                                    const float *bias, float *y, int ldy, int N, int K, void *xb, size_t xb_bytes,
                                    int act)
{
    static const int ng = kc_env_int("PB_CUDA_TC_COLS", 16, 8, 16) / 8;
    if (M <= skinny_rows()) {
        // 17 or more rows: each block reads all of x (from L2), so where PB_CUDA_TC_XB=1 x is rounded
        // once into xb first, half the bytes a block reads
        if (VEC && M > 16 && tcx_on() && xb && xb_bytes >= (size_t)M * (size_t)tcp_ldb(K) * sizeof(uint16_t)) {
            const int ldb = tcp_ldb(K);
            round_launch<DT>(st, x, ldx, M, K, act, (uint16_t *)xb, ldb);
            if (ng == 2)
                skinny_launch<DT, 2, true, XS_ROUNDED>(st, xb, ldb, M, W, bias, y, ldy, N, K, -1);
            else
                skinny_launch<DT, 1, true, XS_ROUNDED>(st, xb, ldb, M, W, bias, y, ldy, N, K, -1);
        } else if (act >= 0) {
            if (!glu_load_on())
                return cudaErrorNotSupported;
            if constexpr (VEC) { // (the caller's condition: no kernel for the scalar loads' activation)
                if (ng == 2)
                    skinny_launch<DT, 2, true, XS_GLU>(st, x, ldx, M, W, bias, y, ldy, N, K, act);
                else
                    skinny_launch<DT, 1, true, XS_GLU>(st, x, ldx, M, W, bias, y, ldy, N, K, act);
            } else {
                return cudaErrorNotSupported;
            }
        } else if (ng == 2) {
            skinny_launch<DT, 2, VEC, XS_F32>(st, x, ldx, M, W, bias, y, ldy, N, K, -1);
        } else {
            skinny_launch<DT, 1, VEC, XS_F32>(st, x, ldx, M, W, bias, y, ldy, N, K, -1);
        }
        return cudaSuccess;
    }
    if (VEC && tcp_on() && xb && xb_bytes >= (size_t)TCP_BM * (size_t)tcp_ldb(K) * sizeof(uint16_t))
        return pipe_launch<DT>(st, x, ldx, M, W, bias, y, ldy, N, K, (uint16_t *)xb, xb_bytes, act);
    if (act >= 0)
        return cudaErrorNotSupported;
    static const int bn = kc_env_int("PB_CUDA_TC_TILE", 128, 64, 128);
    const dim3 grid((unsigned)((N + bn - 1) / bn), (unsigned)((M + TCB_M - 1) / TCB_M));
    if (bn == 128)
        KLAUNCH((k_linear_tc_tiled<DT, 4, VEC>), grid, 512, st, x, ldx, M, W, bias, y, ldy, N, K);
    else
        KLAUNCH((k_linear_tc_tiled<DT, 2, VEC>), grid, 256, st, x, ldx, M, W, bias, y, ldy, N, K);
    return cudaSuccess;
}

// the 16-byte loads' condition: W rows (K % 8) and x rows start 16-byte aligned
static bool tc_vec(const float *x, int ldx, const void *W, int K)
{
    return K % 8 == 0 && ldx % 4 == 0 && ((uintptr_t)x & 15u) == 0 && ((uintptr_t)W & 15u) == 0;
}

cudaError_t kc_linear_tc(cudaStream_t st, const float *x, int ldx, int M, const void *W, kc_dtype dt,
                         const float *bias, float *y, int ldy, int N, int K, void *xb, size_t xb_bytes)
{
    if (M <= 0 || N <= 0)
        return cudaSuccess;
    if (dt == KC_F32 || (M + TCB_M - 1) / TCB_M > 65535 || (N + 7) / 8 > 0x7fffffff / 2)
        return cudaErrorInvalidValue;
    const bool vec = tc_vec(x, ldx, W, K);
    const uint16_t *w = (const uint16_t *)W;
    cudaError_t e;
    if (dt == KC_BF16)
        e = vec ? linear_tc_launch<KC_BF16, true>(st, x, ldx, M, w, bias, y, ldy, N, K, xb, xb_bytes, -1)
                : linear_tc_launch<KC_BF16, false>(st, x, ldx, M, w, bias, y, ldy, N, K, xb, xb_bytes, -1);
    else
        e = vec ? linear_tc_launch<KC_F16, true>(st, x, ldx, M, w, bias, y, ldy, N, K, xb, xb_bytes, -1)
                : linear_tc_launch<KC_F16, false>(st, x, ldx, M, w, bias, y, ldy, N, K, xb, xb_bytes, -1);
    return e != cudaSuccess ? e : cudaGetLastError();
}

cudaError_t kc_linear_tc_glu(cudaStream_t st, int act, const float *gu, int ldgu, int M, const void *W, kc_dtype dt,
                             const float *bias, float *y, int ldy, int N, int K, void *xb, size_t xb_bytes)
{
    if (M <= 0 || N <= 0)
        return cudaSuccess;
    if (dt == KC_F32 || (M + TCB_M - 1) / TCB_M > 65535 || (N + 7) / 8 > 0x7fffffff / 2 || act < 0 ||
        ldgu < 2 * K)
        return cudaErrorInvalidValue;
    if (!tc_vec(gu, ldgu, W, K))
        return cudaErrorNotSupported;
    const uint16_t *w = (const uint16_t *)W;
    const cudaError_t e =
        dt == KC_BF16 ? linear_tc_launch<KC_BF16, true>(st, gu, ldgu, M, w, bias, y, ldy, N, K, xb, xb_bytes, act)
                      : linear_tc_launch<KC_F16, true>(st, gu, ldgu, M, w, bias, y, ldy, N, K, xb, xb_bytes, act);
    return e != cudaSuccess ? e : cudaGetLastError();
}

// ---- greedy picks ----

#define ARGMAX_THREADS 256

// one block a row: each thread the first of its elements' largest (strided,
// so the first index among equals), NaN and masked ids never; then thread 0
// takes the threads' in order, the lower index among equals: the row's first
// largest, as the host sampler's greedy pick; 0 when none is above -inf
__global__ void __launch_bounds__(ARGMAX_THREADS)
    k_argmax(const float *x, int n, int ld, const int32_t *mask_ids, int n_mask, const uint8_t *mask_rows, int32_t *ids)
{
    pdl_trigger();
    __shared__ float bv[ARGMAX_THREADS];
    __shared__ int bi[ARGMAX_THREADS];
    const int r = blockIdx.x;
    const float *l = x + (size_t)r * (size_t)ld;
    const bool masked = mask_rows && mask_rows[r];
    float best = -INFINITY;
    int at = -1;
    for (int i = threadIdx.x; i < n; i += ARGMAX_THREADS) {
        const float v = l[i];
        if (v > best) {
            bool skip = false;
            for (int e = 0; masked && e < n_mask && !skip; e++)
                skip = mask_ids[e] == i;
            if (!skip) {
                best = v;
                at = i;
            }
        }
    }
    bv[threadIdx.x] = best;
    bi[threadIdx.x] = at;
    __syncthreads();
    if (threadIdx.x == 0) {
        float b = -INFINITY;
        int a = -1;
        for (int t = 0; t < ARGMAX_THREADS; t++)
            if (bi[t] >= 0 && (bv[t] > b || (bv[t] == b && (a < 0 || bi[t] < a)))) {
                b = bv[t];
                a = bi[t];
            }
        ids[r] = a < 0 ? 0 : a;
    }
}

cudaError_t kc_argmax(cudaStream_t st, const float *x, int rows, int n, int ld, const int32_t *mask_ids, int n_mask,
                      const uint8_t *mask_rows, int32_t *ids)
{
    if (rows <= 0)
        return cudaSuccess;
    KLAUNCH((k_argmax), rows, ARGMAX_THREADS, st, x, n, ld, mask_ids, n_mask, mask_rows, ids);
    return cudaGetLastError();
}

// ---- sampled picks: src/gen/sample.c on the device ----
//
// One block a row. The steps are the host sampler's (prepare, top_p, draw)
// with each element's operations written out (__f*_rn: no contraction into
// fmas) and every sum in double in the host's order, so a row draws the
// same id as pb_sample() on the same logits: the scaled logits, the
// repetition penalty over the history in turn, top-k's k-th largest (a
// radix select over the floats' order keys: the same value) and its
// candidates in id order, the weights by pb_sample_exp's steps, top-p's
// block sums and bit histograms, min-p, and the draw. The parallel steps
// are element-wise, counts, a max and order-keeping compactions; the sums
// whose order fixes the bits (the blocks' total, top-p's histograms, the
// draw's walk) run in one thread as the host's loops do.

#define SAMPLE_THREADS 256
#define SAMPLE_BLOCK 64  // PB_SAMPLE_BLOCK
#define SAMPLE_HIST_W 2048

__host__ __device__ static inline size_t sample_round(size_t b) { return (b + 255) & ~(size_t)255; }

size_t kc_sample_work_bytes(int n)
{
    const size_t v = n > 0 ? (size_t)n : 1, nb = (v + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
    return sample_round(nb * sizeof(double)) + 4 * SAMPLE_HIST_W * sizeof(double) + 5 * sample_round(v * 4);
}

struct sample_work {
    double *blk, *hist;
    float *w, *e, *lv;
    int32_t *ids, *pos;
};

__device__ static sample_work sample_work_at(unsigned char *p, int n)
{
    const size_t v = n > 0 ? (size_t)n : 1, nb = (v + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK, a = sample_round(v * 4);
    sample_work wk;
    wk.blk = (double *)(void *)p;
    p += sample_round(nb * sizeof(double));
    wk.hist = (double *)(void *)p;
    p += 4 * SAMPLE_HIST_W * sizeof(double);
    wk.w = (float *)(void *)p;
    wk.e = (float *)(void *)(p + a);
    wk.lv = (float *)(void *)(p + 2 * a);
    wk.ids = (int32_t *)(void *)(p + 3 * a);
    wk.pos = (int32_t *)(void *)(p + 4 * a);
    return wk;
}

// pb_sample_exp's steps, each rounded
__device__ static float sample_exp(float x)
{
    if (!(x >= -86.5f))
        return 0.0f;
    const float rnd = 12582912.0f;
    const float n = __fsub_rn(__fadd_rn(__fmul_rn(x, 1.44269504088896341f), rnd), rnd);
    float r = __fsub_rn(x, __fmul_rn(n, 0.693359375f));
    r = __fsub_rn(r, __fmul_rn(n, -2.12194440e-4f));
    float p = 1.9875691500e-4f;
    p = __fadd_rn(__fmul_rn(p, r), 1.3981999507e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 8.3334519073e-3f);
    p = __fadd_rn(__fmul_rn(p, r), 4.1665795894e-2f);
    p = __fadd_rn(__fmul_rn(p, r), 1.6666665459e-1f);
    p = __fadd_rn(__fmul_rn(p, r), 5.0000001201e-1f);
    const float y = __fadd_rn(__fadd_rn(__fmul_rn(p, __fmul_rn(r, r)), r), 1.0f);
    return __fmul_rn(y, __uint_as_float((unsigned)((int)n + 127) << 23));
}

// pb_rng_uniform: Philox4x32-10, 53 bits
__device__ static double sample_uniform(const kc_sample_row &P)
{
    unsigned c0 = P.ctr[0], c1 = P.ctr[1], c2 = P.ctr[2], c3 = P.ctr[3], k0 = P.key[0], k1 = P.key[1];
    for (int round = 0; round < 10; round++) {
        const unsigned long long p0 = (unsigned long long)0xD2511F53u * c0, p1 = (unsigned long long)0xCD9E8D57u * c2;
        const unsigned hi0 = (unsigned)(p0 >> 32), lo0 = (unsigned)p0, hi1 = (unsigned)(p1 >> 32), lo1 = (unsigned)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    const unsigned long long bits = ((unsigned long long)c0 << 21) ^ (unsigned long long)(c1 >> 11);
    return (double)bits * (1.0 / 9007199254740992.0);
}

// a float's order key: larger floats, larger keys (no NaN)
__device__ static unsigned sample_key(float f)
{
    const unsigned b = __float_as_uint(f);
    return b & 0x80000000u ? ~b : b | 0x80000000u;
}

__device__ static float sample_unkey(unsigned k) { return __uint_as_float(k & 0x80000000u ? k & 0x7fffffffu : ~k); }

// the block's sum of v (every thread's; integers: any order)
__device__ static int sample_sum(int v, int *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = SAMPLE_THREADS / 2; s > 0; s /= 2) {
        if ((int)threadIdx.x < s)
            sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    const int t = sh[0];
    __syncthreads();
    return t;
}

// the block's largest of v (no NaN)
__device__ static float sample_max(float v, float *sh)
{
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = SAMPLE_THREADS / 2; s > 0; s /= 2) {
        if ((int)threadIdx.x < s && sh[threadIdx.x + s] > sh[threadIdx.x])
            sh[threadIdx.x] = sh[threadIdx.x + s];
        __syncthreads();
    }
    const float m = sh[0];
    __syncthreads();
    return m;
}

// out[0..k) = the i in [0, n) where keep(i), ascending (each thread a run of
// i: its count, the runs' offsets, then its writes); returns k
template <class F> __device__ static int sample_compact(int n, F keep, int32_t *out, int *sh)
{
    const int per = (n + SAMPLE_THREADS - 1) / SAMPLE_THREADS, i0 = (int)threadIdx.x * per;
    const int i1 = i0 + per < n ? i0 + per : n;
    int c = 0;
    for (int i = i0; i < i1; i++)
        c += keep(i);
    sh[threadIdx.x] = c;
    __syncthreads();
    if (threadIdx.x == 0) {
        int acc = 0;
        for (int t = 0; t < SAMPLE_THREADS; t++) {
            const int v = sh[t];
            sh[t] = acc;
            acc += v;
        }
        sh[SAMPLE_THREADS] = acc;
    }
    __syncthreads();
    int at = sh[threadIdx.x];
    for (int i = i0; i < i1; i++)
        if (keep(i))
            out[at++] = i;
    const int k = sh[SAMPLE_THREADS];
    __syncthreads();
    return k;
}

// blk[b] = block b's sum (pb_svec.blocks: lanes i mod 8 in turn, then pairs), a thread a block
__device__ static void sample_blocks(const float *e, int n, double *blk)
{
    for (int b = threadIdx.x; b * SAMPLE_BLOCK < n; b += SAMPLE_THREADS) {
        const int b0 = b * SAMPLE_BLOCK, end = n - b0 < SAMPLE_BLOCK ? n : b0 + SAMPLE_BLOCK;
        double l0 = 0, l1 = 0, l2 = 0, l3 = 0, l4 = 0, l5 = 0, l6 = 0, l7 = 0; // in registers, not a local array
        int i = b0;
        for (; i + 8 <= end; i += 8) {
            l0 += (double)e[i];
            l1 += (double)e[i + 1];
            l2 += (double)e[i + 2];
            l3 += (double)e[i + 3];
            l4 += (double)e[i + 4];
            l5 += (double)e[i + 5];
            l6 += (double)e[i + 6];
            l7 += (double)e[i + 7];
        }
        l0 += i < end ? (double)e[i] : 0.0; // the tail's lanes (0 + x is x: e >= 0)
        l1 += i + 1 < end ? (double)e[i + 1] : 0.0;
        l2 += i + 2 < end ? (double)e[i + 2] : 0.0;
        l3 += i + 3 < end ? (double)e[i + 3] : 0.0;
        l4 += i + 4 < end ? (double)e[i + 4] : 0.0;
        l5 += i + 5 < end ? (double)e[i + 5] : 0.0;
        l6 += i + 6 < end ? (double)e[i + 6] : 0.0;
        blk[b] = ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7));
    }
}

// the blocks' total in order (one thread, as the host's loop), for every thread
__device__ static double sample_total(const double *blk, int n, double *sh)
{
    if (threadIdx.x == 0) {
        double z = 0;
        for (int b = 0; b < (n + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK; b++)
            z += blk[b];
        *sh = z;
    }
    __syncthreads();
    const double z = *sh;
    __syncthreads();
    return z;
}

__device__ static bool sample_masked(int i, const int32_t *mask_ids, int n_mask)
{
    for (int e = 0; e < n_mask; e++)
        if (mask_ids[e] == i)
            return true;
    return false;
}

__global__ void __launch_bounds__(SAMPLE_THREADS)
    k_sample(const float *x, int n, int ld, const kc_sample_row *rows, const int32_t *hist, const int32_t *mask_ids,
             int n_mask, unsigned char *work, size_t wbytes, int32_t *ids)
{
    pdl_trigger();
    __shared__ int si[SAMPLE_THREADS + 1];
    __shared__ float sf[SAMPLE_THREADS];
    __shared__ int s_int[2];
    __shared__ unsigned s_pre;
    __shared__ double s_dbl;
    const int r = blockIdx.x, tid = threadIdx.x;
    const kc_sample_row P = rows[r];
    const float *l = x + (size_t)r * (size_t)ld;
    const sample_work wk = sample_work_at(work + (size_t)r * wbytes, n);
    const int nm = P.masked ? n_mask : 0;
    // the scaled logits (NaN and masked ids -inf) and how many are above -inf
    const float t = P.temperature == 0.0f ? 1.0f : P.temperature;
    int fin = 0;
    for (int i = tid; i < n; i += SAMPLE_THREADS) {
        const float v = nm && sample_masked(i, mask_ids, nm) ? -INFINITY : l[i];
        const float xv = isnan(v) ? -INFINITY : v;
        const float y = t != 1.0f ? __fdiv_rn(xv, t) : xv;
        wk.w[i] = y;
        fin += y > -INFINITY;
    }
    int n_fin = sample_sum(fin, si);
    const bool fp = P.freq != 0.0f || P.pres != 0.0f;
    if (P.rep != 1.0f || fp) { // from the original logit, in the history's order
        if (tid == 0) {
            const float rp = P.rep;
            const int32_t *hh = hist + P.hist_off;
            const int out = P.prompt_len < P.n_hist ? (P.prompt_len > 0 ? P.prompt_len : 0) : P.n_hist;
            int32_t *cnt = wk.pos; // counts in the output (the host's: its top-p buffer, later top-p's here too)
            if (fp) {
                for (int h = 0; h < P.n_hist; h++)
                    if (hh[h] >= 0 && hh[h] < n)
                        cnt[hh[h]] = 0;
                for (int h = out; h < P.n_hist; h++)
                    if (hh[h] >= 0 && hh[h] < n)
                        cnt[hh[h]]++;
            }
            for (int h = 0; h < P.n_hist; h++) {
                const int id = hh[h];
                if (id < 0 || id >= n)
                    continue;
                const float lg = nm && sample_masked(id, mask_ids, nm) ? -INFINITY : l[id];
                if (isnan(lg))
                    continue;
                const bool in_out = fp && cnt[id] > 0;
                if (rp == 1.0f && !in_out)
                    continue;
                float xv = rp != 1.0f ? (lg > 0 ? __fdiv_rn(lg, rp) : __fmul_rn(lg, rp)) : lg;
                if (in_out) {
                    xv = __fsub_rn(xv, __fmul_rn(P.freq, (float)cnt[id]));
                    xv = __fsub_rn(xv, P.pres);
                }
                const float y = t != 1.0f ? __fdiv_rn(xv, t) : xv;
                n_fin += (y > -INFINITY) - (wk.w[id] > -INFINITY);
                wk.w[id] = y;
            }
            s_int[0] = n_fin;
        }
        __syncthreads();
        n_fin = s_int[0];
    }
    float m = -INFINITY;
    for (int i = tid; i < n; i += SAMPLE_THREADS)
        m = wk.w[i] > m ? wk.w[i] : m;
    m = sample_max(m, sf);
    if (P.temperature == 0.0f || n_fin == 0) { // greedy: the first largest (0 when none is above -inf)
        int at = n;
        for (int i = tid; i < n && at == n; i += SAMPLE_THREADS)
            if (wk.w[i] == m)
                at = i;
        si[tid] = at;
        __syncthreads();
        if (tid == 0) {
            int a = n;
            for (int k = 0; k < SAMPLE_THREADS; k++)
                a = si[k] < a ? si[k] : a;
            ids[r] = m == -INFINITY || n_fin == 0 ? 0 : a;
        }
        return;
    }
    m = __fadd_rn(m, 0.0f); // -0 becomes 0
    // top-k: the k-th largest (with multiplicity) by its order key, 8 bits a round; then the candidates at or
    // above it in id order
    const float *cw = wk.w;
    const int32_t *cid = NULL;
    int cn = n;
    if (P.top_k > 0 && P.top_k < n_fin) {
        unsigned pre = 0, msk = 0;
        int kk = P.top_k;
        for (int shift = 24; shift >= 0; shift -= 8) {
            si[tid] = 0;
            __syncthreads();
            for (int i = tid; i < n; i += SAMPLE_THREADS) {
                const unsigned k = sample_key(wk.w[i]);
                if ((k & msk) == pre)
                    atomicAdd(&si[(k >> shift) & 255], 1);
            }
            __syncthreads();
            if (tid == 0) {
                int d = 255;
                for (; d > 0 && kk > si[d]; d--)
                    kk -= si[d];
                s_pre = pre | (unsigned)d << shift;
            }
            __syncthreads();
            pre = s_pre;
            msk |= 255u << shift;
            __syncthreads();
        }
        const float thr = sample_unkey(pre);
        const float *w = wk.w;
        cn = sample_compact(n, [=](int i) { return w[i] >= thr; }, wk.ids, si);
        for (int i = tid; i < cn; i += SAMPLE_THREADS)
            wk.lv[i] = wk.w[wk.ids[i]];
        cw = wk.lv;
        cid = wk.ids;
        __syncthreads();
    }
    float *e = wk.e;
    for (int i = tid; i < cn; i += SAMPLE_THREADS)
        e[i] = m == INFINITY ? (cw[i] == INFINITY ? 1.0f : 0.0f) : sample_exp(__fsub_rn(cw[i], m));
    __syncthreads();
    if (P.top_p < 1.0f) { // the smallest run by weight, then id, whose mass reaches top_p of the whole
        sample_blocks(e, cn, wk.blk);
        __syncthreads();
        const double z = sample_total(wk.blk, cn, &s_dbl), keep = (double)P.top_p * z;
        const float lo = (float)((z - keep) * 0.999 / cn);
        const int np0 = sample_compact(cn, [=](int i) { return e[i] >= lo; }, wk.pos, si);
        // the levels of the weights' bits: each thread the sums of its buckets (b % SAMPLE_THREADS == tid) over
        // the candidates a tile at a time, in order (each (sub-histogram, bucket) sum as the host's loop forms
        // it); one thread walks down the buckets; the selected bucket's candidates are kept in order
        int32_t *pa = wk.pos, *pb = (int32_t *)(void *)(cid ? wk.w : wk.lv); // (w or lv: no longer read)
        int np = np0;
        bool all = false;
        double before = 0; // thread 0's (the walk down the buckets)
        for (int lev = 0; lev < 3 && np > 0; lev++) {
            const int shift = lev == 0 ? 20 : lev == 1 ? 9 : 0, nb = 1 << (lev == 0 ? 10 : lev == 1 ? 11 : 9);
            const unsigned mask = (unsigned)nb - 1;
            const int per = nb / SAMPLE_THREADS; // 4, 8, 2
            double acc[4][8];
            for (int q = 0; q < 4; q++)
                for (int k = 0; k < 8; k++)
                    acc[q][k] = 0;
            for (int j0 = 0; j0 < np; j0 += SAMPLE_THREADS) {
                if (j0 + tid < np) {
                    const float v = e[pa[j0 + tid]];
                    sf[tid] = v;
                    si[tid] = (int)((__float_as_uint(v) >> shift) & mask);
                }
                __syncthreads();
                const int m = np - j0 < SAMPLE_THREADS ? np - j0 : SAMPLE_THREADS;
                for (int q = 0; q < m; q++)
                    if ((si[q] & (SAMPLE_THREADS - 1)) == tid)
                        acc[(j0 + q) & 3][si[q] / SAMPLE_THREADS] += (double)sf[q];
                __syncthreads();
            }
            double *h = wk.hist;
            for (int q = 0; q < 4; q++)
                for (int k = 0; k < per; k++)
                    h[q * nb + k * SAMPLE_THREADS + tid] = acc[q][k];
            __syncthreads();
            if (tid == 0) {
                int sel = -1;
                for (int b = nb - 1; b >= 0 && sel < 0; b--) {
                    const double mm = (h[b] + h[nb + b]) + (h[2 * nb + b] + h[3 * nb + b]);
                    if (before + mm >= keep)
                        sel = b;
                    else
                        before += mm;
                }
                s_int[0] = sel;
            }
            __syncthreads();
            const int sel = s_int[0];
            if (sel < 0) {
                all = true; // short of keep by rounding: every candidate stays
                break;
            }
            const int32_t *src = pa;
            np = sample_compact(
                np, [=](int j) { return (int)((__float_as_uint(e[src[j]]) >> shift) & mask) == sel; }, pb, si);
            for (int k = tid; k < np; k += SAMPLE_THREADS)
                pb[k] = pa[pb[k]];
            __syncthreads();
            int32_t *t = pa;
            pa = pb;
            pb = t;
        }
        if (tid == 0) {
            int last = -1;
            if (!all && np > 0) {
                last = pa[np - 1];
                for (int j = 0; j < np; j++) {
                    before += e[pa[j]];
                    if (before >= keep) {
                        last = pa[j];
                        break;
                    }
                }
            }
            s_int[1] = last;
        }
        __syncthreads();
        const int last = s_int[1];
        if (last >= 0) {
            const unsigned key = __float_as_uint(e[last]);
            __syncthreads();
            for (int i = tid; i < cn; i += SAMPLE_THREADS) {
                const unsigned b = __float_as_uint(e[i]);
                if (b < key || (b == key && i > last))
                    e[i] = 0.0f;
            }
        }
        __syncthreads();
    }
    if (P.min_p > 0.0f) { // e^(w - max) < min_p
        for (int i = tid; i < cn; i += SAMPLE_THREADS)
            if (e[i] < P.min_p)
                e[i] = 0.0f;
        __syncthreads();
    }
    // the draw: the block, then the element, where the running mass first passes u x the total
    sample_blocks(e, cn, wk.blk);
    __syncthreads();
    const double z = sample_total(wk.blk, cn, &s_dbl);
    if (tid == 0) {
        const double target = sample_uniform(P) * z;
        const int nb = (cn + SAMPLE_BLOCK - 1) / SAMPLE_BLOCK;
        double acc = 0;
        int b = 0, pick = -1;
        for (; b < nb && !(acc + wk.blk[b] > target); b++)
            acc += wk.blk[b];
        int lo = 0, hi = cn;
        if (b < nb) {
            lo = b * SAMPLE_BLOCK;
            hi = cn - lo < SAMPLE_BLOCK ? cn : lo + SAMPLE_BLOCK;
            for (int i = lo; i < hi && pick < 0; i++) {
                acc += e[i];
                if (acc > target)
                    pick = i;
            }
        }
        for (int i = hi - 1; pick < 0 && i > lo; i--) // short by rounding: the last with weight
            if (e[i] > 0)
                pick = i;
        if (pick < 0)
            pick = lo;
        ids[r] = cid ? cid[pick] : pick;
    }
}

cudaError_t kc_sample(cudaStream_t st, const float *x, int rows, int n, int ld, const kc_sample_row *row,
                      const int32_t *hist, const int32_t *mask_ids, int n_mask, void *work, int32_t *ids)
{
    if (rows <= 0)
        return cudaSuccess;
    KLAUNCH((k_sample), rows, SAMPLE_THREADS, st, x, n, ld, row, hist, mask_ids, n_mask, (unsigned char *)work,
            kc_sample_work_bytes(n), ids);
    return cudaGetLastError();
}

// ---- gather ----

template <int DT>
__global__ void k_gather(float *out, const void *W, const int32_t *ids, int offset, int n_rows, int n_in, bool acc,
                         int *flag)
{
    pdl_trigger();
    const int t = blockIdx.x;
    const int id = ids[t];
    const long long r = (long long)id + offset;
    if (id < 0 || r >= n_rows) {
        if (threadIdx.x == 0)
            atomicOr(flag, 1);
        return;
    }
    float *o = out + (size_t)t * n_in;
    const size_t base = (size_t)r * n_in;
    for (int e = threadIdx.x; e < n_in; e += blockDim.x) {
        const float v = ld_w<DT>(W, base + e);
        o[e] = acc ? __fadd_rn(o[e], v) : v;
    }
}

cudaError_t kc_gather(cudaStream_t st, float *out, const void *W, kc_dtype dt, const int32_t *ids, int T, int offset,
                      int n_rows, int n_in, bool acc, int *flag)
{
    if (T <= 0)
        return cudaSuccess;
    switch (dt) {
    case KC_F32: KLAUNCH((k_gather<KC_F32>), T, 256, st, out, W, ids, offset, n_rows, n_in, acc, flag); break;
    case KC_BF16: KLAUNCH((k_gather<KC_BF16>), T, 256, st, out, W, ids, offset, n_rows, n_in, acc, flag); break;
    default: KLAUNCH((k_gather<KC_F16>), T, 256, st, out, W, ids, offset, n_rows, n_in, acc, flag); break;
    }
    return cudaGetLastError();
}

// ---- norms ----

#define NORM_THREADS 256

// the sum of v over the block in a fixed order: lanes by xor butterfly, then
// warps 0..7 in order; every thread gets the same bits
__device__ __forceinline__ float block_sum(float v, float *sh)
{
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1)
        v = __fadd_rn(v, __shfl_xor_sync(FULL_MASK, v, off));
    const int warp = threadIdx.x >> 5;
    if ((threadIdx.x & 31) == 0)
        sh[warp] = v;
    __syncthreads();
    float s = 0.0f;
    for (int w = 0; w < NORM_THREADS / 32; w++)
        s = __fadd_rn(s, sh[w]);
    __syncthreads(); // sh is reused
    return s;
}

// One block per row. x += a (+ a2) first when a: each thread reads back only
// the elements it wrote, and out[i] only by the thread that read x[i] (out
// may be x). The normalization is the same code with or without the add, so
// add_norm gives the bits of add then norm. PER > 0: a thread's PER elements
// (i = tid + NORM_THREADS k) stay in registers, all of x, a, a2, w and b
// loaded at once (one memory round trip, not one a pass and element: a
// decode row took 8 us on an H100); PER = 0: the loops over memory, for long
// rows. The same operations in the same order either way, so the same bits.
template <int PER>
__global__ void __launch_bounds__(NORM_THREADS)
    k_norm(bool rms, float *out, float *x, const float *a, const float *a2, int n, const float *w, const float *b,
           float eps)
{
    pdl_trigger();
    __shared__ float sh[NORM_THREADS / 32];
    const size_t row = (size_t)blockIdx.x * n;
    float *xr = x + row;
    const float fn = (float)n;
    float c = 0.0f;
    if (PER > 0) {
        constexpr int P = PER > 0 ? PER : 1;
        float v[P], wv[P], bv[P];
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int i = threadIdx.x + NORM_THREADS * k;
            v[k] = i < n ? xr[i] : 0.0f;
            wv[k] = i < n ? w[i] : 0.0f;
            bv[k] = b && i < n ? b[i] : 0.0f;
        }
        if (a) {
            float av[P];
#pragma unroll
            for (int k = 0; k < P; k++) {
                const int i = threadIdx.x + NORM_THREADS * k;
                av[k] = i < n ? (a2 ? __fadd_rn(a[row + i], a2[row + i]) : a[row + i]) : 0.0f;
            }
#pragma unroll
            for (int k = 0; k < P; k++) {
                const int i = threadIdx.x + NORM_THREADS * k;
                if (i < n)
                    xr[i] = v[k] = __fadd_rn(v[k], av[k]);
            }
        }
        if (!rms) {
            float s = 0.0f;
#pragma unroll
            for (int k = 0; k < P; k++)
                if ((int)threadIdx.x + NORM_THREADS * k < n)
                    s = __fadd_rn(s, v[k]);
            c = __fdiv_rn(block_sum(s, sh), fn);
        }
        float ss = 0.0f;
#pragma unroll
        for (int k = 0; k < P; k++) {
            if ((int)threadIdx.x + NORM_THREADS * k < n) {
                const float d = __fsub_rn(v[k], c);
                ss = __fmaf_rn(d, d, ss);
            }
        }
        const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(block_sum(ss, sh), fn), eps)));
        float *o = out + row;
#pragma unroll
        for (int k = 0; k < P; k++) {
            const int i = threadIdx.x + NORM_THREADS * k;
            if (i < n) {
                const float t = __fmul_rn(__fmul_rn(__fsub_rn(v[k], c), inv), wv[k]);
                o[i] = b ? __fadd_rn(t, bv[k]) : t;
            }
        }
        return;
    }
    if (a) {
        for (int i = threadIdx.x; i < n; i += NORM_THREADS)
            xr[i] = __fadd_rn(xr[i], a2 ? __fadd_rn(a[row + i], a2[row + i]) : a[row + i]);
    }
    if (!rms) {
        float s = 0.0f;
        for (int i = threadIdx.x; i < n; i += NORM_THREADS)
            s = __fadd_rn(s, xr[i]);
        c = __fdiv_rn(block_sum(s, sh), fn);
    }
    float ss = 0.0f;
    for (int i = threadIdx.x; i < n; i += NORM_THREADS) {
        const float d = __fsub_rn(xr[i], c);
        ss = __fmaf_rn(d, d, ss);
    }
    const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(block_sum(ss, sh), fn), eps)));
    float *o = out + row;
    for (int i = threadIdx.x; i < n; i += NORM_THREADS) {
        const float t = __fmul_rn(__fmul_rn(__fsub_rn(xr[i], c), inv), w[i]);
        o[i] = b ? __fadd_rn(t, b[i]) : t;
    }
}

// the rows' register-held elements a thread: 4, 8, 16 or 32 (rows up to 8192), else the loops (PB_CUDA_NORM_REGS=0:
// the loops always, for the tests)
cudaError_t kc_norm(cudaStream_t st, bool rms, float *out, float *x, const float *a, const float *a2, int rows, int n,
                    const float *w, const float *b, float eps)
{
    static const int regs = kc_env_int("PB_CUDA_NORM_REGS", 1, 0, 1);
    if (rows <= 0)
        return cudaSuccess;
    const int per = (n + NORM_THREADS - 1) / NORM_THREADS;
    if (!regs || per > 32)
        KLAUNCH((k_norm<0>), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    else if (per > 16)
        KLAUNCH((k_norm<32>), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    else if (per > 8)
        KLAUNCH((k_norm<16>), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    else if (per > 4)
        KLAUNCH((k_norm<8>), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    else
        KLAUNCH((k_norm<4>), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    return cudaGetLastError();
}

// per-head RMSNorm, as cpu.c: sum of squares in double, scale in f32. One
// warp per (token, head).
__global__ void k_head_norm(float *x, int ld, int T, int n_heads, int hd, const float *w, float eps)
{
    pdl_trigger();
    const int warp = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) >> 5), lane = threadIdx.x & 31;
    if (warp >= T * n_heads)
        return;
    const int t = warp / n_heads, h = warp % n_heads;
    float *v = x + (size_t)t * ld + (size_t)h * hd;
    double ss = 0;
    for (int i = lane; i < hd; i += 32)
        ss = __fma_rn((double)v[i], (double)v[i], ss);
#pragma unroll
    for (int off = 16; off >= 1; off >>= 1)
        ss = __dadd_rn(ss, __shfl_xor_sync(FULL_MASK, ss, off));
    const float inv = (float)(1.0 / sqrt(ss / hd + (double)eps));
    for (int i = lane; i < hd; i += 32)
        v[i] = __fmul_rn(w[i], __fmul_rn(v[i], inv));
}

cudaError_t kc_head_norm(cudaStream_t st, float *x, int ld, int T, int n_heads, int head_dim, const float *w,
                         float eps)
{
    const long long warps = (long long)T * n_heads;
    if (warps <= 0)
        return cudaSuccess;
    KLAUNCH((k_head_norm), (unsigned)((warps + 7) / 8), 256, st, x, ld, T, n_heads, head_dim, w, eps);
    return cudaGetLastError();
}

// ---- rotary ----

// pair i of the head at v rotated by (c, s): (2i, 2i + 1) interleaved, else (i, i + half)
__device__ __forceinline__ void rope_pair(float *v, int i, int half, bool inter, float c, float s)
{
    float *pa = inter ? v + 2 * i : v + i, *pb = inter ? v + 2 * i + 1 : v + i + half;
    const float a = *pa, b = *pb;
    *pa = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    *pb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
}

__global__ void k_rope(float *x, int ld, int T, int n_heads, int hd, int half, bool inter, const float *cs)
{
    pdl_trigger();
    const size_t total = (size_t)T * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t th = idx / half;
        const int h = (int)(th % n_heads), t = (int)(th / n_heads);
        const float *ct = cs + ((size_t)t * half + i) * 2;
        rope_pair(x + (size_t)t * ld + (size_t)h * hd, i, half, inter, ct[0], ct[1]);
    }
}

cudaError_t kc_rope(cudaStream_t st, float *x, int ld, int T, int n_heads, int head_dim, int half, bool interleaved,
                    const float *cs)
{
    const size_t total = (size_t)T * n_heads * half;
    if (!total)
        return cudaSuccess;
    KLAUNCH((k_rope), blocks_for(total, 256), 256, st, x, ld, T, n_heads, head_dim, half, interleaved, cs);
    return cudaGetLastError();
}

// ---- activations: act_f, glu_f (above, with the conversions) ----

__global__ void k_act(int act, float *x, int ld, int rows, int n)
{
    pdl_trigger();
    const size_t total = (size_t)rows * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        float *p = x + (idx / n) * ld + idx % n;
        *p = act_f(act, *p);
    }
}

__global__ void k_glu(int act, float *out, const float *gu, int ldgu, int rows, int n)
{
    pdl_trigger();
    const size_t total = (size_t)rows * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t r = idx / n, i = idx % n;
        const float *g = gu + r * ldgu;
        out[idx] = glu_f(act, g[i], g[n + i]);
    }
}

cudaError_t kc_act(cudaStream_t st, int act, float *x, int ld, int rows, int n)
{
    const size_t total = (size_t)rows * n;
    if (!total)
        return cudaSuccess;
    KLAUNCH((k_act), blocks_for(total, 256), 256, st, act, x, ld, rows, n);
    return cudaGetLastError();
}

cudaError_t kc_glu(cudaStream_t st, int act, float *out, const float *gu, int ldgu, int rows, int n)
{
    const size_t total = (size_t)rows * n;
    if (!total)
        return cudaSuccess;
    KLAUNCH((k_glu), blocks_for(total, 256), 256, st, act, out, gu, ldgu, rows, n);
    return cudaGetLastError();
}

// ---- element-wise ----

__global__ void k_add(float *y, const float *x, const float *x2, size_t n)
{
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        y[i] = __fadd_rn(y[i], x2 ? __fadd_rn(x[i], x2[i]) : x[i]);
}

cudaError_t kc_add(cudaStream_t st, float *y, const float *x, const float *x2, size_t n)
{
    if (!n)
        return cudaSuccess;
    KLAUNCH((k_add), blocks_for(n, 256), 256, st, y, x, x2, n);
    return cudaGetLastError();
}

__global__ void k_select_rows(float *dst, const float *src, int n, const int *rows)
{
    pdl_trigger();
    const int i = blockIdx.x;
    const float *s = src + (size_t)rows[i] * n;
    float *d = dst + (size_t)i * n;
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        d[j] = s[j];
}

cudaError_t kc_select_rows(cudaStream_t st, float *dst, const float *src, int n, const int *rows, int n_rows)
{
    if (n_rows <= 0 || n <= 0)
        return cudaSuccess;
    KLAUNCH((k_select_rows), n_rows, 256, st, dst, src, n, rows);
    return cudaGetLastError();
}

// rows distinct within a call: no two blocks write one element
__global__ void k_scatter_add(float *y, const float *x, int n, const int *rows, const float *w)
{
    pdl_trigger();
    const int i = blockIdx.x;
    float *yr = y + (size_t)rows[i] * n;
    const float *xr = x + (size_t)i * n;
    const float wi = w[i];
    for (int j = threadIdx.x; j < n; j += blockDim.x)
        yr[j] = __fadd_rn(yr[j], __fmul_rn(wi, xr[j])); // the product rounded, then added
}

cudaError_t kc_scatter_add(cudaStream_t st, float *y, const float *x, int n, const int *rows, const float *w,
                           int n_rows)
{
    if (n_rows <= 0 || n <= 0)
        return cudaSuccess;
    KLAUNCH((k_scatter_add), n_rows, 256, st, y, x, n, rows, w);
    return cudaGetLastError();
}

__global__ void k_scale(float *x, size_t n, float s)
{
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

__global__ void k_softcap(float *x, size_t n, float cap)
{
    pdl_trigger();
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(tanhf(__fdiv_rn(x[i], cap)), cap);
}

cudaError_t kc_scale(cudaStream_t st, float *x, size_t n, float s)
{
    if (!n)
        return cudaSuccess;
    KLAUNCH((k_scale), blocks_for(n, 256), 256, st, x, n, s);
    return cudaGetLastError();
}

cudaError_t kc_softcap(cudaStream_t st, float *x, size_t n, float cap)
{
    if (!n)
        return cudaSuccess;
    KLAUNCH((k_softcap), blocks_for(n, 256), 256, st, x, n, cap);
    return cudaGetLastError();
}

// ---- attention ----

// cache elements: bf16 (uint16_t), f16 (kv_half) both rounded to nearest even, or f32
struct kv_half {
    uint16_t bits;
};
__device__ __forceinline__ uint16_t to_kv(float f, uint16_t *) { return f32_bf16(f); }
__device__ __forceinline__ kv_half to_kv(float f, kv_half *) { return kv_half{__half_as_ushort(__float2half_rn(f))}; }
__device__ __forceinline__ float to_kv(float f, float *) { return f; }
__device__ __forceinline__ float from_kv(uint16_t v) { return bf16_f32(v); }
__device__ __forceinline__ float from_kv(kv_half v) { return f16_f32(v.bits); }
__device__ __forceinline__ float from_kv(float v) { return v; }

// this step's k/v rows into the caches (rounded to kv_t): one block per token row
// a block a token row: where rope_cs, its q and k heads rotated in place first (k_rope's pairs: the same
// bits); then its k and v stored at the sequence's position
template <typename kv_t> __global__ void k_kv_store(kc_attn a)
{
    pdl_trigger();
    const int t = blockIdx.x, s = a.tok_seq[t];
    if (a.rope_cs) {
        const int half = a.rope_half, nq = a.n_heads * half, n = nq + a.n_kv_heads * half;
        const float *cs = a.rope_cs + (size_t)t * half * 2;
        // (the rows are the caller's writable ones: pb_attn_args.rope)
        float *q = (float *)(uintptr_t)a.q + (size_t)t * a.q_stride;
        float *k = (float *)(uintptr_t)a.k + (size_t)t * a.kv_stride;
        for (int e = threadIdx.x; e < n; e += blockDim.x) {
            const int j = e < nq ? e : e - nq, i = j % half;
            rope_pair((e < nq ? q : k) + (size_t)(j / half) * a.head_dim, i, half, a.rope_inter, cs[2 * i],
                      cs[2 * i + 1]);
        }
        __syncthreads(); // the rotated keys, read below by other threads
    }
    if (s < 0)
        return;
    const int kvd = a.n_kv_heads * a.head_dim;
    const size_t p = (size_t)(a.pos[s] + t - a.tok_start[s]);
    kv_t *kc = (kv_t *)a.k_cache[s] + p * kvd, *vc = (kv_t *)a.v_cache[s] + p * kvd;
    const float *k = a.k + (size_t)t * a.kv_stride, *v = a.v + (size_t)t * a.kv_stride;
    for (int e = threadIdx.x; e < kvd; e += blockDim.x) {
        kc[e] = to_kv(k[e], (kv_t *)nullptr);
        vc[e] = to_kv(v[e], (kv_t *)nullptr);
    }
}

#define ATT_WARPS 4

// A query's keys lo .. p in chunks of a->chunk keys from lo (the last one
// shorter). A chunk is one block's work: warp w takes its keys c0 + w,
// c0 + w + 4, ... in order; the q.k dot product is split over lanes (dims
// lane + 32 i) and reduced by a fixed butterfly; an online softmax (running
// max, sum, V accumulator per warp); then the four warps are merged in order
// 0..3 into the chunk's max, sum and unnormalized output. The chunks are
// merged in order by one running merge (merge_chunk), then divided by the
// sum; with one chunk that is the chunk's own output over its sum. Every
// query's result depends only on that query and its sequence's cache, so a
// sequence's output is the same alone or in any batch, and the same whether
// one block takes all of a query's chunks (k_attention) or a block each
// (k_attention_part, then k_attention_merge: flash-decoding, where few
// queries would leave most SMs idle). f32 math on the cache's values.

// the score of key j (row kr of the cache) for query qs: the warp form's
// arithmetic exactly, in one thread. Lane l's partial is a chain of fmas over
// its dims l, l + 32, ... in order; the butterfly leaves every lane with the
// same sum (IEEE addition commutes), which is this tree: halves 16 apart, then
// 8, 4, 2, 1. Then the scale, ALiBi and softcap as the warp form.
// 8 consecutive cache elements from a 16-byte aligned address: 2-byte elements (bf16, f16) as one uint4
template <typename kv_t> __device__ __forceinline__ void kv_load8(const kv_t *r, float f[8])
{
    const uint4 u = *(const uint4 *)r;
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int e = 0; e < 4; e++) {
        f[2 * e] = from_kv(kv_t{(uint16_t)(w[e] & 0xffffu)});
        f[2 * e + 1] = from_kv(kv_t{(uint16_t)(w[e] >> 16)});
    }
}
__device__ __forceinline__ void kv_load8(const float *r, float f[8])
{
    const float4 u = *(const float4 *)r, v = *(const float4 *)(r + 4);
    f[0] = u.x, f[1] = u.y, f[2] = u.z, f[3] = u.w, f[4] = v.x, f[5] = v.y, f[6] = v.z, f[7] = v.w;
}

// key j's score from its q.k dot product: the scale, ALiBi's slope times the key position (Bloom), the softcap
__device__ __forceinline__ float attn_finish(const kc_attn &a, float dot, float slope, int j)
{
    float sc = __fmul_rn(dot, a.scale);
    if (a.alibi)
        sc = __fadd_rn(sc, __fmul_rn(slope, (float)j));
    if (a.softcap > 0)
        sc = __fmul_rn(tanhf(__fdiv_rn(sc, a.softcap)), a.softcap);
    return sc;
}

// the online softmax's step for score sc: a new max rescales the sum l and the N V sums acc by expf(m - sc)
// (0 for the first key); returns the key's weight expf(sc - m), added to l
template <int N> __device__ __forceinline__ float softmax_step(float sc, float &m, float &l, float acc[N])
{
    if (sc > m) {
        const float corr = expf(m - sc);
        l = __fmul_rn(l, corr);
#pragma unroll
        for (int i = 0; i < N; i++)
            acc[i] = __fmul_rn(acc[i], corr);
        m = sc;
    }
    const float e = expf(sc - m);
    l = __fadd_rn(l, e);
    return e;
}

template <typename kv_t, int DPL>
__device__ __forceinline__ float attn_score(const kc_attn &a, const float *qs, const kv_t *kr, int j, float slope)
{
    const int hd = a.head_dim;
    float p[32];
#pragma unroll
    for (int l = 0; l < 32; l++)
        p[l] = 0.0f;
    if (hd % 8 == 0 && ((uintptr_t)kr & 15u) == 0) { // 16-byte loads where the row starts 16-byte aligned
#pragma unroll
        for (int i = 0; i < DPL; i++)
#pragma unroll
            for (int q8 = 0; q8 < 4; q8++) {
                const int d0 = 32 * i + 8 * q8;
                if (d0 < hd) {
                    float f[8];
                    kv_load8(kr + d0, f);
#pragma unroll
                    for (int e = 0; e < 8; e++)
                        p[8 * q8 + e] = __fmaf_rn(qs[d0 + e], f[e], p[8 * q8 + e]);
                }
            }
    } else {
#pragma unroll
        for (int i = 0; i < DPL; i++)
#pragma unroll
            for (int l = 0; l < 32; l++)
                if (32 * i + l < hd)
                    p[l] = __fmaf_rn(qs[32 * i + l], from_kv(kr[32 * i + l]), p[l]);
    }
#pragma unroll
    for (int l = 0; l < 16; l++) // constant offsets, so that p stays in registers
        p[l] = __fadd_rn(p[l], p[l + 16]);
#pragma unroll
    for (int l = 0; l < 8; l++)
        p[l] = __fadd_rn(p[l], p[l + 8]);
#pragma unroll
    for (int l = 0; l < 4; l++)
        p[l] = __fadd_rn(p[l], p[l + 4]);
    p[0] = __fadd_rn(p[0], p[2]);
    p[1] = __fadd_rn(p[1], p[3]);
    p[0] = __fadd_rn(p[0], p[1]);
    return attn_finish(a, p[0], slope, j);
}

#define ATT_PIECE 256 // keys whose scores a block computes at once (the lane form)

// the chunk's max, sum (every thread) and output dims (thread d: dims d,
// d + blockDim.x, ...) in red[], a block-shared [ATT_WARPS][hd] buffer. DPL:
// dims a lane (32 DPL >= hd). Where a.lane_scores the scores of ATT_PIECE keys
// at a time come first, a key a thread (attn_score: the same bits), into
// scs[]; the warps then run their keys' softmax and V sums from them in the
// same order (PB_CUDA_ATTN_LANE=1: a key's 32 lanes' work in one thread, no
// shuffles, 16-byte loads of its row; not yet measured on a GPU). Else each
// warp computes its keys' scores itself (the default).
template <typename kv_t, int DPL>
__device__ void attn_chunk(const kc_attn &a, int s, int h, int c0, int c1, const float *qs, float *accs,
                           float *ms, float *ls, float *scs, float *M_out, float *L_out)
{
    const int hd = a.head_dim, kvd = a.n_kv_heads * hd, g = h / (a.n_heads / a.n_kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float qr[DPL], acc[DPL];
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        const int d = lane + 32 * i;
        qr[i] = d < hd ? qs[d] : 0.0f;
        acc[i] = 0.0f;
    }
    const float slope = a.alibi ? a.alibi[h] : 0.0f;
    const kv_t *kc = (const kv_t *)a.k_cache[s] + (size_t)g * hd, *vc = (const kv_t *)a.v_cache[s] + (size_t)g * hd;
    float m = -INFINITY, l = 0.0f;
    // one key of the warp's: its score sc, then the online softmax and the V sum
    auto step = [&](int j, float sc) {
        const kv_t *vr = vc + (size_t)j * kvd;
        const float e = softmax_step<DPL>(sc, m, l, acc);
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                acc[i] = __fmaf_rn(e, from_kv(vr[d]), acc[i]);
        }
    };
    if (a.lane_scores) {
        for (int b0 = c0; b0 <= c1; b0 += ATT_PIECE) { // pieces of whole rounds of the warps' keys
            const int b1 = c1 - b0 >= ATT_PIECE ? b0 + ATT_PIECE - 1 : c1;
            for (int j = b0 + (int)threadIdx.x; j <= b1; j += blockDim.x)
                scs[j - b0] = attn_score<kv_t, DPL>(a, qs, kc + (size_t)j * kvd, j, slope);
            __syncthreads();
            for (int j = b0 + warp; j <= b1; j += ATT_WARPS)
                step(j, scs[j - b0]);
            __syncthreads(); // scs is rewritten by the next piece
        }
    } else {
        for (int j = c0 + warp; j <= c1; j += ATT_WARPS) {
            const kv_t *kr = kc + (size_t)j * kvd;
            float dot = 0.0f;
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                const int d = lane + 32 * i;
                if (d < hd)
                    dot = __fmaf_rn(qr[i], from_kv(kr[d]), dot);
            }
#pragma unroll
            for (int off = 16; off >= 1; off >>= 1)
                dot = __fadd_rn(dot, __shfl_xor_sync(FULL_MASK, dot, off));
            step(j, attn_finish(a, dot, slope, j));
        }
    }
    if (lane == 0) {
        ms[warp] = m;
        ls[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < DPL; i++) {
        const int d = lane + 32 * i;
        if (d < hd)
            accs[warp * KC_ATTN_MAX_HEAD_DIM + d] = acc[i];
    }
    __syncthreads();
    float M = -INFINITY;
    for (int w = 0; w < ATT_WARPS; w++)
        M = ms[w] > M ? ms[w] : M;
    float L = 0.0f, f[ATT_WARPS];
    for (int w = 0; w < ATT_WARPS; w++) {
        f[w] = ms[w] == -INFINITY ? 0.0f : expf(ms[w] - M); // a warp with no keys adds nothing
        L = __fmaf_rn(ls[w], f[w], L);
    }
    // the chunk's output dims in place of warp 0's (each thread reads its own dims of every warp first)
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            v = __fmaf_rn(accs[w * KC_ATTN_MAX_HEAD_DIM + d], f[w], v);
        accs[d] = v;
    }
    *M_out = M;
    *L_out = L;
}

// the running merge of chunk (Mc, Lc, vc) into (M, L, v): one fixed formula,
// the same bits in either kernel; (-inf, 0, 0) then a chunk gives the chunk
__device__ __forceinline__ void merge_chunk(float &M, float &L, float *v, int n, int stride, float Mc, float Lc,
                                            const float *vc)
{
    const float Mn = Mc > M ? Mc : M;
    const float fa = M == -INFINITY ? 0.0f : expf(M - Mn), fb = expf(Mc - Mn);
    L = __fadd_rn(__fmul_rn(L, fa), __fmul_rn(Lc, fb));
    for (int d = threadIdx.x; d < n; d += stride)
        v[d] = __fadd_rn(__fmul_rn(v[d], fa), __fmul_rn(vc[d], fb));
    M = Mn;
}

__device__ __forceinline__ int attn_lo(const kc_attn &a, int p)
{
    return a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
}

// one block per (token row, query head): all of the query's chunks in turn
template <typename kv_t, int DPL> __global__ void __launch_bounds__(ATT_WARPS * 32) k_attention(kc_attn a)
{
    pdl_trigger();
    __shared__ float qs[KC_ATTN_MAX_HEAD_DIM], scs[ATT_PIECE];
    __shared__ float accs[ATT_WARPS * KC_ATTN_MAX_HEAD_DIM];
    __shared__ float vs[KC_ATTN_MAX_HEAD_DIM];
    __shared__ float ms[ATT_WARPS], ls[ATT_WARPS];
    const int t = blockIdx.x, h = blockIdx.y;
    const int s = a.tok_seq[t];
    if (s < 0)
        return; // the whole block
    const int hd = a.head_dim;
    const int p = a.pos[s] + t - a.tok_start[s], lo = attn_lo(a, p);
    const float *q = a.q + (size_t)t * a.q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        qs[d] = q[d];
        vs[d] = 0.0f;
    }
    __syncthreads();
    float M = -INFINITY, L = 0.0f;
    for (int c0 = lo; c0 <= p; c0 += a.chunk) {
        const int c1 = p - c0 >= a.chunk ? c0 + a.chunk - 1 : p;
        float Mc, Lc;
        attn_chunk<kv_t, DPL>(a, s, h, c0, c1, qs, accs, ms, ls, scs, &Mc, &Lc);
        merge_chunk(M, L, vs, hd, blockDim.x, Mc, Lc, accs); // each thread its own dims: no barrier needed
        __syncthreads(); // accs, ms, ls reused by the next chunk
    }
    float *o = a.out + (size_t)t * a.n_heads * hd + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        o[d] = __fdiv_rn(vs[d], L);
}

// flash-decoding, first half: block (t, h, c) takes chunk c of the query and
// leaves its max, sum and output in a.part (hd + 2 floats a chunk)
template <typename kv_t, int DPL> __global__ void __launch_bounds__(ATT_WARPS * 32) k_attention_part(kc_attn a)
{
    pdl_trigger();
    __shared__ float qs[KC_ATTN_MAX_HEAD_DIM], scs[ATT_PIECE];
    __shared__ float accs[ATT_WARPS * KC_ATTN_MAX_HEAD_DIM];
    __shared__ float ms[ATT_WARPS], ls[ATT_WARPS];
    const int t = blockIdx.x, h = blockIdx.y, c = blockIdx.z;
    const int s = a.tok_seq[t];
    if (s < 0)
        return;
    const int hd = a.head_dim;
    const int p = a.pos[s] + t - a.tok_start[s], lo = attn_lo(a, p);
    const int c0 = lo + c * a.chunk;
    if (c0 > p)
        return; // this query has fewer chunks
    const int c1 = p - c0 >= a.chunk ? c0 + a.chunk - 1 : p;
    const float *q = a.q + (size_t)t * a.q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = q[d];
    __syncthreads();
    float Mc, Lc;
    attn_chunk<kv_t, DPL>(a, s, h, c0, c1, qs, accs, ms, ls, scs, &Mc, &Lc);
    float *pp = a.part + (((size_t)t * a.n_heads + h) * a.max_chunks + c) * (size_t)(hd + 2);
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        pp[2 + d] = accs[d];
    if (threadIdx.x == 0) {
        pp[0] = Mc;
        pp[1] = Lc;
    }
}

// flash-decoding, second half: block (t, h) merges the query's chunks in order
__global__ void __launch_bounds__(ATT_WARPS * 32) k_attention_merge(kc_attn a)
{
    pdl_trigger();
    __shared__ float vs[KC_ATTN_MAX_HEAD_DIM];
    const int t = blockIdx.x, h = blockIdx.y;
    const int s = a.tok_seq[t];
    if (s < 0)
        return;
    const int hd = a.head_dim;
    const int p = a.pos[s] + t - a.tok_start[s], lo = attn_lo(a, p);
    const int nc = (p - lo) / a.chunk + 1;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        vs[d] = 0.0f;
    float M = -INFINITY, L = 0.0f;
    const float *pp = a.part + ((size_t)t * a.n_heads + h) * a.max_chunks * (size_t)(hd + 2);
    for (int c = 0; c < nc; c++, pp += hd + 2)
        merge_chunk(M, L, vs, hd, blockDim.x, pp[0], pp[1], pp + 2);
    float *o = a.out + (size_t)t * a.n_heads * hd + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        o[d] = __fdiv_rn(vs[d], L);
}

// The grouped form (by default where a call has 1024 queries or more and a
// block gets more than one): one
// block takes the queries that read the same keys, up to QB of them: the
// query heads of one KV head (GQA) for a tile of one sequence's tokens with
// the same first key (a.tiles; for MHA the tile's tokens are the queries).
// Each warp loads a key's row once for all of them and runs every query's
// arithmetic exactly as attn_chunk's warp form does: the same keys a warp,
// the same fma chains over a lane's dims lane + 32 i, the same butterfly
// sums, online softmax, warps' merge in order and chunks' running merge, so
// the bits are those of a block a query. What differs is who does it: the
// QB butterflies are reduced together, each level halving the values a lane
// keeps (a lane adds its partner's half of the pair it keeps, the sum the
// butterfly forms at that level), so that after log2(QB) levels the lanes
// of group q = lane / (32 / QB) hold query q's partial and finish its
// butterfly alone: QB - 1 + 5 - log2(QB) shuffles a key for QB queries
// instead of 5 QB. The group's lanes then run query q's softmax and its V
// sums over 16 dims each (DPL x QB = 16: the 32 DPL dims of a row over
// 32 / QB lanes), so one expf serves QB queries and no score is broadcast.
template <typename kv_t, int DPL, int QB>
__global__ void __launch_bounds__(ATT_WARPS * 32, 4) k_attention_grp(kc_attn a)
{
    pdl_trigger();
    constexpr int W = 32 * DPL, LG = 32 / QB, VD = W / LG; // row dims, lanes a query, V dims a lane
    __shared__ float accs[ATT_WARPS][QB][W], vs[QB][W];
    __shared__ float ms[ATT_WARPS][QB], ls[ATT_WARPS][QB];
    const int t0 = a.tiles[2 * blockIdx.x], nt = a.tiles[2 * blockIdx.x + 1];
    const int G = a.n_heads / a.n_kv_heads, ht = a.grp_heads, n_sub = (G + ht - 1) / ht;
    const int g = (int)blockIdx.y / n_sub, h0 = g * G + ((int)blockIdx.y % n_sub) * ht;
    const int nh = g * G + G - h0 < ht ? g * G + G - h0 : ht, nq = nt * nh; // heads, queries (<= QB)
    const int s = a.tok_seq[t0];
    const int hd = a.head_dim, kvd = a.n_kv_heads * hd;
    const int p0 = a.pos[s] + t0 - a.tok_start[s], pmax = p0 + nt - 1, lo = attn_lo(a, p0);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int mq = lane / LG, r = lane % LG; // this lane's query in the V sums, and its dims r VD ..
    const int mp = p0 + mq / nh;             // that query's position (its last key)
    const bool mine = mq < nq;
    const float slope = a.alibi && mine ? a.alibi[h0 + mq % nh] : 0.0f;
    float qr[QB][DPL], Mr[QB], Lr[QB];
#pragma unroll
    for (int q = 0; q < QB; q++) {
        const float *qp = a.q + (size_t)(t0 + q / nh) * a.q_stride + (size_t)(h0 + q % nh) * hd;
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i;
            qr[q][i] = q < nq && d < hd ? qp[d] : 0.0f;
        }
        Mr[q] = -INFINITY;
        Lr[q] = 0.0f;
        for (int d = threadIdx.x; d < hd; d += blockDim.x)
            vs[q][d] = 0.0f;
    }
    const kv_t *kc = (const kv_t *)a.k_cache[s] + (size_t)g * hd, *vc = (const kv_t *)a.v_cache[s] + (size_t)g * hd;
    const bool vec = hd % 8 == 0 && ((uintptr_t)vc & 15u) == 0 && (kvd * sizeof(kv_t)) % 16 == 0;
    for (int c0 = lo; c0 <= pmax; c0 += a.chunk) {
        const int c1 = pmax - c0 >= a.chunk ? c0 + a.chunk - 1 : pmax;
        float m = -INFINITY, l = 0.0f, acc[VD];
#pragma unroll
        for (int e = 0; e < VD; e++)
            acc[e] = 0.0f;
        float kn[DPL]; // the warp's next key's dims, loaded a key ahead
#pragma unroll
        for (int i = 0; i < DPL; i++) {
            const int d = lane + 32 * i, j = c0 + warp;
            kn[i] = d < hd && j <= c1 ? from_kv(kc[(size_t)j * kvd + d]) : 0.0f;
        }
        for (int j = c0 + warp; j <= c1; j += ATT_WARPS) {
            float v[QB], kf[DPL];
#pragma unroll
            for (int i = 0; i < DPL; i++) {
                const int d = lane + 32 * i;
                kf[i] = kn[i];
                kn[i] = d < hd && j + ATT_WARPS <= c1 ? from_kv(kc[(size_t)(j + ATT_WARPS) * kvd + d]) : 0.0f;
            }
#pragma unroll
            for (int q = 0; q < QB; q++)
                v[q] = 0.0f;
#pragma unroll
            for (int i = 0; i < DPL; i++)
                if (lane + 32 * i < hd) {
#pragma unroll
                    for (int q = 0; q < QB; q++)
                        v[q] = __fmaf_rn(qr[q][i], kf[i], v[q]);
                }
            // the QB butterflies together: at offset o a lane keeps the half of its values its bit o picks
#pragma unroll
            for (int n = QB, off = 16; n > 1; n >>= 1, off >>= 1) {
                const bool up = (lane & off) != 0;
#pragma unroll
                for (int k = 0; k < n / 2; k++) {
                    const float keep = up ? v[n / 2 + k] : v[k], give = up ? v[k] : v[n / 2 + k];
                    v[k] = __fadd_rn(keep, __shfl_xor_sync(FULL_MASK, give, off));
                }
            }
#pragma unroll
            for (int off = 16 / QB; off >= 1; off >>= 1)
                v[0] = __fadd_rn(v[0], __shfl_xor_sync(FULL_MASK, v[0], off));
            if (!mine || j > mp)
                continue; // key j is past this lane's query (a tile's earlier tokens), or no query here
            const float e = softmax_step<VD>(attn_finish(a, v[0], slope, j), m, l, acc);
            const kv_t *vr = vc + (size_t)j * kvd + r * VD;
            if (vec) {
#pragma unroll
                for (int e8 = 0; e8 < VD; e8 += 8)
                    if (r * VD + e8 < hd) {
                        float f[8];
                        kv_load8(vr + e8, f);
#pragma unroll
                        for (int i = 0; i < 8; i++)
                            acc[e8 + i] = __fmaf_rn(e, f[i], acc[e8 + i]);
                    }
            } else {
#pragma unroll
                for (int i = 0; i < VD; i++)
                    if (r * VD + i < hd)
                        acc[i] = __fmaf_rn(e, from_kv(vr[i]), acc[i]);
            }
        }
        if (r == 0) {
            ms[warp][mq] = m;
            ls[warp][mq] = l;
        }
#pragma unroll
        for (int i = 0; i < VD; i++)
            if (r * VD + i < hd)
                accs[warp][mq][r * VD + i] = acc[i];
        __syncthreads();
        // each query with keys in this chunk: the warps' merge, then the running merge (merge_chunk's formula)
#pragma unroll
        for (int q = 0; q < QB; q++) {
            if (q >= nq || c0 > p0 + q / nh)
                continue;
            float M = -INFINITY;
            for (int w = 0; w < ATT_WARPS; w++)
                M = ms[w][q] > M ? ms[w][q] : M;
            float L = 0.0f, f[ATT_WARPS];
            for (int w = 0; w < ATT_WARPS; w++) {
                f[w] = ms[w][q] == -INFINITY ? 0.0f : expf(ms[w][q] - M);
                L = __fmaf_rn(ls[w][q], f[w], L);
            }
            const float Mn = M > Mr[q] ? M : Mr[q];
            const float fa = Mr[q] == -INFINITY ? 0.0f : expf(Mr[q] - Mn), fb = expf(M - Mn);
            Lr[q] = __fadd_rn(__fmul_rn(Lr[q], fa), __fmul_rn(L, fb));
            for (int d = threadIdx.x; d < hd; d += blockDim.x) {
                float o = 0.0f;
                for (int w = 0; w < ATT_WARPS; w++)
                    o = __fmaf_rn(accs[w][q][d], f[w], o);
                vs[q][d] = __fadd_rn(__fmul_rn(vs[q][d], fa), __fmul_rn(o, fb));
            }
            Mr[q] = Mn;
        }
        __syncthreads(); // accs, ms, ls reused by the next chunk
    }
#pragma unroll
    for (int q = 0; q < QB; q++) {
        if (q >= nq)
            continue;
        float *o = a.out + (size_t)(t0 + q / nh) * a.n_heads * hd + (size_t)(h0 + q % nh) * hd;
        for (int d = threadIdx.x; d < hd; d += blockDim.x)
            o[d] = __fdiv_rn(vs[q][d], Lr[q]);
    }
}

// kern<cache element, dims a lane> over grid, by the cache's type and dpl (1, 2, 4 or 8)
#define ATT_DPL_LAUNCH(kern, kv_t, dpl, grid)                                                                          \
    do {                                                                                                               \
        if ((dpl) == 1)                                                                                                \
            KLAUNCH((kern<kv_t, 1>), grid, ATT_WARPS * 32, st, *a);                                                    \
        else if ((dpl) == 2)                                                                                           \
            KLAUNCH((kern<kv_t, 2>), grid, ATT_WARPS * 32, st, *a);                                                    \
        else if ((dpl) == 4)                                                                                           \
            KLAUNCH((kern<kv_t, 4>), grid, ATT_WARPS * 32, st, *a);                                                    \
        else                                                                                                           \
            KLAUNCH((kern<kv_t, 8>), grid, ATT_WARPS * 32, st, *a);                                                    \
    } while (0)
// k_attention_grp<cache element, dims a lane, queries a block> by the queries a block (KC_ATTN_GROUP_QUERIES)
#define ATT_GRP_LAUNCH(kern, kv_t, qb, grid)                                                                           \
    do {                                                                                                               \
        if ((qb) == 8)                                                                                                 \
            KLAUNCH((kern<kv_t, 2, 8>), grid, ATT_WARPS * 32, st, *a);                                                 \
        else if ((qb) == 4)                                                                                            \
            KLAUNCH((kern<kv_t, 4, 4>), grid, ATT_WARPS * 32, st, *a);                                                 \
        else                                                                                                           \
            KLAUNCH((kern<kv_t, 8, 2>), grid, ATT_WARPS * 32, st, *a);                                                 \
    } while (0)
// LAUNCH(kern, cache element, n, grid) by the cache's type
#define ATT_DISPATCH(LAUNCH, kern, kv_dt, n, grid)                                                                     \
    do {                                                                                                               \
        if ((kv_dt) == KC_F32)                                                                                         \
            LAUNCH(kern, float, n, grid);                                                                              \
        else if ((kv_dt) == KC_F16)                                                                                    \
            LAUNCH(kern, kv_half, n, grid);                                                                            \
        else                                                                                                           \
            LAUNCH(kern, uint16_t, n, grid);                                                                           \
    } while (0)

cudaError_t kc_attention(cudaStream_t st, const kc_attn *a)
{
    if (a->T <= 0)
        return cudaSuccess;
    // a block a row: with the rotary 512 threads (a row's q and k pairs, over a thousand in 1.1B-8B models,
    // are a chain of dependent loads and stores a thread: a batch-1 step's one block takes few rounds)
    const int threads = a->rope_cs ? 512 : 128;
    if (a->kv_dt == KC_F32)
        KLAUNCH((k_kv_store<float>), a->T, threads, st, *a);
    else if (a->kv_dt == KC_F16)
        KLAUNCH((k_kv_store<kv_half>), a->T, threads, st, *a);
    else
        KLAUNCH((k_kv_store<uint16_t>), a->T, threads, st, *a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    if (a->n_heads > 65535)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)a->T, (unsigned)a->n_heads);
    const int dpl = a->head_dim <= 32 ? 1 : a->head_dim <= 64 ? 2 : a->head_dim <= 128 ? 4 : 8;
    if (a->part && a->max_chunks > 1) { // flash-decoding: a block a chunk, then the merge
        if (a->max_chunks > 65535)
            return cudaErrorInvalidValue;
        const dim3 g3((unsigned)a->T, (unsigned)a->n_heads, (unsigned)a->max_chunks);
        ATT_DISPATCH(ATT_DPL_LAUNCH, k_attention_part, a->kv_dt, dpl, g3);
        e = cudaGetLastError();
        if (e != cudaSuccess)
            return e;
        KLAUNCH((k_attention_merge), grid, ATT_WARPS * 32, st, *a);
        return cudaGetLastError();
    }
    if (a->grp_heads > 0) { // the grouped form: a block a tile's queries of a KV head
        const int G = a->n_heads / a->n_kv_heads, qb = KC_ATTN_GROUP_QUERIES(a->head_dim);
        const int n_sub = (G + a->grp_heads - 1) / a->grp_heads;
        if (a->grp_heads > qb || a->n_tiles <= 0 || (long)a->n_kv_heads * n_sub > 65535)
            return cudaErrorInvalidValue;
        const dim3 gg((unsigned)a->n_tiles, (unsigned)(a->n_kv_heads * n_sub));
        ATT_DISPATCH(ATT_GRP_LAUNCH, k_attention_grp, a->kv_dt, qb, gg);
        return cudaGetLastError();
    }
    ATT_DISPATCH(ATT_DPL_LAUNCH, k_attention, a->kv_dt, dpl, grid);
    return cudaGetLastError();
}
