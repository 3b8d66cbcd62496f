/* The run command: batch generation. Rank 0 first checks every file that
 * needs no model (gen/runner.h: input, output, --resume), so a mistake costs
 * no load time. Then every rank loads its own stage of the split (one stage
 * holding every layer at world size 1); rank 0 builds the pipe (local, or
 * across ranks: src/net/pipeline.h) and the runner feeds the engine
 * (gen/engine.h); ranks > 0 serve their stage until rank 0 ends. */
#include "config.h"
#include "cli/commands.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "backend/stage.h"
#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "ckpt/weights.h"
#include "cli/device.h"
#include "common/log.h"
#include "common/util.h"
#include "gen/engine.h"
#include "gen/pipe.h"
#include "gen/record.h"
#include "gen/runner.h"
#include "gen/stop.h"
#include "gen/writer.h"
#include "model/config.h"
#include "ckpt/folder.h"
#include "net/bootstrap.h"
#include "net/pipeline.h"
#include "net/transport.h"
#include "tok/tokenizer.h"

static pb_status env_long(const char *name, long *out, bool *present)
{
    const char *v = getenv(name);
    *present = v && *v;
    if (!*present)
        return PB_OK;
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno)
        return pb_error(PB_ERR_USAGE, "--shard auto: %s='%s' is not an integer", name, v);
    *out = x;
    return PB_OK;
}

/* --shard auto from the Slurm job array variables. */
static pb_status shard_from_slurm(int *index, int *count)
{
    long id = 0, mn = 0, mx = 0, step = 1, cnt = 0;
    bool has_id, has_min, has_max, has_step, has_cnt;
    PB_CHECK(env_long("SLURM_ARRAY_TASK_ID", &id, &has_id));
    PB_CHECK(env_long("SLURM_ARRAY_TASK_MIN", &mn, &has_min));
    PB_CHECK(env_long("SLURM_ARRAY_TASK_MAX", &mx, &has_max));
    PB_CHECK(env_long("SLURM_ARRAY_TASK_STEP", &step, &has_step));
    PB_CHECK(env_long("SLURM_ARRAY_TASK_COUNT", &cnt, &has_cnt));
    if (!has_id)
        return pb_error(PB_ERR_USAGE, "--shard auto: SLURM_ARRAY_TASK_ID is not set "
                        "(not a Slurm job array task); use --shard I/N");
    if (!has_min)
        mn = 0;
    if (!has_step || step < 1)
        step = 1;
    if (!has_cnt) {
        if (!has_max)
            return pb_error(PB_ERR_USAGE, "--shard auto: neither SLURM_ARRAY_TASK_COUNT nor "
                            "SLURM_ARRAY_TASK_MAX is set");
        cnt = (mx - mn) / step + 1;
    }
    if (id < mn || (id - mn) % step != 0 || cnt < 1 || (id - mn) / step >= cnt || cnt > INT_MAX)
        return pb_error(PB_ERR_USAGE, "--shard auto: task %ld does not fit the array (min %ld, step %ld, count %ld)",
                        id, mn, step, cnt);
    *index = (int)((id - mn) / step);
    *count = (int)cnt;
    return PB_OK;
}

/* Expand %a (array task id), %A (array job id) and %% in the output name. */
static pb_status expand_out(const char *in, char **out)
{
    *out = NULL;
    size_t cap = strlen(in) + 64, n = 0;
    char *s;
    PB_CHECK(pb_malloc(cap, &s));
    for (const char *p = in; *p; p++) {
        const char *add = NULL;
        char one[2] = {*p, 0};
        if (*p == '%' && (p[1] == 'a' || p[1] == 'A' || p[1] == '%')) {
            p++;
            if (*p == '%') {
                add = "%";
            } else {
                const char *var = *p == 'a' ? "SLURM_ARRAY_TASK_ID" : "SLURM_ARRAY_JOB_ID";
                add = getenv(var);
                if (!add || !*add) {
                    free(s);
                    return pb_error(PB_ERR_USAGE, "--out %s: %%%c needs %s (a Slurm job array)", in, *p, var);
                }
            }
        } else {
            add = one;
        }
        size_t k = strlen(add);
        if (n + k + 1 > cap) {
            cap = (n + k + 1) * 2;
            char *t = realloc(s, cap);
            if (!t) {
                free(s);
                return pb_error(PB_ERR_NOMEM, "out of memory");
            }
            s = t;
        }
        memcpy(s + n, add, k);
        n += k;
    }
    s[n] = '\0';
    *out = s;
    return PB_OK;
}

