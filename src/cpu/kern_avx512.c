/* AVX-512F path of the CPU kernels: one zmm per panel row of 16 columns.
 * Same reduction order as the portable path (kern_portable.c), bit for bit.
 * Also compiled by tests/cpu/kern_simde.c with PB_KERN_SIMDE defined: the
 * same source against SIMDe's emulation of the intrinsics, so that machines
 * without AVX-512 test this path too (as pb_kops_avx512_simde). */
#include "config.h"

#include "cpu/kern_impl.h"

#ifdef PB_KERN_X86
#include <math.h>
#include <string.h>

#ifdef PB_KERN_SIMDE
#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>
#include <simde/x86/f16c.h>
#define TGT
#define OPS pb_kops_avx512_simde
#ifndef _mm512_cvtph_ps /* absent from SIMDe 0.7: defined here from its specification */
static __m512 pb_simde_cvtph_ps(__m256i h)
{
    uint16_t in[16];
    float out[16];
    memcpy(in, &h, sizeof in);
    for (int i = 0; i < 16; i++)
        out[i] = pb_f16_to_f32(in[i]);
    return _mm512_loadu_ps(out);
}
#define _mm512_cvtph_ps pb_simde_cvtph_ps
#endif
#ifndef simde_mm512_cvtepi8_epi32 /* absent from SIMDe 0.7 too (q8's weights) */
static __m512i pb_simde_cvtepi8_epi32(__m128i b)
{
    int8_t in[16];
    int32_t out[16];
    memcpy(in, &b, sizeof in);
    for (int i = 0; i < 16; i++)
        out[i] = in[i];
    return _mm512_loadu_si512(out);
}
#define _mm512_cvtepi8_epi32 pb_simde_cvtepi8_epi32
#endif
#ifndef simde_mm512_cvtepi32_ps
static __m512 pb_simde_cvtepi32_ps(__m512i v)
{
    int32_t in[16];
    float out[16];
    memcpy(in, &v, sizeof in);
    for (int i = 0; i < 16; i++)
        out[i] = (float)in[i];
    return _mm512_loadu_ps(out);
}
#define _mm512_cvtepi32_ps pb_simde_cvtepi32_ps
#endif
#else
#include <immintrin.h>
#define TGT __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")))
#define OPS pb_kops_avx512
#endif
extern const pb_kops OPS;

#define INL static inline __attribute__((always_inline)) TGT

#define MR 8
#define GMAX 8
#ifndef PF
#define PF 16 /* prefetch distance in k rows of a panel */
#endif

INL __m512 acc_load(const float *c, int n)
{
    if (n == PB_KNR)
        return _mm512_loadu_ps(c);
    float t[PB_KNR] = {0};
    memcpy(t, c, (size_t)n * sizeof(float));
    return _mm512_loadu_ps(t);
}

INL void acc_store(float *c, int n, __m512 a)
{
    if (n == PB_KNR) {
        _mm512_storeu_ps(c, a);
    } else {
        float t[PB_KNR];
        _mm512_storeu_ps(t, a);
        memcpy(c, t, (size_t)n * sizeof(float));
    }
}

/* a tile's running sums: from c (accumulate) or zero; back to c */
INL void acc_begin(const int R, const int G, __m512 acc[MR][GMAX], const float *c, size_t ldc, int nlast,
                   int accumulate)
{
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < G; g++)
            acc[r][g] = accumulate ? acc_load(c + (size_t)r * ldc + (size_t)g * PB_KNR, g == G - 1 ? nlast : PB_KNR)
                                   : _mm512_setzero_ps();
}

INL void acc_end(const int R, const int G, __m512 acc[MR][GMAX], float *c, size_t ldc, int nlast)
{
#pragma GCC unroll 8
    for (int r = 0; r < R; r++)
#pragma GCC unroll 8
        for (int g = 0; g < G; g++)
            acc_store(c + (size_t)r * ldc + (size_t)g * PB_KNR, g == G - 1 ? nlast : PB_KNR, acc[r][g]);
}

/* a tile's prefetch for the line at p it reads now: pfd 0, the line ahead
 * bytes on (T0: the tile's own stream); else the line pfd bytes on, which
 * the next unit of the many-tile path reads (T1: toward the L2). The tiles
 * are inlined twice, with pfd 0 and not (pf_split), so that the test folds. */
