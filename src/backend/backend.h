/* Compute backend interface: a table of operations behind an opaque handle
 * (as ggml's ggml_backend_i). The stage (stage.c) drives the decoder blocks
 * through these operations only, so a backend (cpu now, cuda later) provides
 * memory, weight storage and kernels and nothing else. No device types appear
 * here: a backend pointer may be device memory the host never dereferences.
 *
 * Memory: every pointer an operation takes was obtained from the same
 * backend's alloc unless it says "host". Activations are row-major f32;
 * token ids int32. Host <-> backend traffic is explicit (upload, download);
 * operations may run asynchronously, and sync waits for all of them (a host
 * read of downloaded data is valid only after sync).
 *
 * Weights belong to the backend: put_linear takes a checkpoint tensor as
 * stored (f32/f16/bf16, host memory such as the mmap, plus the adapter's row
 * order, parts to stack and transposition) and keeps it in the dtype asked
 * for, in the layout the backend's kernels want. weight_bytes gives the exact
 * bytes of that storage without a backend instance, for the planner.
 *
 * Errors: operations return pb_status (a GPU kernel launch can fail); bad
 * arguments the stage validated cannot make them fail, only a failing device
 * or a call larger than reserve allowed.
 *
 * Batch invariance: every operation computes each token row (and each
 * sequence's attention) with a reduction order that depends only on that row,
 * never on how many rows or sequences the call holds. */
#ifndef PB_BACKEND_H
#define PB_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"
#include "model/config.h"

typedef struct pb_backend pb_backend;

/* ---- weights ---- */

/* --weights-dtype: how checkpoint matrices are kept. */
typedef enum pb_wdtype {
    PB_WDTYPE_STORED = 0, /* as in the checkpoint (f32, f16, bf16; f64 becomes f32) */
    PB_WDTYPE_F32,        /* converted to f32 (exact) */
    PB_WDTYPE_BF16,       /* rounded to bf16 (nearest even) */
    PB_WDTYPE_INT8        /* quantized to int8 with a scale per group (PB_DT_Q8; inexact) */
} pb_wdtype;

/* "stored", "f32", "bf16", "int8" <-> pb_wdtype; parse returns -1 when unknown. */
int pb_wdtype_parse(const char *s, pb_wdtype *out);
const char *pb_wdtype_name(pb_wdtype w);
/* The element type a matrix stored as `stored` is kept in under policy w;
 * router: an MoE router, which int8 leaves as stored (as llama.cpp's
 * quantizer does: a few of its errors can send a token to other experts). */
pb_dtype pb_wdtype_resolve(pb_wdtype w, pb_dtype stored, bool router);
/* PB_OK where the backend can keep matrices under policy w, else a usage
 * error naming what it keeps (ops->weight_dtypes). */
struct pb_backend_ops;
pb_status pb_wdtype_check(const struct pb_backend_ops *ops, pb_wdtype w);
/* The same for an FP8 checkpoint (cfg->fp8): kept as stored needs a backend
 * that keeps F8_E4M3, else a usage error asking for --weights-dtype bf16. */
pb_status pb_wdtype_check_model(const struct pb_backend_ops *ops, pb_wdtype w, const pb_model_config *cfg);

/* --kv-dtype: the element type of the KV cache. */
typedef enum pb_kvdtype {
    PB_KVDTYPE_AUTO = 0, /* the backend's own default (ops->kv_dtype: cpu f32, cuda bf16) */
    PB_KVDTYPE_F32,
    PB_KVDTYPE_F16,      /* rounded to nearest even: half the memory and cache reads of f32 */
    PB_KVDTYPE_BF16
} pb_kvdtype;

/* "auto", "f32", "f16", "bf16" <-> pb_kvdtype; parse returns -1 when unknown. */
int pb_kvdtype_parse(const char *s, pb_kvdtype *out);
const char *pb_kvdtype_name(pb_kvdtype k);

