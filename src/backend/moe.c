/* Mixture-of-experts MLP: host routing, one grouped GEMM per expert. See moe.h. */
#include "config.h"
#include "backend/moe.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

struct pb_moe {
    int n_exp, k, H, I, T;
    bool renorm;
    pb_act act;
    /* backend arena regions (floats) */
    float *zero;     /* [H], never written */
    float *logits;   /* [T, n_exp] */
    float *xg;       /* [T, H] gathered rows of one expert */
    float *gu;       /* [T, 2 I] */
    float *mid;      /* [T, I] */
    float *y;        /* [T, H] */
    /* host */
    float *h_logits; /* [T, n_exp] */
    float *probs;    /* [n_exp] */
    int *idx;        /* [T, k] */
    float *wt;       /* [T, k] */
    int *start;      /* [n_exp + 1]: expert e's rows are rows[start[e] .. start[e + 1]) */
    int *cur;        /* [n_exp] fill cursors */
    int *rows;       /* [T k] token rows, ascending within an expert */
    float *rw;       /* [T k] their weights */
    int *zrows;      /* [T] zeros */
};

static size_t pad16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t pb_moe_arena_floats(const pb_model_config *cfg, int T)
{
    if (cfg->n_experts <= 0)
        return 0;
    const size_t t = (size_t)(T > 0 ? T : 1), H = (size_t)cfg->hidden_size, I = (size_t)cfg->moe_intermediate_size;
    return pad16(H) + pad16(t * (size_t)cfg->n_experts) + pad16(t * H) + pad16(t * 2 * I) + pad16(t * I) +
           pad16(t * H);
}

pb_status pb_moe_create(const pb_model_config *cfg, int T, float *arena, pb_moe **out)
{
    *out = NULL;
    pb_status st = PB_OK;
    if (cfg->n_experts <= 0 || cfg->n_experts_per_tok < 1 || cfg->n_experts_per_tok > cfg->n_experts ||
        cfg->moe_intermediate_size <= 0)
        return pb_error(PB_ERR_CONFIG, "%s: mixture of experts needs 1 <= num_experts_per_tok (%d) <= experts (%d) "
                        "and moe_intermediate_size > 0 (%d)", cfg->model_type, cfg->n_experts_per_tok,
                        cfg->n_experts, cfg->moe_intermediate_size);
    pb_moe *m = calloc(1, sizeof *m);
    if (!m)
        return pb_error(PB_ERR_NOMEM, "out of memory for the experts' scratch");
    m->n_exp = cfg->n_experts;
    m->k = cfg->n_experts_per_tok;
    m->H = cfg->hidden_size;
    m->I = cfg->moe_intermediate_size;
    m->T = T;
    m->renorm = cfg->norm_topk_prob;
    m->act = cfg->act;
    const size_t t = (size_t)T, H = (size_t)m->H, I = (size_t)m->I, E = (size_t)m->n_exp, K = (size_t)m->k;
    float *p = arena;
    m->zero = p;   p += pad16(H);
    m->logits = p; p += pad16(t * E);
    m->xg = p;     p += pad16(t * H);
    m->gu = p;     p += pad16(t * 2 * I);
    m->mid = p;    p += pad16(t * I);
    m->y = p;
    PB_CHECK_GOTO(pb_calloc(t * E, sizeof(float), &m->h_logits), st, fail);
    PB_CHECK_GOTO(pb_calloc(E, sizeof(float), &m->probs), st, fail);
    PB_CHECK_GOTO(pb_calloc(t * K, sizeof(int), &m->idx), st, fail);
    PB_CHECK_GOTO(pb_calloc(t * K, sizeof(float), &m->wt), st, fail);
    PB_CHECK_GOTO(pb_calloc(E + 1, sizeof(int), &m->start), st, fail);
    PB_CHECK_GOTO(pb_calloc(E, sizeof(int), &m->cur), st, fail);
    PB_CHECK_GOTO(pb_calloc(t * K, sizeof(int), &m->rows), st, fail);
    PB_CHECK_GOTO(pb_calloc(t * K, sizeof(float), &m->rw), st, fail);
    PB_CHECK_GOTO(pb_calloc(t, sizeof(int), &m->zrows), st, fail);
    *out = m;
    return PB_OK;
fail:
    pb_moe_free(m);
    return st;
}

