/* Compute backend interface: a table of operations behind an opaque handle
 * (as ggml's ggml_backend_i). The stage (stage.c) drives the decoder blocks
 * through these operations only, so a backend (cpu now, cuda later) provides
 * memory and kernels and nothing else.
 *
 * Conventions: every pointer handed to an operation was obtained from the
 * same backend's alloc (device memory for a GPU backend) unless it says
 * "host". Matrices are row-major f32. A linear layer's weight is [n_out, n_in]
 * (nn.Linear layout) and y = x W^T + b. Operations returning void never fail
 * once their arguments are valid (the stage validates them); those returning
 * pb_status fail only when asked for more than was reserved. They may run threaded.
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
#include "model/config.h"

typedef struct pb_backend pb_backend;

/* A linear layer in backend memory. */
typedef struct pb_linear {
    const float *w; /* [n_out, n_in] */
    const float *b; /* [n_out] or NULL */
    int n_out, n_in;
} pb_linear;

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
 * positions pos[s] + i; its cache rows are k_cache[s] / v_cache[s]
 * ([max_seq_len, n_kv_heads * head_dim] each).
 * out:  [T, n_heads * head_dim] (contiguous). */
typedef struct pb_attn_args {
    int n_seqs;
    const int *tok_start, *pos, *n_tokens;  /* host arrays [n_seqs] */
    float *const *k_cache, *const *v_cache; /* host arrays [n_seqs] of backend pointers */
    const float *q, *k, *v;
    int q_stride, kv_stride;
    float *out;
    int n_heads, n_kv_heads, head_dim;
    float scale;          /* multiplies q.k */
    const float *alibi;   /* host [n_heads] slopes, or NULL: score += slope * key_pos */
    int window;           /* > 0: query at p sees keys p - window + 1 .. p; 0 = all */
} pb_attn_args;

typedef struct pb_backend_ops {
    const char *name;
    void (*free)(pb_backend *be);

    /* Memory. alloc gives zeroed, 64-byte aligned memory. */
    pb_status (*alloc)(pb_backend *be, size_t bytes, void **out);
    void (*release)(pb_backend *be, void *p);
    void (*upload)(pb_backend *be, void *dst, const void *host_src, size_t bytes);
    void (*download)(pb_backend *be, void *host_dst, const void *src, size_t bytes);
    void (*copy)(pb_backend *be, void *dst, const void *src, size_t bytes);

    /* Scratch for the largest call to come, so that later calls do not allocate:
     * at most max_seqs sequences and max_keys keys per attention call, linear
     * layers with n_in + n_out <= max_dim. */
    pb_status (*reserve)(pb_backend *be, int max_seqs, int max_keys, int max_heads, int max_tokens, int max_dim);

    /* y[M, n_out] (row stride ldy) = x[M, n_in] (row stride ldx) W^T + b. */
    pb_status (*linear)(pb_backend *be, const float *x, int ldx, int M, const pb_linear *l, float *y, int ldy);

    /* out[t, :] = table[ids[t] + offset, :] (+= when accumulate); ids host [T]. */
    void (*gather_rows)(pb_backend *be, float *out, const float *table, int dim, const int32_t *ids,
                        int T, int offset, bool accumulate);
    /* out = norm(x) * w (+ b) over rows of n; LayerNorm (b may be NULL) or RMSNorm. out may be x. */
    void (*norm)(pb_backend *be, pb_norm kind, float *out, const float *x, int rows, int n,
                 const float *w, const float *b, float eps);
    /* Rotate the first rot_dim dims of each of n_heads heads in rows of x
     * (row stride ld) by the per-token angles cs: [T, rot_dim/2, 2] (cos, sin). */
    void (*rope)(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim,
                 const pb_rope_desc *r, const float *cs);
    /* cs[t, i] = (cos, sin)(pos_scaled[t] * inv_freq[i]); pos_scaled host [T], inv_freq host [rot/2]. */
    void (*rope_angles)(pb_backend *be, float *cs, const float *pos_scaled, int T,
                        const float *inv_freq, int n_freq);
    pb_status (*attention)(pb_backend *be, const pb_attn_args *a);

    /* x[rows, n] (row stride ld) = act(x) in place. */
    void (*act)(pb_backend *be, pb_act act, float *x, int ld, int rows, int n);
    /* out[rows, n] = act(gu[:, 0:n]) * gu[:, n:2n]; gu row stride 2n (SwiGLU). */
    void (*glu)(pb_backend *be, pb_act act, float *out, const float *gu, int rows, int n);
    /* y[i] += x[i] (and += x2[i] when x2 != NULL), i < n. */
    void (*add)(pb_backend *be, float *y, const float *x, const float *x2, size_t n);
    /* dst[i, :] = src[rows[i], :], rows host [n_rows], row width n. */
    void (*select_rows)(pb_backend *be, float *dst, const float *src, int n, const int *rows, int n_rows);
} pb_backend_ops;

struct pb_backend {
    const pb_backend_ops *ops;
    void *impl;
    int threads;
};

#endif
