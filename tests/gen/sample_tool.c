/* Test helper: reads JSON lines {"logits": [...], "params": {...}, "history":
 * [...], "keys": [[seed, record, step], ...]} and prints for each
 * {"probs": [...], "samples": [...], "u": [...]} from pb_sample_probs,
 * pb_sample and pb_rng_uniform. Used by sample_ref.py. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gen/sample.h"

static double num(const cJSON *o, const char *k, double def)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : def;
}

int main(void)
{
    static char line[1 << 22];
    while (fgets(line, sizeof line, stdin)) {
        cJSON *j = cJSON_Parse(line);
        if (!j) {
            fprintf(stderr, "sample_tool: bad JSON\n");
            return 1;
        }
        const cJSON *jl = cJSON_GetObjectItemCaseSensitive(j, "logits");
        const cJSON *jp = cJSON_GetObjectItemCaseSensitive(j, "params");
        const cJSON *jh = cJSON_GetObjectItemCaseSensitive(j, "history");
        const cJSON *jk = cJSON_GetObjectItemCaseSensitive(j, "keys");
        int vocab = cJSON_GetArraySize(jl), nh = cJSON_GetArraySize(jh), nk = cJSON_GetArraySize(jk);
        float *logits = malloc(sizeof(float) * (size_t)vocab);
        float *probs = malloc(sizeof(float) * (size_t)vocab);
        int32_t *hist = malloc(sizeof(int32_t) * (size_t)(nh + 1));
        void *scratch = malloc(pb_sample_scratch_bytes(vocab));
        if (!logits || !probs || !hist || !scratch)
            return 1;
        int at = 0;
        const cJSON *v; /* in turn: cJSON_GetArrayItem walks the list from its start */
        cJSON_ArrayForEach(v, jl) {
            logits[at++] = cJSON_IsNumber(v) ? (float)v->valuedouble
                           : (cJSON_IsString(v) && strcmp(v->valuestring, "-inf") == 0) ? -1.0f / 0.0f
                           : 0.0f / 0.0f;
        }
        at = 0;
        cJSON_ArrayForEach(v, jh) {
            hist[at++] = (int32_t)v->valuedouble;
        }
        pb_sample_params p = {
            .temperature = (float)num(jp, "temperature", 0), .top_k = (int32_t)num(jp, "top_k", 0),
            .top_p = (float)num(jp, "top_p", 1), .min_p = (float)num(jp, "min_p", 0),
            .repetition_penalty = (float)num(jp, "repetition_penalty", 1),
            .frequency_penalty = (float)num(jp, "frequency_penalty", 0),
            .presence_penalty = (float)num(jp, "presence_penalty", 0),
            .prompt_len = (int32_t)num(jp, "prompt_len", 0)};
        pb_sample_probs(logits, vocab, &p, hist, (size_t)nh, probs, scratch);
        printf("{\"probs\": [");
        for (int i = 0; i < vocab; i++)
            printf("%s%.9g", i ? ", " : "", (double)probs[i]);
        printf("], \"samples\": [");
        for (int i = 0; i < nk; i++) {
            const cJSON *k = cJSON_GetArrayItem(jk, i);
            pb_rng_key key = {(uint64_t)cJSON_GetArrayItem(k, 0)->valuedouble,
                              (uint64_t)cJSON_GetArrayItem(k, 1)->valuedouble,
                              (uint64_t)cJSON_GetArrayItem(k, 2)->valuedouble};
            printf("%s%d", i ? ", " : "", (int)pb_sample(logits, vocab, &p, hist, (size_t)nh, &key, scratch));
        }
        printf("], \"u\": [");
        for (int i = 0; i < nk; i++) {
            const cJSON *k = cJSON_GetArrayItem(jk, i);
            pb_rng_key key = {(uint64_t)cJSON_GetArrayItem(k, 0)->valuedouble,
                              (uint64_t)cJSON_GetArrayItem(k, 1)->valuedouble,
                              (uint64_t)cJSON_GetArrayItem(k, 2)->valuedouble};
            printf("%s%.17g", i ? ", " : "", pb_rng_uniform(&key));
        }
        printf("]}\n");
        fflush(stdout);
        free(logits); free(probs); free(hist); free(scratch);
        cJSON_Delete(j);
    }
    return 0;
}
