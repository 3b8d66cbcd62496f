/* Every operation of a compute backend on random inputs of odd sizes against
 * a plain reference written here (double precision), as ggml's
 * test-backend-ops. All data goes through the backend's own alloc, upload and
 * download, so a device backend runs the same cases.
 *
 * Usage: ops [KIND ...]   kinds: cpu (each CPU ISA path the machine runs),
 * cuda; default: all. A kind this build or machine lacks is reported and
 * skipped; when it is the only one asked for, the exit status is 77.
 *
 * Tolerances (y = computed, r = reference, eps = 2^-24, f32 accumulation):
 *   linear        |y - r| <= (K + 2) eps sum_k |x_k w_k| + eps |b|  (the
 *                 standard bound for a K-term f32 dot product; r uses the
 *                 weights as kept: bf16/f16 rounded), and bit-identical rows
 *                 whether a row is alone or one of M (batch invariance),
 *                 and bit-identical across CPU ISA paths (as are norm,
 *                 add_norm, act, glu and rope); on the CPU also with the
 *                 bf16 products (--matmul-precision bf16), r then taking x
 *                 rounded to bf16 for bf16 weights, again the same bits on
 *                 every path and not the exact ones; with the AMX form
 *                 (bf16-amx, where the CPU has it) the same bound with x
 *                 rounded to bf16 for every weight dtype (f16 and f32 weights
 *                 split into 2 or 3 bf16 pieces: (2K + 2) and (3K + 2) eps),
 *                 batch-invariant, bits of its own
 *   gather        exact (the kept weights, converted to f32)
 *   norm          |y - r| <= 1e-5 (|w| |xhat| + |b|) + 1e-6
 *   add_norm      exactly the bits of add then norm (x and out, out == x too)
 *   rope          |y - r| <= 4 eps (|a| + |b|)
 *   rope_angles   |y - r| <= 1e-6 (cos/sin of the same f32 angle)
 *   attention     |y - r| <= 2e-5 max|v| (with a bf16 cache under bf16-amx
 *                 or the bf16 products, queries and weights rounded to
 *                 bf16: (2e-5 + 2^-8 (1 + 2 D)) max|v|, D the head's
 *                 largest scale sum |q k|; the bf16 products' the same bits
 *                 on every CPU path, not the exact ones), and a sequence's output
 *                 bit-identical alone and in the batch; the cached tokens
 *                 are written by an earlier call (the cache layout is the
 *                 backend's own), into caches that start as garbage
 *   attention with its rotary (pb_backend_attention, a->rope): exactly the
 *                 bits of the rope op, then attention (outputs, the rotated
 *                 rows, both caches)
 *   act, glu      |y - r| <= 4e-6 (1 + |r|)
 *   glu_linear    exactly the bits of glu, then linear (each path and
 *                 precision)
 *   mlp_glu       exactly the bits of linear, then glu_linear (each path
 *                 and precision; bf16-amx: the fused form where it applies)
 *   add           |y - r| <= 2 eps (|y0| + |x| + |x2|)
 *   select_rows, upload/download/copy: exact
 *   scale         exact; softcap |y - r| <= 4e-6 (1 + |r|); head_norm as norm,
 *                 the row elements past the heads untouched
 *   argmax        exact: the first largest, NaN and masked ids never, 0 when
 *                 none is above -inf (ties, NaN, -inf and +inf rows, masks)
 *   sample        exact: pb_sample()'s id on the host for each row (every
 *                 filter alone and together, penalties over histories,
 *                 masks, ties, NaN/-inf/+inf rows, vocabularies 1-70000)
 *
 * The attention cases run once for each KV cache dtype the backend has
 * (kv_dtypes: cpu f32 and f16, cuda f32, bf16 and f16): the reference attends over
 * the keys and values rounded to it (nearest even; queries in f32), so 2e-5
 * max|v| bounds only the f32 arithmetic, not the rounding.
 *
 * cuda: the same bounds.
 * Its kernels differ from the CPU's in reduction order, so the bit identity
 * across CPU ISA paths does not extend to it; batch invariance (a row or a
 * sequence alone vs in a batch) and add_norm == add, norm are checked bit for
 * bit as for the CPU. tests/backend/ops-emu is this program linked with
 * the .cu files of src/cuda built as C++ on a CPU stand-in of the CUDA runtime
 * (tests/backend/cuda_emu), so the cuda cases run on every machine. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/tensor.h"
#include "cpu/kernels.h"
#include "cuda/cuda.h"
#include "gen/sample.h"
#include "../q8ref.h"
#include "gen/sample_impl.h"

static int failures;
static const char *where = "";

#define CHECK(cond, ...)                                                                                               \
    do {                                                                                                               \
        if (!(cond)) {                                                                                                 \
            failures++;                                                                                                \
            if (failures < 40) {                                                                                       \
                fprintf(stderr, "FAIL [%s] %s:%d: ", where, __FILE__, __LINE__);                                       \
                fprintf(stderr, __VA_ARGS__);                                                                          \
                fputc('\n', stderr);                                                                                   \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)

#define OK(expr)                                                                                                       \
    do {                                                                                                               \
        pb_status st_ = (expr);                                                                                        \
        if (st_ != PB_OK) {                                                                                            \
            fprintf(stderr, "FAIL [%s] %s:%d: %s: %s\n", where, __FILE__, __LINE__, #expr, pb_last_error());           \
            exit(1);                                                                                                   \
        }                                                                                                              \
    } while (0)

/* ---- random numbers (splitmix64) ---- */
static uint64_t rng_state = 0x1234567;
static uint64_t rnd(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static float frand(void) { return (float)((double)(rnd() >> 11) / 9007199254740992.0 * 2.0 - 1.0); }
static void fill(float *p, size_t n, float scale)
{
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
}

static const double EPS = 1.0 / 16777216.0;

/* ---- backend memory helpers ---- */
static pb_backend *BE;

static void *dev(size_t bytes)
{
    void *p = NULL;
    OK(BE->ops->alloc(BE, bytes ? bytes : 1, &p));
    return p;
}
static void *dev_from(const void *host, size_t bytes)
{
    void *p = dev(bytes);
    OK(BE->ops->upload(BE, p, host, bytes));
    return p;
}
static void to_host(void *host, const void *d, size_t bytes)
{
    OK(BE->ops->download(BE, host, d, bytes));
    OK(BE->ops->sync(BE));
}
static void rel(void *p) { BE->ops->release(BE, p); }

static pb_dtype KVT; /* the KV cache dtype of the attention cases running */
static bool bf16_attn; /* bf16-amx or the bf16 products are selected: a bf16 cache's attention rounds Q and P */

static float kept(float v, pb_dtype dt)
{
    if (dt == PB_DT_BF16)
        return pb_bf16_to_f32(pb_f32_to_bf16(v));
    if (dt == PB_DT_F16)
        return pb_f16_to_f32(pb_f32_to_f16(v));
    return v;
}

static void *encode(const float *v, size_t n, pb_dtype dt)
{
    void *p = malloc(n * pb_dtype_size(dt) + 1);
    for (size_t i = 0; i < n; i++) {
        if (dt == PB_DT_F32)
            ((float *)p)[i] = v[i];
        else if (dt == PB_DT_BF16)
            ((uint16_t *)p)[i] = pb_f32_to_bf16(v[i]);
        else
            ((uint16_t *)p)[i] = pb_f32_to_f16(v[i]);
    }
    return p;
}

/* ---- memory ops ---- */
static void test_memory(void)
{
    where = "memory";
    size_t n = 1237;
    float *a = malloc(n * 4), *b = malloc(n * 4);
    fill(a, n, 3);
    float *d1 = dev_from(a, n * 4), *d2 = dev(n * 4);
    OK(BE->ops->copy(BE, d2, d1, n * 4));
    to_host(b, d2, n * 4);
    CHECK(memcmp(a, b, n * 4) == 0, "upload/copy/download round trip differs");
    rel(d1);
    rel(d2);
    free(a);
    free(b);
}

/* ---- linear ---- */

/* One linear case: W [N, K] from `parts` tensors (rows split), stored as
 * src_dt, optionally transposed (one part), a row permutation, a bias; kept as
 * store_dt. Checks M rows against the reference and row invariance. */
static bool bf16_products; /* --matmul-precision bf16 is selected (bf16_probe) */
static int f8_block[2] = {128, 128}; /* an F8_E4M3 source's blocks */
static bool amx_products;  /* bf16-amx: f16 and f32 weights too, split into 2 or 3 bf16 pieces */
static bool tc_products;   /* cuda's tensor cores (its default): x rounded to bf16 / f16 for bf16 / f16 weights */

static void linear_case(int N, int K, int M, pb_dtype src_dt, pb_dtype store_dt, int n_parts, bool transposed,
                        bool perm, bool bias, float **out_y)
{
    char buf[160];
    snprintf(buf, sizeof buf, "linear N=%d K=%d M=%d %s->%s parts=%d%s%s%s", N, K, M, pb_dtype_name(src_dt),
             pb_dtype_name(store_dt), n_parts, transposed ? " transposed" : "", perm ? " perm" : "",
             bias ? " bias" : "");
    where = buf;
    float *w = malloc((size_t)N * K * 4), *x = malloc((size_t)M * K * 4), *b = malloc((size_t)N * 4);
    fill(w, (size_t)N * K, 0.5f);
    fill(x, (size_t)M * K, 1.0f);
    fill(b, (size_t)N, 0.5f);
    /* the checkpoint's values are those of its dtype; an FP8 checkpoint's (F8_E4M3): each part's rows in
     * blocks of f8_block, e4m3 bytes and a scale a block, w their values */
    for (size_t i = 0; i < (size_t)N * K; i++)
        w[i] = kept(w[i], src_dt);
    unsigned char *f8q[3] = {NULL, NULL, NULL};
    float *f8s[3] = {NULL, NULL, NULL};
    const bool f8 = src_dt == PB_DT_F8_E4M3;
    for (int p = 0, r0 = 0; f8 && p < n_parts; p++) {
        const int rows = N / n_parts + (p < N % n_parts ? 1 : 0);
        f8q[p] = malloc((size_t)rows * K);
        f8s[p] = malloc((size_t)((rows + f8_block[0] - 1) / f8_block[0]) * ((K + f8_block[1] - 1) / f8_block[1]) * 4);
        f8ref_encode(w + (size_t)r0 * K, rows, K, f8_block[0], f8_block[1], f8q[p], f8s[p]);
        r0 += rows;
    }
    /* the values kept: int8 (q8) quantizes each row's groups of 64 */
    float *wk = malloc((size_t)N * K * 4);
    for (size_t i = 0; i < (size_t)N * K; i++)
        wk[i] = kept(w[i], store_dt);
    if (store_dt == PB_DT_Q8)
        for (int r = 0; r < N; r++)
            q8ref_row(wk + (size_t)r * K, K);
    int *pm = NULL;
    if (perm) {
        pm = malloc((size_t)N * sizeof *pm);
        for (int i = 0; i < N; i++)
            pm[i] = i;
        for (int i = N - 1; i > 0; i--) {
            int j = (int)(rnd() % (uint64_t)(i + 1)), t = pm[i];
            pm[i] = pm[j];
            pm[j] = t;
        }
    }
    /* parts: rows split as evenly as possible; transposed storage [K, rows] */
    pb_wpart parts[3];
    void *enc[3] = {NULL, NULL, NULL};
    int r0 = 0;
    for (int p = 0; p < n_parts; p++) {
        int rows = N / n_parts + (p < N % n_parts ? 1 : 0);
        float *tmp = malloc((size_t)rows * K * 4);
        for (int r = 0; r < rows; r++)
            for (int k = 0; k < K; k++) {
                float v = w[(size_t)(r0 + r) * K + k];
                if (transposed)
                    tmp[(size_t)k * rows + r] = v;
                else
                    tmp[(size_t)r * K + k] = v;
            }
        enc[p] = f8 ? f8q[p] : encode(tmp, (size_t)rows * K, src_dt);
        free(tmp);
        parts[p] = (pb_wpart){.data = enc[p], .dtype = src_dt, .rows = rows, .transposed = transposed,
                              .name = "test", .scale = f8s[p], .scale_dtype = PB_DT_F32,
                              .block_rows = f8_block[0], .block_cols = f8_block[1]};
        r0 += rows;
    }
    void *whole = NULL;
    if (n_parts > 1 && !transposed && N % 2 == 0 && !f8) {
        /* parts back to back in one buffer, as adjacent tensors of a file */
        whole = encode(w, (size_t)N * K, src_dt);
        size_t off = 0;
        for (int p = 0; p < n_parts; p++) {
            parts[p].data = (const unsigned char *)whole + off;
            off += (size_t)parts[p].rows * K * pb_dtype_size(src_dt);
        }
    }
    pb_linear_src src = {.n_out = N, .n_in = K, .n_parts = n_parts, .parts = parts, .row_perm = pm,
                         .bias = bias ? b : NULL};
    pb_weight *W = NULL;
    OK(BE->ops->put_linear(BE, &src, store_dt, &W));
    for (int p = 0; p < n_parts; p++) {
        free(enc[p]);
        free(f8s[p]);
    }
    free(whole);
    CHECK(W->n_out == N && W->n_in == K && W->dtype == store_dt, "weight describes itself wrongly");
    CHECK(W->bytes == BE->ops->weight_bytes(store_dt, N, K, bias), "bytes %llu, weight_bytes says %llu",
          (unsigned long long)W->bytes, (unsigned long long)BE->ops->weight_bytes(store_dt, N, K, bias));

    /* y with a row stride wider than N, x with one wider than K (rows 16-byte aligned where K % 8 == 0, so
     * that kernels with wide loads take them) */
    int ldx = K % 8 == 0 ? K + 8 : K + 3, ldy = N + 5;
    float *xh = calloc((size_t)M * ldx, 4);
    for (int i = 0; i < M; i++)
        memcpy(xh + (size_t)i * ldx, x + (size_t)i * K, (size_t)K * 4);
    float *dx = dev_from(xh, (size_t)M * ldx * 4), *dy = dev((size_t)M * ldy * 4);
    OK(BE->ops->linear(BE, dx, ldx, M, W, dy, ldy));
    float *y = malloc((size_t)M * ldy * 4);
    to_host(y, dy, (size_t)M * ldy * 4);
    double worst = 0;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            int sr = pm ? pm[j] : j;
            double r = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                /* the bf16 products round the activations to bf16 (nearest even) for bf16 weights (on the
                 * tile unit for every float weight dtype; int8 and f8 weights take the exact products) */
                const bool grouped = store_dt == PB_DT_Q8 || store_dt == PB_DT_F8_E4M3;
                const float xv = bf16_products && (store_dt == PB_DT_BF16 || (amx_products && !grouped))
                                     ? kept(x[(size_t)i * K + k], PB_DT_BF16)
                                 : tc_products && store_dt != PB_DT_F32 ? kept(x[(size_t)i * K + k], store_dt)
                                                                        : x[(size_t)i * K + k];
                double t = (double)xv * wk[(size_t)sr * K + k];
                r += t;
                mag += fabs(t);
            }
            if (bias) {
                r += b[j];
                mag += fabs(b[j]);
            }
            /* split weights: a chain of 2 or 3 products a k */
            /* the tensor cores' accumulation is not IEEE's nearest at each add: twice the bound */
            const int pieces = amx_products ? (store_dt == PB_DT_F32 ? 3 : store_dt == PB_DT_F16 ? 2 : 1)
                               : tc_products && store_dt != PB_DT_F32 ? 2
                                                                      : 1;
            double e = fabs(y[(size_t)i * ldy + j] - r), tol = (pieces * K + 2) * EPS * mag + 1e-30;
            if (e / tol > worst)
                worst = e / tol;
            CHECK(e <= tol, "y[%d,%d] = %.9g, reference %.9g (tolerance %.3g)", i, j, y[(size_t)i * ldy + j], r, tol);
        }
    /* batch invariance: each row alone gives the same bits as in the batch */
    float *y1 = malloc((size_t)ldy * 4);
    for (int i = 0; i < M; i += (M > 7 ? 3 : 1)) {
        float *d1 = dev((size_t)ldy * 4);
        OK(BE->ops->linear(BE, dx + (size_t)i * ldx, ldx, 1, W, d1, ldy));
        to_host(y1, d1, (size_t)ldy * 4);
        CHECK(memcmp(y1, y + (size_t)i * ldy, (size_t)N * 4) == 0, "row %d alone differs from row %d of %d", i, i, M);
        rel(d1);
    }
    if (out_y) {
        *out_y = malloc((size_t)M * N * 4);
        for (int i = 0; i < M; i++)
            memcpy(*out_y + (size_t)i * N, y + (size_t)i * ldy, (size_t)N * 4);
    }
    free(y1);
    (void)worst;
    BE->ops->weight_free(BE, W);
    rel(dx);
    rel(dy);
    free(xh);
    free(y);
    free(w);
    free(wk);
    free(x);
    free(b);
    free(pm);
}