/* --matmul-precision: what the products of a matrix multiply take. */
typedef enum pb_mmprec {
    PB_MMPREC_DEFAULT = 0, /* not given: f32, unless the environment asks otherwise (PB_CPU_ISA) */
    PB_MMPREC_F32,         /* exact: f32 activations times the weights' exact values */
    PB_MMPREC_BF16,        /* activations rounded to bf16 for matrices kept in bf16 (inexact) */
    PB_MMPREC_BF16_AMX     /* the same on the CPU's AMX tile unit: other sums, other bits (cpu) */
} pb_mmprec;

/* "f32", "bf16", "bf16-amx" <-> pb_mmprec; parse returns -1 when unknown. */
int pb_mmprec_parse(const char *s, pb_mmprec *out);
const char *pb_mmprec_name(pb_mmprec p);

/* Layout of a weight's elements in backend memory. */
typedef enum pb_wlayout {
    PB_WLAYOUT_ROWS = 0,  /* row-major [n_out, n_in] (nn.Linear) */
    PB_WLAYOUT_CPU_PACKED /* the CPU kernels' panels (src/cpu/kernels.h) */
} pb_wlayout;

/* A matrix W [n_out, n_in] (y = x W^T + b) owned by a backend. The fields
 * describe it; impl is the backend's own (packed matrix, device pointer). */
typedef struct pb_weight {
    pb_dtype dtype;       /* element type kept */
    pb_wlayout layout;
    int n_out, n_in;
    uint64_t bytes;       /* backend memory held, bias included */
    const float *bias;    /* backend memory [n_out], or NULL */
    void *impl;
} pb_weight;

/* One checkpoint tensor contributing `rows` output rows, as stored. */
typedef struct pb_wpart {
    const void *data;     /* host, little-endian (e.g. into the mmap) */
    pb_dtype dtype;       /* F32, F16, BF16, F64 or F8_E4M3 */
    int rows;
    bool transposed;      /* stored [n_in, rows] (GPT-2 Conv1D) instead of [rows, n_in] */
    const char *name;     /* for messages */
    /* F8_E4M3 (a fine-grained FP8 checkpoint; never transposed): element (r, k)
     * is e4m3 x scale[r / block_rows][k / block_cols], one f32 rounding */
    const void *scale;    /* host [ceil(rows / block_rows), ceil(n_in / block_cols)], finite */
    pb_dtype scale_dtype; /* F32, F16 or BF16 */
    int block_rows, block_cols; /* block_cols a multiple of 64 */
} pb_wpart;

/* n elements of an F8_E4M3 part's row r from column k0 as f32 (its values as
 * the CPU kernels compute them) */
void pb_wpart_f8_row(const pb_wpart *p, int n_in, int r, int k0, int n, float *out);

/* A linear layer to store: parts stacked along output rows (q | k | v from
 * three tensors, gate | up), then reordered: output row r is stacked row
 * row_perm[r] (a fused per-head qkv into q | k | v). */
typedef struct pb_linear_src {
    int n_out, n_in;
    int n_parts;          /* 1 .. 3; sum of rows == n_out */
    const pb_wpart *parts;
    const int *row_perm;  /* host [n_out], or NULL */
    const float *bias;    /* host f32 [n_out] in output order, or NULL */
} pb_linear_src;

/* ---- attention ---- */

/* Rotary embedding of q and k heads. */
typedef struct pb_rope_desc {
    pb_rope_style style; /* pairing: (2i, 2i+1) or (i, i + rot/2) */
    int rot_dim;         /* leading dims of each head that rotate (even, <= head_dim) */
} pb_rope_desc;

/* Attention of one layer over a batch of sequences.
 * q:    [T, n_heads * head_dim] at row stride q_stride (queries, rotated)
 * k, v: [T, n_kv_heads * head_dim] at row stride kv_stride (new keys/values,
 *       rotated), written into the cache before attending.
 * Sequence s owns token rows [tok_start[s], tok_start[s] + n_tokens[s]), at
 * positions pos[s] + i (< cache_len); its caches are k_cache[s] / v_cache[s],
 * kv_bytes(kv_dtype, cache_len, n_kv_heads, head_dim) bytes each in the
 * backend's own layout of kv_dtype elements (new keys and values rounded to
 * it, nearest even): only attention reads or writes them.
 * Query at p sees keys j, p - window < j <= p (window > 0) or j <= p;
 * score = scale * q.k (+ alibi[h] * j), then softcap * tanh(score / softcap)
 * when softcap > 0 (Gemma's attn_logit_softcapping).
 * out:  [T, n_heads * head_dim] (contiguous). */
