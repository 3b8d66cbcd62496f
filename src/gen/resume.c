/* Resume state and fingerprints (see resume.h). */
#include "config.h"
#include "gen/resume.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "common/util.h"
#include "gen/jbuf.h"
#include "gen/writer.h"

#define HEAD_BYTES ((size_t)1 << 20)
#define TAIL_BYTES ((size_t)1 << 16)

void pb_resume_state_clear(pb_resume_state *s)
{
    free(s->model);
    free(s->input);
    free(s->settings);
    memset(s, 0, sizeof *s);
}

static pb_status get_u64(const cJSON *o, const char *path, const char *key, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740992.0 ||
        v->valuedouble != (double)(uint64_t)v->valuedouble)
        return pb_error(PB_ERR_USAGE, "%s: \"%s\" is missing or not a count", path, key);
    *out = (uint64_t)v->valuedouble;
    return PB_OK;
}

static pb_status get_str(const cJSON *o, const char *path, const char *key, char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsString(v))
        return pb_error(PB_ERR_USAGE, "%s: \"%s\" is missing or not a string", path, key);
    *out = pb_strdup(v->valuestring);
    return *out ? PB_OK : pb_error(PB_ERR_NOMEM, "out of memory");
}

pb_status pb_resume_load(const char *path, pb_resume_state *s, bool *exists)
{
    memset(s, 0, sizeof *s);
    *exists = false;
    char *text = NULL;
    size_t len;
    if (!pb_file_exists(path))
        return PB_OK;
    *exists = true;
    PB_CHECK(pb_read_file(path, (size_t)1 << 20, &text, &len));
    pb_status st = PB_OK;
    cJSON *o = cJSON_ParseWithLength(text, len);
    uint64_t version = 0;
    if (!cJSON_IsObject(o)) {
        st = pb_error(PB_ERR_USAGE, "%s: not a resume state (invalid JSON)", path);
        goto out;
    }
    PB_CHECK_GOTO(get_u64(o, path, "version", &version), st, out);
    if (version != 1) {
        st = pb_error(PB_ERR_USAGE, "%s: state version %llu is not known to this build", path,
                      (unsigned long long)version);
        goto out;
    }
    PB_CHECK_GOTO(get_u64(o, path, "records", &s->records), st, out);
    PB_CHECK_GOTO(get_u64(o, path, "bytes", &s->bytes), st, out);
    PB_CHECK_GOTO(get_u64(o, path, "input_line", &s->input_line), st, out);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "compressed");
    if (!cJSON_IsBool(c)) {
        st = pb_error(PB_ERR_USAGE, "%s: \"compressed\" is missing or not a boolean", path);
        goto out;
    }
    s->compressed = cJSON_IsTrue(c);
    PB_CHECK_GOTO(get_str(o, path, "model", &s->model), st, out);
    PB_CHECK_GOTO(get_str(o, path, "input", &s->input), st, out);
    PB_CHECK_GOTO(get_str(o, path, "settings", &s->settings), st, out);
out:
    cJSON_Delete(o);
    free(text);
    if (st != PB_OK)
        pb_resume_state_clear(s);
    return st;
}

