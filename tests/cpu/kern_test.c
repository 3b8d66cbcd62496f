/* Unit test of the CPU kernels (src/cpu/kernels.h) on every ISA path this
 * machine runs, plus the AVX-512 path built against SIMDe's portable
 * emulation when configure found SIMDe:
 * - matmul: bit-identical to a scalar fmaf chain over k ascending (then
 *   + bias) for odd shapes, M = 1 .. 70 and 512, f32/f16/bf16 sources and
 *   stores, transposed sources, row permutations; a row alone equals the same
 *   row inside any M; every path gives the same bits;
 * - gather: rows of the packed matrix equal the stored values;
 * - the bf16 products (--matmul-precision bf16): every table (vdpbf16ps
 *   where the CPU has AVX512-BF16, the fma emulations on every path, the
 *   AVX-512 one through SIMDe too) gives the portable specification's bits,
 *   edge cases of the instruction's rules included (test_bf16_products), and
 *   each is within stated bounds of references on bf16-rounded and exact
 *   activations, batch-invariant (test_bf16dot_path);
 * - row kernels (norm, activations, rotary): every path the same bits,
 *   within stated bounds of double references (test_rows);
 * - attention: within 2e-5 (|err| <= 2e-5 * (1 + |ref|)) of a double
 *   precision reference, and bit-identical across a full prefill, chunked
 *   prefills, decode steps, batched or alone, threads, and ISA paths. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tensor.h"
#include "cpu/kern_impl.h"
#include "cpu/kernels.h"
#include "cpu/pool.h"
#include "../q8ref.h"

#ifdef PB_TEST_SIMDE
extern const pb_kops pb_kops_avx512_simde;
extern const pb_kops pb_kops_avx512bf16_simde;
extern const pb_kops pb_kops_avx512_dots_simde;
#endif
#ifdef PB_KERN_X86
#include <immintrin.h>
#endif

static int failures;
#define FAIL(...)                                                                                                    \
    do {                                                                                                             \
        fprintf(stderr, "FAIL: " __VA_ARGS__);                                                                       \
        fputc('\n', stderr);                                                                                         \
        if (++failures > 20)                                                                                         \
            exit(1);                                                                                                 \
    } while (0)

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 40) & 0xffffff) / 8388608.0f - 1.0f;
}

/* ---- paths under test ---- */
typedef struct path {
    const char *name;
    const pb_kops *ops;
} path;
static path paths[8];
static int n_paths;
/* attention's: the paths, and the bf16-dot tables (over an f32 or f16 cache
 * attention takes their exact tiles; over a bf16 one their dots: dpaths) */
static path apaths[10];
static int n_apaths;

static void add_paths(void)
{
    for (int i = 0; i <= (int)pb_cpu_isa_best(); i++)
        if (pb_kops_get((pb_cpu_isa)i))
            paths[n_paths++] = (path){pb_cpu_isa_name((pb_cpu_isa)i), pb_kops_get((pb_cpu_isa)i)};
#ifdef PB_TEST_SIMDE
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        paths[n_paths++] = (path){"avx512-simde", &pb_kops_avx512_simde};
    else
        printf("note: the SIMDe AVX-512 build needs AVX2+FMA to run (it emulates on 256-bit halves)\n");
#endif
    for (int i = 0; i < n_paths; i++)
        apaths[n_apaths++] = paths[i];
    if (pb_cpu_isa_available(PB_ISA_AVX512BF16))
        apaths[n_apaths++] = (path){"avx512bf16", pb_kops_get(PB_ISA_AVX512BF16)};
#ifdef PB_TEST_SIMDE
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        apaths[n_apaths++] = (path){"avx512bf16-simde", &pb_kops_avx512bf16_simde};
#endif
    printf("paths:");
    for (int i = 0; i < n_paths; i++)
        printf(" %s", paths[i].name);
    printf(" (best %s)\n", pb_cpu_isa_name(pb_cpu_isa_best()));
}

/* ---- matmul ---- */

static void *make_src(pb_dtype dt, size_t n, const float *vals)
{
    if (dt == PB_DT_F32) {
        float *p = malloc(n * 4);
        memcpy(p, vals, n * 4);
        return p;
    }
    uint16_t *p = malloc(n * 2);
    for (size_t i = 0; i < n; i++)
        p[i] = dt == PB_DT_F16 ? pb_f32_to_f16(vals[i]) : pb_f32_to_bf16(vals[i]);
    return p;
}

/* the value a stored element has: source -> f32 -> store dtype -> f32 */
static float stored_val(pb_dtype sdt, pb_dtype tdt, float v)
{
    float f = sdt == PB_DT_F32 || sdt == PB_DT_F8_E4M3 ? v /* f8: v is already its value */
              : sdt == PB_DT_F16 ? pb_f16_to_f32(pb_f32_to_f16(v)) : pb_bf16_to_f32(pb_f32_to_bf16(v));
    if (tdt == PB_DT_F16)
        f = pb_f16_to_f32(pb_f32_to_f16(f));
    else if (tdt == PB_DT_BF16)
        f = pb_bf16_to_f32(pb_f32_to_bf16(f));
    return f;
}

static int same_bits(float a, float b)
{
    return !memcmp(&a, &b, 4);
}

static const pb_dtype dts[3] = {PB_DT_F32, PB_DT_F16, PB_DT_BF16};

static int f8_block[2] = {128, 128}; /* an F8_E4M3 source's blocks (test_matmul_case) */

static void test_matmul_case(pb_kctx *kctx, int n_out, int n_in, pb_dtype sdt, pb_dtype tdt, int transposed,
                             int perm, int bias, const int *Ms, int nM)
{
    const int Mmax = Ms[nM - 1], ldx = n_in + 3, ldy = n_out + 5;
    float *wv = malloc((size_t)n_out * n_in * sizeof(float)); /* logical W[n_out][n_in] of the source */
    for (size_t i = 0; i < (size_t)n_out * n_in; i++)
        wv[i] = frand();
    /* an FP8 checkpoint's matrix (never transposed): e4m3 bytes and block scales; wv its values */
    const int br = f8_block[0], bc = f8_block[1];
    unsigned char *f8q = NULL;
    float *f8s = NULL;
    if (sdt == PB_DT_F8_E4M3) {
        transposed = 0;
        f8q = malloc((size_t)n_out * n_in);
        f8s = malloc((size_t)((n_out + br - 1) / br) * (size_t)((n_in + bc - 1) / bc) * sizeof(float));
        f8ref_encode(wv, n_out, n_in, br, bc, f8q, f8s);
    }
    /* source memory: W or W^T, rows permuted: packed row r = source row rp[r] */
    int *rp = malloc((size_t)n_out * sizeof(int));
    for (int r = 0; r < n_out; r++)
        rp[r] = perm ? (r * 7 + 3) % n_out : r;
    if (perm && n_out % 7 == 0)
        for (int r = 0; r < n_out; r++)
            rp[r] = n_out - 1 - r;
    float *sv = calloc((size_t)n_out * n_in, sizeof(float)); /* zeroed: gcc -fsanitize cannot see the loop fill it */
    for (int r = 0; r < n_out; r++)
        for (int k = 0; k < n_in; k++)
            sv[transposed ? (size_t)k * n_out + r : (size_t)r * n_in + k] = wv[(size_t)r * n_in + k];
    void *src = f8q ? f8q : make_src(sdt, (size_t)n_out * n_in, sv);
    pb_kmat_src s = {.data = src, .dtype = sdt, .transposed = transposed, .row_perm = perm ? rp : NULL,
                     .scale = f8s, .scale_dtype = PB_DT_F32, .block_rows = br, .block_cols = bc};
    pb_kmat *m = NULL;
    if (pb_kmat_pack(&s, n_out, n_in, tdt, &m) != PB_OK) {
        FAIL("pack [%d, %d] failed", n_out, n_in);
        return;
    }
    if (pb_kmat_rows(m) != n_out || pb_kmat_cols(m) != n_in || pb_kmat_dtype(m) != tdt)
        FAIL("kmat accessors");
    { /* packing on the context's threads gives the same bytes (padding included) */
        pb_kmat *m2 = NULL;
        if (pb_kmat_pack_mt(kctx, &s, n_out, n_in, tdt, &m2) != PB_OK)
            FAIL("threaded pack [%d, %d] failed", n_out, n_in);
        else if (memcmp(m->data, m2->data, (size_t)(pb_kmat_bytes(tdt, n_out, n_in) - sizeof(pb_kmat))))
            FAIL("threaded pack [%d, %d] %d->%d transposed %d differs", n_out, n_in, (int)sdt, (int)tdt, transposed);
        pb_kmat_free(m2);
        /* the same rows from three separate parts (q | k | v), untransposed */
        if (!transposed && n_out >= 3 && !f8q) {
            const size_t es = sdt == PB_DT_F32 ? 4 : 2;
            const int rows[3] = {n_out / 3, n_out / 3, n_out - 2 * (n_out / 3)};
            void *pd[3];
            size_t off = 0;
            for (int i = 0; i < 3; i++) {
                pd[i] = malloc((size_t)rows[i] * n_in * es);
                memcpy(pd[i], (const char *)src + off, (size_t)rows[i] * n_in * es);
                off += (size_t)rows[i] * n_in * es;
            }
            pb_kmat_src sp = {.dtype = sdt, .row_perm = s.row_perm, .n_parts = 3, .parts = (const void *const *)pd,
                              .part_rows = rows};
            m2 = NULL;
            if (pb_kmat_pack_mt(kctx, &sp, n_out, n_in, tdt, &m2) != PB_OK)
                FAIL("pack of 3 parts [%d, %d] failed", n_out, n_in);
            else if (memcmp(m->data, m2->data, (size_t)(pb_kmat_bytes(tdt, n_out, n_in) - sizeof(pb_kmat))))
                FAIL("pack of 3 parts [%d, %d] %d->%d differs", n_out, n_in, (int)sdt, (int)tdt);
            pb_kmat_free(m2);
            for (int i = 0; i < 3; i++)
                free(pd[i]);
        }
    }
    /* effective W of packed row r: stored value of source row rp[r] */
    float *we = malloc((size_t)n_out * n_in * sizeof(float));
    for (int r = 0; r < n_out; r++)
        for (int k = 0; k < n_in; k++)
            we[(size_t)r * n_in + k] = stored_val(sdt, tdt, wv[(size_t)rp[r] * n_in + k]);
    if (tdt == PB_DT_Q8)
        for (int r = 0; r < n_out; r++)
            q8ref_row(we + (size_t)r * n_in, n_in);
    free(f8s);
    float *b = malloc((size_t)n_out * sizeof(float));
    for (int r = 0; r < n_out; r++)
        b[r] = frand();
    float *x = malloc((size_t)Mmax * ldx * sizeof(float));
    for (size_t i = 0; i < (size_t)Mmax * ldx; i++)
        x[i] = frand();
    float *ref = malloc((size_t)Mmax * n_out * sizeof(float));
    for (int i = 0; i < Mmax; i++)
        for (int r = 0; r < n_out; r++) {
            float acc = 0.0f;
            for (int k = 0; k < n_in; k++)
                acc = fmaf(x[(size_t)i * ldx + k], we[(size_t)r * n_in + k], acc);
            ref[(size_t)i * n_out + r] = bias ? acc + b[r] : acc;
        }
    /* gather */
    {
        int32_t rows[3] = {0, n_out - 1, n_out / 2};
        float *g = malloc((size_t)3 * (n_in + 1) * sizeof(float));
        for (int i = 0; i < 3 * (n_in + 1); i++)
            g[i] = 1.0f;
        pb_kmat_gather(m, rows, 3, 0, g, n_in + 1, true);
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < n_in; k++)
                if (!same_bits(g[(size_t)t * (n_in + 1) + k], 1.0f + we[(size_t)rows[t] * n_in + k]))
                    FAIL("gather row %d k %d", rows[t], k);
        if (n_out >= 2) {
            pb_kmat_gather(m, rows + 1, 1, -1, g, n_in + 1, false);
            for (int k = 0; k < n_in; k++)
                if (!same_bits(g[k], we[(size_t)(n_out - 2) * n_in + k]))
                    FAIL("gather offset k %d [%d x %d] %s -> %s", k, n_out, n_in, pb_dtype_name(sdt),
                         pb_dtype_name(tdt));
        }
        free(g);
    }
    float *y = malloc((size_t)Mmax * ldy * sizeof(float));
    /* K blocks of the many-tile path: sized to the L2 (usually all of K
     * here) and forced to 6 k (many blocks, an odd K ending in a short one) */
    for (int pkb = 0; pkb < 2 * n_paths; pkb++) {
        const int pi = pkb / 2, kb = pkb % 2 ? 6 : 0;
        pb_kops_override(paths[pi].ops);
        pb_kmat_set_kblock(kb);
        for (int mi = 0; mi < nM; mi++) {
            const int M = Ms[mi];
            for (size_t i = 0; i < (size_t)Mmax * ldy; i++)
                y[i] = 12345.0f;
            if (pb_kmat_mul(kctx, x, ldx, M, m, bias ? b : NULL, y, ldy) != PB_OK) {
                FAIL("mul failed");
                continue;
            }
            int bad = 0;
            for (int i = 0; i < M && bad < 3; i++)
                for (int r = 0; r < ldy && bad < 3; r++) {
                    const float got = y[(size_t)i * ldy + r];
                    if (r >= n_out ? got != 12345.0f : !same_bits(got, ref[(size_t)i * n_out + r])) {
                        FAIL("%s: [%d x %d] src %s store %s%s%s%s M=%d K block %s: y[%d][%d] = %.9g, want %.9g",
                             paths[pi].name, n_out, n_in, pb_dtype_name(sdt), pb_dtype_name(tdt),
                             transposed ? " transposed" : "", perm ? " perm" : "", bias ? " bias" : "", M,
                             kb ? "6" : "L2", i, r, got,
                             r < n_out ? ref[(size_t)i * n_out + r] : 12345.0f);
                        bad++;
                    }
                }
            for (int i = M; i < Mmax && !bad; i++)
                if (y[(size_t)i * ldy] != 12345.0f) {
                    FAIL("%s: M=%d wrote row %d", paths[pi].name, M, i);
                    bad++;
                }
        }
    }
    pb_kops_override(NULL);
    pb_kmat_set_kblock(0);
    pb_kmat_free(m);
    free(wv), free(rp), free(sv), free(src), free(we), free(b), free(x), free(ref), free(y);
}

