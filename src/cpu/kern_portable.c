/* Portable C path of the CPU kernels: the specification the SIMD paths match
 * bit for bit (fmaf in the same order). */
#include "config.h"

#include <float.h>
#include <math.h>
#include <string.h>

#include "common/tensor.h"
#include "cpu/kern_impl.h"

static inline float bf16_lo(uint32_t v)
{
    uint32_t b = v << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* element (k, c) of a panel, as f32 */
static inline float wel(pb_dtype dt, const void *w, int k, int c)
{
    switch (dt) {
    case PB_DT_F32:
        return ((const float *)w)[(size_t)k * PB_KNR + c];
    case PB_DT_F16:
        return pb_f16_to_f32(((const uint16_t *)w)[(size_t)k * PB_KNR + c]);
    case PB_DT_Q8:
    case PB_DT_F8_E4M3:
        return pb_kq8_at(dt, w, (size_t)k, c);
    default: /* bf16, k pairs interleaved */
        return bf16_lo(((const uint16_t *)w)[(size_t)(k >> 1) * 2 * PB_KNR + (size_t)c * 2 + (k & 1)]);
    }
}

static size_t dt_size(pb_dtype dt)
{
    return dt == PB_DT_F32 ? 4 : pb_kgrouped(dt) ? 1 : 2;
}

static void mm_portable(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                        float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)pfd; /* the specification prefetches nothing */
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) {
            const void *wp = (const char *)w + (size_t)g * ps * dt_size(dt);
            const int nc = g == G - 1 ? nlast : PB_KNR;
            float *cr = c + (size_t)r * ldc + (size_t)g * PB_KNR;
            float acc[PB_KNR];
            for (int j = 0; j < PB_KNR; j++)
                acc[j] = accumulate && j < nc ? cr[j] : 0.0f;
            const float *xr = x + (size_t)r * ldx;
            for (int k = 0; k < kc; k++)
                for (int j = 0; j < PB_KNR; j++)
                    acc[j] = fmaf(xr[k], wel(dt, wp, k, j), acc[j]);
            for (int j = 0; j < nc; j++)
                cr[j] = acc[j];
        }
}

static float tree16(float *l)
{
    for (int s = 8; s >= 1; s >>= 1)
        for (int i = 0; i < s; i++)
            l[i] = l[i] + l[i + s];
    return l[0];
}

float pb_kexp(float x)
{
    if (x < PB_KEXP_MIN)
        return 0.0f;
    const float t = fmaf(x, PB_KEXP_LOG2E, PB_KEXP_MAGIC);
    const float n = t - PB_KEXP_MAGIC;
    float r = fmaf(n, -PB_KEXP_LN2HI, x);
    r = fmaf(n, -PB_KEXP_LN2LO, r);
    float p = PB_KEXP_C6;
    p = fmaf(p, r, PB_KEXP_C5);
    p = fmaf(p, r, PB_KEXP_C4);
    p = fmaf(p, r, PB_KEXP_C3);
    p = fmaf(p, r, PB_KEXP_C2);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    uint32_t tb, sb;
    memcpy(&tb, &t, 4);
    sb = (tb << 23) + (127u << 23);
    float s;
    memcpy(&s, &sb, 4);
    return p * s;
}

static float expsum_portable(float *s, int n, float m)
{
    float l[16] = {0};
    for (int i = 0; i < n; i++) {
        s[i] = pb_kexp(s[i] - m);
        l[i & 15] = l[i & 15] + s[i];
    }
    return tree16(l);
}

/* ---- row kernels ---- */

static float sum_portable(const float *x, int n)
{
    float l[16] = {0};
    const int n16 = (n + 15) & ~15;
    for (int i = 0; i < n16; i++)
        l[i & 15] = l[i & 15] + (i < n ? x[i] : 0.0f);
    return tree16(l);
}

static float sqdev_portable(const float *x, int n, float c)
{
    float l[16] = {0};
    const int n16 = (n + 15) & ~15;
    for (int i = 0; i < n16; i++) {
        const float d = i < n ? x[i] - c : 0.0f;
        l[i & 15] = fmaf(d, d, l[i & 15]);
    }
    return tree16(l);
}

static void scale_portable(float *y, const float *x, int n, float c, float inv, const float *w, const float *b)
{
    for (int i = 0; i < n; i++) {
        const float t = ((x[i] - c) * inv) * w[i];
        y[i] = b ? t + b[i] : t;
    }
}

static inline float clamp88(float z)
{
    return z < PB_KACT_CLAMP ? z : PB_KACT_CLAMP; /* as minps: NaN gives 88 */
}

static void act_portable(pb_kact act, float *y, const float *x, const float *u, int n)
{
    for (int i = 0; i < n; i++) {
        const float v = x[i];
        float r;
        if (act == PB_KACT_RELU) {
            r = v > 0.0f ? v : 0.0f;
        } else {
            const float z = act == PB_KACT_SILU ? -v : PB_KACT_GELU_K * (v + ((PB_KACT_GELU_C * v) * v) * v);
            r = v / (1.0f + pb_kexp(clamp88(z)));
        }
        y[i] = u ? r * u[i] : r;
    }
}

static void rope_portable(float *v, int half, int interleaved, const float *cs)
{
    for (int i = 0; i < half; i++) {
        const float c = cs[2 * i], s = cs[2 * i + 1];
        float *pa = interleaved ? v + 2 * i : v + i, *pb = interleaved ? v + 2 * i + 1 : v + i + half;
        const float a = *pa, b = *pb;
        *pa = a * c - b * s;
        *pb = b * c + a * s;
    }
}

