/* Machine limits for the benchmark (contrib/bench/run.py), measured in the
 * same run as the figures they bound. Prints one JSON object:
 *   bandwidth_gbs      memory read rate: T threads, each reading its own half
 *                      of a buffer far larger than the caches in 4 streams
 *                      with the widest loads the compiler targets; best of 5
 *   fma_peak_gflops    f32 FMA rate from registers (12 independent chains of
 *                      the widest vectors: 512-bit with AVX-512F)
 *   bf16_dot_gflops    bf16 x f32 dot rate from L1, bf16 widened to f32 in
 *                      registers: the exact kernels' roof for bf16 weights
 *   bf16_dpbf16_gflops (AVX512-BF16 only) the same with vdpbf16ps on
 *                      activations rounded to bf16 (PB_CPU_ISA=avx512bf16)
 *   amx_bf16_gflops    (AMX-BF16 only, where Linux grants the tile state)
 *                      tdpbf16ps on tiles in registers, 4 independent C tiles
 *                      (--matmul-precision bf16-amx's roof)
 *   gemm: {set: {M: GFLOP/s}}  cblas_sgemm C[M,N] = A[M,K] W[N,K]^T summed over
 *                      a set of layer shapes, M = 512, 8, 1 (after a warm-up:
 *                      one timing at M = 512, the best of 3 at 8 and 1)
 *
 *   limits THREADS [NAME=N:K,N:K,...]...
 *   limits THREADS --bandwidth      only {"bandwidth_gbs": ...} (about 0.2 s:
 *                      the sample run.py takes beside each batch-1 decode run)
 *
 * Built by run.py with the system compiler and -march=native; not part of the
 * project's build. */
#define _GNU_SOURCE
#include <cblas.h>
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#if defined(__AMX_BF16__) && defined(__linux__)
#include <sys/syscall.h>
#endif

void openblas_set_num_threads(int) __attribute__((weak));

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* ---- bandwidth ---- */
#define BW_BYTES ((size_t)1 << 29) /* 512 MiB, 64x the L3 here */

typedef struct {
    char *p;
    size_t n;
    pthread_barrier_t *bar;
    double secs;
    uint64_t sink;
} bw_arg;

#if defined(__AVX512F__)
typedef __m512i vec;
#define VLOAD(p) _mm512_load_si512((const void *)(p))
#define VXOR(a, b) _mm512_xor_si512(a, b)
#define VZERO() _mm512_setzero_si512()
static uint64_t vsum(vec v) { return (uint64_t)_mm512_reduce_add_epi64(v); }
#elif defined(__AVX2__)
typedef __m256i vec;
#define VLOAD(p) _mm256_load_si256((const __m256i *)(p))
#define VXOR(a, b) _mm256_xor_si256(a, b)
#define VZERO() _mm256_setzero_si256()
static uint64_t vsum(vec v)
{
    uint64_t t[4];
    memcpy(t, &v, sizeof t);
    return t[0] ^ t[1] ^ t[2] ^ t[3];
}
#else
typedef uint64_t vec;
#define VLOAD(p) (*(const uint64_t *)(p))
#define VXOR(a, b) ((a) ^ (b))
#define VZERO() 0
static uint64_t vsum(vec v) { return v; }
#endif

/* Thread i on CPU i (of those online) from the start: the test is too short
 * for the scheduler to move a second thread off its parent's CPU, and two
 * threads sharing one then measured one core's rate (seen in a 2-vCPU VM:
 * FMA 270 against 510 GFLOP/s, memory 45 against 80 GB/s). */
static void pin_attr(pthread_attr_t *at, int i)
{
    pthread_attr_init(at);
    if (i < sysconf(_SC_NPROCESSORS_ONLN) && i < CPU_SETSIZE) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(i, &set);
        pthread_attr_setaffinity_np(at, sizeof set, &set);
    }
}

