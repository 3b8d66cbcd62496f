// Kernels of the CUDA backend (kern_cuda.cu) and their launchers, called by
// backend_cuda.cu on the backend's stream. Launchers return cudaError_t (the
// launch status); every pointer is device memory.
//
// Batch invariance: each output element's reduction order depends only on
// its own row's sizes (K for linear, n for norms, the query's keys for
// attention), never on how many rows or sequences a call holds.
#ifndef PB_KERN_CUDA_CUH
#define PB_KERN_CUDA_CUH

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

// element types of weights as the kernels see them (pb_dtype values differ)
enum kc_dtype { KC_F32 = 0, KC_BF16 = 1, KC_F16 = 2 };

// y[M, N] (row stride ldy) = x[M, K] (row stride ldx) W[N, K]^T (+ bias[N])
cudaError_t kc_linear(cudaStream_t st, const float *x, int ldx, int M, const void *W, kc_dtype dt, const float *bias,
                      float *y, int ldy, int N, int K);

// the same on the tensor cores, for bf16 and f16 W (sm_80 on): x rounded to
// W's type, f32 accumulation in a fixed order (kern_cuda.cu), batch-invariant.
// xb: device scratch of xb_bytes for x's rounded rows (NULL: none), which
// the pipelined kernel (PB_CUDA_TC_PIPE=1) and the skinny kernel's 17-64
// rows (PB_CUDA_TC_XB=1) take where they are on; it wants
// kc_linear_tc_scratch(M, K) bytes (0: not taken), less makes more rounds
cudaError_t kc_linear_tc(cudaStream_t st, const float *x, int ldx, int M, const void *W, kc_dtype dt,
                         const float *bias, float *y, int ldy, int N, int K, void *xb, size_t xb_bytes);
size_t kc_linear_tc_scratch(int M, int K);
// the most kc_linear_tc_scratch(M, k) for M <= max_M and k <= K (a stage's reserve)
size_t kc_linear_tc_scratch_max(int max_M, int K);
// y = glu(gu) W^T (+ bias) on the tensor cores: kc_linear_tc of the gated
// activation of gu's f32 rows [gate K | up K] (row stride ldgu; act a pb_act,
// kc_glu's elements, the same bits as kc_glu then kc_linear_tc), taken as the
// products load x; cudaErrorNotSupported (nothing launched) where no kernel
// takes it (unaligned rows, the tiled kernel's calls): kc_glu, then kc_linear_tc
cudaError_t kc_linear_tc_glu(cudaStream_t st, int act, const float *gu, int ldgu, int M, const void *W, kc_dtype dt,
                             const float *bias, float *y, int ldy, int N, int K, void *xb, size_t xb_bytes);

// ids[r] = the first index of the largest of row r of x (NaN, and where
// mask_rows[r] the ids mask_ids, never; 0 when none is above -inf)
cudaError_t kc_argmax(cudaStream_t st, const float *x, int rows, int n, int ld, const int32_t *mask_ids, int n_mask,
                      const uint8_t *mask_rows, int32_t *ids);

// One row of kc_sample: the host sampler's settings (src/gen/sample.h), its
// Philox counter and key words (pb_rng_uniform's), the row's history in the
// call's hist array (ids; n_hist 0 where every penalty is off: the frequency
// and presence penalties count its ids from prompt_len on), and whether the
// call's mask_ids are masked to -inf first
struct kc_sample_row {
    float temperature, top_p, min_p, rep;
    float freq, pres; // the frequency and presence penalties over hist[prompt_len..n_hist)
    int prompt_len;
    int top_k, masked, hist_off, n_hist;
    unsigned ctr[4], key[2];
};
// bytes of device work a row of n logits takes (kc_sample's work)
size_t kc_sample_work_bytes(int n);
// ids[r] = pb_sample()'s id for row r of x (n logits, row stride ld) with
// row[r]: the host sampler's steps, each element's operations and the sums
// in its order, so the same bits; work: rows x kc_sample_work_bytes(n)
cudaError_t kc_sample(cudaStream_t st, const float *x, int rows, int n, int ld, const kc_sample_row *row,
                      const int32_t *hist, const int32_t *mask_ids, int n_mask, void *work, int32_t *ids);

// an integer setting from the environment, clamped to [lo, hi]; dflt where unset
int kc_env_int(const char *name, int dflt, int lo, int hi);

