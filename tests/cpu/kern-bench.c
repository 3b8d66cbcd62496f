/* Microbenchmark of the CPU kernels (not a test): decode-shaped and
 * prefill-shaped matmuls on the active ISA path beside cblas_sgemm on the same
 * shapes, and the machine's memory read bandwidth measured in the same run
 * (several threads, each several streams of 32-byte loads).
 *   kern-bench [threads] [seconds per measurement] [shape name filter]
 * (the filter matches a matmul shape's name, "step", "rows", "attention", or
 * one attention case as "attention NAME DTYPE", e.g. "SmolLM2 prefill 512
 * (9x3x64) BF16")
 * With 1 thread, times are the thread's CPU time; run with
 * OPENBLAS_NUM_THREADS=1 then so that sgemm runs in the calling thread too.
 * Weights rotate over copies totalling at least 96 MB and 4x the last-level
 * cache (sysconf's L3 size) so that decode reads come from memory, not that
 * cache; the bandwidth pass reads as much. Prints one line per measurement.
 * "rows": the norm/rotary/SwiGLU row kernels of one decoder layer beside the
 * scalar loops they replaced (interleaved, best of 3, on the calling thread).
 * PB_ATTN_SPLIT=-1 runs attention's decode calls in the item form only, 0
 * (the default, as in use) in the split form where it pays, KEYS in the
 * split form with scoring blocks of KEYS keys wherever it fits (kern_attn.c). */
#include "config.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cpu/kernels.h"
#include "cpu/pool.h"

/* wall clock; with one thread, that thread's CPU time (steadier on a shared
 * machine: time spent descheduled does not count) */
static clockid_t clock_id = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec t;
    clock_gettime(clock_id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* activation buffers as the stage's arena has them: 64-byte aligned (an
 * AMX C tile's 64-byte rows each one line; malloc's large blocks start 16
 * bytes into a page, which split every row stored in two and cost the
 * AMX prefill product 25-30% here) */
static void *falloc(size_t bytes)
{
    void *p = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!p) {
        fprintf(stderr, "kern-bench: out of memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)(*s >> 8) / 8388608.0f - 1.0f;
}

/* ---- memory read bandwidth ---- */

typedef struct bw_job {
    const char *buf;
    size_t bytes; /* per thread */
    double sink;
} bw_job;

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx2"))) static double read_avx2(const char *p, size_t n)
{
    /* 4 streams, 2 loads of 32 bytes each per step */
    const size_t q = n / 4 / 64 * 64;
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
    for (size_t i = 0; i < q; i += 64) {
        a0 = _mm256_or_si256(a0, _mm256_load_si256((const __m256i *)(p + i)));
        a1 = _mm256_or_si256(a1, _mm256_load_si256((const __m256i *)(p + i + 32)));
        a2 = _mm256_or_si256(a2, _mm256_load_si256((const __m256i *)(p + q + i)));
        a3 = _mm256_or_si256(a3, _mm256_load_si256((const __m256i *)(p + q + i + 32)));
        a4 = _mm256_or_si256(a4, _mm256_load_si256((const __m256i *)(p + 2 * q + i)));
        a5 = _mm256_or_si256(a5, _mm256_load_si256((const __m256i *)(p + 2 * q + i + 32)));
        a6 = _mm256_or_si256(a6, _mm256_load_si256((const __m256i *)(p + 3 * q + i)));
        a7 = _mm256_or_si256(a7, _mm256_load_si256((const __m256i *)(p + 3 * q + i + 32)));
    }
    a0 = _mm256_or_si256(_mm256_or_si256(_mm256_or_si256(a0, a1), _mm256_or_si256(a2, a3)),
                         _mm256_or_si256(_mm256_or_si256(a4, a5), _mm256_or_si256(a6, a7)));
    return (double)_mm256_extract_epi32(a0, 0);
}
#endif

static double read_plain(const char *p, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        s |= v;
    }
    return (double)s;
}

static void bw_item(void *ctx, int item, int worker)
{
    (void)worker;
    bw_job *j = ctx;
    const char *p = j->buf + (size_t)item * j->bytes;
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx2")) {
        j->sink += read_avx2(p, j->bytes);
        return;
    }
