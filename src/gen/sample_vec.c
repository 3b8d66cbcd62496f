/* The sampler's inner loops: a portable table and an SSE2 one (every
 * x86-64 CPU has it), the same bits either way (see sample_impl.h). */
#include "config.h"
#include "gen/sample_impl.h"

#include <math.h>
#include <string.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SVEC_AVX2 1
#endif

#define EXP_LO -86.5f
#define EXP_LOG2E 1.44269504088896341f
#define EXP_ROUND 12582912.0f /* 1.5 x 2^23: adding it and taking it away rounds to an integer */
#define EXP_C1 0.693359375f   /* ln 2 in two parts */
#define EXP_C2 -2.12194440e-4f
#define EXP_P0 1.9875691500e-4f
#define EXP_P1 1.3981999507e-3f
#define EXP_P2 8.3334519073e-3f
#define EXP_P3 4.1665795894e-2f
#define EXP_P4 1.6666665459e-1f
#define EXP_P5 5.0000001201e-1f

static inline uint32_t f32_bits(float x)
{
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

float pb_sample_exp(float x)
{
    if (!(x >= EXP_LO))
        return 0.0f;
    const float n = (x * EXP_LOG2E + EXP_ROUND) - EXP_ROUND;
    float r = x - n * EXP_C1;
    r = r - n * EXP_C2;
    float p = EXP_P0;
    p = p * r + EXP_P1;
    p = p * r + EXP_P2;
    p = p * r + EXP_P3;
    p = p * r + EXP_P4;
    p = p * r + EXP_P5;
    const float y = (p * (r * r) + r) + 1.0f;
    const uint32_t sb = (uint32_t)((int32_t)n + 127) << 23; /* n in [-125, 0] */
    float s;
    memcpy(&s, &sb, sizeof s);
    return y * s;
}

/* ---- portable ---- */

static float scale1(float l, float t)
{
    const float x = isnan(l) ? -INFINITY : l;
    return t != 1.0f ? x / t : x;
}

static int scale_portable(const float *l, int n, float t, float *w)
{
    int c = 0;
    for (int i = 0; i < n; i++) {
        w[i] = scale1(l[i], t);
        c += w[i] > -INFINITY;
    }
    return c;
}

static float max_portable(const float *w, int n)
{
    float m = -INFINITY;
    for (int i = 0; i < n; i++)
        if (w[i] > m)
            m = w[i];
    return m;
}

static void exp_portable(const float *w, int n, float m, float *e)
{
    for (int i = 0; i < n; i++)
        e[i] = pb_sample_exp(w[i] - m);
}

static double lanes_sum(const double l[8])
{
    return ((l[0] + l[1]) + (l[2] + l[3])) + ((l[4] + l[5]) + (l[6] + l[7]));
}

static void blocks_portable(const float *e, int n, double *blk)
{
    for (int b0 = 0; b0 < n; b0 += PB_SAMPLE_BLOCK) {
        const int end = n - b0 < PB_SAMPLE_BLOCK ? n : b0 + PB_SAMPLE_BLOCK;
        double l[8] = {0};
        for (int i = b0; i < end; i++)
            l[(i - b0) & 7] += (double)e[i];
        blk[b0 / PB_SAMPLE_BLOCK] = lanes_sum(l);
    }
}

static void drop_after_portable(float *e, int n, uint32_t key, int last)
{
    for (int i = 0; i < n; i++) {
        const uint32_t b = f32_bits(e[i]);
        if (b < key || (b == key && i > last))
            e[i] = 0.0f;
    }
}

static void drop_below_portable(float *e, int n, float t)
{
    for (int i = 0; i < n; i++)
        if (e[i] < t)
            e[i] = 0.0f;
}

static int next_ge_portable(const float *w, int n, int from, float t)
{
    for (int i = from; i < n; i++)
        if (w[i] >= t)
            return i;
    return n;
}

static int collect_ge_portable(const float *e, int n, float t, int32_t *pos)
{
    int k = 0;
    for (int i = 0; i < n; i++) {
        pos[k] = i;
        k += e[i] >= t;
    }
    return k;
}

const pb_svec pb_svec_portable = {"portable", scale_portable, max_portable, exp_portable, blocks_portable,
                                  drop_after_portable, drop_below_portable, next_ge_portable, collect_ge_portable};

/* ---- SSE2 ---- */

#if defined(__SSE2__)
static const int pop4[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};

static int scale_sse2(const float *l, int n, float t, float *w)
{
    const __m128 ninf = _mm_set1_ps(-INFINITY), tv = _mm_set1_ps(t);
    const int div = t != 1.0f;
    int c = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        __m128 x = _mm_loadu_ps(l + i);
        const __m128 ord = _mm_cmpord_ps(x, x);
        x = _mm_or_ps(_mm_and_ps(ord, x), _mm_andnot_ps(ord, ninf));
        if (div)
            x = _mm_div_ps(x, tv);
        _mm_storeu_ps(w + i, x);
        c += pop4[_mm_movemask_ps(_mm_cmpgt_ps(x, ninf))];
    }
    for (; i < n; i++) {
        w[i] = scale1(l[i], t);
        c += w[i] > -INFINITY;
    }
    return c;
}

