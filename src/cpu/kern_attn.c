/* GQA attention over an f32 KV cache. A work item is (sequence, KV head,
 * block of query tokens): it streams that head's cache rows once for all
 * query heads of the group and all tokens of the block, in two passes
 * (scores, then the weighted sum of V). Each query's result depends only on
 * its position and the cache: scores are fixed-order dot products, the
 * softmax sums in 16 lanes from the query's first key, and V is summed in one
 * fma chain per output element over keys ascending. */
#include "config.h"

#include <math.h>
#include <string.h>

#include "cpu/kern_impl.h"

#define QB_MAX 16 /* query tokens per item */
#define KB 32     /* keys per cache block */

typedef struct attn_item {
    int seq, kvh, q0, q1; /* token indices within the sequence */
} attn_item;

typedef struct attn_job {
    const pb_kattn_args *a;
    const pb_kops *ops;
    const attn_item *items;
    float *const *scores;
} attn_job;

static inline int first_key(const pb_kattn_args *a, int p)
{
    return a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
}

/* scratch floats of an item: per (query, head) row, 1/sum then the keys */
static size_t item_floats(const pb_kattn_args *a, int s, int q0, int q1)
{
    const int G = a->n_heads / a->n_kv_heads;
    const size_t span = (size_t)(a->pos[s] + q1 - first_key(a, a->pos[s] + q0));
    return (size_t)(q1 - q0) * G * (span + 1);
}

/* What a work item's rows share. Row (token i, head hh) of the scratch:
 * [0] = 1/sum, [1 + j - jbase] = the score, then the weight, of key j. */
typedef struct item_ctx {
    const pb_kattn_args *a;
    const pb_kops *ops;
    int q0, g, G, hd, pos0, tok0, jbase;
    size_t kvd, od, ld;
    const float *kc, *vc; /* this KV head's first key and value */
    float *sc;
} item_ctx;

/* up to PB_KATT_R rows, in token order, and their keys [a0, a1) in one block */
typedef struct row_group {
    int n, tok[PB_KATT_R], head[PB_KATT_R], a0[PB_KATT_R], a1[PB_KATT_R];
} row_group;

static float *row_of(const item_ctx *c, int i, int hh)
{
    return c->sc + ((size_t)(i - c->q0) * c->G + hh) * c->ld + 1 - c->jbase;
}

static float *out_of(const item_ctx *c, int i, int hh)
{
    return c->a->out + (size_t)(c->tok0 + i) * c->od + (size_t)(c->g * c->G + hh) * c->hd;
}

/* row[j] for j in [j0, j1) of query head h: + alibi slope * j, then the soft-cap */
static void adjust_scores(const pb_kattn_args *a, int h, float *row, int j0, int j1)
{
    const float slope = a->alibi ? a->alibi[h] : 0.0f;
    for (int j = j0; j < j1; j++) {
        float v = row[j];
        if (a->alibi) {
            const float b = slope * (float)j; /* Bloom: slope * key position */
            v = v + b;
        }
        if (a->softcap > 0) /* HF: tanh(score / cap) * cap, in f32 */
            v = tanhf(v / a->softcap) * a->softcap;
        row[j] = v;
    }
}

/* Scores of a group over the union of its keys, [first a0, last a1) (a1
 * grows with the token, a0 never falls): a score a row does not see is
 * computed too, into its own scratch, and never read. */
static void scores_flush(const item_ctx *c, row_group *rg)
{
    const pb_kattn_args *a = c->a;
    const float *qp[PB_KATT_R];
    float *op[PB_KATT_R];
    const int u0 = rg->a0[0], u1 = rg->a1[rg->n - 1];
    for (int r = 0; r < rg->n; r++) {
        qp[r] = a->q + (size_t)(c->tok0 + rg->tok[r]) * a->q_stride + (size_t)(c->g * c->G + rg->head[r]) * c->hd;
        op[r] = row_of(c, rg->tok[r], rg->head[r]) + u0;
    }
    c->ops->dots(rg->n, qp, c->kc + (size_t)u0 * c->kvd, c->kvd, u1 - u0, c->hd, a->scale, op);
    if (a->alibi || a->softcap > 0)
        for (int r = 0; r < rg->n; r++)
            adjust_scores(a, c->g * c->G + rg->head[r], row_of(c, rg->tok[r], rg->head[r]), u0, u1);
    rg->n = 0;
}