static const char *model_name(const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    const char *p = dir + n;
    while (p > dir && p[-1] != '/')
        p--;
    return p;
}

/* Appends key (ending in "=", or empty) and value to the resume fingerprint's variant, comma-separated. */
static void variant_add(char *v, size_t size, const char *key, const char *value)
{
    const size_t len = strlen(v);
    snprintf(v + len, size - len, "%s%s%s", len ? "," : "", key, value);
}

/* key += "path:size:mtime:dev:ino|" of path (realpath; "path:absent|" when missing) */
static pb_status key_add_file(char **key, size_t *len, size_t *cap, const char *path)
{
    char real[PATH_MAX];
    struct stat sb;
    char item[PATH_MAX + 128];
    int n;
    if (realpath(path, real) && stat(real, &sb) == 0)
        n = snprintf(item, sizeof item, "%s:%lld:%lld.%09ld:%llu:%llu|", real, (long long)sb.st_size,
                     (long long)sb.st_mtim.tv_sec, sb.st_mtim.tv_nsec, (unsigned long long)sb.st_dev,
                     (unsigned long long)sb.st_ino);
    else
        n = snprintf(item, sizeof item, "%s:absent|", path);
    if (n < 0 || (size_t)n >= sizeof item)
        return pb_error(PB_ERR_INTERNAL, "weights cache key: path too long: %s", path);
    if (*len + (size_t)n + 1 > *cap) {
        size_t c = (*cap ? *cap * 2 : 4096) + (size_t)n;
        char *k = realloc(*key, c);
        if (!k)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        *key = k;
        *cap = c;
    }
    memcpy(*key + *len, item, (size_t)n + 1);
    *len += (size_t)n;
    return PB_OK;
}