static void *bw_thread(void *v)
{
    bw_arg *a = v;
    memset(a->p, 1, a->n); /* first touch by the reading thread */
    const size_t q = a->n / 4, step = sizeof(vec);
    uint64_t sink = 0;
    double best = 1e30;
    for (int rep = 0; rep < 5; rep++) {
        pthread_barrier_wait(a->bar);
        double t = now();
        vec s0 = VZERO(), s1 = VZERO(), s2 = VZERO(), s3 = VZERO();
        vec s4 = VZERO(), s5 = VZERO(), s6 = VZERO(), s7 = VZERO();
        /* 4 streams, two loads each per iteration */
        for (size_t i = 0; i < q; i += 2 * step) {
            s0 = VXOR(s0, VLOAD(a->p + i));
            s1 = VXOR(s1, VLOAD(a->p + i + step));
            s2 = VXOR(s2, VLOAD(a->p + q + i));
            s3 = VXOR(s3, VLOAD(a->p + q + i + step));
            s4 = VXOR(s4, VLOAD(a->p + 2 * q + i));
            s5 = VXOR(s5, VLOAD(a->p + 2 * q + i + step));
            s6 = VXOR(s6, VLOAD(a->p + 3 * q + i));
            s7 = VXOR(s7, VLOAD(a->p + 3 * q + i + step));
        }
        sink ^= vsum(VXOR(VXOR(VXOR(s0, s1), VXOR(s2, s3)), VXOR(VXOR(s4, s5), VXOR(s6, s7))));
        t = now() - t;
        pthread_barrier_wait(a->bar);
        if (t < best)
            best = t;
    }
    a->secs = best;
    a->sink = sink;
    return NULL;
}

static double bandwidth(int threads)
{
    char *buf = aligned_alloc(4096, BW_BYTES);
    bw_arg *args = calloc((size_t)threads, sizeof *args);
    pthread_t *th = calloc((size_t)threads, sizeof *th);
    pthread_barrier_t bar;
    if (!buf || !args || !th)
        return 0;
    pthread_barrier_init(&bar, NULL, (unsigned)threads);
    size_t per = BW_BYTES / (size_t)threads / 4096 * 4096;
    for (int i = 0; i < threads; i++) {
        args[i] = (bw_arg){.p = buf + (size_t)i * per, .n = per, .bar = &bar};
        pthread_attr_t at;
        pin_attr(&at, i);
        pthread_create(&th[i], &at, bw_thread, &args[i]);
        pthread_attr_destroy(&at);
    }
    double slowest = 0;
    uint64_t sink = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        if (args[i].secs > slowest)
            slowest = args[i].secs;
        sink ^= args[i].sink;
    }
    pthread_barrier_destroy(&bar);
    free(buf);
    free(args);
    free(th);
    if (sink == 42)
        fputc(' ', stderr);
    return (double)per * threads / slowest / 1e9;
}

/* ---- compute peaks ---- */
typedef struct {
    int kind; /* 0 fma, 1 bf16 dot, 2 vdpbf16ps, 3 AMX tdpbf16ps */
    double flops, secs;
    float sink;
} peak_arg;

/* The widest vectors the compiler targets: 512-bit where AVX-512F is there
 * (Zen 4/5, Xeon), else 256-bit; 12 independent chains cover 2 FMA pipes of
 * latency 4-6. */
#if defined(__AVX512F__)
typedef __m512 fvec;
#define FV_LANES 16
#define FV_SET1(v) _mm512_set1_ps(v)
#define FV_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define FV_ADD(a, b) _mm512_add_ps(a, b)
#define FV_LOAD(p) _mm512_load_ps(p)
#define FV_WIDEN(p)                                                                                           \
    _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_load_si256((const __m256i *)(p))), 16))
static float fv_first(fvec v) { return _mm512_cvtss_f32(v); }
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 fvec;
#define FV_LANES 8
#define FV_SET1(v) _mm256_set1_ps(v)
#define FV_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define FV_ADD(a, b) _mm256_add_ps(a, b)
#define FV_LOAD(p) _mm256_load_ps(p)
#define FV_WIDEN(p)                                                                                           \
    _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_load_si128((const __m128i *)(p))), 16))
static float fv_first(fvec v) { return _mm256_cvtss_f32(v); }
#endif
#define CHAINS 12

