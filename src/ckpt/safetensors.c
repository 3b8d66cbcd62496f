/* safetensors: 8-byte little-endian header length N, N bytes of JSON
 * {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}},
 * then the data buffer. Everything is validated before any offset is used. */
#include "config.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "ckpt/ckpt_impl.h"
#include "common/util.h"

static int cmp_entry_name(const void *a, const void *b)
{
    return strcmp(((const pb_st_entry *)a)->name, ((const pb_st_entry *)b)->name);
}

static int cmp_entry_begin(const void *a, const void *b)
{
    const pb_st_entry *x = *(const pb_st_entry *const *)a, *y = *(const pb_st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* A JSON number that is an exact non-negative integer below 2^53. */
static bool json_u64(const cJSON *it, uint64_t *out)
{
    if (!cJSON_IsNumber(it))
        return false;
    double v = it->valuedouble;
    if (!(v >= 0) || v > 9007199254740992.0 || v != floor(v))
        return false;
    *out = (uint64_t)v;
    return true;
}

pb_status pb_st_parse_header(const char *path, const char *json, size_t len, uint64_t data_size, pb_st_header *out)
{
    pb_status st = PB_OK;
    cJSON *root = NULL;
    pb_st_entry **by_begin = NULL;
    memset(out, 0, sizeof *out);

    if (len == 0 || json[0] != '{')
        return pb_error(PB_ERR_FORMAT, "%s: safetensors header does not start with '{'", path);
    const char *end = NULL;
    root = cJSON_ParseWithLengthOpts(json, len, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        st = pb_error(PB_ERR_FORMAT, "%s: safetensors header is not valid JSON", path);
        goto fail;
    }
    for (const char *p = end; p && p < json + len; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r' && *p != '\0') {
            st = pb_error(PB_ERR_FORMAT, "%s: safetensors header has trailing bytes after the JSON", path);
            goto fail;
        }
    int count = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, root) {
        if (strcmp(it->string, "__metadata__") != 0)
            count++;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)count, sizeof *out->e, &out->e), st, fail);
    cJSON_ArrayForEach(it, root) {
        const char *name = it->string;
        if (strcmp(name, "__metadata__") == 0) {
            if (!cJSON_IsObject(it)) {
                st = pb_error(PB_ERR_FORMAT, "%s: __metadata__ must be an object", path);
                goto fail;
            }
            continue;
        }
        pb_st_entry *e = &out->e[out->n];
        e->name = pb_strdup(name);
        if (!e->name) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto fail;
        }
        out->n++;
        if (!cJSON_IsObject(it)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': header entry is not an object", path, name);
            goto fail;
        }
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *offs = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(dt)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': missing or non-string 'dtype'", path, name);
            goto fail;
        }
        if (pb_dtype_from_name(dt->valuestring, &e->dtype) != 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': unknown dtype \"%s\"%s", path, name, dt->valuestring,
                          strncmp(dt->valuestring, "F8_", 3) == 0 || strncmp(dt->valuestring, "F4", 2) == 0
                              ? " (a pre-quantized checkpoint: of those only fine-grained FP8, F8_E4M3 with "
                                "float scales, is read; else give the model in f32, f16 or bf16: pippy-batch "
                                "quantizes it at load with --weights-dtype int8)"
                              : "");
            goto fail;
        }
        if (!cJSON_IsArray(shape)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': missing or non-list 'shape'", path, name);
            goto fail;
        }
        int nd = cJSON_GetArraySize(shape);
        if (nd > PB_MAX_DIMS) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': %d dimensions (at most %d)", path, name, nd, PB_MAX_DIMS);
            goto fail;
        }
        size_t numel = 1;
        const cJSON *d;
        e->ndim = 0;
        cJSON_ArrayForEach(d, shape) {
            uint64_t v;
            if (!json_u64(d, &v) || v > (uint64_t)INT64_MAX) {
                st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': shape entries must be non-negative integers", path, name);
                goto fail;
            }
            e->shape[e->ndim++] = (int64_t)v;
            if (!pb_mul_ok(numel, (size_t)v, &numel)) {
                st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': shape overflows", path, name);
                goto fail;
            }
        }
        if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 || !json_u64(offs->child, &e->begin) ||
            !json_u64(offs->child->next, &e->end)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': 'data_offsets' must be [begin, end] integers", path, name);
            goto fail;
        }
        if (e->begin > e->end || e->end > data_size) {
            st = pb_error(PB_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] out of range (data buffer is %llu bytes)", path,
                          name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)data_size);
            goto fail;
        }
        size_t nbytes;
        if (!pb_mul_ok(numel, pb_dtype_size(e->dtype), &nbytes) || nbytes != e->end - e->begin) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': shape x %s size = %zu bytes but data_offsets span %llu",
                          path, name, pb_dtype_name(e->dtype), numel * pb_dtype_size(e->dtype),
                          (unsigned long long)(e->end - e->begin));
            goto fail;
        }
    }
    qsort(out->e, (size_t)out->n, sizeof *out->e, cmp_entry_name);
    for (int i = 1; i < out->n; i++)
        if (strcmp(out->e[i - 1].name, out->e[i].name) == 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s' appears twice in the header", path, out->e[i].name);
            goto fail;
        }
    /* spans: sorted, no overlap, no hole, covering the whole buffer */
    PB_CHECK_GOTO(pb_calloc((size_t)out->n, sizeof *by_begin, &by_begin), st, fail);
    for (int i = 0; i < out->n; i++)
        by_begin[i] = &out->e[i];
    qsort(by_begin, (size_t)out->n, sizeof *by_begin, cmp_entry_begin);
    uint64_t pos = 0;
    for (int i = 0; i < out->n; i++) {
        const pb_st_entry *e = by_begin[i];
        if (e->begin < pos) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': data_offsets [%llu, %llu] overlap tensor '%s'", path,
                          e->name, (unsigned long long)e->begin, (unsigned long long)e->end, by_begin[i - 1]->name);
            goto fail;
        }
        if (e->begin > pos) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': hole in the data buffer before offset %llu", path, e->name,
                          (unsigned long long)e->begin);
            goto fail;
        }
        pos = e->end;
    }
    if (pos != data_size) {
        st = pb_error(PB_ERR_FORMAT, "%s: tensors cover %llu bytes but the data buffer is %llu bytes "
                      "(header + buffer must equal the file size)", path, (unsigned long long)pos,
                      (unsigned long long)data_size);
        goto fail;
    }
    free(by_begin);
    cJSON_Delete(root);
    return PB_OK;
