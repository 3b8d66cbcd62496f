/* CPU backend: weights packed by the kernels of kernels.h (kept f32, bf16 or
 * f16), the batch-invariant matmul and GQA attention from there, and small
 * threaded row kernels (norm, rotary, activations) here. */
#include "config.h"
#include "cpu/cpu.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "common/util.h"
#include "cpu/kernels.h"
#include "cpu/wcache.h"
#include "cpu/pool.h"

typedef struct cpu_impl {
    pb_pool *pool;
    pb_kctx *k;
    pb_wcache *wc; /* --weights-cache, or NULL */
} cpu_impl;

static cpu_impl *impl_of(pb_backend *be) { return be->impl; }

/* ---- memory ---- */

static size_t round64(size_t n) { return (n + 63) & ~(size_t)63; }

/* Backend memory is zeroed. Large buffers (KV cache, arena, logits) are
 * their own anonymous mapping, zero pages until written: a KV cache row
 * never reached, or arena rows a run never uses, cost no resident memory.
 * A 64-byte header before the pointer says how to release it. */
#define ALLOC_HDR 64
#define ALLOC_MAP_MIN ((size_t)1 << 20)

static pb_status cpu_alloc(pb_backend *be, size_t bytes, void **out)
{
    (void)be;
    size_t n;
    if (!pb_add_ok(bytes, 63 + ALLOC_HDR, &n))
        return pb_error(PB_ERR_NOMEM, "allocation of %zu bytes overflows", bytes);
    n &= ~(size_t)63;
    unsigned char *p;
    if (n >= ALLOC_MAP_MIN) {
        void *m = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (m == MAP_FAILED)
            return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        p = m;
    } else {
        p = aligned_alloc(64, n);
        if (!p)
            return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
        memset(p, 0, n);
    }
    memcpy(p, &n, sizeof n);
    *out = p + ALLOC_HDR;
    return PB_OK;
}

static void cpu_release(pb_backend *be, void *ptr)
{
    (void)be;
    if (!ptr)
        return;
    unsigned char *p = (unsigned char *)ptr - ALLOC_HDR;
    size_t n;
    memcpy(&n, p, sizeof n);
    if (n >= ALLOC_MAP_MIN)
        munmap(p, n);
    else
        free(p);
}

static pb_status cpu_copy(pb_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
    return PB_OK;
}

static pb_status cpu_sync(pb_backend *be)
{
    (void)be;
    return PB_OK;
}

/* ---- weights ---- */

static uint64_t cpu_weight_bytes(pb_dtype store, int n_out, int n_in, bool bias)
{
    return pb_kmat_bytes(store, n_out, n_in) + (bias ? (uint64_t)round64((size_t)n_out * sizeof(float)) : 0);
}

static void cpu_weight_free(pb_backend *be, pb_weight *w)
{
    (void)be;
    if (!w)
        return;
    pb_kmat_free(w->impl);
    cpu_release(be, (void *)w->bias);
    free(w);
}

/* Parts that pb_kmat_pack cannot take as they are (several tensors, f64) go
 * through one host copy: same-dtype untransposed parts are concatenated as
 * stored, anything else is converted to f32 [rows, n_in]. */
