/* pippy-batch plan: who loads what, and the memory of each rank. Reads only
 * config.json and the checkpoint's index (or single file's header). */
#include "config.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "ckpt/ckpt.h"
#include "backend/stage.h"
#include "ckpt/plan.h"
#include "cli/commands.h"
#include "cli/device.h"
#include "common/util.h"
#include "model/config.h"
#include "ckpt/folder.h"

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static double share(uint64_t part, uint64_t total)
{
    return total ? 100.0 * (double)part / (double)total : 0.0;
}

/* The other policy's split, one "layers (compute share)" per stage. */
static void print_other(const pb_plan *other, const char *name)
{
    printf("\n%s would split:", name);
    for (int s = 0; s < other->n_stages; s++) {
        const pb_stage_plan *sp = &other->stages[s];
        if (sp->layer_end > sp->layer_begin)
            printf("%s %d-%d (%.1f%%)", s ? "," : "", sp->layer_begin, sp->layer_end - 1,
                   share(sp->compute, other->total_compute));
        else
            printf("%s - (%.1f%%)", s ? "," : "", share(sp->compute, other->total_compute));
    }
    printf("\n");
}

static void json_other(cJSON *root, const pb_plan *other, const char *name)
{
    cJSON *o = cJSON_AddObjectToObject(root, "other_policy");
    if (!o)
        return;
    cJSON_AddStringToObject(o, "policy", name);
    cJSON *stages = cJSON_AddArrayToObject(o, "stages");
    for (int s = 0; stages && s < other->n_stages; s++) {
        cJSON *so = cJSON_CreateObject();
        if (!so)
            break;
        cJSON_AddItemToArray(stages, so);
        cJSON *layers = cJSON_AddArrayToObject(so, "layers");
        if (layers) {
            cJSON_AddItemToArray(layers, cJSON_CreateNumber(other->stages[s].layer_begin));
            cJSON_AddItemToArray(layers, cJSON_CreateNumber(other->stages[s].layer_end));
        }
        cJSON_AddNumberToObject(so, "compute_per_token", (double)other->stages[s].compute);
    }
}

/* plan --device cuda: the GPUs visible here. Stage s runs on rank s, which
 * uses GPU (local rank % GPUs): with every rank on this node, GPU s % n. */
#define PLAN_MAX_GPUS 64
typedef struct gpu_view {
    int n;                    /* GPUs visible here; 0: none (why says so) */
    const char *why;
    pb_gpu_info gpu[PLAN_MAX_GPUS];
} gpu_view;

static uint64_t gpu_need(const pb_plan *plan, int n, int g)
{
    uint64_t need = 0;
    for (int s = 0; s < plan->n_stages; s++)
        if (s % n == g)
            need += plan->stages[s].mem_total;
    return need;
}

static void json_gpus(cJSON *root, const pb_plan *plan, const gpu_view *gv)
{
    cJSON_AddStringToObject(root, "device", "cuda");
    cJSON *arr = cJSON_AddArrayToObject(root, "gpus");
    if (gv->n == 0 && gv->why)
        cJSON_AddStringToObject(root, "gpus_note", gv->why);
    for (int g = 0; arr && g < gv->n; g++) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        cJSON_AddNumberToObject(o, "index", g);
        cJSON_AddStringToObject(o, "name", gv->gpu[g].name);
        cJSON_AddNumberToObject(o, "free_bytes", (double)gv->gpu[g].free_bytes);
        cJSON_AddNumberToObject(o, "total_bytes", (double)gv->gpu[g].total_bytes);
        cJSON *st = cJSON_AddArrayToObject(o, "stages");
        for (int s = g; st && s < plan->n_stages; s += gv->n)
            cJSON_AddItemToArray(st, cJSON_CreateNumber(s));
        uint64_t need = gpu_need(plan, gv->n, g);
        cJSON_AddNumberToObject(o, "needed_bytes", (double)need);
        cJSON_AddBoolToObject(o, "fits", need <= gv->gpu[g].free_bytes);
    }
}