pb_status pb_resume_save(const char *path, const pb_resume_state *s)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_jbuf_printf(&b, "{\"version\": 1, \"records\": %llu, \"bytes\": %llu, \"input_line\": %llu, "
                   "\"compressed\": %s, \"model\": ", (unsigned long long)s->records,
                   (unsigned long long)s->bytes, (unsigned long long)s->input_line,
                   s->compressed ? "true" : "false");
    pb_jbuf_str(&b, s->model, strlen(s->model));
    pb_jbuf_puts(&b, ", \"input\": ");
    pb_jbuf_str(&b, s->input, strlen(s->input));
    pb_jbuf_puts(&b, ", \"settings\": ");
    pb_jbuf_str(&b, s->settings, strlen(s->settings));
    pb_jbuf_puts(&b, "}\n");
    pb_status st = pb_jbuf_status(&b);
    char *tmp = NULL;
    int fd = -1;
    if (st != PB_OK)
        goto out;
    size_t n = strlen(path);
    PB_CHECK_GOTO(pb_malloc(n + sizeof ".tmp", &tmp), st, out);
    memcpy(tmp, path, n);
    memcpy(tmp + n, ".tmp", sizeof ".tmp");
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0) {
        st = pb_error(PB_ERR_IO, "%s: %s", tmp, strerror(errno));
        goto out;
    }
    const char *p = b.data;
    size_t left = b.len;
    while (left) {
        ssize_t k = write(fd, p, left);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            st = pb_error(PB_ERR_IO, "%s: write: %s", tmp, strerror(errno));
            goto out;
        }
        p += k;
        left -= (size_t)k;
    }
    if (fsync(fd) != 0) {
        st = pb_error(PB_ERR_IO, "%s: fsync: %s", tmp, strerror(errno));
        goto out;
    }
    int cfd = fd;
    fd = -1;
    if (close(cfd) != 0) {
        st = pb_error(PB_ERR_IO, "%s: close: %s", tmp, strerror(errno));
        goto out;
    }
    if (rename(tmp, path) != 0) {
        st = pb_error(PB_ERR_IO, "rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    st = pb_writer_sync_dir(path);
out:
    if (fd >= 0) {
        close(fd);
        unlink(tmp);
    } else if (st != PB_OK && tmp) {
        unlink(tmp);
    }
    free(tmp);
    pb_jbuf_free(&b);
    return st;
}

/* Hash of a whole file, or "absent". */
static pb_status file_hash(const char *path, pb_jbuf *b, const char *label)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            pb_jbuf_printf(b, "%s%s=absent", b->len ? " " : "", label);
            return PB_OK;
        }
        return pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
    }
    uint64_t h = PB_FNV_START, size = 0;
    char buf[1 << 16];
    for (;;) {
        ssize_t k = read(fd, buf, sizeof buf);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            int e = errno;
            close(fd);
            return pb_error(PB_ERR_IO, "%s: read: %s", path, strerror(e));
        }
        if (k == 0)
            break;
        h = pb_fnv1a(h, buf, (size_t)k);
        size += (uint64_t)k;
    }
    close(fd);
    pb_jbuf_printf(b, "%s%s=%llu:%016llx", b->len ? " " : "", label, (unsigned long long)size,
                   (unsigned long long)h);
    return PB_OK;
}

pb_status pb_resume_model_fp(const char *dir, const char *index_path, char **out)
{
    *out = NULL;
    static const char *const names[] = {"config.json", "generation_config.json", "tokenizer.json",
                                        "model.safetensors.index.json",
                                        "pytorch_model.bin.index.json", "model.safetensors"};
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_status st = PB_OK;
    for (size_t i = 0; i < sizeof names / sizeof *names && st == PB_OK; i++) {
        /* a single-file checkpoint: its size stands for it (hashing GBs is too slow) */
        char *p = pb_path_join(dir, names[i]);
        if (!p) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            break;
        }
        if (i == 5) {
            struct stat sb;
            if (stat(p, &sb) == 0)
                pb_jbuf_printf(&b, " %s=%llu", names[i], (unsigned long long)sb.st_size);
        } else {
            st = file_hash(p, &b, names[i]);
        }
        free(p);
    }
    if (st == PB_OK && index_path)
        st = file_hash(index_path, &b, "index");
    if (st == PB_OK)
        st = pb_jbuf_status(&b);
    if (st == PB_OK) {
        *out = pb_strdup(b.data);
        if (!*out)
            st = pb_error(PB_ERR_NOMEM, "out of memory");
    }
    pb_jbuf_free(&b);
    return st;
}