fail:
    free(by_begin);
    cJSON_Delete(root);
    pb_st_header_free(out);
    return st;
}

pb_status pb_st_read_header(const char *path, int fd, pb_st_header *out)
{
    struct stat sb;
    unsigned char lenbuf[8];
    char *json = NULL;
    memset(out, 0, sizeof *out);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return pb_error(PB_ERR_IO, "%s: not a regular file", path);
    uint64_t fsize = (uint64_t)sb.st_size;
    if (fsize < 8)
        return pb_error(PB_ERR_FORMAT, "%s: truncated safetensors file (%llu bytes, no header length)", path,
                        (unsigned long long)fsize);
    PB_CHECK(pb_pread_full(path, fd, lenbuf, 8, 0));
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = (hlen << 8) | lenbuf[i];
    if (hlen > fsize - 8)
        return pb_error(PB_ERR_FORMAT, "%s: safetensors header length %llu runs past the end of the file (%llu bytes)",
                        path, (unsigned long long)hlen, (unsigned long long)fsize);
    if (hlen > PB_CKPT_MAX_META)
        return pb_error(PB_ERR_FORMAT, "%s: safetensors header length %llu is too large", path,
                        (unsigned long long)hlen);
    PB_CHECK(pb_malloc((size_t)hlen + 1, &json));
    pb_status st = pb_pread_full(path, fd, json, (size_t)hlen, 8);
    if (st == PB_OK) {
        json[hlen] = '\0';
        st = pb_st_parse_header(path, json, (size_t)hlen, fsize - 8 - hlen, out);
    }
    free(json);
    if (st != PB_OK)
        return st;
    out->data_start = 8 + hlen;
    out->file_size = fsize;
    return PB_OK;
}

const pb_st_entry *pb_st_find(const pb_st_header *h, const char *name)
{
    int lo = 0, hi = h->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(h->e[mid].name, name);
        if (c == 0)
            return &h->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

void pb_st_header_free(pb_st_header *h)
{
    if (!h)
        return;
    for (int i = 0; i < h->n; i++)
        free(h->e[i].name);
    free(h->e);
    memset(h, 0, sizeof *h);
}
