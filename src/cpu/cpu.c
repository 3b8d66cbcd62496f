/* CPU backend: cblas_sgemm for linear layers, pthread pool for the rest. */
#include "config.h"
#include "cpu/cpu.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "cpu/pool.h"

typedef struct attn_item attn_item;

typedef struct cpu_impl {
    pb_pool *pool;
    attn_item *items;
    size_t items_cap;
    /* per worker scratch for attention scores: max_keys floats each */
    float **scores;
    size_t scores_cap;
    /* padded row block for the last partial GEMM block */
    float *pad;
    size_t pad_cap;
} cpu_impl;

static cpu_impl *impl_of(pb_backend *be) { return be->impl; }

/* ---- memory ---- */

static pb_status cpu_alloc(pb_backend *be, size_t bytes, void **out)
{
    (void)be;
    size_t n;
    if (!pb_add_ok(bytes, 63, &n))
        return pb_error(PB_ERR_NOMEM, "allocation of %zu bytes overflows", bytes);
    n &= ~(size_t)63;
    if (n == 0)
        n = 64;
    void *p = aligned_alloc(64, n);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", bytes);
    memset(p, 0, n);
    *out = p;
    return PB_OK;
}

static void cpu_release(pb_backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(pb_backend *be, void *dst, const void *src, size_t bytes)
{
    (void)be;
    if (bytes)
        memmove(dst, src, bytes);
}

/* ---- GEMM ---- */

static pb_status ensure_pad(cpu_impl *c, size_t floats)
{
    if (c->pad_cap >= floats)
        return PB_OK;
    float *p = realloc(c->pad, floats * sizeof(float));
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory for a GEMM block of %zu floats", floats);
    c->pad = p;
    c->pad_cap = floats;
    return PB_OK;
}

/* OpenBLAS's result for a row depends on how many rows the call has (other
 * kernels for M < 4, other micro-tiles past 8 rows), which would make a
 * sequence's logits depend on the batch. So every call has exactly
 * PB_CPU_GEMM_ROWS rows: the last partial block is padded with zero rows. */
static pb_status cpu_linear(pb_backend *be, const float *x, int ldx, int M, const pb_linear *l, float *y, int ldy)
{
    cpu_impl *c = impl_of(be);
    const int R = PB_CPU_GEMM_ROWS;
    const int N = l->n_out, K = l->n_in;
    int full = M / R * R;
    for (int r = 0; r < full; r += R)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, N, K, 1.0f, x + (size_t)r * ldx, ldx,
                    l->w, K, 0.0f, y + (size_t)r * ldy, ldy);
    int rest = M - full;
    if (rest > 0) {
        size_t need = (size_t)R * ((size_t)K + (size_t)N);
        PB_CHECK(ensure_pad(c, need));
        {
            float *px = c->pad, *py = c->pad + (size_t)R * K;
            memset(px, 0, (size_t)R * K * sizeof(float));
            for (int i = 0; i < rest; i++)
                memcpy(px + (size_t)i * K, x + (size_t)(full + i) * ldx, (size_t)K * sizeof(float));
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, R, N, K, 1.0f, px, K, l->w, K, 0.0f, py, N);
            for (int i = 0; i < rest; i++)
                memcpy(y + (size_t)(full + i) * ldy, py + (size_t)i * N, (size_t)N * sizeof(float));
        }
    }
    if (l->b)
        for (int i = 0; i < M; i++) {
            float *yr = y + (size_t)i * ldy;
            for (int j = 0; j < N; j++)
                yr[j] += l->b[j];
        }
    return PB_OK;
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

static void cpu_gather_rows(pb_backend *be, float *out, const float *table, int dim, const int32_t *ids, int T,
                            int offset, bool accumulate)
{
    (void)be;
    for (int t = 0; t < T; t++) {
        const float *src = table + (size_t)(ids[t] + offset) * dim;
        float *dst = out + (size_t)t * dim;
        if (accumulate)
            for (int j = 0; j < dim; j++)
                dst[j] += src[j];
        else
            memcpy(dst, src, (size_t)dim * sizeof(float));
    }
}