static void test_matmul(pb_kctx *kctx)
{
    static const int shapes[][2] = {{1, 1}, {3, 17}, {17, 3}, {16, 16}, {33, 70},  {100, 257},
                                    {1000, 17}, {17, 1000}, {130, 601}, {48, 64},
                                    {40, 1024},  /* rows 2 or 4 KiB apart: the line-blocked packing */
                                    {6001, 5}};  /* 376 panels: decode items of shrinking sizes */
    static const int Ms[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 17, 70};
    static const int Mbig[] = {1, 3, 8, 69, 512};
    int v = 0;
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int a = 0; a < 3; a++)
            for (int c = 0; c < 3; c++, v++) {
                const int n_out = shapes[si][0], n_in = shapes[si][1];
                const int big = (long)n_out * n_in > 20000;
                /* big shapes: fewer dtype pairs */
                if (big && a != c && (v % 3))
                    continue;
                test_matmul_case(kctx, n_out, n_in, dts[a], dts[c], v % 2, (v / 2) % 2, (v / 4) % 2, Ms,
                                 big ? 9 : 12);
            }
    test_matmul_case(kctx, 50, 130, PB_DT_BF16, PB_DT_BF16, 0, 1, 1, Mbig, 5);
    test_matmul_case(kctx, 40, 77, PB_DT_F32, PB_DT_F32, 1, 0, 0, Mbig, 5);
    test_matmul_case(kctx, 37, 64, PB_DT_F16, PB_DT_F16, 0, 0, 1, Mbig, 5);
    /* q8 (--weights-dtype int8) from each source dtype: groups of 64 k whole and partial (K 17, 70, 257,
     * 601, 1000), K blocks of whole groups (forced 6 rounds up to 64), the converting path (M >= 32 on AVX2) */
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
        for (int a = 0; a < 3; a++) {
            const int n_out = shapes[si][0], n_in = shapes[si][1];
            const int big = (long)n_out * n_in > 20000;
            if (big && a != (int)(si % 3))
                continue;
            test_matmul_case(kctx, n_out, n_in, dts[a], PB_DT_Q8, (int)(si + a) % 2, (int)(si / 2) % 2,
                             (int)(si + a / 2) % 2, Ms, big ? 9 : 12);
        }
    test_matmul_case(kctx, 50, 130, PB_DT_BF16, PB_DT_Q8, 0, 1, 1, Mbig, 5);
    test_matmul_case(kctx, 37, 300, PB_DT_F32, PB_DT_Q8, 1, 0, 0, Mbig, 5);
    { /* q8's rounding by known values: a group whose largest magnitude is 127 has scale 1 (w = rint(w), halves
       * to even), a group of zeros scale 0, a partial last group its own scale */
        float w[130];
        for (int k = 0; k < 130; k++)
            w[k] = 0.0f;
        w[0] = 127.0f, w[1] = 2.5f, w[2] = -2.5f, w[3] = 3.5f, w[4] = 0.49f, w[5] = -126.5f;
        w[128] = -0.5f, w[129] = 0.25f; /* d = 0.5 / 127: -127 and rint(63.5) = 64 */
        const float want[8] = {127.0f, 2.0f, -2.0f, 4.0f, 0.0f, -126.0f};
        pb_kmat_src sq = {.data = w, .dtype = PB_DT_F32};
        pb_kmat *mq = NULL;
        if (pb_kmat_pack(&sq, 1, 130, PB_DT_Q8, &mq) != PB_OK) {
            FAIL("q8 pack of known values failed");
        } else {
            float g[130];
            const int32_t row0 = 0;
            pb_kmat_gather(mq, &row0, 1, 0, g, 130, false);
            const float d = 0.5f / 127.0f;
            for (int k = 0; k < 130; k++) {
                const float e = k < 6 ? want[k] : k == 128 ? -127.0f * d : k == 129 ? 64.0f * d : 0.0f;
                if (!same_bits(g[k], e))
                    FAIL("q8 of known values: k %d is %.9g, want %.9g", k, g[k], e);
            }
            if (pb_kmat_bytes(PB_DT_Q8, 1, 130) != 3 * 1088 + sizeof(pb_kmat))
                FAIL("q8 bytes of [1, 130]: %llu", (unsigned long long)pb_kmat_bytes(PB_DT_Q8, 1, 130));
        }
        pb_kmat_free(mq);
    }
    /* f8 (an FP8 checkpoint's F8_E4M3 matrix with block scales): kept as stored from blocks of 128 x 128,
     * 1 x 64, 48 x 192 (partial blocks of rows and columns, K not a multiple of 64: its last group partial;
     * a block row split among panels), every M; and converted to f32, f16, bf16 and q8 */
    static const int f8_blocks[][2] = {{128, 128}, {1, 64}, {48, 192}};
    static const int f8_shapes[][2] = {{1, 1}, {17, 64}, {33, 70}, {100, 257}, {130, 601}, {40, 1024}, {300, 200}};
    for (size_t si = 0; si < sizeof f8_shapes / sizeof f8_shapes[0]; si++) {
        memcpy(f8_block, f8_blocks[si % 3], sizeof f8_block);
        const int big = (long)f8_shapes[si][0] * f8_shapes[si][1] > 20000;
        test_matmul_case(kctx, f8_shapes[si][0], f8_shapes[si][1], PB_DT_F8_E4M3, PB_DT_F8_E4M3, 0,
                         (int)si % 2, (int)(si / 2) % 2, Ms, big ? 9 : 12);
        const pb_dtype to[4] = {PB_DT_F32, PB_DT_F16, PB_DT_BF16, PB_DT_Q8};
        test_matmul_case(kctx, f8_shapes[si][0], f8_shapes[si][1], PB_DT_F8_E4M3, to[si % 4], 0, (int)si % 2, 0, Ms,
                         9);
    }
    memcpy(f8_block, f8_blocks[2], sizeof f8_block);
    test_matmul_case(kctx, 50, 130, PB_DT_F8_E4M3, PB_DT_F8_E4M3, 0, 1, 1, Mbig, 5);
    memcpy(f8_block, f8_blocks[0], sizeof f8_block);
    { /* every e4m3 code but NaN by its value from the format (f8ref_value), times 2^-3 (row 0) and 3 (row 1) */
        unsigned char q[256];
        for (int c = 0; c < 256; c++)
            q[c] = (c & 0x7f) == 0x7f ? 0 : (unsigned char)c;
        const float sc[2] = {0.125f, 3.0f}; /* [2 block rows][1 block column] */
        pb_kmat_src sq = {.data = q, .dtype = PB_DT_F8_E4M3, .scale = sc, .scale_dtype = PB_DT_F32,
                          .block_rows = 1, .block_cols = 128};
        pb_kmat *mq = NULL;
        if (pb_kmat_pack(&sq, 2, 128, PB_DT_F8_E4M3, &mq) != PB_OK) {
            FAIL("f8 pack of every code failed");
        } else {
            float g[128];
            for (int32_t row = 0; row < 2; row++) {
                pb_kmat_gather(mq, &row, 1, 0, g, 128, false);
                for (int k = 0; k < 128; k++) {
                    const float e = f8ref_value(q[row * 128 + k]) * sc[row];
                    if (!same_bits(g[k], e))
                        FAIL("f8 code 0x%02x x %g is %.9g, want %.9g", q[row * 128 + k], (double)sc[row], g[k], e);
                }
            }
            if (pb_kmat_bytes(PB_DT_F8_E4M3, 2, 128) != 2 * 1088 + sizeof(pb_kmat))
                FAIL("f8 bytes of [2, 128]: %llu", (unsigned long long)pb_kmat_bytes(PB_DT_F8_E4M3, 2, 128));
        }
        pb_kmat_free(mq);
        /* f8 is kept only from an f8 source; an f8 source needs blocks of a multiple of 64 columns */
        float one = 1.0f;
        pb_kmat_src sf = {.data = &one, .dtype = PB_DT_F32};
        if (pb_kmat_pack(&sf, 1, 1, PB_DT_F8_E4M3, &mq) == PB_OK)
            FAIL("pack kept an f32 source as F8_E4M3");
        sq.block_cols = 32;
        if (pb_kmat_pack(&sq, 2, 128, PB_DT_F8_E4M3, &mq) == PB_OK)
            FAIL("pack took F8_E4M3 blocks of 32 columns");
    }
    /* bad input */
    float one = 1.0f;
    pb_kmat_src s = {.data = &one, .dtype = PB_DT_I32};
    pb_kmat *m;
    if (pb_kmat_pack(&s, 1, 1, PB_DT_F32, &m) == PB_OK)
        FAIL("pack accepted an I32 source");
    int badperm = 5;
    s = (pb_kmat_src){.data = &one, .dtype = PB_DT_F32, .row_perm = &badperm};
    if (pb_kmat_pack(&s, 1, 1, PB_DT_F32, &m) == PB_OK)
        FAIL("pack accepted a row_perm out of range");
    if (pb_kmat_bytes(PB_DT_BF16, 17, 3) < 32 * 4 * 2)
        FAIL("pb_kmat_bytes too small");
}

/* One packing of an [n_out, n_in] matrix of sdt (vals, row-major; the
 * source k-major when tr) kept as tdt: every stored element read back
 * through gather, bit for bit against the scalar conversions (widened to
 * f32 exactly, then rounded to tdt's nearest even); the rows past n_out and
 * the bf16 pad of an odd K stay 0. */
