/* Finding a model folder's checkpoint and listing its tensors: from the index
 * json (sharded) or the single file's header, never from shard data. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ckpt/ckpt_impl.h"
#include "common/log.h"
#include "common/util.h"

/* One tensor as the checkpoint lists it, before matching. */
typedef struct raw_entry {
    const char *name;
    const char *canon;
    int file;
    bool exact;                /* dtype/shape known (single file) */
    pb_dtype dtype;
    int ndim;
    int64_t shape[PB_MAX_DIMS];
    uint64_t nbytes;
} raw_entry;

static bool ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_raw_canon(const void *a, const void *b)
{
    return strcmp(((const raw_entry *)a)->canon, ((const raw_entry *)b)->canon);
}

/* "d0, d1, ..." of a shape into buf (as many dims as fit) */
static void fmt_shape(char *buf, size_t cap, const int64_t *shape, int ndim)
{
    size_t o = 0;
    buf[0] = '\0';
    for (int d = 0; d < ndim && o + 24 < cap; d++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", d ? ", " : "", (long long)shape[d]);
}

/* An FP8 matrix's scales: canon + suffix ("_scale_inv", "_scale") in raw (sorted by canon), or NULL */
static const raw_entry *find_scale(const raw_entry *raw, int n_raw, const char *canon, const char *suffix)
{
    char name[512];
    if ((size_t)snprintf(name, sizeof name, "%s%s", canon, suffix) >= sizeof name)
        return NULL;
    const raw_entry key = {.canon = name};
    return bsearch(&key, raw, (size_t)n_raw, sizeof *raw, cmp_raw_canon);
}

const char *pb_ckpt_format_name(pb_ckpt_format f)
{
    return f == PB_CKPT_SAFETENSORS ? "safetensors" : "pytorch .bin";
}

pb_ckpt_format pb_ckpt_get_format(const pb_ckpt *ck) { return ck->fmt; }
const char *pb_ckpt_source(const pb_ckpt *ck) { return ck->source; }
int pb_ckpt_n_files(const pb_ckpt *ck) { return ck->n_files; }
const char *pb_ckpt_file_path(const pb_ckpt *ck, int i) { return i >= 0 && i < ck->n_files ? ck->files[i] : NULL; }
int pb_ckpt_n_tensors(const pb_ckpt *ck) { return ck->n_tensors; }
uint64_t pb_ckpt_param_bytes(const pb_ckpt *ck) { return ck->total_bytes; }
bool pb_ckpt_sizes_exact(const pb_ckpt *ck) { return ck->sizes_exact; }

bool pb_ckpt_tensor_info(const pb_ckpt *ck, const char *canonical, pb_dtype *dtype, int *ndim, int64_t shape[2])
{
    for (int i = 0; i < ck->n_tensors; i++) {
        const pb_ckpt_tensor *t = &ck->t[i];
        if (strcmp(t->canon, canonical) != 0)
            continue;
        uint64_t es = t->numel ? t->nbytes / t->numel : 4;
        *dtype = es == 1 ? PB_DT_F8_E4M3 : es == 2 ? PB_DT_BF16 : es == 8 ? PB_DT_F64 : PB_DT_F32;
        *ndim = t->ndim;
        shape[0] = t->shape[0];
        shape[1] = t->ndim > 1 ? t->shape[1] : 0;
        return true;
    }
    return false;
}

bool pb_ckpt_tensor_in_stage(const pb_ckpt_tensor *t, int layer_begin, int layer_end, bool has_embed, bool has_head)
{
    switch (t->role) {
    case PB_ROLE_EMBED: return has_embed || (t->tied_embed && has_head);
    case PB_ROLE_LAYER: return t->layer >= layer_begin && t->layer < layer_end;
    case PB_ROLE_HEAD: return has_head;
    }
    return false;
}

void pb_ckpt_close(pb_ckpt *ck)
{
    if (!ck)
        return;
    for (int i = 0; i < ck->n_files; i++)
        free(ck->files[i]);
    free(ck->files);
    for (int i = 0; i < ck->n_tensors; i++) {
        free(ck->t[i].name);
        free(ck->t[i].canon);
    }
    free(ck->t);
    free(ck->source);
    free(ck);
}

/* Directory part of a path ("." when none). */
static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return pb_strdup(".");
    size_t n = (size_t)(slash - path);
    if (n == 0)
        n = 1;
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, path, n);
        d[n] = '\0';
    }
    return d;
}