static void test_linear(void)
{
    const pb_dtype dts[] = {PB_DT_F32, PB_DT_BF16, PB_DT_F16};
    /* N, K, M: cuda's tensor-core kernels take M <= 64 rows in one pass over W (skinny) and more in tiles of
     * 128 x 64; K in slices of 256: 2200 and 2101 take two rounds of the skinny kernel's 8 warps, 4696 three
     * (the last of 3 slices) and 6152 four (the last of 1), each round's loads issued a round ahead where
     * PB_CUDA_TC_PREFETCH=1; with =2 the stand-in's grid of 3 blocks has 53 x 2101 take a block's second
     * column group (16 or 8 columns a group, the last partial) after two rounds of the first */
    const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {33, 17, 1}, {67, 129, 9}, {130, 63, 32}, {19, 256, 37},
                             {257, 96, 5}, {70, 136, 72}, {45, 71, 66}, {17, 600, 64}, {9, 2200, 5},
                             {7, 2101, 3}, {131, 520, 130}, {20, 4696, 40}, {24, 6152, 1}, {53, 2101, 2}};
    for (unsigned s = 0; s < sizeof shapes / sizeof *shapes; s++)
        for (unsigned d = 0; d < 3; d++)
            linear_case(shapes[s][0], shapes[s][1], shapes[s][2], dts[d], dts[d], 1, false, false, s % 2 == 1, NULL);
    /* conversions at load: f32 -> bf16 (--weights-dtype bf16), bf16 -> f32 (f32), f16 -> f32 and bf16 (rows
     * and k-major) */
    linear_case(45, 71, 6, PB_DT_F32, PB_DT_BF16, 1, false, false, true, NULL);
    linear_case(45, 71, 6, PB_DT_BF16, PB_DT_F32, 1, false, false, false, NULL);
    linear_case(45, 71, 6, PB_DT_F16, PB_DT_F32, 1, false, false, false, NULL);
    linear_case(45, 71, 6, PB_DT_F16, PB_DT_BF16, 1, false, false, true, NULL);
    linear_case(48, 40, 5, PB_DT_F16, PB_DT_F32, 1, true, false, false, NULL);
    linear_case(48, 41, 5, PB_DT_F16, PB_DT_BF16, 1, true, false, true, NULL);
    /* adapter layouts: Conv1D transposed, q|k|v from three tensors, gate|up, a fused per-head permutation */
    linear_case(48, 40, 5, PB_DT_F32, PB_DT_F32, 1, true, false, true, NULL);
    linear_case(48, 40, 5, PB_DT_F16, PB_DT_F16, 1, true, false, false, NULL);
    linear_case(51, 33, 4, PB_DT_BF16, PB_DT_BF16, 3, false, false, true, NULL);
    linear_case(50, 33, 4, PB_DT_F32, PB_DT_F32, 2, false, false, false, NULL);  /* back to back */
    linear_case(50, 33, 4, PB_DT_BF16, PB_DT_BF16, 2, false, true, true, NULL);
    linear_case(49, 33, 4, PB_DT_F16, PB_DT_F16, 2, false, false, false, NULL);  /* separate */
    linear_case(60, 24, 7, PB_DT_BF16, PB_DT_BF16, 1, false, true, true, NULL);
    linear_case(60, 24, 7, PB_DT_F32, PB_DT_F32, 1, true, true, false, NULL);
    /* --weights-dtype int8 where the backend keeps it: every source dtype, whole and partial groups of 64 k,
     * transposed, parts, a permutation; a backend without it refuses it */
    if (BE->ops->weight_dtypes & (1u << PB_DT_Q8)) {
        for (unsigned s = 0; s < sizeof shapes / sizeof *shapes; s += 2)
            linear_case(shapes[s][0], shapes[s][1], shapes[s][2], dts[s / 2 % 3], PB_DT_Q8, 1, false, false,
                        s % 4 == 2, NULL);
        linear_case(48, 130, 5, PB_DT_F16, PB_DT_Q8, 1, true, false, true, NULL);
        linear_case(51, 200, 4, PB_DT_BF16, PB_DT_Q8, 3, false, false, true, NULL);
        linear_case(60, 64, 70, PB_DT_BF16, PB_DT_Q8, 2, false, true, false, NULL);
    }
    /* an FP8 checkpoint (F8_E4M3 with block scales) kept as stored where the backend keeps it (blocks of
     * 128 x 128 and 16 x 64: partial blocks, K not a multiple of 64, q|k|v parts each with its scales, a
     * permutation, the widest tiles), else converted (f32, bf16, int8) */
    {
        const bool keeps = BE->ops->weight_dtypes & (1u << PB_DT_F8_E4M3);
        const pb_dtype st = keeps ? PB_DT_F8_E4M3 : PB_DT_BF16;
        linear_case(33, 64, 1, PB_DT_F8_E4M3, st, 1, false, false, true, NULL);
        linear_case(130, 200, 5, PB_DT_F8_E4M3, st, 1, false, true, false, NULL);
        linear_case(51, 300, 4, PB_DT_F8_E4M3, st, 3, false, true, true, NULL);
        f8_block[0] = 16, f8_block[1] = 64;
        linear_case(60, 130, 70, PB_DT_F8_E4M3, st, 2, false, false, false, NULL);
        linear_case(45, 71, 3, PB_DT_F8_E4M3, PB_DT_F32, 1, false, false, true, NULL);
        linear_case(45, 71, 3, PB_DT_F8_E4M3, PB_DT_BF16, 3, false, true, false, NULL);
        if (BE->ops->weight_dtypes & (1u << PB_DT_Q8))
            linear_case(50, 200, 6, PB_DT_F8_E4M3, PB_DT_Q8, 2, false, false, true, NULL);
        f8_block[0] = f8_block[1] = 128;
        if (!keeps) {
            where = "linear f8 refused";
            const unsigned char q = 0x38; /* 1.0 */
            const float one = 1.0f;
            const pb_wpart part = {.data = &q, .dtype = PB_DT_F8_E4M3, .rows = 1, .name = "test", .scale = &one,
                                   .scale_dtype = PB_DT_F32, .block_rows = 128, .block_cols = 128};
            const pb_linear_src src = {.n_out = 1, .n_in = 1, .n_parts = 1, .parts = &part};
            pb_weight *W = NULL;
            CHECK(BE->ops->put_linear(BE, &src, PB_DT_F8_E4M3, &W) != PB_OK, "put_linear kept F8_E4M3 it does not "
                  "list");
        }
    }
    if (!(BE->ops->weight_dtypes & (1u << PB_DT_Q8))) {
        where = "linear int8 refused";
        const float one = 1.0f;
        const pb_wpart part = {.data = &one, .dtype = PB_DT_F32, .rows = 1, .name = "test"};
        const pb_linear_src src = {.n_out = 1, .n_in = 1, .n_parts = 1, .parts = &part};
        pb_weight *W = NULL;
        CHECK(BE->ops->put_linear(BE, &src, PB_DT_Q8, &W) != PB_OK, "put_linear took Q8 it does not list");
        CHECK(pb_wdtype_check(BE->ops, PB_WDTYPE_INT8) != PB_OK, "pb_wdtype_check allowed int8");
    }
}

/* ---- gather ---- */
static void test_gather(void)
{
    /* the fourth: int8 (q8) of a bf16 table, where the backend keeps it; E = 70: a whole group and a part;
     * the fifth: an FP8 checkpoint's table kept as stored (blocks of 16 x 64) */
    const pb_dtype dts[] = {PB_DT_F32, PB_DT_BF16, PB_DT_F16, PB_DT_Q8, PB_DT_F8_E4M3};
    for (unsigned d = 0; d < 5; d++) {
        if ((dts[d] == PB_DT_Q8 || dts[d] == PB_DT_F8_E4M3) && !(BE->ops->weight_dtypes & (1u << dts[d])))
            continue;
        where = pb_dtype_name(dts[d]);
        const pb_dtype sdt = dts[d] == PB_DT_Q8 ? PB_DT_BF16 : dts[d];
        const int V = 37, E = dts[d] == PB_DT_Q8 || dts[d] == PB_DT_F8_E4M3 ? 70 : 29, T = 11, off = 2;
        float *w = malloc((size_t)V * E * 4), f8s[3 * 2];
        fill(w, (size_t)V * E, 1);
        void *enc = sdt == PB_DT_F8_E4M3 ? malloc((size_t)V * E) : encode(w, (size_t)V * E, sdt);
        if (sdt == PB_DT_F8_E4M3) /* w: its values */
            f8ref_encode(w, V, E, 16, 64, enc, f8s);
        for (size_t i = 0; i < (size_t)V * E; i++) /* the values kept */
            w[i] = kept(kept(w[i], sdt), dts[d]);
        if (dts[d] == PB_DT_Q8)
            for (int r = 0; r < V; r++)
                q8ref_row(w + (size_t)r * E, E);
        pb_wpart part = {.data = enc, .dtype = sdt, .rows = V, .name = "table", .scale = f8s,
                         .scale_dtype = PB_DT_F32, .block_rows = 16, .block_cols = 64};
        pb_linear_src src = {.n_out = V, .n_in = E, .n_parts = 1, .parts = &part};
        pb_weight *W;
        OK(BE->ops->put_linear(BE, &src, dts[d], &W));
        int32_t ids[11];
        for (int t = 0; t < T; t++)
            ids[t] = (int32_t)(rnd() % (V - off));
        ids[0] = V - off - 1;
        int32_t *dids = dev_from(ids, sizeof ids);
        float *base = malloc((size_t)T * E * 4), *got = malloc((size_t)T * E * 4);
        fill(base, (size_t)T * E, 1);
        float *dout = dev_from(base, (size_t)T * E * 4);
        OK(BE->ops->gather(BE, dout, W, dids, T, off, true));
        to_host(got, dout, (size_t)T * E * 4);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++) {
                float r = base[(size_t)t * E + e] + w[(size_t)(ids[t] + off) * E + e];
                CHECK(got[(size_t)t * E + e] == r, "gather+=: [%d,%d] %g vs %g", t, e, got[(size_t)t * E + e], r);
            }
        OK(BE->ops->gather(BE, dout, W, dids, T, 0, false));
        to_host(got, dout, (size_t)T * E * 4);
        for (int t = 0; t < T; t++)
            for (int e = 0; e < E; e++)
                CHECK(got[(size_t)t * E + e] == w[(size_t)ids[t] * E + e], "gather [%d,%d]", t, e);
        /* an id outside the table is refused, not read */
        int32_t bad = V;
        OK(BE->ops->upload(BE, dids, &bad, sizeof bad));
        CHECK(BE->ops->gather(BE, dout, W, dids, 1, 0, false) == PB_ERR_INPUT, "id %d outside %d rows accepted", V, V);
        BE->ops->weight_free(BE, W);
        rel(dids);
        rel(dout);
        free(enc);
        free(w);
        free(base);
        free(got);
    }
}

