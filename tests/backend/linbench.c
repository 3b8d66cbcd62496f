/* Microbenchmark of a backend's linear op (not a test): the matrix shapes of
 * a TinyLlama-1.1B layer and its LM head at several row counts, each timed
 * over repeated calls after a warm-up (the backend's sync around them), with
 * the weight bytes read per call over its time (GB/s) and 2 N K M flops over
 * it (TFLOP/s) beside. Weights rotate over copies of at least 256 MB (4x the L2 of an H100) so that
 * calls read them from memory, not a cache.
 *   linbench [KIND [DTYPE [ROWS,...]]]   default: cuda bf16 1,8,64,512,4096
 * --matmul-precision is the backend's default; PB_MMPREC=f32 selects f32.
 * contrib/gpu/lease.sh runs it on a GPU machine. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "common/status.h"
#include "common/tensor.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

#define TRY(x)                                                                                                         \
    do {                                                                                                               \
        if ((x) != PB_OK) {                                                                                            \
            fprintf(stderr, "linbench: %s: %s\n", #x, pb_last_error());                                               \
            return 1;                                                                                                  \
        }                                                                                                              \
    } while (0)

int main(int argc, char **argv)
{
    const char *kind = argc > 1 ? argv[1] : "cuda";
    const char *dts = argc > 2 ? argv[2] : "bf16";
    const char *rows_s = argc > 3 ? argv[3] : "1,8,64,512,4096";
    const pb_dtype dt = strcmp(dts, "f32") == 0 ? PB_DT_F32 : strcmp(dts, "f16") == 0 ? PB_DT_F16 : PB_DT_BF16;
    static const struct {
        const char *name;
        int n, k;
    } shapes[] = {{"qkv", 2560, 2048}, {"o", 2048, 2048}, {"gate_up", 11264, 2048}, {"down", 2048, 5632},
                  {"lm_head", 32000, 2048}};
    int rows[16], nr = 0;
    for (char *p = (char *)rows_s; *p && nr < 16;) {
        rows[nr++] = (int)strtol(p, &p, 10);
        if (*p == ',')
            p++;
    }
    pb_backend_opts o = {.threads = 0};
    pb_backend *be = NULL;
    TRY(pb_backend_create(kind, &o, &be));
    const char *mp = getenv("PB_MMPREC");
    if (mp && strcmp(mp, "f32") == 0)
        TRY(pb_mmprec_select(be->ops, PB_MMPREC_F32));
    printf("linbench %s %s%s: shape N x K, rows M: us a call, weight GB/s, TFLOP/s\n", kind, dts,
           mp ? " (PB_MMPREC)" : "");
    int maxm = 1;
    for (int i = 0; i < nr; i++)
        maxm = rows[i] > maxm ? rows[i] : maxm;
    for (unsigned s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int N = shapes[s].n, K = shapes[s].k;
        const size_t wbytes = (size_t)N * K * pb_dtype_size(dt);
        int copies = (int)((256u << 20) / wbytes) + 1;
        if (copies > 16)
            copies = 16;
        /* the weights: random values in the store dtype, from f32 */
        float *wf = malloc((size_t)N * K * 4);
        unsigned r = 12345;
        for (size_t i = 0; i < (size_t)N * K; i++) {
            r = r * 1103515245u + 12345u;
            wf[i] = ((float)(r >> 8) / 16777216.0f - 0.5f) * 0.1f;
        }
        pb_weight *W[16];
        pb_wpart part = {.data = wf, .dtype = PB_DT_F32, .rows = N, .name = shapes[s].name};
        pb_linear_src src = {.n_out = N, .n_in = K, .n_parts = 1, .parts = &part};
        for (int c = 0; c < copies; c++)
            TRY(be->ops->put_linear(be, &src, dt, &W[c]));
        free(wf);
        float *x = NULL, *y = NULL;
        TRY(be->ops->alloc(be, (size_t)maxm * K * 4, (void **)&x));
        TRY(be->ops->alloc(be, (size_t)maxm * N * 4, (void **)&y));
        for (int i = 0; i < nr; i++) {
            const int M = rows[i];
            for (int c = 0; c < copies; c++) /* warm-up */
                TRY(be->ops->linear(be, x, K, M, W[c], y, N));
            TRY(be->ops->sync(be));
            int reps = copies;
            double t = 0;
            for (;;) {
                const double t0 = now();
                for (int q = 0; q < reps; q++)
                    TRY(be->ops->linear(be, x, K, M, W[q % copies], y, N));
                TRY(be->ops->sync(be));
                t = now() - t0;
                if (t > 0.05 || reps >= 1 << 16)
                    break;
                reps *= 4;
            }
            const double per = t / reps;
            printf("%-8s %5d x %5d  M %5d  %9.2f us  %7.0f GB/s  %7.2f TFLOP/s\n", shapes[s].name, N, K, M, per * 1e6,
                   (double)wbytes / per / 1e9, 2.0 * N * K * M / per / 1e12);
            fflush(stdout);
        }
        for (int c = 0; c < copies; c++)
            be->ops->weight_free(be, W[c]);
        be->ops->release(be, x);
        be->ops->release(be, y);
    }
    pb_backend_free(be);
    return 0;
}