static void pack_case(pb_kctx *kctx, const char *what, pb_dtype sdt, const void *vals, int n_out, int n_in, int tr,
                      pb_dtype tdt)
{
    const size_t es = sdt == PB_DT_F32 ? 4 : 2, ts = tdt == PB_DT_F32 ? 4 : 2, n = (size_t)n_out * n_in;
    unsigned char *sv = malloc(n * es);
    for (int r = 0; r < n_out; r++)
        for (int k = 0; k < n_in; k++)
            memcpy(sv + (tr ? (size_t)k * n_out + r : (size_t)r * n_in + k) * es,
                   (const unsigned char *)vals + ((size_t)r * n_in + k) * es, es);
    pb_kmat_src src = {.data = sv, .dtype = sdt, .transposed = tr};
    pb_kmat *m = NULL;
    if (pb_kmat_pack_mt(kctx, &src, n_out, n_in, tdt, &m) != PB_OK) {
        FAIL("%s: pack [%d, %d] failed", what, n_out, n_in);
        free(sv);
        return;
    }
    float *g = malloc((size_t)n_in * sizeof(float));
    int bad = 0;
    for (int r = 0; r < n_out && bad < 3; r++) {
        const int32_t row = r;
        pb_kmat_gather(m, &row, 1, 0, g, n_in, false);
        for (int k = 0; k < n_in && bad < 3; k++) {
            const unsigned char *e = (const unsigned char *)vals + ((size_t)r * n_in + k) * es;
            uint32_t a = 0, b, c;
            memcpy(&a, e, es);
            float w;
            if (sdt == PB_DT_F32)
                memcpy(&w, e, 4);
            else
                w = pb_f16_to_f32((uint16_t)a);
            const float want = tdt == PB_DT_BF16  ? pb_bf16_to_f32(pb_f32_to_bf16(w))
                               : tdt == PB_DT_F16 ? pb_f16_to_f32(pb_f32_to_f16(w))
                                                  : w;
            if (!same_bits(g[k], want)) {
                memcpy(&b, &g[k], 4), memcpy(&c, &want, 4);
                FAIL("%s: [%d, %d]%s %s -> %s: row %d k %d: %08x stored as %08x, want %08x", what, n_out, n_in,
                     tr ? " k-major" : "", pb_dtype_name(sdt), pb_dtype_name(tdt), r, k, a, b, c);
                bad++;
            }
        }
    }
    /* the last panel's columns past n_out at every k; for an odd K kept as
     * bf16, the pad (k = n_in) of every column */
    const int pad = tdt == PB_DT_BF16 && (n_in & 1), last = n_out - (m->npanels - 1) * 16;
    for (int p = 0; p < m->npanels && bad < 3; p++)
        for (int k = 0; k < n_in + pad && bad < 3; k++)
            for (int c = k == n_in ? 0 : p == m->npanels - 1 ? last : 16; c < 16; c++) {
                const size_t i = (size_t)p * m->pstride + (tdt == PB_DT_BF16 ? (size_t)(k / 2) * 32 + (size_t)c * 2
                                                                              + (k & 1) : (size_t)k * 16 + (size_t)c);
                const unsigned char z[4] = {0};
                if (memcmp((const unsigned char *)m->data + i * ts, z, ts)) {
                    FAIL("%s: [%d, %d]%s %s -> %s: panel %d k %d column %d (%s) is not 0", what, n_out, n_in,
                         tr ? " k-major" : "", pb_dtype_name(sdt), pb_dtype_name(tdt), p, k, c,
                         k == n_in ? "the bf16 pad" : "past the rows");
                    bad++;
                    break;
                }
            }
    free(g);
    pb_kmat_free(m);
    free(sv);
}

/* Packing rounds as the scalar conversions do, special values included:
 * from f32, NaNs whose payload is only in the low 16 bits (bf16 keeps them
 * NaN, not Inf), infinities, signed zeros, denormals, ties to even both
 * ways, kept as f16 and bf16; from f16 (widened exactly, F16C where the CPU
 * has it, on each path), signaling and quiet NaNs (which come out quiet),
 * infinities, signed zeros, denormals and the largest finite, kept as f32
 * and bf16; ordinary values beside them; rows and k-major sources, odd and
 * even K, panels of fewer than 16 rows. */
static void test_pack_specials(pb_kctx *kctx)
{
    static const uint32_t sp32[] = {0x7f800001u, 0xff800003u, 0x7fc00000u, 0x7f800000u, 0xff800000u,
                                    0x00000000u, 0x80000000u, 0x00000001u, 0x807fffffu, 0x3f808000u,
                                    0x3f818000u, 0x3f807fffu, 0x7f7fffffu, 0xbf7f8000u, 0x477fe000u};
    static const uint16_t sp16[] = {0x7c01u, 0xfd55u, 0x7e00u, 0x7c00u, 0xfc00u, 0x0000u, 0x8000u,
                                    0x0001u, 0x83ffu, 0x7bffu, 0x3c01u, 0xc000u, 0x0400u};
    static const int shapes[][2] = {{16, 48}, {32, 33}, {48, 64}, {16, 31}, {20, 40}, {7, 65}};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int n_out = shapes[si][0], n_in = shapes[si][1];
        const size_t n = (size_t)n_out * n_in;
        uint32_t *v32 = malloc(n * 4);
        uint16_t *v16 = malloc(n * 2);
        for (size_t i = 0; i < n; i++) {
            const float f = frand() * 1000.0f; /* ordinary values beside the specials */
            memcpy(&v32[i], &f, 4);
            if (i % 3)
                v32[i] = sp32[(i * 7 + si) % (sizeof sp32 / sizeof sp32[0])];
            v16[i] = i % 3 ? sp16[(i * 5 + si) % (sizeof sp16 / sizeof sp16[0])] : pb_f32_to_f16(f / 10.0f);
        }
        for (int tr = 0; tr < 2; tr++) {
            pack_case(kctx, "specials", PB_DT_F32, v32, n_out, n_in, tr, PB_DT_F16);
            pack_case(kctx, "specials", PB_DT_F32, v32, n_out, n_in, tr, PB_DT_BF16);
            for (int pi = 0; pi < n_paths; pi++) { /* each path's conversion */
                pb_kops_override(paths[pi].ops);
                pack_case(kctx, paths[pi].name, PB_DT_F16, v16, n_out, n_in, tr, PB_DT_F32);
                pack_case(kctx, paths[pi].name, PB_DT_F16, v16, n_out, n_in, tr, PB_DT_BF16);
            }
            pb_kops_override(NULL);
        }
        free(v32), free(v16);
    }
}

/* ---- attention ---- */

typedef struct attn_case {
    int n_heads, n_kv, hd, window, alibi;
} attn_case;

/* one sequence's data: q [L][n_heads*hd], k/v [L][n_kv*hd] */
typedef struct seqdata {
    int L;
    float *q, *k, *v;
} seqdata;

static void ref_attention(const attn_case *c, const seqdata *sd, const float *alibi, float scale, int p, double *out)
{
    const int hd = c->hd, G = c->n_heads / c->n_kv, kvd = c->n_kv * hd;
    const int lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
    double *w = malloc((size_t)(p + 1) * sizeof(double));
    for (int h = 0; h < c->n_heads; h++) {
        const int g = h / G;
        const float *q = sd->q + (size_t)p * c->n_heads * hd + (size_t)h * hd;
        double m = -INFINITY, sum = 0;
        for (int j = lo; j <= p; j++) {
            double d = 0;
            for (int e = 0; e < hd; e++)
                d += (double)q[e] * sd->k[(size_t)j * kvd + (size_t)g * hd + e];
            d *= scale;
            if (alibi)
                d += (double)alibi[h] * j;
            w[j] = d;
            m = d > m ? d : m;
        }
        for (int j = lo; j <= p; j++)
            sum += w[j] = exp(w[j] - m);
        for (int e = 0; e < hd; e++) {
            double o = 0;
            for (int j = lo; j <= p; j++)
                o += w[j] * sd->v[(size_t)j * kvd + (size_t)g * hd + e];
            out[(size_t)h * hd + e] = o / sum;
        }
    }
    free(w);
}

/* Runs the sequences split into calls: in call number `step`, sequence s
 * adds chunk[s] tokens (or what is left); all sequences go in each call.
 * out[s] gets [L][n_heads*hd]. */
static int run_split(pb_kctx *kctx, const attn_case *c, const float *alibi, float scale, int ns, seqdata *sd,
                     const int *chunk, float **out, pb_dtype kv_dt)
{
    const int hd = c->hd, qd = c->n_heads * hd, kvd = c->n_kv * hd;
    void *kc[8], *vc[8];
    int done[8] = {0}, maxL = 0, total = 0;
    for (int s = 0; s < ns; s++) {
        maxL = sd[s].L > maxL ? sd[s].L : maxL;
        total += sd[s].L;
    }
    for (int s = 0; s < ns; s++) { /* garbage where nothing was stored yet */
        const size_t n = pb_kattn_cache_elems(kv_dt, maxL, c->n_kv, hd);
        kc[s] = malloc(n * pb_dtype_size(kv_dt));
        vc[s] = malloc(n * pb_dtype_size(kv_dt));
        for (size_t i = 0; i < n; i++)
            if (kv_dt == PB_DT_F16)
                ((uint16_t *)kc[s])[i] = ((uint16_t *)vc[s])[i] = (i & 1) ? 0x7e00 : 0x7bff; /* NaN, 65504 */
            else if (kv_dt == PB_DT_BF16)
                ((uint16_t *)kc[s])[i] = ((uint16_t *)vc[s])[i] = (i & 1) ? 0x7fc1 : 0x7f7f; /* NaN, 3.4e38 */
            else
                ((float *)kc[s])[i] = ((float *)vc[s])[i] = (i & 1) ? NAN : 1e30f;
    }
    /* rows of this call, packed; q with an extra stride to test q_stride */
    const int q_stride = qd + 3, kv_stride = kvd + 1;
    float *q = malloc((size_t)total * q_stride * sizeof(float));
    float *k = malloc((size_t)total * kv_stride * sizeof(float)), *v = malloc((size_t)total * kv_stride * sizeof(float));
    float *o = malloc((size_t)total * qd * sizeof(float));
    int ok = 1;
    for (;;) {
        int tok_start[8], pos[8], nt[8], T = 0, any = 0;
        for (int s = 0; s < ns; s++) {
            int n = sd[s].L - done[s] < chunk[s] ? sd[s].L - done[s] : chunk[s];
            tok_start[s] = T;
            pos[s] = done[s];
            nt[s] = n;
            for (int i = 0; i < n; i++, T++) {
                memcpy(q + (size_t)T * q_stride, sd[s].q + (size_t)(done[s] + i) * qd, (size_t)qd * sizeof(float));
                memcpy(k + (size_t)T * kv_stride, sd[s].k + (size_t)(done[s] + i) * kvd, (size_t)kvd * sizeof(float));
                memcpy(v + (size_t)T * kv_stride, sd[s].v + (size_t)(done[s] + i) * kvd, (size_t)kvd * sizeof(float));
            }
            any |= n > 0;
        }
        if (!any)
            break;
        pb_kattn_args a = {.n_seqs = ns, .tok_start = tok_start, .pos = pos, .n_tokens = nt, .k_cache = kc,
                           .v_cache = vc, .cache_len = maxL, .kv_dtype = kv_dt, .q = q, .k = k, .v = v,
                           .q_stride = q_stride,
                           .kv_stride = kv_stride, .out = o, .n_heads = c->n_heads, .n_kv_heads = c->n_kv,
                           .head_dim = hd, .scale = scale, .alibi = alibi, .window = c->window};
        if (pb_kattn_run(kctx, &a) != PB_OK) {
            ok = 0;
            break;
        }
        for (int s = 0; s < ns; s++) {
            memcpy(out[s] + (size_t)done[s] * qd, o + (size_t)tok_start[s] * qd, (size_t)nt[s] * qd * sizeof(float));
            done[s] += nt[s];
        }
    }
    for (int s = 0; s < ns; s++)
        free(kc[s]), free(vc[s]);
    free(q), free(k), free(v), free(o);
    return ok;
}

/* A bf16 (f16) cache holds each new key and value as pb_f32_to_bf16
 * (pb_f32_to_f16) rounds it (nearest even, quiet NaNs), at the layout
 * kern_attn.c documents: values that are not bf16 (f16) numbers (ties, NaNs
 * with low payloads, the largest float or f16, subnormals), an odd
 * head_dim, and calls that start at odd and even positions (a bf16 V keeps
 * the keys in pairs). */