#endif
    j->sink += read_plain(p, j->bytes);
}

/* bytes that do not fit in the last-level cache: 4x its size, at least 96 MB
 * (machines with L3s of 8 to 480 MiB; sysconf says 0 where it cannot tell) */
static size_t cold_bytes(void)
{
    const long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    const size_t floor = (size_t)96 << 20;
    return l3 > 0 && (size_t)l3 * 4 > floor ? (size_t)l3 * 4 : floor;
}

static double mem_bw(pb_pool *pool, int threads, double secs)
{
    const size_t total = cold_bytes() / 256 * 256; /* short passes catch a quiet moment */
    char *buf = aligned_alloc(64, total);
    memset(buf, 1, total);
    bw_job j = {buf, total / (size_t)threads, 0};
    double best = 0, t_end = now() + secs;
    do {
        double t0 = now();
        pb_pool_run(pool, threads, bw_item, &j);
        double gbs = (double)total / (now() - t0) / 1e9;
        best = gbs > best ? gbs : best;
    } while (now() < t_end);
    free(buf);
    return best;
}

/* ---- matmul ---- */

typedef struct shape {
    const char *name;
    int n_out, n_in;
    pb_dtype dt;
} shape;

static void bench_shape(pb_kctx *k, const shape *s, int threads, double secs, double bw)
{
    const size_t n = (size_t)s->n_out * s->n_in;
    /* q8 (--weights-dtype int8) packs a bf16 source; its bytes are the packed ones */
    const pb_dtype sdt = s->dt == PB_DT_Q8 ? PB_DT_BF16 : s->dt;
    const size_t wbytes = s->dt == PB_DT_Q8 || s->dt == PB_DT_F8_E4M3 ? (size_t)pb_kmat_bytes(s->dt, s->n_out, s->n_in)
                                                                     : n * (s->dt == PB_DT_F32 ? 4 : 2);
    const int copies = (int)(cold_bytes() / wbytes) + 1; /* small matrices: many copies */
    unsigned seed = 1;
    float *w32 = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        w32[i] = frand(&seed) * 0.05f;
    void *src = w32;
    uint16_t *h = NULL;
    /* an FP8 checkpoint's matrix: e4m3 bytes (no NaN) and a scale per 128 x 128 block */
    float *f8s = calloc((size_t)(s->n_out + 127) / 128 * ((size_t)(s->n_in + 127) / 128), sizeof(float));
    for (size_t i = 0; i < (size_t)(s->n_out + 127) / 128 * ((size_t)(s->n_in + 127) / 128); i++)
        f8s[i] = 1e-3f;
    if (sdt == PB_DT_F8_E4M3) {
        unsigned char *q = malloc(n);
        for (size_t i = 0; i < n; i++) {
            q[i] = (unsigned char)(frand(&seed) * 255.0f + 128.0f);
            q[i] = (q[i] & 0x7f) == 0x7f ? 0 : q[i];
        }
        src = h = (uint16_t *)(void *)q;
    } else if (sdt != PB_DT_F32) {
        h = malloc(n * 2);
        for (size_t i = 0; i < n; i++)
            h[i] = sdt == PB_DT_BF16 ? pb_f32_to_bf16(w32[i]) : pb_f32_to_f16(w32[i]);
        src = h;
    }
    pb_kmat **m = malloc((size_t)copies * sizeof *m);
    float **wf = malloc((size_t)copies * sizeof *wf);
    pb_kmat_src ks = {.data = src, .dtype = sdt, .scale = f8s, .scale_dtype = PB_DT_F32, .block_rows = 128,
                      .block_cols = 128};
    double t0 = now();
    for (int c = 0; c < copies; c++)
        if (pb_kmat_pack(&ks, s->n_out, s->n_in, s->dt, &m[c]) != PB_OK)
            exit(1);
    const double pack_s = (now() - t0) / copies;
    t0 = now();
    char *cp = malloc(wbytes);
    memcpy(cp, src, wbytes);
    const double copy_s = now() - t0;
    volatile char sink = cp[wbytes / 2];
    (void)sink;
    free(cp);
    printf("%-22s pack %.0f MB/s (memcpy to fresh memory %.0f MB/s)\n", s->name, (double)wbytes / pack_s / 1e6,
           (double)wbytes / copy_s / 1e6);
    const int Ms[] = {1, 8, 16, 32, 64, 512};
    float *x = falloc((size_t)512 * s->n_in * sizeof(float));
    float *y = falloc((size_t)512 * s->n_out * sizeof(float));
    for (size_t i = 0; i < (size_t)512 * s->n_in; i++)
        x[i] = frand(&seed);
    /* sgemm reads f32 weights; copies as well */
    for (int c = 0; c < copies; c++) {
        wf[c] = malloc(n * sizeof(float));
        memcpy(wf[c], w32, n * sizeof(float));
    }
    for (size_t mi = 0; mi < sizeof Ms / sizeof Ms[0]; mi++) {
        const int M = Ms[mi];
        const double flop = 2.0 * M * (double)n;
        double best = 1e30, best_blas = 1e30;
        int it = 0;
        double t_end = now() + secs;
        do {
            double a = now();
            pb_kmat_mul(k, x, s->n_in, M, m[it % copies], NULL, y, s->n_out);
            double b = now() - a;
            best = b < best ? b : best;
            it++;
        } while (now() < t_end || it < 3);
        it = 0;
        t_end = now() + secs;
        do {
            double a = now();
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, s->n_out, s->n_in, 1.0f, x, s->n_in,
                        wf[it % copies], s->n_in, 0.0f, y, s->n_out);
            double b = now() - a;
            best_blas = b < best_blas ? b : best_blas;
            it++;
        } while (now() < t_end || it < 3);
        const double gbs = (double)wbytes / best / 1e9;
        printf("%-22s M=%-4d kern %7.2f GB/s %7.1f GFLOP/s (%3.0f%% of read bw) | sgemm(f32 W) %7.2f GB/s %7.1f "
               "GFLOP/s | kern/sgemm %.2fx\n",
               s->name, M, gbs, flop / best / 1e9, 100.0 * gbs / bw, (double)n * 4 / best_blas / 1e9,
               flop / best_blas / 1e9, best_blas / best);
    }
    for (int c = 0; c < copies; c++) {
        pb_kmat_free(m[c]);
        free(wf[c]);
    }
    free(m), free(wf);
    free(w32), free(h), free(f8s), free(x), free(y);
    (void)threads;
}

