/* Internals shared by the kernel files (kern_*.c): the packed layout and the
 * table of per-ISA primitives. Not for use outside src/cpu/kern_*.c and the
 * kernel tests.
 *
 * Packed layout: output rows (columns of y) in panels of PB_KNR = 16; panel p
 * holds rows 16p .. 16p+15 (zero rows past n_out) over all k:
 *   f32, f16: element (k, c) at k * 16 + c
 *   bf16:     element (k, c) at (k / 2) * 32 + c * 2 + (k & 1)   (k pairs
 *             interleaved per column, n_in rounded up to even with zeros), so
 *             that one 32-bit lane holds k and k + 1 of a column: f32 bits are
 *             lane << 16 and lane & 0xffff0000.
 *   q8 (PB_DT_Q8, --weights-dtype int8): k in groups of PB_KQ8 = 64, each
 *             PB_KQ8_GROUP bytes: the 16 columns' f32 scales (one 64-byte
 *             line), then element (k, c) as an int8 at 64 + k * 16 + c (k
 *             within the group; the last group padded to 64 k with zeros).
 *             Its value is (float)q * scale[c], one rounding: the f32
 *             weight every path multiplies by.
 *   f8 (PB_DT_F8_E4M3, an FP8 checkpoint kept as stored): the q8 layout with
 *             e4m3 bytes for the int8s and 256 x the checkpoint's block
 *             scale (scale_inv) for each column's group (a group lies in one
 *             block: blocks are a multiple of 64 wide). Its value is
 *             half(pb_kf8_half(b)) * scale[c], one rounding: the half is the
 *             e4m3 value / 256, exactly, so this is e4m3 x scale_inv rounded
 *             once to f32, as the reference's dequantized weight.
 * A panel is pb_kmat.pstride elements (bytes for q8); the element of k0
 * starts at pb_kpanel_off(dt, k0) bytes in every layout (k0 even for bf16, a
 * multiple of PB_KQ8 for q8 and f8: where K blocks and tiles start). */
#ifndef PB_CPU_KERN_IMPL_H
#define PB_CPU_KERN_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "cpu/kernels.h"

#define PB_KNR 16
#define PB_KMR_MAX 8 /* widest register tile of any path */
#define PB_KQ8 64                               /* k of a q8 group */
#define PB_KQ8_GROUP (64 + PB_KQ8 * PB_KNR)     /* its bytes in a panel: scales, then 64 k of 16 int8 */

/* Quantizing one group of a column for q8 (--weights-dtype int8), on every
 * path: d = amax / 127 (f32 division), q = rint(w / d) within [-127, 127]
 * (0 when d is 0; NaN gives 0). */
static inline float pb_kq8_scale(float amax)
{
    return amax / 127.0f;
}

/* q8 and f8: a byte and a scale per group of 64 k of a column */
static inline int pb_kgrouped(pb_dtype dt)
{
    return dt == PB_DT_Q8 || dt == PB_DT_F8_E4M3;
}

/* An e4m3 byte as the f16 bits of its value / 256, exact for every code but
 * NaN (0x7f, 0xff: refused at load): the sign extended to 16 bits, moved up 7
 * (exponent and mantissa land in f16's fields, whose bias is 8 more), the
 * copy of the sign at bit 14 cleared. Subnormals map to f16 subnormals. */
static inline uint16_t pb_kf8_half(unsigned char b)
{
    return (uint16_t)(((unsigned)(uint16_t)(int8_t)b << 7) & 0xbfffu);
}

/* element (k, c) of a q8 or f8 panel (or of its part from a whole group on)
 * as f32: the byte's value times its group's scale of the column, one
 * rounding */
static inline float pb_kq8_at(pb_dtype dt, const void *panel, size_t k, int c)
{
    const unsigned char *g = (const unsigned char *)panel + k / PB_KQ8 * PB_KQ8_GROUP;
    float d;
    memcpy(&d, g + (size_t)c * sizeof d, sizeof d);
    const unsigned char b = g[64 + k % PB_KQ8 * PB_KNR + (size_t)c];
    return (dt == PB_DT_Q8 ? (float)(int8_t)b : pb_f16_to_f32(pb_kf8_half(b))) * d;
}