static pb_status stack_parts(const pb_linear_src *s, void **buf, pb_dtype *dt)
{
    bool same = true;
    for (int i = 0; i < s->n_parts; i++)
        if (s->parts[i].dtype != s->parts[0].dtype || s->parts[i].transposed || s->parts[i].dtype == PB_DT_F64 ||
            s->parts[i].dtype == PB_DT_F8_E4M3) /* f8: its values, scaled */
            same = false;
    *dt = same ? s->parts[0].dtype : PB_DT_F32;
    size_t es = pb_dtype_size(*dt), total;
    if (!pb_mul_ok((size_t)s->n_out * (size_t)s->n_in, es, &total))
        return pb_error(PB_ERR_NOMEM, "weight of %d x %d overflows", s->n_out, s->n_in);
    unsigned char *b = malloc(total ? total : 1);
    if (!b)
        return pb_error(PB_ERR_NOMEM, "out of memory stacking a %d x %d weight", s->n_out, s->n_in);
    size_t row = (size_t)s->n_in * es, off = 0;
    float *tmp = NULL;
    for (int i = 0; i < s->n_parts; i++) {
        const pb_wpart *p = &s->parts[i];
        size_t n = (size_t)p->rows * s->n_in;
        if (same) {
            memcpy(b + off, p->data, n * es);
        } else {
            float *dst = (float *)(b + off);
            if (p->dtype == PB_DT_F8_E4M3) { /* its values (never transposed) */
                for (int r = 0; r < p->rows; r++)
                    pb_wpart_f8_row(p, s->n_in, r, 0, s->n_in, dst + (size_t)r * s->n_in);
            } else if (!p->transposed) {
                pb_convert_to_f32(dst, p->data, p->dtype, n);
            } else {
                float *t2 = realloc(tmp, n * sizeof(float));
                if (!t2) {
                    free(tmp);
                    free(b);
                    return pb_error(PB_ERR_NOMEM, "out of memory converting '%s'", p->name ? p->name : "?");
                }
                tmp = t2;
                pb_convert_to_f32(tmp, p->data, p->dtype, n);
                for (int r = 0; r < p->rows; r++)
                    for (int c = 0; c < s->n_in; c++)
                        dst[(size_t)r * s->n_in + c] = tmp[(size_t)c * p->rows + r];
            }
        }
        off += (size_t)p->rows * row;
    }
    free(tmp);
    *buf = b;
    return PB_OK;
}

/* The matrix of s packed from the checkpoint. */
static pb_status pack_linear(pb_backend *be, const pb_linear_src *s, pb_dtype store, pb_kmat **out)
{
    *out = NULL;
    int rows = 0;
    for (int i = 0; i < s->n_parts; i++)
        rows += s->parts[i].rows;
    if (s->n_parts < 1 || rows != s->n_out || s->n_in < 1)
        return pb_error(PB_ERR_INTERNAL, "cpu: linear of %d x %d from %d parts of %d rows", s->n_out, s->n_in,
                        s->n_parts, rows);
    void *stacked = NULL;
    const void *part_data[8], *part_scales[8];
    int part_rows[8];
    const pb_wpart *p0 = &s->parts[0];
    pb_kmat_src src = {.data = p0->data, .dtype = p0->dtype, .transposed = p0->transposed, .row_perm = s->row_perm,
                       .scale = p0->scale, .part_scales = part_scales, .scale_dtype = p0->scale_dtype,
                       .block_rows = p0->block_rows, .block_cols = p0->block_cols};
    if (s->n_parts > 1 || src.dtype == PB_DT_F64) {
        /* parts already back to back in order (gate_proj then up_proj in a
         * safetensors file): one source, no copy (f8: each part has its scales) */
        bool adjacent = src.dtype != PB_DT_F64 && src.dtype != PB_DT_F8_E4M3 && !src.transposed;
        const unsigned char *next = s->parts[0].data;
        for (int i = 0; i < s->n_parts && adjacent; i++) {
            const pb_wpart *p = &s->parts[i];
            adjacent = p->data == (const void *)next && p->dtype == src.dtype && !p->transposed;
            next += (size_t)p->rows * (size_t)s->n_in * pb_dtype_size(p->dtype);
        }
        /* untransposed parts of one dtype (q, k, v): packed from where they are */
        bool direct = src.dtype != PB_DT_F64 && s->n_parts <= 8;
        for (int i = 0; i < s->n_parts && direct; i++)
            direct = s->parts[i].dtype == src.dtype && !s->parts[i].transposed &&
                     (src.dtype != PB_DT_F8_E4M3 ||
                      (s->parts[i].scale_dtype == p0->scale_dtype && s->parts[i].block_rows == p0->block_rows &&
                       s->parts[i].block_cols == p0->block_cols));
        if (!adjacent && direct) {
            for (int i = 0; i < s->n_parts; i++) {
                part_data[i] = s->parts[i].data;
                part_rows[i] = s->parts[i].rows;
                part_scales[i] = s->parts[i].scale;
            }
            src.n_parts = s->n_parts;
            src.parts = part_data;
            src.part_rows = part_rows;
        } else if (!adjacent) {
            PB_CHECK(stack_parts(s, &stacked, &src.dtype));
            src.data = stacked;
            src.transposed = false;
        }
    }
    pb_status st = pb_kmat_pack_mt(impl_of(be)->k, &src, s->n_out, s->n_in, store, out);
    free(stacked);
    return st;
}