static void test_kv_store(pb_kctx *kctx, pb_dtype dt)
{
    enum { NKV = 2, HD = 23, NH = 4, L = 37 };
    static const uint32_t bf16_special[] = {0x3f808000u, 0x3f818000u, 0x7f800001u, 0xffc00000u, 0x7f800000u,
                                            0xff800000u, 0x7f7fffffu, 0x00000001u, 0x80000000u, 0x3f7fffffu};
    /* f16: ties at 1 and 1 + 2^-10, 65504 and what rounds to it, the
     * normal/subnormal edge 2^-14 and below it, a subnormal tie, NaNs */
    static const uint32_t f16_special[] = {0x3f801000u, 0x3f803000u, 0x7f800001u, 0xffc00000u, 0x477fe000u,
                                           0xc77fefffu, 0x38800000u, 0x387fffffu, 0x33c00000u, 0x80000000u};
    const uint32_t *special = dt == PB_DT_BF16 ? bf16_special : f16_special;
    const int bf = dt == PB_DT_BF16;
    const int kvd = NKV * HD, qd = NH * HD, cap = (L + 15) & ~15, kd = bf ? HD + 1 : HD, hd16 = (HD + 15) & ~15;
    const size_t n = pb_kattn_cache_elems(dt, L, NKV, HD);
    uint16_t *kc = malloc(n * 2), *vc = malloc(n * 2);
    float *k = malloc((size_t)L * kvd * sizeof(float)), *v = malloc((size_t)L * kvd * sizeof(float));
    float *q = malloc((size_t)L * qd * sizeof(float)), *o = malloc((size_t)L * qd * sizeof(float));
    for (size_t i = 0; i < n; i++)
        kc[i] = vc[i] = 0x7f7f;
    for (int i = 0; i < L * kvd; i++) {
        k[i] = 3.0f * frand(), v[i] = frand();
        if (i % 7 == 3)
            memcpy(&k[i], &special[(size_t)i / 7 % 10], 4);
        if (i % 5 == 1)
            memcpy(&v[i], &special[(size_t)i / 5 % 10], 4);
    }
    for (int i = 0; i < L * qd; i++)
        q[i] = frand();
    static const int chunks[] = {3, 1, 4, 5, 2, 8, 1, 13};
    void *kp[1] = {kc}, *vp[1] = {vc};
    int done = 0;
    for (size_t c = 0; done < L; c++) {
        const int nt = L - done < chunks[c % 8] ? L - done : chunks[c % 8], zero = 0;
        pb_kattn_args a = {.n_seqs = 1, .tok_start = &zero, .pos = &done, .n_tokens = &nt, .k_cache = kp,
                           .v_cache = vp, .cache_len = L, .kv_dtype = dt, .q = q + (size_t)done * qd,
                           .k = k + (size_t)done * kvd, .v = v + (size_t)done * kvd, .q_stride = qd,
                           .kv_stride = kvd, .out = o, .n_heads = NH, .n_kv_heads = NKV, .head_dim = HD,
                           .scale = 0.2f};
        if (pb_kattn_run(kctx, &a) != PB_OK) {
            FAIL("kv store: attention call failed");
            break;
        }
        done += nt;
    }
    int bad = 0;
    for (int j = 0; j < L && bad < 5; j++)
        for (int g = 0; g < NKV; g++)
            for (int d = 0; d < HD; d++) {
                const size_t head = (size_t)g * cap * hd16;
                const size_t ki = head + (size_t)(j / 16) * 16 * kd +
                                  (bf ? (size_t)(d / 2) * 32 + (size_t)(j % 16) * 2 + (size_t)(d % 2)
                                      : (size_t)d * 16 + (size_t)(j % 16));
                const size_t vi = head + (size_t)(d / 16) * cap * 16 +
                                  (bf ? (size_t)(j / 2) * 32 + (size_t)(d % 16) * 2 + (size_t)(j % 2)
                                      : (size_t)j * 16 + (size_t)(d % 16));
                const float kx = k[(size_t)j * kvd + (size_t)g * HD + d], vx = v[(size_t)j * kvd + (size_t)g * HD + d];
                const uint16_t kw = bf ? pb_f32_to_bf16(kx) : pb_f32_to_f16(kx);
                const uint16_t vw = bf ? pb_f32_to_bf16(vx) : pb_f32_to_f16(vx);
                if (kc[ki] != kw || vc[vi] != vw) {
                    FAIL("kv store %s: key %d head %d dim %d: K %04x (want %04x), V %04x (want %04x)",
                         pb_dtype_name(dt), j, g, d, kc[ki], kw, vc[vi], vw);
                    bad++;
                }
            }
    free(kc), free(vc), free(k), free(v), free(q), free(o);
}

/* kv_dt F16 or BF16: the keys and values are made f16 (bf16) numbers first,
 * the reference run uses an f32 cache and every other run an f16 (bf16) one:
 * the same bits. The cases have odd head_dims and the runs odd cache lengths,
 * which a bf16 cache's pairs round up. With dots (the bf16 products' tables,
 * a bf16 cache: kern_attn.c's dots form) the reference run is the first
 * path's over the bf16 cache, checked against the reference with the
 * queries rounded to bf16 within 2^-8 max|v| more (the softmax weights
 * rounded: relative 2^-9 each); every other run gives its bits, and they
 * are not the exact tiles' (the form is taken). */
static void attention_paths(pb_kctx *kctx1, pb_kctx *kctx2, pb_dtype kv_dt, const path *ps, int n_ps, bool dots)
{
    static const attn_case cases[] = {
        {4, 4, 16, 0, 0}, {8, 2, 20, 0, 1}, {6, 1, 7, 5, 0}, {4, 2, 64, 0, 0}, {2, 1, 33, 9, 1}, {32, 4, 64, 0, 0},
    };
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const attn_case *c = &cases[ci];
        const int ns = 3, qd = c->n_heads * c->hd, kvd = c->n_kv * c->hd;
        const int Ls[3] = {37, 1, 150}; /* 150: an f16 cache widened in several chunks */
        seqdata sd[3];
        float alibi[64];
        for (int h = 0; h < c->n_heads; h++)
            alibi[h] = -0.05f * (float)(h + 1);
        const float scale = 1.0f / sqrtf((float)c->hd);
        for (int s = 0; s < ns; s++) {
            sd[s].L = Ls[s];
            sd[s].q = malloc((size_t)Ls[s] * qd * sizeof(float));
            sd[s].k = malloc((size_t)Ls[s] * kvd * sizeof(float));
            sd[s].v = malloc((size_t)Ls[s] * kvd * sizeof(float));
            for (int i = 0; i < Ls[s] * qd; i++)
                sd[s].q[i] = 2.0f * frand();
            for (int i = 0; i < Ls[s] * kvd; i++)
                sd[s].k[i] = 2.0f * frand(), sd[s].v[i] = frand();
            if (kv_dt == PB_DT_F16)
                for (int i = 0; i < Ls[s] * kvd; i++) {
                    sd[s].k[i] = pb_f16_to_f32(pb_f32_to_f16(sd[s].k[i]));
                    sd[s].v[i] = pb_f16_to_f32(pb_f32_to_f16(sd[s].v[i]));
                }
            if (kv_dt == PB_DT_BF16)
                for (int i = 0; i < Ls[s] * kvd; i++) {
                    sd[s].k[i] = pb_bf16_to_f32(pb_f32_to_bf16(sd[s].k[i]));
                    sd[s].v[i] = pb_bf16_to_f32(pb_f32_to_bf16(sd[s].v[i]));
                }
        }
        /* the reference's queries: as the dots form rounds them */
        seqdata rq[3];
        for (int s = 0; s < ns; s++) {
            rq[s] = sd[s];
            if (!dots)
                continue;
            rq[s].q = malloc((size_t)Ls[s] * qd * sizeof(float));
            for (int i = 0; i < Ls[s] * qd; i++)
                rq[s].q[i] = pb_bf16_to_f32(pb_f32_to_bf16(sd[s].q[i]));
        }
        const float *al = c->alibi ? alibi : NULL;
        /* reference */
        double *ref = malloc((size_t)qd * sizeof(double));
        float *base[3], *got[3];
        for (int s = 0; s < ns; s++) {
            base[s] = malloc((size_t)Ls[s] * qd * sizeof(float));
            got[s] = malloc((size_t)Ls[s] * qd * sizeof(float));
        }
        /* splits: full prefill, odd chunks, decode steps; batched and alone */
        static const int splits[][3] = {{64, 64, 64}, {5, 1, 7}, {1, 1, 1}, {16, 1, 3}, {17, 2, 16}};
        for (int pi = 0; pi < n_ps; pi++) {
            if (!dots && kv_dt == PB_DT_BF16 && ps[pi].ops->xpairs)
                continue; /* the dots form: below */
            pb_kops_override(ps[pi].ops);
            for (size_t sp = 0; sp < sizeof splits / sizeof splits[0]; sp++)
                for (int v = 0; v < (sp >= 2 && !dots ? 4 : 2); v++)
                    for (int th = 0; th < 2; th++) {
                        /* v 2, 3: the decode calls in the split form, scoring blocks of 32 keys */
                        const int alone = v & 1;
                        pb_kattn_set_split(v >= 2 ? 32 : 0);
                        pb_kctx *kx = th ? kctx2 : kctx1;
                        float **dst = pi == 0 && sp == 0 && !alone && !th ? base : got;
                        const pb_dtype dt = dst == base && !dots ? PB_DT_F32 : kv_dt;
                        int ok = 1;
                        if (alone)
                            for (int s = 0; s < ns; s++)
                                ok &= run_split(kx, c, al, scale, 1, &sd[s], &splits[sp][s], &dst[s], dt);
                        else
                            ok &= run_split(kx, c, al, scale, ns, sd, splits[sp], dst, dt);
                        if (!ok) {
                            FAIL("attention call failed");
                            continue;
                        }
                        if (dst == base) {
                            for (int s = 0; s < ns; s++)
                                for (int p = 0; p < Ls[s]; p++) {
                                    ref_attention(c, &rq[s], al, scale, p, ref);
                                    for (int e = 0; e < qd; e++) {
                                        const double r = ref[e], g = base[s][(size_t)p * qd + e];
                                        if (!(fabs(g - r) <= 2e-5 * (1 + fabs(r)) + (dots ? 0x1p-8 : 0))) {
                                            FAIL("attention case %zu seq %d pos %d elem %d: %.9g vs reference %.9g",
                                                 ci, s, p, e, g, r);
                                            break;
                                        }
                                    }
                                }
                            continue;
                        }
                        for (int s = 0; s < ns; s++)
                            for (size_t e = 0; e < (size_t)Ls[s] * qd; e++)
                                if (!same_bits(got[s][e], base[s][e])) {
                                    FAIL("attention %s %s cache case %zu split %zu%s%s%s: seq %d row %zu differs "
                                         "(%.9g vs %.9g)", ps[pi].name, pb_dtype_name(kv_dt), ci, sp,
                                         alone ? " alone" : " batched", v >= 2 ? " split form" : "",
                                         th ? " 2 threads" : "", s, e / qd, got[s][e], base[s][e]);
                                    break;
                                }
                    }
        }
        pb_kattn_set_split(0);
        if (dots) { /* the exact tiles over the same cache: other bits */
            pb_kops_override(ps[0].ops->exact);
            int differ = 0;
            if (!run_split(kctx1, c, al, scale, ns, sd, splits[0], got, kv_dt))
                FAIL("attention call failed");
            for (int s = 0; s < ns; s++)
                differ |= memcmp(got[s], base[s], (size_t)Ls[s] * qd * sizeof(float)) != 0;
            if (!differ)
                FAIL("attention case %zu: the bf16 products' tables over a bf16 cache give the exact bits", ci);
        }
        pb_kops_override(NULL);
        for (int s = 0; s < ns; s++) {
            if (dots)
                free(rq[s].q);
            free(sd[s].q), free(sd[s].k), free(sd[s].v), free(base[s]), free(got[s]);
        }
        free(ref);
    }
}

static void test_attention(pb_kctx *kctx1, pb_kctx *kctx2, pb_dtype kv_dt)
{
    attention_paths(kctx1, kctx2, kv_dt, apaths, n_apaths, false);
}

/* An f16 cache refuses a finite key or value that would round to infinity
 * (65520 and above), and takes 65519 (65504 in f16); an f32 cache takes any. */
static void test_attention_f16_range(pb_kctx *kctx)
{
    static const float vals[] = {65519.0f, 65520.0f, -1e5f};
    for (int f16 = 0; f16 < 2; f16++)
        for (int i = 0; i < 3; i++)
            for (int which = 0; which < 2; which++) { /* the key or the value */
                const int hd = 8, cap = 4;
                float q[8] = {0}, kv[2][8] = {{0}};
                kv[which][3] = vals[i];
                const size_t n = pb_kattn_cache_elems(f16 ? PB_DT_F16 : PB_DT_F32, cap, 1, hd);
                void *kc = calloc(n, 4), *vc = calloc(n, 4);
                float out[8];
                int zero = 0, one = 1;
                pb_kattn_args a = {.n_seqs = 1, .tok_start = &zero, .pos = &zero, .n_tokens = &one,
                                   .k_cache = &kc, .v_cache = &vc, .cache_len = cap,
                                   .kv_dtype = f16 ? PB_DT_F16 : PB_DT_F32, .q = q, .k = kv[0], .v = kv[1],
                                   .q_stride = hd, .kv_stride = hd, .out = out, .n_heads = 1, .n_kv_heads = 1,
                                   .head_dim = hd, .scale = 1.0f};
                const pb_status st = pb_kattn_run(kctx, &a);
                const pb_status want = f16 && i > 0 ? PB_ERR_UNSUPPORTED : PB_OK;
                if (st != want)
                    FAIL("attention, %s cache, a %s of %g: status %d, expected %d", f16 ? "f16" : "f32",
                         which ? "value" : "key", (double)vals[i], (int)st, (int)want);
                free(kc), free(vc);
            }
}