/* bytes from a panel's start to the element of k: k * 16 * (bytes of dt)
 * for the float layouts; q8, f8: whole groups, then its scales and k's int8 rows
 * (k past the last whole group: only at n_in) */
static inline size_t pb_kpanel_off(pb_dtype dt, size_t k)
{
    if (pb_kgrouped(dt))
        return k / PB_KQ8 * PB_KQ8_GROUP + (k % PB_KQ8 ? 64 + k % PB_KQ8 * PB_KNR : 0);
    return k * PB_KNR * (dt == PB_DT_F32 ? 4 : 2);
}

struct pb_kmat {
    pb_dtype dt;
    int n_out, n_in, npanels;
    size_t pstride; /* elements per panel */
    void *data;
    void *slab; /* the mapping data was taken from (kern_mat.c) */
};

typedef void (*pb_kglu_pairs)(pb_kact act, const float *c, size_t ldc, int nr, const float *bg, const float *bu,
                              uint32_t *out, size_t ldout);

/* Per-ISA primitives. Every one computes the same bits on every path. */
typedef struct pb_kops {
    pb_cpu_isa isa;
    int mr;                     /* most rows in one register tile */
    int kc;                     /* K block of the many-tile path when it converts (even), the least otherwise */
    /* bf16/f16 weights with M >= cvt_min_m rows (0: never) are converted to
     * f32 one K block of kc at a time and shared by all row tiles; below it,
     * or where converting in registers is as cheap (AVX-512), the tiles read
     * the panels in place, K blocks sized to the L2 (kern_mat.c). */
    int cvt_min_m;
    int kpf;                    /* 1: mm's tiles take pfd (else the many-tile path gives 0) */
    int gmax[PB_KMR_MAX + 1];   /* panels per tile for R = 1 .. mr rows */
    const struct pb_kops *exact; /* NULL, or the exact table whose tiles this one's other products use
                                  * (the bf16-dot table's: attention takes it) */
    /* c[R, 16 G] (row stride ldc; the last panel has nlast valid columns)
     * = (accumulate ? c : 0) + x[R, kc] (row stride ldx) times G panels of
     * dtype dt starting at w, ps elements apart: per element one fma chain
     * over k ascending. R <= mr; any G >= 1, in tiles of at most gmax[R]
     * panels (PB_KTILE_RUN: the widest each table has). The bf16-product
     * tables' take bf16 weights only (pb_kmat_mul gives others to .exact,
     * but for the AMX table's .amx, which takes every dtype). pfd: 0, or
     * (tables with kpf) the tile prefetches toward the L2, for each line of
     * the panels it reads, the line pfd bytes on instead of the line some
     * steps ahead: the next unit of the many-tile path (kern_mat.c). */
    void (*mm)(int R, int G, pb_dtype dt, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c,
               size_t ldc, int nlast, int accumulate, ptrdiff_t pfd);
    /* NULL on the exact paths. The bf16-product tables: out[0 ..
     * (n + 1) / 2) = bf16 pairs of x[0 .. n) (lane i: bf16(x[2i]) | bf16(x[2i
     * + 1]) << 16, nearest even, an odd n padded with 0), which pb_kmat_mul
     * prepares once per call for bf16 weights; mm then takes x as such pairs
     * (uint32, ldx and the start of x counted in words: xwords a pair). */
    void (*xpairs)(const float *x, int n, uint32_t *out);
    /* 32-bit words per pair of xpairs' output: 1 as above, or 2 (the fma
     * emulations: the pair's two values as f32 bits, k + 1 first, so that a
     * tile broadcasts each straight from memory; pb_kxsplit) */
    int xwords;
    /* NULL except on the AMX table (pb_kops_amx): y[M, panels [p0, p1)] (row
     * stride ldy) = the products of xb's M rows of bf16 pairs (row stride
     * ldxb words: whole 64-byte lines, zero past the row's pairs; past 16
     * rows, rows padded with zeros to a multiple of 16) and bf16 panels p0 ..
     * p1 - 1 of w on
     * the tile unit, mchunk rows (a multiple of 32) at a time; xpairs makes
     * the pairs (xwords 1). bf16 weights as they lie; f16 and f32 weights
     * split exactly into 2 or 3 bf16 pieces a K block at a time in scratch
     * (64-byte aligned, scratch_bytes >= 12 KiB; unused for bf16); + bias
     * (NULL: none; the whole n_out of it), added to each C tile as it is
     * stored (the same f32 sum as adding it after). */
    void (*amx)(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int p0, int p1, float *y,
                size_t ldy, const float *bias, void *scratch, size_t scratch_bytes);
    /* NULL except on the AMX table: a gated MLP's first product (bf16 w,
     * n_out = 2 n: gate rows [0, n), up rows [n, 2 n), n = 16 half) fused
     * with its activation: for gate panels q0 .. q1 - 1 and up panels q +
     * half, out's rows (row stride ldout words) get at words [8 q, 8 q + 8)
     * the pairs xpairs makes of act(gate + bias) * (up + bias) over the
     * panel's 16 columns (rows: glu_pairs): the bits of amx into y, then
     * act, then xpairs. xb, ldxb, M and mchunk as amx's. */
    void (*amx_glu)(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int half, int q0, int q1,
                    const float *bias, pb_kact act, pb_kglu_pairs rows, uint32_t *out, size_t ldout);
    /* NULL except on the AMX table: amx_glu's rows (its rows argument):
     * for i < nr, the 16 gate values c[i ldc ..] (+ bg) and up values
     * c[i ldc + 16 ..] (+ bu; bg, bu both NULL or both not) to out[i ldout
     * ..] as the 8 pairs xpairs makes of act(act, gate, up): the bits of
     * pb_krow_add, act, then xpairs */
    pb_kglu_pairs glu_pairs;
    /* NULL except on the AMX and AVX512-BF16 tables: attention's softmax
     * weights of one row as bf16 for their products: with m the largest
     * s[i] * scale (i < n >= 1), out[i] = bf16(pb_kexp(s[i] * scale - m))
     * (nearest even), each product rounded as written; returns the sum of
     * the unrounded weights in expsum's lanes and tree. (The same bits as
     * multiplying by scale in place, expsum over the row, then xpairs.) out
     * may lie at or before s in the same memory (the dots form writes the
     * weights over the row's own scores). */
    float (*softmax_bf16)(const float *s, int n, float scale, uint16_t *out);
    /* out[k * 16 + c] = the exact f32 value of element (k0 + k, c) for k < kc
     * of a bf16 or f16 panel, w pointing at k0 (even for bf16) */
    void (*cvt)(pb_dtype dt, const void *w, int kc, float *out);
    /* s[i] = pb_kexp(s[i] - m) for i < n; returns their sum in 16 lanes
     * (lane i % 16, ascending i) reduced by the tree l += l + 8, l += l + 4,
     * l += l + 2, l += l + 1. */
    float (*expsum)(float *s, int n, float m);
    /* Row kernels (kern_row.c). Lanes as expsum: lane i % 16, n rounded up
     * to 16 with padding that adds +0, then its tree. */
    float (*sum)(const float *x, int n);            /* lanes l = l + x[i] */
    float (*sqdev)(const float *x, int n, float c); /* d = x[i] - c, lanes l = fma(d, d, l) */
    /* y[i] = ((x[i] - c) * inv) * w[i] (+ b[i] when b), each op rounded */
    void (*scale)(float *y, const float *x, int n, float c, float inv, const float *w, const float *b);
    /* y[i] = f(x[i]) (* u[i] when u) for f = SiLU, GELU-tanh or ReLU (pb_kact) */
    void (*act)(pb_kact act, float *y, const float *x, const float *u, int n);
    /* one head: pairs (2i, 2i+1) (interleaved) or (i, i + half) rotated by
     * cs[2i], cs[2i+1]: a' = a c - b s, b' = b c + a s */
    void (*rope)(float *v, int half, int interleaved, const float *cs);
    /* the first index of the largest x[i], i < n (NaN never); 0 when none is
     * above -inf (n <= 0 too) */
    int32_t (*argmax)(const float *x, int n);
} pb_kops;

