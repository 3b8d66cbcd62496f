/* CPU compute kernels of our own: packed weight matrices with a batch-invariant
 * matmul (decode GEMV and prefill GEMM share one reduction order), and GQA
 * attention over an f32, f16 or bf16 KV cache. Runtime dispatch picks the widest ISA the
 * CPU has (AVX-512F, AVX2+FMA+F16C, portable C); PB_CPU_ISA=portable|avx2|avx512
 * in the environment forces one (refused when the CPU lacks it), and
 * PB_CPU_ISA=avx512bf16 opts in to the inexact bf16 products on vdpbf16ps.
 *
 * Batch invariance: every output element y[i, j] is reduced over k in an order
 * that depends only on n_in, never on M, on the row's place in the call, on
 * the thread count or on the ISA path: all paths give bit-identical results.
 *
 * This header is the contract between the kernels (kern_*.c) and the CPU
 * backend (cpu.c), which is their only user. */
#ifndef PB_CPU_KERNELS_H
#define PB_CPU_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"
#include "cpu/pool.h"

/* ---- ISA dispatch ---- */
/* PB_ISA_AVX512BF16 is opt-in only (never chosen by itself): the AVX-512
 * path with the bf16 products (below) on vdpbf16ps. */
typedef enum pb_cpu_isa { PB_ISA_PORTABLE = 0, PB_ISA_AVX2, PB_ISA_AVX512, PB_ISA_AVX512BF16, PB_ISA_COUNT } pb_cpu_isa;

/* The bf16 products (--matmul-precision bf16), off by default: bf16 weights
 * multiply activations rounded to bf16 as vdpbf16ps does (relative error of
 * a dot product about 2^-9 against the exact paths), on every path: the
 * instruction where the CPU has AVX512-BF16 and runs it faster than its
 * emulation, the same bits emulated with fmas elsewhere. Batch-invariant,
 * and the same bits on every path, like the exact products. Also on while
 * PB_ISA_AVX512BF16 is the active path. */
void pb_cpu_set_bf16_products(bool on);
bool pb_cpu_bf16_products(void); /* on, in either form (the AMX one below included) */
/* --matmul-precision bf16-amx: the weights' products on the AMX tile unit
 * (tdpbf16ps; Intel Xeon from Sapphire Rapids on), activations rounded to
 * bf16 as above but the sums of each 32 k its own: the bits differ from the
 * other paths' (relative error of a dot product about 2^-9 against the
 * exact ones all the same), batch-invariant like them. Attention over a
 * bf16 KV cache takes the tile unit for its two products as well
 * (kern_attn.c). f16 and f32 weights take it too, each weight split
 * exactly into 2 or 3 bf16 pieces (kern_amx.c): the activations rounded,
 * the weights exact. Everything else takes the exact AVX-512 kernels.
 * PB_ERR_UNSUPPORTED where the CPU, the OS or the build lacks AMX-BF16, or
 * PB_CPU_ISA holds the kernels below AVX-512. Off: the bf16 products off. */
pb_status pb_cpu_set_amx(bool on);
bool pb_cpu_amx(void);            /* on */
bool pb_cpu_amx_available(void);  /* this CPU, OS and build can run it */
/* they take vdpbf16ps on this CPU (which has it, and runs it faster than the
 * emulation: AMD, not Intel) */
bool pb_kdpbf16_preferred(void);

pb_cpu_isa pb_cpu_isa_best(void);            /* widest exact path the CPU (and build) supports */
bool pb_cpu_isa_available(pb_cpu_isa isa);  /* this CPU and build can run isa */
pb_cpu_isa pb_cpu_isa_active(void);          /* the one in use (PB_CPU_ISA or best) */
pb_status pb_cpu_isa_set(pb_cpu_isa isa);    /* tests: force a path; PB_ERR_UNSUPPORTED if unavailable */
const char *pb_cpu_isa_name(pb_cpu_isa isa); /* "portable", "avx2", "avx512", "avx512bf16" */