INL void pf_line(const void *p, ptrdiff_t pfd, size_t ahead)
{
    if (pfd)
        _mm_prefetch((const char *)((uintptr_t)p + (uintptr_t)pfd), _MM_HINT_T1);
    else
        _mm_prefetch((const char *)p + ahead, _MM_HINT_T0);
}

/* The register tiles of every table here, R rows x G panels: gmax = {4, 6,
 * 4, 4, 3, 3, 3, 3} (R x G accumulators + G weights <= 28 zmm), one panel
 * each, and the narrower ones a call's last panels take (PB_KTILE_RUN:
 * attention's dims and keys, a product's last group; a panel is one fma
 * chain a row here, so one at a time ran at one chain's latency). One row
 * (batch-1 decode) takes 4 panels, not the 8 its registers allow: each
 * panel is its own weight stream, and on Zen 5 fewer streams read memory
 * faster (TinyLlama-1.1B bf16 decode +12% on 1 and 2 threads, GPT-2 f32
 * +10%, SmolLM2 +3%, GPT-2 f16 the same; session 10). */
#define TILE_SHAPES(F)                                                                                               \
    F(1, 4) F(2, 6) F(3, 4) F(4, 4) F(5, 3) F(6, 3) F(7, 3) F(8, 3)                                                  \
    F(1, 1) F(2, 1) F(3, 1) F(4, 1) F(5, 1) F(6, 1) F(7, 1) F(8, 1)                                                  \
    F(1, 2) F(1, 3) F(2, 2) F(2, 3) F(2, 4) F(3, 2) F(4, 2)