static void test_exp(void)
{
    /* pb_kexp within 2 ulp-ish of exp over the range the softmax uses */
    double worst = 0;
    for (float x = -87.0f; x <= 0.0f; x += 0.0137f) {
        const double r = exp((double)x), g = pb_kexp(x);
        const double e = fabs(g - r) / r;
        worst = e > worst ? e : worst;
    }
    printf("pb_kexp worst relative error on [-87, 0]: %.3g\n", worst);
    if (worst > 3e-7)
        FAIL("pb_kexp relative error %.3g", worst);
    if (pb_kexp(-100.0f) != 0.0f || pb_kexp(0.0f) != 1.0f)
        FAIL("pb_kexp edges: %g %g", pb_kexp(-100.0f), pb_kexp(0.0f));
}

/* ---- row kernels: norm, activations, rotary ---- */

static double act_ref(pb_kact a, double x)
{
    switch (a) {
    case PB_KACT_SILU:
        return x / (1.0 + exp(-x));
    case PB_KACT_GELU_TANH:
        return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    default:
        return x > 0 ? x : 0.0;
    }
}

/* Every path gives the first path's bits; the first is checked against
 * double references: norm |y - r| <= 2e-6 (|w| |xhat| + |b|) + 1e-7,
 * activations |y - r| <= 2e-6 (|r| + 1e-3 |x|) (+ 1e-30), rotary
 * |y - r| <= 2 eps (|a| + |b|). */
static void test_rows(void)
{
    static const int ns[] = {1, 7, 15, 16, 17, 33, 64, 100, 2051};
    const int nmax = 2051;
    float *x = malloc(nmax * 4), *w = malloc(nmax * 4), *b = malloc(nmax * 4), *u = malloc(nmax * 4);
    float *y = malloc(nmax * 4), *first = malloc(nmax * 4);
    for (size_t ci = 0; ci < sizeof ns / sizeof ns[0]; ci++) {
        const int n = ns[ci];
        for (int kind = 0; kind < 3; kind++) { /* rms, layernorm, layernorm without bias */
            for (int i = 0; i < n; i++) {
                x[i] = 3.0f * frand() + (kind ? 0.5f : 0.0f);
                w[i] = 1.0f + 0.5f * frand();
                b[i] = frand();
            }
            for (int pi = 0; pi < n_paths; pi++) {
                pb_kops_override(paths[pi].ops);
                pb_krow_norm(kind == 0, y, x, n, w, kind == 1 ? b : NULL, 1e-5f);
                if (pi == 0)
                    memcpy(first, y, (size_t)n * 4);
                else if (memcmp(first, y, (size_t)n * 4))
                    FAIL("norm kind %d n=%d: path %s differs from %s", kind, n, paths[pi].name, paths[0].name);
            }
            double mean = 0, ss = 0;
            if (kind)
                for (int i = 0; i < n; i++)
                    mean += x[i];
            mean /= n;
            for (int i = 0; i < n; i++)
                ss += (x[i] - mean) * (x[i] - mean);
            const double inv = 1.0 / sqrt(ss / n + 1e-5);
            for (int i = 0; i < n; i++) {
                const double xh = (x[i] - mean) * inv, r = xh * w[i] + (kind == 1 ? b[i] : 0.0);
                if (fabs(first[i] - r) > 2e-6 * (fabs(w[i] * xh) + (kind == 1 ? fabs(b[i]) : 0)) + 1e-7)
                    FAIL("norm kind %d n=%d i=%d: %.9g vs %.9g", kind, n, i, first[i], r);
            }
            /* in place gives the same bits */
            memcpy(y, x, (size_t)n * 4);
            pb_krow_norm(kind == 0, y, y, n, w, kind == 1 ? b : NULL, 1e-5f);
            if (memcmp(first, y, (size_t)n * 4))
                FAIL("norm kind %d n=%d: in place differs", kind, n);
        }
        static const pb_kact acts[] = {PB_KACT_SILU, PB_KACT_GELU_TANH, PB_KACT_RELU};
        for (size_t ai = 0; ai < 3; ai++)
            for (int gated = 0; gated < 2; gated++) {
                for (int i = 0; i < n; i++) {
                    x[i] = 8.0f * frand();
                    u[i] = frand();
                }
                /* the edges: zeros, large magnitudes, past the exp clamp */
                static const float edge[] = {0.0f, -0.0f, 100.0f, -100.0f, 88.5f, -88.5f, 1e-20f, -1e-20f, 30.0f, -30.0f};
                for (int i = 0; i < n && i < 10; i++)
                    x[i] = edge[i];
                for (int pi = 0; pi < n_paths; pi++) {
                    pb_kops_override(paths[pi].ops);
                    pb_krow_act(acts[ai], y, x, gated ? u : NULL, n);
                    if (pi == 0)
                        memcpy(first, y, (size_t)n * 4);
                    else if (memcmp(first, y, (size_t)n * 4))
                        FAIL("act %d n=%d: path %s differs from %s", (int)acts[ai], n, paths[pi].name, paths[0].name);
                }
                for (int i = 0; i < n; i++) {
                    const double r = act_ref(acts[ai], x[i]) * (gated ? u[i] : 1.0);
                    if (!(fabs(first[i] - r) <= 2e-6 * (fabs(r) + 1e-3 * fabs(x[i])) + 1e-30))
                        FAIL("act %d x=%g: %.9g vs %.9g", (int)acts[ai], x[i], first[i], r);
                }
            }
        if (n > 1) /* rotary: n = head dims rotated */
            for (int il = 0; il < 2; il++) {
                const int half = n / 2;
                float cs[2 * 1026];
                for (int i = 0; i < half; i++) {
                    const double a = 0.37 * (i + 1) + 0.1 * frand();
                    cs[2 * i] = (float)cos(a);
                    cs[2 * i + 1] = (float)sin(a);
                }
                for (int i = 0; i < n; i++)
                    x[i] = frand();
                for (int pi = 0; pi < n_paths; pi++) {
                    pb_kops_override(paths[pi].ops);
                    memcpy(y, x, (size_t)n * 4);
                    pb_krow_rope(y, half, il, cs);
                    if (pi == 0)
                        memcpy(first, y, (size_t)n * 4);
                    else if (memcmp(first, y, (size_t)n * 4))
                        FAIL("rope %s n=%d: path %s differs from %s", il ? "interleaved" : "half", n, paths[pi].name,
                             paths[0].name);
                }
                for (int i = 0; i < half; i++) {
                    const int ia = il ? 2 * i : i, ib = il ? 2 * i + 1 : i + half;
                    const double c = cs[2 * i], sn = cs[2 * i + 1], a = x[ia], bb = x[ib];
                    const double tol = 2 * 1.2e-7 * (fabs(a) + fabs(bb));
                    if (fabs(first[ia] - (a * c - bb * sn)) > tol || fabs(first[ib] - (bb * c + a * sn)) > tol)
                        FAIL("rope %s n=%d i=%d", il ? "interleaved" : "half", n, i);
                }
                for (int i = 2 * half; i < n; i++)
                    if (!same_bits(first[i], x[i]))
                        FAIL("rope n=%d: dim %d past the rotated ones changed", n, i);
            }
    }
    pb_kops_override(NULL);
    free(x);
    free(w);
    free(b);
    free(u);
    free(y);
    free(first);
}

/* pb_krow_argmax on every path against a plain loop: the first index of the
 * largest (NaN never, 0 when none is above -inf), over lengths around the
 * vectors' 8 and 16 and a vocabulary's, with ties, NaN, infinities and the
 * largest in the tail */
static void test_argmax(void)
{
    static const int ns[] = {0, 1, 2, 7, 8, 9, 15, 16, 17, 31, 33, 100, 50257};
    const int nmax = 50257;
    float *x = malloc(nmax * 4);
    for (size_t ci = 0; ci < sizeof ns / sizeof ns[0]; ci++) {
        const int n = ns[ci];
        for (int kind = 0; kind < 8; kind++) {
            for (int i = 0; i < n; i++)
                x[i] = kind == 5 ? -INFINITY : frand();
            if (n > 0) {
                int at = (int)((frand() + 1.0f) * 0.5f * (float)n); /* [0, n) */
                at = at < n ? at : n - 1;
                if (kind == 1) /* ties: the first one wins */
                    for (int i = at; i < n; i += 3)
                        x[i] = 5.0f;
                if (kind == 2) /* NaN around the largest */
                    for (int i = 0; i < n; i += 2)
                        x[i] = NAN;
                if (kind == 3)
                    x[n - 1] = 7.0f; /* the tail */
                if (kind == 4)
                    x[at] = INFINITY;
                if (kind == 6) /* all NaN */
                    for (int i = 0; i < n; i++)
                        x[i] = NAN;
                if (kind == 7) { /* -inf and NaN only but one */
                    for (int i = 0; i < n; i++)
                        x[i] = i % 2 ? NAN : -INFINITY;
                    x[at] = -1e30f;
                }
            }
            int want = 0;
            float best = -INFINITY;
            for (int i = 0; i < n; i++)
                if (x[i] > best) {
                    best = x[i];
                    want = i;
                }
            for (int pi = 0; pi < n_paths; pi++) {
                pb_kops_override(paths[pi].ops);
                const int32_t got = pb_krow_argmax(x, n);
                if (got != want)
                    FAIL("argmax n=%d case %d: path %s gave %d, expected %d", n, kind, paths[pi].name, (int)got, want);
            }
            if (pb_argmax_first(x, n) != want)
                FAIL("pb_argmax_first n=%d case %d: %d, expected %d", n, kind, (int)pb_argmax_first(x, n), want);
        }
    }
    pb_kops_override(NULL);
    free(x);
}

/* ---- the opt-in AVX512-BF16 path (bf16 weights, activations rounded to
 * bf16): not bit-identical to the exact paths, so checked by bounds:
 *   |y - rb| <= (K + 2) eps sum |xb_k w_k| + eps |b|, rb = sum xb_k w_k + b in
 *   double with xb = bf16(x) (nearest even): only f32 summation error;
 *   |y - r|  <= 2^-8 sum |x_k w_k| + (K + 2) eps sum |xb_k w_k| + eps |b|
 *   against the exact x (the rounding of x is at most 2^-9 relative);
 * and batch-invariant: every row of an M-row call has the bits of the same
 * row alone. f32/f16 weights there are the exact AVX-512 tiles. */