/* ---- packed weight matrices ---- */

/* W [n_out, n_in] (nn.Linear layout), y = x W^T. */
typedef struct pb_kmat pb_kmat;

typedef struct pb_kmat_src {
    const void *data;   /* host memory, little-endian, e.g. an mmapped checkpoint tensor */
    pb_dtype dtype;     /* PB_DT_F32, PB_DT_F16 or PB_DT_BF16 */
    bool transposed;    /* stored [n_in, n_out] (GPT-2 Conv1D) instead of [n_out, n_in] */
    const int *row_perm;/* NULL, or [n_out]: packed output row r is source row row_perm[r] */
    /* n_parts > 1: the source rows are several untransposed tensors of dtype
     * stacked (q | k | v), part i holding part_rows[i] rows at parts[i]
     * (data unused): packed without a stacked copy */
    int n_parts;
    const void *const *parts;
    const int *part_rows;
    /* dtype PB_DT_F8_E4M3 (untransposed): element (r, k) is e4m3(byte) x
     * scale[r / block_rows][k / block_cols] of its part's scales, the
     * scale_inv tensors [ceil(rows / block_rows), ceil(n_in / block_cols)]
     * of scale_dtype (F32, BF16, F16), finite; block_cols a multiple of 64,
     * no byte NaN (0x7f, 0xff): checked by the caller */
    const void *scale;                /* n_parts <= 1 */
    const void *const *part_scales;   /* n_parts > 1 */
    pb_dtype scale_dtype;
    int block_rows, block_cols;
} pb_kmat_src;

/* Packs src into the kernels' layout, storing elements as store_dt (PB_DT_F32,
 * PB_DT_BF16 or PB_DT_F16; converting f32 -> bf16/f16 rounds to nearest even;
 * PB_DT_Q8 quantizes; PB_DT_F8_E4M3 from an f8 source only, as stored; an f8
 * source kept as another dtype goes through its f32 values).
 * Reads src once; src may be unmapped afterwards. */
pb_status pb_kmat_pack(const pb_kmat_src *src, int n_out, int n_in, pb_dtype store_dt, pb_kmat **out);
/* The same on the context's threads (k may be NULL: the calling thread); the
 * result does not depend on the thread count. */
typedef struct pb_kctx pb_kctx;
pb_status pb_kmat_pack_mt(pb_kctx *k, const pb_kmat_src *src, int n_out, int n_in, pb_dtype store_dt, pb_kmat **out);
/* Exact bytes pb_kmat_pack allocates for such a matrix (the planner's figure). */
uint64_t pb_kmat_bytes(pb_dtype store_dt, int n_out, int n_in);
void pb_kmat_free(pb_kmat *m);
/* The packed bytes of m (pb_kmat_bytes less the header), for a cache file. */
const void *pb_kmat_packed(const pb_kmat *m, size_t *bytes);
/* A matrix over packed bytes made by pb_kmat_pack of the same shape and store
 * dtype (e.g. mapped from a cache file), 64-byte aligned, not copied: they
 * must outlive the matrix, and pb_kmat_free leaves them alone. PB_ERR_FORMAT
 * when bytes is not the size such a matrix packs to. */
pb_status pb_kmat_wrap(const void *packed, size_t bytes, pb_dtype store_dt, int n_out, int n_in, pb_kmat **out);
pb_dtype pb_kmat_dtype(const pb_kmat *m);
int pb_kmat_rows(const pb_kmat *m); /* n_out */
int pb_kmat_cols(const pb_kmat *m); /* n_in */
/* out[t, 0:n_in] = W[rows[t], :] as f32 (+= when accumulate): embedding lookup
 * from the same packed matrix a tied LM head uses. Rows must be in range. */
void pb_kmat_gather(const pb_kmat *m, const int32_t *rows, int n_rows, int offset, float *out, int ldo,
                    bool accumulate);

/* Kernel context: the thread pool plus per-thread scratch, sized up front by
 * pb_kctx_reserve so that calls never allocate. */
