/* Micro-benchmark (make bench): GFLOP/s of the CPU backend's linear layer
 * (the packed, batch-invariant kernels of src/cpu/kernels.h) with f32 and
 * bf16 weights, against one plain cblas_sgemm of the same shape (f32, not
 * batch-invariant), in the same run. Prints figures; never pass/fail.
 * Usage: bench-forward [THREADS] */
#include "config.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "backend/backend.h"
#include "common/util.h"

static double run_pb(pb_backend *be, const float *x, int M, const pb_weight *w, float *y, int reps)
{
    double t0 = pb_now();
    for (int r = 0; r < reps; r++)
        if (be->ops->linear(be, x, w->n_in, M, w, y, w->n_out) != PB_OK)
            return -1;
    return (pb_now() - t0) / reps;
}

static double run_blas(const float *x, int M, const float *w, int N, int K, float *y, int reps)
{
    double t0 = pb_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, y, N);
    return (pb_now() - t0) / reps;
}

static int reps_for(double flop)
{
    int reps = (int)(2e9 / flop) + 1;
    return reps > 200 ? 200 : reps;
}

int main(int argc, char **argv)
{
    int threads = argc > 1 ? atoi(argv[1]) : 2;
    pb_backend *be;
    pb_backend_opts bo = {.threads = threads};
    if (pb_backend_create("cpu", &bo, &be) != PB_OK)
        return 1;
#ifdef HAVE_OPENBLAS_SET_NUM_THREADS
    openblas_set_num_threads(threads);
#endif
    const int shapes[][2] = {{1024, 1024}, {4096, 1024}, {1024, 4096}};
    const int Ms[] = {1, 8, 32, 64, 512};
    printf("linear y[M,N] = x[M,K] W^T, %d threads: pippy-batch kernels (f32, bf16 weights) vs one cblas_sgemm (f32)\n",
           threads);
    printf("%6s %6s %6s %12s %12s %13s %8s\n", "M", "N", "K", "pb f32 GF/s", "pb bf16 GF/s", "sgemm GF/s",
           "f32/sgemm");
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
        pb_backend_limits lim = {.max_seqs = 1, .max_keys = 1, .max_heads = 1, .max_tokens = 512,
                                 .max_dim = N > K ? N : K};
        if (be->ops->reserve(be, &lim) != PB_OK)
            return 1;
        pb_wpart part = {.data = w, .dtype = PB_DT_F32, .rows = N, .name = "bench"};
        pb_linear_src src = {.n_out = N, .n_in = K, .n_parts = 1, .parts = &part};
        pb_weight *wf = NULL, *wb = NULL;
        if (be->ops->put_linear(be, &src, PB_DT_F32, &wf) != PB_OK ||
            be->ops->put_linear(be, &src, PB_DT_BF16, &wb) != PB_OK)
            return 1;
        for (unsigned m = 0; m < sizeof Ms / sizeof Ms[0]; m++) {
            int M = Ms[m];
            double flop = 2.0 * M * N * K;
            int reps = reps_for(flop);
            run_pb(be, x, M, wf, y, 1);
            double tf = run_pb(be, x, M, wf, y, reps);
            run_pb(be, x, M, wb, y, 1);
            double tb16 = run_pb(be, x, M, wb, y, reps);
            run_blas(x, M, w, N, K, y, 1);
            double tb = run_blas(x, M, w, N, K, y, reps);
            printf("%6d %6d %6d %12.1f %12.1f %13.1f %8.2f\n", M, N, K, flop / tf / 1e9, flop / tb16 / 1e9,
                   flop / tb / 1e9, tb / tf);
        }
        be->ops->weight_free(be, wf);
        be->ops->weight_free(be, wb);
        free(w);
        free(x);
        free(y);
    }
    pb_backend_free(be);
    return 0;
}
