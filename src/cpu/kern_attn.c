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

static void attn_item_run(void *ctx, int item, int worker)
{
    const attn_job *j = ctx;
    const pb_kattn_args *a = j->a;
    const pb_kops *ops = j->ops;
    const attn_item *it = &j->items[item];
    const int s = it->seq, g = it->kvh, hd = a->head_dim, G = a->n_heads / a->n_kv_heads;
    const size_t kvd = (size_t)a->n_kv_heads * hd, od = (size_t)a->n_heads * hd;
    const float *kc = a->k_cache[s] + (size_t)g * hd, *vc = a->v_cache[s] + (size_t)g * hd;
    const int pos0 = a->pos[s], tok0 = a->tok_start[s];
    const int jbase = first_key(a, pos0 + it->q0), jend = pos0 + it->q1; /* keys [jbase, jend) */
    const size_t ld = (size_t)(jend - jbase) + 1;
    float *sc = j->scores[worker];
/* row of (token i, head hh): [0] = 1/sum, [1 + j - jbase] = key j */
#define ROW(i, hh) (sc + ((size_t)((i) - it->q0) * G + (hh)) * ld + 1 - jbase)

    /* pass 1: scores, key block by key block */
    for (int j0 = jbase; j0 < jend; j0 += KB) {
        const int j1 = j0 + KB < jend ? j0 + KB : jend;
        for (int i = it->q0; i < it->q1; i++) {
            const int p = pos0 + i, lo = first_key(a, p);
            const int a0 = lo > j0 ? lo : j0, a1 = p + 1 < j1 ? p + 1 : j1;
            if (a0 >= a1)
                continue;
            const float *qrow = a->q + (size_t)(tok0 + i) * a->q_stride;
            for (int hh = 0; hh < G; hh++) {
                const int h = g * G + hh;
                float *row = ROW(i, hh);
                ops->dots(qrow + (size_t)h * hd, kc + (size_t)a0 * kvd, kvd, a1 - a0, hd, row + a0);
                const float slope = a->alibi ? a->alibi[h] : 0.0f;
                for (int jj = a0; jj < a1; jj++) {
                    float v = row[jj] * a->scale;
                    if (a->alibi) {
                        const float b = slope * (float)jj; /* Bloom: slope * key position */
                        v = v + b;
                    }
                    if (a->softcap > 0) /* HF: tanh(score / cap) * cap, in f32 */
                        v = tanhf(v / a->softcap) * a->softcap;
                    row[jj] = v;
                }
            }
        }
    }
    /* softmax weights (unnormalized), 1/sum, zeroed output accumulators */
    for (int i = it->q0; i < it->q1; i++) {
        const int p = pos0 + i, lo = first_key(a, p);
        for (int hh = 0; hh < G; hh++) {
            float *row = ROW(i, hh);
            float m = -INFINITY;
            for (int jj = lo; jj <= p; jj++)
                m = row[jj] > m ? row[jj] : m;
            const float sum = ops->expsum(row + lo, p - lo + 1, m);
            row[jbase - 1] = 1.0f / sum;
            memset(a->out + (size_t)(tok0 + i) * od + (size_t)(g * G + hh) * hd, 0, (size_t)hd * sizeof(float));
        }
    }
    /* pass 2: out = sum_j e_j v_j, key block by key block, then times 1/sum */
    for (int j0 = jbase; j0 < jend; j0 += KB) {
        const int j1 = j0 + KB < jend ? j0 + KB : jend;
        for (int i = it->q0; i < it->q1; i++) {
            const int p = pos0 + i, lo = first_key(a, p);
            const int a0 = lo > j0 ? lo : j0, a1 = p + 1 < j1 ? p + 1 : j1;
            if (a0 >= a1)
                continue;
            for (int hh = 0; hh < G; hh++)
                ops->axpy(a->out + (size_t)(tok0 + i) * od + (size_t)(g * G + hh) * hd, ROW(i, hh) + a0,
                          vc + (size_t)a0 * kvd, kvd, a1 - a0, hd);
        }
    }
    for (int i = it->q0; i < it->q1; i++)
        for (int hh = 0; hh < G; hh++) {
            const float inv = ROW(i, hh)[jbase - 1];
            float *o = a->out + (size_t)(tok0 + i) * od + (size_t)(g * G + hh) * hd;
            for (int d = 0; d < hd; d++)
                o[d] = o[d] * inv;
        }
#undef ROW
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