/* ---- attention ---- */

static int cmp_double(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static pb_pool *evict_pool; /* main's */

/* read cold_bytes() of other memory on the pool's threads (mem_bw's pass:
 * the threads are then spinning for the next job, not asleep, as after a
 * layer's matmuls): what the caches held is gone */
static void evict(void)
{
    static bw_job j;
    if (!j.buf) {
        const int threads = pb_pool_threads(evict_pool);
        const size_t total = cold_bytes() / 256 * 256;
        char *buf = aligned_alloc(64, total);
        if (!buf)
            exit(1);
        memset(buf, 1, total);
        j = (bw_job){buf, total / (size_t)threads, 0};
    }
    pb_pool_run(evict_pool, pb_pool_threads(evict_pool), bw_item, &j);
}

/* n_seqs sequences with ctx keys each already cached; one call adds
 * n_new tokens to every sequence. Prints time and the KV cache read rate. */
static void bench_attn(pb_kctx *k, const char *only, const char *name, int n_seqs, int ctx, int n_new, int n_heads,
                       int n_kv, int hd, pb_dtype kv_dt, double secs)
{
    const int L = ctx + n_new, qd = n_heads * hd, kvd = n_kv * hd, T = n_seqs * n_new;
    char label[96];
    snprintf(label, sizeof label, "attention %s %s", name, pb_dtype_name(kv_dt));
    if (only && !strstr("attention", only) && !strstr(label, only))
        return;
    unsigned seed = 7;
    void **kc = malloc((size_t)n_seqs * sizeof *kc), **vc = malloc((size_t)n_seqs * sizeof *vc);
    int *tok = malloc((size_t)n_seqs * sizeof(int)), *pos = malloc((size_t)n_seqs * sizeof(int)),
        *nt = malloc((size_t)n_seqs * sizeof(int));
    for (int s = 0; s < n_seqs; s++) {
        const size_t nc = pb_kattn_cache_elems(kv_dt, L, n_kv, hd); /* cached keys: any values */
        kc[s] = malloc(nc * pb_dtype_size(kv_dt));
        vc[s] = malloc(nc * pb_dtype_size(kv_dt));
        for (size_t i = 0; i < nc; i++)
            if (kv_dt == PB_DT_F16) {
                ((uint16_t *)kc[s])[i] = pb_f32_to_f16(frand(&seed));
                ((uint16_t *)vc[s])[i] = pb_f32_to_f16(frand(&seed));
            } else if (kv_dt == PB_DT_BF16) {
                ((uint16_t *)kc[s])[i] = pb_f32_to_bf16(frand(&seed));
                ((uint16_t *)vc[s])[i] = pb_f32_to_bf16(frand(&seed));
            } else
                ((float *)kc[s])[i] = frand(&seed), ((float *)vc[s])[i] = frand(&seed);
        tok[s] = s * n_new, pos[s] = ctx, nt[s] = n_new;
    }
    float *q = falloc((size_t)T * qd * sizeof(float)), *kk = falloc((size_t)T * kvd * sizeof(float)),
          *vv = falloc((size_t)T * kvd * sizeof(float)), *o = falloc((size_t)T * qd * sizeof(float));
    for (size_t i = 0; i < (size_t)T * qd; i++)
        q[i] = frand(&seed);
    for (size_t i = 0; i < (size_t)T * kvd; i++)
        kk[i] = frand(&seed), vv[i] = frand(&seed);
    if (pb_kctx_reserve(k, T > n_seqs ? T : n_seqs, 1, L, n_heads, hd) != PB_OK)
        exit(1);
    pb_kattn_args a = {.n_seqs = n_seqs, .tok_start = tok, .pos = pos, .n_tokens = nt, .k_cache = kc, .v_cache = vc,
                       .cache_len = L, .kv_dtype = kv_dt, .q = q, .k = kk, .v = vv, .q_stride = qd, .kv_stride = kvd,
                       .out = o, .n_heads = n_heads, .n_kv_heads = n_kv, .head_dim = hd, .scale = 0.125f};
    /* warm: the cache as the last call left it (in the last-level cache
     * where it fits); cold: after reading cold_bytes() of other memory, as a
     * decode step finds it after a layer's weights streamed past */
    double best = 1e30, cold[64];
    int n_cold = 0;
    for (int warm = 1; warm >= 0; warm--) {
        const double t_end = now() + secs / 2;
        int it = 0;
        do {
            if (!warm)
                evict();
            double t0 = now();
            if (pb_kattn_run(k, &a) != PB_OK)
                exit(1);
            double t = now() - t0;
            if (warm)
                best = t < best ? t : best;
            else
                cold[n_cold++] = t;
            it++;
        } while ((now() < t_end || it < 3) && n_cold < 64);
    }
    qsort(cold, (size_t)n_cold, sizeof cold[0], cmp_double);
    const double med = cold[n_cold / 2];
    /* keys each query sees: ctx + i + 1 for token i of the new ones */
    const double keys = (double)n_seqs * ((double)n_new * ctx + (double)n_new * (n_new + 1) / 2);
    const double bytes = (double)n_seqs * L * kvd * 2 * (double)pb_dtype_size(kv_dt);
    printf("attention %-26s %s cache %8.3f ms  KV %6.2f GB/s  %6.1f GFLOP/s | cold (median) %8.3f ms  KV %6.2f GB/s\n",
           name, pb_dtype_name(kv_dt), best * 1e3, bytes / best / 1e9, keys * n_heads * hd * 4 / best / 1e9,
           med * 1e3, bytes / med / 1e9);
    for (int s = 0; s < n_seqs; s++)
        free(kc[s]), free(vc[s]);
    free(kc), free(vc), free(tok), free(pos), free(nt), free(q), free(kk), free(vv), free(o);
}

/* ---- row kernels: the non-matmul work of one TinyLlama-1.1B layer ---- */

/* the loops the CPU backend had before the row kernels (scalar, RMSNorm
 * summed in double, libm expf; add and norm in two passes) */
static void rows_scalar(float *x, const float *a, float *h, const float *w, float *qk, const float *cs, const float *gu,
                        float *mid, int M, int H, int NI, int nhk, int hd)
{
    for (int r = 0; r < M; r++) {
        float *xr = x + (size_t)r * H, *hr = h + (size_t)r * H;
        for (int pass = 0; pass < 2; pass++) {
            if (pass)
                for (int i = 0; i < H; i++)
                    xr[i] += a[(size_t)r * H + i];
            double ss = 0;
            for (int i = 0; i < H; i++)
                ss += (double)xr[i] * xr[i];
            const float inv = (float)(1.0 / sqrt(ss / H + 1e-5));
            for (int i = 0; i < H; i++)
                hr[i] = w[i] * (xr[i] * inv);
        }
        for (int hh = 0; hh < nhk; hh++) {
            float *v = qk + (size_t)r * nhk * hd + (size_t)hh * hd;
            for (int i = 0; i < hd / 2; i++) {
                const float c = cs[2 * i], s = cs[2 * i + 1], p = v[i], q = v[i + hd / 2];
                v[i] = p * c - q * s;
                v[i + hd / 2] = q * c + p * s;
            }
        }
        const float *g = gu + (size_t)r * 2 * NI, *u = g + NI;
        for (int i = 0; i < NI; i++)
            mid[(size_t)r * NI + i] = g[i] / (1.0f + expf(-g[i])) * u[i];
    }
}

static void rows_kernels(float *x, const float *a, float *h, const float *w, float *qk, const float *cs,
                         const float *gu, float *mid, int M, int H, int NI, int nhk, int hd)
{
    for (int r = 0; r < M; r++) {
        float *xr = x + (size_t)r * H, *hr = h + (size_t)r * H;
        pb_krow_norm(true, hr, xr, H, w, NULL, 1e-5f);
        for (int i = 0; i < H; i++) /* as the backend's add_norm: the add on the row in cache */
            xr[i] += a[(size_t)r * H + i];
        pb_krow_norm(true, hr, xr, H, w, NULL, 1e-5f);
        for (int hh = 0; hh < nhk; hh++)
            pb_krow_rope(qk + (size_t)r * nhk * hd + (size_t)hh * hd, hd / 2, false, cs);
        pb_krow_act(PB_KACT_SILU, mid + (size_t)r * NI, gu + (size_t)r * 2 * NI, gu + (size_t)r * 2 * NI + NI, NI);
    }
}

static void bench_rows(int M, double secs)
{
    const int H = 2048, NI = 5632, nhk = 36, hd = 64;
    unsigned seed = 7;
    float *x = falloc((size_t)M * H * 4), *a = falloc((size_t)M * H * 4), *h = falloc((size_t)M * H * 4);
    float *w = falloc((size_t)H * 4), *qk = falloc((size_t)M * nhk * hd * 4), *cs = falloc((size_t)hd * 4);
    float *gu = falloc((size_t)M * 2 * NI * 4), *mid = falloc((size_t)M * NI * 4);
    for (size_t i = 0; i < (size_t)M * H; i++) {
        x[i] = frand(&seed);
        a[i] = 1e-3f * frand(&seed);
    }
    for (int i = 0; i < H; i++)
        w[i] = 1.0f + 0.1f * frand(&seed);
    for (size_t i = 0; i < (size_t)M * nhk * hd; i++)
        qk[i] = frand(&seed);
    for (int i = 0; i < hd / 2; i++) {
        cs[2 * i] = cosf(0.1f * (float)i);
        cs[2 * i + 1] = sinf(0.1f * (float)i);
    }
    for (size_t i = 0; i < (size_t)M * 2 * NI; i++)
        gu[i] = 4.0f * frand(&seed);
    double best[2] = {1e30, 1e30};
    for (int round = 0; round < 3; round++) /* interleaved: scalar, kernels, scalar, ... */
        for (int kind = 0; kind < 2; kind++) {
            int reps = 0;
            const double t0 = now();
            double t;
            do {
                (kind ? rows_kernels : rows_scalar)(x, a, h, w, qk, cs, gu, mid, M, H, NI, nhk, hd);
                reps++;
                t = now() - t0;
            } while (t < secs / 3);
            if (t / reps < best[kind])
                best[kind] = t / reps;
        }
    printf("row kernels, TinyLlama layer (2 RMSNorm 2048, rope 36x64, SwiGLU 5632), M=%-3d: "
           "scalar (before) %8.1f us, row kernels %8.1f us (%.1fx); x 22 layers: %.2f -> %.2f ms\n",
           M, best[0] * 1e6, best[1] * 1e6, best[0] / best[1], 22 * best[0] * 1e3, 22 * best[1] * 1e3);
    free(x);
    free(a);
    free(h);
    free(w);
    free(qk);
    free(cs);
    free(gu);
    free(mid);
}

/* ---- a decode step's matmuls at batch 1 ---- */

/* A model's decode step: its layers' products and the head, each its own
 * matrix, one after another as a decode step calls them: what the per-call
 * start and end cost beside one long stream (the memory rate just
 * measured). */
typedef struct step_model {
    const char *name;
    pb_dtype dt;
    int layers, shapes[4][2], vocab, hidden; /* shapes: a layer's four products */
} step_model;

static const step_model step_models[] = {
    /* qkv 960x576, o 576x576, gate|up 3072x576, down 576x1536; the 49152x576 head */
    {"SmolLM2-135M", PB_DT_BF16, 30, {{960, 576}, {576, 576}, {3072, 576}, {576, 1536}}, 49152, 576},
    /* c_attn 2304x768, c_proj 768x768, c_fc 3072x768, mlp c_proj 768x3072; the tied 50257x768 head */
    {"GPT-2-124M", PB_DT_F32, 12, {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}}, 50257, 768},
    {"GPT-2-124M", PB_DT_F16, 12, {{2304, 768}, {768, 768}, {3072, 768}, {768, 3072}}, 50257, 768},
    /* q|k|v 2560x2048 (32 heads over 4 KV heads of 64), o 2048x2048, gate|up 11264x2048, down 2048x5632; the
     * untied 32000x2048 head: 2.2 GB a step, where no cache holds a layer */
    {"TinyLlama-1.1B", PB_DT_BF16, 22, {{2560, 2048}, {2048, 2048}, {11264, 2048}, {2048, 5632}}, 32000, 2048},
};