void pb_moe_free(pb_moe *m)
{
    if (!m)
        return;
    free(m->h_logits);
    free(m->probs);
    free(m->idx);
    free(m->wt);
    free(m->start);
    free(m->cur);
    free(m->rows);
    free(m->rw);
    free(m->zrows);
    free(m);
}

void pb_moe_route(const float *logits, int n_exp, int k, bool renorm, float *probs, int *idx, float *wt)
{
    /* softmax in f32 (torch: max, exp(x - max), sum, divide) */
    float mx = logits[0];
    for (int e = 1; e < n_exp; e++)
        mx = logits[e] > mx ? logits[e] : mx;
    float sum = 0.0f;
    for (int e = 0; e < n_exp; e++) {
        probs[e] = expf(logits[e] - mx);
        sum += probs[e];
    }
    for (int e = 0; e < n_exp; e++)
        probs[e] /= sum;
    /* top-k, largest first; equal values: the lower expert id first. A NaN
     * probability is never chosen over a number. */
    for (int r = 0; r < k; r++) {
        int best = -1;
        for (int e = 0; e < n_exp; e++) {
            bool taken = false;
            for (int q = 0; q < r; q++)
                taken = taken || idx[q] == e;
            if (taken)
                continue;
            if (best < 0 || probs[e] > probs[best] || (isnan(probs[best]) && !isnan(probs[e])))
                best = e;
        }
        idx[r] = best;
        wt[r] = probs[best];
    }
    if (renorm) {
        float s = 0.0f;
        for (int r = 0; r < k; r++)
            s += wt[r];
        for (int r = 0; r < k; r++)
            wt[r] /= s;
    }
}

pb_status pb_moe_forward(pb_moe *m, pb_backend *be, const pb_moe_layer *w, const float *in, float *out, int T)
{
    const pb_backend_ops *op = be->ops;
    const int E = m->n_exp, K = m->k, H = m->H, I = m->I;
    if (T < 1 || T > m->T)
        return pb_error(PB_ERR_INTERNAL, "experts: %d tokens (scratch for %d)", T, m->T);
    PB_CHECK(op->linear(be, in, H, T, w->router, m->logits, E));
    PB_CHECK(op->download(be, m->h_logits, m->logits, (size_t)T * E * sizeof(float)));
    PB_CHECK(op->sync(be));
    for (int t = 0; t < T; t++)
        pb_moe_route(m->h_logits + (size_t)t * E, E, K, m->renorm, m->probs, m->idx + (size_t)t * K,
                     m->wt + (size_t)t * K);
    /* group by expert (counting sort): rows of one expert ascend by token */
    memset(m->start, 0, (size_t)(E + 1) * sizeof(int));
    for (int i = 0; i < T * K; i++)
        m->start[m->idx[i] + 1]++;
    for (int e = 0; e < E; e++)
        m->start[e + 1] += m->start[e];
    memcpy(m->cur, m->start, (size_t)E * sizeof(int));
    for (int t = 0; t < T; t++)
        for (int r = 0; r < K; r++) {
            int e = m->idx[(size_t)t * K + r];
            int at = m->cur[e]++;
            m->rows[at] = t;
            m->rw[at] = m->wt[(size_t)t * K + r];
        }
    /* out = 0, then each expert's weighted rows in ascending expert id */
    memset(m->zrows, 0, (size_t)T * sizeof(int));
    PB_CHECK(op->select_rows(be, out, m->zero, H, m->zrows, T));
    for (int e = 0; e < E; e++) {
        const int n = m->start[e + 1] - m->start[e];
        if (n == 0)
            continue;
        const int *rows = m->rows + m->start[e];
        PB_CHECK(op->select_rows(be, m->xg, in, H, rows, n));
        PB_CHECK(pb_backend_mlp_glu(be, m->act, m->xg, H, n, w->gu[e], m->gu, 2 * I, m->mid, I, w->down[e], m->y, H));
        PB_CHECK(op->scatter_add(be, out, m->y, H, rows, m->rw + m->start[e], n));
    }
    return PB_OK;
}