static pb_status cpu_put_linear(pb_backend *be, const pb_linear_src *s, pb_dtype store, pb_weight **out)
{
    *out = NULL;
    if (store != PB_DT_F32 && store != PB_DT_BF16 && store != PB_DT_F16 && store != PB_DT_Q8 &&
        store != PB_DT_F8_E4M3)
        return pb_error(PB_ERR_UNSUPPORTED, "cpu: weights kept as %s are not supported (F32, F16, BF16, Q8, F8_E4M3)",
                        pb_dtype_name(store));
    pb_weight *w = calloc(1, sizeof *w);
    if (!w)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    pb_status st = PB_OK;
    pb_wcache *wc = impl_of(be)->wc;
    /* from the cache file, or packed from the checkpoint */
    pb_kmat *m = wc ? pb_wcache_take(wc, s->n_out, s->n_in, store) : NULL;
    if (!m)
        PB_CHECK_GOTO(pack_linear(be, s, store, &m), st, fail);
    w->impl = m;
    if (wc)
        PB_CHECK_GOTO(pb_wcache_record(wc, m), st, fail);
    w->dtype = store;
    w->layout = PB_WLAYOUT_CPU_PACKED;
    w->n_out = s->n_out;
    w->n_in = s->n_in;
    if (s->bias) {
        float *b = NULL;
        PB_CHECK_GOTO(cpu_alloc(be, (size_t)s->n_out * sizeof(float), (void **)&b), st, fail);
        memcpy(b, s->bias, (size_t)s->n_out * sizeof(float));
        w->bias = b;
    }
    w->bytes = cpu_weight_bytes(store, s->n_out, s->n_in, s->bias != NULL);
    *out = w;
    return PB_OK;
fail:
    cpu_weight_free(be, w);
    return st;
}

/* ---- matmul, gather, attention: the kernels of kernels.h ---- */

static uint64_t cpu_scratch_bytes(int threads, const pb_backend_limits *lim)
{
    return pb_kctx_scratch_bytes(threads, lim->max_tokens, lim->max_dim, lim->max_keys, lim->max_heads,
                                 lim->head_dim);
}

static pb_status cpu_reserve(pb_backend *be, const pb_backend_limits *lim)
{
    return pb_kctx_reserve(impl_of(be)->k, lim->max_tokens, lim->max_dim, lim->max_keys, lim->max_heads,
                           lim->head_dim);
}

static uint64_t cpu_kv_bytes(pb_dtype kv, int cache_len, int n_kv_heads, int head_dim)
{
    return (uint64_t)pb_kattn_cache_elems(kv, cache_len, n_kv_heads, head_dim) * pb_dtype_size(kv);
}

static pb_status cpu_kv_copy(pb_backend *be, pb_dtype kv, int cache_len, int n_kv_heads, int head_dim, void *dst_k,
                             void *dst_v, const void *src_k, const void *src_v, int from, int n)
{
    (void)be;
    pb_kattn_copy_range(kv, cache_len, n_kv_heads, head_dim, dst_k, dst_v, src_k, src_v, from, n);
    return PB_OK;
}

static pb_status cpu_linear(pb_backend *be, const float *x, int ldx, int M, const pb_weight *w, float *y, int ldy)
{
    return pb_kmat_mul(impl_of(be)->k, x, ldx, M, w->impl, w->bias, y, ldy);
}

static pb_status cpu_gather(pb_backend *be, float *out, const pb_weight *table, const int32_t *ids, int T, int offset,
                            bool accumulate)
{
    (void)be;
    for (int t = 0; t < T; t++)
        if (ids[t] < 0 || (int64_t)ids[t] + offset >= table->n_out)
            return pb_error(PB_ERR_INPUT, "gather: id %d (+ offset %d) at row %d is outside the table's %d rows",
                            (int)ids[t], offset, t, table->n_out);
    pb_kmat_gather(table->impl, ids, T, offset, out, table->n_in, accumulate);
    return PB_OK;
}

static pb_status cpu_attention(pb_backend *be, const pb_attn_args *a)
{
    pb_kattn_args k = {
        .n_seqs = a->n_seqs, .tok_start = a->tok_start, .pos = a->pos, .n_tokens = a->n_tokens,
        .k_cache = a->k_cache, .v_cache = a->v_cache, .cache_len = a->cache_len, .kv_dtype = a->kv_dtype,
        .q = a->q, .k = a->k, .v = a->v, .q_stride = a->q_stride, .kv_stride = a->kv_stride, .out = a->out,
        .n_heads = a->n_heads, .n_kv_heads = a->n_kv_heads, .head_dim = a->head_dim, .scale = a->scale,
        .alibi = a->alibi, .window = a->window, .softcap = a->softcap,
    };
    return pb_kattn_run(impl_of(be)->k, &k);
}