static void test_bf16dot_path(pb_kctx *kctx, const char *name, const pb_kops *ops)
{
    static const int shapes[][2] = {{37, 203}, {130, 1000}, {16, 2}, {50, 257}, {20, 64}};
    static const int Ms[] = {1, 5, 8, 17, 33, 64};
    const double eps = 5.96e-8;
    /* the AMX table takes f16 and f32 weights too, split into 2 or 3 bf16
     * pieces (a chain of that many times the k's products) */
    static const pb_dtype wdts[] = {PB_DT_BF16, PB_DT_F16, PB_DT_F32};
    const int n_dts = ops->amx ? 3 : 1;
    pb_kops_override(ops);
    for (size_t ci = 0; ci < n_dts * sizeof shapes / sizeof shapes[0]; ci++) {
        const size_t si = ci % (sizeof shapes / sizeof shapes[0]);
        const pb_dtype dt = wdts[ci / (sizeof shapes / sizeof shapes[0])];
        const int pieces = dt == PB_DT_F32 ? 3 : dt == PB_DT_F16 && ops->amx ? 2 : 1;
        const int n_out = shapes[si][0], n_in = shapes[si][1], Mmax = 64;
        float *wv = malloc((size_t)n_out * n_in * 4), *b = malloc((size_t)n_out * 4);
        for (size_t i = 0; i < (size_t)n_out * n_in; i++)
            wv[i] = frand();
        for (int r = 0; r < n_out; r++)
            b[r] = frand();
        void *src = make_src(dt, (size_t)n_out * n_in, wv);
        pb_kmat_src s = {.data = src, .dtype = dt};
        pb_kmat *m = NULL;
        if (pb_kmat_pack(&s, n_out, n_in, dt, &m) != PB_OK) {
            FAIL("bf16dot: pack failed");
            return;
        }
        float *x = malloc((size_t)Mmax * n_in * 4), *y = malloc((size_t)Mmax * n_out * 4),
              *alone = malloc((size_t)Mmax * n_out * 4);
        for (size_t i = 0; i < (size_t)Mmax * n_in; i++)
            x[i] = 2.0f * frand();
        x[0] = 1.0f + 1.0f / 256.0f; /* a tie: rounds to even (1.0) */
        for (int i = 0; i < Mmax; i++)
            if (pb_kmat_mul(kctx, x + (size_t)i * n_in, n_in, 1, m, b, alone + (size_t)i * n_out, n_out) != PB_OK)
                FAIL("bf16dot: mul failed");
        double worst = 0;
        for (size_t mi = 0; mi < 2 * sizeof Ms / sizeof Ms[0]; mi++) {
            const int M = Ms[mi / 2], kb = mi % 2 ? 6 : 0; /* K blocks: sized to the L2, and of 6 k */
            pb_kmat_set_kblock(kb);
            if (pb_kmat_mul(kctx, x, n_in, M, m, b, y, n_out) != PB_OK)
                FAIL("bf16dot: mul failed");
            if (memcmp(y, alone, (size_t)M * n_out * 4))
                FAIL("%s: %s [%d, %d] M=%d K block %s: a row differs from the same row alone", name,
                     pb_dtype_name(dt), n_out, n_in, M, kb ? "6" : "L2");
        }
        pb_kmat_set_kblock(0);
        for (int i = 0; i < Mmax; i++)
            for (int r = 0; r < n_out; r++) {
                double rb = b[r], re = b[r], ab = 0, ae = 0;
                for (int k = 0; k < n_in; k++) {
                    const double w = stored_val(dt, dt, wv[(size_t)r * n_in + k]);
                    const double xv = x[(size_t)i * n_in + k], xb = pb_bf16_to_f32(pb_f32_to_bf16(x[(size_t)i * n_in + k]));
                    rb += xb * w;
                    re += xv * w;
                    ab += fabs(xb * w);
                    ae += fabs(xv * w);
                }
                const double got = alone[(size_t)i * n_out + r];
                const double tb = (pieces * n_in + 2) * eps * ab + eps * fabs(b[r]);
                if (fabs(got - rb) > tb)
                    FAIL("%s: %s [%d, %d] row %d col %d: %.9g vs bf16(x) reference %.9g", name, pb_dtype_name(dt),
                         n_out, n_in, i, r, got, rb);
                if (fabs(got - re) > ae / 256.0 + tb)
                    FAIL("%s: %s [%d, %d] row %d col %d: %.9g vs exact %.9g", name, pb_dtype_name(dt), n_out, n_in, i,
                         r, got, re);
                if (ae > 0 && fabs(got - re) / ae > worst)
                    worst = fabs(got - re) / ae;
            }
        if (si == 1)
            printf("%s: %s weights: worst |y - exact| / sum |x w| = %.2e ([%d, %d])\n", name, pb_dtype_name(dt),
                   worst, n_out, n_in);
        pb_kmat_free(m);
        free(src);
        free(wv);
        free(b);
        free(x);
        free(y);
        free(alone);
    }
    /* f32 and f16 weights take no bf16 dots there (but on the AMX table):
     * the exact paths' bits at every M (its own tables must agree with the
     * exact path's tiles) */
    static const pb_dtype others[] = {PB_DT_F32, PB_DT_F16};
    for (size_t di = 0; di < 2 && !ops->amx; di++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int n_out = shapes[si][0], n_in = shapes[si][1], Mmax = 64;
            float *wv = malloc((size_t)n_out * n_in * 4), *x = malloc((size_t)Mmax * n_in * 4);
            float *y = malloc((size_t)Mmax * n_out * 4), *ref = malloc((size_t)Mmax * n_out * 4);
            for (size_t i = 0; i < (size_t)n_out * n_in; i++)
                wv[i] = frand();
            for (size_t i = 0; i < (size_t)Mmax * n_in; i++)
                x[i] = frand();
            void *src = make_src(others[di], (size_t)n_out * n_in, wv);
            pb_kmat_src s = {.data = src, .dtype = others[di]};
            pb_kmat *m = NULL;
            if (pb_kmat_pack(&s, n_out, n_in, others[di], &m) != PB_OK)
                FAIL("bf16dot: pack failed");
            for (size_t mi = 0; m && mi < sizeof Ms / sizeof Ms[0]; mi++) {
                const int M = Ms[mi];
                pb_kops_override(pb_kops_get(PB_ISA_PORTABLE));
                pb_status s1 = pb_kmat_mul(kctx, x, n_in, M, m, NULL, ref, n_out);
                pb_kops_override(ops);
                pb_status s2 = pb_kmat_mul(kctx, x, n_in, M, m, NULL, y, n_out);
                if (s1 != PB_OK || s2 != PB_OK || memcmp(y, ref, (size_t)M * n_out * 4))
                    FAIL("%s: %s weights [%d, %d] M=%d: not the exact paths' bits", name,
                         pb_dtype_name(others[di]), n_out, n_in, M);
            }
            pb_kmat_free(m);
            free(src);
            free(wv);
            free(x);
            free(y);
            free(ref);
        }
    pb_kops_override(NULL);
}

/* the bf16-product tables this machine runs, the specification first */
static path dpaths[8];
static int n_dpaths;

static void add_dpaths(void)
{
    dpaths[n_dpaths++] = (path){"portable-dots", &pb_kops_portable_dots};
#ifdef PB_KERN_X86
    if (pb_cpu_isa_available(PB_ISA_AVX2))
        dpaths[n_dpaths++] = (path){"avx2-dots", &pb_kops_avx2_dots};
    if (pb_cpu_isa_available(PB_ISA_AVX512))
        dpaths[n_dpaths++] = (path){"avx512-dots", &pb_kops_avx512_dots};
    if (pb_cpu_isa_available(PB_ISA_AVX512BF16))
        dpaths[n_dpaths++] = (path){"avx512bf16", &pb_kops_avx512bf16};
    else
        printf("avx512bf16: not on this CPU (its emulations are checked)\n");
#endif
#ifdef PB_TEST_SIMDE
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        dpaths[n_dpaths++] = (path){"avx512-dots-simde", &pb_kops_avx512_dots_simde};
#endif
}

/* Each table's mm over any number of panels (its tiles of every width, as
 * PB_KTILE_RUN splits G) against its specification's (the portable table,
 * any G panel by panel): the same bits, for every row count, G = 1 .. twice
 * the widest tile and more, a short last panel and accumulation; the
 * columns past it and the padding past each row untouched. The bf16-product
 * tables take x as their own pairs, bf16 weights only. */
static void test_tiles(void)
{
    const path *sets[2] = {paths, dpaths};
    const int counts[2] = {n_paths, n_dpaths};
    const pb_kops *spec[2] = {pb_kops_get(PB_ISA_PORTABLE), &pb_kops_portable_dots};
    const int kcs[] = {2, 37, 64};
    enum { GT = 13, KMAX = 64, LDC = GT * PB_KNR + 5, PS = KMAX * PB_KNR + 32 };
    static float wf[GT * PS], x[PB_KMR_MAX * KMAX], c0[PB_KMR_MAX * LDC], want[PB_KMR_MAX * LDC],
        got[PB_KMR_MAX * LDC];
    static uint16_t wh[GT * PS];
    static uint32_t xw[PB_KMR_MAX * KMAX * 2];
    for (size_t i = 0; i < sizeof wf / sizeof wf[0]; i++) {
        wf[i] = frand();
        wh[i] = i & 1 ? pb_f32_to_bf16(frand()) : pb_f32_to_f16(frand()); /* either reads as a finite value */
    }
    for (size_t i = 0; i < sizeof x / sizeof x[0]; i++)
        x[i] = frand();
    for (size_t i = 0; i < sizeof c0 / sizeof c0[0]; i++)
        c0[i] = frand();
    int calls = 0;
    for (int set = 0; set < 2; set++)
        for (int pi = 0; pi < counts[set]; pi++) {
            const pb_kops *o = sets[set][pi].ops, *ref = spec[set];
            if (o == ref)
                continue;
            for (size_t di = set ? 2 : 0; di < sizeof dts / sizeof dts[0]; di++)
                for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++)
                    for (int R = 1; R <= o->mr; R++)
                        for (int G = 1; G <= GT && G <= 2 * o->gmax[R] + 1; G++)
                            for (int v = 0; v < 2; v++) { /* v: a short last panel, accumulating */
                                const pb_dtype dt = dts[di];
                                const int kc = kcs[ki], nlast = v ? 7 : PB_KNR;
                                const void *w = dt == PB_DT_F32 ? (const void *)wf : (const void *)wh;
                                const float *xa = x, *xb = x;
                                size_t lda = KMAX, ldb = KMAX;
                                uint32_t *xr = xw, *xo = xw + PB_KMR_MAX * KMAX;
                                if (set) { /* each table's own pairs of the same rows */
                                    lda = (size_t)(kc + 1) / 2 * (size_t)ref->xwords;
                                    ldb = (size_t)(kc + 1) / 2 * (size_t)o->xwords;
                                    for (int r = 0; r < R; r++) {
                                        ref->xpairs(x + (size_t)r * KMAX, kc, xr + (size_t)r * lda);
                                        o->xpairs(x + (size_t)r * KMAX, kc, xo + (size_t)r * ldb);
                                    }
                                    xa = (const float *)(const void *)xr;
                                    xb = (const float *)(const void *)xo;
                                }
                                memcpy(want, c0, sizeof want);
                                memcpy(got, c0, sizeof got);
                                ref->mm(R, G, dt, xa, lda, w, PS, kc, want, LDC, nlast, v, 0);
                                o->mm(R, G, dt, xb, ldb, w, PS, kc, got, LDC, nlast, v, 0);
                                calls++;
                                if (memcmp(want, got, sizeof want) != 0)
                                    FAIL("tiles: %s %s R=%d G=%d kc=%d nlast=%d accumulate=%d: not the spec's bits",
                                         sets[set][pi].name, pb_dtype_name(dt), R, G, kc, nlast, v);
                            }
        }
    printf("tiles: %d calls of every table's mm over 1-13 panels: the specification's bits\n", calls);
}

/* Every bf16-product table gives the specification's bits (pb_kops_portable_dots):
 * random shapes at every M and K block, and the edges of vdpbf16ps's rules
 * (subnormal inputs read as zero, results tiny after rounding flushed, the
 * odd k of a pair first), whose results are also checked against their
 * values worked out by hand. */