/* Activations of the row kernels (pb_kact), as every path computes them (pb_kexp,
 * argument clamped to 88, IEEE division):
 *   SiLU       x / (1 + exp(min(-x, 88)))
 *   GELU-tanh  x / (1 + exp(min(-1.5957691 (x + ((0.044715 x) x) x), 88)))
 *              (0.5 x (1 + tanh z) = x sigmoid(2 z))
 *   ReLU       x > 0 ? x : +0 */
#define PB_KACT_GELU_K (-1.5957691216057308f)
#define PB_KACT_GELU_C 0.044715f
#define PB_KACT_CLAMP 88.0f

extern const pb_kops pb_kops_portable;

/* The bf16-product tables (--matmul-precision bf16), one beside each exact
 * table (their .exact): for bf16 weights x comes as their xpairs' pairs and
 * each element's chain takes, per k pair, one step of vdpbf16ps: c = fma(x[k
 * + 1], w[k + 1], c), then c = fma(x[k], w[k], c), subnormal inputs read as
 * zero, nearest even, results tiny after rounding flushed to a signed zero.
 * pb_kops_avx512bf16 runs that instruction; the others emulate it with fmas
 * (under MXCSR DAZ and FTZ on x86), bit for bit; pb_kops_portable_dots is
 * the specification. f32 and f16 weights take the exact tiles. */
