// Kernels of the CUDA backend: a batch-invariant GEMV-style linear, gather,
// norms, rotary, activations, attention over a bf16, f16 or f32 KV cache, and
// small element-wise ops. Semantics follow src/cpu/cpu.c op by op.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/kern_cuda.cuh"

#define FULL_MASK 0xffffffffu

// kernel launch (tests/backend/cuda-emu runs these kernels on the CPU with
// its own KLAUNCH)
#ifndef KLAUNCH
#define KLAUNCH(kern, grid, block, stream, ...) kern<<<(grid), (block), 0, (stream)>>>(__VA_ARGS__)
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

// ---- gather ----

template <int DT>
__global__ void k_gather(float *out, const void *W, const int32_t *ids, int offset, int n_rows, int n_in, bool acc,
                         int *flag)
{
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
// add_norm gives the bits of add then norm.
__global__ void __launch_bounds__(NORM_THREADS)
    k_norm(bool rms, float *out, float *x, const float *a, const float *a2, int n, const float *w, const float *b,
           float eps)
{
    __shared__ float sh[NORM_THREADS / 32];
    const size_t row = (size_t)blockIdx.x * n;
    float *xr = x + row;
    if (a) {
        for (int i = threadIdx.x; i < n; i += NORM_THREADS)
            xr[i] = __fadd_rn(xr[i], a2 ? __fadd_rn(a[row + i], a2[row + i]) : a[row + i]);
    }
    const float fn = (float)n;
    float c = 0.0f;
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

cudaError_t kc_norm(cudaStream_t st, bool rms, float *out, float *x, const float *a, const float *a2, int rows, int n,
                    const float *w, const float *b, float eps)
{
    if (rows <= 0)
        return cudaSuccess;
    KLAUNCH((k_norm), rows, NORM_THREADS, st, rms, out, x, a, a2, n, w, b, eps);
    return cudaGetLastError();
}

// per-head RMSNorm, as cpu.c: sum of squares in double, scale in f32. One
// warp per (token, head).
__global__ void k_head_norm(float *x, int ld, int T, int n_heads, int hd, const float *w, float eps)
{
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

__global__ void k_rope(float *x, int ld, int T, int n_heads, int hd, int half, bool inter, const float *cs)
{
    const size_t total = (size_t)T * n_heads * half;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const int i = (int)(idx % half);
        const size_t th = idx / half;
        const int h = (int)(th % n_heads), t = (int)(th / n_heads);
        float *v = x + (size_t)t * ld + (size_t)h * hd;
        const float c = cs[((size_t)t * half + i) * 2], s = cs[((size_t)t * half + i) * 2 + 1];
        float *pa = inter ? v + 2 * i : v + i, *pb = inter ? v + 2 * i + 1 : v + i + half;
        const float a = *pa, b = *pb;
        *pa = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
        *pb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
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

__global__ void k_act(int act, float *x, int ld, int rows, int n)
{
    const size_t total = (size_t)rows * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        float *p = x + (idx / n) * ld + idx % n;
        *p = act_f(act, *p);
    }
}

__global__ void k_glu(int act, float *out, const float *gu, int ldgu, int rows, int n)
{
    const size_t total = (size_t)rows * n;
    for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total;
         idx += (size_t)gridDim.x * blockDim.x) {
        const size_t r = idx / n, i = idx % n;
        const float *g = gu + r * ldgu;
        out[idx] = __fmul_rn(act_f(act, g[i]), g[n + i]);
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
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = __fmul_rn(x[i], s);
}

__global__ void k_softcap(float *x, size_t n, float cap)
{
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
template <typename kv_t> __global__ void k_kv_store(kc_attn a)
{
    const int t = blockIdx.x, s = a.tok_seq[t];
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
#define ATT_DPL (KC_ATTN_MAX_HEAD_DIM / 32) // head dims per lane

// One block per (token row, query head); the block's result depends only on
// that query and its sequence's cache, so a sequence's output is the same
// alone or in any batch. Warp w takes keys lo + w, lo + w + 4, ... in order:
// the q.k dot product is split over lanes (dims lane + 32 i) and reduced by
// a fixed butterfly; an online softmax (running max, sum, V accumulator per
// warp) then the four warps are merged in order 0..3. f32 math on the
// cache's values.
//
// Long contexts at small batch leave most SMs idle here (T * n_heads
// blocks): split-K ("flash-decoding") goes here later, each split a fixed
// key range merged in a fixed order so that the result stays invariant.
template <typename kv_t> __global__ void __launch_bounds__(ATT_WARPS * 32) k_attention(kc_attn a)
{
    __shared__ float qs[KC_ATTN_MAX_HEAD_DIM];
    __shared__ float accs[ATT_WARPS][KC_ATTN_MAX_HEAD_DIM];
    __shared__ float ms[ATT_WARPS], ls[ATT_WARPS];
    const int t = blockIdx.x, h = blockIdx.y;
    const int s = a.tok_seq[t];
    if (s < 0)
        return; // the whole block
    const int hd = a.head_dim, kvd = a.n_kv_heads * hd, g = h / (a.n_heads / a.n_kv_heads);
    const int p = a.pos[s] + t - a.tok_start[s];
    const int lo = a.window > 0 && p - a.window + 1 > 0 ? p - a.window + 1 : 0;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const float *q = a.q + (size_t)t * a.q_stride + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x)
        qs[d] = q[d];
    __syncthreads();
    float qr[ATT_DPL], acc[ATT_DPL];
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        const int d = lane + 32 * i;
        qr[i] = d < hd ? qs[d] : 0.0f;
        acc[i] = 0.0f;
    }
    const float slope = a.alibi ? a.alibi[h] : 0.0f;
    const kv_t *kc = (const kv_t *)a.k_cache[s] + (size_t)g * hd, *vc = (const kv_t *)a.v_cache[s] + (size_t)g * hd;
    float m = -INFINITY, l = 0.0f;
    for (int j = lo + warp; j <= p; j += ATT_WARPS) {
        const kv_t *kr = kc + (size_t)j * kvd, *vr = vc + (size_t)j * kvd;
        float dot = 0.0f;
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                dot = __fmaf_rn(qr[i], from_kv(kr[d]), dot);
        }
#pragma unroll
        for (int off = 16; off >= 1; off >>= 1)
            dot = __fadd_rn(dot, __shfl_xor_sync(FULL_MASK, dot, off));
        float sc = __fmul_rn(dot, a.scale);
        if (a.alibi)
            sc = __fadd_rn(sc, __fmul_rn(slope, (float)j)); // Bloom: slope * key position
        if (a.softcap > 0)
            sc = __fmul_rn(tanhf(__fdiv_rn(sc, a.softcap)), a.softcap);
        if (sc > m) {
            const float corr = expf(m - sc); // 0 for the first key
            l = __fmul_rn(l, corr);
#pragma unroll
            for (int i = 0; i < ATT_DPL; i++)
                acc[i] = __fmul_rn(acc[i], corr);
            m = sc;
        }
        const float e = expf(sc - m);
        l = __fadd_rn(l, e);
#pragma unroll
        for (int i = 0; i < ATT_DPL; i++) {
            const int d = lane + 32 * i;
            if (d < hd)
                acc[i] = __fmaf_rn(e, from_kv(vr[d]), acc[i]);
        }
    }
    if (lane == 0) {
        ms[warp] = m;
        ls[warp] = l;
    }
#pragma unroll
    for (int i = 0; i < ATT_DPL; i++) {
        const int d = lane + 32 * i;
        if (d < hd)
            accs[warp][d] = acc[i];
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
    float *o = a.out + (size_t)t * a.n_heads * hd + (size_t)h * hd;
    for (int d = threadIdx.x; d < hd; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATT_WARPS; w++)
            v = __fmaf_rn(accs[w][d], f[w], v);
        o[d] = __fdiv_rn(v, L);
    }
}

cudaError_t kc_attention(cudaStream_t st, const kc_attn *a)
{
    if (a->T <= 0)
        return cudaSuccess;
    if (a->kv_dt == KC_F32)
        KLAUNCH((k_kv_store<float>), a->T, 128, st, *a);
    else if (a->kv_dt == KC_F16)
        KLAUNCH((k_kv_store<kv_half>), a->T, 128, st, *a);
    else
        KLAUNCH((k_kv_store<uint16_t>), a->T, 128, st, *a);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess)
        return e;
    if (a->n_heads > 65535)
        return cudaErrorInvalidValue;
    const dim3 grid((unsigned)a->T, (unsigned)a->n_heads);
    if (a->kv_dt == KC_F32)
        KLAUNCH((k_attention<float>), grid, ATT_WARPS * 32, st, *a);
    else if (a->kv_dt == KC_F16)
        KLAUNCH((k_attention<kv_half>), grid, ATT_WARPS * 32, st, *a);
    else
        KLAUNCH((k_attention<uint16_t>), grid, ATT_WARPS * 32, st, *a);
    return cudaGetLastError();
}