/* A shard name from an index must stay inside the index's folder. */
static bool safe_relative(const char *name)
{
    if (!*name || name[0] == '/')
        return false;
    for (const char *p = name; *p;) {
        const char *q = strchr(p, '/');
        size_t n = q ? (size_t)(q - p) : strlen(p);
        if ((n == 2 && p[0] == '.' && p[1] == '.') || n == 0)
            return false;
        p += n + (q ? 1 : 0);
    }
    return true;
}

/* Parse an index json into raw entries (names point into *root) and files. */
static pb_status read_index(pb_ckpt *ck, cJSON **root_out, raw_entry **raw_out, int *n_raw, uint64_t *total_size,
                            bool *has_total)
{
    char *text = NULL, *dir = NULL;
    cJSON *root = NULL;
    raw_entry *raw = NULL;
    const char **names = NULL;
    pb_status st = PB_OK;
    const char *path = ck->source;
    *has_total = false;

    PB_CHECK_GOTO(pb_read_file(path, PB_CKPT_MAX_META, &text, NULL), st, fail);
    root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        st = pb_error(PB_ERR_FORMAT, "%s: index is not a JSON object", path);
        goto fail;
    }
    const cJSON *meta = cJSON_GetObjectItemCaseSensitive(root, "metadata");
    if (meta && !cJSON_IsNull(meta)) {
        if (!cJSON_IsObject(meta)) {
            st = pb_error(PB_ERR_FORMAT, "%s: field 'metadata' must be an object", path);
            goto fail;
        }
        const cJSON *ts = cJSON_GetObjectItemCaseSensitive(meta, "total_size");
        if (ts && !cJSON_IsNull(ts)) {
            if (!cJSON_IsNumber(ts) || !(ts->valuedouble >= 0) || ts->valuedouble > 9.0e18) {
                st = pb_error(PB_ERR_FORMAT, "%s: field 'metadata.total_size' must be a non-negative integer", path);
                goto fail;
            }
            *total_size = (uint64_t)ts->valuedouble;
            *has_total = true;
        }
    }
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) {
        st = pb_error(PB_ERR_FORMAT, "%s: field 'weight_map' is missing or not an object", path);
        goto fail;
    }
    int n = cJSON_GetArraySize(wm);
    if (n == 0) {
        st = pb_error(PB_ERR_FORMAT, "%s: field 'weight_map' is empty", path);
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *raw, &raw), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *names, &names), st, fail);
    int i = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, wm) {
        if (!cJSON_IsString(it)) {
            st = pb_error(PB_ERR_FORMAT, "%s: weight_map entry for tensor '%s' is not a file name", path, it->string);
            goto fail;
        }
        if (!safe_relative(it->valuestring)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': shard file name \"%s\" must be a relative path inside the model folder",
                          path, it->string, it->valuestring);
            goto fail;
        }
        raw[i].name = it->string;
        raw[i].file = -1;
        names[i] = it->valuestring;
        i++;
    }
    /* unique sorted file list */
    const char **sorted = NULL;
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *sorted, &sorted), st, fail);
    memcpy(sorted, names, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_str);
    int nf = 0;
    for (int k = 0; k < n; k++)
        if (k == 0 || strcmp(sorted[k], sorted[k - 1]) != 0)
            sorted[nf++] = sorted[k];
    dir = dir_of(path);
    st = dir ? pb_calloc((size_t)nf, sizeof *ck->files, &ck->files) : pb_error(PB_ERR_NOMEM, "out of memory");
    if (st != PB_OK) {
        free(sorted);
        goto fail;
    }
    for (int k = 0; k < nf; k++) {
        ck->files[k] = pb_path_join(dir, sorted[k]);
        if (!ck->files[k]) {
            free(sorted);
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto fail;
        }
        ck->n_files++;
    }
    for (int k = 0; k < n; k++) {
        const char **hit = bsearch(&names[k], sorted, (size_t)nf, sizeof *sorted, cmp_str);
        raw[k].file = (int)(hit - sorted);
    }
    free(sorted);
    free(names);
    free(dir);
    free(text);
    *root_out = root;
    *raw_out = raw;
    *n_raw = n;
    return PB_OK;
fail:
    free(names);
    free(raw);
    free(dir);
    cJSON_Delete(root);
    free(text);
    return st;
}