static void print_gpus(const pb_plan *plan, const gpu_view *gv)
{
    char a[32], b[32], c[32];
    if (gv->n == 0) {
        printf("gpus       none visible here (%s): free memory not checked\n", gv->why ? gv->why : "no CUDA device");
        return;
    }
    for (int g = 0; g < gv->n; g++) {
        uint64_t need = gpu_need(plan, gv->n, g);
        printf("gpu %-6d %s: %s free of %s; ", g, gv->gpu[g].name, pb_human_bytes(gv->gpu[g].free_bytes, a, sizeof a),
               pb_human_bytes(gv->gpu[g].total_bytes, b, sizeof b));
        if (g >= plan->n_stages) {
            printf("no stage\n");
            continue;
        }
        printf("stage");
        for (int s = g, k = 0; s < plan->n_stages; s += gv->n, k++)
            printf("%s%d", k ? "," : " ", s);
        printf(" need %s: %s\n", pb_human_bytes(need, c, sizeof c),
               need <= gv->gpu[g].free_bytes ? "fits" : "DOES NOT FIT");
    }
    if (plan->n_stages > gv->n)
        printf("           (ranks on one node share its GPUs: rank r uses GPU local rank %% %d)\n", gv->n);
}

static pb_status print_json(const char *dir, const pb_model_config *cfg, const pb_ckpt *ck, const pb_plan *plan,
                            const char *policy, const pb_plan *other, const char *other_name, pb_wdtype wdt,
                            const char *kvdt, const gpu_view *gv)
{
    cJSON *root = cJSON_CreateObject();
    if (!root)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    cJSON_AddStringToObject(root, "model", dir);
    cJSON_AddStringToObject(root, "model_type", cfg->model_type);
    cJSON_AddStringToObject(root, "format", pb_ckpt_format_name(pb_ckpt_get_format(ck)));
    cJSON_AddStringToObject(root, "source", pb_ckpt_source(ck));
    cJSON_AddNumberToObject(root, "n_layers", plan->n_layers);
    cJSON_AddStringToObject(root, "policy", policy);
    cJSON_AddStringToObject(root, "weights_dtype", pb_wdtype_name(wdt));
    cJSON_AddStringToObject(root, "kv_dtype", kvdt);
    cJSON_AddNumberToObject(root, "ranks", plan->n_stages);
    cJSON_AddNumberToObject(root, "batch_size", plan->batch_size);
    cJSON_AddNumberToObject(root, "max_seq_len", plan->max_seq_len);
    cJSON_AddNumberToObject(root, "max_batch_tokens", plan->max_batch_tokens);
    cJSON_AddNumberToObject(root, "total_param_bytes", (double)plan->total_param_bytes);
    cJSON_AddBoolToObject(root, "sizes_exact", pb_ckpt_sizes_exact(ck));
    cJSON *stages = cJSON_AddArrayToObject(root, "stages");
    for (int s = 0; stages && s < plan->n_stages; s++) {
        const pb_stage_plan *sp = &plan->stages[s];
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(stages, o);
        cJSON_AddNumberToObject(o, "stage", sp->stage);
        cJSON *layers = cJSON_AddArrayToObject(o, "layers");
        if (layers) {
            cJSON_AddItemToArray(layers, cJSON_CreateNumber(sp->layer_begin));
            cJSON_AddItemToArray(layers, cJSON_CreateNumber(sp->layer_end));
        }
        cJSON_AddBoolToObject(o, "has_embed", sp->has_embed);
        cJSON_AddBoolToObject(o, "has_head", sp->has_head);
        cJSON_AddNumberToObject(o, "n_tensors", sp->n_tensors);
        cJSON_AddNumberToObject(o, "param_bytes", (double)sp->param_bytes);
        cJSON_AddNumberToObject(o, "compute_per_token", (double)sp->compute);
        cJSON *files = cJSON_AddArrayToObject(o, "files");
        for (int f = 0; files && f < sp->n_files; f++) {
            cJSON *fo = cJSON_CreateObject();
            if (!fo)
                break;
            cJSON_AddItemToArray(files, fo);
            cJSON_AddStringToObject(fo, "path", sp->files[f].path);
            cJSON_AddNumberToObject(fo, "bytes", (double)sp->files[f].bytes);
        }
        cJSON *mem = cJSON_AddObjectToObject(o, "memory");
        if (mem) {
            cJSON_AddNumberToObject(mem, "weights", (double)sp->mem_weights);
            cJSON_AddNumberToObject(mem, "kv_cache", (double)sp->mem_kv);
            cJSON_AddNumberToObject(mem, "activations", (double)sp->mem_act);
            cJSON_AddNumberToObject(mem, "total", (double)sp->mem_total);
        }
    }
    if (other)
        json_other(root, other, other_name);
    if (gv)
        json_gpus(root, plan, gv);
    char *text = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!text)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    printf("%s\n", text);
    free(text);
    return fflush(stdout) == 0 ? PB_OK : pb_error(PB_ERR_IO, "writing the plan to stdout failed");
}

