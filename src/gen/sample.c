/* Sampler and counter-based RNG (see sample.h for the semantics). */
#include "config.h"
#include "gen/sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"
#include "gen/sample_impl.h"

pb_sample_params pb_sample_params_default(void)
{
    pb_sample_params p = {.temperature = 0.0f, .top_k = 0, .top_p = 1.0f, .min_p = 0.0f,
                          .repetition_penalty = 1.0f};
    return p;
}

pb_status pb_sample_params_check(const pb_sample_params *p)
{
    if (!isfinite(p->temperature) || p->temperature < 0 || p->temperature > 100)
        return pb_error(PB_ERR_INPUT, "temperature %g is not in [0, 100]", (double)p->temperature);
    if (p->top_k < 0)
        return pb_error(PB_ERR_INPUT, "top_k %d is negative", (int)p->top_k);
    if (!isfinite(p->top_p) || !(p->top_p > 0) || p->top_p > 1)
        return pb_error(PB_ERR_INPUT, "top_p %g is not in (0, 1]", (double)p->top_p);
    if (!isfinite(p->min_p) || p->min_p < 0 || p->min_p > 1)
        return pb_error(PB_ERR_INPUT, "min_p %g is not in [0, 1]", (double)p->min_p);
    if (!isfinite(p->repetition_penalty) || !(p->repetition_penalty > 0) ||
        p->repetition_penalty > 100)
        return pb_error(PB_ERR_INPUT, "repetition_penalty %g is not in (0, 100]",
                        (double)p->repetition_penalty);
    if (!isfinite(p->frequency_penalty) || p->frequency_penalty < -2 || p->frequency_penalty > 2)
        return pb_error(PB_ERR_INPUT, "frequency_penalty %g is not in [-2, 2]", (double)p->frequency_penalty);
    if (!isfinite(p->presence_penalty) || p->presence_penalty < -2 || p->presence_penalty > 2)
        return pb_error(PB_ERR_INPUT, "presence_penalty %g is not in [-2, 2]", (double)p->presence_penalty);
    if (p->prompt_len < 0)
        return pb_error(PB_ERR_INPUT, "prompt length %d is negative", (int)p->prompt_len);
    return PB_OK;
}

/* ---- Philox4x32-10 ---------------------------------------------------- */

static inline void mulhilo32(uint32_t a, uint32_t b, uint32_t *hi, uint32_t *lo)
{
    uint64_t prod = (uint64_t)a * b;
    *hi = (uint32_t)(prod >> 32);
    *lo = (uint32_t)prod;
}