static pb_status open_fd(const char *path, int *fd)
{
    *fd = open(path, O_RDONLY | O_CLOEXEC);
    if (*fd < 0)
        return pb_error(errno == ENOENT ? PB_ERR_CONFIG : PB_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    return PB_OK;
}

static size_t numel_of(const int64_t *shape, int ndim)
{
    size_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (!pb_mul_ok(n, (size_t)shape[i], &n))
            return SIZE_MAX;
    return n;
}

pb_status pb_ckpt_open(const char *model_dir, const char *index_path, const pb_model_config *cfg, pb_ckpt **out)
{
    pb_status st = PB_OK;
    pb_ckpt *ck = NULL;
    cJSON *index_root = NULL;
    raw_entry *raw = NULL;
    int n_raw = 0;
    pb_expected *exp = NULL;
    int n_exp = 0;
    pb_st_header sth = {0};
    pb_bin_archive bin = {0};
    uint64_t total_size = 0;
    bool has_total = false, is_index = false;
    int fd = -1;

    *out = NULL;
    PB_CHECK(pb_calloc(1, sizeof *ck, &ck));
    ck->family = cfg->family;
    ck->n_layers = cfg->n_layers;
    ck->tied = cfg->tie_word_embeddings;

    /* which file */
    if (index_path) {
        ck->source = pb_strdup(index_path);
        if (!ck->source) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto fail;
        }
        if (!pb_file_exists(index_path)) {
            st = pb_error(PB_ERR_CONFIG, "%s: index file not found", index_path);
            goto fail;
        }
        is_index = ends_with(index_path, ".json");
        ck->fmt = ends_with(index_path, ".safetensors") ? PB_CKPT_SAFETENSORS : PB_CKPT_TORCH_BIN;
    } else {
        static const struct { const char *name; bool index; pb_ckpt_format fmt; } cands[] = {
            {"model.safetensors.index.json", true, PB_CKPT_SAFETENSORS},
            {"model.safetensors", false, PB_CKPT_SAFETENSORS},
            {"pytorch_model.bin.index.json", true, PB_CKPT_TORCH_BIN},
            {"pytorch_model.bin", false, PB_CKPT_TORCH_BIN},
        };
        for (size_t i = 0; i < sizeof cands / sizeof cands[0] && !ck->source; i++) {
            char *p = pb_path_join(model_dir, cands[i].name);
            if (!p) {
                st = pb_error(PB_ERR_NOMEM, "out of memory");
                goto fail;
            }
            if (pb_file_exists(p)) {
                ck->source = p;
                is_index = cands[i].index;
                ck->fmt = cands[i].fmt;
            } else {
                free(p);
            }
        }
        if (!ck->source) {
            st = pb_error(PB_ERR_CONFIG,
                          "%s: no weights found (model.safetensors.index.json, model.safetensors, "
                          "pytorch_model.bin.index.json or pytorch_model.bin)", model_dir);
            goto fail;
        }
    }

    if (is_index) {
        PB_CHECK_GOTO(read_index(ck, &index_root, &raw, &n_raw, &total_size, &has_total), st, fail);
        /* format from the shard names */
        bool st_files = true, bin_files = true;
        for (int i = 0; i < ck->n_files; i++) {
            st_files &= ends_with(ck->files[i], ".safetensors");
            bin_files &= ends_with(ck->files[i], ".bin");
        }
        if (!st_files && !bin_files) {
            st = pb_error(PB_ERR_UNSUPPORTED, "%s: shard files must all be .safetensors or all .bin", ck->source);
            goto fail;
        }
        ck->fmt = st_files ? PB_CKPT_SAFETENSORS : PB_CKPT_TORCH_BIN;
    } else {
        PB_CHECK_GOTO(pb_calloc(1, sizeof *ck->files, &ck->files), st, fail);
        ck->files[0] = pb_strdup(ck->source);
        if (!ck->files[0]) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto fail;
        }
        ck->n_files = 1;
        PB_CHECK_GOTO(open_fd(ck->source, &fd), st, fail);
        int n = 0;
        if (ck->fmt == PB_CKPT_SAFETENSORS) {
            PB_CHECK_GOTO(pb_st_read_header(ck->source, fd, &sth), st, fail);
            n = sth.n;
        } else {
            PB_CHECK_GOTO(pb_bin_open(ck->source, fd, &bin), st, fail);
            n = bin.n;
        }
        close(fd);
        fd = -1;
        PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *raw, &raw), st, fail);
        for (int i = 0; i < n; i++) {
            raw_entry *r = &raw[i];
            r->file = 0;
            r->exact = true;
            if (ck->fmt == PB_CKPT_SAFETENSORS) {
                const pb_st_entry *e = &sth.e[i];
                r->name = e->name;
                r->dtype = e->dtype;
                r->ndim = e->ndim;
                memcpy(r->shape, e->shape, sizeof r->shape);
                r->nbytes = e->end - e->begin;
            } else {
                const pb_bin_tensor *t = &bin.t[i];
                r->name = t->name;
                r->dtype = t->dtype;
                r->ndim = t->ndim;
                memcpy(r->shape, t->shape, sizeof r->shape);
                r->nbytes = numel_of(t->shape, t->ndim) * pb_dtype_size(t->dtype); /* validated by the unpickler */
            }
        }
        n_raw = n;
        ck->sizes_exact = true;
    }

    /* match the checkpoint's names against the family's expected tensors */
    for (int i = 0; i < n_raw; i++)
        raw[i].canon = pb_ckpt_canonical_name(cfg->family, raw[i].name);
    qsort(raw, (size_t)n_raw, sizeof *raw, cmp_raw_canon);
    for (int i = 1; i < n_raw; i++)
        if (strcmp(raw[i].canon, raw[i - 1].canon) == 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensors '%s' and '%s' have the same name once the prefix is removed",
                          ck->source, raw[i - 1].name, raw[i].name);
            goto fail;
        }
    PB_CHECK_GOTO(pb_names_expected(cfg, &exp, &n_exp), st, fail);
    /* an FP8 checkpoint: a matrix and its scales */
    PB_CHECK_GOTO(pb_calloc((size_t)n_exp * (cfg->fp8 ? 2 : 1), sizeof *ck->t, &ck->t), st, fail);
    bool *used = NULL;
    PB_CHECK_GOTO(pb_calloc((size_t)n_raw, sizeof *used, &used), st, fail);
    uint64_t exp_numel = 0;
    for (int i = 0; i < n_exp; i++) {
        const pb_expected *e = &exp[i];
        raw_entry key = {.canon = e->name};
        raw_entry *r = bsearch(&key, raw, (size_t)n_raw, sizeof *raw, cmp_raw_canon);
        if (!r) {
            /* transformers 5.x's in-memory experts (one [n_experts, ...] tensor) are not read:
             * save_pretrained converts them to the per-expert tensors hub checkpoints have */
            bool fused = false;
            for (int k = 0; k < n_raw && cfg->n_experts > 0; k++)
                fused = fused || strstr(raw[k].canon, "experts.gate_up_proj") != NULL;
            st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' is missing (a %s model with this config.json needs it)%s",
                          ck->source, e->name, cfg->model_type,
                          fused ? "; fused 3-D expert tensors (experts.gate_up_proj / down_proj) are not supported: "
                                  "save the model with save_pretrained, which writes one tensor per expert" : "");
            free(used);
            goto fail;
        }
        used[r - raw] = true;
        size_t numel = numel_of(e->shape, e->ndim);
        if (r->exact) {
            bool same = r->ndim == e->ndim;
            for (int d = 0; same && d < e->ndim; d++)
                same = r->shape[d] == e->shape[d];
            if (!same) {
                char got[128], want[64];
                fmt_shape(got, sizeof got, r->shape, r->ndim);
                fmt_shape(want, sizeof want, e->shape, e->ndim);
                st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' has shape [%s] but config.json implies [%s]", ck->source,
                              r->name, got, want);
                free(used);
                goto fail;
            }
            if (r->dtype == PB_DT_F8_E4M3 && (!cfg->fp8 || !find_scale(raw, n_raw, e->name,
                                                                        cfg->fp8_scale))) {
                st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' is F8_E4M3 but %s%s%s", ck->source, r->name,
                              cfg->fp8 ? "its scales ('..."
                                       : "config.json has no FP8 quantization_config (quant_method \"fp8\" or "
                                         "compressed-tensors)",
                              cfg->fp8 ? cfg->fp8_scale : "", cfg->fp8 ? "') are missing" : "");
                free(used);
                goto fail;
            }
            if (r->dtype != PB_DT_F32 && r->dtype != PB_DT_F16 && r->dtype != PB_DT_BF16 &&
                !(r->dtype == PB_DT_F8_E4M3 && cfg->fp8)) {
                st = pb_error(PB_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 needed)", ck->source,
                              r->name, pb_dtype_name(r->dtype));
                free(used);
                goto fail;
            }
        }
        pb_ckpt_tensor *t = &ck->t[ck->n_tensors++];
        t->name = pb_strdup(r->name);
        t->canon = pb_strdup(e->name);
        if (!t->name || !t->canon) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            free(used);
            goto fail;
        }
        t->file = r->file;
        t->role = e->role;
        t->layer = e->layer;
        t->tied_embed = e->tied_embed;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->numel = numel;
        t->nbytes = r->exact ? r->nbytes : 0;
        exp_numel += numel;
        const raw_entry *sr =
            cfg->fp8 && e->ndim == 2 ? find_scale(raw, n_raw, e->name, cfg->fp8_scale) : NULL;
        if (sr) { /* FP8: the scales too, in the same stage */
            t->fp8 = 1;
            used[sr - raw] = true;
            pb_ckpt_tensor *s = &ck->t[ck->n_tensors++];
            *s = *t;
            s->fp8 = 2;
            s->name = pb_strdup(sr->name);
            s->canon = pb_strdup(sr->canon);
            if (!s->name || !s->canon) {
                st = pb_error(PB_ERR_NOMEM, "out of memory");
                free(used);
                goto fail;
            }
            s->file = sr->file;
            const int br = cfg->fp8_block[0], bc = cfg->fp8_block[1], one = !br && !bc;
            s->ndim = one ? 0 : 2; /* a grid of blocks (0: the whole dimension), or one scale */
            s->shape[0] = br ? (e->shape[0] + br - 1) / br : 1;
            s->shape[1] = bc ? (e->shape[1] + bc - 1) / bc : 1;
            s->numel = (uint64_t)s->shape[0] * (uint64_t)s->shape[1];
            s->nbytes = sr->exact ? sr->nbytes : 0;
            /* a header's shape: as the blocks give it (one scale: [] or [1]), of a float dtype */
            if (sr->exact && !(sr->ndim == s->ndim && (one || (sr->shape[0] == s->shape[0] &&
                                                               sr->shape[1] == s->shape[1]))) &&
                !(one && sr->ndim == 1 && sr->shape[0] == 1)) {
                char got[64];
                fmt_shape(got, sizeof got, sr->shape, sr->ndim);
                st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' has shape [%s] but blocks of %d x %d (0: all; "
                              "quantization_config's weight_block_size or strategy) of its [%lld, %lld] matrix give "
                              "[%lld, %lld]", ck->source, sr->name, got, br, bc, (long long)e->shape[0],
                              (long long)e->shape[1], (long long)s->shape[0], (long long)s->shape[1]);
                free(used);
                goto fail;
            }
            if (sr->exact && sr->dtype != PB_DT_F32 && sr->dtype != PB_DT_F16 && sr->dtype != PB_DT_BF16) {
                st = pb_error(PB_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (FP8 scales: F32, F16 or BF16)",
                              ck->source, sr->name, pb_dtype_name(sr->dtype));
                free(used);
                goto fail;
            }
            if (one) /* one scale, as stored ([] or [1]) */
                s->ndim = sr->exact ? sr->ndim : 0;
        }
    }
    for (int i = 0; i < n_raw; i++)
        if (!used[i] && !pb_names_is_buffer(raw[i].canon))
            pb_log_verbose("%s: ignoring tensor '%s' (not used by a %s model%s)", ck->source, raw[i].name,
                           cfg->model_type, ck->tied ? " with tied embeddings" : "");
    free(used);

    if (!ck->sizes_exact) {
        /* Stored bytes from the index alone: element size = total_size / parameters when
         * that is a whole dtype size, else the config's torch_dtype. */
        uint64_t elem = 0;
        if (has_total && exp_numel && total_size % exp_numel == 0) {
            uint64_t q = total_size / exp_numel;
            if (q == 1 || q == 2 || q == 4 || q == 8)
                elem = q;
        }
        if (!elem)
            elem = strcmp(cfg->torch_dtype, "float16") == 0 || strcmp(cfg->torch_dtype, "bfloat16") == 0 ? 2 : 4;
        for (int i = 0; i < ck->n_tensors; i++) /* an FP8 matrix: a byte an element; its scales f32 */
            ck->t[i].nbytes = ck->t[i].numel * (ck->t[i].fp8 == 1 ? 1 : ck->t[i].fp8 == 2 ? 4 : elem);
    }
    for (int i = 0; i < ck->n_tensors; i++)
        ck->total_bytes += ck->t[i].nbytes;

    free(exp);
    free(raw);
    cJSON_Delete(index_root);
    pb_st_header_free(&sth);
    pb_bin_archive_free(&bin);
    *out = ck;
    return PB_OK;
fail:
    if (fd >= 0)
        close(fd);
    free(exp);
    free(raw);
    cJSON_Delete(index_root);
    pb_st_header_free(&sth);
    pb_bin_archive_free(&bin);
    pb_ckpt_close(ck);
    return st;
}