static void test_bf16_products(pb_kctx *kctx)
{
    static const int shapes[][2] = {{37, 203}, {130, 1000}, {16, 2}, {50, 257}, {33, 7}};
    static const int Ms[] = {1, 3, 8, 9, 33, 64};
    for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        const int n_out = shapes[si][0], n_in = shapes[si][1], Mmax = 64;
        float *wv = malloc((size_t)n_out * n_in * 4), *x = malloc((size_t)Mmax * n_in * 4);
        float *ref = malloc((size_t)Mmax * n_out * 4), *y = malloc((size_t)Mmax * n_out * 4);
        for (size_t i = 0; i < (size_t)n_out * n_in; i++)
            wv[i] = frand() * (i % 97 == 5 ? 1e-36f : 1.0f); /* some bf16 subnormals */
        for (size_t i = 0; i < (size_t)Mmax * n_in; i++)
            x[i] = 2.0f * frand() * (i % 89 == 3 ? 1e-38f : 1.0f);
        void *src = make_src(PB_DT_BF16, (size_t)n_out * n_in, wv);
        pb_kmat_src sr = {.data = src, .dtype = PB_DT_BF16};
        pb_kmat *m = NULL;
        if (pb_kmat_pack(&sr, n_out, n_in, PB_DT_BF16, &m) != PB_OK) {
            FAIL("bf16 products: pack failed");
            return;
        }
        for (size_t mi = 0; mi < 2 * sizeof Ms / sizeof Ms[0]; mi++) {
            const int M = Ms[mi / 2], kb = mi % 2 ? 6 : 0;
            pb_kmat_set_kblock(kb);
            pb_kops_override(&pb_kops_portable_dots);
            pb_status s1 = pb_kmat_mul(kctx, x, n_in, M, m, NULL, ref, n_out);
            for (int pi = 1; pi < n_dpaths; pi++) {
                pb_kops_override(dpaths[pi].ops);
#ifdef PB_KERN_X86
                const unsigned csr = _mm_getcsr();
#endif
                pb_status s2 = pb_kmat_mul(kctx, x, n_in, M, m, NULL, y, n_out);
#ifdef PB_KERN_X86
                if (_mm_getcsr() != csr)
                    FAIL("%s: MXCSR not restored (%#x -> %#x)", dpaths[pi].name, csr, _mm_getcsr());
#endif
                if (s1 != PB_OK || s2 != PB_OK || memcmp(y, ref, (size_t)M * n_out * 4))
                    FAIL("%s: [%d, %d] M=%d K block %s: not the specification's bits", dpaths[pi].name, n_out, n_in,
                         M, kb ? "6" : "L2");
            }
        }
        pb_kmat_set_kblock(0);
        pb_kmat_free(m);
        free(src);
        free(wv);
        free(x);
        free(ref);
        free(y);
    }
    /* the edges: x = [2^-76, 2^-63, 1, 2^-63, 2^-130 (subnormal), 1]; the
     * pair (k, k + 1) takes k + 1 first */
    {
        enum { NI = 6, NO = 7 };
        const float x[NI] = {0x1p-76f, 0x1p-63f, 1.0f, 0x1p-63f, 0x1p-130f, 1.0f};
        const float w[NO][NI] = {
            {-0x1p-75f, 0x1p-63f, 0, 0, 0, 0}, /* FLT_MIN - 2^-151: rounds up to FLT_MIN, kept */
            {-0x1p-74f, 0x1p-63f, 0, 0, 0, 0}, /* FLT_MIN - 2^-150: tiny after rounding to 24 bits: 0 */
            {0, 0x1p-64f, 0, 0, 0, 0},          /* 2^-127: flushed to 0 */
            {0, 0, 0x1p-130f, 0x1p-63f, 0, 0},  /* a subnormal weight reads as 0: FLT_MIN */
            {0, 0, 0, 0, 1.0f, 0x1p-126f},      /* a subnormal activation reads as 0: FLT_MIN */
            {-0.0f, -0x1p-64f, -0.0f, -0.0f, -0.0f, -0.0f}, /* -2^-127: flushed to -0, plus -0s: -0 */
            {0, 0x1p63f, -0x1p-24f, 0x1p38f, 0, 0}, /* 1, then + 2^-25 (to 1), then - 2^-24: 1 - 2^-24; the
                                                      * even k first would give 1 - 2^-25, a tie, to 1 */
        };
        const uint32_t want[NO] = {0x00800000u, 0, 0, 0x00800000u, 0x00800000u, 0x80000000u, 0x3f7fffffu};
        float flat[NO * NI], y[NO];
        for (int r = 0; r < NO; r++)
            memcpy(flat + r * NI, w[r], sizeof w[r]);
        void *src = make_src(PB_DT_BF16, NO * NI, flat);
        pb_kmat_src sr = {.data = src, .dtype = PB_DT_BF16};
        pb_kmat *m = NULL;
        if (pb_kmat_pack(&sr, NO, NI, PB_DT_BF16, &m) != PB_OK) {
            FAIL("bf16 products: pack failed");
            return;
        }
        float spec[NO];
        for (int pi = 0; pi < n_dpaths; pi++) {
            pb_kops_override(dpaths[pi].ops);
            if (pb_kmat_mul(kctx, x, NI, 1, m, NULL, y, NO) != PB_OK)
                FAIL("bf16 products: mul failed");
            for (int r = 0; r < NO; r++) {
                uint32_t u;
                memcpy(&u, &y[r], 4);
                if (u != want[r])
                    FAIL("%s: edge case %d: %#010x, vdpbf16ps gives %#010x", dpaths[pi].name, r, u, want[r]);
            }
            if (pi == 0)
                memcpy(spec, y, sizeof y);
            else if (memcmp(spec, y, sizeof y))
                FAIL("%s: edge cases: not the specification's bits", dpaths[pi].name);
        }
        pb_kmat_free(m);
        free(src);
    }
    /* every table's xpairs gives pb_kxpairs's bits: ties, subnormals, infinities, NaN, odd n */
    {
        enum { N = 41 };
        float x[N];
        for (int i = 0; i < N; i++)
            x[i] = 3.0f * frand();
        x[0] = 1.0f + 1.0f / 256.0f;  /* a tie: to even (1.0) */
        x[1] = 1.0f + 3.0f / 256.0f;  /* a tie: to even (1 + 2^-6) */
        x[2] = 0x1p-140f;
        x[3] = INFINITY;
        x[4] = -INFINITY;
        x[5] = NAN;
        x[6] = 0x1.fffffep127f; /* rounds to infinity */
        x[7] = -0.0f;
        uint32_t want[(N + 1) / 2], split[N + 1], got[N + 3];
        pb_kxpairs(x, N, want);
        pb_kxsplit(x, N, split);
        for (int i = 0; i < (N + 1) / 2; i++)
            if (split[2 * i] != (want[i] & 0xffff0000u) || split[2 * i + 1] != want[i] << 16)
                FAIL("pb_kxsplit: pair %d is not pb_kxpairs's", i);
        for (int pi = 0; pi < n_dpaths; pi++) {
            const pb_kops *o = dpaths[pi].ops;
            const size_t words = (size_t)(N + 1) / 2 * (size_t)o->xwords;
            memset(got, 0xa5, sizeof got);
            o->xpairs(x, N, got);
            if ((o->xwords != 1 && o->xwords != 2) || memcmp(got, o->xwords == 1 ? want : split, words * 4) ||
                got[words] != 0xa5a5a5a5u)
                FAIL("%s: xpairs differs from pb_kx%s", dpaths[pi].name, o->xwords == 1 ? "pairs" : "split");
        }
        if (want[0] != (0x3f80u | 0x3f82u << 16) || (want[20] >> 16) != 0)
            FAIL("pb_kxpairs: %#x %#x", want[0], want[20]);
    }
    pb_kops_override(NULL);
    for (int pi = 0; pi < n_dpaths; pi++)
        test_bf16dot_path(kctx, dpaths[pi].name, dpaths[pi].ops);
}

static void test_softmax_bf16(const char *name, const pb_kops *ops);

/* attention over a bf16 cache on the bf16 products' tables (the dots form):
 * every table the same bits, batch-invariant, near the reference; the
 * cache's store under them (the odd key beside a sequence's last zeroed) */
static void test_attention_dots(pb_kctx *kctx1, pb_kctx *kctx2)
{
    attention_paths(kctx1, kctx2, PB_DT_BF16, dpaths, n_dpaths, true);
    for (int pi = 0; pi < n_dpaths; pi++) {
        if (dpaths[pi].ops->softmax_bf16) /* the form's fused softmax (xwords 1: pairs in key order) */
            test_softmax_bf16(dpaths[pi].name, dpaths[pi].ops);
        if (dpaths[pi].ops->softmax_bf16 && dpaths[pi].ops->xwords != 1)
            FAIL("%s: softmax_bf16 on a table whose pairs are split", dpaths[pi].name);
        pb_kops_override(dpaths[pi].ops);
        test_kv_store(kctx2, PB_DT_BF16);
    }
    pb_kops_override(NULL);
    printf("attention, bf16 cache, bf16 products: %d tables\n", n_dpaths);
}

/* a table's softmax_bf16 (AMX, AVX512-BF16) against what it stands for: the row scaled
 * in place, the exact table's expsum, then xpairs (bit for bit: weights and
 * sum), over lengths around the 16 lanes, scales of both signs, and rows
 * holding infinities and NaN */
static void test_softmax_bf16(const char *name, const pb_kops *ops)
{
    static const int lens[] = {1, 2, 15, 16, 17, 31, 33, 64, 100, 517};
    static const float scales[] = {0.125f, 1.0f, 0.0883883f, -0.5f};
    float s[520], t[520];
    uint16_t out[520 + 1];
    uint32_t pairs[261];
    int bad = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (size_t si = 0; si < sizeof scales / sizeof scales[0]; si++)
            for (int special = 0; special < 3; special++) {
                const int n = lens[li];
                const float scale = scales[si];
                for (int i = 0; i < n; i++)
                    s[i] = 40.0f * frand();
                if (special == 1)
                    s[n / 2] = -INFINITY; /* a masked score: weight 0 */
                if (special == 2)
                    s[(n * 3) / 4] = NAN;
                out[n] = 0xabcd; /* past the row: untouched */
                const float got = ops->softmax_bf16(s, n, scale, out);
                float m = -INFINITY;
                for (int i = 0; i < n; i++) {
                    t[i] = s[i] * scale;
                    m = t[i] > m ? t[i] : m;
                }
                const float want = ops->exact->expsum(t, n, m);
                ops->xpairs(t, n, pairs);
                for (int i = 0; i < n && !bad; i++) {
                    const uint16_t w = (uint16_t)(pairs[i / 2] >> (16 * (i % 2)));
                    if (out[i] != w) {
                        FAIL("softmax_bf16: n %d, scale %g, case %d: weight %d is %#x, expected %#x", n, (double)scale,
                             special, i, out[i], w);
                        bad = 1;
                    }
                }
                if (!bad && !same_bits(got, want)) {
                    FAIL("softmax_bf16: n %d, scale %g, case %d: sum %a, expected %a", n, (double)scale, special,
                         (double)got, (double)want);
                    bad = 1;
                }
                if (!bad && out[n] != 0xabcd) {
                    FAIL("softmax_bf16: n %d: wrote past the row", n);
                    bad = 1;
                }
            }
    if (!bad)
        printf("%s: softmax_bf16 = scale, expsum, xpairs (bits)\n", name);
}

#ifdef PB_KERN_AMX
/* The AMX table's f16 and f32 weights: split into bf16 pieces that sum to
 * each weight exactly. Rows of x one-hot (1 at a k of its own: odd, even,
 * the last) read one weight each through every piece's tile: y is exactly
 * the weight, at 1 x 4 (M <= 16) and 2 x 2 blocks, whole K and K blocks of
 * one step (a piece dropped or rounded would show in the low bits). */