/* ---- row-parallel helpers ---- */

/* Items of about `grain` rows each. */
static int row_items(int rows, int grain, int *per)
{
    if (grain < 1)
        grain = 1;
    *per = grain;
    return (rows + grain - 1) / grain;
}

typedef struct norm_job {
    pb_norm kind;
    float *out, *x;
    const float *a, *a2, *w, *b;
    int rows, n, per;
    float eps;
} norm_job;

static void norm_item(void *ctx, int item, int worker)
{
    (void)worker;
    const norm_job *j = ctx;
    int r0 = item * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    const int n = j->n;
    for (int r = r0; r < r1; r++) {
        float *x = j->x + (size_t)r * n;
        if (j->a) { /* the residual add, while the row is in cache: x += a (+ a2) */
            const float *a = j->a + (size_t)r * n, *a2 = j->a2 ? j->a2 + (size_t)r * n : NULL;
            if (a2)
                for (int i = 0; i < n; i++)
                    x[i] += a[i] + a2[i];
            else
                for (int i = 0; i < n; i++)
                    x[i] += a[i];
        }
        pb_krow_norm(j->kind == PB_NORM_RMSNORM, j->out + (size_t)r * n, x, n, j->w, j->b, j->eps);
    }
}

static pb_status cpu_norm(pb_backend *be, pb_norm kind, float *out, const float *x, int rows, int n, const float *w,
                     const float *b, float eps)
{
    norm_job j = {kind, out, (float *)x, NULL, NULL, w, b, rows, n, 0, eps};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, norm_item, &j);
    return PB_OK;
}

/* x += a (+ a2), then out = norm(x): one pass over the rows */
static pb_status cpu_add_norm(pb_backend *be, pb_norm kind, float *out, float *x, const float *a, const float *a2,
                              int rows, int n, const float *w, const float *b, float eps)
{
    norm_job j = {kind, out, x, a, a2, w, b, rows, n, 0, eps};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, norm_item, &j);
    return PB_OK;
}

/* ---- rotary ---- */

static pb_status cpu_rope_angles(pb_backend *be, float *cs, const float *pos_scaled, int T, const float *inv_freq,
                            int n_freq)
{
    (void)be;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n_freq; i++) {
            /* as HF: the angle is the f32 product of position and frequency */
            float a = pos_scaled[t] * inv_freq[i];
            cs[((size_t)t * n_freq + i) * 2] = cosf(a);
            cs[((size_t)t * n_freq + i) * 2 + 1] = sinf(a);
        }
    return PB_OK;
}

typedef struct rope_job {
    float *x;
    int ld, T, n_heads, head_dim, per;
    const pb_rope_desc *r;
    const float *cs;
} rope_job;

static void rope_item(void *ctx, int item, int worker)
{
    (void)worker;
    const rope_job *j = ctx;
    const int half = j->r->rot_dim / 2;
    int t0 = item * j->per, t1 = t0 + j->per < j->T ? t0 + j->per : j->T;
    for (int t = t0; t < t1; t++) {
        const float *cs = j->cs + (size_t)t * half * 2;
        for (int h = 0; h < j->n_heads; h++) {
            float *v = j->x + (size_t)t * j->ld + (size_t)h * j->head_dim;
            pb_krow_rope(v, half, j->r->style == PB_ROPE_INTERLEAVED, cs);
        }
    }
}

static pb_status cpu_rope(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const pb_rope_desc *r,
                     const float *cs)
{
    rope_job j = {x, ld, T, n_heads, head_dim, 0, r, cs};
    int items = row_items(T, 8, &j.per);
    pb_pool_run(impl_of(be)->pool, items, rope_item, &j);
    return PB_OK;
}

/* ---- activations ---- */

