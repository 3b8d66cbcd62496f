/* Micro-benchmark (make bench): GFLOP/s of the CPU backend's linear layer
 * (cblas_sgemm in fixed blocks of PB_CPU_GEMM_ROWS rows, for batch
 * invariance) against one plain cblas_sgemm of the same shape, in the same
 * run. Prints figures; never pass/fail.  Usage: bench-forward [THREADS] */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "common/util.h"
#include "cpu/cpu.h"

static double run_pb(pb_backend *be, const float *x, int M, const pb_linear *l, float *y, int reps)
{
    double t0 = pb_now();
    for (int r = 0; r < reps; r++)
        if (be->ops->linear(be, x, l->n_in, M, l, y, l->n_out) != PB_OK)
            return -1;
    return (pb_now() - t0) / reps;
}

static double run_blas(const float *x, int M, const pb_linear *l, float *y, int reps)
{
    double t0 = pb_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, l->n_out, l->n_in, 1.0f, x, l->n_in, l->w, l->n_in,
                    0.0f, y, l->n_out);
    return (pb_now() - t0) / reps;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    pb_backend *be;
    if (pb_cpu_backend_create(threads, &be) != PB_OK)
        return 1;
    const int shapes[][2] = {{1024, 1024}, {4096, 1024}, {1024, 4096}};
    const int Ms[] = {1, 8, 16, 64, 512};
    printf("linear y[M,N] = x[M,K] W^T, %d threads: pippy-batch (blocks of %d rows) vs one cblas_sgemm\n", threads,
           PB_CPU_GEMM_ROWS);
    printf("%6s %6s %6s %12s %12s %8s\n", "M", "N", "K", "pb GFLOP/s", "sgemm GFLOP/s", "ratio");
    for (unsigned s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int N = shapes[s][0], K = shapes[s][1];
        float *w = malloc((size_t)N * K * sizeof(float)), *x = malloc((size_t)512 * K * sizeof(float)),
              *y = malloc((size_t)512 * N * sizeof(float));
        if (!w || !x || !y)
            return 1;
        for (size_t i = 0; i < (size_t)N * K; i++)
            w[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        for (size_t i = 0; i < (size_t)512 * K; i++)
            x[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
        if (be->ops->reserve(be, 1, 1, 1, 512, N + K) != PB_OK)
            return 1;
        pb_linear l = {w, NULL, N, K};
        for (unsigned m = 0; m < sizeof Ms / sizeof Ms[0]; m++) {
            int M = Ms[m];
            double flop = 2.0 * M * N * K;
            int reps = (int)(2e9 / flop) + 1;
            if (reps > 200)
                reps = 200;
            run_pb(be, x, M, &l, y, 1);
            double tp = run_pb(be, x, M, &l, y, reps);
            run_blas(x, M, &l, y, 1);
            double tb = run_blas(x, M, &l, y, reps);
            printf("%6d %6d %6d %12.1f %12.1f %8.2f\n", M, N, K, flop / tp / 1e9, flop / tb / 1e9, tb / tp);
        }
        free(w);
        free(x);
        free(y);
    }
    pb_backend_free(be);
    return 0;
}
