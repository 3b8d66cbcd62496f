/* AVX2 + FMA + F16C path of the CPU kernels. Same reduction order as the
 * portable path (kern_portable.c), bit for bit. */
#include "config.h"

#include "cpu/kern_impl.h"

#ifdef PB_KERN_X86
#include <immintrin.h>
#include <math.h>
#include <string.h>

#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

#define MR 6
#define GMAX 6
#define PF 16 /* prefetch distance in k rows of a panel (64 bytes each for f32 and bf16 pairs) */

/* load or store one row of a panel's 16 accumulators; the last panel may be partial */
INL void acc_load(const float *c, int n, __m256 *a0, __m256 *a1)
{
    if (n == PB_KNR) {
        *a0 = _mm256_loadu_ps(c);
        *a1 = _mm256_loadu_ps(c + 8);
    } else {
        float t[PB_KNR] = {0};
        memcpy(t, c, (size_t)n * sizeof(float));
        *a0 = _mm256_loadu_ps(t);
        *a1 = _mm256_loadu_ps(t + 8);
    }
}

INL void acc_store(float *c, int n, __m256 a0, __m256 a1)
{
    if (n == PB_KNR) {
        _mm256_storeu_ps(c, a0);
        _mm256_storeu_ps(c + 8, a1);
    } else {
        float t[PB_KNR];
        _mm256_storeu_ps(t, a0);
        _mm256_storeu_ps(t + 8, a1);
        memcpy(c, t, (size_t)n * sizeof(float));
    }
}

/* a tile's running sums: from c (accumulate) or zero; back to c */
INL void acc_begin(const int R, const int G, __m256 acc[MR][GMAX][2], const float *c, size_t ldc, int nlast,
                   int accumulate)
{
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < G; g++) {
            if (accumulate) {
                acc_load(c + (size_t)r * ldc + (size_t)g * PB_KNR, g == G - 1 ? nlast : PB_KNR, &acc[r][g][0],
                         &acc[r][g][1]);
            } else {
                acc[r][g][0] = _mm256_setzero_ps();
                acc[r][g][1] = _mm256_setzero_ps();
            }
        }
}

INL void acc_end(const int R, const int G, __m256 acc[MR][GMAX][2], float *c, size_t ldc, int nlast)
{
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < G; g++)
            acc_store(c + (size_t)r * ldc + (size_t)g * PB_KNR, g == G - 1 ? nlast : PB_KNR, acc[r][g][0],
                      acc[r][g][1]);
}

/* the register tiles of both tables here, R rows x G panels: every G up to
 * gmax[R] = {6, 3, 2, 1, 1, 1}, so that a call's last panels (attention's
 * dims and keys, a product's last group) run as one tile of several fma
 * chains, not panel by panel at one panel's latency; and the instances of
 * prefix p by rows and panels (PB_KTILE_RUN) */
#define TILE_SHAPES(F)                                                                                               \
    F(1, 1) F(1, 2) F(1, 3) F(1, 4) F(1, 5) F(1, 6) F(2, 1) F(2, 2) F(2, 3) F(3, 1) F(3, 2) F(4, 1) F(5, 1) F(6, 1)
