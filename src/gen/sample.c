/* Sampler and counter-based RNG (see sample.h for the semantics). */
#include "config.h"
#include "gen/sample.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"

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

/* scratch layout: w[vocab] f32 working logits, e[vocab] f32 weights, idx[vocab] i32. */
size_t pb_sample_scratch_bytes(int vocab)
{
    size_t v = vocab > 0 ? (size_t)vocab : 1;
    return v * (2 * sizeof(float) + sizeof(int32_t));
}

typedef struct work {
    float *w;
    float *e;
    int32_t *idx;
    int n; /* candidates in idx */
} work;

static int cmp_id(const void *a, const void *b)
{
    int32_t ia = *(const int32_t *)a, ib = *(const int32_t *)b;
    return (ia > ib) - (ia < ib);
}

/* Heap sort of idx[0..n) by keys descending, id ascending on ties. */
static bool before(const float *keys, int32_t a, int32_t b)
{
    return keys[a] > keys[b] || (keys[a] == keys[b] && a < b);
}
static void sift_down(int32_t *idx, int n, int i, const float *keys)
{
    for (;;) {
        int l = 2 * i + 1, m = i;
        /* min-heap by "before" reversed: root is the element sorted last */
        if (l < n && before(keys, idx[m], idx[l])) m = l;
        if (l + 1 < n && before(keys, idx[m], idx[l + 1])) m = l + 1;
        if (m == i)
            return;
        int32_t t = idx[i]; idx[i] = idx[m]; idx[m] = t;
        i = m;
    }
}
static void sort_desc(int32_t *idx, int n, const float *keys)
{
    for (int i = n / 2 - 1; i >= 0; i--)
        sift_down(idx, n, i, keys);
    for (int end = n - 1; end > 0; end--) {
        int32_t t = idx[0]; idx[0] = idx[end]; idx[end] = t;
        sift_down(idx, end, 0, keys);
    }
}
static void sort_ids(int32_t *idx, int n)
{
    qsort(idx, (size_t)n, sizeof *idx, cmp_id);
}

/* k-th largest value (1-based) of w over idx[0..n) by quickselect on a copy in e. */
static float kth_largest(const work *wk, int k)
{
    float *a = wk->e;
    int n = wk->n;
    for (int i = 0; i < n; i++)
        a[i] = wk->w[wk->idx[i]];
    int lo = 0, hi = n - 1, target = k - 1; /* position in descending order */
    while (lo < hi) {
        float pivot = a[lo + (hi - lo) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (a[i] > pivot) i++;
            while (a[j] < pivot) j--;
            if (i <= j) {
                float t = a[i]; a[i] = a[j]; a[j] = t;
                i++; j--;
            }
        }
        if (target <= j) hi = j;
        else if (target >= i) lo = i;
        else break;
    }
    return a[target];
}

/* Penalise and filter; leaves the kept candidates in wk->idx (ascending id)
 * with scaled logits in wk->w. Returns the greedy id when temperature is 0
 * (wk->n = 1 then), else -1. */