static inline float act_f(pb_act act, float x)
{
    switch (act) {
    case PB_ACT_GELU_TANH: /* HF NewGELUActivation */
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case PB_ACT_BLOOM_GELU: /* bloom_gelu_forward */
        return x * 0.5f * (1.0f + tanhf(0.79788456f * x * (1.0f + 0.044715f * x * x)));
    case PB_ACT_GELU_ERF:
        return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
    case PB_ACT_RELU:
        return x > 0 ? x : 0.0f;
    case PB_ACT_SILU:
        return x / (1.0f + expf(-x));
    }
    return x;
}

/* the activations the vectorized row kernel has (others: act_f) */
static pb_kact kact_of(pb_act act)
{
    switch (act) {
    case PB_ACT_SILU:
        return PB_KACT_SILU;
    case PB_ACT_GELU_TANH:
        return PB_KACT_GELU_TANH;
    case PB_ACT_RELU:
        return PB_KACT_RELU;
    default:
        return (pb_kact)0;
    }
}

typedef struct act_job {
    pb_act act;
    pb_kact kact;
    float *x, *out;
    const float *gu;
    int ld, rows, n, per; /* ld: x's row stride (act), gu's (glu) */
} act_job;

static void act_item(void *ctx, int item, int worker)
{
    (void)worker;
    const act_job *j = ctx;
    int r0 = item * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int r = r0; r < r1; r++) {
        float *x = j->x + (size_t)r * j->ld;
        if (j->kact)
            pb_krow_act(j->kact, x, x, NULL, j->n);
        else
            for (int i = 0; i < j->n; i++)
                x[i] = act_f(j->act, x[i]);
    }
}

static pb_status cpu_act(pb_backend *be, pb_act act, float *x, int ld, int rows, int n)
{
    act_job j = {act, kact_of(act), x, NULL, NULL, ld, rows, n, 0};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, act_item, &j);
    return PB_OK;
}

/* one row of glu_item's (pb_kmat_mul_made's rows) */
static void glu_row(void *ctx, int r, float *o)
{
    const act_job *j = ctx;
    const float *g = j->gu + (size_t)r * j->ld, *u = g + j->n;
    if (j->kact)
        pb_krow_act(j->kact, o, g, u, j->n);
    else
        for (int i = 0; i < j->n; i++)
            o[i] = act_f(j->act, g[i]) * u[i];
}

static void glu_item(void *ctx, int item, int worker)
{
    (void)worker;
    const act_job *j = ctx;
    int r0 = item * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int r = r0; r < r1; r++)
        glu_row(ctx, r, j->out + (size_t)r * j->n);
}

static pb_status cpu_glu(pb_backend *be, pb_act act, float *out, const float *gu, int ldgu, int rows, int n)
{
    act_job j = {act, kact_of(act), NULL, out, gu, ldgu, rows, n, 0};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, glu_item, &j);
    return PB_OK;
}

static pb_status cpu_glu_linear(pb_backend *be, pb_act act, float *mid, const float *gu, int ldgu, int rows, int n,
                                const pb_weight *w, float *y, int ldy)
{
    act_job j = {act, kact_of(act), NULL, mid, gu, ldgu, rows, n, 0};
    return pb_kmat_mul_made(impl_of(be)->k, glu_row, &j, mid, n, rows, w->impl, w->bias, y, ldy);
}

/* the fused form where the AMX products take it (mid holds the second
 * product's pairs), else linear, then glu_linear */
static pb_status cpu_mlp_glu(pb_backend *be, pb_act act, const float *x, int ldx, int rows, const pb_weight *gu_w,
                             float *gu, int ldgu, float *mid, int n, const pb_weight *down, float *y, int ldy)
{
    const pb_kact kact = kact_of(act);
    const size_t mid_bytes = (size_t)rows * (size_t)n * sizeof(float);
    if (kact && down->n_in == n && pb_kmat_glu_fits(gu_w->impl, down->impl, rows, mid_bytes))
        return pb_kmat_mul_glu(impl_of(be)->k, x, ldx, rows, gu_w->impl, gu_w->bias, kact, down->impl, down->bias, y,
                               ldy, mid, mid_bytes);
    PB_CHECK(cpu_linear(be, x, ldx, rows, gu_w, gu, ldgu));
    return cpu_glu_linear(be, act, mid, gu, ldgu, rows, n, down, y, ldy);
}

static pb_status cpu_add(pb_backend *be, float *y, const float *x, const float *x2, size_t n)
{
    (void)be;
    pb_krow_add(y, x, x2, n);
    return PB_OK;
}