static void bench_step(pb_kctx *k, const step_model *sm, double secs, double bw)
{
    const int n_mat = sm->layers * 4 + 1, esz = (int)pb_dtype_size(sm->dt);
    pb_kmat **m = calloc((size_t)n_mat, sizeof *m);
    size_t bytes = 0, big = (size_t)sm->vocab * sm->hidden, wide = 0;
    unsigned seed = 3;
    for (int i = 0; i < 4; i++) {
        const size_t e = (size_t)sm->shapes[i][0] * sm->shapes[i][1];
        big = e > big ? e : big;
        wide = (size_t)sm->shapes[i][1] > wide ? (size_t)sm->shapes[i][1] : wide;
    }
    void *src = malloc(big * (size_t)esz);
    for (size_t i = 0; i < big; i++) {
        const float v = 0.05f * frand(&seed);
        if (sm->dt == PB_DT_F32)
            ((float *)src)[i] = v;
        else
            ((uint16_t *)src)[i] = sm->dt == PB_DT_BF16 ? pb_f32_to_bf16(v) : pb_f32_to_f16(v);
    }
    for (int i = 0; i < n_mat; i++) {
        const bool head = i == n_mat - 1;
        const int n = head ? sm->vocab : sm->shapes[i % 4][0];
        const int kk = head ? sm->hidden : sm->shapes[i % 4][1];
        pb_kmat_src ks = {.data = src, .dtype = sm->dt};
        if (pb_kmat_pack(&ks, n, kk, sm->dt, &m[i]) != PB_OK)
            exit(1);
        bytes += (size_t)n * kk * (size_t)esz;
    }
    float *x = falloc(wide * 4), *y = falloc((size_t)sm->vocab * 4);
    for (size_t i = 0; i < wide; i++)
        x[i] = frand(&seed);
    double best = 1e30, sum = 0, t_end = now() + secs;
    int it = 0;
    do {
        const double t0 = now();
        for (int i = 0; i < n_mat; i++)
            pb_kmat_mul(k, x, (int)wide, 1, m[i], NULL, y, sm->vocab);
        const double t = now() - t0;
        best = t < best ? t : best;
        sum += t;
        it++;
    } while (now() < t_end || it < 3);
    /* the best step beside the memory rate's best pass; the mean, what a
     * run of many steps sees on a busy machine */
    printf("decode step, %s matmuls at M=1 (%d calls, %.0f MB %s): %.2f ms, %.2f GB/s (%.0f%% of read bw); "
           "mean %.2f ms\n", sm->name, n_mat, (double)bytes / 1e6, pb_dtype_name(sm->dt), best * 1e3,
           (double)bytes / best / 1e9, 100.0 * (double)bytes / best / 1e9 / bw, sum / it * 1e3);
    for (int i = 0; i < n_mat; i++)
        pb_kmat_free(m[i]);
    free(m), free(src), free(x), free(y);
}