/* the instances of prefix p by rows and panels */
#define TILES(p)                                                                                                     \
    {{NULL},                                                                                                         \
     {NULL, p##1_1, p##1_2, p##1_3, p##1_4},                                                                         \
     {NULL, p##2_1, p##2_2, p##2_3, p##2_4, NULL, p##2_6},                                                           \
     {NULL, p##3_1, p##3_2, NULL, p##3_4},                                                                           \
     {NULL, p##4_1, p##4_2, NULL, p##4_4},                                                                           \
     {NULL, p##5_1, NULL, p##5_3},                                                                                   \
     {NULL, p##6_1, NULL, p##6_3},                                                                                   \
     {NULL, p##7_1, NULL, p##7_3},                                                                                   \
     {NULL, p##8_1, NULL, p##8_3}}

/* 16 q8 or f8 bytes of a group's k as f32, unscaled: int8 widened; e4m3 as
 * the f16 of its value / 256 (pb_kf8_half: sign-extended, moved up 7, bit 14
 * cleared) widened */
INL __m512 grp_widen(const int dt, const unsigned char *p)
{
    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)p);
    if (dt == PB_DT_Q8)
        return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
    return _mm512_cvtph_ps(
        _mm256_and_si256(_mm256_slli_epi16(_mm256_cvtepi8_epi16(b), 7), _mm256_set1_epi16((short)0xbfff)));
}

/* R rows x G panels; R, G and dt are constants after inlining */
INL void mm_tile(const int R, const int G, const int dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                 float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    __m512 acc[MR][GMAX];
    acc_begin(R, G, acc, c, ldc, nlast, accumulate);
    if (dt == PB_DT_F32) {
        const float *wp = w;
        for (int k = 0; k < kc; k++) {
            __m512 wv[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const float *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                pf_line(p, pfd, PF * PB_KNR * sizeof(float));
                wv[g] = _mm512_loadu_ps(p);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++)
                    acc[r][g] = _mm512_fmadd_ps(xb, wv[g], acc[r][g]);
            }
        }
    } else if (dt == PB_DT_F16) {
        const uint16_t *wp = w;
        for (int k = 0; k < kc; k++) {
            __m512 wv[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const uint16_t *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                pf_line(p, pfd, 2 * PF * PB_KNR * sizeof(uint16_t)); /* 32-byte rows: 2 per line */
                wv[g] = _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)p));
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++)
                    acc[r][g] = _mm512_fmadd_ps(xb, wv[g], acc[r][g]);
            }
        }
    } else if (dt == PB_DT_Q8 || dt == PB_DT_F8_E4M3) {
        /* per group: the columns' scales, then each k's 16 bytes widened and
         * scaled (one rounding: the portable path's weight), shared by the
         * rows' fmas */
        const unsigned char *wp = w;
        for (int k0 = 0; k0 < kc; k0 += PB_KQ8) {
            const int n = kc - k0 < PB_KQ8 ? kc - k0 : PB_KQ8;
            const size_t go = (size_t)(k0 / PB_KQ8) * PB_KQ8_GROUP;
            /* the scales in a register each where the tile has the room (few rows: batch-1 decode, where the
             * loads count), else from the L1 each k (the widest tiles would spill) */
            const int sreg = R * G + 2 * G <= 28;
            __m512 sc[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                pf_line(wp + (size_t)g * ps + go, pfd, PF * 64);
                if (sreg)
                    sc[g] = _mm512_loadu_ps((const float *)(const void *)(wp + (size_t)g * ps + go));
            }
            for (int k = 0; k < n; k++) {
                __m512 wv[GMAX];
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    const unsigned char *gp = wp + (size_t)g * ps + go, *p = gp + 64 + (size_t)k * PB_KNR;
                    if ((k & 3) == 0) /* 4 k a line */
                        pf_line(p, pfd, PF * 64);
                    wv[g] = _mm512_mul_ps(grp_widen(dt, p),
                                          sreg ? sc[g] : _mm512_loadu_ps((const float *)(const void *)gp));
                }
#pragma GCC unroll 8
                for (int r = 0; r < R; r++) {
                    const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k0 + k]);
#pragma GCC unroll 8
                    for (int g = 0; g < G; g++)
                        acc[r][g] = _mm512_fmadd_ps(xb, wv[g], acc[r][g]);
                }
            }
        }
    } else { /* bf16: a 32-bit lane holds k (low half) and k + 1 of its column */
        const uint16_t *wp = w;
        const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
        int k = 0;
        for (; k + 2 <= kc; k += 2) {
            __m512i v[GMAX];
#pragma GCC unroll 8
            for (int g = 0; g < G; g++) {
                const uint16_t *p = wp + (size_t)g * ps + (size_t)k * PB_KNR;
                pf_line(p, pfd, PF * 2 * PB_KNR * sizeof(uint16_t));
                v[g] = _mm512_loadu_si512((const void *)p);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++)
                    acc[r][g] = _mm512_fmadd_ps(xb, _mm512_castsi512_ps(_mm512_slli_epi32(v[g], 16)), acc[r][g]);
            }
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k + 1]);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++)
                    acc[r][g] = _mm512_fmadd_ps(xb, _mm512_castsi512_ps(_mm512_and_si512(v[g], hi_mask)), acc[r][g]);
            }
        }
        if (k < kc) {
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                const __m512 xb = _mm512_set1_ps(x[(size_t)r * ldx + k]);
#pragma GCC unroll 8
                for (int g = 0; g < G; g++) {
                    const __m512i v = _mm512_loadu_si512((const void *)(wp + (size_t)g * ps + (size_t)k * PB_KNR));
                    acc[r][g] = _mm512_fmadd_ps(xb, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)), acc[r][g]);
                }
            }
        }
    }
    acc_end(R, G, acc, c, ldc, nlast);
}

/* a tile call with pfd 0 or not, each its own inlined copy (pf_line) */
#define PF_SPLIT(call, ...) ((pfd) ? call(__VA_ARGS__, pfd) : call(__VA_ARGS__, 0))