static pb_status cpu_select_rows(pb_backend *be, float *dst, const float *src, int n, const int *rows, int n_rows)
{
    (void)be;
    for (int i = 0; i < n_rows; i++)
        memmove(dst + (size_t)i * n, src + (size_t)rows[i] * n, (size_t)n * sizeof(float));
    return PB_OK;
}

static pb_status cpu_scatter_add(pb_backend *be, float *y, const float *x, int n, const int *rows, const float *w,
                                 int n_rows)
{
    (void)be;
    for (int i = 0; i < n_rows; i++) {
        float *yr = y + (size_t)rows[i] * n;
        const float *xr = x + (size_t)i * n;
        const float wi = w[i];
        for (int j = 0; j < n; j++) {
            float p = wi * xr[j]; /* HF: (out * weight), then index_add_ */
            yr[j] += p;
        }
    }
    return PB_OK;
}

/* ---- Gemma: embedding scale, logit soft-cap, per-head q/k norm ---- */

static pb_status cpu_scale(pb_backend *be, float *x, size_t n, float s)
{
    (void)be;
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] * s;
    return PB_OK;
}

static pb_status cpu_softcap(pb_backend *be, float *x, size_t n, float cap)
{
    (void)be;
    for (size_t i = 0; i < n; i++)
        x[i] = tanhf(x[i] / cap) * cap;
    return PB_OK;
}

/* The first index of the largest of l[0..n) other than mask[0..n_mask), NaN
 * never, 0 when none is above -inf */
static int32_t argmax_masked(const float *l, int n, const int32_t *mask, int n_mask)
{
    float best = -INFINITY;
    int32_t at = 0;
    for (int i = 0; i < n; i++)
        if (l[i] > best) { /* NaN never */
            bool skip = false;
            for (int e = 0; e < n_mask && !skip; e++)
                skip = mask[e] == i;
            if (!skip) {
                best = l[i];
                at = i;
            }
        }
    return at;
}

static pb_status cpu_argmax(pb_backend *be, const float *x, int rows, int n, int ld, const int32_t *mask_ids,
                            int n_mask, const uint8_t *mask_rows, int32_t *ids)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *l = x + (size_t)r * (size_t)ld;
        int32_t at = pb_krow_argmax(l, n);
        if (mask_rows && mask_rows[r])
            for (int e = 0; e < n_mask; e++)
                if (mask_ids[e] == at) { /* masking can only move a pick that is masked */
                    at = argmax_masked(l, n, mask_ids, n_mask);
                    break;
                }
        ids[r] = at;
    }
    return PB_OK;
}

typedef struct head_norm_job {
    float *x;
    const float *w;
    int ld, T, n_heads, head_dim, per;
    float eps;
} head_norm_job;

static void head_norm_item(void *ctx, int item, int worker)
{
    (void)worker;
    const head_norm_job *j = ctx;
    int t0 = item * j->per, t1 = t0 + j->per < j->T ? t0 + j->per : j->T;
    const int n = j->head_dim;
    for (int t = t0; t < t1; t++)
        for (int h = 0; h < j->n_heads; h++) {
            float *v = j->x + (size_t)t * j->ld + (size_t)h * n;
            double ss = 0; /* as the row norm: sum in double, scale in f32 */
            for (int i = 0; i < n; i++)
                ss += (double)v[i] * v[i];
            float inv = (float)(1.0 / sqrt(ss / n + (double)j->eps));
            for (int i = 0; i < n; i++)
                v[i] = j->w[i] * (v[i] * inv);
        }
}

static pb_status cpu_head_norm(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const float *w,
                               float eps)
{
    head_norm_job j = {x, w, ld, T, n_heads, head_dim, 0, eps};
    int items = row_items(T, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, head_norm_item, &j);
    return PB_OK;
}

static pb_status cpu_weights_cache(pb_backend *be, const char *path, const char *key)
{
    cpu_impl *c = impl_of(be);
    if (c->wc)
        return pb_error(PB_ERR_INTERNAL, "cpu: a second weights cache");
    return pb_wcache_open(path, key, c->k, &c->wc);
}

static bool cpu_weights_cached(pb_backend *be)
{
    return impl_of(be)->wc && pb_wcache_hit(impl_of(be)->wc);
}