static void cvt_portable(pb_dtype dt, const void *w, int kc, float *out)
{
    const uint16_t *src = w;
    if (pb_kgrouped(dt)) {
        for (int k = 0; k < kc; k++)
            for (int c = 0; c < PB_KNR; c++)
                out[(size_t)k * PB_KNR + c] = wel(dt, w, k, c);
        return;
    }
    if (dt == PB_DT_F16) {
        for (size_t i = 0; i < (size_t)kc * PB_KNR; i++)
            out[i] = pb_f16_to_f32(src[i]);
        return;
    }
    /* bf16: lane c of k pair holds k (low half) and k + 1 */
    for (int k = 0; k < kc; k++)
        for (int c = 0; c < PB_KNR; c++) {
            const uint32_t b = (uint32_t)src[(size_t)(k >> 1) * 2 * PB_KNR + (size_t)c * 2 + (size_t)(k & 1)] << 16;
            memcpy(&out[(size_t)k * PB_KNR + c], &b, 4);
        }
}

/* ---- bf16 products (--matmul-precision bf16): the specification of the
 * bf16-product tables (kern_impl.h) ---- */

static inline uint32_t bf16_nearest(float v) /* nearest even, by the bits (NaN too) */
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

void pb_kxpairs(const float *x, int n, uint32_t *out)
{
    for (int i = 0; 2 * i < n; i++)
        out[i] = bf16_nearest(x[2 * i]) | (2 * i + 1 < n ? bf16_nearest(x[2 * i + 1]) & 0xffffu : 0u) << 16;
}

void pb_kxsplit(const float *x, int n, uint32_t *out)
{
    for (int i = 0; 2 * i < n; i++) {
        out[2 * i] = 2 * i + 1 < n ? bf16_nearest(x[2 * i + 1]) << 16 : 0u;
        out[2 * i + 1] = bf16_nearest(x[2 * i]) << 16;
    }
}

static inline float daz(float v)
{
    return fabsf(v) < FLT_MIN ? copysignf(0.0f, v) : v;
}

/* fma(a, b, c) as one step of vdpbf16ps computes it: subnormal inputs read
 * as zero, nearest even, and a result that is tiny after rounding (to 24
 * bits with an unbounded exponent, as x86 detects it) flushed to a zero of
 * its sign. fmaf rounds on the subnormal grid instead; the two differ only
 * where that gives exactly +-FLT_MIN, which the same sum scaled by 2^64
 * decides. */
static float dot_step(float a, float b, float c)
{
    a = daz(a);
    b = daz(b);
    c = daz(c);
    const float r = fmaf(a, b, c);
    if (fabsf(r) != FLT_MIN)
        return daz(r);
    /* |r| = FLT_MIN needs c and a b below about 2^-100 (above, their sum
     * is a multiple of an ulp over 2^-126), so nothing overflows here */
    const int sa = fabsf(a) <= 1.0f;
    const float s = fmaf(sa ? a * 0x1p64f : a, sa ? b : b * 0x1p64f, c * 0x1p64f);
    return fabsf(s) < 0x1p-62f ? copysignf(0.0f, s) : r;
}

/* bf16 weights (pb_kmat_mul gives others to the exact table): x holds
 * pb_kxpairs pairs; per pair the odd k first, as vdpbf16ps */
static void mm_dots_portable(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc,
                             float *c, size_t ldc, int nlast, int accumulate, ptrdiff_t pfd)
{
    (void)pfd; /* the specification prefetches nothing */
    const uint32_t *xb = (const uint32_t *)(const void *)x;
    for (int r = 0; r < R; r++)
        for (int g = 0; g < G; g++) {
            const uint16_t *wp = (const uint16_t *)w + (size_t)g * ps;
            const int nc = g == G - 1 ? nlast : PB_KNR;
            float *cr = c + (size_t)r * ldc + (size_t)g * PB_KNR;
            float acc[PB_KNR];
            for (int j = 0; j < PB_KNR; j++)
                acc[j] = accumulate && j < nc ? cr[j] : 0.0f;
            for (int k2 = 0; k2 < (kc + 1) / 2; k2++) {
                const uint32_t p = xb[(size_t)r * ldx + (size_t)k2];
                const float x0 = bf16_lo(p), x1 = bf16_lo(p >> 16);
                for (int j = 0; j < PB_KNR; j++) {
                    acc[j] = dot_step(x1, wel(dt, wp, 2 * k2 + 1, j), acc[j]);
                    acc[j] = dot_step(x0, wel(dt, wp, 2 * k2, j), acc[j]);
                }
            }
            for (int j = 0; j < nc; j++)
                cr[j] = acc[j];
        }
}

/* what the two tables share: the exact table's tiles take f32 and f16
 * weights in both, and the row kernels */
#define PORTABLE_COMMON                                                                                              \
    .mr = 4, .kc = 256, .cvt_min_m = 16, .gmax = {0, 4, 2, 1, 1}, .cvt = cvt_portable, .expsum = expsum_portable,    \
    .sum = sum_portable, .sqdev = sqdev_portable, .scale = scale_portable, .act = act_portable,                      \
    .rope = rope_portable, .argmax = pb_argmax_first,

const pb_kops pb_kops_portable = {
    .isa = PB_ISA_PORTABLE,
    .mm = mm_portable,
    PORTABLE_COMMON
};

const pb_kops pb_kops_portable_dots = {
    .isa = PB_ISA_PORTABLE,
    .exact = &pb_kops_portable,
    .mm = mm_dots_portable,
    .xpairs = pb_kxpairs,
    .xwords = 1,
    PORTABLE_COMMON
};