typedef struct norm_job {
    pb_norm kind;
    float *out;
    const float *x, *w, *b;
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
        const float *x = j->x + (size_t)r * n;
        float *y = j->out + (size_t)r * n;
        if (j->kind == PB_NORM_RMSNORM) {
            /* Llama RMSNorm: x * rsqrt(mean(x^2) + eps), then * weight */
            double ss = 0;
            for (int i = 0; i < n; i++)
                ss += (double)x[i] * x[i];
            float inv = (float)(1.0 / sqrt(ss / n + (double)j->eps));
            for (int i = 0; i < n; i++)
                y[i] = j->w[i] * (x[i] * inv);
        } else {
            double s = 0;
            for (int i = 0; i < n; i++)
                s += x[i];
            double mean = s / n, v = 0;
            for (int i = 0; i < n; i++) {
                double d = x[i] - mean;
                v += d * d;
            }
            float fmean = (float)mean, rstd = (float)(1.0 / sqrt(v / n + (double)j->eps));
            for (int i = 0; i < n; i++) {
                float t = (x[i] - fmean) * rstd;
                y[i] = j->b ? t * j->w[i] + j->b[i] : t * j->w[i];
            }
        }
    }
}

static void cpu_norm(pb_backend *be, pb_norm kind, float *out, const float *x, int rows, int n, const float *w,
                     const float *b, float eps)
{
    norm_job j = {kind, out, x, w, b, rows, n, 0, eps};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, norm_item, &j);
}

/* ---- rotary ---- */

static void cpu_rope_angles(pb_backend *be, float *cs, const float *pos_scaled, int T, const float *inv_freq,
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
            if (j->r->style == PB_ROPE_INTERLEAVED) {
                /* GPT-J rotate_every_two: pairs (2i, 2i+1) share frequency i */
                for (int i = 0; i < half; i++) {
                    float c = cs[2 * i], s = cs[2 * i + 1];
                    float a = v[2 * i], b = v[2 * i + 1];
                    v[2 * i] = a * c - b * s;
                    v[2 * i + 1] = b * c + a * s;
                }
            } else {
                /* NeoX/Llama rotate_half: pairs (i, i + rot/2) share frequency i */
                for (int i = 0; i < half; i++) {
                    float c = cs[2 * i], s = cs[2 * i + 1];
                    float a = v[i], b = v[i + half];
                    v[i] = a * c - b * s;
                    v[i + half] = b * c + a * s;
                }
            }
        }
    }
}

static void cpu_rope(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const pb_rope_desc *r,
                     const float *cs)
{
    rope_job j = {x, ld, T, n_heads, head_dim, 0, r, cs};
    int items = row_items(T, 8, &j.per);
    pb_pool_run(impl_of(be)->pool, items, rope_item, &j);
}

/* ---- attention ---- */

#define ATTN_QCHUNK 16

struct attn_item {
    int seq, head, q0, q1; /* token indices within the sequence */
};

typedef struct attn_job {
    const pb_attn_args *a;
    const attn_item *items;
    float *const *scores;
} attn_job;