/* ---- norm ---- */
static void test_norm_n(int n)
{
    const int rows = 7;
    for (int kind = 0; kind < 2; kind++)
        for (int with_b = 0; with_b < 2; with_b++) {
            pb_norm nk = kind ? PB_NORM_RMSNORM : PB_NORM_LAYERNORM;
            if (nk == PB_NORM_RMSNORM && with_b)
                continue;
            static char wb[48];
            snprintf(wb, sizeof wb, "%s, n %d",
                     nk == PB_NORM_RMSNORM ? "rmsnorm" : with_b ? "layernorm" : "layernorm no bias", n);
            where = wb;
            float *x = malloc((size_t)rows * n * 4), *w = malloc((size_t)n * 4), *b = malloc((size_t)n * 4),
                  *y = malloc((size_t)rows * n * 4);
            fill(x, (size_t)rows * n, 3);
            for (int i = 0; i < n; i++)
                x[i] += 5; /* a row with a large mean */
            fill(w, (size_t)n, 1);
            fill(b, (size_t)n, 1);
            float *dx = dev_from(x, (size_t)rows * n * 4), *dw = dev_from(w, (size_t)n * 4),
                  *db = dev_from(b, (size_t)n * 4), *dy = dev((size_t)rows * n * 4);
            const float eps = 1e-5f;
            OK(BE->ops->norm(BE, nk, dy, dx, rows, n, dw, with_b ? db : NULL, eps));
            to_host(y, dy, (size_t)rows * n * 4);
            for (int r = 0; r < rows; r++) {
                const float *xr = x + (size_t)r * n;
                double mean = 0, var = 0, ss = 0;
                for (int i = 0; i < n; i++) {
                    mean += xr[i];
                    ss += (double)xr[i] * xr[i];
                }
                mean /= n;
                for (int i = 0; i < n; i++)
                    var += (xr[i] - mean) * (xr[i] - mean);
                var /= n;
                for (int i = 0; i < n; i++) {
                    double xh = nk == PB_NORM_RMSNORM ? xr[i] / sqrt(ss / n + eps) : (xr[i] - mean) / sqrt(var + eps);
                    double ref = xh * w[i] + (with_b ? b[i] : 0);
                    double tol = 1e-5 * (fabs(w[i] * xh) + (with_b ? fabs(b[i]) : 0)) + 1e-6;
                    CHECK(fabs(y[(size_t)r * n + i] - ref) <= tol, "[%d,%d] %g vs %g", r, i, y[(size_t)r * n + i], ref);
                }
            }
            if (BE->ops->add_norm) { /* x += a (+ a2), out = norm(x): the bits of add then norm */
                float *a = malloc((size_t)rows * n * 4), *a2 = malloc((size_t)rows * n * 4);
                float *sum = malloc((size_t)rows * n * 4), *got = malloc((size_t)rows * n * 4);
                fill(a, (size_t)rows * n, 2);
                fill(a2, (size_t)rows * n, 2);
                float *da = dev_from(a, (size_t)rows * n * 4), *da2 = dev_from(a2, (size_t)rows * n * 4);
                for (int two = 0; two < 2; two++) {
                    for (size_t i = 0; i < (size_t)rows * n; i++)
                        sum[i] = two ? x[i] + (a[i] + a2[i]) : x[i] + a[i];
                    float *dsum = dev_from(sum, (size_t)rows * n * 4), *dref = dev((size_t)rows * n * 4);
                    float *dx2 = dev_from(x, (size_t)rows * n * 4), *dy2 = dev((size_t)rows * n * 4);
                    OK(BE->ops->norm(BE, nk, dref, dsum, rows, n, dw, with_b ? db : NULL, eps));
                    OK(BE->ops->add_norm(BE, nk, dy2, dx2, da, two ? da2 : NULL, rows, n, dw, with_b ? db : NULL, eps));
                    to_host(got, dx2, (size_t)rows * n * 4);
                    CHECK(memcmp(got, sum, (size_t)rows * n * 4) == 0, "add_norm: x after the add");
                    float *ref = malloc((size_t)rows * n * 4);
                    to_host(ref, dref, (size_t)rows * n * 4);
                    to_host(got, dy2, (size_t)rows * n * 4);
                    CHECK(memcmp(got, ref, (size_t)rows * n * 4) == 0, "add_norm (%d added) differs from add, norm",
                          1 + two);
                    /* out == x */
                    OK(BE->ops->upload(BE, dx2, x, (size_t)rows * n * 4));
                    OK(BE->ops->add_norm(BE, nk, dx2, dx2, da, two ? da2 : NULL, rows, n, dw, with_b ? db : NULL, eps));
                    to_host(got, dx2, (size_t)rows * n * 4);
                    CHECK(memcmp(got, ref, (size_t)rows * n * 4) == 0, "add_norm in place");
                    free(ref);
                    rel(dsum);
                    rel(dref);
                    rel(dx2);
                    rel(dy2);
                }
                rel(da);
                rel(da2);
                free(a);
                free(a2);
                free(sum);
                free(got);
            }
            /* in place */
            OK(BE->ops->norm(BE, nk, dx, dx, rows, n, dw, with_b ? db : NULL, eps));
            float *y2 = malloc((size_t)rows * n * 4);
            to_host(y2, dx, (size_t)rows * n * 4);
            CHECK(memcmp(y, y2, (size_t)rows * n * 4) == 0, "in place differs");
            rel(dx);
            rel(dw);
            rel(db);
            rel(dy);
            free(x);
            free(w);
            free(b);
            free(y);
            free(y2);
        }
}

/* rows of 67 .. 8300: a CUDA block's 1..33 elements a thread (its register-held forms of 4, 8, 16 and 32 and
   the loops past them) */
static void test_norm(void)
{
    static const int ns[] = {67, 1100, 2053, 4500, 8300};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++)
        test_norm_n(ns[i]);
}

/* ---- rotary ---- */
static void test_rope(void)
{
    const int T = 9, nh = 3, hd = 10;
    const int rots[] = {10, 4}; /* full and partial (GPT-J/NeoX rotary_dim < head_dim) */
    for (int style = 0; style < 2; style++)
        for (int ri = 0; ri < 2; ri++) {
            pb_rope_desc rd = {style ? PB_ROPE_INTERLEAVED : PB_ROPE_HALF, rots[ri]};
            where = style ? "rope interleaved" : "rope half";
            const int half = rd.rot_dim / 2, ld = nh * hd + 7;
            float pos[9], inv[5], *cs = malloc((size_t)T * half * 2 * 4);
            for (int t = 0; t < T; t++)
                pos[t] = (float)(t * 37 + (t == T - 1 ? 4000 : 0));
            for (int i = 0; i < half; i++)
                inv[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)rd.rot_dim);
            float *dcs = dev((size_t)T * half * 2 * 4);
            OK(BE->ops->rope_angles(BE, dcs, pos, T, inv, half));
            to_host(cs, dcs, (size_t)T * half * 2 * 4);
            for (int t = 0; t < T; t++)
                for (int i = 0; i < half; i++) {
                    float a = pos[t] * inv[i];
                    CHECK(fabs(cs[(t * half + i) * 2] - cos((double)a)) <= 1e-6 &&
                              fabs(cs[(t * half + i) * 2 + 1] - sin((double)a)) <= 1e-6,
                          "rope_angles t=%d i=%d", t, i);
                }
            float *x = malloc((size_t)T * ld * 4), *y = malloc((size_t)T * ld * 4);
            fill(x, (size_t)T * ld, 2);
            float *dx = dev_from(x, (size_t)T * ld * 4);
            OK(BE->ops->rope(BE, dx, ld, T, nh, hd, &rd, dcs));
            to_host(y, dx, (size_t)T * ld * 4);
            for (int t = 0; t < T; t++)
                for (int h = 0; h < nh; h++) {
                    const float *v = x + (size_t)t * ld + h * hd;
                    const float *o = y + (size_t)t * ld + h * hd;
                    for (int i = 0; i < half; i++) {
                        int ia = style ? 2 * i : i, ib = style ? 2 * i + 1 : i + half;
                        double c = cs[(t * half + i) * 2], s = cs[(t * half + i) * 2 + 1];
                        double ra = v[ia] * c - v[ib] * s, rb = v[ib] * c + v[ia] * s;
                        double tol = 4 * EPS * (fabs(v[ia]) + fabs(v[ib]));
                        CHECK(fabs(o[ia] - ra) <= tol && fabs(o[ib] - rb) <= tol, "t=%d h=%d pair %d", t, h, i);
                    }
                    for (int d = rd.rot_dim; d < hd; d++)
                        CHECK(o[d] == v[d], "t=%d h=%d dim %d past rot_dim changed", t, h, d);
                }
            /* the padding past nh * hd is untouched */
            for (int t = 0; t < T; t++)
                for (int d = nh * hd; d < ld; d++)
                    CHECK(y[(size_t)t * ld + d] == x[(size_t)t * ld + d], "row padding changed");
            rel(dcs);
            rel(dx);
            free(cs);
            free(x);
            free(y);
        }
}

/* ---- attention ---- */

typedef struct attn_case {
    const char *name;
    int n_heads, n_kv, hd, window;
    bool alibi;
    int n_seqs;
    int pos[6], ntok[6]; /* cached tokens, new tokens */
    float softcap;       /* Gemma 2's attention logit soft-cap, or 0 */
} attn_case;

/* out[h * hd + e]: the reference; dmax[h] (when not NULL): the largest
 * scale sum_e |q_e k_e| over the head's keys (what rounding q to bf16 can
 * move a score by, in units of 2^-9) */
static void attn_ref(const attn_case *c, int s, const float *kc, const float *vc, const float *q, int q_stride,
                     int tok, int p, const float *alibi, float scale, double *out, double *dmax)
{
    const int hd = c->hd, kvd = c->n_kv * hd, grp = c->n_heads / c->n_kv;
    (void)s;
    for (int h = 0; h < c->n_heads; h++) {
        int g = h / grp, lo = c->window > 0 && p - c->window + 1 > 0 ? p - c->window + 1 : 0;
        double m = -INFINITY, *sc = malloc(sizeof(double) * (size_t)(p + 1)), sum = 0;
        if (dmax)
            dmax[h] = 0;
        for (int j = lo; j <= p; j++) {
            double d = 0, da = 0;
            for (int e = 0; e < hd; e++) {
                const double t = (double)q[(size_t)tok * q_stride + h * hd + e] * kc[(size_t)j * kvd + g * hd + e];
                d += t;
                da += fabs(t);
            }
            if (dmax)
                dmax[h] = fmax(dmax[h], da * scale);
            d = d * scale + (alibi ? (double)alibi[h] * j : 0);
            if (c->softcap > 0)
                d = tanh(d / c->softcap) * c->softcap;
            sc[j] = d;
            if (d > m)
                m = d;
        }
        for (int j = lo; j <= p; j++)
            sum += (sc[j] = exp(sc[j] - m));
        for (int e = 0; e < hd; e++) {
            double o = 0;
            for (int j = lo; j <= p; j++)
                o += sc[j] / sum * vc[(size_t)j * kvd + g * hd + e];
            out[h * hd + e] = o;
        }
        free(sc);
    }
}

/* One attention call: sequence s adds n[s] tokens at positions p0[s], from
 * rows of qkv (q | k | v, q_stride apart) starting at row tok_start[s];
 * their keys and values go into the host copies kc/vc (as the cache's
 * dtype keeps them) and each output is checked against the reference. */
