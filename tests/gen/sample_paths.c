/* The sampler's vector paths: every table this CPU runs (portable, SSE2,
 * AVX2) gives the same bits as the portable one, primitive by primitive and
 * for whole rows (ids and probabilities); pb_sample_exp against exp(); and
 * the fast sampler against a plain one written here (full sorts, running
 * sums in order) on vocabularies of real size, where tests/gen/sample_ref.py
 * checks HF's semantics on 200 ids and a few 49152-id rows. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/sample_impl.h"
#include "../check.h"

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t next_u64(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}
static double unif(void) { return (double)(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
static double gauss(void)
{
    double u = unif() + 1e-300, v = unif();
    return sqrt(-2 * log(u)) * cos(6.283185307179586 * v);
}

/* ---- pb_sample_exp ---- */

static void test_exp(void)
{
    double worst = 0;
    for (int i = 0; i <= 2000000; i++) {
        const float x = (float)(-86.5 * i / 2000000.0);
        const double want = exp((double)x), got = pb_sample_exp(x);
        const double rel = fabs(got - want) / want;
        if (rel > worst)
            worst = rel;
    }
    CHECK(worst < 2.5e-7, "pb_sample_exp: relative error %.3g (2 units in the last place: 2.4e-7)", worst);
    CHECK(pb_sample_exp(0.0f) == 1.0f && pb_sample_exp(-0.0f) == 1.0f, "e^0 is not 1");
    CHECK(pb_sample_exp(-86.5f) > 0 && pb_sample_exp(-86.5f) >= 1.17549435e-38f, "e^-86.5 is not a normal float");
    CHECK(pb_sample_exp(nextafterf(-86.5f, -INFINITY)) == 0 && pb_sample_exp(-INFINITY) == 0 &&
              pb_sample_exp(NAN) == 0,
          "below -86.5 (or NaN) is not 0");
    static const float starts[] = {-86.5f, -20.0f, -1.0f, -0.001f}; /* monotone over runs of consecutive floats */
    for (size_t k = 0; k < sizeof starts / sizeof starts[0]; k++) {
        float x = starts[k], prev = pb_sample_exp(x);
        for (int i = 0; i < (1 << 18) && x < 0; i++) {
            x = nextafterf(x, 0);
            const float y = pb_sample_exp(x);
            if (!(y >= prev)) {
                CHECK(0, "pb_sample_exp not monotone at %.9g", (double)x);
                break;
            }
            prev = y;
        }
    }
    printf("pb_sample_exp: worst relative error %.3g over [-86.5, 0]\n", worst);
}

/* ---- primitives, each table against the portable one ---- */

static void fill_logits(float *l, int n, int kind)
{
    for (int i = 0; i < n; i++) {
        l[i] = (float)(3 * gauss());
        if (kind >= 1 && next_u64() % 17 == 0)
            l[i] = NAN;
        if (kind >= 1 && next_u64() % 13 == 0)
            l[i] = -INFINITY;
        if (kind == 2 && next_u64() % 101 == 0)
            l[i] = INFINITY;
    }
}