pb_status pb_resume_input_fp(const char *in_path, char **out)
{
    *out = NULL;
    if (strcmp(in_path, "-") == 0)
        return pb_error(PB_ERR_USAGE, "--resume needs --in FILE (standard input cannot be "
                        "read again)");
    char real[PATH_MAX];
    struct stat pre;
    /* refuse a pipe or FIFO before opening it: opening a FIFO a second time
     * would wait for a writer that is gone */
    if (stat(in_path, &pre) == 0 && !S_ISREG(pre.st_mode))
        return pb_error(PB_ERR_USAGE, "--resume needs --in to be a regular file (%s is not)",
                        in_path);
    int fd = open(in_path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        pb_status st = pb_error(PB_ERR_IO, "%s: %s", in_path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return st;
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return pb_error(PB_ERR_USAGE, "--resume needs --in to be a regular file (%s is not)",
                        in_path);
    }
    if (!realpath(in_path, real)) {
        pb_status st = pb_error(PB_ERR_IO, "%s: %s", in_path, strerror(errno));
        close(fd);
        return st;
    }
    uint64_t size = (uint64_t)sb.st_size, head = PB_FNV_START, tail = PB_FNV_START;
    char *buf = NULL;
    pb_status st = pb_malloc(HEAD_BYTES, &buf);
    if (st == PB_OK) {
        size_t nh = size < HEAD_BYTES ? (size_t)size : HEAD_BYTES;
        size_t nt = size < TAIL_BYTES ? (size_t)size : TAIL_BYTES;
        ssize_t k1 = pread(fd, buf, nh, 0);
        if (k1 == (ssize_t)nh)
            head = pb_fnv1a(head, buf, nh);
        ssize_t k2 = pread(fd, buf, nt, (off_t)(size - nt));
        if (k2 == (ssize_t)nt)
            tail = pb_fnv1a(tail, buf, nt);
        if (k1 != (ssize_t)nh || k2 != (ssize_t)nt)
            st = pb_error(PB_ERR_IO, "%s: read failed", in_path);
    }
    close(fd);
    free(buf);
    if (st != PB_OK)
        return st;
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_jbuf_printf(&b, "%s size=%llu head=%016llx tail=%016llx", real, (unsigned long long)size,
                   (unsigned long long)head, (unsigned long long)tail);
    st = pb_jbuf_status(&b);
    if (st == PB_OK && !(*out = pb_strdup(b.data)))
        st = pb_error(PB_ERR_NOMEM, "out of memory");
    pb_jbuf_free(&b);
    return st;
}

pb_status pb_resume_settings_fp(const pb_gen_settings *g, int context, int shard_index,
                                int shard_count, bool abort_on_error, char **out)
{
    *out = NULL;
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_jbuf_printf(&b, "max_tokens=%d temperature=%.9g top_k=%d top_p=%.9g min_p=%.9g "
                   "repetition_penalty=%.9g seed=%llu context=%d shard=%d/%d on_error=%s stop=[",
                   g->max_tokens, (double)g->sample.temperature, (int)g->sample.top_k,
                   (double)g->sample.top_p, (double)g->sample.min_p,
                   (double)g->sample.repetition_penalty, (unsigned long long)g->seed, context,
                   shard_count ? shard_index : 0, shard_count, abort_on_error ? "abort" : "record");
    for (int i = 0; i < g->n_stops; i++) {
        if (i)
            pb_jbuf_puts(&b, ",");
        pb_jbuf_str(&b, g->stops[i], strlen(g->stops[i]));
    }
    pb_jbuf_puts(&b, "]");
    if (g->min_tokens || g->ignore_eos) /* absent when off: older fingerprints still match */
        pb_jbuf_printf(&b, " min_tokens=%d ignore_eos=%d", g->min_tokens, (int)g->ignore_eos);
    if (g->n > 1) /* likewise */
        pb_jbuf_printf(&b, " n=%d", g->n);
    if (g->logprobs)
        pb_jbuf_printf(&b, " logprobs=%d", g->top_logprobs);
    if (g->prompt_logprobs)
        pb_jbuf_printf(&b, " prompt_logprobs=%d", g->prompt_top);
    if (g->beams)
        pb_jbuf_printf(&b, " beams=%d length_penalty=%.9g early_stopping=%d", g->beams, (double)g->length_penalty,
                       g->early_stopping);
    if (g->embed)
        pb_jbuf_printf(&b, " embed pooling=%d normalize=%d", g->pooling, (int)g->normalize);
    if (pb_sample_output_penalties(&g->sample))
        pb_jbuf_printf(&b, " frequency_penalty=%.9g presence_penalty=%.9g", (double)g->sample.frequency_penalty,
                       (double)g->sample.presence_penalty);
    pb_status st = pb_jbuf_status(&b);
    if (st == PB_OK && !(*out = pb_strdup(b.data)))
        st = pb_error(PB_ERR_NOMEM, "out of memory");
    pb_jbuf_free(&b);
    return st;
}