#define TILES(p)                                                                                                     \
    {{NULL}, {NULL, p##1_1, p##1_2, p##1_3, p##1_4, p##1_5, p##1_6}, {NULL, p##2_1, p##2_2, p##2_3},                  \
     {NULL, p##3_1, p##3_2}, {NULL, p##4_1}, {NULL, p##5_1}, {NULL, p##6_1}}

/* 8 q8 or f8 bytes of a group's k as f32, unscaled: int8 widened; e4m3 as
 * the f16 of its value / 256 (pb_kf8_half) widened */
INL __m256 grp_widen(const int dt, const unsigned char *p)
{
    const __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)p);
    if (dt == PB_DT_Q8)
        return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
    return _mm256_cvtph_ps(_mm_and_si128(_mm_slli_epi16(_mm_cvtepi8_epi16(b), 7), _mm_set1_epi16((short)0xbfff)));
}

/* R rows x G panels; dt is a constant after inlining */
INL void mm_tile(const int R, const int G, const int dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                 float *c, size_t ldc, int nlast, int accumulate)
{
    __m256 acc[MR][GMAX][2];
    acc_begin(R, G, acc, c, ldc, nlast, accumulate);
    if (dt == PB_DT_F32) {
        const float *wp = w;
        for (int k = 0; k < kc; k++) {
            __m256 w0[GMAX], w1[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const float *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                _mm_prefetch((const char *)(p + PF * PB_KNR), _MM_HINT_T0);
                w0[g] = _mm256_loadu_ps(p);
                w1[g] = _mm256_loadu_ps(p + 8);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    acc[r][g][0] = _mm256_fmadd_ps(xb, w0[g], acc[r][g][0]);
                    acc[r][g][1] = _mm256_fmadd_ps(xb, w1[g], acc[r][g][1]);
                }
            }
        }
    } else if (dt == PB_DT_F16) {
        const uint16_t *wp = w;
        for (int k = 0; k < kc; k++) {
            __m256 w0[GMAX], w1[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const uint16_t *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                _mm_prefetch((const char *)(p + 2 * PF * PB_KNR), _MM_HINT_T0); /* 32-byte rows: 2 per line */
                w0[g] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
                w1[g] = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8)));
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    acc[r][g][0] = _mm256_fmadd_ps(xb, w0[g], acc[r][g][0]);
                    acc[r][g][1] = _mm256_fmadd_ps(xb, w1[g], acc[r][g][1]);
                }
            }
        }
    } else if (dt == PB_DT_Q8 || dt == PB_DT_F8_E4M3) { /* per group: the scales, then each k's bytes widened
                                                          * and scaled */
        const unsigned char *wp = w;
        for (int k0 = 0; k0 < kc; k0 += PB_KQ8) {
            const int n = kc - k0 < PB_KQ8 ? kc - k0 : PB_KQ8;
            const size_t go = (size_t)(k0 / PB_KQ8) * PB_KQ8_GROUP;
            __m256 s0[GMAX], s1[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const float *sp = (const float *)(const void *)(wp + (size_t)g * ps + go);
                s0[g] = _mm256_loadu_ps(sp);
                s1[g] = _mm256_loadu_ps(sp + 8);
            }
            for (int k = 0; k < n; k++) {
                __m256 w0[GMAX], w1[GMAX];
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    const unsigned char *p = wp + (size_t)g * ps + go + 64 + (size_t)k * PB_KNR;
                    if ((k & 3) == 0) /* 4 k a line */
                        _mm_prefetch((const char *)(p + PF * 64), _MM_HINT_T0);
                    w0[g] = _mm256_mul_ps(grp_widen(dt, p), s0[g]);
                    w1[g] = _mm256_mul_ps(grp_widen(dt, p + 8), s1[g]);
                }
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k0 + k);
#pragma GCC unroll 8
                    for (int g = 0; g < G; g++) {
                        acc[r][g][0] = _mm256_fmadd_ps(xb, w0[g], acc[r][g][0]);
                        acc[r][g][1] = _mm256_fmadd_ps(xb, w1[g], acc[r][g][1]);
                    }
                }
            }
        }
    } else { /* bf16, k pairs interleaved per column */
        const uint16_t *wp = w;
        const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
        int k = 0;
        for (; k + 2 <= kc; k += 2) {
            __m256i v0[GMAX], v1[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const uint16_t *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                _mm_prefetch((const char *)(p + PF * 2 * PB_KNR), _MM_HINT_T0);
                v0[g] = _mm256_loadu_si256((const __m256i *)p);
                v1[g] = _mm256_loadu_si256((const __m256i *)(p + 16));
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    acc[r][g][0] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_slli_epi32(v0[g], 16)),
                                                   acc[r][g][0]);
                    acc[r][g][1] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_slli_epi32(v1[g], 16)),
                                                   acc[r][g][1]);
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k + 1);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    acc[r][g][0] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_and_si256(v0[g], hi_mask)),
                                                   acc[r][g][0]);
                    acc[r][g][1] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_and_si256(v1[g], hi_mask)),
                                                   acc[r][g][1]);
                }
            }
        }
        if (k < kc) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m256 xb = _mm256_broadcast_ss(x + (size_t)r * ldx + k);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    const uint16_t *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                    const __m256i v0 = _mm256_loadu_si256((const __m256i *)p);
                    const __m256i v1 = _mm256_loadu_si256((const __m256i *)(p + 16));
                    acc[r][g][0] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)), acc[r][g][0]);
                    acc[r][g][1] = _mm256_fmadd_ps(xb, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)), acc[r][g][1]);
                }
            }
        }
    }
    acc_end(R, G, acc, c, ldc, nlast);
}