static void attn_call(const attn_case *c, const int *p0, const int *n, void **dk, void **dv, int cache_len,
                      float **kc, float **vc, bool alone_check)
{
    const int hd = c->hd, qd = c->n_heads * hd, kvd = c->n_kv * hd, S = c->n_seqs, q_stride = qd + 2 * kvd;
    const pb_dtype kvt = KVT;
    int tok_start[7], T = 0;
    for (int s = 0; s < S; s++) {
        tok_start[s] = T;
        T += n[s];
    }
    float *qkv = malloc((size_t)(T ? T : 1) * q_stride * 4);
    fill(qkv, (size_t)T * q_stride, 1.5f);
    float *dqkv = dev_from(qkv, (size_t)T * q_stride * 4), *dout = dev((size_t)T * qd * 4);
    float alibi[16];
    for (int h = 0; h < c->n_heads; h++)
        alibi[h] = -0.5f / (float)(h + 1);
    const float scale = 1.0f / sqrtf((float)hd);
    pb_attn_args a = {.n_seqs = S, .tok_start = tok_start, .pos = p0, .n_tokens = n, .k_cache = dk,
                      .v_cache = dv, .cache_len = cache_len, .kv_dtype = kvt, .q = dqkv, .k = dqkv + qd,
                      .v = dqkv + qd + kvd, .q_stride = q_stride, .kv_stride = q_stride, .out = dout,
                      .n_heads = c->n_heads, .n_kv_heads = c->n_kv, .head_dim = hd, .scale = scale, .alibi = c->alibi ? alibi : NULL,
                      .window = c->window, .softcap = c->softcap};
    OK(BE->ops->attention(BE, &a));
    float *out = malloc((size_t)(T ? T : 1) * qd * 4);
    to_host(out, dout, (size_t)T * qd * 4);
    double *ref = malloc(sizeof(double) * (size_t)qd), dmax[16];
    const bool amx = bf16_attn && kvt == PB_DT_BF16; /* queries and weights rounded to bf16 */
    for (int s = 0; s < S; s++) {
        for (int i = 0; i < n[s]; i++)
            for (int e = 0; e < kvd; e++) {
                const size_t row = (size_t)(tok_start[s] + i) * q_stride, at = (size_t)(p0[s] + i) * kvd + e;
                kc[s][at] = kept(qkv[row + qd + e], kvt);
                vc[s][at] = kept(qkv[row + qd + kvd + e], kvt);
            }
        double vmax = 0;
        for (size_t i = 0; i < (size_t)(p0[s] + n[s]) * kvd; i++)
            vmax = fmax(vmax, fabs(vc[s][i]));
        for (int i = 0; i < n[s]; i++) {
            int tok = tok_start[s] + i;
            attn_ref(c, s, kc[s], vc[s], qkv, q_stride, tok, p0[s] + i, c->alibi ? alibi : NULL, scale, ref, dmax);
            for (int e = 0; e < qd; e++) {
                const double tol = amx ? (2e-5 + 0x1p-8 * (1 + 2 * dmax[e / hd])) * vmax : 2e-5 * vmax;
                CHECK(fabs(out[(size_t)tok * qd + e] - ref[e]) <= tol, "seq %d token %d dim %d: %g vs %g", s,
                      p0[s] + i, e, out[(size_t)tok * qd + e], ref[e]);
            }
        }
    }
    /* batch invariance: each sequence alone (same cache state) gives the same bits */
    if (alone_check)
        for (int s = 0; s < S; s++) {
            if (!n[s])
                continue;
            int ts = 0;
            float *d1 = dev((size_t)n[s] * qd * 4), *o1 = malloc((size_t)n[s] * qd * 4);
            void *kk[1] = {dk[s]}, *vv[1] = {dv[s]};
            pb_attn_args b1 = a;
            b1.n_seqs = 1;
            b1.tok_start = &ts;
            b1.pos = &p0[s];
            b1.n_tokens = &n[s];
            b1.k_cache = kk;
            b1.v_cache = vv;
            b1.q = dqkv + (size_t)tok_start[s] * q_stride;
            b1.k = b1.q + qd;
            b1.v = b1.q + qd + kvd;
            b1.out = d1;
            OK(BE->ops->attention(BE, &b1));
            to_host(o1, d1, (size_t)n[s] * qd * 4);
            CHECK(memcmp(o1, out + (size_t)tok_start[s] * qd, (size_t)n[s] * qd * 4) == 0,
                  "seq %d alone differs from the batch", s);
            rel(d1);
            free(o1);
        }
    rel(dqkv);
    rel(dout);
    free(qkv);
    free(out);
    free(ref);
}

/* The cache layout is the backend's own: the cached tokens of a case are
 * written by one call (a prefill from position 0, itself checked), then the
 * case's new tokens attend over them in a second call. */
static void attn_run(const attn_case *c, bool alone_check)
{
    where = c->name;
    /* a cache length not a multiple of 16: the MQA case reaches its last 14 */
    const int kvd = c->n_kv * c->hd, S = c->n_seqs, max_len = 62;
    const size_t cb = (size_t)BE->ops->kv_bytes(KVT, max_len, c->n_kv, c->hd);
    int total = 0;
    for (int s = 0; s < S; s++)
        total += c->pos[s] + c->ntok[s];
    pb_backend_limits lim = {.max_seqs = S, .max_keys = max_len, .max_heads = c->n_heads, .max_tokens = total,
                             .max_dim = c->n_heads * c->hd + 2 * kvd, .head_dim = c->hd};
    OK(BE->ops->reserve(BE, &lim));
    /* caches start as garbage, as an earlier sequence of the slot left them */
    unsigned char *junk = malloc(cb);
    for (size_t i = 0; i < cb; i++)
        junk[i] = (unsigned char)(rnd() | 0x70);
    float *kc[6], *vc[6];
    void *dk[6], *dv[6];
    for (int s = 0; s < S; s++) {
        kc[s] = calloc((size_t)max_len * kvd, 4);
        vc[s] = calloc((size_t)max_len * kvd, 4);
        dk[s] = dev_from(junk, cb);
        dv[s] = dev_from(junk, cb);
    }
    free(junk);
    const int zero[6] = {0};
    attn_call(c, zero, c->pos, dk, dv, max_len, kc, vc, false);
    attn_call(c, c->pos, c->ntok, dk, dv, max_len, kc, vc, alone_check);
    for (int s = 0; s < S; s++) {
        rel(dk[s]);
        rel(dv[s]);
        free(kc[s]);
        free(vc[s]);
    }
}

static void test_attention(void)
{
    static char name[96]; /* `where` while a case runs */
    const attn_case cases[] = {
        {"MHA prefill", 4, 4, 16, 0, false, 1, {0}, {13}, 0},
        {"GQA mixed prefill/decode", 6, 2, 12, 0, false, 5, {0, 17, 3, 40, 0}, {9, 1, 1, 1, 21}, 0},
        {"MQA mixed", 5, 1, 8, 0, false, 4, {5, 0, 60, 1}, {1, 7, 1, 3}, 0},
        {"sliding window", 4, 2, 10, 6, false, 4, {0, 30, 2, 11}, {15, 1, 1, 4}, 0},
        {"ALiBi", 5, 5, 7, 0, true, 3, {0, 22, 9}, {11, 1, 2}, 0},
        {"chunked prefill at pos > 0, head_dim 1", 3, 3, 1, 0, false, 2, {33, 0}, {17, 5}, 0},
        {"window of 1", 2, 1, 9, 1, false, 2, {4, 0}, {3, 6}, 0},
        {"soft-capped GQA with a window (Gemma 2)", 4, 2, 16, 5, false, 3, {0, 12, 3}, {11, 1, 2}, 0.75f},
    };
    for (KVT = PB_DT_F32; KVT <= PB_DT_BF16; KVT++) { /* each KV cache dtype the backend has */
        if (!(BE->ops->kv_dtypes & (1u << KVT)))
            continue;
        for (unsigned i = 0; i < sizeof cases / sizeof *cases; i++) {
            attn_case c = cases[i];
            snprintf(name, sizeof name, "%s, %s cache", c.name, pb_dtype_name(KVT));
            c.name = name;
            attn_run(&c, true);
        }
    }
}

/* A KV cache of valid elements of KVT in any layout: each 2- or 4-byte
 * element in [0.5, 1) (the f32 cache's words, f16's, bf16's). */
static void *cache_of_halves(size_t bytes)
{
    unsigned char *h = malloc(bytes);
    for (size_t i = 0; i + 1 < bytes; i += 2) {
        uint16_t w = KVT == PB_DT_F32 ? (i % 4 ? 0x3f00 : (uint16_t)rnd())
                     : KVT == PB_DT_F16 ? (uint16_t)(0x3800 | (rnd() & 0x3ff))
                                        : (uint16_t)(0x3f00 | (rnd() & 0x7f));
        memcpy(h + i, &w, 2);
    }
    void *d = dev_from(h, bytes);
    free(h);
    return d;
}

/* Attention with its rotary (pb_backend_attention given a->rope): the bits
 * of the rope op over q's and k's heads, then attention: the outputs, the
 * rotated rows and both caches, for full and partial rotary in both
 * pairings, GQA, a window, a prefill beside a decode step at a later
 * position, each KV cache dtype, and k's heads apart from q's (the rope
 * op's two calls). */
static void test_attn_rope(void)
{
    static char name[112];
    const int nh = 4, nkv = 2, hd = 16, len = 40, T = 6, qd = nh * hd, kvd = nkv * hd;
    int p0[2] = {0, 9}, n[2] = {5, 1}, tok_start[2] = {0, 5};
    for (KVT = PB_DT_F32; KVT <= PB_DT_BF16; KVT++) {
        if (!(BE->ops->kv_dtypes & (1u << KVT)))
            continue;
        for (int c = 0; c < 4; c++) {
            const pb_rope_desc rd = {c % 2 ? PB_ROPE_INTERLEAVED : PB_ROPE_HALF, c < 2 ? hd : 6};
            const int gap = c == 3 ? 8 : 0, stride = qd + gap + 2 * kvd, half = rd.rot_dim / 2;
            snprintf(name, sizeof name, "attention with rotary %d of %d dims, %s pairs, %d apart, %s cache",
                     rd.rot_dim, hd, c % 2 ? "interleaved" : "half", gap, pb_dtype_name(KVT));
            where = name;
            float *qkv = malloc((size_t)T * stride * 4), *cs = malloc((size_t)T * half * 2 * 4);
            fill(qkv, (size_t)T * stride, 1.5f);
            for (int i = 0; i < T * half; i++) {
                const float ang = 0.37f * (float)i + frand();
                cs[2 * i] = cosf(ang);
                cs[2 * i + 1] = sinf(ang);
            }
            float *dcs = dev_from(cs, (size_t)T * half * 2 * 4);
            const size_t cb = (size_t)BE->ops->kv_bytes(KVT, len, nkv, hd);
            const uint64_t seed = rng_state;
            void *ck[2][2], *cv[2][2]; /* [path][sequence] */
            for (int w = 0; w < 2; w++) {
                rng_state = seed; /* the same caches for both paths */
                for (int q = 0; q < 2; q++)
                    ck[w][q] = cache_of_halves(cb), cv[w][q] = cache_of_halves(cb);
            }
            float *dq[2], *dout[2], *out[2], *rows[2];
            for (int w = 0; w < 2; w++) {
                dq[w] = dev_from(qkv, (size_t)T * stride * 4);
                dout[w] = dev((size_t)T * qd * 4);
                pb_attn_args a = {.n_seqs = 2, .tok_start = tok_start, .pos = p0, .n_tokens = n, .k_cache = ck[w],
                                  .v_cache = cv[w], .cache_len = len, .kv_dtype = KVT, .q = dq[w],
                                  .k = dq[w] + qd + gap, .v = dq[w] + qd + gap + kvd, .q_stride = stride,
                                  .kv_stride = stride, .out = dout[w], .n_heads = nh, .n_kv_heads = nkv,
                                  .head_dim = hd, .scale = 0.25f, .window = 7};
                if (w == 0) { /* the rope op, then attention */
                    if (!gap) {
                        OK(BE->ops->rope(BE, dq[w], stride, T, nh + nkv, hd, &rd, dcs));
                    } else {
                        OK(BE->ops->rope(BE, dq[w], stride, T, nh, hd, &rd, dcs));
                        OK(BE->ops->rope(BE, dq[w] + qd + gap, stride, T, nkv, hd, &rd, dcs));
                    }
                    OK(BE->ops->attention(BE, &a));
                } else {
                    a.rope = &rd;
                    a.rope_cs = dcs;
                    OK(pb_backend_attention(BE, &a));
                }
                out[w] = malloc((size_t)T * qd * 4);
                rows[w] = malloc((size_t)T * stride * 4);
                to_host(out[w], dout[w], (size_t)T * qd * 4);
                to_host(rows[w], dq[w], (size_t)T * stride * 4);
            }
            CHECK(memcmp(out[0], out[1], (size_t)T * qd * 4) == 0, "outputs differ from the rope op's, then attention");
            CHECK(memcmp(rows[0], rows[1], (size_t)T * stride * 4) == 0, "the rotated q and k rows differ");
            unsigned char *h0 = malloc(cb), *h1 = malloc(cb);
            for (int q = 0; q < 2; q++)
                for (int kind = 0; kind < 2; kind++) {
                    to_host(h0, kind ? cv[0][q] : ck[0][q], cb);
                    to_host(h1, kind ? cv[1][q] : ck[1][q], cb);
                    CHECK(memcmp(h0, h1, cb) == 0, "sequence %d's %s cache differs", q, kind ? "V" : "K");
                }
            free(h0), free(h1);
            for (int w = 0; w < 2; w++) {
                for (int q = 0; q < 2; q++)
                    rel(ck[w][q]), rel(cv[w][q]);
                rel(dq[w]), rel(dout[w]);
                free(out[w]), free(rows[w]);
            }
            rel(dcs);
            free(qkv), free(cs);
        }
    }
}

/* kv_copy (a shared prompt prefix): a cache of junk that takes the first n
 * positions of a prefilled one attends like it, bit for bit, for new tokens
 * at n (its positions past n are written before any query sees them); with from > 0 (a beam's parent) in two
 * copies, [0, from) then [from, n). */