static void test_primitives(const pb_svec *v)
{
    const pb_svec *r = &pb_svec_portable;
    static const int lens[] = {0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 127, 128, 129, 1000, 49157};
    const int nmax = 49157;
    float *l = malloc(sizeof(float) * nmax), *a = malloc(sizeof(float) * nmax), *b = malloc(sizeof(float) * nmax);
    double *ba = malloc(sizeof(double) * nmax), *bb = malloc(sizeof(double) * nmax);
    int32_t *pa = malloc(sizeof(int32_t) * nmax), *pb = malloc(sizeof(int32_t) * nmax);
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
        const int n = lens[li];
        for (int kind = 0; kind < 3; kind++) {
            fill_logits(l, n, kind);
            const float t = kind == 0 ? 1.0f : kind == 1 ? 0.7f : 1.9f;
            const int ca = r->scale(l, n, t, a), cb = v->scale(l, n, t, b);
            CHECK(ca == cb && !memcmp(a, b, sizeof(float) * (size_t)n), "%s scale n=%d kind %d", v->name, n, kind);
            if (kind == 2) /* max with +inf; the others are finite below */
                CHECK(r->max(a, n) == v->max(a, n), "%s max n=%d with inf", v->name, n);
            for (int i = 0; i < n; i++) /* finite, <= 0 past the max, some below the cut */
                if (!isfinite(a[i]))
                    a[i] = (float)(-100 * unif());
            const float m = r->max(a, n);
            CHECK(m == v->max(a, n), "%s max n=%d", v->name, n);
            r->exp(a, n, m, b);
            float *e2 = malloc(sizeof(float) * (size_t)(n + 1));
            v->exp(a, n, m, e2);
            CHECK(!memcmp(b, e2, sizeof(float) * (size_t)n), "%s exp n=%d", v->name, n);
            for (int i = 0; i < n; i++)
                CHECK(e2[i] == pb_sample_exp(a[i] - m), "%s exp n=%d at %d", v->name, n, i);
            r->blocks(b, n, ba);
            v->blocks(b, n, bb);
            CHECK(!memcmp(ba, bb, sizeof(double) * (size_t)((n + PB_SAMPLE_BLOCK - 1) / PB_SAMPLE_BLOCK)),
                  "%s blocks n=%d", v->name, n);
            const float th = (float)(0.01 * unif());
            const int ka = r->collect_ge(b, n, th, pa), kb = v->collect_ge(b, n, th, pb);
            CHECK(ka == kb && !memcmp(pa, pb, sizeof(int32_t) * (size_t)ka), "%s collect_ge n=%d", v->name, n);
            for (int from = 0; from <= n && from < 40; from += 3)
                CHECK(r->next_ge(b, n, from, th) == v->next_ge(b, n, from, th), "%s next_ge n=%d from %d",
                      v->name, n, from);
            if (n > 0) {
                const int last = (int)(next_u64() % (uint64_t)n);
                uint32_t key;
                memcpy(&key, &b[last], sizeof key);
                memcpy(e2, b, sizeof(float) * (size_t)n);
                r->drop_after(b, n, key, last);
                v->drop_after(e2, n, key, last);
                CHECK(!memcmp(b, e2, sizeof(float) * (size_t)n), "%s drop_after n=%d", v->name, n);
                r->drop_below(b, n, th);
                v->drop_below(e2, n, th);
                CHECK(!memcmp(b, e2, sizeof(float) * (size_t)n), "%s drop_below n=%d", v->name, n);
            }
            free(e2);
        }
    }
    free(l);
    free(a);
    free(b);
    free(ba);
    free(bb);
    free(pa);
    free(pb);
}

/* ---- whole rows: a plain sampler, and every table alike ---- */

typedef struct row_case {
    int vocab, kind;
    pb_sample_params p;
} row_case;

static void make_row(float *l, int V, int kind)
{
    for (int i = 0; i < V; i++) {
        switch (kind) {
        case 0: l[i] = (float)(3 * gauss()); break;                        /* Gaussian */
        case 1: l[i] = (float)gauss(); break;                              /* flat-ish */
        case 2: l[i] = 0.5f; break;                                        /* all equal */
        case 3: l[i] = (float)(next_u64() % 7) * 0.75f; break;             /* ties */
        case 4: l[i] = (float)(2 * gauss() + (next_u64() % 500 == 0 ? 14 : 0)); break; /* peaked */
        default: l[i] = (float)(3 * gauss()); if (next_u64() % 5 == 0) l[i] = (next_u64() & 1) ? NAN : -INFINITY;
        }
    }
    if (kind == 6) /* an infinite logit or two */
        l[V / 3] = l[V / 2] = INFINITY;
    if (kind == 7)
        for (int i = 0; i < V; i++)
            l[i] = (i % 3) ? -INFINITY : NAN;
}