int main(int argc, char **argv)
{
    const int threads = argc > 1 ? atoi(argv[1]) : 2;
    const double secs = argc > 2 ? atof(argv[2]) : 1.0;
    pb_pool *pool;
    pb_kctx *k;
    if (threads < 1 || pb_pool_create(threads, &pool) != PB_OK || pb_kctx_create(pool, &k) != PB_OK)
        return 1;
    if (threads == 1)
        clock_id = CLOCK_THREAD_CPUTIME_ID;
    /* PB_ATTN_SPLIT=-1|0|keys: attention's split form never, where it pays (as in use), or in every decode call */
    if (getenv("PB_ATTN_SPLIT"))
        pb_kattn_set_split(atoi(getenv("PB_ATTN_SPLIT")));
    /* PB_MATMUL_PRECISION=f32|bf16|bf16-amx: the products (--matmul-precision) */
    const char *prec = getenv("PB_MATMUL_PRECISION");
    if (prec && !strcmp(prec, "bf16")) {
        pb_cpu_set_bf16_products(true);
    } else if (prec && !strcmp(prec, "bf16-amx")) {
        if (pb_cpu_set_amx(true) != PB_OK)
            return 1;
    } else if (prec && *prec && strcmp(prec, "f32")) {
        fprintf(stderr, "kern-bench: PB_MATMUL_PRECISION=%s is not f32, bf16 or bf16-amx\n", prec);
        return 1;
    }
    printf("kern-bench: %d threads, ISA path %s (best %s), products %s\n", threads,
           pb_cpu_isa_name(pb_cpu_isa_active()), pb_cpu_isa_name(pb_cpu_isa_best()),
           pb_cpu_amx() ? "bf16 on AMX" : pb_cpu_bf16_products() ? "bf16" : "exact");
    const double bw = mem_bw(pool, threads, secs);
    evict_pool = pool;
    if (threads == 1)
        printf("(times are CPU time of the one thread)\n");
    printf("memory read bandwidth: %.2f GB/s (%d threads x 4 streams, 32-byte loads, %.0f MB, best pass)\n", bw, threads,
           (double)cold_bytes() / 1e6);
    static const shape shapes[] = {
        {"5632x2048 bf16 (up)", 5632, 2048, PB_DT_BF16},
        {"2048x5632 bf16 (down)", 2048, 5632, PB_DT_BF16},
        {"3072x768 f32", 3072, 768, PB_DT_F32},
        {"768x3072 f32", 768, 3072, PB_DT_F32},
        /* GPT-2-124M's other two products and its tied head */
        {"2304x768 f32 (gpt2 qkv)", 2304, 768, PB_DT_F32},
        {"768x768 f32 (gpt2 proj)", 768, 768, PB_DT_F32},
        {"50257x768 f32 (gpt2 head)", 50257, 768, PB_DT_F32},
        {"3072x768 f16", 3072, 768, PB_DT_F16},
        /* SmolLM2-135M: small matrices, where a call's start and end count */
        {"576x576 bf16 (smol q)", 576, 576, PB_DT_BF16},
        {"1536x576 bf16 (smol up)", 1536, 576, PB_DT_BF16},
        {"576x1536 bf16 (smol down)", 576, 1536, PB_DT_BF16},
        {"49152x576 bf16 (smol head)", 49152, 576, PB_DT_BF16},
        /* --weights-dtype int8 of the same shapes */
        {"5632x2048 q8 (up)", 5632, 2048, PB_DT_Q8},
        {"2048x5632 q8 (down)", 2048, 5632, PB_DT_Q8},
        {"1536x576 q8 (smol up)", 1536, 576, PB_DT_Q8},
        {"49152x576 q8 (smol head)", 49152, 576, PB_DT_Q8},
        /* an FP8 checkpoint's matrices kept as stored */
        {"5632x2048 f8 (up)", 5632, 2048, PB_DT_F8_E4M3},
        {"2048x5632 f8 (down)", 2048, 5632, PB_DT_F8_E4M3},
        {"1536x576 f8 (smol up)", 1536, 576, PB_DT_F8_E4M3},
        /* Llama-3-8B's MLP: rows of 28 KiB (down), matrices of 117 MB that no cache holds */
        {"14336x4096 bf16 (8b up)", 14336, 4096, PB_DT_BF16},
        {"4096x14336 bf16 (8b down)", 4096, 14336, PB_DT_BF16},
    };
    const char *only = argc > 3 ? argv[3] : NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!only || strstr(shapes[i].name, only))
            bench_shape(k, &shapes[i], threads, secs, bw);
    if (!only || strstr("step", only))
        for (size_t i = 0; i < sizeof step_models / sizeof step_models[0]; i++)
            bench_step(k, &step_models[i], secs, bw);
    if (!only || strstr("rows", only)) /* one thread: the kernels of a row, not the pool */
        for (int i = 0; i < 3; i++)
            bench_rows((const int[]){1, 32, 512}[i], secs);
    /* attention: TinyLlama-1.1B (32 heads over 4 KV heads of 64) unless named otherwise */
    for (int c = 0; c < 3; c++) {
        const pb_dtype dt = (const pb_dtype[]){PB_DT_F32, PB_DT_F16, PB_DT_BF16}[c];
        bench_attn(k, only, "decode 1 x 512 keys", 1, 511, 1, 32, 4, 64, dt, secs);
        bench_attn(k, only, "decode 32 x 512 keys", 32, 511, 1, 32, 4, 64, dt, secs);
        bench_attn(k, only, "SmolLM2 decode 64 x 45 keys", 64, 44, 1, 9, 3, 64, dt, secs);
        bench_attn(k, only, "SmolLM2 decode 32 x 512 keys", 32, 511, 1, 9, 3, 64, dt, secs);
        /* batch 1 over fewer KV heads than 2 threads can take in turn: the split form */
        bench_attn(k, only, "SmolLM2 decode 1 x 2048 keys", 1, 2047, 1, 9, 3, 64, dt, secs);
        bench_attn(k, only, "Gemma-3-1B decode 1 x 2048 keys (4x1x256)", 1, 2047, 1, 4, 1, 256, dt, secs);
        /* MHA: one query row per (sequence, head) item */
        bench_attn(k, only, "GPT-2 decode 32 x 30 keys", 32, 29, 1, 12, 12, 64, dt, secs);
        bench_attn(k, only, "GPT-2 decode 64 x 256 keys", 64, 255, 1, 12, 12, 64, dt, secs);
        bench_attn(k, only, "decode 32 x 2048 keys", 32, 2047, 1, 32, 4, 64, dt, secs);
        bench_attn(k, only, "XG6 decode 32 x 2048 keys", 32, 2047, 1, 24, 4, 64, dt, secs);
        bench_attn(k, only, "XG4 decode 32 x 2048 keys", 32, 2047, 1, 16, 4, 64, dt, secs);
        bench_attn(k, only, "XG1 decode 32 x 2048 keys", 32, 2047, 1, 4, 4, 64, dt, secs);
        bench_attn(k, only, "prefill 512 tokens", 1, 0, 512, 32, 4, 64, dt, secs);
        bench_attn(k, only, "GPT-2 prefill 512 (12x12x64)", 1, 0, 512, 12, 12, 64, dt, secs);
        bench_attn(k, only, "SmolLM2 prefill 512 (9x3x64)", 1, 0, 512, 9, 3, 64, dt, secs);
    }
    pb_kctx_free(k);
    pb_pool_free(pool);
    return 0;
}