#define MM_FN(R, G)                                                                                                  \
    static TGT void mm_##R##_##G(pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c, \
                                 size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)                               \
    {                                                                                                                \
        if (dt == PB_DT_F32)                                                                                         \
            PF_SPLIT(mm_tile, R, G, PB_DT_F32, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                        \
        else if (dt == PB_DT_F16)                                                                                    \
            PF_SPLIT(mm_tile, R, G, PB_DT_F16, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                        \
        else if (dt == PB_DT_Q8)                                                                                     \
            PF_SPLIT(mm_tile, R, G, PB_DT_Q8, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                         \
        else if (dt == PB_DT_F8_E4M3)                                                                                \
            PF_SPLIT(mm_tile, R, G, PB_DT_F8_E4M3, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                    \
        else                                                                                                         \
            PF_SPLIT(mm_tile, R, G, PB_DT_BF16, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                       \
    }
TILE_SHAPES(MM_FN)

static void mm_avx512(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                      float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    typedef void (*fn)(pb_dtype, const float *, size_t, const void *, size_t, int, float *, size_t, int, int,
                       ptrdiff_t);
    static const fn tiles[MR + 1][GMAX + 1] = TILES(mm_);
    const size_t esz = dt == PB_DT_F32 ? 4 : pb_kgrouped(dt) ? 1 : 2;
    PB_KTILE_RUN(tiles[R], GMAX, G, w, ps * esz, c, nlast, g, last,
                 tiles[R][g](dt, x, ldx, w, ps, kc, c, ldc, last, accumulate, pfd));
}

/* ---- bf16 products without AVX512-BF16 (kern_impl.h): vdpbf16ps emulated
 * with fmas under MXCSR DAZ and FTZ; x as pb_kxsplit pairs (broadcast from
 * memory: unpacking packed pairs took two more vector ops per row and pair,
 * on the fmas' ports), the odd k of a pair first ---- */
#ifdef PB_KERN_SIMDE
#define OPSD pb_kops_avx512_dots_simde
#else
#define OPSD pb_kops_avx512_dots
#endif
extern const pb_kops OPSD;

/* xf: R rows of pb_kxsplit pairs (row stride ldx floats) */
INL void mmd_tile(const int R, const int G, const float *xf, size_t ldx, const uint16_t *w, size_t ps, int kc,
                  float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    __m512 acc[MR][GMAX];
    acc_begin(R, G, acc, c, ldc, nlast, accumulate);
    const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
    for (int k2 = 0; k2 < (kc + 1) / 2; k2++) {
        __m512i v[GMAX];
#pragma GCC unroll 8
        for (int g = 0; g < G; g++) {
            const uint16_t *p = w + (size_t)g * ps + (size_t)(2 * k2) * PB_KNR;
            pf_line(p, pfd, PF * 2 * PB_KNR * sizeof(uint16_t));
            v[g] = _mm512_loadu_si512((const void *)p);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 x1 = _mm512_set1_ps(xf[(size_t)r * ldx + (size_t)(2 * k2)]);
#pragma GCC unroll 8
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_fmadd_ps(x1, _mm512_castsi512_ps(_mm512_and_si512(v[g], hi_mask)), acc[r][g]);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512 x0 = _mm512_set1_ps(xf[(size_t)r * ldx + (size_t)(2 * k2) + 1]);
#pragma GCC unroll 8
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_fmadd_ps(x0, _mm512_castsi512_ps(_mm512_slli_epi32(v[g], 16)), acc[r][g]);
        }
    }
    acc_end(R, G, acc, c, ldc, nlast);
}

#define MMD_FN(R, G)                                                                                                 \
    static TGT void mmd_##R##_##G(const float *x, size_t ldx, const uint16_t *w, size_t ps, int kc, float *c,        \
                                  size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)                              \
    {                                                                                                                \
        PF_SPLIT(mmd_tile, R, G, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                      \
    }
TILE_SHAPES(MMD_FN)

static void mm_avx512_dots(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                           float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)dt; /* bf16 */
    static const pb_kdots_tile tiles[MR + 1][GMAX + 1] = TILES(mmd_);
    PB_KTILE_RUN(tiles[R], GMAX, G, w, ps * 2, c, nlast, g, last,
                 pb_kdots_daz_ftz(tiles[R][g], x, ldx, w, ps, kc, c, ldc, last, accumulate, pfd));
}

/* ---- AVX512-BF16 (opt-in, PB_CPU_ISA=avx512bf16): bf16 weights times the
 * activations rounded to bf16 (nearest even), vdpbf16ps on k pairs. Not
 * bit-identical to the other paths; f32 and f16 weights take the exact
 * AVX-512 tiles. ---- */
#ifdef PB_KERN_SIMDE
#define TGTB TGT
#define OPSB pb_kops_avx512bf16_simde
#else
#define TGTB __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma,f16c")))
#define OPSB pb_kops_avx512bf16
#endif
extern const pb_kops OPSB;
#define INLB static inline __attribute__((always_inline)) TGTB

INLB __m512bh as_bh(__m512i v)
{
    __m512bh r;
    memcpy(&r, &v, sizeof r);
    return r;
}

/* 16 floats -> 8 lanes of (bf16(x[2i+1]) << 16) | bf16(x[2i]), nearest even
 * (in memory: the 16 bf16 in order) */
INL __m256i bf16_pairs(__m512 xf)
{
    const __m512i u = _mm512_castps_si512(xf);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    const __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb),
                                       _mm512_set1_epi32((int)0xffff0000u));
    const __m512i t = _mm512_srli_epi64(r, 16); /* even's bf16 at bits 0..15, odd's at 32..47 */
    const __m512i pr = _mm512_or_si512(_mm512_and_si512(t, _mm512_set1_epi64(0xffff)),
                                       _mm512_and_si512(_mm512_srli_epi64(t, 16), _mm512_set1_epi64(0xffff0000)));
    return _mm512_cvtepi64_epi32(pr);
}

/* the row's pairs (pb_kops.xpairs) */
static TGTB void xpairs_avx512bf16(const float *x, int n, uint32_t *out)
{
    int k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i *)(void *)(out + k / 2), bf16_pairs(_mm512_loadu_ps(x + k)));
    if (k < n) {
        float t[16] = {0};
        uint32_t o[8];
        memcpy(t, x + k, (size_t)(n - k) * sizeof(float));
        _mm256_storeu_si256((__m256i *)(void *)o, bf16_pairs(_mm512_loadu_ps(t)));
        memcpy(out + k / 2, o, (size_t)(n - k + 1) / 2 * sizeof(uint32_t));
    }
}