static float max_sse2(const float *w, int n)
{
    __m128 a = _mm_set1_ps(-INFINITY), b = a;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        a = _mm_max_ps(a, _mm_loadu_ps(w + i));
        b = _mm_max_ps(b, _mm_loadu_ps(w + i + 4));
    }
    float t[4];
    _mm_storeu_ps(t, _mm_max_ps(a, b));
    float m = max_portable(t, 4);
    for (; i < n; i++)
        if (w[i] > m)
            m = w[i];
    return m;
}

static inline __m128 exp4(__m128 x)
{
    const __m128 lo = _mm_set1_ps(EXP_LO);
    const __m128 ok = _mm_cmpge_ps(x, lo);
    x = _mm_max_ps(x, lo);
    const __m128 rnd = _mm_set1_ps(EXP_ROUND);
    const __m128 n = _mm_sub_ps(_mm_add_ps(_mm_mul_ps(x, _mm_set1_ps(EXP_LOG2E)), rnd), rnd);
    __m128 r = _mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(EXP_C1)));
    r = _mm_sub_ps(r, _mm_mul_ps(n, _mm_set1_ps(EXP_C2)));
    __m128 p = _mm_set1_ps(EXP_P0);
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(EXP_P1));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(EXP_P2));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(EXP_P3));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(EXP_P4));
    p = _mm_add_ps(_mm_mul_ps(p, r), _mm_set1_ps(EXP_P5));
    const __m128 y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(p, _mm_mul_ps(r, r)), r), _mm_set1_ps(1.0f));
    const __m128i s = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
    return _mm_and_ps(ok, _mm_mul_ps(y, _mm_castsi128_ps(s)));
}

static void exp_sse2(const float *w, int n, float m, float *e)
{
    const __m128 mv = _mm_set1_ps(m);
    int i = 0;
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(e + i, exp4(_mm_sub_ps(_mm_loadu_ps(w + i), mv)));
    for (; i < n; i++)
        e[i] = pb_sample_exp(w[i] - m);
}

static inline void lanes8(const float *p, __m128d l[4])
{
    const __m128 a = _mm_loadu_ps(p), b = _mm_loadu_ps(p + 4);
    l[0] = _mm_add_pd(l[0], _mm_cvtps_pd(a));
    l[1] = _mm_add_pd(l[1], _mm_cvtps_pd(_mm_movehl_ps(a, a)));
    l[2] = _mm_add_pd(l[2], _mm_cvtps_pd(b));
    l[3] = _mm_add_pd(l[3], _mm_cvtps_pd(_mm_movehl_ps(b, b)));
}

static void blocks_sse2(const float *e, int n, double *blk)
{
    for (int b0 = 0; b0 < n; b0 += PB_SAMPLE_BLOCK) {
        const int end = n - b0 < PB_SAMPLE_BLOCK ? n : b0 + PB_SAMPLE_BLOCK;
        __m128d l[4] = {_mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd(), _mm_setzero_pd()};
        int i = b0;
        for (; i + 8 <= end; i += 8)
            lanes8(e + i, l);
        if (i < end) { /* the tail padded with zeros: x + 0 is x */
            float t[8] = {0};
            memcpy(t, e + i, (size_t)(end - i) * sizeof *t);
            lanes8(t, l);
        }
        double s[8];
        for (int k = 0; k < 4; k++)
            _mm_storeu_pd(s + 2 * k, l[k]);
        blk[b0 / PB_SAMPLE_BLOCK] = lanes_sum(s);
    }
}