/* one instance per (R, G, dtype) */
#define MM_FN(R, G)                                                                                                  \
    static TGT void mm_##R##_##G(pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c, \
                                 size_t ldc, int nlast, int accumulate)                                              \
    {                                                                                                                \
        if (dt == PB_DT_F32)                                                                                         \
            mm_tile(R, G, PB_DT_F32, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                  \
        else if (dt == PB_DT_F16)                                                                                    \
            mm_tile(R, G, PB_DT_F16, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                  \
        else if (dt == PB_DT_Q8)                                                                                     \
            mm_tile(R, G, PB_DT_Q8, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                   \
        else if (dt == PB_DT_F8_E4M3)                                                                                \
            mm_tile(R, G, PB_DT_F8_E4M3, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                              \
        else                                                                                                         \
            mm_tile(R, G, PB_DT_BF16, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                 \
    }
TILE_SHAPES(MM_FN)

static void mm_avx2(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c,
                    size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)pfd; /* not measured on an AVX2 machine: the hardware's prefetch alone */
    typedef void (*fn)(pb_dtype, const float *, size_t, const void *, size_t, int, float *, size_t, int, int);
    static const fn tiles[MR + 1][GMAX + 1] = TILES(mm_);
    const size_t esz = dt == PB_DT_F32 ? 4 : pb_kgrouped(dt) ? 1 : 2;
    PB_KTILE_RUN(tiles[R], GMAX, G, w, ps * esz, c, nlast, g, last,
                 tiles[R][g](dt, x, ldx, w, ps, kc, c, ldc, last, accumulate));
}

/* ---- bf16 products (kern_impl.h): vdpbf16ps emulated with fmas under
 * MXCSR DAZ and FTZ; x as pb_kxsplit pairs, the odd k of a pair first ---- */
/* xf: R rows of pb_kxsplit pairs (row stride ldx floats) */
INL void mmd_tile(const int R, const int G, const float *xf, size_t ldx, const uint16_t *w, size_t ps, int kc,
                  float *c, size_t ldc, int nlast, int accumulate)
{
    __m256 acc[MR][GMAX][2];
    acc_begin(R, G, acc, c, ldc, nlast, accumulate);
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    for (int k2 = 0; k2 < (kc + 1) / 2; k2++) {
        __m256i v0[GMAX], v1[GMAX];
#pragma GCC unroll 8
        for (int g = 0; g < G; g++) {
            const uint16_t *p = w + (size_t)g * ps + (size_t)(2 * k2) * PB_KNR;
            _mm_prefetch((const char *)(p + PF * 2 * PB_KNR), _MM_HINT_T0);
            v0[g] = _mm256_loadu_si256((const __m256i *)p);
            v1[g] = _mm256_loadu_si256((const __m256i *)(p + 16));
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 x1 = _mm256_broadcast_ss(xf + (size_t)r * ldx + (size_t)(2 * k2));
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                acc[r][g][0] = _mm256_fmadd_ps(x1, _mm256_castsi256_ps(_mm256_and_si256(v0[g], hi_mask)), acc[r][g][0]);
                acc[r][g][1] = _mm256_fmadd_ps(x1, _mm256_castsi256_ps(_mm256_and_si256(v1[g], hi_mask)), acc[r][g][1]);
            }
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m256 x0 = _mm256_broadcast_ss(xf + (size_t)r * ldx + (size_t)(2 * k2) + 1);
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                acc[r][g][0] = _mm256_fmadd_ps(x0, _mm256_castsi256_ps(_mm256_slli_epi32(v0[g], 16)), acc[r][g][0]);
                acc[r][g][1] = _mm256_fmadd_ps(x0, _mm256_castsi256_ps(_mm256_slli_epi32(v1[g], 16)), acc[r][g][1]);
            }
        }
    }
    acc_end(R, G, acc, c, ldc, nlast);
}

#define MMD_FN(R, G)                                                                                                 \
    static TGT void mmd_##R##_##G(const float *x, size_t ldx, const uint16_t *w, size_t ps, int kc, float *c,        \
                                  size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)                              \
    {                                                                                                                \
        (void)pfd; /* mm_avx2's */                                                                                   \
        mmd_tile(R, G, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                                \
    }
TILE_SHAPES(MMD_FN)

void pb_kdots_daz_ftz(pb_kdots_tile fn, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c,
                      size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | PB_KMXCSR_DAZ_FTZ);
    fn(x, ldx, w, ps, kc, c, ldc, nlast, accumulate, pfd);
    _mm_setcsr(csr);
}

static void mm_avx2_dots(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                         float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)pfd; /* as mm_avx2 */
    (void)dt;  /* bf16 */
    static const pb_kdots_tile tiles[MR + 1][GMAX + 1] = TILES(mmd_);
    PB_KTILE_RUN(tiles[R], GMAX, G, w, ps * 2, c, nlast, g, last,
                 pb_kdots_daz_ftz(tiles[R][g], x, ldx, w, ps, kc, c, ldc, last, accumulate, 0));
}