/* xb: R rows of bf16 pairs (row stride ldx pairs) from pb_kops.xpairs */
INLB void mmb_tile(const int R, const int G, const uint32_t *xb, size_t ldx, const uint16_t *w, size_t ps, int kc,
                   float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    __m512 acc[MR][GMAX];
    acc_begin(R, G, acc, c, ldc, nlast, accumulate);
    for (int k2 = 0; k2 < (kc + 1) / 2; k2++) {
        __m512i v[GMAX];
#pragma GCC unroll 8
        for (int g = 0; g < G; g++) {
            const uint16_t *p = w + (size_t)g * ps + (size_t)(2 * k2) * PB_KNR;
            pf_line(p, pfd, PF * 2 * PB_KNR * sizeof(uint16_t));
            v[g] = _mm512_loadu_si512((const void *)p);
        }
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            const __m512bh xv = as_bh(_mm512_set1_epi32((int)xb[(size_t)r * ldx + k2]));
#pragma GCC unroll 8
            for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_dpbf16_ps(acc[r][g], xv, as_bh(v[g]));
        }
    }
    acc_end(R, G, acc, c, ldc, nlast);
}

#define MMB_FN(R, G)                                                                                                 \
    static TGTB void mmb_##R##_##G(const uint32_t *x, size_t ldx, const uint16_t *w, size_t ps, int kc, float *c,    \
                                   size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)                             \
    {                                                                                                                \
        PF_SPLIT(mmb_tile, R, G, x, ldx, w, ps, kc, c, ldc, nlast, accumulate);                                      \
    }
TILE_SHAPES(MMB_FN)

/* bf16 weights, x as pb_kops.xpairs pairs; kc is even except at the end of
 * K, where the packed pair's second k is 0 */
static void mm_avx512bf16(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                          float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)dt; /* bf16 */
    typedef void (*fn)(const uint32_t *, size_t, const uint16_t *, size_t, int, float *, size_t, int, int,
                       ptrdiff_t);
    static const fn tiles[MR + 1][GMAX + 1] = TILES(mmb_);
    PB_KTILE_RUN(tiles[R], GMAX, G, w, ps * 2, c, nlast, g, last,
                 tiles[R][g]((const uint32_t *)(const void *)x, ldx, w, ps, kc, c, ldc, last, accumulate, pfd));
}

/* ---- attention primitives ---- */

