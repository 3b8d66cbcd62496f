/* Test driver for the checkpoint layer:
 *   ckpt-tool config DIR                     print the parsed pb_model_config as JSON
 *   ckpt-tool load DIR RANKS STAGE [INDEX]   plan equal_size for RANKS stages, load STAGE and print
 *                                            {"files": [...], "tensors": {canon: {name, dtype, shape, sum, sumsq}}}
 *   ckpt-tool bench DIR RANKS STAGE [REPS]   time loading STAGE (pb_weights_load + conversion of every
 *                                            tensor to f32, as the CPU backend does) beside a plain
 *                                            sequential read() of the same files; prints figures
 * Tensor checksums are computed in double over the f32 conversion of the data. */
#include "config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "ckpt/weights.h"
#include "common/log.h"
#include "common/tensor.h"
#include "common/util.h"
#include "model/config.h"

static void print_config(const pb_model_config *c)
{
    printf("{\"arch\": \"%s\", \"model_type\": \"%s\", \"vocab_size\": %d, \"hidden_size\": %d, \"n_layers\": %d, "
           "\"n_heads\": %d, \"n_kv_heads\": %d, \"head_dim\": %d, \"intermediate_size\": %d, \"max_position\": %d, "
           "\"word_embed_proj_dim\": %d, \"norm\": %d, \"norm_eps\": %.9g, \"pre_norm\": %s, \"final_norm\": %s, "
           "\"embed_norm\": %s, \"pos\": %d, \"pos_offset\": %d, \"rotary_dim\": %d, \"rope_style\": %d, "
           "\"rope_theta\": %.9g, \"rope_scaling\": %d, \"rope_factor\": %.9g, \"rope_low_freq_factor\": %.9g, "
           "\"rope_high_freq_factor\": %.9g, \"rope_original_max_position\": %d, \"attn_scale\": %s, "
           "\"scale_attn_by_inverse_layer_idx\": %s, \"qkv_bias\": %s, \"out_bias\": %s, \"sliding_window\": %d, "
           "\"act\": %d, \"gated_mlp\": %s, \"mlp_bias\": %s, \"residual\": %d, \"tie_word_embeddings\": %s, "
           "\"lm_head_bias\": %s, \"bos_token_id\": %d, \"pad_token_id\": %d, \"torch_dtype\": \"%s\", \"eos\": [",
           c->family->model_type[0], c->model_type, c->vocab_size, c->hidden_size, c->n_layers, c->n_heads, c->n_kv_heads,
           c->head_dim, c->intermediate_size, c->max_position, c->word_embed_proj_dim, (int)c->norm, c->norm_eps,
           c->pre_norm ? "true" : "false", c->final_norm ? "true" : "false", c->embed_norm ? "true" : "false",
           (int)c->pos, c->pos_offset, c->rotary_dim, (int)c->rope_style, c->rope_theta, (int)c->rope_scaling,
           c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_position,
           c->attn_scale ? "true" : "false", c->scale_attn_by_inverse_layer_idx ? "true" : "false",
           c->qkv_bias ? "true" : "false", c->out_bias ? "true" : "false", c->sliding_window, (int)c->act,
           c->gated_mlp ? "true" : "false", c->mlp_bias ? "true" : "false", (int)c->residual,
           c->tie_word_embeddings ? "true" : "false", c->lm_head_bias ? "true" : "false", c->bos_token_id,
           c->pad_token_id, c->torch_dtype);
    for (int i = 0; i < c->n_eos; i++)
        printf("%s%d", i ? ", " : "", c->eos_ids[i]);
    printf("], \"layer_local\": [");
    for (int i = 0; i < c->n_layers; i++)
        printf("%s%s", i ? ", " : "", c->layer_local[i] ? "true" : "false");
    const pb_gen_defaults *g = &c->gen;
    printf("], \"gen\": {");
    int k = 0;
#define GF(has, fmt, val) if (g->has) printf("%s\"%s\": " fmt, k++ ? ", " : "", #val, g->val)
    GF(has_max_new_tokens, "%d", max_new_tokens);
    GF(has_temperature, "%.9g", temperature);
    GF(has_top_k, "%d", top_k);
    GF(has_top_p, "%.9g", top_p);
    GF(has_min_p, "%.9g", min_p);
    GF(has_repetition_penalty, "%.9g", repetition_penalty);
    if (g->has_do_sample)
        printf("%s\"do_sample\": %s", k++ ? ", " : "", g->do_sample ? "true" : "false");
    GF(has_num_beams, "%d", num_beams);
    GF(has_length_penalty, "%.9g", length_penalty);
    if (g->has_early_stopping)
        printf("%s\"early_stopping\": %s", k++ ? ", " : "",
               g->early_stopping == 2 ? "\"never\"" : g->early_stopping ? "true" : "false");
    printf("}}\n");
}