typedef struct pb_attn_args {
    int n_seqs;
    const int *tok_start, *pos, *n_tokens;  /* host arrays [n_seqs] */
    void *const *k_cache, *const *v_cache;  /* host arrays [n_seqs] of backend pointers */
    int cache_len;                          /* positions each cache holds */
    pb_dtype kv_dtype;                      /* the caches' elements: one of ops->kv_dtypes */
    const float *q, *k, *v;
    int q_stride, kv_stride;
    float *out;
    int n_heads, n_kv_heads, head_dim;
    float scale;          /* multiplies q.k */
    const float *alibi;   /* host [n_heads] slopes, or NULL: score += slope * key_pos */
    int window;           /* > 0: query at p sees keys p - window + 1 .. p; 0 = all */
    float softcap;        /* > 0: scores capped by softcap * tanh(score / softcap) */
    /* NULL, or: q's and k's heads are not rotated yet; the first rope->rot_dim
     * dims of each are rotated in place first by the rope op's arithmetic and
     * angles rope_cs ([T, rot_dim/2, 2], backend memory), so q and k must be
     * writable rows. Only through pb_backend_attention, which calls the rope
     * op first for a backend without attn_rope. */
    const pb_rope_desc *rope;
    const float *rope_cs;
} pb_attn_args;

/* Largest calls to come (reserve), so that later calls do not allocate. */
typedef struct pb_backend_limits {
    int max_seqs;    /* sequences per attention call */
    int max_keys;    /* keys per sequence (max_seq_len) */
    int max_heads;   /* query heads */
    int max_tokens;  /* rows per call (max_batch_tokens) */
    int max_dim;     /* largest n_in or n_out of a linear layer */
    int head_dim;    /* attention head width */
    int narrow_in;   /* largest n_in of a bf16 or f16 linear layer (0: none): x's rows rounded to the weight's type */
    int vocab;       /* logits a row of sample (the last stage's vocabulary; 0: the stage samples nothing) */
} pb_backend_limits;

/* One row of pb_backend_ops.sample: the host sampler's settings and the
 * key of its draw (src/gen/sample.h's, as plain numbers), the sequence's
 * history (host ids; only read where repetition_penalty != 1), and whether
 * the EOS ids (the call's mask_ids) are masked to -inf first. */
typedef struct pb_sample_row {
    float temperature, top_p, min_p, repetition_penalty;
    float frequency_penalty, presence_penalty; /* over hist[prompt_len..n_hist) (pb_sample_params) */
    int32_t prompt_len;
    int32_t top_k;
    uint64_t seed, record, step;
    const int32_t *hist;
    int32_t n_hist;
    uint8_t masked;
} pb_sample_row;