#if defined(__AMX_BF16__) && defined(__linux__)
/* kind 3: tdpbf16ps, 16 x 32 bf16 by 32 x 16 into f32 tiles, from registers */
static void amx_peak(peak_arg *a, long iters)
{
    struct __attribute__((aligned(64))) {
        uint8_t palette, start_row, reserved[14];
        uint16_t colsb[16];
        uint8_t rows[16];
    } cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    _tile_loadconfig(&cfg);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    _tile_zero(4);
    _tile_zero(5);
    _tile_zero(6);
    _tile_zero(7);
    const long reps = iters / 16;
    double t = now();
    for (long r = 0; r < reps; r++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    a->secs = now() - t;
    _tile_release();
    a->flops = (double)reps * 4 * 16 * 16 * 32 * 2;
}

static int amx_granted(void)
{
    return syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XTILEDATA */) == 0;
}
#endif

static void *peak_thread(void *v)
{
    peak_arg *a = v;
    const long iters = 20000000;
#if defined(__AMX_BF16__) && defined(__linux__)
    if (a->kind == 3) {
        amx_peak(a, iters);
        return NULL;
    }
#endif
    double t = now();
#ifdef FV_LANES
    if (a->kind == 0) {
        const fvec x = FV_SET1(1.0001f), y = FV_SET1(0.9999f);
        fvec c[CHAINS];
        for (int i = 0; i < CHAINS; i++)
            c[i] = FV_SET1((float)i);
        for (long it = 0; it < iters; it++)
#pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) /* unrolled: the chains stay in registers */
                c[i] = FV_FMA(x, c[i], y);
        fvec s = c[0];
        for (int i = 1; i < CHAINS; i++)
            s = FV_ADD(s, c[i]);
        a->sink = fv_first(s);
        a->flops = (double)iters * CHAINS * 2 * FV_LANES;
    } else {
        /* bf16 weights from L1 times f32 activations, 8 chains: kind 1
         * widens each weight to f32 in registers (the exact kernels' way),
         * kind 2 uses vdpbf16ps on activations rounded to bf16 */
        static _Thread_local uint16_t w[4096] __attribute__((aligned(64)));
        static _Thread_local float x[4096] __attribute__((aligned(64)));
        for (int i = 0; i < 4096; i++) {
            w[i] = 0x3f80;
            x[i] = 1e-6f;
        }
        const long reps = iters / 64;
        fvec c[8];
        for (int i = 0; i < 8; i++)
            c[i] = FV_SET1(0.0f);
#if defined(__AVX512BF16__)
        if (a->kind == 2) {
            __m512bh xb[4096 / 32];
            for (int k = 0; k < 4096; k += 32)
                xb[k / 32] = _mm512_cvtne2ps_pbh(_mm512_load_ps(x + k + 16), _mm512_load_ps(x + k));
            for (long r = 0; r < reps / 2; r++) /* twice the flops of an iteration below */
                for (int k = 0; k < 4096; k += 8 * 32)
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++)
                        c[i] = _mm512_dpbf16_ps(c[i], (__m512bh)_mm512_load_si512((const void *)(w + k + 32 * i)),
                                                xb[k / 32 + i]);
        } else
#endif
            for (long r = 0; r < reps; r++)
                for (int k = 0; k < 4096; k += 8 * FV_LANES)
#pragma GCC unroll 8
                    for (int i = 0; i < 8; i++)
                        c[i] = FV_FMA(FV_WIDEN(w + k + FV_LANES * i), FV_LOAD(x + k + FV_LANES * i), c[i]);
        fvec s = c[0];
        for (int i = 1; i < 8; i++)
            s = FV_ADD(s, c[i]);
        a->sink = fv_first(s);
        a->flops = (double)reps * 4096 * 2;
    }
#else
    volatile float c = 0;
    for (long it = 0; it < iters; it++)
        c = c * 1.0001f + 0.5f;
    a->sink = c;
    a->flops = (double)iters * 2;
#endif
    a->secs = now() - t;
    return NULL;
}

static double peak(int threads, int kind)
{
    peak_arg args[64];
    pthread_t th[64];
    double rate = 0;
    if (threads > 64)
        threads = 64;
    for (int i = 0; i < threads; i++) {
        args[i] = (peak_arg){.kind = kind};
        pthread_attr_t at;
        pin_attr(&at, i);
        pthread_create(&th[i], &at, peak_thread, &args[i]);
        pthread_attr_destroy(&at);
    }
    for (int i = 0; i < threads; i++) {
        pthread_join(th[i], NULL);
        rate += args[i].flops / args[i].secs / 1e9;
    }
    return rate;
}