/* the fixed tree over 16 lanes: l + l+8, l + l+4, l + l+2, l + l+1 */
INL float tree16(__m512 v)
{
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(v),
                                    _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    const __m128 s1 = _mm_add_ss(s2, _mm_movehdup_ps(s2));
    return _mm_cvtss_f32(s1);
}

/* bf16: one 64-byte row of a k pair holds the 16 columns' (k, k + 1) */
static TGT void cvt_avx512(pb_dtype dt, const void *w, int kc, float *out)
{
    const uint16_t *src = w;
    int k = 0;
    if (pb_kgrouped(dt)) {
        for (; k < kc; k++) {
            const unsigned char *g = (const unsigned char *)w + (size_t)(k / PB_KQ8) * PB_KQ8_GROUP;
            const unsigned char *p = g + 64 + (size_t)(k % PB_KQ8) * PB_KNR;
            const __m512 v = dt == PB_DT_Q8 ? grp_widen(PB_DT_Q8, p) : grp_widen(PB_DT_F8_E4M3, p);
            _mm512_storeu_ps(out + (size_t)k * PB_KNR,
                             _mm512_mul_ps(v, _mm512_loadu_ps((const float *)(const void *)g)));
        }
        return;
    }
    if (dt == PB_DT_F16) {
        for (; k < kc; k++) {
            const uint16_t *p = src + (size_t)k * PB_KNR;
            const __m256i h = _mm256_loadu_si256((const __m256i *)(const void *)p);
            _mm512_storeu_ps(out + (size_t)k * PB_KNR, _mm512_cvtph_ps(h));
        }
        return;
    }
    const __m512i hi_mask = _mm512_set1_epi32((int)0xffff0000u);
    for (; k + 2 <= kc; k += 2) {
        const __m512i v = _mm512_loadu_si512((const void *)(src + (size_t)k * PB_KNR));
        _mm512_storeu_ps(out + (size_t)k * PB_KNR, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
        _mm512_storeu_ps(out + (size_t)(k + 1) * PB_KNR, _mm512_castsi512_ps(_mm512_and_si512(v, hi_mask)));
    }
    if (k < kc) {
        const __m512i v = _mm512_loadu_si512((const void *)(src + (size_t)k * PB_KNR));
        _mm512_storeu_ps(out + (size_t)k * PB_KNR, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
}

INL __m512 exp16(__m512 x)
{
    const __m512 magic = _mm512_set1_ps(PB_KEXP_MAGIC);
    const __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(PB_KEXP_LOG2E), magic);
    const __m512 n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(PB_KEXP_LN2HI), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(PB_KEXP_LN2LO), r);
    __m512 p = _mm512_set1_ps(PB_KEXP_C6);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(PB_KEXP_C5));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(PB_KEXP_C4));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(PB_KEXP_C3));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(PB_KEXP_C2));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    const __m512i s = _mm512_add_epi32(_mm512_slli_epi32(_mm512_castps_si512(t), 23), _mm512_set1_epi32(127 << 23));
    const __m512 e = _mm512_mul_ps(p, _mm512_castsi512_ps(s));
    const __mmask16 keep = _mm512_cmp_ps_mask(x, _mm512_set1_ps(PB_KEXP_MIN), _CMP_NLT_UQ); /* not below: NaN passes, as in the other paths */
    return _mm512_maskz_mov_ps(keep, e);
}

static TGT float expsum_avx512(float *s, int n, float m)
{
    const __m512 mv = _mm512_set1_ps(m);
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(s + i), mv));
        _mm512_storeu_ps(s + i, e);
        acc = _mm512_add_ps(acc, e);
    }
    if (i < n) {
        float t[16];
        for (int j = 0; j < 16; j++)
            t[j] = i + j < n ? s[i + j] : -INFINITY;
        const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(t), mv));
        _mm512_storeu_ps(t, e);
        memcpy(s + i, t, (size_t)(n - i) * sizeof(float));
        acc = _mm512_add_ps(acc, e);
    }
    return tree16(acc);
}

/* ---- row kernels (same lanes and rounding as kern_portable.c) ---- */

INL __m512 load_part(const float *x, int n) /* n < 16 floats, zeros after */
{
    float t[16] = {0};
    memcpy(t, x, (size_t)n * sizeof(float));
    return _mm512_loadu_ps(t);
}