/* bf16: one 32-byte row of a k pair holds 8 columns' (k, k + 1) */
static TGT void cvt_avx2(pb_dtype dt, const void *w, int kc, float *out)
{
    const uint16_t *src = w;
    int k = 0;
    if (pb_kgrouped(dt)) {
        for (; k < kc; k++) {
            const unsigned char *g = (const unsigned char *)w + (size_t)(k / PB_KQ8) * PB_KQ8_GROUP;
            const float *sp = (const float *)(const void *)g;
            const unsigned char *p = g + 64 + (size_t)(k % PB_KQ8) * PB_KNR;
            float *o = out + (size_t)k * PB_KNR;
            if (dt == PB_DT_Q8) {
                _mm256_storeu_ps(o, _mm256_mul_ps(grp_widen(PB_DT_Q8, p), _mm256_loadu_ps(sp)));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(grp_widen(PB_DT_Q8, p + 8), _mm256_loadu_ps(sp + 8)));
            } else {
                _mm256_storeu_ps(o, _mm256_mul_ps(grp_widen(PB_DT_F8_E4M3, p), _mm256_loadu_ps(sp)));
                _mm256_storeu_ps(o + 8, _mm256_mul_ps(grp_widen(PB_DT_F8_E4M3, p + 8), _mm256_loadu_ps(sp + 8)));
            }
        }
        return;
    }
    if (dt == PB_DT_F16) {
        for (; k < kc; k++) {
            const uint16_t *p = src + (size_t)k * PB_KNR;
            _mm256_storeu_ps(out + (size_t)k * PB_KNR, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p)));
            _mm256_storeu_ps(out + (size_t)k * PB_KNR + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(p + 8))));
        }
        return;
    }
    const __m256i hi_mask = _mm256_set1_epi32((int)0xffff0000u);
    for (; k + 2 <= kc; k += 2) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(src + (size_t)k * PB_KNR));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(src + (size_t)k * PB_KNR + 16));
        float *o = out + (size_t)k * PB_KNR;
        _mm256_storeu_ps(o, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)));
        _mm256_storeu_ps(o + 8, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)));
        _mm256_storeu_ps(o + 16, _mm256_castsi256_ps(_mm256_and_si256(v0, hi_mask)));
        _mm256_storeu_ps(o + 24, _mm256_castsi256_ps(_mm256_and_si256(v1, hi_mask)));
    }
    if (k < kc) {
        const __m256i v0 = _mm256_loadu_si256((const __m256i *)(src + (size_t)k * PB_KNR));
        const __m256i v1 = _mm256_loadu_si256((const __m256i *)(src + (size_t)k * PB_KNR + 16));
        _mm256_storeu_ps(out + (size_t)k * PB_KNR, _mm256_castsi256_ps(_mm256_slli_epi32(v0, 16)));
        _mm256_storeu_ps(out + (size_t)k * PB_KNR + 8, _mm256_castsi256_ps(_mm256_slli_epi32(v1, 16)));
    }
}