/* --weights-cache DIR: made if missing, and a directory (before the model loads) */
static pb_status weights_cache_dir(const char *cache_dir, bool from_env)
{
    struct stat sb;
    const char *what = from_env ? "PB_WEIGHTS_CACHE=" : "--weights-cache ";
    if (mkdir(cache_dir, 0777) != 0 && errno != EEXIST)
        return pb_error(PB_ERR_USAGE, "%s%s: cannot make the directory: %s", what, cache_dir, strerror(errno));
    if (stat(cache_dir, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return pb_error(PB_ERR_USAGE, "%s%s: not a directory", what, cache_dir);
    return PB_OK;
}

/* --weights-cache DIR: this stage's file in DIR. Its key
 * is this program (version, and its executable's size and time: another
 * build may pack differently), the checkpoint's files and config.json (path,
 * size, modification time, inode), the stage's layers and the weights dtype;
 * the backend adds its packed layout. Its name is a hash of the model folder,
 * layers and dtype only, so that a stale file (the checkpoint or the program
 * changed) is replaced, not kept beside the new one. */
static pb_status attach_weights_cache(const char *cache_dir, const char *model_dir, const pb_ckpt *ck,
                                      const pb_stage_plan *sp, pb_wdtype wdt, pb_backend *be)
{
    char *key = NULL, *cfg = NULL, *path = NULL;
    size_t len = 0, cap = 0;
    pb_status st = PB_OK;
    char head[256];
    snprintf(head, sizeof head, "pippy-batch %s weights cache|layers [%d, %d) embed %d head %d|weights %s|",
             PACKAGE_VERSION, sp->layer_begin, sp->layer_end, (int)sp->has_embed, (int)sp->has_head,
             pb_wdtype_name(wdt));
    if (!(key = pb_strdup(head)) || !(cfg = pb_path_join(model_dir, "config.json"))) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    len = cap = strlen(key);
    PB_CHECK_GOTO(key_add_file(&key, &len, &cap, "/proc/self/exe"), st, out);
    PB_CHECK_GOTO(key_add_file(&key, &len, &cap, cfg), st, out);
    if (pb_ckpt_source(ck))
        PB_CHECK_GOTO(key_add_file(&key, &len, &cap, pb_ckpt_source(ck)), st, out);
    for (int i = 0; i < pb_ckpt_n_files(ck); i++)
        PB_CHECK_GOTO(key_add_file(&key, &len, &cap, pb_ckpt_file_path(ck, i)), st, out);
    char name[64], real[PATH_MAX];
    const uint64_t slot = pb_fnv1a(PB_FNV_START, head, strlen(head));
    snprintf(name, sizeof name, "stage%d-%016llx.pbw", sp->stage,
             (unsigned long long)(realpath(model_dir, real) ? pb_fnv1a(slot, real, strlen(real)) : slot));
    if (!(path = pb_path_join(cache_dir, name))) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = be->ops->weights_cache(be, path, key);
out:
    free(key);
    free(cfg);
    free(path);
    return st;
}

static void summary(const pb_run_stats *s, bool with_stages)
{
    double tps = s->wall_seconds > 0 ? (double)s->completion_tokens / s->wall_seconds : 0;
    const uint64_t shared = s->engine.prompt_tokens_shared;
    char sh[64] = "";
    if (shared)
        snprintf(sh, sizeof sh, " (%llu of them a shared prefix)", (unsigned long long)shared);
    fprintf(stderr,
            "pippy-batch: %llu records, %llu errors; %llu prompt%s + %llu generated tokens in %.2fs: "
            "%.1f tokens/s (prefill %.1f/s, decode %.1f/s); time to first token %.3fs mean, %.3fs max\n",
            (unsigned long long)s->records, (unsigned long long)s->errors,
            (unsigned long long)s->prompt_tokens, sh, (unsigned long long)s->completion_tokens,
            s->wall_seconds, tps,
            pb_run_prefill_rate(s),
            s->engine.decode_seconds > 0 ? (double)s->completion_tokens / s->engine.decode_seconds : 0,
            s->engine.ttft_mean, s->engine.ttft_max);
    /* Across ranks the pipeline report prints each stage's line, same figure. */
    const pb_pipe_stats *ps = &s->engine.pipe;
    for (int i = 0; i < ps->n_stages && with_stages; i++)
        fprintf(stderr, "pippy-batch: stage %d busy %.1f%%\n", i,
                ps->wall_seconds > 0 ? 100.0 * ps->busy_seconds[i] / ps->wall_seconds : 0);
}

/* Memory this process may still use: MemAvailable, lowered by the cgroup
 * limit (v2 memory.max - memory.current, or v1 limit - usage) and
 * RLIMIT_AS. *what names the binding limit. false when nothing is known. */
static uint64_t read_u64_file(const char *path, bool *ok)
{
    *ok = false;
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long v = 0;
    *ok = fscanf(f, "%llu", &v) == 1;
    fclose(f);
    return (uint64_t)v;
}

static bool mem_available(uint64_t *avail, const char **what)
{
    bool known = false;
    FILE *f = fopen("/proc/meminfo", "r");
    if (f) {
        char line[256];
        unsigned long long kb;
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) {
                *avail = (uint64_t)kb * 1024;
                *what = "MemAvailable in /proc/meminfo";
                known = true;
                break;
            }
        fclose(f);
    }
    /* this process's cgroup (v2: "0::/path"; v1: the memory controller's line) */
    char cg[640] = "", path[1024];
    bool v2 = false;
    f = fopen("/proc/self/cgroup", "r");
    if (f) {
        char line[600];
        while (fgets(line, sizeof line, f)) {
            line[strcspn(line, "\n")] = '\0';
            if (strncmp(line, "0::", 3) == 0) {
                snprintf(cg, sizeof cg, "%s", line + 3);
                v2 = true;
            } else {
                char *c = strstr(line, ":memory:");
                if (c && !v2)
                    snprintf(cg, sizeof cg, "%s", c + 8);
            }
        }
        fclose(f);
    }
    bool ok1, ok2;
    uint64_t limit, usage;
    if (v2) {
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.max", cg);
        limit = read_u64_file(path, &ok1); /* "max" does not parse: no limit */
        snprintf(path, sizeof path, "/sys/fs/cgroup%s/memory.current", cg);
        usage = read_u64_file(path, &ok2);
    } else {
        snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.limit_in_bytes", cg);
        limit = read_u64_file(path, &ok1);
        snprintf(path, sizeof path, "/sys/fs/cgroup/memory%s/memory.usage_in_bytes", cg);
        usage = read_u64_file(path, &ok2);
    }
    if (ok1 && ok2 && limit < ((uint64_t)1 << 60)) {
        uint64_t left = limit > usage ? limit - usage : 0;
        if (!known || left < *avail) {
            *avail = left;
            *what = "the cgroup memory limit";
            known = true;
        }
    }
    return known;
}

/* Refuse before loading when the stage's planned memory (weights, KV cache,
 * activations) cannot fit. */
static pb_status check_memory(const pb_stage_plan *sp, int rank, int batch, int context)
{
    uint64_t avail = 0;
    const char *what = "";
    if (!mem_available(&avail, &what) || sp->mem_total <= avail)
        return PB_OK;
    char need[32], w[32], kv[32], act[32], av[32];
    return pb_error(PB_ERR_CONFIG, "rank %d: stage %d needs about %s (weights %s, KV cache %s for --batch-size %d x "
                    "context %d, activations %s) but only %s is available (%s); lower --batch-size or "
                    "--max-seq-len, or use more ranks", rank, sp->stage,
                    pb_human_bytes(sp->mem_total, need, sizeof need),
                    pb_human_bytes(sp->mem_weights, w, sizeof w), pb_human_bytes(sp->mem_kv, kv, sizeof kv), batch,
                    context, pb_human_bytes(sp->mem_act, act, sizeof act), pb_human_bytes(avail, av, sizeof av), what);
}

/* Add the pipeline report to the metrics file the driver wrote. */
static pb_status add_pipeline_metrics(const char *path, const pb_pipeline_report *rep)
{
    char *text = NULL, *pj = NULL, *outs = NULL;
    size_t len = 0;
    cJSON *o = NULL, *p = NULL;
    pb_status st;
    PB_CHECK_GOTO(pb_read_file(path, (size_t)64 << 20, &text, &len), st, out);
    PB_CHECK_GOTO(pb_pipeline_report_json(rep, &pj), st, out);
    o = cJSON_Parse(text);
    p = cJSON_Parse(pj);
    if (!o || !p || !cJSON_IsObject(o)) {
        st = pb_error(PB_ERR_IO, "%s: cannot add the pipeline metrics", path);
        goto out;
    }
    cJSON_AddItemToObject(o, "pipeline", p);
    p = NULL;
    outs = cJSON_PrintUnformatted(o);
    FILE *f = outs ? fopen(path, "w") : NULL;
    if (!f || fprintf(f, "%s\n", outs) < 0 || fclose(f) != 0) {
        st = pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    st = PB_OK;
out:
    cJSON_Delete(o);
    cJSON_Delete(p);
    free(outs);
    free(pj);
    free(text);
    return st;
}

pb_status pb_cmd_run(const pb_opts *opts, int *exit_code)
{
    *exit_code = 0;
    pb_status st = PB_OK;
    pb_bootstrap *boot = NULL;
    pb_runner *run = NULL;
    pb_model_config cfg;
    bool have_cfg = false;
    pb_tokenizer *tok = NULL;
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_weights *w = NULL;
    pb_stage *stage = NULL;
    pb_backend *be = NULL;
    pb_pipe *pipe = NULL;
    pb_transport *tr = NULL;
    pb_net_pipe *np = NULL;
    pb_gen_settings base;
    bool have_base = false;
    char *out_path = NULL, *tok_path = NULL, *dir = NULL;

    /* every rank: a stop signal is handled by rank 0's engine, the others
     * serve until it ends the pipeline */
    PB_CHECK(pb_stop_install());
    int shard_index = opts->shard_index, shard_count = opts->shard_count;
    if (opts->shard_auto)
        PB_CHECK(shard_from_slurm(&shard_index, &shard_count));
    PB_CHECK(expand_out(opts->out_path, &out_path));

    PB_CHECK_GOTO(pb_bootstrap_init(&boot), st, out);
    const int rank = pb_bootstrap_rank(boot), world = pb_bootstrap_size(boot);

    /* default: one micro-batch in flight per stage, so every stage has work */
    int chunks = opts->chunks > 0 ? opts->chunks : world < opts->batch_size ? world : opts->batch_size;
    int batch = opts->batch_size;
    if (chunks > batch) {
        st = pb_error(PB_ERR_USAGE, "--chunks %d is more than --batch-size %d", chunks, batch);
        goto out;
    }
    /* with --chunks given pb_opts_parse checked this already; here with the chunks chosen by the world size */
    PB_CHECK_GOTO(pb_opts_check_batch_tokens(opts, chunks), st, out);
    /* rank 0: the files, before anything is read from the model folder */
    pb_runner_opts ro = {
        .in_path = opts->in_path, .out_path = out_path, .metrics_path = opts->metrics_path,
        .force = opts->force, .resume = opts->resume,
        .abort_on_error = opts->on_error == PB_ON_ERROR_ABORT,
        .shard_index = shard_index, .shard_count = shard_count, .batch_size = batch,
        .frame_records = opts->frame_records, .frame_seconds = opts->frame_seconds,
        .verbosity = opts->verbosity, .progress_tty = opts->progress_tty};
    if (rank == 0)
        PB_CHECK_GOTO(pb_runner_open(&ro, &run), st, out);
    /* --device: cpu, or the GPU local rank % visible GPUs */
    const int local_rank = pb_bootstrap_local_rank(boot);
    pb_device_pick dev;
    PB_CHECK_GOTO(pb_device_pick_for(opts->backend, rank, local_rank, &dev), st, out);
    pb_device_log(&dev, rank, local_rank);
    const char *kind = dev.kind;
    const pb_backend_ops *bops = pb_backend_ops_of(kind);
    if (!bops) {
        st = pb_error(PB_ERR_NOT_AVAILABLE, "--device %s: no such backend in this build", kind);
        goto out;
    }
    pb_dtype kv_dt; /* --kv-dtype on this backend: refused by name before anything loads */
    PB_CHECK_GOTO(pb_kvdtype_resolve(bops, opts->kv_dtype, &kv_dt), st, out);
    PB_CHECK_GOTO(pb_wdtype_check(bops, opts->weights_dtype), st, out);
    /* --matmul-precision: refused here where the machine lacks it */
    PB_CHECK_GOTO(pb_mmprec_select(bops, opts->matmul), st, out);
    /* --weights-cache, or PB_WEIGHTS_CACHE where the backend keeps one */
    const char *wcache = opts->weights_cache;
    if (wcache && !bops->weights_cache) {
        if (!opts->weights_cache_env) {
            st = pb_error(PB_ERR_UNSUPPORTED, "--weights-cache: the %s backend keeps no weights cache (the cpu "
                          "backend does)", bops->name);
            goto out;
        }
        pb_log_verbose("PB_WEIGHTS_CACHE: not used by the %s backend (the cpu backend keeps one)", bops->name);
        wcache = NULL;
    }
    if (wcache)
        PB_CHECK_GOTO(weights_cache_dir(wcache, opts->weights_cache_env), st, out);

    PB_CHECK_GOTO(pb_model_dir_resolve(opts->model_dir, &dir), st, out);
    PB_CHECK_GOTO(pb_model_dir_check(dir, PB_MODEL_NEED_CONFIG | PB_MODEL_NEED_TOKENIZER), st, out);
    PB_CHECK_GOTO(pb_model_config_load(dir, &cfg), st, out);
    have_cfg = true;
    PB_CHECK_GOTO(pb_wdtype_check_model(bops, opts->weights_dtype, &cfg), st, out);
    int context = cfg.max_position;
    if (opts->max_seq_len) {
        if (opts->max_seq_len > cfg.max_position) {
            st = pb_error(PB_ERR_USAGE, "--max-seq-len %d is more than the model's context (%d)",
                          opts->max_seq_len, cfg.max_position);
            goto out;
        }
        context = opts->max_seq_len;
    }
    if (context < 2) {
        st = pb_error(PB_ERR_CONFIG, "%s: context length %d is too small", dir, context);
        goto out;
    }
    PB_CHECK_GOTO(pb_gen_settings_base(&opts->gen, &cfg.gen, &base), st, out);
    have_base = true;
    if (base.embed && cfg.word_embed_proj_dim && cfg.word_embed_proj_dim != cfg.hidden_size) {
        st = pb_error(PB_ERR_UNSUPPORTED, "%s: --task embed: the model projects its final hidden states (OPT's "
                      "project_out, %d to %d); embeddings of such a model are not done", dir, cfg.hidden_size,
                      cfg.word_embed_proj_dim);
        goto out;
    }

    /* rank 0: the --resume rules (fingerprints of the model's small files and
     * the settings); a complete OUT needs no model at world size 1 */
    /* weights kept in another dtype than stored, a KV cache in another than
     * the backend's own, or inexact products (--matmul-precision bf16) may
     * change the output; every rank checks that it has rank 0's settings */
    char variant[64] = "";
    if (opts->weights_dtype != PB_WDTYPE_STORED)
        variant_add(variant, sizeof variant, "weights=", pb_wdtype_name(opts->weights_dtype));
    if (kv_dt != bops->kv_dtype)
        variant_add(variant, sizeof variant, "kv=", pb_kvdtype_name(opts->kv_dtype));
    const char *numerics = bops->numerics ? bops->numerics() : NULL;
    if (numerics)
        variant_add(variant, sizeof variant, "", numerics);
    pb_runner_model rm = {.dir = dir, .index_path = opts->index_path, .name = model_name(dir),
                          .variant = variant[0] ? variant : NULL,
                          .base = &base, .context = context};
    bool done_before = false;
    if (rank == 0)
        PB_CHECK_GOTO(pb_runner_prepare(run, &rm, &done_before), st, out);
    if (done_before && world == 1)
        goto finish;

    PB_CHECK_GOTO(pb_model_tokenizer_path(dir, &tok_path), st, out);
    PB_CHECK_GOTO(pb_tokenizer_load(tok_path, &tok), st, out);

    int per_chunk = (batch + chunks - 1) / chunks;
    if (world > 1) {
        /* The links first: each rank listens before any collective step, so
         * a rank that waits for the others can already refuse strangers. The
         * largest message is a full micro-batch of hidden states plus its
         * description (a limit only: here at the larger of the devices'
         * default micro-batches, the ranks' devices known after). */
        const long cap = pb_stage_batch_tokens(opts->max_batch_tokens > 0 ? opts->max_batch_tokens
                                                                          : PB_BATCH_TOKENS_GPU,
                                               per_chunk, batch, context);
        size_t max_msg = (size_t)cap * (size_t)cfg.hidden_size * sizeof(float) +
                         pb_mb_max_size(batch, (int)cap, cfg.vocab_size) + 4096;
        const size_t max_res = pb_mb_result_max_size(batch, (int)cap, cfg.hidden_size) + 4096;
        max_msg = max_msg > max_res ? max_msg : max_res;
        pb_tcp_opts to = {.iface = opts->iface, .family = opts->ip_family, .max_msg_bytes = max_msg};
        /* NCCL between GPU ranks (PB_TRANSPORT), over these TCP links */
        PB_CHECK_GOTO(pb_transport_create(boot, dev.gpu, &to, &tr), st, out);
    }
    /* tokens a micro-batch carries: --max-batch-tokens (at least a token a sequence: checked above), else
     * PB_BATCH_TOKENS_GPU where every rank is on a GPU (each rank's went round with the transport's
     * choice, so all decide alike), PB_BATCH_TOKENS_CPU elsewhere */
    int want_mbt = opts->max_batch_tokens;
    if (want_mbt <= 0) {
        bool all_gpu = dev.gpu >= 0;
        if (world > 1)
            PB_CHECK_GOTO(pb_transport_all_gpu(boot, &all_gpu), st, out);
        want_mbt = all_gpu ? PB_BATCH_TOKENS_GPU : PB_BATCH_TOKENS_CPU;
    }
    const long mbt = pb_stage_batch_tokens(want_mbt, per_chunk, batch, context);
    int threads = opts->threads;
    if (threads <= 0) { /* the node's cores over its ranks (collective: every rank is here) */
        PB_CHECK_GOTO(pb_bootstrap_cpu_share(boot, 0, &threads), st, out);
        threads = threads > 256 ? 256 : threads;
    }

    PB_CHECK_GOTO(pb_ckpt_open(dir, opts->index_path, &cfg, &ck), st, out);
    pb_split_spec spec;
    memset(&spec, 0, sizeof spec);
    spec.policy = opts->split == PB_SPLIT_THRESHOLD ? PB_SPLIT_POLICY_THRESHOLD
                  : opts->split == PB_SPLIT_POINTS  ? PB_SPLIT_POLICY_POINTS
                  : opts->split == PB_SPLIT_BALANCED ? PB_SPLIT_POLICY_BALANCED
                                                    : PB_SPLIT_POLICY_EQUAL_SIZE;
    spec.threshold = opts->split_threshold;
    spec.n_points = opts->n_split_points;
    spec.points = opts->split_points;
    spec.n_stages = world;
    spec.batch_size = batch;
    spec.max_seq_len = context;
    PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &spec, &plan), st, out);
    pb_stage_opts so = {.threads = threads, .weights_dtype = opts->weights_dtype, .kv_dtype = opts->kv_dtype,
                        .max_batch_tokens = (int)mbt};
    PB_CHECK_GOTO(pb_stage_plan_memory(plan, &cfg, ck, bops, &so), st, out);
    const pb_stage_plan *sp = &plan->stages[rank];
    /* on a GPU the stage's bytes are device memory; the host only maps the files */
    if (dev.gpu >= 0)
        PB_CHECK_GOTO(pb_device_check_memory(&dev, sp, rank, batch, context), st, out);
    else
        PB_CHECK_GOTO(check_memory(sp, rank, batch, context), st, out);
    /* the JSON trees of tokenizer.json (20 MiB for a 49k vocabulary), the
     * index and the safetensors headers are freed by now: their pages go
     * back before the weights come in, not stay under the peak */
    pb_heap_release();
    pb_backend_opts bo = {.threads = threads, .device = dev.gpu >= 0 ? dev.gpu : 0};
    PB_CHECK_GOTO(pb_backend_create(kind, &bo, &be), st, out);
    bool cached = false; /* the stage's matrices are in the cache file: the checkpoint's are not read */
    if (wcache) {
        PB_CHECK_GOTO(attach_weights_cache(wcache, dir, ck, sp, opts->weights_dtype, be), st, out);
        cached = be->ops->weights_cached(be);
    }
    PB_CHECK_GOTO(pb_weights_load_ex(ck, sp, !cached, &w), st, out);
    so.n_slots = batch;
    so.max_seq_len = context;
    so.max_batch_tokens = (int)mbt;
    PB_CHECK_GOTO(pb_stage_create(&cfg, sp, w, be, &so, &stage), st, out);
    pb_weights_free(w); /* the stage holds its own copy */
    w = NULL;
    pb_ckpt_close(ck);
    ck = NULL;
    pb_log_verbose("model %s: %s, %d layers, vocab %d, context %d; batch %d in %d chunks, "
                   "%ld tokens per micro-batch, %d threads", dir, cfg.model_type, cfg.n_layers,
                   cfg.vocab_size, context, batch, chunks, mbt, threads);

    pb_mb_limits lim = {.n_slots = batch, .max_seq_len = context, .max_batch_tokens = (int)mbt,
                        .vocab = world > 1 ? cfg.vocab_size : pb_stage_vocab_size(stage),
                        .hidden = cfg.hidden_size, .eos_ids = cfg.eos_ids, .n_eos = cfg.n_eos};
    if (world == 1) {
        PB_CHECK_GOTO(pb_pipe_local_create(stage, &lim, chunks, &pipe), st, out);
    } else {
        /* One stage per rank. */
        int lb[PB_PIPE_MAX_STAGES], le[PB_PIPE_MAX_STAGES];
        if (world > PB_PIPE_MAX_STAGES) {
            st = pb_error(PB_ERR_UNSUPPORTED, "%d ranks: at most %d pipeline stages", world,
                          PB_PIPE_MAX_STAGES);
            goto out;
        }
        for (int i = 0; i < world; i++) {
            lb[i] = plan->stages[i].layer_begin;
            le[i] = plan->stages[i].layer_end;
        }
        pb_pipeline_cfg pc = {.hidden = cfg.hidden_size, .lim = lim,
                              /* every rank must keep the weights and the KV
                               * cache alike, and multiply alike, too */
                              .plan_hash = pb_pipeline_plan_hash(world, lb, le) ^
                                           (0x9e3779b97f4a7c15ull * (uint64_t)(opts->weights_dtype + 1)) ^
                                           (0xc2b2ae3d27d4eb4full * (uint64_t)(kv_dt + 1)) ^
                                           pb_fnv1a(PB_FNV_START, numerics ? numerics : "",
                                                    numerics ? strlen(numerics) : 0),
                              .plan_mem = sp->mem_total};
        if (rank > 0) {
            PB_CHECK_GOTO(pb_pipeline_run_worker(tr, stage, &pc, sp->has_head), st, out);
            goto out;
        }
        PB_CHECK_GOTO(pb_net_pipe_create(tr, stage, &pc, chunks, &pipe, &np), st, out);
    }
    if (done_before)
        goto finish; /* world > 1: the ranks met; the pipe's end releases them */

    pb_engine_opts eo = {.batch_size = batch, .chunks = chunks, .context = context,
                         .eos_ids = cfg.eos_ids, .n_eos = cfg.n_eos,
                         .grace_seconds = opts->grace_seconds,
                         .rope_long_after = cfg.rope_scaling == PB_ROPE_SCALE_LONGROPE ?
                                            cfg.rope_original_max_position : 0,
                         .share_prefixes = !opts->no_prefix_sharing};
    st = pb_runner_run(run, &eo, pipe, tok);
    const pb_run_stats *stats = pb_runner_stats(run);
    if (st == PB_ERR_INTERRUPTED && opts->verbosity >= 1)
        summary(stats, true);
    if (st != PB_OK)
        goto out;
    if (opts->verbosity >= 1)
        summary(stats, np == NULL);
    if (opts->metrics_path)
        PB_CHECK_GOTO(pb_run_write_metrics(opts->metrics_path, stats), st, out);
    if (np) {
        pb_pipeline_report rep;
        PB_CHECK_GOTO(pb_net_pipe_report(np, &rep), st, out);
        if (opts->verbosity >= 1)
            pb_pipeline_report_print(&rep, stderr);
        if (opts->metrics_path)
            PB_CHECK_GOTO(add_pipeline_metrics(opts->metrics_path, &rep), st, out);
    }
finish:
    /* 3 when some records are errors, counting those of an earlier run */
    if (run) {
        const pb_run_stats *s = pb_runner_stats(run);
        *exit_code = s->errors + s->resumed_errors ? 3 : 0;
    }
out:
    if (st != PB_OK && boot && pb_bootstrap_size(boot) > 1 && st != PB_ERR_INTERRUPTED) {
        /* No rank may hang on a failed one: say why, then end the job. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", pb_last_error()[0] ? pb_last_error() : pb_strerror(st));
        pb_log_error("%s", msg);
        pb_error_mark_shown(); /* PMIx_Abort may return before this rank is killed */
        pb_bootstrap_abort(boot, st, msg);
    }
    pb_runner_free(run);
    pb_pipe_free(pipe);
    pb_transport_free(tr);
    pb_stage_free(stage);
    pb_backend_free(be);
    pb_weights_free(w);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_tokenizer_free(tok);
    if (have_base)
        pb_gen_settings_clear(&base);
    if (have_cfg)
        pb_model_config_free(&cfg);
    pb_bootstrap_free(boot);
    free(tok_path);
    free(out_path);
    free(dir);
    return st;
}