static TGT float sum_avx512(const float *x, int n)
{
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16)
        acc = _mm512_add_ps(acc, _mm512_loadu_ps(x + i));
    if (i < n)
        acc = _mm512_add_ps(acc, load_part(x + i, n - i));
    return tree16(acc);
}

static TGT float sqdev_avx512(const float *x, int n, float c)
{
    const __m512 cv = _mm512_set1_ps(c);
    __m512 acc = _mm512_setzero_ps();
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(x + i), cv);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    if (i < n) {
        float t[16] = {0};
        for (int j = 0; j < n - i; j++)
            t[j] = x[i + j] - c;
        const __m512 d = _mm512_loadu_ps(t);
        acc = _mm512_fmadd_ps(d, d, acc);
    }
    return tree16(acc);
}

static TGT void scale_avx512(float *y, const float *x, int n, float c, float inv, const float *w, const float *b)
{
    const __m512 cv = _mm512_set1_ps(c), iv = _mm512_set1_ps(inv);
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 t = _mm512_mul_ps(_mm512_mul_ps(_mm512_sub_ps(_mm512_loadu_ps(x + i), cv), iv), _mm512_loadu_ps(w + i));
        if (b)
            t = _mm512_add_ps(t, _mm512_loadu_ps(b + i));
        _mm512_storeu_ps(y + i, t);
    }
    for (; i < n; i++) {
        const float t = ((x[i] - c) * inv) * w[i];
        y[i] = b ? t + b[i] : t;
    }
}

INL __m512 act16(pb_kact act, __m512 v)
{
    if (act == PB_KACT_RELU)
        return _mm512_max_ps(v, _mm512_setzero_ps());
    __m512 z;
    if (act == PB_KACT_SILU) {
        z = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32((int)0x80000000u)));
    } else {
        const __m512 c3 = _mm512_mul_ps(_mm512_mul_ps(_mm512_mul_ps(_mm512_set1_ps(PB_KACT_GELU_C), v), v), v);
        z = _mm512_mul_ps(_mm512_set1_ps(PB_KACT_GELU_K), _mm512_add_ps(v, c3));
    }
    const __m512 e = exp16(_mm512_min_ps(z, _mm512_set1_ps(PB_KACT_CLAMP)));
    return _mm512_div_ps(v, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

static TGT void act_avx512(pb_kact act, float *y, const float *x, const float *u, int n)
{
    int i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 r = act16(act, _mm512_loadu_ps(x + i));
        if (u)
            r = _mm512_mul_ps(r, _mm512_loadu_ps(u + i));
        _mm512_storeu_ps(y + i, r);
    }
    if (i < n) {
        __m512 r = act16(act, load_part(x + i, n - i));
        if (u)
            r = _mm512_mul_ps(r, load_part(u + i, n - i));
        float t[16];
        _mm512_storeu_ps(t, r);
        memcpy(y + i, t, (size_t)(n - i) * sizeof(float));
    }
}

/* what the tables here share: the exact table's tiles take f32 and f16
 * weights in all of them, and attention and the row kernels are its own.
 * cvt_min_m 0 (Zen 5): widening in registers is free beside the fmas;
 * converting first cost 15-40%. Heads are short: rotary takes the 256-bit
 * form. */
#define AVX512_COMMON                                                                                                \
    .mr = MR, .kc = 256, .cvt_min_m = 0, .kpf = 1, .gmax = {0, 4, 6, 4, 4, 3, 3, 3, 3}, .cvt = cvt_avx512,        \
    .expsum = expsum_avx512, .sum = sum_avx512, .sqdev = sqdev_avx512, .scale = scale_avx512, .act = act_avx512,     \
    .rope = pb_krope_avx2, .argmax = pb_kargmax_avx2,

const pb_kops OPS = {
    .isa = PB_ISA_AVX512,
    .mm = mm_avx512,
    AVX512_COMMON
};

/* the AVX-512 table with the bf16 products emulated (CPUs without
 * AVX512-BF16, and Intel's, where the instruction is no faster) */
const pb_kops OPSD = {
    .isa = PB_ISA_AVX512,
    .exact = &OPS,
    .mm = mm_avx512_dots,
    .xpairs = pb_kxsplit,
    .xwords = 2,
    AVX512_COMMON
};