static float dot(const float *a, const float *b, int n)
{
    /* fixed 4-way split: the order depends only on n */
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

static void attn_item_run(void *ctx, int item, int worker)
{
    const attn_job *j = ctx;
    const pb_attn_args *a = j->a;
    const attn_item *it = &j->items[item];
    const int s = it->seq, h = it->head, hd = a->head_dim;
    const int kvd = a->n_kv_heads * hd;
    const int g = h / (a->n_heads / a->n_kv_heads); /* HF repeat_kv: kv head g serves n_rep consecutive heads */
    const float *kc = a->k_cache[s] + (size_t)g * hd, *vc = a->v_cache[s] + (size_t)g * hd;
    float *sc = j->scores[worker];
    const float slope = a->alibi ? a->alibi[h] : 0.0f;
    for (int i = it->q0; i < it->q1; i++) {
        const int tok = a->tok_start[s] + i;
        const int p = a->pos[s] + i;
        const float *q = a->q + (size_t)tok * a->q_stride + (size_t)h * hd;
        float *o = a->out + (size_t)tok * a->n_heads * hd + (size_t)h * hd;
        int lo = 0;
        if (a->window > 0 && p - a->window + 1 > 0)
            lo = p - a->window + 1;
        float m = -INFINITY;
        for (int k = lo; k <= p; k++) {
            float v = dot(q, kc + (size_t)k * kvd, hd) * a->scale;
            if (a->alibi)
                v += slope * (float)k; /* Bloom: alibi = slope * key position (softmax is shift invariant) */
            sc[k - lo] = v;
            if (v > m)
                m = v;
        }
        double sum = 0;
        for (int k = lo; k <= p; k++) {
            float e = expf(sc[k - lo] - m);
            sc[k - lo] = e;
            sum += e;
        }
        float inv = (float)(1.0 / sum);
        for (int d = 0; d < hd; d++)
            o[d] = 0;
        for (int k = lo; k <= p; k++) {
            float w = sc[k - lo] * inv;
            const float *vr = vc + (size_t)k * kvd;
            for (int d = 0; d < hd; d++)
                o[d] += w * vr[d];
        }
    }
}

static pb_status ensure_scores(cpu_impl *c, int threads, size_t n)
{
    if (c->scores_cap >= n)
        return PB_OK;
    for (int i = 0; i < threads; i++) {
        float *p = realloc(c->scores[i], n * sizeof(float));
        if (!p)
            return pb_error(PB_ERR_NOMEM, "out of memory for attention scores (%zu floats)", n);
        c->scores[i] = p;
    }
    c->scores_cap = n;
    return PB_OK;
}

static pb_status ensure_items(cpu_impl *c, size_t n)
{
    if (c->items_cap >= n)
        return PB_OK;
    attn_item *p = realloc(c->items, n * sizeof *p);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory for %zu attention work items", n);
    c->items = p;
    c->items_cap = n;
    return PB_OK;
}

static pb_status cpu_reserve(pb_backend *be, int max_seqs, int max_keys, int max_heads, int max_tokens, int max_dim)
{
    cpu_impl *c = impl_of(be);
    size_t items = (size_t)max_heads * ((size_t)max_tokens / ATTN_QCHUNK + (size_t)max_seqs + 1);
    PB_CHECK(ensure_items(c, items));
    PB_CHECK(ensure_scores(c, be->threads, (size_t)(max_keys > 0 ? max_keys : 1)));
    PB_CHECK(ensure_pad(c, (size_t)PB_CPU_GEMM_ROWS * (size_t)(max_dim > 0 ? max_dim : 1)));
    return PB_OK;
}

static pb_status cpu_attention(pb_backend *be, const pb_attn_args *a)
{
    cpu_impl *c = impl_of(be);
    const int kvd = a->n_kv_heads * a->head_dim;
    int max_keys = 1, n_items = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        /* store this step's keys and values at their positions */
        for (int i = 0; i < a->n_tokens[s]; i++) {
            size_t row = (size_t)(a->tok_start[s] + i) * a->kv_stride;
            memcpy(a->k_cache[s] + (size_t)(a->pos[s] + i) * kvd, a->k + row, (size_t)kvd * sizeof(float));
            memcpy(a->v_cache[s] + (size_t)(a->pos[s] + i) * kvd, a->v + row, (size_t)kvd * sizeof(float));
        }
        if (a->pos[s] + a->n_tokens[s] > max_keys)
            max_keys = a->pos[s] + a->n_tokens[s];
        n_items += a->n_heads * ((a->n_tokens[s] + ATTN_QCHUNK - 1) / ATTN_QCHUNK);
    }
    PB_CHECK(ensure_items(c, (size_t)(n_items > 0 ? n_items : 1)));
    PB_CHECK(ensure_scores(c, be->threads, (size_t)max_keys));
    attn_item *items = c->items;
    int k = 0;
    for (int s = 0; s < a->n_seqs; s++)
        for (int h = 0; h < a->n_heads; h++)
            for (int q0 = 0; q0 < a->n_tokens[s]; q0 += ATTN_QCHUNK) {
                int q1 = q0 + ATTN_QCHUNK < a->n_tokens[s] ? q0 + ATTN_QCHUNK : a->n_tokens[s];
                items[k++] = (attn_item){s, h, q0, q1};
            }
    attn_job j = {a, items, c->scores};
    pb_pool_run(c->pool, n_items, attn_item_run, &j);
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

typedef struct act_job {
    pb_act act;
    float *x, *out;
    const float *gu;
    int ld, rows, n, per;
} act_job;

static void act_item(void *ctx, int item, int worker)
{
    (void)worker;
    const act_job *j = ctx;
    int r0 = item * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int r = r0; r < r1; r++) {
        float *x = j->x + (size_t)r * j->ld;
        for (int i = 0; i < j->n; i++)
            x[i] = act_f(j->act, x[i]);
    }
}