static void drop_after_sse2(float *e, int n, uint32_t key, int last)
{
    const __m128i kv = _mm_set1_epi32((int32_t)key), lv = _mm_set1_epi32(last), four = _mm_set1_epi32(4);
    __m128i idx = _mm_setr_epi32(0, 1, 2, 3);
    int i = 0;
    for (; i + 4 <= n; i += 4, idx = _mm_add_epi32(idx, four)) {
        const __m128 x = _mm_loadu_ps(e + i);
        const __m128i b = _mm_castps_si128(x); /* e >= 0: below 2^31, signed order is bits order */
        const __m128i drop = _mm_or_si128(_mm_cmplt_epi32(b, kv),
                                          _mm_and_si128(_mm_cmpeq_epi32(b, kv), _mm_cmpgt_epi32(idx, lv)));
        _mm_storeu_ps(e + i, _mm_andnot_ps(_mm_castsi128_ps(drop), x));
    }
    for (; i < n; i++) {
        const uint32_t b = f32_bits(e[i]);
        if (b < key || (b == key && i > last))
            e[i] = 0.0f;
    }
}

static void drop_below_sse2(float *e, int n, float t)
{
    const __m128 tv = _mm_set1_ps(t);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m128 x = _mm_loadu_ps(e + i);
        _mm_storeu_ps(e + i, _mm_andnot_ps(_mm_cmplt_ps(x, tv), x));
    }
    drop_below_portable(e + i, n - i, t);
}

static int next_ge_sse2(const float *w, int n, int from, float t)
{
    const __m128 tv = _mm_set1_ps(t);
    int i = from;
    for (; i + 4 <= n; i += 4) {
        const int m = _mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(w + i), tv));
        if (m)
            return i + __builtin_ctz((unsigned)m);
    }
    return next_ge_portable(w, n, i, t);
}

/* lanes[m]: the set lanes of the 4-bit mask m, packed low. */
static const int32_t lanes[16][4] = {{0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0},
                                     {2, 0, 0, 0}, {0, 2, 0, 0}, {1, 2, 0, 0}, {0, 1, 2, 0},
                                     {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
                                     {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};

static int collect_ge_sse2(const float *e, int n, float t, int32_t *pos)
{
    const __m128 tv = _mm_set1_ps(t);
    int k = 0, i = 0;
    for (; i + 4 <= n; i += 4) { /* four stores each time (k + 3 < i + 4 <= n), no branch a lane */
        const int m = _mm_movemask_ps(_mm_cmpge_ps(_mm_loadu_ps(e + i), tv));
        _mm_storeu_si128((__m128i *)(void *)(pos + k),
                         _mm_add_epi32(_mm_set1_epi32(i), _mm_loadu_si128((const __m128i *)(const void *)lanes[m])));
        k += pop4[m];
    }
    for (; i < n; i++) {
        pos[k] = i;
        k += e[i] >= t;
    }
    return k;
}

const pb_svec pb_svec_sse2 = {"sse2", scale_sse2, max_sse2, exp_sse2, blocks_sse2,
                              drop_after_sse2, drop_below_sse2, next_ge_sse2, collect_ge_sse2};
#endif

/* ---- AVX2 (without FMA: the same operations as above, eight lanes) ---- */

#if defined(SVEC_AVX2)
#define AVX2 __attribute__((target("avx2")))

AVX2 static int scale_avx2(const float *l, int n, float t, float *w)
{
    const __m256 ninf = _mm256_set1_ps(-INFINITY), tv = _mm256_set1_ps(t);
    const int div = t != 1.0f;
    int c = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(l + i);
        x = _mm256_blendv_ps(ninf, x, _mm256_cmp_ps(x, x, _CMP_ORD_Q));
        if (div)
            x = _mm256_div_ps(x, tv);
        _mm256_storeu_ps(w + i, x);
        c += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x, ninf, _CMP_GT_OQ)));
    }
    return c + scale_sse2(l + i, n - i, t, w + i);
}

AVX2 static float max_avx2(const float *w, int n)
{
    __m256 a = _mm256_set1_ps(-INFINITY), b = a;
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_max_ps(a, _mm256_loadu_ps(w + i));
        b = _mm256_max_ps(b, _mm256_loadu_ps(w + i + 8));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_max_ps(a, b));
    const float m = max_portable(t, 8), r = max_sse2(w + i, n - i);
    return r > m ? r : m;
}