/* acc += the sum over keys [j0, j1) ascending of e[j] v_j, one row alone */
static void axpy_range(const item_ctx *c, float *acc, const float *e, int j0, int j1)
{
    if (j0 < j1)
        c->ops->axpy(1, &acc, &(const float *){e + j0}, c->vc + (size_t)j0 * c->kvd, c->kvd, j1 - j0, c->hd);
}

/* Weighted values of a group: the keys all rows see, [last a0, first a1),
 * in one call; before and after them each row's own keys alone, so that
 * every row's chain runs over its keys ascending. */
static void values_flush(const item_ctx *c, row_group *rg)
{
    float *acc[PB_KATT_R];
    const float *e[PB_KATT_R], *es[PB_KATT_R];
    const int A = rg->a0[rg->n - 1], B = rg->a1[0];
    for (int r = 0; r < rg->n; r++) {
        acc[r] = out_of(c, rg->tok[r], rg->head[r]);
        e[r] = row_of(c, rg->tok[r], rg->head[r]);
        es[r] = e[r] + A;
    }
    if (A < B) {
        for (int r = 0; r < rg->n; r++)
            axpy_range(c, acc[r], e[r], rg->a0[r], A);
        c->ops->axpy(rg->n, acc, es, c->vc + (size_t)A * c->kvd, c->kvd, B - A, c->hd);
        for (int r = 0; r < rg->n; r++)
            axpy_range(c, acc[r], e[r], B, rg->a1[r]);
    } else {
        for (int r = 0; r < rg->n; r++)
            axpy_range(c, acc[r], e[r], rg->a0[r], rg->a1[r]);
    }
    rg->n = 0;
}

/* Every row of the item with keys in block [j0, j1), in groups. */
static void block_run(const item_ctx *c, int q1, int j0, int j1, void (*flush)(const item_ctx *, row_group *))
{
    row_group rg = {0};
    for (int i = c->q0; i < q1; i++) {
        const int p = c->pos0 + i, lo = first_key(c->a, p);
        const int a0 = lo > j0 ? lo : j0, a1 = p + 1 < j1 ? p + 1 : j1;
        if (a0 >= a1)
            continue;
        for (int hh = 0; hh < c->G; hh++) {
            rg.tok[rg.n] = i, rg.head[rg.n] = hh, rg.a0[rg.n] = a0, rg.a1[rg.n] = a1;
            if (++rg.n == PB_KATT_R)
                flush(c, &rg);
        }
    }
    if (rg.n)
        flush(c, &rg);
}