static void kv_copy_case(int n_heads, int n_kv, int hd, int from, int n)
{
    const int kvd = n_kv * hd, qd = n_heads * hd, q_stride = qd + 2 * kvd, len = 62, T = 5;
    const size_t cb = (size_t)BE->ops->kv_bytes(KVT, len, n_kv, hd);
    unsigned char *junk = malloc(cb);
    for (size_t i = 0; i < cb; i++)
        junk[i] = (unsigned char)(rnd() | 0x70);
    void *sk = dev_from(junk, cb), *sv = dev_from(junk, cb);
    for (size_t i = 0; i < cb; i++)
        junk[i] = (unsigned char)(rnd() | 0x30);
    void *dk = dev_from(junk, cb), *dv = dev_from(junk, cb);
    free(junk);
    float *qkv = malloc((size_t)n * q_stride * 4), *out[2];
    fill(qkv, (size_t)n * q_stride, 1.5f);
    float *dq = dev_from(qkv, (size_t)n * q_stride * 4), *dout = dev((size_t)(n > T ? n : T) * qd * 4);
    int zero = 0, at = n, nt = n;
    void *kk[1] = {sk}, *vv[1] = {sv};
    pb_attn_args a = {.n_seqs = 1, .tok_start = &zero, .pos = &zero, .n_tokens = &nt, .k_cache = kk, .v_cache = vv,
                      .cache_len = len, .kv_dtype = KVT, .q = dq, .k = dq + qd, .v = dq + qd + kvd, .q_stride = q_stride,
                      .kv_stride = q_stride, .out = dout, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd,
                      .scale = 1.0f / sqrtf((float)hd)};
    OK(BE->ops->attention(BE, &a)); /* the prefix, into the source */
    if (from > 0)
        OK(BE->ops->kv_copy(BE, KVT, len, n_kv, hd, dk, dv, sk, sv, 0, from));
    OK(BE->ops->kv_copy(BE, KVT, len, n_kv, hd, dk, dv, sk, sv, from, n));
    float *q2 = malloc((size_t)T * q_stride * 4);
    fill(q2, (size_t)T * q_stride, 1.5f);
    rel(dq);
    dq = dev_from(q2, (size_t)T * q_stride * 4);
    nt = T;
    a.pos = &at;
    a.q = dq;
    a.k = dq + qd;
    a.v = dq + qd + kvd;
    for (int w = 0; w < 2; w++) { /* the same new tokens over the source, then over the copy */
        kk[0] = w ? dk : sk;
        vv[0] = w ? dv : sv;
        OK(BE->ops->attention(BE, &a));
        out[w] = malloc((size_t)T * qd * 4);
        to_host(out[w], dout, (size_t)T * qd * 4);
    }
    CHECK(memcmp(out[0], out[1], (size_t)T * qd * 4) == 0, "%d heads over %d, width %d: the copy of %d positions "
          "(from %d) attends differently", n_heads, n_kv, hd, n, from);
    free(out[0]);
    free(out[1]);
    free(qkv);
    free(q2);
    rel(dq);
    rel(dout);
    rel(sk);
    rel(sv);
    rel(dk);
    rel(dv);
}

static void test_kv_copy(void)
{
    if (!BE->ops->kv_copy)
        return; /* the stage copies the whole caches */
    static const int ns[] = {1, 15, 16, 17, 31, 40, 57};
    for (KVT = PB_DT_F32; KVT <= PB_DT_BF16; KVT++) {
        if (!(BE->ops->kv_dtypes & (1u << KVT)))
            continue;
        where = pb_dtype_name(KVT);
        for (size_t i = 0; i < sizeof ns / sizeof *ns; i++) {
            kv_copy_case(6, 2, 12, 0, ns[i]);
            kv_copy_case(4, 4, 16, 0, ns[i]);
            kv_copy_case(6, 2, 12, ns[i] / 2, ns[i]); /* from inside a panel of 16 keys, or at its start */
            kv_copy_case(4, 4, 16, ns[i] > 16 ? 16 : 0, ns[i]);
        }
    }
}

/* ---- activations, glu, add, select_rows ---- */
static double act_ref(pb_act a, double x)
{
    switch (a) {
    case PB_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case PB_ACT_BLOOM_GELU: return x * 0.5 * (1 + tanh(0.79788456 * x * (1 + 0.044715 * x * x)));
    case PB_ACT_GELU_ERF: return 0.5 * x * (1 + erf(x / sqrt(2)));
    case PB_ACT_RELU: return x > 0 ? x : 0;
    case PB_ACT_SILU: return x / (1 + exp(-x));
    }
    return x;
}

static void test_elementwise(void)
{
    const pb_act acts[] = {PB_ACT_GELU_TANH, PB_ACT_BLOOM_GELU, PB_ACT_GELU_ERF, PB_ACT_RELU, PB_ACT_SILU};
    const int rows = 5, n = 77, ld = 83;
    for (unsigned k = 0; k < 5; k++) {
        where = "act";
        float *x = malloc((size_t)rows * ld * 4), *y = malloc((size_t)rows * ld * 4);
        fill(x, (size_t)rows * ld, 6);
        float *dx = dev_from(x, (size_t)rows * ld * 4);
        OK(BE->ops->act(BE, acts[k], dx, ld, rows, n));
        to_host(y, dx, (size_t)rows * ld * 4);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < ld; i++) {
                size_t at = (size_t)r * ld + i;
                if (i >= n) {
                    CHECK(y[at] == x[at], "act %d: padding changed", (int)acts[k]);
                    continue;
                }
                double ref = act_ref(acts[k], x[at]);
                CHECK(fabs(y[at] - ref) <= 4e-6 * (1 + fabs(ref)), "act %d x=%g: %g vs %g", (int)acts[k], x[at], y[at],
                      ref);
            }
        where = "glu"; /* gu rows 2n apart, or padded (the stage pads rows of 2 KiB multiples) */
        const int ldgu = 2 * n + (k % 2) * 9;
        float *gu = malloc((size_t)rows * ldgu * 4), *o = malloc((size_t)rows * n * 4);
        fill(gu, (size_t)rows * ldgu, 4);
        float *dgu = dev_from(gu, (size_t)rows * ldgu * 4), *dout = dev((size_t)rows * n * 4);
        OK(BE->ops->glu(BE, acts[k], dout, dgu, ldgu, rows, n));
        to_host(o, dout, (size_t)rows * n * 4);
        for (int r = 0; r < rows; r++)
            for (int i = 0; i < n; i++) {
                double g = gu[(size_t)r * ldgu + i], u = gu[(size_t)r * ldgu + n + i];
                double ref = act_ref(acts[k], g) * u;
                CHECK(fabs(o[(size_t)r * n + i] - ref) <= 4e-6 * (1 + fabs(ref)), "glu %d", (int)acts[k]);
            }
        rel(dx);
        rel(dgu);
        rel(dout);
        free(x);
        free(y);
        free(gu);
        free(o);
    }
    where = "add";
    const size_t n2 = 1001;
    float *y0 = malloc(n2 * 4), *x = malloc(n2 * 4), *x2 = malloc(n2 * 4), *got = malloc(n2 * 4);
    fill(y0, n2, 10);
    fill(x, n2, 1);
    fill(x2, n2, 100);
    for (int two = 0; two < 2; two++) {
        float *dy = dev_from(y0, n2 * 4), *dx = dev_from(x, n2 * 4), *dx2 = dev_from(x2, n2 * 4);
        OK(BE->ops->add(BE, dy, dx, two ? dx2 : NULL, n2));
        to_host(got, dy, n2 * 4);
        for (size_t i = 0; i < n2; i++) {
            double ref = (double)y0[i] + x[i] + (two ? x2[i] : 0);
            double tol = 2 * EPS * (fabs(y0[i]) + fabs(x[i]) + (two ? fabs(x2[i]) : 0));
            CHECK(fabs(got[i] - ref) <= tol, "add[%zu] %g vs %g", i, got[i], ref);
        }
        rel(dy);
        rel(dx);
        rel(dx2);
    }
    free(y0);
    free(x);
    free(x2);
    free(got);

    where = "select_rows";
    const int R = 13, W = 21, rows_sel[] = {12, 0, 5, 5, 7};
    float *src = malloc((size_t)R * W * 4), *dst = malloc(5 * (size_t)W * 4);
    fill(src, (size_t)R * W, 1);
    float *ds = dev_from(src, (size_t)R * W * 4), *dd = dev(5 * (size_t)W * 4);
    OK(BE->ops->select_rows(BE, dd, ds, W, rows_sel, 5));
    to_host(dst, dd, 5 * (size_t)W * 4);
    for (int i = 0; i < 5; i++)
        CHECK(memcmp(dst + (size_t)i * W, src + (size_t)rows_sel[i] * W, (size_t)W * 4) == 0, "row %d", i);
    rel(ds);
    rel(dd);

    /* scatter_add: y[rows[i]] += w[i] * x[i], product rounded then added (exact in f32 terms) */
    where = "scatter_add";
    const int sc_rows[] = {7, 2, 11};
    const float sc_w[] = {0.25f, -1.5f, 0.7f};
    float *y = malloc((size_t)R * W * 4), *xs = malloc(3 * (size_t)W * 4), *yo = malloc((size_t)R * W * 4);
    fill(y, (size_t)R * W, 3);
    fill(xs, 3 * (size_t)W, 4);
    float *dy = dev_from(y, (size_t)R * W * 4), *dxs = dev_from(xs, 3 * (size_t)W * 4);
    OK(BE->ops->scatter_add(BE, dy, dxs, W, sc_rows, sc_w, 3));
    to_host(yo, dy, (size_t)R * W * 4);
    for (int r = 0; r < R; r++)
        for (int j = 0; j < W; j++) {
            float want = y[(size_t)r * W + j];
            for (int i = 0; i < 3; i++)
                if (sc_rows[i] == r) {
                    volatile float p = sc_w[i] * xs[(size_t)i * W + j];
                    want += p;
                }
            CHECK(memcmp(&want, &yo[(size_t)r * W + j], 4) == 0, "row %d col %d: %g vs %g", r, j, yo[(size_t)r * W + j],
                  want);
        }
    rel(dy);
    rel(dxs);
    free(y);
    free(xs);
    free(yo);
    free(src);
    free(dst);
}

/* ---- Gemma: scale, softcap, head_norm ---- */

static void test_gemma(void)
{
    where = "scale, softcap";
    const size_t n = 301;
    float *x = malloc(n * 4), *y = malloc(n * 4);
    fill(x, n, 40);
    float *dx = dev_from(x, n * 4);
    OK(BE->ops->scale(BE, dx, n, 6.9375f));
    to_host(y, dx, n * 4);
    for (size_t i = 0; i < n; i++)
        CHECK(y[i] == x[i] * 6.9375f, "scale: element %zu", i);
    OK(BE->ops->softcap(BE, dx, n, 30.0f));
    to_host(x, dx, n * 4);
    for (size_t i = 0; i < n; i++) {
        double r = tanh((double)y[i] / 30.0) * 30.0;
        CHECK(fabs(x[i] - r) <= 4e-6 * (1 + fabs(r)), "softcap: element %zu: %g vs %g", i, x[i], r);
    }
    rel(dx);
    free(x);
    free(y);

    where = "head_norm";
    const int T = 7, nh = 3, hd = 24, ld = 5 * hd + 3; /* heads 0..2 of rows with more after them */
    float *h = malloc((size_t)T * ld * 4), *g = malloc((size_t)T * ld * 4), w[24];
    fill(h, (size_t)T * ld, 3);
    fill(w, (size_t)hd, 1);
    for (int i = 0; i < hd; i++)
        w[i] += 1.0f; /* Gemma's 1 + weight */
    float *dh = dev_from(h, (size_t)T * ld * 4), *dw = dev_from(w, sizeof w);
    OK(BE->ops->head_norm(BE, dh, ld, T, nh, hd, dw, 1e-6f));
    to_host(g, dh, (size_t)T * ld * 4);
    for (int t = 0; t < T; t++) {
        for (int k = 0; k < nh; k++) {
            const float *v = h + (size_t)t * ld + (size_t)k * hd;
            double ss = 0;
            for (int i = 0; i < hd; i++)
                ss += (double)v[i] * v[i];
            double inv = 1.0 / sqrt(ss / hd + 1e-6);
            for (int i = 0; i < hd; i++) {
                double r = v[i] * inv * w[i];
                float got = g[(size_t)t * ld + (size_t)k * hd + i];
                CHECK(fabs(got - r) <= 1e-5 * fabs(w[i] * v[i] * inv) + 1e-6, "row %d head %d dim %d: %g vs %g",
                      t, k, i, got, r);
            }
        }
        for (int i = nh * hd; i < ld; i++)
            CHECK(g[(size_t)t * ld + i] == h[(size_t)t * ld + i], "row %d: element %d past the heads changed", t, i);
    }
    rel(dh);
    rel(dw);
    free(h);
    free(g);
}

/* a weight of n_out x n_in random values kept as dt, with a random bias */
static pb_weight *put_random(int n_out, int n_in, pb_dtype dt, float scale)
{
    float *w = malloc((size_t)n_out * n_in * 4), *b = malloc((size_t)n_out * 4);
    fill(w, (size_t)n_out * n_in, scale);
    fill(b, (size_t)n_out, 0.5f);
    void *enc = encode(w, (size_t)n_out * n_in, dt);
    pb_wpart part = {.data = enc, .dtype = dt, .rows = n_out, .name = "test"};
    pb_linear_src src = {.n_out = n_out, .n_in = n_in, .n_parts = 1, .parts = &part, .bias = b};
    pb_weight *W = NULL;
    OK(BE->ops->put_linear(BE, &src, dt, &W));
    free(w), free(b), free(enc);
    return W;
}