extern const pb_kops pb_kops_portable_dots;
/* xpairs of the bf16-product tables: packed pairs (the specification's and,
 * in its own form, the AVX512-BF16 one's), or split (the emulations':
 * out[2i] = bf16(x[2i + 1]) << 16, out[2i + 1] = bf16(x[2i]) << 16) */
void pb_kxpairs(const float *x, int n, uint32_t *out);
void pb_kxsplit(const float *x, int n, uint32_t *out);
#define PB_KMXCSR_DAZ_FTZ 0x8040u /* MXCSR: denormals are zero (bit 6), flush to zero (bit 15) */
/* a tile of the fma emulations (kern_avx2.c, kern_avx512.c): mm's
 * arguments less R, G and dt, x as pb_kxsplit pairs */
typedef void (*pb_kdots_tile)(const float *x, size_t ldx, const uint16_t *w, size_t ps, int kc, float *c, size_t ldc,
                              int nlast, int accumulate, ptrdiff_t pfd);

#if defined(__x86_64__) || defined(__i386__)
#define PB_KERN_X86 1
extern const pb_kops pb_kops_avx2;
extern const pb_kops pb_kops_avx512;
extern const pb_kops pb_kops_avx512bf16;
extern const pb_kops pb_kops_avx2_dots;
extern const pb_kops pb_kops_avx512_dots;
/* fn(...) under MXCSR DAZ and FTZ, the caller's MXCSR restored after */
void pb_kdots_daz_ftz(pb_kdots_tile fn, const float *x, size_t ldx, const void *w, size_t ps, int kc, float *c,
                      size_t ldc, int nlast, int accumulate, ptrdiff_t pfd);
#if defined(__x86_64__) && defined(__linux__)
#define PB_KERN_AMX 1
/* The AMX table (--matmul-precision bf16-amx, kern_amx.c): the AVX-512 exact
 * table with the weights' products on the tile unit (their own bits, not
 * the other bf16-product tables'; f16 and f32 weights split into bf16
 * pieces). */
extern const pb_kops pb_kops_amx;
void pb_kamx_glu(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int half, int q0, int q1,
                 const float *bias, pb_kact act, pb_kglu_pairs rows, uint32_t *out, size_t ldout);
void pb_kamx_mul(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int p0, int p1, float *y,
                 size_t ldy, const float *bias, void *scratch, size_t scratch_bytes);
#endif
/* AMX-TILE and AMX-BF16 usable: the CPU has them, the OS saves their state
 * and grants it to this process (asked for here, once is enough) */