static void test_amx_split_exact(pb_kctx *kctx)
{
    static const int shapes[][2] = {{70, 203}, {33, 64}, {16, 1}};
    static const pb_dtype sdts[] = {PB_DT_F16, PB_DT_F32};
    for (size_t di = 0; di < 2; di++)
        for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
            const int n_out = shapes[si][0], n_in = shapes[si][1], Mmax = 40;
            float *wv = malloc((size_t)n_out * n_in * 4), *x = calloc((size_t)Mmax * n_in, 4);
            float *y = malloc((size_t)Mmax * n_out * 4);
            for (size_t i = 0; i < (size_t)n_out * n_in; i++)
                wv[i] = frand() * (i % 5 == 0 ? 1e-3f : i % 7 == 0 ? 300.0f : 1.0f);
            for (int i = 0; i < Mmax; i++)
                x[(size_t)i * n_in + (i == 0 ? n_in - 1 : (i * 37) % n_in)] = 1.0f;
            void *src = make_src(sdts[di], (size_t)n_out * n_in, wv);
            pb_kmat_src s = {.data = src, .dtype = sdts[di]};
            pb_kmat *m = NULL;
            if (pb_kmat_pack(&s, n_out, n_in, sdts[di], &m) != PB_OK)
                FAIL("amx split: pack failed");
            for (int c = 0; m && c < 4; c++) {
                const int M = c % 2 ? 40 : 5;
                pb_kmat_set_kblock(c >= 2 ? 2 : 0);
                if (pb_kmat_mul(kctx, x, n_in, M, m, NULL, y, n_out) != PB_OK)
                    FAIL("amx split: mul failed");
                for (int i = 0; i < M; i++)
                    for (int r = 0; r < n_out; r++) {
                        const int k = i == 0 ? n_in - 1 : (i * 37) % n_in;
                        const float want = stored_val(sdts[di], sdts[di], wv[(size_t)r * n_in + k]);
                        if (!same_bits(y[(size_t)i * n_out + r], want)) {
                            FAIL("amx: %s weights [%d, %d] M=%d%s: y[%d, %d] = %.9g, the weight (k %d) %.9g",
                                 pb_dtype_name(sdts[di]), n_out, n_in, M, c >= 2 ? " K blocks" : "", i, r,
                                 y[(size_t)i * n_out + r], k, want);
                            i = M;
                            break;
                        }
                    }
            }
            pb_kmat_set_kblock(0);
            pb_kmat_free(m);
            free(src);
            free(wv);
            free(x);
            free(y);
        }
    /* weights that are bf16 values (of f16's range) stored as f16 or f32:
     * their pieces past the first are zeros, which add nothing, so the
     * products are bit for bit those of the same weights stored as bf16 */
    const int n_out = 53, n_in = 301, M = 37;
    float *wv = malloc((size_t)n_out * n_in * 4), *x = malloc((size_t)M * n_in * 4);
    float *yb = malloc((size_t)M * n_out * 4), *y = malloc((size_t)M * n_out * 4);
    for (size_t i = 0; i < (size_t)n_out * n_in; i++) {
        const float v = frand();
        wv[i] = pb_bf16_to_f32(pb_f32_to_bf16(fabsf(v) < 0x1p-10f ? 0x1p-10f : v));
    }
    for (size_t i = 0; i < (size_t)M * n_in; i++)
        x[i] = frand();
    static const pb_dtype all[] = {PB_DT_BF16, PB_DT_F16, PB_DT_F32};
    for (int c = 0; c < 6; c++) {
        const pb_dtype dt = all[c % 3];
        void *src = make_src(dt, (size_t)n_out * n_in, wv);
        pb_kmat_src s = {.data = src, .dtype = dt};
        pb_kmat *m = NULL;
        pb_kmat_set_kblock(c >= 3 ? 2 : 0);
        if (pb_kmat_pack(&s, n_out, n_in, dt, &m) != PB_OK ||
            pb_kmat_mul(kctx, x, n_in, M, m, NULL, dt == PB_DT_BF16 ? yb : y, n_out) != PB_OK)
            FAIL("amx split: pack or mul failed");
        else if (dt != PB_DT_BF16 && memcmp(y, yb, (size_t)M * n_out * 4))
            FAIL("amx: bf16 values stored as %s%s: not the bf16 weights' bits", pb_dtype_name(dt),
                 c >= 3 ? " (K blocks)" : "");
        pb_kmat_free(m);
        free(src);
    }
    pb_kmat_set_kblock(0);
    free(wv);
    free(x);
    free(yb);
    free(y);
}
#endif

#ifdef PB_KERN_AMX
/* The AMX table's gated MLP with the activation fused into the first
 * product (pb_kmat_mul_glu): the bits of pb_kmat_mul into [g | u] (+ bias),
 * pb_krow_act's rows, then pb_kmat_mul of them, at 17 .. 100 rows (partial
 * row blocks), odd K, SiLU and GELU, whole row chunks and chunks of 32 rows;
 * pb_kmat_glu_fits refuses what it does not take. */
static void test_amx_glu(pb_kctx *kctx)
{
    static const int Ms[] = {17, 70, 100};
    for (int c = 0; c < 6; c++) {
        const int M = Ms[c % 3], n = c < 3 ? 48 : 96, K = 203, N = 37;
        const pb_kact act = c % 2 ? PB_KACT_GELU_TANH : PB_KACT_SILU;
        float *wgu = malloc((size_t)2 * n * K * 4), *wd = malloc((size_t)N * n * 4), *bgu = malloc((size_t)2 * n * 4);
        float *bd = malloc((size_t)N * 4), *x = malloc((size_t)M * K * 4), *gu = malloc((size_t)M * 2 * n * 4);
        float *mid = malloc((size_t)M * n * 4), *y1 = malloc((size_t)M * N * 4), *y2 = malloc((size_t)M * N * 4);
        const size_t pbytes = ((size_t)(M + 16) * (n / 2 + 32) * 4 + 63) & ~(size_t)63;
        void *pairs = aligned_alloc(64, pbytes);
        for (int i = 0; i < 2 * n * K; i++)
            wgu[i] = frand() * 0.3f;
        for (int i = 0; i < N * n; i++)
            wd[i] = frand() * 0.3f;
        for (int i = 0; i < 2 * n; i++)
            bgu[i] = frand();
        for (int i = 0; i < N; i++)
            bd[i] = frand();
        for (int i = 0; i < M * K; i++)
            x[i] = frand() * 2;
        void *sgu = make_src(PB_DT_BF16, (size_t)2 * n * K, wgu), *sd = make_src(PB_DT_BF16, (size_t)N * n, wd);
        pb_kmat_src a = {.data = sgu, .dtype = PB_DT_BF16}, b = {.data = sd, .dtype = PB_DT_BF16};
        pb_kmat *mgu = NULL, *md = NULL;
        if (pb_kmat_pack(&a, 2 * n, K, PB_DT_BF16, &mgu) != PB_OK || pb_kmat_pack(&b, N, n, PB_DT_BF16, &md) != PB_OK)
            FAIL("amx glu: pack failed");
        if (mgu && md && (!pb_kmat_glu_fits(mgu, md, M, pbytes) || pb_kmat_glu_fits(mgu, md, 16, pbytes) ||
                          pb_kmat_glu_fits(md, mgu, M, pbytes) || pb_kmat_glu_fits(mgu, md, M, 64)))
            FAIL("amx glu: pb_kmat_glu_fits wrong for [%d, %d] x [%d, %d] at M=%d", 2 * n, K, N, n, M);
        for (int kb = 0; mgu && md && kb <= 2; kb += 2) {
            pb_kmat_set_kblock(kb);
            if (pb_kmat_mul(kctx, x, K, M, mgu, bgu, gu, 2 * n) != PB_OK)
                FAIL("amx glu: mul failed");
            for (int i = 0; i < M; i++)
                pb_krow_act(act, mid + (size_t)i * n, gu + (size_t)i * 2 * n, gu + (size_t)i * 2 * n + n, n);
            memset(pairs, 0xff, pbytes); /* garbage where the pairs go */
            if (pb_kmat_mul(kctx, mid, n, M, md, bd, y1, N) != PB_OK ||
                pb_kmat_mul_glu(kctx, x, K, M, mgu, bgu, act, md, bd, y2, N, pairs, pbytes) != PB_OK)
                FAIL("amx glu: mul failed");
            else if (memcmp(y1, y2, (size_t)M * N * 4))
                FAIL("amx glu: M=%d n=%d act %d%s: not the bits of the product, act, then the product", M, n,
                     (int)act, kb ? " (rows in chunks of 32)" : "");
        }
        pb_kmat_set_kblock(0);
        pb_kmat_free(mgu);
        pb_kmat_free(md);
        free(sgu), free(sd), free(wgu), free(wd), free(bgu), free(bd), free(x), free(gu), free(mid), free(y1);
        free(y2), free(pairs);
    }
}
#endif

/* --matmul-precision bf16-amx: the AMX table where the CPU has the tile unit
 * (bounds, batch invariance, other dtypes' exact bits: test_bf16dot_path),
 * its selection, and its refusals */
static void test_amx(pb_kctx *kctx)
{
    if (pb_cpu_amx())
        FAIL("the AMX products are on without being asked for");
    if (!pb_cpu_amx_available()) {
        if (pb_cpu_set_amx(true) != PB_ERR_UNSUPPORTED || pb_cpu_amx())
            FAIL("bf16-amx accepted on a CPU without AMX-BF16");
        printf("amx: this CPU has no AMX-BF16 (the refusal checked)\n");
        return;
    }
#ifdef PB_KERN_AMX
    if (pb_cpu_set_amx(true) != PB_OK || !pb_cpu_amx() || !pb_cpu_bf16_products() || pb_kops_active() != &pb_kops_amx)
        FAIL("bf16-amx: not selected");
    if (pb_cpu_set_amx(false) != PB_OK || pb_cpu_amx() || pb_cpu_bf16_products() ||
        pb_kops_active() != pb_kops_get(pb_cpu_isa_best()))
        FAIL("bf16-amx: not turned off");
    if (pb_cpu_isa_set(PB_ISA_AVX2) == PB_OK) {
        if (pb_cpu_set_amx(true) != PB_ERR_UNSUPPORTED || pb_cpu_amx())
            FAIL("bf16-amx accepted with the kernels held to avx2");
        pb_cpu_isa_set(pb_cpu_isa_best());
    }
    if (pb_kops_amx.exact != pb_kops_get(PB_ISA_AVX512) || !pb_kops_amx.amx || pb_kops_amx.xwords != 1)
        FAIL("bf16-amx: its table is not the AVX-512 one's");
    test_bf16dot_path(kctx, "amx", &pb_kops_amx);
    pb_kops_override(&pb_kops_amx);
    test_amx_split_exact(kctx);
    test_amx_glu(kctx);
    pb_kops_override(NULL);
    test_softmax_bf16("amx", &pb_kops_amx);
    pb_kops_override(&pb_kops_amx);
    test_kv_store(kctx, PB_DT_BF16);
    pb_kops_override(NULL);
#endif
}

static void test_bf16dot(pb_kctx *kctx)
{
    if (pb_cpu_isa_best() == PB_ISA_AVX512BF16)
        FAIL("the inexact avx512bf16 path is chosen without being asked for");
    if (pb_cpu_bf16_products())
        FAIL("the bf16 products are on without being asked for");
    /* the selection: bf16 products on any path give a table with xpairs
     * (vdpbf16ps where the CPU has it), off gives the exact one back */
    for (int i = 0; i < n_paths && i < 3; i++) {
        if (pb_cpu_isa_set((pb_cpu_isa)i) != PB_OK)
            continue;
        pb_cpu_set_bf16_products(true);
        const pb_kops *on = pb_kops_active();
        pb_cpu_set_bf16_products(false);
        if (!on->xpairs || on->exact != pb_kops_get((pb_cpu_isa)i) || pb_kops_active() != pb_kops_get((pb_cpu_isa)i))
            FAIL("%s: the bf16 products' table is not the path's", paths[i].name);
        if (i == PB_ISA_AVX512 && (on == pb_kops_get(PB_ISA_AVX512BF16)) != pb_kdpbf16_preferred())
            FAIL("avx512: the bf16 products %s vdpbf16ps, which pb_kdpbf16_preferred says %s", on->xwords == 1 ? "take" : "do not take",
                 pb_kdpbf16_preferred() ? "beats the emulation" : "does not");
    }
    pb_cpu_isa_set(pb_cpu_isa_best());
    test_bf16_products(kctx);
    test_amx(kctx);
#ifdef PB_TEST_SIMDE
    /* SIMDe's own vdpbf16ps: bounded, not held to the instruction's bits */
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        test_bf16dot_path(kctx, "avx512bf16-simde", &pb_kops_avx512bf16_simde);
#endif
}

int main(void)
{
    add_paths();
    pb_pool *pool = NULL;
    pb_kctx *k1 = NULL, *k2 = NULL;
    if (pb_pool_create(2, &pool) != PB_OK || pb_kctx_create(NULL, &k1) != PB_OK || pb_kctx_create(pool, &k2) != PB_OK)
        return 1;
    if (pb_kctx_reserve(k1, 64, 1000, 64, 32, 64) != PB_OK || pb_kctx_reserve(k2, 64, 1000, 64, 32, 64) != PB_OK)
        return 1;
    if (pb_cpu_isa_set(PB_ISA_COUNT) == PB_OK)
        FAIL("pb_cpu_isa_set accepted a bad path");
    test_exp();
    test_rows();
    test_argmax();
    test_matmul(k2);
    test_pack_specials(k2);
    test_matmul_case(k1, 70, 90, PB_DT_BF16, PB_DT_BF16, 0, 0, 1, (const int[]){1, 7, 40}, 3);
    test_attention(k1, k2, PB_DT_F32);
    test_attention(k1, k2, PB_DT_F16);
    test_attention(k1, k2, PB_DT_BF16);
    for (int pi = 0; pi < n_apaths; pi++) { /* the store is the same code on every path; the AMX one too */
        pb_kops_override(apaths[pi].ops);
        test_kv_store(k2, PB_DT_BF16);
        test_kv_store(k2, PB_DT_F16);
    }
    pb_kops_override(NULL);
    test_attention_f16_range(k1);
    add_dpaths();
    test_tiles();
    test_attention_dots(k1, k2);
    test_bf16dot(k1);
    test_bf16dot(k2);
    pb_kctx_free(k1);
    pb_kctx_free(k2);
    pb_pool_free(pool);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("kernels: all checks passed\n");
    return 0;
}