void pb_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = ctr[0], c1 = ctr[1], c2 = ctr[2], c3 = ctr[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, lo0, hi1, lo1;
        mulhilo32(0xD2511F53u, c0, &hi0, &lo0);
        mulhilo32(0xCD9E8D57u, c2, &hi1, &lo1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
        c0 = n0; c1 = n1; c2 = n2; c3 = n3;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

double pb_rng_uniform(const pb_rng_key *k)
{
    uint32_t ctr[4] = {(uint32_t)k->record, (uint32_t)(k->record >> 32), (uint32_t)k->step,
                       (uint32_t)(k->step >> 32)};
    uint32_t key[2] = {(uint32_t)k->seed, (uint32_t)(k->seed >> 32)};
    uint32_t r[4];
    pb_philox4x32_10(ctr, key, r);
    uint64_t bits = ((uint64_t)r[0] << 21) ^ (uint64_t)(r[1] >> 11); /* 53 bits */
    return (double)bits * (1.0 / 9007199254740992.0);
}

/* ---- sampler ---------------------------------------------------------- */

/* A row of V logits costs a few passes over V floats whatever the settings:
 * the scaled logits (one vector pass), top-k by a heap of the k largest that
 * the vector scan rarely touches, the weights e^(w - max) (one vector pass),
 * top-p by a histogram of the weights' bits (the bucket that holds the
 * boundary, then its sub-buckets: no sort of the vocabulary), min-p, and
 * the draw by block sums. On a Zen 3 core, V = 49152: 35-190 us a row with
 * the AVX2 table, where a heap sort of top-p's survivors and libm's expf
 * took 300-9000 (contrib/bench/sample.py). */

#define HIST_W 2048 /* buckets of the widest histogram level (11 bits) */
#define TOPK_HEAP_MAX 4096 /* larger k: quickselect */

typedef struct work {
    double *hist; /* 4 x HIST_W: four interleaved histograms (no chain of adds to one bucket) */
    double *blk;  /* block sums */
    float *w;     /* scaled logits [vocab] */
    float *e;     /* weights [vocab]; the top-k heap before */
    float *lv;    /* top-k's scaled logits [vocab] */
    int32_t *ids; /* top-k's ids [vocab] */
    int32_t *pos; /* top-p's candidates in the boundary's bucket [vocab] */
} work;

/* The candidates: position i is id ids[i] (ids NULL: id i), its scaled logit
 * w[i] and weight e[i] (0: dropped); ids ascend. */
typedef struct cand {
    const int32_t *ids;
    const float *w;
    float *e;
    int n;
} cand;

size_t pb_sample_scratch_bytes(int vocab)
{
    size_t v = vocab > 0 ? (size_t)vocab : 1;
    return (4 * HIST_W + (v + PB_SAMPLE_BLOCK - 1) / PB_SAMPLE_BLOCK) * sizeof(double) +
           v * (3 * sizeof(float) + 2 * sizeof(int32_t));
}

static void init_work(work *wk, int vocab, void *scratch)
{
    size_t v = vocab > 0 ? (size_t)vocab : 1;
    wk->hist = scratch;
    wk->blk = wk->hist + 4 * HIST_W;
    wk->w = (float *)(void *)(wk->blk + (v + PB_SAMPLE_BLOCK - 1) / PB_SAMPLE_BLOCK);
    wk->e = wk->w + v;
    wk->lv = wk->e + v;
    wk->ids = (int32_t *)(void *)(wk->lv + v);
    wk->pos = wk->ids + v;
}

static uint32_t bits_of(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

static void heap_sift(float *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, m = i;
        if (l < n && h[l] < h[m])
            m = l;
        if (l + 1 < n && h[l + 1] < h[m])
            m = l + 1;
        if (m == i)
            return;
        float t = h[i];
        h[i] = h[m];
        h[m] = t;
        i = m;
    }
}

/* The k-th largest of w[0..n) (1 <= k < n, no NaN), with multiplicity. */
static float kth_largest(const pb_svec *v, const float *w, int n, int k, float *tmp)
{
    if (k <= TOPK_HEAP_MAX) { /* a min-heap of the k largest so far; the scan skips what is not above its root */
        memcpy(tmp, w, (size_t)k * sizeof *tmp);
        for (int i = k / 2 - 1; i >= 0; i--)
            heap_sift(tmp, k, i);
        for (int i = v->next_ge(w, n, k, nextafterf(tmp[0], INFINITY)); i < n;
             i = v->next_ge(w, n, i + 1, nextafterf(tmp[0], INFINITY))) {
            tmp[0] = w[i];
            heap_sift(tmp, k, 0);
        }
        return tmp[0];
    }
    memcpy(tmp, w, (size_t)n * sizeof *tmp); /* quickselect */
    int lo = 0, hi = n - 1, target = k - 1; /* its place in descending order */
    while (lo < hi) {
        float pivot = tmp[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (tmp[i] > pivot)
                i++;
            while (tmp[j] < pivot)
                j--;
            if (i <= j) {
                float t = tmp[i];
                tmp[i] = tmp[j];
                tmp[j] = t;
                i++;
                j--;
            }
        }
        if (target <= j)
            hi = j;
        else if (target >= i)
            lo = i;
        else
            break;
    }
    return tmp[target];
}

static double blocks_total(const pb_svec *v, const cand *c, double *blk)
{
    v->blocks(c->e, c->n, blk);
    double z = 0;
    for (int b = 0; b < (c->n + PB_SAMPLE_BLOCK - 1) / PB_SAMPLE_BLOCK; b++)
        z += blk[b];
    return z;
}

/* Top-p: keeps the smallest run of candidates, by weight descending and id
 * ascending, whose mass reaches top_p of the whole (at least one), as HF's
 * TopPLogitsWarper. The candidate where the running mass reaches it is found
 * by histograms of the weights' bits (e <= 1: bits 29-20, then 19-9, then
 * 8-0): the mass of the buckets above, in turn, then the one bucket that
 * holds it; at the last level its weights are equal and ids ascend. Only
 * weights of at least (1 - top_p) z / n are looked at: all the others
 * together weigh less than the mass top-p drops, so they come after the
 * boundary (with real logits, most of a vocabulary). */
static void top_p(const pb_svec *v, cand *c, float p, work *wk)
{
    static const int shift[3] = {20, 9, 0}, width[3] = {10, 11, 9};
    const double z = blocks_total(v, c, wk->blk), keep = (double)p * z;
    const float *e = c->e;
    int32_t *pos = wk->pos;
    int np = v->collect_ge(e, c->n, (float)((z - keep) * 0.999 / c->n), pos);
    double before = 0;
    for (int lev = 0; lev < 3 && np > 0; lev++) {
        const int nb = 1 << width[lev];
        const uint32_t mask = (uint32_t)nb - 1;
        double *h = wk->hist;
        memset(h, 0, 4 * (size_t)nb * sizeof *h);
        for (int j = 0; j < np; j++)
            h[(j & 3) * nb + (int)((bits_of(e[pos[j]]) >> shift[lev]) & mask)] += e[pos[j]];
        int sel = -1;
        for (int b = nb - 1; b >= 0 && sel < 0; b--) {
            const double m = (h[b] + h[nb + b]) + (h[2 * nb + b] + h[3 * nb + b]);
            if (before + m >= keep)
                sel = b;
            else
                before += m;
        }
        if (sel < 0)
            return; /* the mass falls short of keep by rounding: keep every candidate */
        int k = 0;
        for (int j = 0; j < np; j++) {
            pos[k] = pos[j];
            k += (int)((bits_of(e[pos[j]]) >> shift[lev]) & mask) == sel;
        }
        np = k;
    }
    if (np == 0)
        return;
    int last = pos[np - 1];
    for (int j = 0; j < np; j++) {
        before += e[pos[j]];
        if (before >= keep) {
            last = pos[j];
            break;
        }
    }
    v->drop_after(c->e, c->n, bits_of(e[last]), last);
}

/* Penalise, scale and filter into c (weights in c->e). Returns the id when
 * the pick is greedy or no logit is above -inf, else -1. */
static int32_t prepare(const pb_svec *v, const float *logits, int vocab, const pb_sample_params *p,
                       const int32_t *history, size_t n_history, work *wk, cand *c)
{
    const bool fp = pb_sample_output_penalties(p);
    if (p->temperature == 0.0f && p->repetition_penalty == 1.0f && !fp)
        return pb_argmax_first(logits, vocab);
    const float t = p->temperature == 0.0f ? 1.0f : p->temperature;
    float *w = wk->w;
    int n_fin = v->scale(logits, vocab, t, w);
    if (p->repetition_penalty != 1.0f || fp) {
        /* Each penalised id's logit from its original one, so a repeated id is penalised once: the
         * repetition penalty over the whole history (prompt and output), then, as vLLM, the
         * frequency penalty times the id's count in the output and the presence penalty. */
        const float r = p->repetition_penalty;
        const size_t out = (size_t)p->prompt_len < n_history ? (size_t)p->prompt_len : n_history;
        int32_t *cnt = wk->pos; /* counts in the output, for the history's ids (top-p's later) */
        if (fp) {
            for (size_t i = 0; i < n_history; i++)
                if (history[i] >= 0 && history[i] < vocab)
                    cnt[history[i]] = 0;
            for (size_t i = out; i < n_history; i++)
                if (history[i] >= 0 && history[i] < vocab)
                    cnt[history[i]]++;
        }
        for (size_t i = 0; i < n_history; i++) {
            const int32_t id = history[i];
            if (id < 0 || id >= vocab || isnan(logits[id]))
                continue;
            const bool in_out = fp && cnt[id] > 0;
            if (r == 1.0f && !in_out)
                continue;
            const float l = logits[id];
            float x = r != 1.0f ? (l > 0 ? l / r : l * r) : l;
            if (in_out) {
                x -= p->frequency_penalty * (float)cnt[id];
                x -= p->presence_penalty;
            }
            const float y = t != 1.0f ? x / t : x;
            n_fin += (y > -INFINITY) - (w[id] > -INFINITY);
            w[id] = y;
        }
    }
    if (p->temperature == 0.0f)
        return pb_argmax_first(w, vocab);
    if (n_fin == 0)
        return 0;
    const float m = v->max(w, vocab) + 0.0f; /* + 0: -0 becomes 0 */
    *c = (cand){NULL, w, wk->e, vocab};
    if (p->top_k > 0 && p->top_k < n_fin) { /* the k largest and the k-th's ties, as a list */
        const float thr = kth_largest(v, w, vocab, p->top_k, wk->e);
        int k = 0;
        for (int i = v->next_ge(w, vocab, 0, thr); i < vocab; i = v->next_ge(w, vocab, i + 1, thr)) {
            wk->ids[k] = i;
            wk->lv[k++] = w[i];
        }
        *c = (cand){wk->ids, wk->lv, wk->e, k};
    }
    if (m == INFINITY) /* an infinite logit: those alone, alike */
        for (int i = 0; i < c->n; i++)
            c->e[i] = c->w[i] == INFINITY ? 1.0f : 0.0f;
    else
        v->exp(c->w, c->n, m, c->e);
    if (p->top_p < 1.0f)
        top_p(v, c, p->top_p, wk);
    if (p->min_p > 0.0f) /* probability < min_p x the top one  <=>  e^(w - max) < min_p */
        v->drop_below(c->e, c->n, p->min_p);
    return -1;
}

/* The candidate whose running mass first passes u x the total: the block,
 * then the element in it. */
static int draw(const pb_svec *v, const cand *c, double u, double *blk)
{
    const double target = u * blocks_total(v, c, blk);
    const int nb = (c->n + PB_SAMPLE_BLOCK - 1) / PB_SAMPLE_BLOCK;
    double acc = 0;
    int b = 0;
    for (; b < nb && !(acc + blk[b] > target); b++)
        acc += blk[b];
    int lo = 0, hi = c->n;
    if (b < nb) {
        lo = b * PB_SAMPLE_BLOCK;
        hi = c->n - lo < PB_SAMPLE_BLOCK ? c->n : lo + PB_SAMPLE_BLOCK;
        for (int i = lo; i < hi; i++) {
            acc += c->e[i];
            if (acc > target)
                return i;
        }
    }
    for (int i = hi - 1; i > lo; i--) /* short by rounding: the last with weight */
        if (c->e[i] > 0)
            return i;
    return lo;
}

int32_t pb_sample_with(const pb_svec *v, const float *logits, int vocab, const pb_sample_params *p,
                       const int32_t *history, size_t n_history, const pb_rng_key *key, void *scratch)
{
    if (vocab <= 0)
        return 0;
    work wk;
    cand c;
    init_work(&wk, vocab, scratch);
    int32_t g = prepare(v, logits, vocab, p, history, n_history, &wk, &c);
    if (g >= 0)
        return g;
    const int i = draw(v, &c, pb_rng_uniform(key), wk.blk);
    return c.ids ? c.ids[i] : i;
}

void pb_sample_probs_with(const pb_svec *v, const float *logits, int vocab, const pb_sample_params *p,
                          const int32_t *history, size_t n_history, float *probs, void *scratch)
{
    if (vocab <= 0)
        return;
    work wk;
    cand c;
    init_work(&wk, vocab, scratch);
    memset(probs, 0, (size_t)vocab * sizeof *probs);
    int32_t g = prepare(v, logits, vocab, p, history, n_history, &wk, &c);
    if (g >= 0) {
        probs[g] = 1.0f;
        return;
    }
    const double z = blocks_total(v, &c, wk.blk);
    for (int i = 0; i < c.n; i++)
        if (c.e[i] > 0)
            probs[c.ids ? c.ids[i] : i] = (float)(c.e[i] / z);
}

/* Inserts id i (scaled logit x) among the kept top ids, descending; an equal
 * logit goes after those kept (lower ids: scanned first). */
static void top_insert(pb_logprobs *o, int cap, int32_t i, float x)
{
    int at = o->n_top < cap ? o->n_top : cap - 1;
    while (at > 0 && o->top_logprob[at - 1] < x) {
        o->top_id[at] = o->top_id[at - 1];
        o->top_logprob[at] = o->top_logprob[at - 1];
        at--;
    }
    o->top_id[at] = i;
    o->top_logprob[at] = x;
    if (o->n_top < cap)
        o->n_top++;
}

void pb_sample_logprobs_with(const pb_svec *v, const float *logits, int vocab, int32_t token, int n_top,
                             pb_logprobs *out, void *scratch)
{
    pb_sample_logprobs_of(v, logits, vocab, token, n_top, NULL, out, scratch);
}

void pb_sample_logprobs_of(const pb_svec *v, const float *logits, int vocab, int32_t token, int n_top,
                           const int32_t *ids, pb_logprobs *out, void *scratch)
{
    out->n_top = 0;
    out->id = token;
    out->rank = 0;
    out->logprob = -INFINITY;
    if (vocab <= 0)
        return;
    n_top = n_top < 0 ? 0 : n_top > PB_MAX_LOGPROBS ? PB_MAX_LOGPROBS : n_top;
    n_top = n_top < vocab ? n_top : vocab;
    work wk;
    init_work(&wk, vocab, scratch);
    float *w = wk.w;
    const int n_fin = v->scale(logits, vocab, 1.0f, w);
    /* the n_top largest (top_logprob holds their logits until the end): the first n_top, then each
     * above the smallest kept (vector scans skip the rest); or the ids asked for, in their order */
    for (int i = 0; ids && i < n_top; i++) {
        out->top_id[i] = ids[i] >= 0 && ids[i] < vocab ? ids[i] : 0;
        out->top_logprob[i] = w[out->top_id[i]];
    }
    if (ids)
        out->n_top = n_top;
    for (int i = 0; !ids && i < n_top; i++)
        top_insert(out, n_top, i, w[i]);
    for (int i = n_top; !ids && n_top > 0 && out->top_logprob[n_top - 1] < INFINITY; i++) {
        i = v->next_ge(w, vocab, i, nextafterf(out->top_logprob[n_top - 1], INFINITY));
        if (i >= vocab)
            break;
        top_insert(out, n_top, i, w[i]);
    }
    double lse = 0;
    const float m = n_fin ? v->max(w, vocab) + 0.0f : -INFINITY;
    if (m == INFINITY) { /* infinite logits share all the mass */
        int n_inf = 0;
        for (int i = 0; i < vocab; i++)
            n_inf += w[i] == INFINITY;
        lse = log((double)n_inf);
    } else if (n_fin) {
        cand c = {NULL, w, wk.e, vocab};
        v->exp(w, vocab, m, wk.e);
        lse = log(blocks_total(v, &c, wk.blk));
    }
    /* log p = (l - m) - log sum e^(l - m); with infinite logits 0 - log n for them, -inf for the rest;
     * with none above -inf, -inf for all */
#define LOGPROB(x) (float)(!n_fin ? -(double)INFINITY \
                           : m == INFINITY ? ((x) == INFINITY ? -lse : -(double)INFINITY) \
                                           : ((double)(x) - (double)m) - lse)
    if (token >= 0 && token < vocab)
        out->logprob = LOGPROB(w[token]);
    for (int k = 0; k < out->n_top; k++)
        out->top_logprob[k] = LOGPROB(out->top_logprob[k]);
#undef LOGPROB
}

void pb_sample_logprobs(const float *logits, int vocab, int32_t token, int n_top, pb_logprobs *out,
                        void *scratch)
{
    pb_sample_logprobs_with(pb_svec_best(), logits, vocab, token, n_top, out, scratch);
}

void pb_sample_logprobs_ids(const float *logits, int vocab, int32_t token, const int32_t *ids, int n,
                            pb_logprobs *out, void *scratch)
{
    pb_sample_logprobs_of(pb_svec_best(), logits, vocab, token, n, ids, out, scratch);
}

int32_t pb_sample_rank(const float *logits, int vocab, int32_t token)
{
    if (token < 0 || token >= vocab)
        return 0;
    const float x = isnan(logits[token]) ? -INFINITY : logits[token];
    int32_t r = 1;
    for (int i = 0; i < vocab; i++)
        r += logits[i] > x; /* NaN compares false */
    return r;
}

int32_t pb_sample(const float *logits, int vocab, const pb_sample_params *p, const int32_t *history,
                  size_t n_history, const pb_rng_key *key, void *scratch)
{
    return pb_sample_with(pb_svec_best(), logits, vocab, p, history, n_history, key, scratch);
}

void pb_sample_probs(const float *logits, int vocab, const pb_sample_params *p, const int32_t *history,
                     size_t n_history, float *probs, void *scratch)
{
    pb_sample_probs_with(pb_svec_best(), logits, vocab, p, history, n_history, probs, scratch);
}