/* rows [M, N] of backend buffers d1, d2 (row stride ld) the same bits: a
 * row that differs fails as differing from `what` */
static void same_rows(const float *d1, const float *d2, int M, int N, int ld, const char *what)
{
    float *y1 = malloc((size_t)M * ld * 4), *y2 = malloc((size_t)M * ld * 4);
    to_host(y1, d1, (size_t)M * ld * 4);
    to_host(y2, d2, (size_t)M * ld * 4);
    for (int i = 0; i < M; i++)
        CHECK(memcmp(y1 + (size_t)i * ld, y2 + (size_t)i * ld, (size_t)N * 4) == 0, "row %d differs from %s", i, what);
    free(y1);
    free(y2);
}

/* glu_linear (where the backend has it): the bits of glu into a buffer, then
 * linear of that buffer, for bf16 and f32 weights (f32 takes the exact
 * products even where the bf16 ones are on), with a bias, row counts that
 * make several conversion items, and SiLU and GELU; then widths a multiple
 * of 8 in bf16 and f16, where CUDA's products take the activation as they
 * load x: 1 and 13 rows (the skinny kernel's loads), 40 (its rows rounded
 * first) and 130 (the pipelined kernel's rounds) */
static void test_glu_linear(void)
{
    if (!BE->ops->glu_linear)
        return;
    static const int Ms[] = {1, 13, 40}, Ms8[] = {1, 13, 40, 130};
    for (int c = 0; c < 14; c++) {
        const bool w8 = c >= 6;
        const int M = w8 ? Ms8[c % 4] : Ms[c % 3], n = w8 ? 64 + 8 * (c % 2) : 45 + c, N = w8 ? 40 : 37;
        const int ldgu = 2 * n + (c % 2) * 16; /* gu rows padded or not */
        const pb_dtype dt = w8 ? (c % 3 ? PB_DT_BF16 : PB_DT_F16) : c < 3 ? PB_DT_BF16 : PB_DT_F32;
        const pb_act act = (w8 ? c / 2 : c) % 2 ? PB_ACT_GELU_TANH : PB_ACT_SILU;
        char buf[96];
        snprintf(buf, sizeof buf, "glu_linear M=%d n=%d %s act %d", M, n, pb_dtype_name(dt), (int)act);
        where = buf;
        pb_weight *W = put_random(N, n, dt, 0.5f);
        float *gu = malloc((size_t)M * ldgu * 4);
        fill(gu, (size_t)M * ldgu, 3);
        float *dgu = dev_from(gu, (size_t)M * ldgu * 4), *dmid = dev((size_t)M * n * 4);
        float *dy1 = dev((size_t)M * (N + 3) * 4), *dy2 = dev((size_t)M * (N + 3) * 4);
        OK(BE->ops->glu(BE, act, dmid, dgu, ldgu, M, n));
        OK(BE->ops->linear(BE, dmid, n, M, W, dy1, N + 3));
        OK(BE->ops->glu_linear(BE, act, dmid, dgu, ldgu, M, n, W, dy2, N + 3));
        same_rows(dy1, dy2, M, N, N + 3, "glu, then linear");
        BE->ops->weight_free(BE, W);
        rel(dgu), rel(dmid), rel(dy1), rel(dy2);
        free(gu);
    }
}

/* pb_backend_mlp_glu (the backend's mlp_glu where it has one): the bits of
 * linear into gu, then glu_linear, for bf16 and f32 weights, n a multiple
 * of 16 or not, odd and even K, gu rows padded or not, 1 .. 70 rows (under
 * bf16-amx, from 17 rows with bf16 weights and n % 16 == 0 the CPU fuses
 * the activation into the first product: checked to be the form taken;
 * tests/cpu/kern-test runs it with the rows in chunks of 32),
 * SiLU, GELU and ReLU; gu and mid start as garbage */
static void test_mlp_glu(void)
{
    static const int Ms[] = {1, 13, 17, 40, 70};
    static const int ns[] = {48, 64, 45};
    static const int Ks[] = {37, 96, 200};
    static const pb_act acts[] = {PB_ACT_SILU, PB_ACT_GELU_TANH, PB_ACT_RELU};
    for (int c = 0; c < 10; c++) {
        const int M = Ms[c % 5], n = ns[c % 3], K = Ks[(c / 2) % 3], N = 29, ldgu = 2 * n + (c % 2) * 16;
        const pb_dtype dt = c < 8 ? PB_DT_BF16 : PB_DT_F32;
        const pb_act act = acts[c % 3];
        char buf[112];
        snprintf(buf, sizeof buf, "mlp_glu M=%d n=%d K=%d ldgu=%d %s act %d", M, n, K, ldgu, pb_dtype_name(dt),
                 (int)act);
        where = buf;
        pb_weight *GU = put_random(2 * n, K, dt, 0.5f), *D = put_random(N, n, dt, 0.5f);
        float *x = malloc((size_t)M * (K + 5) * 4), *junk = malloc((size_t)M * (ldgu + n) * 4);
        fill(x, (size_t)M * (K + 5), 2);
        fill(junk, (size_t)M * (ldgu + n), 1e30f);
        float *dx = dev_from(x, (size_t)M * (K + 5) * 4), *dgu = dev_from(junk, (size_t)M * ldgu * 4);
        float *dmid = dev_from(junk, (size_t)M * n * 4);
        float *dy1 = dev((size_t)M * (N + 3) * 4), *dy2 = dev((size_t)M * (N + 3) * 4);
        OK(BE->ops->linear(BE, dx, K + 5, M, GU, dgu, ldgu));
        OK(pb_backend_glu_linear(BE, act, dmid, dgu, ldgu, M, n, D, dy1, N + 3));
        OK(BE->ops->upload(BE, dgu, junk, (size_t)M * ldgu * 4));
        OK(BE->ops->upload(BE, dmid, junk, (size_t)M * n * 4));
        OK(pb_backend_mlp_glu(BE, act, dx, K + 5, M, GU, dgu, ldgu, dmid, n, D, dy2, N + 3));
        same_rows(dy1, dy2, M, N, N + 3, "linear, then glu_linear");
        if (amx_products) /* (the CPU only) */
            CHECK(pb_kmat_glu_fits(GU->impl, D->impl, M, (size_t)M * n * 4) ==
                      (M > 16 && dt == PB_DT_BF16 && n % 16 == 0),
                  "the fused form %s", M > 16 && dt == PB_DT_BF16 && n % 16 == 0 ? "not taken" : "taken");
        BE->ops->weight_free(BE, GU);
        BE->ops->weight_free(BE, D);
        rel(dx), rel(dgu), rel(dmid), rel(dy1), rel(dy2);
        free(x), free(junk);
    }
}

/* ---- argmax: the host sampler's greedy pick ---- */
static void test_argmax(void)
{
    where = "argmax";
    if (!BE->ops->argmax)
        return;
    const int rows = 9, n = 1037, ld = n + 3;
    float *x = malloc((size_t)rows * ld * 4);
    fill(x, (size_t)rows * ld, 1.0f);
    /* row 1: a tie, the first wins; row 2: NaN before the max; row 3: all -inf (0); row 4: NaN and -inf only;
     * row 5: the max masked (for masked rows) and a tie after it; row 6: +inf twice; row 7: the max at the end */
    x[1 * ld + 700] = x[1 * ld + 300] = 5.0f;
    x[2 * ld + 10] = NAN;
    x[2 * ld + 500] = 4.0f;
    for (int i = 0; i < n; i++)
        x[3 * ld + i] = -INFINITY;
    for (int i = 0; i < n; i++)
        x[4 * ld + i] = i % 2 ? NAN : -INFINITY;
    x[5 * ld + 17] = 9.0f;
    x[5 * ld + 900] = x[5 * ld + 901] = 8.0f;
    x[6 * ld + 5] = x[6 * ld + 6] = INFINITY;
    x[7 * ld + n - 1] = 7.0f;
    const int32_t mask[] = {17, 1036, 3};
    const uint8_t mrows[] = {0, 0, 0, 1, 0, 1, 0, 1, 1};
    float *dx = dev_from(x, (size_t)rows * ld * 4);
    for (int with = 0; with < 2; with++) {
        int32_t ids[9];
        OK(BE->ops->argmax(BE, dx, rows, n, ld, mask, 3, with ? mrows : NULL, ids));
        for (int r = 0; r < rows; r++) {
            float best = -INFINITY;
            int32_t at = 0;
            for (int i = 0; i < n; i++) {
                const float v = x[(size_t)r * ld + i];
                const bool m = with && mrows[r] && (i == 17 || i == 1036 || i == 3);
                if (!m && v > best) {
                    best = v;
                    at = i;
                }
            }
            CHECK(ids[r] == at, "row %d%s: %d, expected %d", r, with ? " (masked)" : "", ids[r], at);
        }
    }
    rel(dx);
    free(x);
}

/* ---- sample: the host sampler's id, row by row ---- */
/* the device's picks for rows of x against pb_sample() on each; returns how many differ from the largest */
static int sample_rows(const float *x, int rows, int n, int ld, const pb_sample_row *row, const int32_t *mask,
                       int n_mask)
{
    int32_t *ids = malloc((size_t)rows * sizeof(int32_t));
    void *scratch = malloc(pb_sample_scratch_bytes(n));
    float *m = malloc((size_t)n * sizeof(float));
    float *dx = dev_from(x, (size_t)rows * ld * sizeof(float));
    OK(BE->ops->sample(BE, dx, rows, n, ld, row, mask, n_mask, ids));
    int distinct = 0;
    for (int r = 0; r < rows; r++) {
        const pb_sample_row *q = &row[r];
        memcpy(m, x + (size_t)r * ld, (size_t)n * sizeof(float));
        for (int e = 0; q->masked && e < n_mask; e++)
            if (mask[e] < n)
                m[mask[e]] = -INFINITY;
        const pb_sample_params sp = {.temperature = q->temperature, .top_k = q->top_k, .top_p = q->top_p,
                                     .min_p = q->min_p, .repetition_penalty = q->repetition_penalty,
                                     .frequency_penalty = q->frequency_penalty,
                                     .presence_penalty = q->presence_penalty, .prompt_len = q->prompt_len};
        const pb_rng_key key = {q->seed, q->record, q->step};
        const int32_t want = pb_sample(m, n, &sp, q->hist, (size_t)q->n_hist, &key, scratch);
        CHECK(ids[r] == want, "vocab %d row %d (t %g k %d p %g min_p %.9g rep %g, %d ids of history%s): %d, the "
              "host sampler %d", n, r, (double)q->temperature, (int)q->top_k, (double)q->top_p, (double)q->min_p,
              (double)q->repetition_penalty, (int)q->n_hist, q->masked ? ", masked" : "", (int)ids[r], (int)want);
        distinct += want != pb_argmax_first(m, n);
    }
    rel(dx);
    free(ids), free(scratch), free(m);
    return distinct;
}

/* The penalty reaches each entry of a history, its first and its last: rows whose history holds the row's
 * largest logit's id once, at its end (a decode step's last token) or its start, the rest other ids, with a
 * strong penalty, greedy or sampled, so that the pick must move off that id (session 47: a history read one
 * short passed the cases above, whose histories repeat their ids). */
static void test_sample_history_end(void)
{
    enum { N = 1037, ROWS = 8, H = 9 };
    float *x = malloc((size_t)ROWS * N * sizeof(float));
    int32_t hist[ROWS][H];
    pb_sample_row row[ROWS];
    memset(row, 0, sizeof row);
    for (int r = 0; r < ROWS; r++) {
        float *l = x + (size_t)r * N;
        for (int i = 0; i < N; i++)
            l[i] = 2.0f * frand();
        const int peak = 100 + 37 * r;
        l[peak] = 12.0f;
        l[peak + 1] = 9.0f;
        for (int h = 0; h < H; h++)
            hist[r][h] = 500 + 3 * h; /* ids other than the peak's, once each */
        hist[r][r % 2 ? 0 : H - 1] = peak;
        pb_sample_row *q = &row[r];
        q->temperature = r % 4 < 2 ? 0.0f : 0.3f;
        q->top_p = 1.0f;
        q->repetition_penalty = 6.0f; /* 12 / 6 = 2 < 9: the peak falls below the next id */
        q->seed = 11;
        q->record = (uint64_t)r;
        q->hist = hist[r];
        q->n_hist = H;
    }
    const int moved = sample_rows(x, ROWS, N, N, row, NULL, 0);
    CHECK(moved == ROWS, "only %d of %d rows moved off a penalized peak", moved, ROWS);
    free(x);
}