/* ---- attention primitives ---- */

/* the fixed tree over 16 lanes held as lo = lanes 0..7, hi = 8..15 */
INL float tree16(__m256 lo, __m256 hi)
{
    __m256 s8 = _mm256_add_ps(lo, hi);                                                    /* l + l+8 */
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1)); /* l + l+4 */
    __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));                                  /* l + l+2 */
    __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));                                    /* l + l+1 */
    return _mm_cvtss_f32(s1);
}

INL __m256 exp8(__m256 x)
{
    const __m256 magic = _mm256_set1_ps(PB_KEXP_MAGIC);
    const __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(PB_KEXP_LOG2E), magic);
    const __m256 n = _mm256_sub_ps(t, magic);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(PB_KEXP_LN2HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(PB_KEXP_LN2LO), r);
    __m256 p = _mm256_set1_ps(PB_KEXP_C6);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(PB_KEXP_C5));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(PB_KEXP_C4));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(PB_KEXP_C3));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(PB_KEXP_C2));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    const __m256i s = _mm256_add_epi32(_mm256_slli_epi32(_mm256_castps_si256(t), 23), _mm256_set1_epi32(127 << 23));
    const __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(s));
    const __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(PB_KEXP_MIN), _CMP_LT_OQ);
    return _mm256_andnot_ps(under, e);
}

static TGT float expsum_avx2(float *s, int n, float m)
{
    const __m256 mv = _mm256_set1_ps(m);
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + i + 8), mv));
        _mm256_storeu_ps(s + i, e0);
        _mm256_storeu_ps(s + i + 8, e1);
        lo = _mm256_add_ps(lo, e0);
        hi = _mm256_add_ps(hi, e1);
    }
    if (i < n) {
        float t[16];
        for (int j = 0; j < 16; j++)
            t[j] = i + j < n ? s[i + j] : -INFINITY;
        const __m256 e0 = exp8(_mm256_sub_ps(_mm256_loadu_ps(t), mv));
        const __m256 e1 = exp8(_mm256_sub_ps(_mm256_loadu_ps(t + 8), mv));
        _mm256_storeu_ps(t, e0);
        _mm256_storeu_ps(t + 8, e1);
        memcpy(s + i, t, (size_t)(n - i) * sizeof(float));
        lo = _mm256_add_ps(lo, e0);
        hi = _mm256_add_ps(hi, e1);
    }
    return tree16(lo, hi);
}

/* ---- row kernels (same lanes and rounding as kern_portable.c) ---- */

/* 16 running maxima (max_ps keeps its second operand, the maxima, where x is
 * NaN), then the first 16 holding the largest: one checked load of 32 bytes
 * at a time under ASan too */