typedef struct pb_kctx pb_kctx;
pb_status pb_kctx_create(pb_pool *pool, pb_kctx **out); /* pool may be NULL: calling thread only */
void pb_kctx_free(pb_kctx *k);
/* Calls to come have at most max_m rows with n_in <= max_k (matmul) and at
 * most max_keys keys with max_heads query heads of head_dim (attention). */
pb_status pb_kctx_reserve(pb_kctx *k, int max_m, int max_k, int max_keys, int max_heads, int head_dim);
/* The bytes such a reserve allocates for `threads` threads (the planner's figure). */
uint64_t pb_kctx_scratch_bytes(int threads, int max_m, int max_k, int max_keys, int max_heads, int head_dim);

/* y[M, n_out] (row stride ldy) = x[M, n_in] (row stride ldx) W^T (+ bias[n_out]
 * when bias != NULL), threaded over output columns. Never allocates within
 * what pb_kctx_reserve reserved; beyond it, the opt-in bf16-dot path grows
 * its activation pairs (PB_ERR_NOMEM if it cannot). */
pb_status pb_kmat_mul(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *w, const float *bias, float *y,
                      int ldy);
/* pb_kmat_mul of rows that make(ctx, r, row) writes (n_in floats each), as if
 * x held them: where the bf16 products take x as pairs, each row is made in
 * a worker's scratch and converted at once (one pass over the rows, not
 * two; x is left as it was), else the rows are made into x first. Same bits
 * as making x, then pb_kmat_mul. */
typedef void (*pb_krow_make)(void *ctx, int r, float *row);
pb_status pb_kmat_mul_made(pb_kctx *k, pb_krow_make make, void *ctx, float *x, int ldx, int M, const pb_kmat *w,
                           const float *bias, float *y, int ldy);

/* ---- attention ---- */

/* Causal attention of one layer for a batch of sequences, KV cache f32, f16 or bf16.
 * q: [T, n_heads * head_dim] at row stride q_stride (rotated), k/v new rows
 * [T, n_kv_heads * head_dim] at kv_stride, stored into the cache at their
 * positions before attending. Sequence s owns rows [tok_start[s],
 * tok_start[s] + n_tokens[s]) at positions pos[s] + i (pos[s] + n_tokens[s]
 * <= cache_len) and caches k_cache[s] / v_cache[s] of
 * pb_kattn_cache_elems(kv_dtype, cache_len, ...) elements each, in the kernels' own
 * layout (kern_attn.c): only pb_kattn_run reads or writes them.
 * Query at position p sees keys j with p - window < j <= p (window > 0) or
 * all j <= p (window == 0). score = scale * q.k (+ alibi[h] * j), then
 * softcap * tanh(score / softcap) when softcap > 0.
 * Each KV head's cache is streamed once per register tile of query rows. */
typedef struct pb_kattn_args {
    int n_seqs;
    const int *tok_start, *pos, *n_tokens;
    void *const *k_cache, *const *v_cache;
    int cache_len;      /* positions each cache holds */
    pb_dtype kv_dtype;  /* the caches' elements: PB_DT_F32, PB_DT_F16 or PB_DT_BF16 (new rows rounded, nearest even) */
    const float *q, *k, *v;
    int q_stride, kv_stride;
    float *out; /* [T, n_heads * head_dim], contiguous */
    int n_heads, n_kv_heads, head_dim;
    float scale;
    const float *alibi; /* [n_heads] or NULL */
    int window;
    float softcap;      /* > 0: Gemma's attention logit soft-cap */
} pb_kattn_args;

/* Elements (of kv_dtype) of one layer's K (or V) cache of one sequence. */
size_t pb_kattn_cache_elems(pb_dtype kv_dtype, int cache_len, int n_kv_heads, int head_dim);
/* A sequence's cache of one layer starts as another's: K and V of the
 * first n positions, those before `from` already the same in both, copied from the panel of 16 keys holding
 * `from` on (whole panels: positions past n in dst may change, as a reused slot's do; each is written before a
 * query sees it). */