static int cmp_desc(const void *a, const void *b)
{
    const float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

static const double *g_e;
static int cmp_eid(const void *a, const void *b)
{
    const int i = *(const int *)a, j = *(const int *)b;
    if (g_e[i] != g_e[j])
        return g_e[i] > g_e[j] ? -1 : 1;
    return (i > j) - (i < j);
}

/* HF's order, each step on its own: penalty, temperature, top-k (full
 * sort), weights, top-p (full sort, running sum in order), min-p. Returns
 * the greedy id, or -1 with probs (double, 0 = dropped). */
static int plain_probs(const float *l, int V, const pb_sample_params *p, const int32_t *h, int nh, double *probs)
{
    float *w = malloc(sizeof(float) * (size_t)V);
    double *e = calloc((size_t)V, sizeof(double));
    int *ord = malloc(sizeof(int) * (size_t)V);
    for (int i = 0; i < V; i++)
        w[i] = isnan(l[i]) ? -INFINITY : l[i];
    for (int i = 0; i < nh; i++)
        if (!isnan(l[h[i]]))
            w[h[i]] = l[h[i]] > 0 ? l[h[i]] / p->repetition_penalty : l[h[i]] * p->repetition_penalty;
    /* vLLM's frequency and presence penalties: an id's count in the output, h[prompt_len..nh) */
    int *cnt = calloc((size_t)V, sizeof(int));
    for (int i = p->prompt_len < nh ? p->prompt_len : nh; i < nh; i++)
        cnt[h[i]]++;
    for (int i = 0; i < V; i++)
        if (cnt[i] && !isnan(l[i])) {
            w[i] -= p->frequency_penalty * (float)cnt[i];
            w[i] -= p->presence_penalty;
        }
    free(cnt);
    int ret = -1;
    if (p->temperature == 0) {
        ret = 0;
        for (int i = 1; i < V; i++)
            if (w[i] > w[ret])
                ret = i;
        goto done;
    }
    for (int i = 0; i < V; i++)
        if (p->temperature != 1.0f)
            w[i] /= p->temperature;
    int nc = 0;
    float m = -INFINITY;
    for (int i = 0; i < V; i++) {
        nc += w[i] > -INFINITY;
        if (w[i] > m)
            m = w[i];
    }
    if (nc == 0) {
        ret = 0;
        goto done;
    }
    m += 0.0f;
    if (p->top_k > 0 && p->top_k < nc) {
        float *s = malloc(sizeof(float) * (size_t)V);
        memcpy(s, w, sizeof(float) * (size_t)V);
        qsort(s, (size_t)V, sizeof *s, cmp_desc);
        const float thr = s[p->top_k - 1];
        free(s);
        for (int i = 0; i < V; i++)
            if (w[i] < thr)
                w[i] = -INFINITY;
    }
    for (int i = 0; i < V; i++)
        e[i] = w[i] == -INFINITY ? 0 : m == INFINITY ? (w[i] == INFINITY) : pb_sample_exp(w[i] - m);
    int nk = 0; /* the candidates: top-k's survivors (weight 0 included) */
    for (int i = 0; i < V; i++)
        if (w[i] > -INFINITY)
            ord[nk++] = i;
    if (p->top_p < 1.0f) {
        double z = 0;
        for (int j = 0; j < nk; j++)
            z += e[ord[j]];
        g_e = e;
        qsort(ord, (size_t)nk, sizeof *ord, cmp_eid);
        double run = 0;
        int keep = nk;
        for (int j = 0; j < nk; j++) {
            run += e[ord[j]];
            if (run >= p->top_p * z) {
                keep = j + 1;
                break;
            }
        }
        for (int j = keep; j < nk; j++)
            e[ord[j]] = 0;
    }
    for (int i = 0; i < V; i++)
        if (w[i] == -INFINITY || e[i] < p->min_p)
            e[i] = 0;
    double z = 0;
    for (int i = 0; i < V; i++)
        z += e[i];
    for (int i = 0; i < V; i++)
        probs[i] = e[i] / z;
done:
    free(w);
    free(e);
    free(ord);
    return ret;
}

static void test_rows(const pb_svec *const *tabs, int ntab)
{
    static const int vocabs[] = {1, 2, 5, 63, 64, 65, 200, 4099, 32000, 49152, 50257};
    static const float temps[] = {0.0f, 0.5f, 1.0f, 1.7f};
    static const int topks[] = {0, 1, 3, 50, 5000};
    static const float topps[] = {1.0f, 0.9f, 0.5f, 0.01f, 0.999f};
    static const float minps[] = {0.0f, 0.05f};
    static const float reps[] = {1.0f, 1.3f, 0.8f};
    static const float freqs[] = {0.0f, 0.7f, -1.2f}, press[] = {0.0f, 1.5f, -0.4f};
    const int Vmax = 50257;
    float *l = malloc(sizeof(float) * Vmax);
    float *pr[4];
    for (int t = 0; t < ntab; t++)
        pr[t] = malloc(sizeof(float) * Vmax);
    double *ref = malloc(sizeof(double) * Vmax);
    void *scr = malloc(pb_sample_scratch_bytes(Vmax));
    int32_t hist[64];
    int rows = 0, plain_checked = 0;
    for (size_t vi = 0; vi < sizeof vocabs / sizeof vocabs[0]; vi++) {
        const int V = vocabs[vi];
        for (int kind = 0; kind < 8; kind++) {
            for (int trial = 0; trial < (V > 10000 ? 3 : 12); trial++) {
                make_row(l, V, kind);
                pb_sample_params p = {temps[next_u64() % 4], topks[next_u64() % 5], topps[next_u64() % 5],
                                      minps[next_u64() % 2], reps[next_u64() % 3], freqs[next_u64() % 3],
                                      press[next_u64() % 3], 0};
                const int nh = (int)(next_u64() % 64);
                p.prompt_len = nh ? (int32_t)(next_u64() % (uint64_t)nh) : 0;
                for (int i = 0; i < nh; i++)
                    hist[i] = (int32_t)(next_u64() % (uint64_t)V);
                const pb_rng_key key = {7, (uint64_t)rows, (uint64_t)trial};
                int32_t id[4];
                for (int t = 0; t < ntab; t++) {
                    id[t] = pb_sample_with(tabs[t], l, V, &p, hist, (size_t)nh, &key, scr);
                    pb_sample_probs_with(tabs[t], l, V, &p, hist, (size_t)nh, pr[t], scr);
                    CHECK(id[t] >= 0 && id[t] < V && pr[t][id[t]] > 0, "%s V=%d kind %d: id %d has no probability",
                          tabs[t]->name, V, kind, id[t]);
                    if (t > 0)
                        CHECK(id[t] == id[0] && !memcmp(pr[t], pr[0], sizeof(float) * (size_t)V),
                              "%s against %s: V=%d kind %d t=%g k=%d p=%g min_p=%g rep=%g: id %d vs %d",
                              tabs[t]->name, tabs[0]->name, V, kind, (double)p.temperature, p.top_k,
                              (double)p.top_p, (double)p.min_p, (double)p.repetition_penalty, id[t], id[0]);
                }
                const int g = plain_probs(l, V, &p, hist, nh, ref);
                if (g >= 0) {
                    CHECK(id[0] == g && pr[0][g] == 1.0f, "greedy V=%d kind %d: %d vs plain %d", V, kind, id[0], g);
                } else {
                    int bad = 0;
                    for (int i = 0; i < V; i++)
                        if ((pr[0][i] > 0) != (ref[i] > 0) || fabs(pr[0][i] - ref[i]) > 1e-6 * ref[i] + 1e-30)
                            bad++;
                    CHECK(bad == 0, "V=%d kind %d t=%g k=%d p=%g min_p=%g rep=%g: %d ids differ from the plain sampler",
                          V, kind, (double)p.temperature, p.top_k, (double)p.top_p, (double)p.min_p,
                          (double)p.repetition_penalty, bad);
                    plain_checked++;
                }
                rows++;
            }
        }
    }
    printf("%d rows alike on %d tables, %d against the plain sampler\n", rows, ntab, plain_checked);
    free(l);
    for (int t = 0; t < ntab; t++)
        free(pr[t]);
    free(ref);
    free(scr);
}

/* ---- log probabilities: every table alike, and a plain log-softmax in long double ---- */

static const float *g_w;
static int cmp_wid(const void *a, const void *b)
{
    const int i = *(const int *)a, j = *(const int *)b;
    if (g_w[i] != g_w[j])
        return g_w[i] > g_w[j] ? -1 : 1;
    return (i > j) - (i < j);
}

static void test_logprobs(const pb_svec *const *tabs, int ntab)
{
    static const int vocabs[] = {1, 2, 5, 21, 63, 64, 65, 200, 4099, 49152, 50257};
    const int Vmax = 50257;
    float *l = malloc(sizeof(float) * Vmax), *w = malloc(sizeof(float) * Vmax);
    int *ord = malloc(sizeof(int) * Vmax);
    void *scr = malloc(pb_sample_scratch_bytes(Vmax));
    int rows = 0;
    for (size_t vi = 0; vi < sizeof vocabs / sizeof vocabs[0]; vi++) {
        const int V = vocabs[vi];
        for (int kind = 0; kind < 8; kind++) {
            for (int trial = 0; trial < (V > 10000 ? 2 : 6); trial++) {
                make_row(l, V, kind);
                const int n_top = (int)(next_u64() % (PB_MAX_LOGPROBS + 1));
                const int32_t tok = (int32_t)(next_u64() % (uint64_t)V);
                pb_logprobs out[4];
                for (int t = 0; t < ntab; t++) {
                    memset(&out[t], 0, sizeof out[t]);
                    pb_sample_logprobs_with(tabs[t], l, V, tok, n_top, &out[t], scr);
                    if (t > 0)
                        CHECK(!memcmp(&out[t], &out[0], sizeof out[0]), "logprobs %s against %s: V=%d kind %d",
                              tabs[t]->name, tabs[0]->name, V, kind);
                }
                /* plain: sort by logit then id; log p = l - log sum e^l in long double */
                long double m = -INFINITY, z = 0;
                int n_inf = 0;
                for (int i = 0; i < V; i++) {
                    w[i] = isnan(l[i]) ? -INFINITY : l[i];
                    ord[i] = i;
                    m = w[i] > m ? w[i] : m;
                    n_inf += w[i] == INFINITY;
                }
                for (int i = 0; i < V && isfinite(m); i++)
                    z += expl((long double)w[i] - m);
                g_w = w;
                qsort(ord, (size_t)V, sizeof *ord, cmp_wid);
                const int k = n_top < V ? n_top : V;
                CHECK(out[0].n_top == k, "V=%d: %d listed, %d asked", V, out[0].n_top, n_top);
                for (int j = 0; j <= k && out[0].n_top == k; j++) {
                    const int id = j < k ? ord[j] : tok;
                    const float got = j < k ? out[0].top_logprob[j] : out[0].logprob;
                    const double want = m == -INFINITY ? -INFINITY
                                        : m == INFINITY ? (w[id] == INFINITY ? -log((double)n_inf) : -INFINITY)
                                                        : (double)((long double)w[id] - m - logl(z));
                    CHECK((j == k || out[0].top_id[j] == id) &&
                              (got == want || fabs((double)got - want) <= 2e-6 + 1e-6 * fabs(want)),
                          "V=%d kind %d: %s %d: id %d log p %.9g, plain id %d %.9g", V, kind, j < k ? "top" : "token", j,
                          j < k ? out[0].top_id[j] : tok, (double)got, id, want);
                }
                rows++;
            }
        }
    }
    printf("%d rows' log probabilities alike on %d tables and against a plain log-softmax\n", rows, ntab);
    free(l);
    free(w);
    free(ord);
    free(scr);
}

int main(void)
{
    const pb_svec *tabs[3];
    int n = 0;
    tabs[n++] = &pb_svec_portable;
#if defined(__SSE2__)
    tabs[n++] = &pb_svec_sse2;
#endif
    if (pb_svec_avx2_if())
        tabs[n++] = pb_svec_avx2_if();
    printf("tables:");
    for (int i = 0; i < n; i++)
        printf(" %s", tabs[i]->name);
    printf(" (best: %s)\n", pb_svec_best()->name);
    test_exp();
    for (int i = 1; i < n; i++)
        test_primitives(tabs[i]);
    test_rows(tabs, n);
    test_logprobs(tabs, n);
    printf("%s\n", check_failures ? "FAILED" : "ok");
    return check_failures ? 1 : 0;
}