/* ---- sgemm over a set of shapes ---- */
static double gemm_rate(int M, const long *nk, int n_shapes)
{
    size_t amax = 0, wmax = 0, cmax = 0;
    for (int s = 0; s < n_shapes; s++) {
        size_t N = (size_t)nk[2 * s], K = (size_t)nk[2 * s + 1];
        if ((size_t)M * K > amax) amax = (size_t)M * K;
        if (N * K > wmax) wmax = N * K;
        if ((size_t)M * N > cmax) cmax = (size_t)M * N;
    }
    float *A = malloc(amax * sizeof *A), *W = malloc(wmax * sizeof *W), *C = malloc(cmax * sizeof *C);
    if (!A || !W || !C)
        return 0;
    for (size_t i = 0; i < amax; i++) A[i] = (float)(i % 7) * 0.01f;
    for (size_t i = 0; i < wmax; i++) W[i] = (float)(i % 5) * 0.01f;
    double best = 1e30, flops = 0;
    const int reps = M >= 64 ? 2 : 4; /* the first is a warm-up; large M is seconds per rep */
    for (int rep = 0; rep < reps; rep++) {
        double t = now();
        flops = 0;
        for (int s = 0; s < n_shapes; s++) {
            int N = (int)nk[2 * s], K = (int)nk[2 * s + 1];
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, A, K, W, K, 0.0f, C, N);
            flops += 2.0 * M * N * K;
        }
        t = now() - t;
        if (rep > 0 && t < best)
            best = t;
    }
    free(A);
    free(W);
    free(C);
    return flops / best / 1e9;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: limits THREADS [NAME=N:K,N:K,...]...\n");
        return 2;
    }
    int threads = atoi(argv[1]);
    if (threads < 1 || threads > 64) {
        fprintf(stderr, "limits: THREADS must be 1..64\n");
        return 2;
    }
    if (argc == 3 && strcmp(argv[2], "--bandwidth") == 0) {
        printf("{\"threads\": %d, \"bandwidth_gbs\": %.2f}\n", threads, bandwidth(threads));
        return 0;
    }
    if (openblas_set_num_threads)
        openblas_set_num_threads(threads);
    printf("{\"threads\": %d, \"bandwidth_gbs\": %.2f, \"fma_peak_gflops\": %.1f, \"bf16_dot_gflops\": %.1f, "
           "\"bf16_dot_kind\": \"%s\"",
           threads, bandwidth(threads), peak(threads, 0), peak(threads, 1),
#if defined(__AVX512F__)
           "avx512 widen+fma"
#elif defined(__AVX2__)
           "avx2 widen+fma"
#else
           "scalar"
#endif
    );
#if defined(__AVX512BF16__)
    printf(", \"bf16_dpbf16_gflops\": %.1f", peak(threads, 2));
#endif
#if defined(__AMX_BF16__) && defined(__linux__)
    if (amx_granted())
        printf(", \"amx_bf16_gflops\": %.1f", peak(threads, 3));
#endif
    printf(", \"gemm\": {");
    fflush(stdout);
    for (int i = 2; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (!eq) {
            fprintf(stderr, "limits: '%s' is not NAME=N:K,...\n", argv[i]);
            return 2;
        }
        long nk[256];
        int n = 0;
        for (char *p = eq + 1; *p && n < 128;) {
            char *e;
            long N = strtol(p, &e, 10);
            if (*e != ':')
                return 2;
            long K = strtol(e + 1, &e, 10);
            if (N < 1 || K < 1 || N > (1L << 20) || K > (1L << 20))
                return 2;
            nk[2 * n] = N;
            nk[2 * n + 1] = K;
            n++;
            p = *e == ',' ? e + 1 : e;
        }
        printf("%s\"%.*s\": {", i > 2 ? ", " : "", (int)(eq - argv[i]), argv[i]);
        static const int Ms[] = {512, 8, 1};
        for (int m = 0; m < 3; m++) {
            printf("%s\"%d\": %.1f", m ? ", " : "", Ms[m], gemm_rate(Ms[m], nk, n));
            fflush(stdout);
        }
        printf("}");
    }
    printf("}}\n");
    return 0;
}