static void attn_item_run(void *ctx, int item, int worker)
{
    const attn_job *j = ctx;
    const pb_kattn_args *a = j->a;
    const attn_item *it = &j->items[item];
    const int hd = a->head_dim, G = a->n_heads / a->n_kv_heads, pos0 = a->pos[it->seq];
    const int jbase = first_key(a, pos0 + it->q0), jend = pos0 + it->q1; /* keys [jbase, jend) */
    const size_t kvd = (size_t)a->n_kv_heads * hd;
    const item_ctx c = {
        .a = a, .ops = j->ops, .q0 = it->q0, .g = it->kvh, .G = G, .hd = hd, .pos0 = pos0,
        .tok0 = a->tok_start[it->seq], .jbase = jbase, .kvd = kvd, .od = (size_t)a->n_heads * hd,
        .ld = (size_t)(jend - jbase) + 1, .kc = a->k_cache[it->seq] + (size_t)it->kvh * hd,
        .vc = a->v_cache[it->seq] + (size_t)it->kvh * hd, .sc = j->scores[worker],
    };
    /* pass 1: scores, key block by key block */
    for (int j0 = jbase; j0 < jend; j0 += KB)
        block_run(&c, it->q1, j0, j0 + KB < jend ? j0 + KB : jend, scores_flush);
    /* softmax weights (unnormalized), 1/sum, zeroed output accumulators */
    for (int i = it->q0; i < it->q1; i++) {
        const int p = pos0 + i, lo = first_key(a, p);
        for (int hh = 0; hh < G; hh++) {
            float *row = row_of(&c, i, hh);
            float m = -INFINITY;
            for (int jj = lo; jj <= p; jj++)
                m = row[jj] > m ? row[jj] : m;
            const float sum = j->ops->expsum(row + lo, p - lo + 1, m);
            row[jbase - 1] = 1.0f / sum;
            memset(out_of(&c, i, hh), 0, (size_t)hd * sizeof(float));
        }
    }
    /* pass 2: out = sum_j e_j v_j, key block by key block, then times 1/sum */
    for (int j0 = jbase; j0 < jend; j0 += KB)
        block_run(&c, it->q1, j0, j0 + KB < jend ? j0 + KB : jend, values_flush);
    for (int i = it->q0; i < it->q1; i++)
        for (int hh = 0; hh < G; hh++) {
            const float inv = row_of(&c, i, hh)[jbase - 1];
            float *o = out_of(&c, i, hh);
            for (int d = 0; d < hd; d++)
                o[d] = o[d] * inv;
        }
}

/* Query tokens per item for sequence s: the most (up to QB_MAX) whose
 * scores fit in cap floats; 0 when not even one token fits. */
static int pick_qb(const pb_kattn_args *a, int s, size_t cap)
{
    const int nt = a->n_tokens[s];
    for (int q = QB_MAX; q >= 1; q /= 2) {
        int fits = 1;
        for (int q0 = 0; q0 < nt && fits; q0 += q)
            fits = item_floats(a, s, q0, q0 + q < nt ? q0 + q : nt) <= cap;
        if (fits)
            return q;
    }
    return 0;
}

pb_status pb_kattn_run(pb_kctx *k, const pb_kattn_args *a)
{
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->head_dim <= 0)
        return pb_error(PB_ERR_INTERNAL, "attention: %d heads over %d KV heads of dim %d", a->n_heads,
                        a->n_kv_heads, a->head_dim);
    const size_t kvd = (size_t)a->n_kv_heads * a->head_dim, cap = pb_kctx_scores_cap(k);
    size_t n_items = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->n_tokens[s] <= 0)
            continue;
        const int q = pick_qb(a, s, cap);
        if (!q)
            return pb_error(PB_ERR_NOMEM, "attention: %zu floats of scores per thread needed, %zu reserved",
                            item_floats(a, s, a->n_tokens[s] - 1, a->n_tokens[s]), cap);
        n_items += (size_t)a->n_kv_heads * (size_t)((a->n_tokens[s] + q - 1) / q);
    }
    void *buf;
    PB_CHECK(pb_kctx_items(k, n_items, sizeof(attn_item), &buf));
    attn_item *items = buf;
    size_t n = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        /* store this step's keys and values at their positions */
        for (int i = 0; i < a->n_tokens[s]; i++) {
            const size_t row = (size_t)(a->tok_start[s] + i) * a->kv_stride;
            memcpy(a->k_cache[s] + (size_t)(a->pos[s] + i) * kvd, a->k + row, kvd * sizeof(float));
            memcpy(a->v_cache[s] + (size_t)(a->pos[s] + i) * kvd, a->v + row, kvd * sizeof(float));
        }
        if (a->n_tokens[s] <= 0)
            continue;
        const int q = pick_qb(a, s, cap);
        for (int g = 0; g < a->n_kv_heads; g++)
            for (int q0 = 0; q0 < a->n_tokens[s]; q0 += q)
                items[n++] = (attn_item){s, g, q0, q0 + q < a->n_tokens[s] ? q0 + q : a->n_tokens[s]};
    }
    attn_job j = {a, pb_kops_active(), items, pb_kctx_scores(k)};
    pb_kctx_run(k, (int)n, attn_item_run, &j);
    return PB_OK;
}