static int fail(pb_status st)
{
    fprintf(stderr, "ckpt-tool: %s\n", pb_last_error());
    return pb_status_exit_code(st);
}

/* Plain sequential read of the stage's files, whole files, 1 MiB at a time. */
static double plain_read(const pb_stage_plan *sp, uint64_t *bytes)
{
    static char buf[1 << 20];
    double t0 = pb_now();
    *bytes = 0;
    for (int f = 0; f < sp->n_files; f++) {
        int fd = open(sp->files[f].path, O_RDONLY);
        if (fd < 0)
            return -1;
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0)
            *bytes += (uint64_t)r;
        close(fd);
    }
    return pb_now() - t0;
}

static int bench(const char *dir, int ranks, int stage, int reps)
{
    pb_model_config cfg;
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_status st;
    int rc = 0;
    if ((st = pb_model_config_load(dir, &cfg)) != PB_OK)
        return fail(st);
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = ranks, .batch_size = 1, .max_seq_len = 16};
    if ((st = pb_ckpt_open(dir, NULL, &cfg, &ck)) != PB_OK || (st = pb_plan_make(ck, &cfg, &spec, &plan)) != PB_OK ||
        stage < 0 || stage >= plan->n_stages) {
        rc = st != PB_OK ? fail(st) : 2;
        goto out;
    }
    const pb_stage_plan *sp = &plan->stages[stage];
    double best_load = 1e30, best_read = 1e30;
    uint64_t file_bytes = 0, read_bytes = 0;
    for (int r = 0; r < reps; r++) {
        double tr = plain_read(sp, &file_bytes);
        if (tr < 0) {
            fprintf(stderr, "ckpt-tool: cannot read the stage's files\n");
            rc = 1;
            goto out;
        }
        if (tr < best_read)
            best_read = tr;
        double t0 = pb_now();
        pb_weights *w = NULL;
        if ((st = pb_weights_load(ck, sp, &w)) != PB_OK) {
            rc = fail(st);
            goto out;
        }
        for (int i = 0; i < pb_weights_count(w); i++) {
            const pb_tensor *t = pb_weights_at(w, i);
            size_t n = (size_t)pb_tensor_numel(t);
            float *dst = malloc((n ? n : 1) * sizeof *dst);
            if (!dst) {
                pb_weights_free(w);
                rc = 1;
                goto out;
            }
            pb_convert_to_f32(dst, t->data, t->dtype, n);
            free(dst);
        }
        read_bytes = pb_weights_bytes_read(w);
        pb_weights_free(w);
        double tl = pb_now() - t0;
        if (tl < best_load)
            best_load = tl;
    }
    printf("stage %d of %d: layers %d-%d, %d files\n", stage, ranks, sp->layer_begin, sp->layer_end - 1, sp->n_files);
    printf("  stage load (pb_weights_load + to f32): %llu bytes in %.4f s = %.1f MB/s\n",
           (unsigned long long)read_bytes, best_load, (double)read_bytes / best_load / 1e6);
    printf("  plain sequential read of its files:   %llu bytes in %.4f s = %.1f MB/s\n",
           (unsigned long long)file_bytes, best_read, (double)file_bytes / best_read / 1e6);