static void print_table(const char *dir, const pb_model_config *cfg, const pb_ckpt *ck, const pb_plan *plan,
                        const char *policy, const pb_plan *other, const char *other_name, pb_wdtype wdt,
                        const char *kvdt, const gpu_view *gv)
{
    char a[32], b[32], c[32], d[32], e[32];
    printf("model      %s (%s, %d layers, hidden %d, vocab %d)\n", dir, cfg->model_type, plan->n_layers,
           cfg->hidden_size, cfg->vocab_size);
    printf("weights    %s: %s, %d files, %s of parameters%s\n", pb_ckpt_format_name(pb_ckpt_get_format(ck)),
           pb_ckpt_source(ck), pb_ckpt_n_files(ck), pb_human_bytes(plan->total_param_bytes, a, sizeof a),
           pb_ckpt_sizes_exact(ck) ? "" : " (sizes from the index and config.json)");
    if (gv)
        printf("device     cuda: one stage per rank, each on its GPU; memory below is GPU memory\n");
    printf("split      %s into %d stage%s; memory for %d sequences x %d tokens (weights %s, KV cache %s, "
           "activations for %d tokens a micro-batch)\n\n", policy, plan->n_stages, plan->n_stages == 1 ? "" : "s",
           plan->batch_size, plan->max_seq_len, wdt == PB_WDTYPE_STORED ? "as stored" : pb_wdtype_name(wdt), kvdt,
           plan->max_batch_tokens);
    printf("%-5s  %-9s  %-11s  %7s  %12s  %12s  %12s  %12s  %12s\n", "stage", "layers", "holds", "compute", "params",
           "weights", "kv cache", "activations", "total");
    for (int s = 0; s < plan->n_stages; s++) {
        const pb_stage_plan *sp = &plan->stages[s];
        char layers[32], holds[16];
        if (sp->layer_end > sp->layer_begin)
            snprintf(layers, sizeof layers, "%d-%d", sp->layer_begin, sp->layer_end - 1);
        else
            snprintf(layers, sizeof layers, "-");
        snprintf(holds, sizeof holds, "%s%s%s", sp->has_embed ? "embed" : "", sp->has_embed && sp->has_head ? "+" : "",
                 sp->has_head ? "head" : "");
        char cshare[16];
        snprintf(cshare, sizeof cshare, "%.1f%%", share(sp->compute, plan->total_compute));
        printf("%-5d  %-9s  %-11s  %7s  %12s  %12s  %12s  %12s  %12s\n", sp->stage, layers, holds[0] ? holds : "-",
               cshare, pb_human_bytes(sp->param_bytes, a, sizeof a), pb_human_bytes(sp->mem_weights, b, sizeof b),
               pb_human_bytes(sp->mem_kv, c, sizeof c), pb_human_bytes(sp->mem_act, d, sizeof d),
               pb_human_bytes(sp->mem_total, e, sizeof e));
        for (int f = 0; f < sp->n_files; f++)
            printf("       reads %s from %s\n", pb_human_bytes(sp->files[f].bytes, a, sizeof a),
                   base_name(sp->files[f].path));
    }
    printf("\ncompute    multiply-adds per decoded token (attention at %d tokens, LM head counted)\n",
           plan->max_seq_len < PB_PLAN_BALANCE_CONTEXT ? plan->max_seq_len : PB_PLAN_BALANCE_CONTEXT);
    if (gv)
        print_gpus(plan, gv);
    if (other)
        print_other(other, other_name);
}