static int32_t prepare(const float *logits, int vocab, const pb_sample_params *p,
                       const int32_t *history, size_t n_history, work *wk)
{
    float *w = wk->w;
    if (p->temperature == 0.0f && p->repetition_penalty == 1.0f) {
        wk->idx[0] = pb_argmax_first(logits, vocab);
        wk->n = 1;
        return wk->idx[0];
    }
    for (int i = 0; i < vocab; i++)
        w[i] = isnan(logits[i]) ? -INFINITY : logits[i];
    if (p->repetition_penalty != 1.0f) {
        /* Read the original logit so a repeated id is penalised once. */
        float r = p->repetition_penalty;
        for (size_t i = 0; i < n_history; i++) {
            int32_t id = history[i];
            if (id < 0 || id >= vocab || isnan(logits[id]))
                continue;
            float l = logits[id];
            w[id] = l > 0 ? l / r : l * r;
        }
    }
    if (p->temperature == 0.0f) {
        int32_t best = 0;
        for (int i = 1; i < vocab; i++)
            if (w[i] > w[best])
                best = i;
        wk->idx[0] = best;
        wk->n = 1;
        return best;
    }
    if (p->temperature != 1.0f)
        for (int i = 0; i < vocab; i++)
            w[i] /= p->temperature;
    int n = 0;
    for (int i = 0; i < vocab; i++)
        if (w[i] > -INFINITY)
            wk->idx[n++] = i;
    wk->n = n;
    if (n == 0) {
        wk->idx[0] = 0;
        wk->n = 1;
        return 0;
    }

    if (p->top_k > 0 && p->top_k < n) {
        float thr = kth_largest(wk, p->top_k);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (w[wk->idx[i]] >= thr)
                wk->idx[m++] = wk->idx[i];
        wk->n = n = m;
    }

    float wmax = -INFINITY;
    for (int i = 0; i < n; i++)
        if (w[wk->idx[i]] > wmax)
            wmax = w[wk->idx[i]];

    if (p->top_p < 1.0f) {
        /* Weights e = exp(w - max); HF keeps token j (descending order) iff
         * the mass before it is < top_p. Tokens below a threshold t whose
         * total mass is <= 1 - top_p are dropped before sorting (they would
         * be dropped anyway: ascending, they come first). */
        float *e = wk->e;
        double z = 0;
        for (int i = 0; i < n; i++) {
            int32_t id = wk->idx[i];
            e[id] = expf(w[id] - wmax);
            z += e[id];
        }
        double drop_mass = (1.0 - (double)p->top_p) * z;
        static const float steps[] = {1e-2f, 1e-3f, 1e-4f, 1e-5f, 1e-6f, 1e-8f, 1e-12f, 1e-20f};
        float t = 0;
        for (size_t s = 0; s < sizeof steps / sizeof steps[0]; s++) {
            double below = 0;
            for (int i = 0; i < n; i++)
                if (e[wk->idx[i]] < steps[s])
                    below += e[wk->idx[i]];
            if (below <= drop_mass * 0.999) { /* margin against summation-order rounding */
                t = steps[s];
                break;
            }
        }
        int m = 0;
        for (int i = 0; i < n; i++)
            if (e[wk->idx[i]] >= t)
                wk->idx[m++] = wk->idx[i];
        n = m;
        sort_desc(wk->idx, n, e);
        double keep_mass = (double)p->top_p * z, before_mass = 0;
        m = 0;
        while (m < n && (m == 0 || before_mass < keep_mass)) {
            before_mass += e[wk->idx[m]];
            m++;
        }
        wk->n = n = m;
        sort_ids(wk->idx, n);
    }

    if (p->min_p > 0.0f) {
        /* probs < min_p * top_prob  <=>  exp(w - max) < min_p */
        int m = 0;
        for (int i = 0; i < n; i++) {
            int32_t id = wk->idx[i];
            if (expf(w[id] - wmax) >= p->min_p)
                wk->idx[m++] = id;
        }
        wk->n = n = m; /* the top token always stays (exp(0) = 1 >= min_p) */
    }
    return -1;
}

static void init_work(work *wk, int vocab, void *scratch)
{
    size_t v = vocab > 0 ? (size_t)vocab : 1;
    wk->w = scratch;
    wk->e = wk->w + v;
    wk->idx = (int32_t *)(void *)(wk->e + v);
    wk->n = 0;
}

int32_t pb_sample(const float *logits, int vocab, const pb_sample_params *p,
                  const int32_t *history, size_t n_history, const pb_rng_key *key,
                  void *scratch)
{
    if (vocab <= 0)
        return 0;
    work wk;
    init_work(&wk, vocab, scratch);
    int32_t g = prepare(logits, vocab, p, history, n_history, &wk);
    if (g >= 0)
        return g;
    if (wk.n == 1)
        return wk.idx[0];
    float wmax = -INFINITY;
    for (int i = 0; i < wk.n; i++)
        if (wk.w[wk.idx[i]] > wmax)
            wmax = wk.w[wk.idx[i]];
    double z = 0;
    for (int i = 0; i < wk.n; i++) {
        int32_t id = wk.idx[i];
        wk.e[id] = expf(wk.w[id] - wmax);
        z += wk.e[id];
    }
    double target = pb_rng_uniform(key) * z, acc = 0;
    for (int i = 0; i < wk.n; i++) {
        acc += wk.e[wk.idx[i]];
        if (acc > target)
            return wk.idx[i];
    }
    return wk.idx[wk.n - 1];
}

void pb_sample_probs(const float *logits, int vocab, const pb_sample_params *p,
                     const int32_t *history, size_t n_history, float *probs, void *scratch)
{
    if (vocab <= 0)
        return;
    work wk;
    init_work(&wk, vocab, scratch);
    memset(probs, 0, (size_t)vocab * sizeof *probs);
    int32_t g = prepare(logits, vocab, p, history, n_history, &wk);
    if (g >= 0 || wk.n == 1) {
        probs[wk.idx[0]] = 1.0f;
        return;
    }
    float wmax = -INFINITY;
    for (int i = 0; i < wk.n; i++)
        if (wk.w[wk.idx[i]] > wmax)
            wmax = wk.w[wk.idx[i]];
    double z = 0;
    for (int i = 0; i < wk.n; i++)
        z += expf(wk.w[wk.idx[i]] - wmax);
    for (int i = 0; i < wk.n; i++) {
        int32_t id = wk.idx[i];
        probs[id] = (float)(expf(wk.w[id] - wmax) / z);
    }
}
