/* Sampler speed (a figure, never pass/fail; contrib/bench/sample.py):
 *   sample-bench FILE VOCAB ROWS REPS T TOP_K TOP_P MIN_P REP_PENALTY
 * FILE holds ROWS x VOCAB float32 logits. Prints, for each table this CPU
 * runs, the best of REPS passes over the rows in microseconds a row, and
 * beside them a pass of libm's expf over each row (a softmax's floor in
 * scalar code) in the same run. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "gen/sample_impl.h"

int main(int argc, char **argv)
{
    if (argc != 10) {
        fprintf(stderr, "usage: sample-bench FILE VOCAB ROWS REPS T TOP_K TOP_P MIN_P REP_PENALTY\n");
        return 2;
    }
    const int V = atoi(argv[2]), R = atoi(argv[3]), reps = atoi(argv[4]);
    const pb_sample_params p = {.temperature = (float)atof(argv[5]), .top_k = atoi(argv[6]),
                                .top_p = (float)atof(argv[7]), .min_p = (float)atof(argv[8]),
                                .repetition_penalty = (float)atof(argv[9])};
    if (V < 1 || R < 1 || reps < 1 || pb_sample_params_check(&p) != PB_OK) {
        fprintf(stderr, "sample-bench: bad arguments\n");
        return 2;
    }
    float *l = malloc(sizeof(float) * (size_t)V * (size_t)R), *e = malloc(sizeof(float) * (size_t)V);
    void *scr = malloc(pb_sample_scratch_bytes(V));
    FILE *f = fopen(argv[1], "rb");
    if (!l || !e || !scr || !f || fread(l, sizeof(float) * (size_t)V, (size_t)R, f) != (size_t)R) {
        fprintf(stderr, "sample-bench: cannot read %d rows of %d floats from %s\n", R, V, argv[1]);
        return 1;
    }
    fclose(f);
    int32_t hist[32];
    for (int i = 0; i < 32; i++)
        hist[i] = (int32_t)((i * 7919) % V);
    const pb_svec *tabs[3] = {&pb_svec_portable, NULL, pb_svec_avx2_if()};
#if defined(__SSE2__)
    tabs[1] = &pb_svec_sse2;
#endif
    long check = 0;
    for (int t = 0; t < 3; t++) {
        if (!tabs[t])
            continue;
        double best = 1e30;
        for (int r = 0; r < reps; r++) {
            const double t0 = pb_now();
            for (int i = 0; i < R; i++) {
                const pb_rng_key key = {1, (uint64_t)i, (uint64_t)r};
                check += pb_sample_with(tabs[t], l + (size_t)i * (size_t)V, V, &p, hist, 32, &key, scr);
            }
            const double dt = pb_now() - t0;
            if (dt < best)
                best = dt;
        }
        printf("%s %.2f\n", tabs[t]->name, best / R * 1e6);
    }
    double best = 1e30, z = 0;
    for (int r = 0; r < reps; r++) {
        const double t0 = pb_now();
        for (int i = 0; i < R; i++) {
            const float *row = l + (size_t)i * (size_t)V;
            for (int j = 0; j < V; j++)
                e[j] = expf(row[j] - 10.0f);
            for (int j = 0; j < V; j++)
                z += e[j];
        }
        const double dt = pb_now() - t0;
        if (dt < best)
            best = dt;
    }
    printf("libm-expf %.2f\n", best / R * 1e6);
    fprintf(stderr, "(checksum %ld %g)\n", check, z);
    free(l);
    free(e);
    free(scr);
    return 0;
}