TGT int32_t pb_kargmax_avx2(const float *x, int n)
{
    const size_t nn = n > 0 ? (size_t)n : 0, n16 = nn & ~(size_t)15;
    __m256 lo = _mm256_set1_ps(-INFINITY), hi = lo;
    for (size_t i = 0; i < n16; i += 16) {
        lo = _mm256_max_ps(_mm256_loadu_ps(x + i), lo);
        hi = _mm256_max_ps(_mm256_loadu_ps(x + i + 8), hi);
    }
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(lo), _mm256_extractf128_ps(lo, 1));
    m4 = _mm_max_ps(m4, _mm_max_ps(_mm256_castps256_ps128(hi), _mm256_extractf128_ps(hi, 1)));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1));
    float best = _mm_cvtss_f32(m4);
    for (size_t i = n16; i < nn; i++)
        best = x[i] > best ? x[i] : best;
    if (best == -INFINITY)
        return 0;
    const __m256 b = _mm256_set1_ps(best);
    for (size_t i = 0; i < n16; i += 16) {
        const int lo_eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i), b, _CMP_EQ_OQ));
        const int hi_eq = _mm256_movemask_ps(_mm256_cmp_ps(_mm256_loadu_ps(x + i + 8), b, _CMP_EQ_OQ));
        const int eq = lo_eq | hi_eq << 8;
        if (eq)
            return (int32_t)(i + (size_t)__builtin_ctz((unsigned)eq));
    }
    for (size_t i = n16; i < nn; i++)
        if (x[i] == best)
            return (int32_t)i;
    return 0;
}

static TGT float sum_avx2(const float *x, int n)
{
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(x + i));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(x + i + 8));
    }
    if (i < n) {
        float t[16] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        lo = _mm256_add_ps(lo, _mm256_loadu_ps(t));
        hi = _mm256_add_ps(hi, _mm256_loadu_ps(t + 8));
    }
    return tree16(lo, hi);
}

static TGT float sqdev_avx2(const float *x, int n, float c)
{
    const __m256 cv = _mm256_set1_ps(c);
    __m256 lo = _mm256_setzero_ps(), hi = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), cv);
        const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), cv);
        lo = _mm256_fmadd_ps(d0, d0, lo);
        hi = _mm256_fmadd_ps(d1, d1, hi);
    }
    if (i < n) {
        float t[16] = {0};
        for (int j = 0; j < n - i; j++)
            t[j] = x[i + j] - c;
        const __m256 d0 = _mm256_loadu_ps(t), d1 = _mm256_loadu_ps(t + 8);
        lo = _mm256_fmadd_ps(d0, d0, lo);
        hi = _mm256_fmadd_ps(d1, d1, hi);
    }
    return tree16(lo, hi);
}

static TGT void scale_avx2(float *y, const float *x, int n, float c, float inv, const float *w, const float *b)
{
    const __m256 cv = _mm256_set1_ps(c), iv = _mm256_set1_ps(inv);
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), cv), iv), _mm256_loadu_ps(w + i));
        if (b)
            t = _mm256_add_ps(t, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, t);
    }
    for (; i < n; i++) {
        const float t = ((x[i] - c) * inv) * w[i];
        y[i] = b ? t + b[i] : t;
    }
}

INL __m256 act8(pb_kact act, __m256 v)
{
    if (act == PB_KACT_RELU)
        return _mm256_max_ps(v, _mm256_setzero_ps());
    __m256 z;
    if (act == PB_KACT_SILU) {
        z = _mm256_xor_ps(v, _mm256_set1_ps(-0.0f)); /* -v */
    } else {
        const __m256 c3 = _mm256_mul_ps(_mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(PB_KACT_GELU_C), v), v), v);
        z = _mm256_mul_ps(_mm256_set1_ps(PB_KACT_GELU_K), _mm256_add_ps(v, c3));
    }
    const __m256 e = exp8(_mm256_min_ps(z, _mm256_set1_ps(PB_KACT_CLAMP)));
    return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

