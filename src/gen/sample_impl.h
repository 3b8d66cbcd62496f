/* The sampler's inner loops (internal to src/gen/sample*.c and their tests).
 *
 * Each table gives the same bits for the same input: element by element the
 * same IEEE single operations (no fused multiply-add), and sums in double in
 * one fixed order (blocks). So a record samples the same token on every
 * machine and path, and tests compare the paths bit for bit. */
#ifndef PB_GEN_SAMPLE_IMPL_H
#define PB_GEN_SAMPLE_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "gen/sample.h"

/* Elements per block sum (the draw finds its block, then its element). */
#define PB_SAMPLE_BLOCK 64

typedef struct pb_svec {
    const char *name;
    /* w[i] = (l[i] NaN ? -inf : l[i]) / t (t == 1: no division); returns
     * how many w[i] are above -inf. */
    int (*scale)(const float *l, int n, float t, float *w);
    /* The largest of w[0..n) (no NaN in w); -inf when n == 0. */
    float (*max)(const float *w, int n);
    /* e[i] = pb_sample_exp(w[i] - m), m finite. */
    void (*exp)(const float *w, int n, float m, float *e);
    /* blk[b] = the sum of e[64b .. 64b + 63] (those below n) in double:
     * eight lanes (element i to lane i mod 8) each summed in turn, then
     * ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)). e >= 0. */
    void (*blocks)(const float *e, int n, double *blk);
    /* e[i] = 0 where bits(e[i]) < key, or bits(e[i]) == key and i > last
     * (e >= 0: bits order as values). */
    void (*drop_after)(float *e, int n, uint32_t key, int last);
    /* e[i] = 0 where e[i] < t. */
    void (*drop_below)(float *e, int n, float t);
    /* The first i in [from, n) with w[i] >= t, or n. */
    int (*next_ge)(const float *w, int n, int from, float t);
    /* pos[0..k) = the i with e[i] >= t, ascending; returns k. */
    int (*collect_ge)(const float *e, int n, float t, int32_t *pos);
} pb_svec;

extern const pb_svec pb_svec_portable;
#if defined(__SSE2__)
extern const pb_svec pb_svec_sse2;
#endif
/* The AVX2 table where this CPU runs it (x86-64 builds), else NULL. */
const pb_svec *pb_svec_avx2_if(void);
/* The widest table this CPU runs. */
const pb_svec *pb_svec_best(void);

/* e^x for x <= 0, the steps every table takes (Cephes' expf: x = n ln 2 +
 * r, a degree-5 polynomial for e^r, 2^n put in the exponent bits): within
 * 2 units in the last place; 0 below -86.5, where e^x nears the smallest
 * normal float (such a token weighs nothing beside the largest's 1). */
float pb_sample_exp(float x);

/* pb_sample and pb_sample_probs on the table v. */
int32_t pb_sample_with(const pb_svec *v, const float *logits, int vocab, const pb_sample_params *p,
                       const int32_t *history, size_t n_history, const pb_rng_key *key, void *scratch);
void pb_sample_probs_with(const pb_svec *v, const float *logits, int vocab, const pb_sample_params *p,
                          const int32_t *history, size_t n_history, float *probs, void *scratch);
void pb_sample_logprobs_with(const pb_svec *v, const float *logits, int vocab, int32_t token, int n_top,
                             pb_logprobs *out, void *scratch);
/* as pb_sample_logprobs_with; ids non-NULL: the n_top entries are those ids' (in range), in their order */
void pb_sample_logprobs_of(const pb_svec *v, const float *logits, int vocab, int32_t token, int n_top,
                           const int32_t *ids, pb_logprobs *out, void *scratch);

#endif