void pb_kattn_copy_range(pb_dtype kv_dtype, int cache_len, int n_kv_heads, int head_dim, void *dst_k, void *dst_v,
                         const void *src_k, const void *src_v, int from, int n);
/* Per-thread scratch floats pb_kctx_reserve keeps for attention. */
size_t pb_kattn_scratch_floats(int max_keys, int max_heads, int head_dim);

pb_status pb_kattn_run(pb_kctx *k, const pb_kattn_args *a);
/* Tests and kern-bench: attention's split form (kern_attn.c) in every decode
 * call where it fits, scoring blocks of that many keys (> 0, rounded up to
 * 16); in none (< 0); or where the call's items would leave threads idle
 * (0, as in use). Either form gives the same bits. */
void pb_kattn_set_split(int keys);

/* ---- row kernels: one row on the calling thread (the backend threads over
 * rows). Bit-identical on every ISA path; sums in 16 f32 lanes reduced by a
 * fixed tree (kern_impl.h), so a row's result never depends on the batch. ---- */

/* y[0:n] = norm(x) * w (+ b when b); y may be x. rms: x * (1 / sqrt(ss / n +
 * eps)) with ss = sum x^2 (Llama RMSNorm); else LayerNorm with mean = sum / n,
 * var = sum (x - mean)^2 / n: ((x - mean) * (1 / sqrt(var + eps))) * w + b. */
void pb_krow_norm(bool rms, float *y, const float *x, int n, const float *w, const float *b, float eps);

/* y[0:n] = f(x) (* u when u != NULL); y may be x. Formulas in kern_impl.h. */
typedef enum pb_kact { PB_KACT_SILU = 1, PB_KACT_GELU_TANH, PB_KACT_RELU } pb_kact;
void pb_krow_act(pb_kact act, float *y, const float *x, const float *u, int n);

/* A gated MLP, y = (act(g) * u) down^T (+ down_bias) with [g | u] = x gu^T (+
 * gu_bias) (gu: n_out = 2 n, gate rows first), in two products instead of
 * two and a pass: under the AMX products (bf16 gu, M > 16, n a multiple of
 * 16) the first one's C tiles go through act and become the second's bf16
 * pairs at once, in scratch (64-byte aligned), not [M, 2 n] f32 rows read
 * back by act. The bits of pb_kmat_mul into gu, then pb_kmat_mul_made of
 * act's rows. pb_kmat_glu_fits says whether a call may take this form
 * (scratch_bytes enough for the pairs); else the caller takes the two. */
bool pb_kmat_glu_fits(const pb_kmat *gu, const pb_kmat *down, int M, size_t scratch_bytes);
pb_status pb_kmat_mul_glu(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *gu, const float *gu_bias,
                          pb_kact act, const pb_kmat *down, const float *down_bias, float *y, int ldy, void *scratch,
                          size_t scratch_bytes);

/* Rotates one head in place: pairs (2i, 2i+1) (interleaved) or (i, i + half)
 * by cs[2i] = cos, cs[2i+1] = sin, i < half: a' = a c - b s, b' = b c + a s. */
void pb_krow_rope(float *v, int half, bool interleaved, const float *cs);

/* The first index of the largest x[i], i < n (NaN never: a greedy pick);
 * 0 when none is above -inf. One pass for the maximum, one for its first
 * place, in vectors where the CPU has them. */
int32_t pb_krow_argmax(const float *x, int n);

/* y[i] += x[i], or y[i] += x[i] + x2[i] when x2 (that order; y overlaps
 * neither); four lanes at a time where SSE is there */
void pb_krow_add(float *y, const float *x, const float *x2, size_t n);

/* y[i] = x[i] * c (y overlaps no other part of x); four lanes at a time
 * where SSE is there */
void pb_krow_mul(float *y, const float *x, float c, size_t n);

#endif