static void cpu_weights_done(pb_backend *be)
{
    cpu_impl *c = impl_of(be);
    if (c->wc)
        pb_wcache_finish(c->wc, c->k);
}

static void cpu_free(pb_backend *be)
{
    cpu_impl *c = impl_of(be);
    if (c) {
        pb_wcache_free(c->wc); /* the matrices taken from it are freed by now */
        pb_kctx_free(c->k);
        pb_pool_free(c->pool);
        free(c);
    }
    free(be);
}

/* --matmul-precision bf16 (or PB_CPU_ISA=avx512bf16) rounds activations to
 * bf16 for bf16 weights (kernels.h), and the queries and softmax weights of
 * attention over a bf16 cache (kern_attn.c): results differ from the exact
 * products, the same bits on every path; bf16-amx: the same on the AMX tile
 * unit, bits of their own (named apart) */
static const char *cpu_numerics(void)
{
    return pb_cpu_amx() ? "dots=bf16-amx attn=bf16-amx" : pb_cpu_bf16_products() ? "dots=bf16 attn=bf16" : NULL;
}

/* f32 also leaves the avx512bf16 path if PB_CPU_ISA chose it (any other
 * forced path stays: they all give the same bits); bf16-amx is refused
 * where the CPU lacks it */
static pb_status cpu_set_matmul(pb_mmprec p)
{
    if (p == PB_MMPREC_BF16_AMX)
        return pb_cpu_set_amx(true);
    pb_cpu_set_bf16_products(p == PB_MMPREC_BF16);
    if (p != PB_MMPREC_BF16 && pb_cpu_isa_active() == PB_ISA_AVX512BF16)
        return pb_cpu_isa_set(pb_cpu_isa_best());
    return PB_OK;
}

static void cpu_host_run(pb_backend *be, int n_items, void (*fn)(void *ctx, int item, int worker), void *ctx)
{
    pb_pool_run(impl_of(be)->pool, n_items, fn, ctx);
}

static const pb_backend_ops cpu_ops = {
    .name = "cpu",
    .numerics = cpu_numerics,
    .set_matmul = cpu_set_matmul,
    .kv_dtype = PB_DT_F32,
    .kv_dtypes = 1u << PB_DT_F32 | 1u << PB_DT_F16 | 1u << PB_DT_BF16,
    .weight_dtypes = 1u << PB_DT_F32 | 1u << PB_DT_F16 | 1u << PB_DT_BF16 | 1u << PB_DT_Q8 |
                     1u << PB_DT_F8_E4M3,
    .kv_bytes = cpu_kv_bytes,
    .host_memory = true,
    .free = cpu_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .weight_bytes = cpu_weight_bytes,
    .put_linear = cpu_put_linear,
    .weights_cache = cpu_weights_cache,
    .weights_cached = cpu_weights_cached,
    .weights_done = cpu_weights_done,
    .weight_free = cpu_weight_free,
    .scratch_bytes = cpu_scratch_bytes,
    .reserve = cpu_reserve,
    .linear = cpu_linear,
    .gather = cpu_gather,
    .norm = cpu_norm,
    .add_norm = cpu_add_norm,
    .rope = cpu_rope,
    .rope_angles = cpu_rope_angles,
    .attention = cpu_attention,
    .kv_copy = cpu_kv_copy,
    .act = cpu_act,
    .glu = cpu_glu,
    .glu_linear = cpu_glu_linear,
    .mlp_glu = cpu_mlp_glu,
    .add = cpu_add,
    .select_rows = cpu_select_rows,
    .scatter_add = cpu_scatter_add,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .argmax = cpu_argmax,
    .head_norm = cpu_head_norm,
    .host_run = cpu_host_run,
};

const pb_backend_ops *pb_cpu_backend_ops(void) { return &cpu_ops; }

pb_status pb_cpu_backend_create(int threads, pb_backend **out)
{
    *out = NULL;
    if (threads < 1)
        threads = 1;
    pb_backend *be = calloc(1, sizeof *be);
    cpu_impl *c = calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return pb_error(PB_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    be->ops = &cpu_ops;
    be->impl = c;
    be->threads = threads;
    pb_status st = pb_pool_create(threads, &c->pool);
    if (st == PB_OK)
        st = pb_kctx_create(c->pool, &c->k);
    if (st != PB_OK) {
        cpu_free(be);
        return st;
    }
    *out = be;
    return PB_OK;
}