typedef struct pb_backend_ops {
    const char *name;
    pb_dtype kv_dtype;  /* the KV cache's element type by default (--kv-dtype auto) */
    uint32_t kv_dtypes; /* those it can attend over: bit (1u << dtype) for each */
    uint32_t weight_dtypes; /* put_linear's store dtypes: bit (1u << dtype) for each (PB_DT_Q8: int8) */
    /* Bytes of one layer's K (or V) cache of one sequence of cache_len
     * positions in elements of kv (one of kv_dtypes; needs no instance). */
    uint64_t (*kv_bytes)(pb_dtype kv, int cache_len, int n_kv_heads, int head_dim);
    /* NULL, or a function giving a short tag for a setting of this process
     * that makes the backend's results differ from its exact ones (the CPU's
     * opt-in bf16 dot products: "dots=bf16 attn=bf16"), NULL when there is none; the
     * resume fingerprint names it (needs no instance) */
    const char *(*numerics)(void);
    /* NULL (f32 products only), or: selects the matmul precision of this
     * process's backends of this kind (needs no instance; numerics then
     * names it); PB_ERR_UNSUPPORTED naming what the machine lacks */
    pb_status (*set_matmul)(pb_mmprec p);
    /* alloc returns host memory, and any host pointer may be given where an
     * op asks for backend memory (the CPU): results can be written straight
     * into the caller's buffers, with no download copy */
    bool host_memory;
    void (*free)(pb_backend *be);

    /* Memory. alloc gives zeroed, 64-byte aligned memory. */
    pb_status (*alloc)(pb_backend *be, size_t bytes, void **out);
    void (*release)(pb_backend *be, void *p);
    pb_status (*upload)(pb_backend *be, void *dst, const void *host_src, size_t bytes);
    pb_status (*download)(pb_backend *be, void *host_dst, const void *src, size_t bytes);
    pb_status (*copy)(pb_backend *be, void *dst, const void *src, size_t bytes);
    pb_status (*sync)(pb_backend *be);

    /* Weights. weight_bytes is exact for put_linear's storage (needs no instance). */
    uint64_t (*weight_bytes)(pb_dtype store, int n_out, int n_in, bool bias);
    pb_status (*put_linear)(pb_backend *be, const pb_linear_src *src, pb_dtype store, pb_weight **out);
    void (*weight_free)(pb_backend *be, pb_weight *w);
    /* NULL (no such cache), or: keep the matrices put_linear stores in the
     * file at path, made for key (the checkpoint, stage and settings): a
     * sound file there gives them without reading the checkpoint's matrices
     * (weights_cached then says true), else put_linear packs them and
     * weights_done writes the file. Problems with the file are warnings. */
    pb_status (*weights_cache)(pb_backend *be, const char *path, const char *key);
    bool (*weights_cached)(pb_backend *be);
    void (*weights_done)(pb_backend *be); /* NULL, or: the stage's last put_linear is done */

    /* Scratch for calls up to lim; scratch_bytes is what reserve allocates. */
    uint64_t (*scratch_bytes)(int threads, const pb_backend_limits *lim);
    pb_status (*reserve)(pb_backend *be, const pb_backend_limits *lim);

    /* y[M, n_out] (row stride ldy) = x[M, n_in] (row stride ldx) W^T + b. */
    pb_status (*linear)(pb_backend *be, const float *x, int ldx, int M, const pb_weight *w, float *y, int ldy);
    /* out[t, :] = W[ids[t] + offset, :] as f32 (+= when accumulate), out row
     * stride n_in; ids backend [T]: an id outside the table gives PB_ERR_INPUT. */
    pb_status (*gather)(pb_backend *be, float *out, const pb_weight *table, const int32_t *ids, int T, int offset,
                        bool accumulate);
    /* out = norm(x) * w (+ b) over rows of n; LayerNorm (b may be NULL) or RMSNorm. out may be x. */
    pb_status (*norm)(pb_backend *be, pb_norm kind, float *out, const float *x, int rows, int n, const float *w,
                      const float *b, float eps);
    /* x += a (+ a2 when a2), then out = norm(x) as norm: the residual add
     * fused with the next norm. out may be x. NULL: the stage calls add, norm. */
    pb_status (*add_norm)(pb_backend *be, pb_norm kind, float *out, float *x, const float *a, const float *a2,
                          int rows, int n, const float *w, const float *b, float eps);
    /* Rotate the first rot_dim dims of each of n_heads heads in rows of x
     * (row stride ld) by the per-token angles cs: [T, rot_dim/2, 2] (cos, sin). */
    pb_status (*rope)(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const pb_rope_desc *r,
                      const float *cs);
    /* cs[t, i] = (cos, sin)(pos_scaled[t] * inv_freq[i]) in f32; pos_scaled host [T], inv_freq host [n_freq]. */
    pb_status (*rope_angles)(pb_backend *be, float *cs, const float *pos_scaled, int T, const float *inv_freq,
                             int n_freq);
    pb_status (*attention)(pb_backend *be, const pb_attn_args *a);
    /* attention takes a->rope itself (the same bits as the rope op before it:
     * CUDA rotates as it stores the keys, one launch fewer a layer) */
    bool attn_rope;
    /* NULL, or: a sequence's cache of one layer starts as another's (a
     * shared prompt prefix, a beam's parent): K and V of the first n positions copied from
     * src to dst (kv_bytes(kv, cache_len, ...) each, the backend's layout),
     * those before `from` (0 <= from < n) already the same in both (a beam's prompt): at least [from, n).
     * dst's positions past n may change too: attention writes a position
     * before any query sees it. NULL: the stage copies the whole caches. */
    pb_status (*kv_copy)(pb_backend *be, pb_dtype kv, int cache_len, int n_kv_heads, int head_dim, void *dst_k,
                         void *dst_v, const void *src_k, const void *src_v, int from, int n);

    /* x[rows, n] (row stride ld) = act(x) in place. */
    pb_status (*act)(pb_backend *be, pb_act act, float *x, int ld, int rows, int n);
    /* out[rows, n] = act(gu[:, 0:n]) * gu[:, n:2n]; gu row stride ldgu >= 2n (SwiGLU). */
    pb_status (*glu)(pb_backend *be, pb_act act, float *out, const float *gu, int ldgu, int rows, int n);
    /* y = glu(gu) W^T (+ b), as glu into mid then linear (the same bits);
     * mid [rows, n] is scratch whose contents after are unspecified. NULL:
     * the stage calls glu, then linear. (The CPU backend converts each glu
     * row straight to the bf16 products' pairs.) */
    pb_status (*glu_linear)(pb_backend *be, pb_act act, float *mid, const float *gu, int ldgu, int rows, int n,
                            const pb_weight *w, float *y, int ldy);
    /* The gated MLP: y = glu(x Wgu^T) Wd^T (each + its bias; gu_w n_out =
     * 2 n), the bits of linear into gu (row stride ldgu), then glu_linear;
     * gu [rows, ldgu] and mid [rows, n] are scratch whose contents after are
     * unspecified. NULL: the stage calls linear, then glu_linear. (The CPU
     * backend's bf16-amx products take the activation as the first
     * product's tiles are stored, straight to the second's pairs in mid.) */
    pb_status (*mlp_glu)(pb_backend *be, pb_act act, const float *x, int ldx, int rows, const pb_weight *gu_w,
                         float *gu, int ldgu, float *mid, int n, const pb_weight *down, float *y, int ldy);
    /* y[i] += x[i] (y[i] += x[i] + x2[i] when x2 != NULL), i < n; y overlaps neither. */
    pb_status (*add)(pb_backend *be, float *y, const float *x, const float *x2, size_t n);
    /* dst[i, :] = src[rows[i], :], rows host [n_rows], row width n. */
    pb_status (*select_rows)(pb_backend *be, float *dst, const float *src, int n, const int *rows, int n_rows);
    /* y[rows[i], :] += w[i] * x[i, :] (the product rounded to f32, then added), i < n_rows; rows and
     * w host [n_rows], rows distinct within a call; row width n. The experts' weighted sum. */
    pb_status (*scatter_add)(pb_backend *be, float *y, const float *x, int n, const int *rows, const float *w,
                             int n_rows);

    /* Gemma. x[i] *= s, i < n (the embedding scale). */
    pb_status (*scale)(pb_backend *be, float *x, size_t n, float s);
    /* x[i] = cap * tanh(x[i] / cap), i < n (final logit soft-capping). */
    pb_status (*softcap)(pb_backend *be, float *x, size_t n, float cap);
    /* RMSNorm in place of each of n_heads heads (head_dim wide, at head_dim
     * steps) in T rows of x at row stride ld: x * rsqrt(mean(x^2) + eps) * w[d]
     * (per-head q/k norms; w holds Gemma's 1 + weight already). */
    pb_status (*head_norm)(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const float *w,
                           float eps);

    /* Greedy picks without the logits leaving the device. ids[r] (host) =
     * the first index of the largest of x[r * ld .. r * ld + n), NaN counting
     * as -inf, and where mask_rows[r] (host, or NULL: none) the n_mask ids
     * mask_ids (host) too; 0 when nothing is above -inf (as the host
     * sampler's greedy pick). Returns once ids holds the results. NULL: the
     * caller samples from downloaded logits. */
    pb_status (*argmax)(pb_backend *be, const float *x, int rows, int n, int ld, const int32_t *mask_ids, int n_mask,
                        const uint8_t *mask_rows, int32_t *ids);
    /* Sampled picks without the logits leaving the device: ids[r] (host) =
     * pb_sample()'s id for x[r * ld .. r * ld + n) (the vocabulary) with
     * row[r]'s settings, history and key, its mask_ids at -inf first where
     * row[r].masked: the same bits as the host sampler (src/gen/sample.c's
     * steps and sums in the same order). Returns once ids holds the results.
     * NULL: the caller samples from downloaded logits. */
    pb_status (*sample)(pb_backend *be, const float *x, int rows, int n, int ld, const pb_sample_row *row,
                        const int32_t *mask_ids, int n_mask, int32_t *ids);
    /* NULL, or: calls fn(ctx, item, worker) for every item in [0, n_items) on
     * the backend's host threads (worker in [0, be->threads)), returning when
     * all are done. For host work between device calls, such as sampling a
     * micro-batch's rows (the CPU backend's compute threads, else idle then;
     * a GPU backend's host threads). Each item writes only its own outputs. */
    void (*host_run)(pb_backend *be, int n_items, void (*fn)(void *ctx, int item, int worker), void *ctx);
} pb_backend_ops;