// out[t, 0:n_in] (=, += when acc) W[ids[t] + offset, :]; *flag |= 1 when an id is outside [0, n_rows)
cudaError_t kc_gather(cudaStream_t st, float *out, const void *W, kc_dtype dt, const int32_t *ids, int T, int offset,
                      int n_rows, int n_in, bool acc, int *flag);

// x += a (+ a2) when a != NULL; then out = norm(x) * w (+ b) per row of n
cudaError_t kc_norm(cudaStream_t st, bool rms, float *out, float *x, const float *a, const float *a2, int rows, int n,
                    const float *w, const float *b, float eps);

cudaError_t kc_rope(cudaStream_t st, float *x, int ld, int T, int n_heads, int head_dim, int half, bool interleaved,
                    const float *cs);

// activation codes: the pb_act values (model/config.h)
cudaError_t kc_act(cudaStream_t st, int act, float *x, int ld, int rows, int n);
cudaError_t kc_glu(cudaStream_t st, int act, float *out, const float *gu, int ldgu, int rows, int n);
cudaError_t kc_add(cudaStream_t st, float *y, const float *x, const float *x2, size_t n);
cudaError_t kc_select_rows(cudaStream_t st, float *dst, const float *src, int n, const int *rows, int n_rows);
cudaError_t kc_scatter_add(cudaStream_t st, float *y, const float *x, int n, const int *rows, const float *w,
                           int n_rows);
cudaError_t kc_scale(cudaStream_t st, float *x, size_t n, float s);
cudaError_t kc_softcap(cudaStream_t st, float *x, size_t n, float cap);
cudaError_t kc_head_norm(cudaStream_t st, float *x, int ld, int T, int n_heads, int head_dim, const float *w,
                         float eps);

// Attention arguments in device memory (backend_cuda.cu uploads them).
// tok_seq[t]: the sequence owning token row t, or -1.
struct kc_attn {
    int n_seqs, T;
    void *const *k_cache, *const *v_cache; // [n_seqs] caches of kv_dt elements
    const int *tok_start, *pos, *tok_seq;
    const float *q, *k, *v;
    int q_stride, kv_stride;
    float *out;
    int n_heads, n_kv_heads, head_dim;
    float scale;
    const float *alibi; // [n_heads] or NULL
    int window;
    float softcap;
    int kv_dt; // the caches' elements (kc_dtype): f32 (exact), bf16 or f16 (nearest even)
    int chunk; // keys a chunk (KC_ATTN_CHUNK; the chunks' merge fixes the result's bits)
    int max_chunks; // the most chunks of any query of the call
    float *part;    // NULL, or [T][n_heads][max_chunks][head_dim + 2]: a block a chunk (flash-decoding)
    int lane_scores; // 1: a block's threads compute a key's score each, then the warps' sums;
                     // 0: each warp its keys' scores (the default, until 1 is measured; the same bits)
    // grouped form (k_attention_grp, where part is NULL; the host leaves it 0 with lane_scores): grp_heads > 0
    // query heads of a KV head a block, for each tile (t0, nt) of a sequence's tokens with the same first key:
    // tiles[2 i], tiles[2 i + 1], n_tiles of them (grp_heads x nt <= KC_ATTN_GROUP_QUERIES(head_dim)). 0: a
    // block a query.
    int grp_heads;
    const int *tiles;
    int n_tiles;
    // NULL, or: q's and k's heads rotated in place first, as kc_rope (the same bits), by these angles
    // ([T][rope_half][2]); the first 2 rope_half dims of a head, pairs (2i, 2i + 1) where rope_inter
    const float *rope_cs;
    int rope_half, rope_inter;
};
// the queries a grouped block takes: 16 / (dims a lane), at most 8 (heads up to 64 wide: 8, 128: 4, 256: 2)
#define KC_ATTN_GROUP_QUERIES(hd) ((hd) <= 64 ? 8 : (hd) <= 128 ? 4 : 2)
#define KC_ATTN_MAX_HEAD_DIM 256
#define KC_ATTN_CHUNK 256

// rotates q's and k's rows where rope_cs, stores this step's k/v rows (as kv_dt) at their positions, then
// attends
cudaError_t kc_attention(cudaStream_t st, const kc_attn *a);

#endif