static TGT void act_avx2(pb_kact act, float *y, const float *x, const float *u, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 r = act8(act, _mm256_loadu_ps(x + i));
        if (u)
            r = _mm256_mul_ps(r, _mm256_loadu_ps(u + i));
        _mm256_storeu_ps(y + i, r);
    }
    if (i < n) {
        float t[8] = {0}, tu[8] = {0};
        memcpy(t, x + i, (size_t)(n - i) * sizeof(float));
        __m256 r = act8(act, _mm256_loadu_ps(t));
        if (u) {
            memcpy(tu, u + i, (size_t)(n - i) * sizeof(float));
            r = _mm256_mul_ps(r, _mm256_loadu_ps(tu));
        }
        _mm256_storeu_ps(t, r);
        memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
    }
}

/* also the AVX-512 tables' rotary: heads are short, 256-bit vectors do */
TGT void pb_krope_avx2(float *v, int half, int interleaved, const float *cs)
{
    int i = 0;
    if (interleaved) {
        for (; i + 4 <= half; i += 4) { /* 4 pairs: [a0 b0 a1 b1 ..] */
            const __m256 x = _mm256_loadu_ps(v + 2 * i), t = _mm256_loadu_ps(cs + 2 * i);
            const __m256 p = _mm256_mul_ps(x, _mm256_moveldup_ps(t));                          /* a c, b c */
            const __m256 q = _mm256_mul_ps(_mm256_permute_ps(x, 0xb1), _mm256_movehdup_ps(t)); /* b s, a s */
            _mm256_storeu_ps(v + 2 * i, _mm256_addsub_ps(p, q));
        }
        for (; i < half; i++) {
            const float c = cs[2 * i], s = cs[2 * i + 1], a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = b * c + a * s;
        }
        return;
    }
    for (; i + 8 <= half; i += 8) {
        const __m256 t0 = _mm256_loadu_ps(cs + 2 * i), t1 = _mm256_loadu_ps(cs + 2 * i + 8);
        /* deinterleave: [c0 c1 c4 c5 | c2 c3 c6 c7] -> c0 .. c7 */
        const __m256 c = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(t0, t1, 0x88)), 0xd8));
        const __m256 s = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(t0, t1, 0xdd)), 0xd8));
        const __m256 a = _mm256_loadu_ps(v + i), b = _mm256_loadu_ps(v + i + half);
        _mm256_storeu_ps(v + i, _mm256_sub_ps(_mm256_mul_ps(a, c), _mm256_mul_ps(b, s)));
        _mm256_storeu_ps(v + i + half, _mm256_add_ps(_mm256_mul_ps(b, c), _mm256_mul_ps(a, s)));
    }
    for (; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1], a = v[i], b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = b * c + a * s;
    }
}

/* what the two tables share: the exact table's tiles take f32 and f16
 * weights in both, and the row kernels. cvt_min_m (Zen 1): converting once
 * beat the in-register widening from 4 tiles up (f16 weights only in the
 * bf16-product table: bf16 ones take the pairs). */
#define AVX2_COMMON                                                                                                  \
    .mr = MR, .kc = 256, .cvt_min_m = 4 * MR, .gmax = {0, 6, 3, 2, 1, 1, 1}, .cvt = cvt_avx2, .expsum = expsum_avx2, \
    .sum = sum_avx2, .sqdev = sqdev_avx2, .scale = scale_avx2, .act = act_avx2, .rope = pb_krope_avx2,               \
    .argmax = pb_kargmax_avx2,

const pb_kops pb_kops_avx2 = {
    .isa = PB_ISA_AVX2,
    .mm = mm_avx2,
    AVX2_COMMON
};

const pb_kops pb_kops_avx2_dots = {
    .isa = PB_ISA_AVX2,
    .exact = &pb_kops_avx2,
    .mm = mm_avx2_dots,
    .xpairs = pb_kxsplit,
    .xwords = 2,
    AVX2_COMMON
};

#endif