static void cpu_act(pb_backend *be, pb_act act, float *x, int ld, int rows, int n)
{
    act_job j = {act, x, NULL, NULL, ld, rows, n, 0};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, act_item, &j);
}

static void glu_item(void *ctx, int item, int worker)
{
    (void)worker;
    const act_job *j = ctx;
    int r0 = item * j->per, r1 = r0 + j->per < j->rows ? r0 + j->per : j->rows;
    for (int r = r0; r < r1; r++) {
        const float *g = j->gu + (size_t)r * 2 * j->n, *u = g + j->n;
        float *o = j->out + (size_t)r * j->n;
        for (int i = 0; i < j->n; i++)
            o[i] = act_f(j->act, g[i]) * u[i];
    }
}

static void cpu_glu(pb_backend *be, pb_act act, float *out, const float *gu, int rows, int n)
{
    act_job j = {act, NULL, out, gu, 0, rows, n, 0};
    int items = row_items(rows, 4, &j.per);
    pb_pool_run(impl_of(be)->pool, items, glu_item, &j);
}

static void cpu_add(pb_backend *be, float *y, const float *x, const float *x2, size_t n)
{
    (void)be;
    if (x2)
        for (size_t i = 0; i < n; i++)
            y[i] += x[i] + x2[i];
    else
        for (size_t i = 0; i < n; i++)
            y[i] += x[i];
}

static void cpu_select_rows(pb_backend *be, float *dst, const float *src, int n, const int *rows, int n_rows)
{
    (void)be;
    for (int i = 0; i < n_rows; i++)
        memmove(dst + (size_t)i * n, src + (size_t)rows[i] * n, (size_t)n * sizeof(float));
}

static void cpu_free(pb_backend *be)
{
    cpu_impl *c = impl_of(be);
    if (c) {
        pb_pool_free(c->pool);
        if (c->scores)
            for (int i = 0; i < be->threads; i++)
                free(c->scores[i]);
        free(c->scores);
        free(c->pad);
        free(c->items);
        free(c);
    }
    free(be);
}

static const pb_backend_ops cpu_ops = {
    .name = "cpu",
    .free = cpu_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .upload = cpu_copy,
    .download = cpu_copy,
    .copy = cpu_copy,
    .reserve = cpu_reserve,
    .linear = cpu_linear,
    .gather_rows = cpu_gather_rows,
    .norm = cpu_norm,
    .rope = cpu_rope,
    .rope_angles = cpu_rope_angles,
    .attention = cpu_attention,
    .act = cpu_act,
    .glu = cpu_glu,
    .add = cpu_add,
    .select_rows = cpu_select_rows,
};

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
    c->scores = calloc((size_t)threads, sizeof *c->scores);
    if (!c->scores) {
        cpu_free(be);
        return pb_error(PB_ERR_NOMEM, "out of memory creating the CPU backend");
    }
    pb_status st = pb_pool_create(threads, &c->pool);
    if (st != PB_OK) {
        cpu_free(be);
        return st;
    }
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(threads);
#endif
    *out = be;
    return PB_OK;
}

void pb_backend_free(pb_backend *be)
{
    if (be)
        be->ops->free(be);
}