AVX2 static inline __m256 exp8(__m256 x)
{
    const __m256 lo = _mm256_set1_ps(EXP_LO);
    const __m256 ok = _mm256_cmp_ps(x, lo, _CMP_GE_OQ);
    x = _mm256_max_ps(x, lo);
    const __m256 rnd = _mm256_set1_ps(EXP_ROUND);
    const __m256 n = _mm256_sub_ps(_mm256_add_ps(_mm256_mul_ps(x, _mm256_set1_ps(EXP_LOG2E)), rnd), rnd);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C1)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(EXP_C2)));
    __m256 p = _mm256_set1_ps(EXP_P0);
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P1));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P2));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P3));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P4));
    p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(EXP_P5));
    const __m256 y = _mm256_add_ps(_mm256_add_ps(_mm256_mul_ps(p, _mm256_mul_ps(r, r)), r), _mm256_set1_ps(1.0f));
    const __m256i s = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(ok, _mm256_mul_ps(y, _mm256_castsi256_ps(s)));
}

AVX2 static void exp_avx2(const float *w, int n, float m, float *e)
{
    const __m256 mv = _mm256_set1_ps(m);
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(e + i, exp8(_mm256_sub_ps(_mm256_loadu_ps(w + i), mv)));
    exp_sse2(w + i, n - i, m, e + i);
}

AVX2 static void blocks_avx2(const float *e, int n, double *blk)
{
    for (int b0 = 0; b0 < n; b0 += PB_SAMPLE_BLOCK) {
        const int end = n - b0 < PB_SAMPLE_BLOCK ? n : b0 + PB_SAMPLE_BLOCK;
        __m256d lo = _mm256_setzero_pd(), hi = _mm256_setzero_pd(); /* lanes 0-3, 4-7 */
        int i = b0;
        for (; i + 8 <= end; i += 8) {
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_loadu_ps(e + i)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_loadu_ps(e + i + 4)));
        }
        if (i < end) { /* the tail padded with zeros: x + 0 is x */
            float t[8] = {0};
            memcpy(t, e + i, (size_t)(end - i) * sizeof *t);
            lo = _mm256_add_pd(lo, _mm256_cvtps_pd(_mm_loadu_ps(t)));
            hi = _mm256_add_pd(hi, _mm256_cvtps_pd(_mm_loadu_ps(t + 4)));
        }
        double s[8];
        _mm256_storeu_pd(s, lo);
        _mm256_storeu_pd(s + 4, hi);
        blk[b0 / PB_SAMPLE_BLOCK] = lanes_sum(s);
    }
}

AVX2 static void drop_after_avx2(float *e, int n, uint32_t key, int last)
{
    const __m256i kv = _mm256_set1_epi32((int32_t)key), lv = _mm256_set1_epi32(last), eight = _mm256_set1_epi32(8);
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int i = 0;
    for (; i + 8 <= n; i += 8, idx = _mm256_add_epi32(idx, eight)) {
        const __m256 x = _mm256_loadu_ps(e + i);
        const __m256i b = _mm256_castps_si256(x);
        const __m256i drop = _mm256_or_si256(_mm256_cmpgt_epi32(kv, b),
                                             _mm256_and_si256(_mm256_cmpeq_epi32(b, kv), _mm256_cmpgt_epi32(idx, lv)));
        _mm256_storeu_ps(e + i, _mm256_andnot_ps(_mm256_castsi256_ps(drop), x));
    }
    for (; i < n; i++) {
        const uint32_t b = f32_bits(e[i]);
        if (b < key || (b == key && i > last))
            e[i] = 0.0f;
    }
}

AVX2 static void drop_below_avx2(float *e, int n, float t)
{
    const __m256 tv = _mm256_set1_ps(t);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(e + i);
        _mm256_storeu_ps(e + i, _mm256_andnot_ps(_mm256_cmp_ps(x, tv, _CMP_LT_OQ), x));
    }
    drop_below_portable(e + i, n - i, t);
}

const pb_svec pb_svec_avx2 = {"avx2", scale_avx2, max_avx2, exp_avx2, blocks_avx2,
                              drop_after_avx2, drop_below_avx2, next_ge_sse2, collect_ge_sse2};

const pb_svec *pb_svec_avx2_if(void)
{
    return __builtin_cpu_supports("avx2") ? &pb_svec_avx2 : NULL;
}
#else
const pb_svec *pb_svec_avx2_if(void)
{
    return NULL;
}
#endif

const pb_svec *pb_svec_best(void)
{
    const pb_svec *v = pb_svec_avx2_if();
#if defined(__SSE2__)
    return v ? v : &pb_svec_sse2;
#else
    return v ? v : &pb_svec_portable;
#endif
}