static void test_sample(void)
{
    where = "sample";
    if (!BE->ops->sample)
        return;
    static const int sizes[] = {1, 7, 1037, 4099, 70000};
    static const float temps[] = {0.0f, 1.0f, 0.7f, 1.9f};
    const int32_t mask[] = {17, 2, 3};
    int checked = 0, distinct = 0;
    for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
        const int n = sizes[si], ld = n + 5, rows = n > 5000 ? 12 : 40;
        float *x = malloc((size_t)rows * ld * sizeof(float));
        int32_t hist[64];
        pb_sample_row *row = calloc((size_t)rows, sizeof *row);
        for (int h = 0; h < 64; h++) /* ids in and out of range, repeated */
            hist[h] = h % 9 == 8 ? n + h : h % 7 == 6 ? -1 : (int32_t)(rnd() % (uint64_t)(n < 40 ? n : 40));
        for (int r = 0; r < rows; r++) {
            float *l = x + (size_t)r * ld;
            /* peaked rows (a real model's shape: a few likely ids) and flat ones, some of them quantized to ties */
            const float sc = r % 3 == 0 ? 12.0f : r % 3 == 1 ? 3.0f : 0.25f;
            for (int i = 0; i < n; i++) {
                const float u = frand();
                l[i] = sc * u * fabsf(u) * (r % 5 == 4 ? 1.0f : fabsf(frand()));
                if (r % 4 == 3)
                    l[i] = roundf(l[i] * 2.0f) / 2.0f;
            }
            if (r == 5)
                for (int i = 0; i < n; i++)
                    l[i] = i % 2 ? NAN : -INFINITY;
            if (r == 6 && n > 3)
                l[3] = l[n - 1] = INFINITY;
            if (r == 7 && n > 10)
                l[10] = NAN;
            pb_sample_row *q = &row[r];
            q->temperature = temps[r % 4];
            q->top_k = r % 6 == 1 ? 1 : r % 6 == 2 ? 40 : r % 6 == 3 ? n / 2 + 1 : r % 6 == 4 ? n + 3 : 0;
            q->top_p = r % 7 == 1 ? 0.9f : r % 7 == 2 ? 0.5f : r % 7 == 3 ? 0.999f : r % 7 == 4 ? 0.05f : 1.0f;
            q->min_p = r % 5 == 2 ? 0.05f : r % 5 == 3 ? 0.5f : 0.0f;
            q->repetition_penalty = r % 8 == 2 ? 1.3f : r % 8 == 5 ? 0.8f : 1.0f;
            /* the frequency and presence penalties over the history after prompt_len (with and without the
             * repetition penalty, greedy and sampled) */
            q->frequency_penalty = r % 9 == 1 ? 0.7f : r % 9 == 4 ? -1.1f : r % 9 == 5 ? 2.0f : 0.0f;
            q->presence_penalty = r % 10 == 1 ? 1.5f : r % 10 == 4 ? -0.6f : r % 10 == 7 ? 0.3f : 0.0f;
            q->prompt_len = r % 4 == 0 ? 0 : r % 4 == 1 ? 5 : r % 4 == 2 ? 20 : 100;
            q->seed = 42 + (uint64_t)r * 0x100000001ull;
            q->record = (uint64_t)r * 977 + ((uint64_t)si << 33);
            q->step = (uint64_t)r % 11;
            q->hist = hist;
            q->n_hist = r % 3 == 0 ? 0 : 8 + r % 50;
            q->masked = r % 4 == 1;
        }
        distinct += sample_rows(x, rows, n, n + 5, row, mask, 3);
        checked += rows;
        free(x), free(row);
    }
    /* the draws are not all the greedy pick (the cases sample) */
    CHECK(distinct > checked / 4, "only %d of %d rows drew other than the largest", distinct, checked);
    /* the weights' bits: logits {0, d}, min_p at the host's weight of id 1 (kept) or a float above it (dropped),
     * so a weight an ulp off changes which ids may be drawn (each row draws id 1 with probability >= 0.18) */
    enum { K = 96 };
    float x[2 * K * 2];
    pb_sample_row row[2 * K];
    memset(row, 0, sizeof row);
    for (int k = 0; k < K; k++) {
        const float d = -1.5f * (float)(k + 1) / (float)K + 1e-3f * frand(), t = k % 3 ? 0.8f + 0.01f * (float)k : 1.0f;
        const float e1 = pb_sample_exp(t != 1.0f ? d / t : d);
        for (int h = 0; h < 2; h++) {
            pb_sample_row *q = &row[2 * k + h];
            x[2 * (2 * k + h)] = 0.0f;
            x[2 * (2 * k + h) + 1] = d;
            q->temperature = t;
            q->top_p = 1.0f;
            q->min_p = h ? nextafterf(e1, 1.0f) : e1;
            q->repetition_penalty = 1.0f;
            q->seed = 7;
            q->record = (uint64_t)k;
        }
    }
    sample_rows(x, 2 * K, 2, 2, row, mask, 0);
    test_sample_history_end();
}

/* host_run: every item once, each on a worker in [0, threads) */
typedef struct host_items { int *hits, *worker; } host_items;
static void host_item(void *ctx, int item, int worker)
{
    host_items *h = ctx;
    h->hits[item]++;
    h->worker[item] = worker;
}

static void test_host_run(void)
{
    where = "host_run";
    if (!BE->ops->host_run)
        return;
    enum { N = 1000 };
    int hits[N] = {0}, worker[N];
    host_items h = {hits, worker};
    for (int round = 0; round < 3; round++)
        BE->ops->host_run(BE, round == 2 ? 1 : N, host_item, &h);
    for (int i = 0; i < N; i++) {
        CHECK(hits[i] == (i == 0 ? 3 : 2), "item %d ran %d times", i, hits[i]);
        CHECK(worker[i] >= 0 && worker[i] < BE->threads, "item %d on worker %d of %d", i, worker[i], BE->threads);
    }
}

static void run_all(void)
{
    pb_backend_limits lim = {.max_seqs = 8, .max_keys = 128, .max_heads = 16, .max_tokens = 64, .max_dim = 512,
                             .head_dim = 64};
    OK(BE->ops->reserve(BE, &lim));
    test_memory();
    test_linear();
    test_gather();
    test_norm();
    test_rope();
    test_attention();
    test_attn_rope();
    test_kv_copy();
    test_elementwise();
    test_glu_linear();
    test_mlp_glu();
    test_gemma();
    test_argmax();
    test_sample();
    test_host_run();
}

/* Linear outputs of every CPU ISA path must be the same bits (kernels.h). */
static float *isa_probe(void)
{
    float *y = NULL;
    linear_case(97, 203, 11, PB_DT_BF16, PB_DT_BF16, 1, false, false, true, &y);
    return y;
}

/* The same linear with the bf16 products (--matmul-precision bf16): also the
 * same bits on every path (vdpbf16ps or its emulation, kernels.h) */
static float *bf16_probe(void)
{
    OK(pb_mmprec_select(BE->ops, PB_MMPREC_BF16));
    bf16_products = true;
    test_glu_linear();
    test_mlp_glu();
    float *y = isa_probe();
    bf16_products = false;
    OK(pb_mmprec_select(BE->ops, PB_MMPREC_F32));
    return y;
}

/* Norm, add_norm, activations, glu and rotary of every CPU ISA path must be
 * the same bits too: their outputs back to back, *len floats. */
static float *rows_probe(size_t *len)
{
    const int rows = 5, n = 83, hd = 22;
    const size_t rn = (size_t)rows * n;
    float *out = malloc(17 * rn * 4), /* 2 norms, add_norm, 5 x (glu, act), 2 x rope of 2 rn */ *x = malloc(rn * 4), *a = malloc(rn * 4), *w = malloc(n * 4), *b = malloc(n * 4);
    float *gu = malloc(2 * rn * 4), *cs = malloc((size_t)rows * hd * 4);
    fill(x, rn, 3);
    fill(a, rn, 2);
    fill(w, (size_t)n, 1);
    fill(b, (size_t)n, 1);
    fill(gu, 2 * rn, 6);
    for (int i = 0; i < rows * hd / 2; i++) {
        cs[2 * i] = cosf(0.3f * (float)i);
        cs[2 * i + 1] = sinf(0.3f * (float)i);
    }
    float *dx = dev_from(x, rn * 4), *da = dev_from(a, rn * 4), *dw = dev_from(w, (size_t)n * 4),
          *db = dev_from(b, (size_t)n * 4), *dgu = dev_from(gu, 2 * rn * 4), *dcs = dev_from(cs, (size_t)rows * hd * 4),
          *dy = dev(2 * rn * 4);
    size_t at = 0;
    for (int k = 0; k < 2; k++) {
        OK(BE->ops->norm(BE, k ? PB_NORM_RMSNORM : PB_NORM_LAYERNORM, dy, dx, rows, n, dw, k ? NULL : db, 1e-5f));
        to_host(out + at, dy, rn * 4), at += rn;
    }
    if (BE->ops->add_norm) {
        float *dx2 = dev_from(x, rn * 4);
        OK(BE->ops->add_norm(BE, PB_NORM_RMSNORM, dy, dx2, da, NULL, rows, n, dw, NULL, 1e-6f));
        to_host(out + at, dy, rn * 4), at += rn;
        rel(dx2);
    }
    const pb_act acts[] = {PB_ACT_GELU_TANH, PB_ACT_BLOOM_GELU, PB_ACT_GELU_ERF, PB_ACT_RELU, PB_ACT_SILU};
    for (int k = 0; k < 5; k++) {
        OK(BE->ops->glu(BE, acts[k], dy, dgu, 2 * n, rows, n));
        to_host(out + at, dy, rn * 4), at += rn;
        OK(BE->ops->copy(BE, dy, dgu, 2 * rn * 4));
        OK(BE->ops->act(BE, acts[k], dy, n, 2 * rows, n));
        to_host(out + at, dy, rn * 4), at += rn;
    }
    for (int style = 0; style < 2; style++) {
        pb_rope_desc rd = {style ? PB_ROPE_INTERLEAVED : PB_ROPE_HALF, hd};
        OK(BE->ops->copy(BE, dy, dgu, 2 * rn * 4));
        OK(BE->ops->rope(BE, dy, 2 * n, rows, 7, hd, &rd, dcs)); /* 7 heads of 22 in rows of 166 */
        to_host(out + at, dy, 2 * rn * 4), at += 2 * rn;
    }
    rel(dx);
    rel(da);
    rel(dw);
    rel(db);
    rel(dgu);
    rel(dcs);
    rel(dy);
    free(x);
    free(a);
    free(w);
    free(b);
    free(gu);
    free(cs);
    *len = at;
    return out;
}

/* attention over random q, k, v rows (n floats into host, then dqkv) for the sequences' tokens as given */
static void attend_random(pb_attn_args *a, float *dqkv, float *host, size_t n, const int *tok_start, const int *pos,
                          const int *n_tokens)
{
    fill(host, n, 1.5f);
    OK(BE->ops->upload(BE, dqkv, host, n * 4));
    a->tok_start = tok_start;
    a->pos = pos;
    a->n_tokens = n_tokens;
    OK(BE->ops->attention(BE, a));
}

/* S sequences, sequence s with n[s] tokens at positions pos[s] .. after a first call that wrote positions
 * 0 .. pos[s] - 1 (its outputs not kept), H query heads over KV heads of width hd, with a kvdt cache, ALiBi
 * slopes, a softcap or a window as asked: the second call's outputs, (sum of n) * H * hd floats */
static float *attn_forms_run(int S, const int *n, const int *pos, int H, int KV, int hd, pb_dtype kvdt, bool alibi,
                             float softcap, int window)
{
    enum { MAXS = 4 };
    int T = 0, Tp = 0, len = 1, tok0[MAXS], tokp[MAXS], zero_pos[MAXS] = {0};
    for (int s = 0; s < S; s++) {
        tok0[s] = T;
        tokp[s] = Tp;
        T += n[s];
        Tp += pos[s];
        len = pos[s] + n[s] + 3 > len ? pos[s] + n[s] + 3 : len;
    }
    const int qs = (H + 2 * KV) * hd, most = T > Tp ? T : Tp;
    const size_t nout = (size_t)T * H * hd;
    pb_backend_limits lim = {.max_seqs = S, .max_keys = len, .max_heads = H, .max_tokens = most, .max_dim = qs,
                             .head_dim = hd};
    OK(BE->ops->reserve(BE, &lim));
    float *qkv = malloc((size_t)(T + Tp) * qs * 4), *out = malloc(nout * 4), slopes[16];
    for (int h = 0; h < H && h < 16; h++)
        slopes[h] = -0.5f / (float)(h + 1);
    const size_t cb = (size_t)BE->ops->kv_bytes(kvdt, len, KV, hd);
    void *zero = calloc(1, cb), *dk[MAXS], *dv[MAXS];
    for (int s = 0; s < S; s++) {
        dk[s] = dev_from(zero, cb);
        dv[s] = dev_from(zero, cb);
    }
    float *dqkv = dev((size_t)most * qs * 4), *dout = dev((size_t)most * H * hd * 4);
    pb_attn_args a = {.n_seqs = S, .k_cache = dk, .v_cache = dv, .cache_len = len, .kv_dtype = kvdt, .q = dqkv,
                      .k = dqkv + H * hd, .v = dqkv + (H + KV) * hd, .q_stride = qs, .kv_stride = qs, .out = dout,
                      .n_heads = H, .n_kv_heads = KV, .head_dim = hd, .scale = 1.0f / sqrtf((float)hd),
                      .alibi = alibi ? slopes : NULL, .window = window, .softcap = softcap};
    // the earlier positions (qkv rows of their own: an upload may still read the first ones), then the call
    if (Tp)
        attend_random(&a, dqkv, qkv, (size_t)Tp * qs, tokp, zero_pos, pos);
    attend_random(&a, dqkv, qkv + (size_t)Tp * qs, (size_t)T * qs, tok0, pos, n);
    to_host(out, dout, nout * 4);
    for (int s = 0; s < S; s++) {
        rel(dk[s]);
        rel(dv[s]);
    }
    rel(dqkv);
    rel(dout);
    free(zero);
    free(qkv);
    return out;
}