#ifndef PB_KERN_SIMDE
/* (pb_kops.softmax_bf16) two passes over the row: the largest s[i] * scale,
 * then each weight pb_kexp(s[i] * scale - m) into the lanes as expsum_avx512
 * and out as bf16 in order (bf16_pairs), a vector's weights stored after
 * its scores are read (out may lie at or before s in the same row) */
static TGT float softmax_bf16_avx512(const float *s, int n, float scale, uint16_t *out)
{
    const __m512 sv = _mm512_set1_ps(scale);
    __m512 mx = _mm512_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 16 <= n; i += 16)
        mx = _mm512_max_ps(_mm512_mul_ps(_mm512_loadu_ps(s + i), sv), mx);
    const __mmask16 tail = (__mmask16)((1u << (n - i)) - 1u);
    if (i < n)
        mx = _mm512_mask_max_ps(mx, tail, _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + i), sv), mx);
    const __m512 mv = _mm512_set1_ps(_mm512_reduce_max_ps(mx));
    __m512 acc = _mm512_setzero_ps();
    for (i = 0; i + 16 <= n; i += 16) {
        const __m512 e = exp16(_mm512_sub_ps(_mm512_mul_ps(_mm512_loadu_ps(s + i), sv), mv));
        acc = _mm512_add_ps(acc, e);
        _mm256_storeu_si256((__m256i *)(void *)(out + i), bf16_pairs(e));
    }
    if (i < n) {
        const __m512 x = _mm512_mask_mov_ps(_mm512_set1_ps(-INFINITY), tail,
                                            _mm512_mul_ps(_mm512_maskz_loadu_ps(tail, s + i), sv));
        const __m512 e = exp16(_mm512_sub_ps(x, mv));
        acc = _mm512_add_ps(acc, e);
        _mm256_mask_storeu_epi16((void *)(out + i), tail, bf16_pairs(e));
    }
    return tree16(acc);
}
#endif

/* the AVX-512 table with the bf16 dot products for bf16 weights */
const pb_kops OPSB = {
    .isa = PB_ISA_AVX512BF16,
    .exact = &OPS,
    .mm = mm_avx512bf16,
    .xpairs = xpairs_avx512bf16,
    .xwords = 1,
#ifndef PB_KERN_SIMDE
    .softmax_bf16 = softmax_bf16_avx512, /* attention's dots form */
#endif
    AVX512_COMMON
};

#if defined(PB_KERN_AMX) && !defined(PB_KERN_SIMDE)
/* (pb_kops.glu_pairs) per row: g (+ bg), u (+ bu), act16(g) * u and its
 * pairs, as act_avx512 and then xpairs_avx512bf16 make them of a whole
 * vector: the same bits */
static TGTB void glu_pairs_avx512(pb_kact act, const float *c, size_t ldc, int nr, const float *bg, const float *bu,
                                  uint32_t *out, size_t ldout)
{
    for (int i = 0; i < nr; i++) {
        __m512 g = _mm512_loadu_ps(c + (size_t)i * ldc), u = _mm512_loadu_ps(c + (size_t)i * ldc + 16);
        if (bg) {
            g = _mm512_add_ps(g, _mm512_loadu_ps(bg));
            u = _mm512_add_ps(u, _mm512_loadu_ps(bu));
        }
        _mm256_storeu_si256((__m256i *)(void *)(out + (size_t)i * ldout), bf16_pairs(_mm512_mul_ps(act16(act, g), u)));
    }
}

/* the AVX-512 table with bf16 weights' products on the AMX tile unit
 * (kern_amx.c); the activations' pairs as the AVX512-BF16 table makes them */
const pb_kops pb_kops_amx = {
    .isa = PB_ISA_AVX512,
    .exact = &OPS,
    .mm = mm_avx512,
    .xpairs = xpairs_avx512bf16,
    .xwords = 1,
    .amx = pb_kamx_mul,
    .amx_glu = pb_kamx_glu,
    .glu_pairs = glu_pairs_avx512,
    .softmax_bf16 = softmax_bf16_avx512,
    AVX512_COMMON
};
#endif

#endif