struct pb_backend {
    const pb_backend_ops *ops;
    void *impl;
    int threads;
};

/* A backend buffer: memory from be's alloc with its element type. */
typedef struct pb_buf {
    void *data;     /* backend memory */
    pb_dtype dtype;
    size_t n;       /* elements */
} pb_buf;

/* ---- creating backends (backend.c: the one place that knows the kinds) ---- */

typedef struct pb_backend_opts {
    int threads; /* compute threads (cpu); <= 0 means 1 */
    int device;  /* cuda: device index among the visible GPUs (the rank's local rank % their count) */
} pb_backend_opts;

/* kind: "cpu", "cuda" (refused until the CUDA backend exists) or "auto"
 * (the best available: cpu in this build). */
pb_status pb_backend_create(const char *kind, const pb_backend_opts *o, pb_backend **out);
/* attention, a->rope's rotation included: the backend's own (attn_rope), or
 * the rope op over q's and k's heads first (one call where k's heads follow
 * q's in the same rows) */
pb_status pb_backend_attention(pb_backend *be, const pb_attn_args *a);
/* The token rows a's sequences own (the largest tok_start + n_tokens). */
int pb_attn_rows(const pb_attn_args *a);
/* a->rope by the rope op over q's and k's heads of rows [0, T) */
pb_status pb_backend_rope_qk(pb_backend *be, const pb_attn_args *a, int T);
/* y = glu(gu) W^T: the backend's glu_linear, or glu into mid, then linear */
pb_status pb_backend_glu_linear(pb_backend *be, pb_act act, float *mid, const float *gu, int ldgu, int rows, int n,
                                const pb_weight *w, float *y, int ldy);
/* y = glu(x Wgu^T) Wd^T: the backend's mlp_glu, or linear into gu, then pb_backend_glu_linear */
pb_status pb_backend_mlp_glu(pb_backend *be, pb_act act, const float *x, int ldx, int rows, const pb_weight *gu_w,
                             float *gu, int ldgu, float *mid, int n, const pb_weight *down, float *y, int ldy);
/* The ops table of a kind without creating one (sizes for the planner); NULL if unknown. */
const pb_backend_ops *pb_backend_ops_of(const char *kind);
/* The KV cache element type --kv-dtype k gives on backend ops: PB_ERR_USAGE
 * naming the types it has when it has no such cache. */
pb_status pb_kvdtype_resolve(const pb_backend_ops *ops, pb_kvdtype k, pb_dtype *out);
/* Selects precision p (F32 or BF16) for the backends of kind ops that this
 * process makes; PB_ERR_UNSUPPORTED, naming what is missing, where the
 * backend (or this CPU) has no such products. */
pb_status pb_mmprec_select(const pb_backend_ops *ops, pb_mmprec p);
void pb_backend_free(pb_backend *be); /* NULL-safe */

#endif