/* One sequence of T tokens attending from position 0 (keys 1..T) */
static float *attn_forms_probe(int T, int H, int KV, int hd, pb_dtype kvdt, bool alibi, float softcap, int window)
{
    const int zero = 0;
    return attn_forms_run(1, &T, &zero, H, KV, hd, kvdt, alibi, softcap, window);
}

/* One prefill of 20 tokens, 4 heads over 2 KV heads of 32, into a fresh bf16
 * cache: the outputs (ATTN_PROBE_FLOATS) */
#define ATTN_PROBE_FLOATS (20 * 4 * 32)
static float *attn_probe(void)
{
    return attn_forms_probe(20, 4, 2, 32, PB_DT_BF16, false, 0, 0);
}

/* CUDA attention's forms give the same bits: a block a query with a warp's keys' scores each or scores a key
 * a thread (pb_cuda_attn_scores), a block a chunk (pb_cuda_attn_force), and the grouped form (a block a KV
 * head's queries of a tile of tokens: pb_cuda_attn_group); chunks of 8 keys or 300 (more than the 256 keys
 * whose scores a block computes at once), over head widths that fill 1, 2, 4 or 8 dims a lane wholly or in
 * part, groups of 1-12 query heads a KV head (more than a grouped block takes, and not a power of 2), each
 * cache type, ALiBi, a softcap, a window, and batches of sequences at later positions (tiles end where a
 * sequence does and where a window's first key starts to move) */
static void test_cuda_attn_forms(void)
{
    static const struct {
        int S, n[3], pos[3], H, KV, hd;
        pb_dtype kv;
        bool alibi;
        float softcap;
        int window, chunk;
    } c[] = {
        {1, {20}, {0}, 4, 2, 16, PB_DT_BF16, false, 0, 0, 8},
        {1, {20}, {0}, 4, 2, 40, PB_DT_F32, true, 0, 0, 8},
        {1, {20}, {0}, 4, 2, 12, PB_DT_F16, false, 0, 0, 8},
        {1, {14}, {0}, 2, 1, 36, PB_DT_BF16, false, 0, 0, 8},
        {1, {18}, {0}, 2, 1, 64, PB_DT_F16, false, 30.0f, 0, 8},
        {1, {18}, {0}, 4, 4, 80, PB_DT_BF16, false, 0, 5, 8},
        {1, {12}, {0}, 2, 1, 128, PB_DT_F32, false, 0, 0, 8},
        {1, {10}, {0}, 2, 2, 200, PB_DT_BF16, true, 0, 0, 8},
        {1, {300}, {0}, 2, 1, 16, PB_DT_BF16, false, 0, 0, 300},
        {1, {270}, {0}, 1, 1, 64, PB_DT_F32, false, 0, 0, 300},
        {3, {9, 1, 13}, {0, 20, 5}, 12, 1, 16, PB_DT_BF16, true, 0, 0, 8},
        {3, {9, 1, 13}, {0, 20, 5}, 6, 2, 64, PB_DT_F16, false, 20.0f, 0, 8},
        {3, {17, 2, 11}, {3, 30, 0}, 3, 3, 48, PB_DT_BF16, false, 0, 0, 8},
        {2, {21, 1}, {0, 40}, 8, 8, 64, PB_DT_F32, false, 0, 12, 8},
        {2, {7, 9}, {2, 0}, 8, 2, 128, PB_DT_BF16, false, 0, 0, 300},
        {2, {7, 3}, {2, 1}, 4, 1, 256, PB_DT_F32, true, 0, 0, 8},
    };
    static const struct {
        int lane, grp, split;
        const char *name;
    } forms[] = {{0, 0, 0, "a block a query, a warp's scores"},
                 {1, 0, 0, "a block a query, scores a key a thread"},
                 {0, 2, 0, "the grouped form"},
                 {0, 0, 1, "a block a chunk"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        static char wb[128];
        snprintf(wb, sizeof wb, "cuda attention forms: %d seq, heads %d/%d x %d, %s cache%s%s%s, chunk %d", c[i].S,
                 c[i].H, c[i].KV, c[i].hd, pb_dtype_name(c[i].kv), c[i].alibi ? ", alibi" : "",
                 c[i].softcap > 0 ? ", softcap" : "", c[i].window ? ", window" : "", c[i].chunk);
        float *ref = NULL;
        int T = 0;
        for (int s = 0; s < c[i].S; s++)
            T += c[i].n[s];
        const size_t nout = (size_t)T * c[i].H * c[i].hd;
        for (size_t f = 0; f < sizeof forms / sizeof forms[0]; f++) {
            pb_cuda_attn_scores(forms[f].lane);
            pb_cuda_attn_group(forms[f].grp);
            pb_cuda_attn_force(c[i].chunk, forms[f].split);
            rng_state = 77;
            float *o = attn_forms_run(c[i].S, c[i].n, c[i].pos, c[i].H, c[i].KV, c[i].hd, c[i].kv, c[i].alibi,
                                      c[i].softcap, c[i].window);
            where = wb;
            if (!ref)
                ref = o;
            else {
                CHECK(memcmp(ref, o, nout * 4) == 0, "%s: other bits than %s", forms[f].name, forms[0].name);
                free(o);
            }
        }
        free(ref);
    }
    pb_cuda_attn_scores(-1);
    pb_cuda_attn_group(-1);
    pb_cuda_attn_force(0, -1);
}

/* --matmul-precision bf16-amx where the CPU has the tile unit: every linear
 * case within the bounds of the bf16 products, batch-invariant; not the
 * exact bits. Elsewhere: refused. */
/* --matmul-precision bf16: every attention case (a bf16 cache's queries
 * and weights rounded, within the bounds above), and the probe's outputs,
 * which the caller holds to the same bits on every path and not the exact
 * ones */
static float *bf16_attn_probe(void)
{
    OK(pb_mmprec_select(BE->ops, PB_MMPREC_BF16));
    bf16_attn = true;
    test_attention();
    bf16_attn = false;
    rng_state = 99;
    float *a = attn_probe();
    OK(pb_mmprec_select(BE->ops, PB_MMPREC_F32));
    return a;
}

static void amx_linear(int threads)
{
    where = "bf16-amx";
    if (pb_mmprec_select(BE->ops, PB_MMPREC_BF16_AMX) != PB_OK) {
        CHECK(!pb_cpu_amx_available(), "bf16-amx refused on a CPU with AMX-BF16: %s", pb_last_error());
        printf("cpu (bf16-amx): refused, this CPU has no AMX-BF16\n");
        return;
    }
    CHECK(pb_cpu_amx_available(), "bf16-amx accepted on a CPU without AMX-BF16");
    int before = failures;
    bf16_products = amx_products = true;
    test_linear();
    test_glu_linear();
    test_mlp_glu();
    bf16_attn = true;
    test_attention();
    bf16_attn = false;
    rng_state = 99;
    float *y = isa_probe(), *a = attn_probe();
    bf16_products = amx_products = false;
    OK(pb_mmprec_select(BE->ops, PB_MMPREC_F32));
    rng_state = 99;
    float *ye = isa_probe(), *ae = attn_probe();
    CHECK(memcmp(y, ye, (size_t)11 * 97 * 4) != 0, "the AMX products give the exact bits");
    where = "bf16-amx";
    CHECK(memcmp(a, ae, ATTN_PROBE_FLOATS * 4) != 0, "attention over a bf16 cache gives the exact bits under bf16-amx");
    free(y);
    free(ye);
    free(a);
    free(ae);
    printf("cpu (bf16-amx, %d thread%s): %s\n", threads, threads == 1 ? "" : "s", failures == before ? "ok" : "FAILED");
}

static int run_kind(const char *kind, bool only)
{
    /* threads matter to the CPU only */
    const int max_threads = strcmp(kind, "cpu") == 0 ? 3 : 1;
    for (int threads = 1; threads <= max_threads; threads += 2) {
        pb_backend_opts o = {.threads = threads};
        pb_status st = pb_backend_create(kind, &o, &BE);
        if (st != PB_OK) {
            printf("%s: not available here (%s)%s\n", kind, pb_last_error(), only ? "" : "; skipped");
            return only ? 77 : 0;
        }
        if (strcmp(kind, "cpu") == 0) {
            float *first = NULL, *first_rows = NULL, *first_b = NULL, *first_ab = NULL;
            size_t first_rlen = 0;
            for (int isa = 0; isa < PB_ISA_COUNT; isa++) {
                /* avx512bf16 is the avx512 path with the bf16 products, which bf16_probe covers */
                if (isa == PB_ISA_AVX512BF16 || pb_cpu_isa_set((pb_cpu_isa)isa) != PB_OK)
                    continue;
                int before = failures;
                rng_state = 0x1234567;
                run_all();
                rng_state = 99;
                float *y = isa_probe();
                size_t rlen = 0;
                float *ry = rows_probe(&rlen);
                float *yb = bf16_probe(), *ab = bf16_attn_probe();
                rng_state = 99;
                float *ae = attn_probe();
                where = pb_cpu_isa_name((pb_cpu_isa)isa);
                CHECK(memcmp(y, yb, (size_t)11 * 97 * 4) != 0, "the bf16 products give the exact bits");
                CHECK(memcmp(ab, ae, ATTN_PROBE_FLOATS * 4) != 0,
                      "attention over a bf16 cache gives the exact bits with the bf16 products");
                free(ae);
                if (!first_ab)
                    first_ab = ab;
                else {
                    CHECK(memcmp(first_ab, ab, ATTN_PROBE_FLOATS * 4) == 0,
                          "attention with the bf16 products differs from the first ISA path's bits");
                    free(ab);
                }
                if (!first) {
                    first = y;
                    first_rows = ry;
                    first_rlen = rlen;
                    first_b = yb;
                } else {
                    CHECK(memcmp(first_b, yb, (size_t)11 * 97 * 4) == 0,
                          "linear with the bf16 products differs from the first ISA path's bits");
                    free(yb);
                    CHECK(memcmp(first, y, (size_t)11 * 97 * 4) == 0, "linear differs from the first ISA path's bits");
                    CHECK(rlen == first_rlen && memcmp(first_rows, ry, rlen * 4) == 0,
                          "norm/act/glu/rope differ from the first ISA path's bits");
                    free(y);
                    free(ry);
                }
                printf("cpu (%s, %d thread%s): %s\n", pb_cpu_isa_name((pb_cpu_isa)isa), threads,
                       threads == 1 ? "" : "s", failures == before ? "ok" : "FAILED");
            }
            free(first);
            free(first_rows);
            free(first_b);
            free(first_ab);
            pb_cpu_isa_set(pb_cpu_isa_best());
            amx_linear(threads);
        } else if (strcmp(kind, "cuda") == 0) {
            /* the default: bf16 / f16 weights on the tensor cores; then the exact products (--matmul-precision
             * f32), which must give other bits */
            int before = failures;
            tc_products = true;
            run_all();
            rng_state = 99;
            float *yt = isa_probe();
            OK(pb_mmprec_select(BE->ops, PB_MMPREC_F32));
            tc_products = false;
            where = "cuda exact";
            test_linear();
            test_glu_linear();
            test_mlp_glu();
            rng_state = 99;
            float *ye = isa_probe();
            CHECK(memcmp(yt, ye, (size_t)11 * 97 * 4) != 0, "the tensor cores give the exact bits");
            free(yt);
            free(ye);
            CHECK(pb_mmprec_select(BE->ops, PB_MMPREC_BF16_AMX) != PB_OK, "cuda accepts bf16-amx");
            /* attention's chunks of 8 keys (20 keys: 3 chunks) merged in one block, or a block a chunk
             * (flash-decoding): the same bits */
            float *ap[2];
            for (int f = 0; f < 2; f++) {
                pb_cuda_attn_force(8, f);
                rng_state = 99;
                ap[f] = attn_probe();
            }
            pb_cuda_attn_force(0, -1);
            test_cuda_attn_forms();
            where = "cuda attention chunks";
            CHECK(memcmp(ap[0], ap[1], ATTN_PROBE_FLOATS * 4) == 0, "a block a chunk differs from a block a query");
            free(ap[0]);
            free(ap[1]);
            OK(pb_mmprec_select(BE->ops, PB_MMPREC_BF16));
            printf("%s (%d threads; tensor cores, then exact): %s\n", kind, threads,
                   failures == before ? "ok" : "FAILED");
        } else {
            int before = failures;
            run_all();
            printf("%s (%d threads): %s\n", kind, threads, failures == before ? "ok" : "FAILED");
        }
        pb_backend_free(BE);
        BE = NULL;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const char *const all[] = {"cpu", "cuda"};
    const char *const *kinds = argc > 1 ? (const char *const *)(argv + 1) : all;
    int n = argc > 1 ? argc - 1 : 2;
    for (int i = 0; i < n; i++) {
        int rc = run_kind(kinds[i], n == 1);
        if (rc == 77)
            return 77;
    }
    if (failures) {
        printf("%d check%s failed\n", failures, failures == 1 ? "" : "s");
        return 1;
    }
    return 0;
}