out:
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    return rc;
}

int main(int argc, char **argv)
{
    pb_model_config cfg;
    pb_status st;
    if (argc >= 3 && strcmp(argv[1], "config") == 0) {
        if ((st = pb_model_config_load(argv[2], &cfg)) != PB_OK)
            return fail(st);
        print_config(&cfg);
        pb_model_config_free(&cfg);
        return 0;
    }
    if (argc >= 5 && strcmp(argv[1], "bench") == 0)
        return bench(argv[2], atoi(argv[3]), atoi(argv[4]), argc > 5 ? atoi(argv[5]) : 3);
    if (argc < 5 || strcmp(argv[1], "load") != 0) {
        fprintf(stderr, "usage: ckpt-tool config DIR | load DIR RANKS STAGE [INDEX] | bench DIR RANKS STAGE [REPS]\n");
        return 2;
    }
    if (getenv("PB_VERBOSE"))
        pb_log_set_level(PB_LOG_VERBOSE);
    int ranks = atoi(argv[3]), stage = atoi(argv[4]);
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_weights *w = NULL;
    float *buf = NULL;
    int rc = 0;
    if ((st = pb_model_config_load(argv[2], &cfg)) != PB_OK)
        return fail(st);
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = ranks, .batch_size = 1, .max_seq_len = 16};
    if ((st = pb_ckpt_open(argv[2], argc > 5 ? argv[5] : NULL, &cfg, &ck)) != PB_OK ||
        (st = pb_plan_make(ck, &cfg, &spec, &plan)) != PB_OK) {
        rc = fail(st);
        goto out;
    }
    if (stage < 0 || stage >= plan->n_stages) {
        fprintf(stderr, "ckpt-tool: stage %d out of range\n", stage);
        rc = 2;
        goto out;
    }
    if ((st = pb_weights_load(ck, &plan->stages[stage], &w)) != PB_OK) {
        rc = fail(st);
        goto out;
    }
    const pb_stage_plan *sp = &plan->stages[stage];
    printf("{\"layers\": [%d, %d], \"files\": [", sp->layer_begin, sp->layer_end);
    for (int i = 0; i < sp->n_files; i++)
        printf("%s\"%s\"", i ? ", " : "", sp->files[i].path);
    printf("], \"bytes_read\": %llu, \"tensors\": {", (unsigned long long)pb_weights_bytes_read(w));
    for (int i = 0; i < pb_weights_count(w); i++) {
        const pb_tensor *t = pb_weights_at(w, i);
        size_t n = (size_t)pb_tensor_numel(t);
        float *nb = realloc(buf, (n ? n : 1) * sizeof *buf);
        if (!nb) {
            rc = 1;
            goto out;
        }
        buf = nb;
        if (t->dtype == PB_DT_F8_E4M3) /* an FP8 checkpoint's bytes: their e4m3 values, unscaled */
            for (size_t k = 0; k < n; k++)
                buf[k] = pb_f8e4m3_to_f32(((const unsigned char *)t->data)[k]);
        else
            pb_convert_to_f32(buf, t->data, t->dtype, n);
        double s = 0, s2 = 0;
        for (size_t k = 0; k < n; k++) {
            s += buf[k];
            s2 += (double)buf[k] * buf[k];
        }
        if (pb_weights_get(w, pb_weights_canonical_at(w, i)) != t) {
            fprintf(stderr, "ckpt-tool: lookup of %s failed\n", pb_weights_canonical_at(w, i));
            rc = 1;
        }
        printf("%s\"%s\": {\"name\": \"%s\", \"dtype\": \"%s\", \"shape\": [", i ? ", " : "",
               pb_weights_canonical_at(w, i), t->name, pb_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            printf("%s%lld", d ? ", " : "", (long long)t->shape[d]);
        printf("], \"sum\": %.10g, \"sumsq\": %.10g, \"first\": %.9g}", s, s2, n ? (double)buf[0] : 0.0);
    }
    printf("}}\n");
out:
    free(buf);
    pb_weights_free(w);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    return rc;
}