bool pb_kamx_detect(void);
/* pb_kops.amx's row stride of pairs, in words, for rows of n_in values:
 * whole 64-byte lines, and one line more where rows would be a multiple of
 * 1 KiB apart (the 16 rows of an A tile would fall in a few L1 sets) */
size_t pb_kamx_ldxb(int n_in);
/* the AVX2 rotary row kernel, shared by the AVX-512 tables */
void pb_krope_avx2(float *v, int half, int interleaved, const float *cs);
int32_t pb_kargmax_avx2(const float *x, int n); /* the AVX-512 tables' too */
#endif

/* Rows of tile t when n rows go in nt register tiles of as equal sizes as
 * can be (32 rows, tiles of 6: 6 6 5 5 5 5, not 6 6 6 6 6 2: a tile of few
 * rows has few independent fma chains and runs at its latency, not its
 * throughput). Each element's chain over k is the same in any tile. */
static inline int pb_ktile_rows(int n, int nt, int t)
{
    return n / nt + (t < n % nt);
}

/* A table's mm over G panels (any G >= 1) in the tiles it has for one row
 * count: tab[g] the instance of g panels (NULL where there is none; tab[1]
 * always there, cap the array's last index), each call the widest there is
 * of at most the panels left; w (a const void *) and c (a float *) step past
 * each call's panels (pbytes a panel's stride in bytes). CALL sees the
 * call's panels as g and its last panel's columns as last (nlast for the
 * call that ends the G panels, else 16). Each element's chain over k is the
 * same in any tile. */
#define PB_KTILE_RUN(tab, cap, G, w, pbytes, c, nlast, g, last, CALL)                                                 \
    for (int left_ = (G), g, last; left_ > 0; left_ -= g) {                                                          \
        for (g = left_ < (cap) ? left_ : (cap); !(tab)[g]; g--)                                                      \
            ;                                                                                                        \
        last = g == left_ ? (nlast) : PB_KNR;                                                                        \
        CALL;                                                                                                        \
        w = (const char *)(w) + (size_t)g * (pbytes);                                                                \
        c += (size_t)g * PB_KNR;                                                                                     \
    }

const pb_kops *pb_kops_get(pb_cpu_isa isa); /* NULL when not built */
const pb_kops *pb_kops_active(void);
/* Tests: run the matmul/attention drivers with this table (NULL: the active
 * one). Lets a test plug in a path built another way (SIMDe emulation). */
void pb_kops_override(const pb_kops *ops);
/* Tests: K block of the many-tile path reading the panels in place (rounded
 * up to even; 0: sized to the L2, as in use); any block forced also makes
 * the AMX form's row chunks one block of 32 rows */
void pb_kmat_set_kblock(int kb);

/* kern_mat.c: the context's scratch for attention, and its pool */
int pb_kctx_threads(const pb_kctx *k);
size_t pb_kctx_scores_cap(const pb_kctx *k);         /* floats per thread */
float *const *pb_kctx_scores(const pb_kctx *k);      /* [threads] */
pb_status pb_kctx_items(pb_kctx *k, size_t n, size_t item_size, void **out);
void pb_kctx_run(pb_kctx *k, int n_items, pb_pool_fn fn, void *ctx);

/* exp(x) as every path computes it (x <= 88): round-to-nearest n = x log2 e,
 * r = x - n ln2 in two fma steps, degree-6 Horner polynomial, times 2^n;
 * 0 below -87.33. Constants: */
#define PB_KEXP_LOG2E 1.44269504088896341f
#define PB_KEXP_MAGIC 12582912.0f /* 1.5 * 2^23: adding it rounds to an integer */
#define PB_KEXP_LN2HI 0.693145751953125f
#define PB_KEXP_LN2LO 1.428606765330187045e-06f
#define PB_KEXP_MIN (-87.33654f)
#define PB_KEXP_C6 1.3888889e-3f
#define PB_KEXP_C5 8.3333333e-3f
#define PB_KEXP_C4 4.1666668e-2f
#define PB_KEXP_C3 1.6666667e-1f
#define PB_KEXP_C2 0.5f
float pb_kexp(float x); /* scalar reference, used by the portable path */

#endif