static pb_status plan_dir(const pb_opts *opts, const char *dir)
{
    pb_model_config cfg;
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL, *other = NULL;
    gpu_view *gv = NULL;
    const char *other_name = "balanced";
    const char *kvdt = pb_kvdtype_name(opts->kv_dtype);
    pb_status st;
    char policy[64];

    PB_CHECK(pb_model_config_load(dir, &cfg));
    pb_split_spec spec = {
        .n_stages = opts->ranks,
        .threshold = opts->split_threshold,
        .n_points = opts->n_split_points,
        .points = opts->split_points,
        .batch_size = opts->batch_size,
        .max_seq_len = opts->max_seq_len,
    };
    switch (opts->split) {
    case PB_SPLIT_THRESHOLD:
        spec.policy = PB_SPLIT_POLICY_THRESHOLD;
        snprintf(policy, sizeof policy, "threshold:%" PRIu64, opts->split_threshold);
        break;
    case PB_SPLIT_POINTS:
        spec.policy = PB_SPLIT_POLICY_POINTS;
        snprintf(policy, sizeof policy, "split-points");
        break;
    case PB_SPLIT_BALANCED:
        spec.policy = PB_SPLIT_POLICY_BALANCED;
        snprintf(policy, sizeof policy, "balanced");
        other_name = "equal_size";
        break;
    default:
        spec.policy = PB_SPLIT_POLICY_EQUAL_SIZE;
        snprintf(policy, sizeof policy, "equal_size");
        break;
    }
    PB_CHECK_GOTO(pb_ckpt_open(dir, opts->index_path, &cfg, &ck), st, out);
    PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &spec, &plan), st, out);
    {
        /* memory as the backend of --device keeps the weights; auto is cuda
         * where run would pick it (the CUDA backend built, a GPU visible) */
        bool cuda = opts->backend == PB_BACKEND_CUDA;
        if (opts->backend == PB_BACKEND_AUTO) {
            pb_device_pick pick;
            PB_CHECK_GOTO(pb_device_pick_for(PB_BACKEND_AUTO, 0, 0, &pick), st, out);
            cuda = pick.gpu >= 0;
        }
        const char *kind = cuda ? "cuda" : "cpu";
        const pb_backend_ops *bops = pb_backend_ops_of(kind);
        if (!bops) {
            st = pb_error(PB_ERR_NOT_AVAILABLE, "--device %s: no such backend in this build", kind);
            goto out;
        }
        pb_dtype kv;
        PB_CHECK_GOTO(pb_kvdtype_resolve(bops, opts->kv_dtype, &kv), st, out);
        PB_CHECK_GOTO(pb_wdtype_check(bops, opts->weights_dtype), st, out);
        PB_CHECK_GOTO(pb_wdtype_check_model(bops, opts->weights_dtype, &cfg), st, out);
        kvdt = kv == PB_DT_F16 ? "f16" : kv == PB_DT_BF16 ? "bf16" : "f32";
        const pb_stage_opts so = {.threads = opts->threads > 0 ? opts->threads : 1,
                                  .weights_dtype = opts->weights_dtype, .kv_dtype = opts->kv_dtype,
                                  .max_batch_tokens = opts->max_batch_tokens > 0 ? opts->max_batch_tokens
                                                      : cuda                        ? PB_BATCH_TOKENS_GPU
                                                                                    : PB_BATCH_TOKENS_CPU};
        PB_CHECK_GOTO(pb_stage_plan_memory(plan, &cfg, ck, bops, &so), st, out);
        if (cuda) {
            gv = calloc(1, sizeof *gv);
            if (!gv) {
                st = pb_error(PB_ERR_NOMEM, "out of memory");
                goto out;
            }
            gv->n = pb_device_list_gpus(gv->gpu, PLAN_MAX_GPUS, &gv->why);
        }
    }
    /* beside it, the split of the other contiguous policy (balanced for
     * equal_size, threshold and split points; equal_size for balanced) */
    pb_split_spec ospec = spec;
    ospec.policy = opts->split == PB_SPLIT_BALANCED ? PB_SPLIT_POLICY_EQUAL_SIZE : PB_SPLIT_POLICY_BALANCED;
    if (spec.n_stages <= cfg.n_layers)
        PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &ospec, &other), st, out);
    if (opts->json)
        st = print_json(dir, &cfg, ck, plan, policy, other, other_name, opts->weights_dtype, kvdt, gv);
    else
        print_table(dir, &cfg, ck, plan, policy, other, other_name, opts->weights_dtype, kvdt, gv);
out:
    free(gv);
    pb_plan_free(other);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    return st;
}

pb_status pb_cmd_plan(const pb_opts *opts)
{
    char *dir = NULL;
    pb_status st = pb_model_dir_resolve(opts->model_dir, &dir);
    if (st == PB_OK)
        st = pb_model_dir_check(dir, PB_MODEL_NEED_CONFIG);
    if (st == PB_OK)
        st = plan_dir(opts, dir);
    free(dir);
    return st;
}
