/* Output writer (see writer.h). */
#include "config.h"
#include "gen/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <zstd.h>

#include "common/log.h"
#include "common/util.h"
#include "gen/jbuf.h"

#define PLAIN_FLUSH (1u << 20)

typedef struct slot {
    char *line;
    size_t len;
    bool used;
} slot;

struct pb_writer {
    pb_writer_opts o;
    char *path, *partial;   /* partial NULL for stdout */
    int fd;
    bool is_stdout;
    ZSTD_CCtx *cctx;
    int workers;
    void *zout;             /* compressed output staging */
    size_t zout_cap;
    pb_jbuf plain;          /* uncompressed staging */
    slot *ring;             /* reorder buffer, reorder_cap entries, indexed by seq % cap */
    uint64_t next;          /* next seq to write */
    uint64_t records, bytes;
    int frame_n;            /* records in the open frame */
    double frame_t0;
    pb_writer_frame_fn hook;
    void *hook_ctx;
    bool failed;            /* a write failed: the file's tail is not a frame end */
};

static pb_status write_all(pb_writer *w, const void *p, size_t n)
{
    const char *c = p;
    while (n) {
        ssize_t k = write(w->fd, c, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            w->failed = true;
            return pb_error(PB_ERR_IO, "%s: write: %s", w->partial ? w->partial : "<stdout>",
                            strerror(errno));
        }
        c += k;
        n -= (size_t)k;
        w->bytes += (uint64_t)k;
    }
    return PB_OK;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

static void writer_free(pb_writer *w)
{
    if (w->fd >= 0 && !w->is_stdout)
        close(w->fd);
    ZSTD_freeCCtx(w->cctx);
    free(w->zout);
    free(w->ring);
    free(w->partial);
    free(w->path);
    pb_jbuf_free(&w->plain);
    free(w);
}

/* Everything but the file: names, reorder buffer, compressor. */
static pb_status writer_new(const char *path, const pb_writer_opts *o, pb_writer **out)
{
    *out = NULL;
    pb_status st;
    pb_writer *w;
    if (o->frame_records < 1 || !(o->frame_seconds > 0) || o->reorder_cap < 1)
        return pb_error(PB_ERR_INTERNAL, "writer: bad options");
    PB_CHECK(pb_calloc(1, sizeof *w, &w));
    w->o = *o;
    w->fd = -1;
    pb_jbuf_init(&w->plain);
    w->path = pb_strdup(path);
    if (!w->path) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)o->reorder_cap, sizeof *w->ring, &w->ring), st, fail);
    if (strcmp(path, "-") == 0) {
        w->is_stdout = true;
        w->fd = 1;
    } else {
        size_t n = strlen(path);
        PB_CHECK_GOTO(pb_malloc(n + sizeof ".partial", &w->partial), st, fail);
        memcpy(w->partial, path, n);
        memcpy(w->partial + n, ".partial", sizeof ".partial");
        if (ends_with(path, ".zst")) {
            w->cctx = ZSTD_createCCtx();
            if (!w->cctx) {
                st = pb_error(PB_ERR_NOMEM, "zstd: cannot create a compression context");
                goto fail;
            }
            size_t r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel,
                                              o->zstd_level ? o->zstd_level : 3);
            if (!ZSTD_isError(r))
                r = ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_checksumFlag, 1);
            if (ZSTD_isError(r)) {
                st = pb_error(PB_ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(r));
                goto fail;
            }
            int want = o->zstd_workers < 0 ? 1 : o->zstd_workers;
            ZSTD_bounds b = ZSTD_cParam_getBounds(ZSTD_c_nbWorkers);
            if (want > 0 && !ZSTD_isError(b.error) && b.upperBound > 0) {
                if (want > b.upperBound)
                    want = b.upperBound;
                if (!ZSTD_isError(ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_nbWorkers, want)))
                    w->workers = want;
            }
            w->zout_cap = ZSTD_CStreamOutSize();
            PB_CHECK_GOTO(pb_malloc(w->zout_cap, &w->zout), st, fail);
        }
    }
    w->frame_t0 = pb_now();
    *out = w;
    return PB_OK;
fail:
    writer_free(w);
    return st;
}

pb_status pb_writer_open(const char *path, const pb_writer_opts *o, pb_writer **out)
{
    pb_writer *w;
    PB_CHECK(writer_new(path, o, &w));
    if (!w->is_stdout) {
        w->fd = open(w->partial, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
        if (w->fd < 0) {
            pb_status st;
            if (errno == EEXIST)
                st = pb_error(PB_ERR_USAGE,
                              "%s exists: an interrupted run left it; continue it with --resume "
                              "or remove it", w->partial);
            else
                st = pb_error(PB_ERR_IO, "%s: %s", w->partial, strerror(errno));
            writer_free(w);
            return st;
        }
    }
    *out = w;
    return PB_OK;
}

/* Split decoded bytes into lines for the resume check. */
typedef struct line_scan {
    pb_jbuf cur;
    uint64_t lines;
    pb_writer_line_fn fn;
    void *ctx;
} line_scan;

static pb_status scan_bytes(line_scan *ls, const char *p, size_t n)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t k = nl ? (size_t)(nl - p) : n;
        pb_jbuf_put(&ls->cur, p, k);
        PB_CHECK(pb_jbuf_status(&ls->cur));
        if (!nl)
            return PB_OK;
        if (ls->fn)
            ls->fn(ls->ctx, ls->cur.data ? ls->cur.data : "", ls->cur.len);
        pb_jbuf_reset(&ls->cur);
        ls->lines++;
        p += k + 1;
        n -= k + 1;
    }
    return PB_OK;
}

/* Read the first `bytes` bytes of fd and check they are `records` complete
 * lines (zstd: complete, checksummed frames holding them). */
#define PB_WRITER_ANY_RECORDS UINT64_MAX /* check_prefix: any number of lines */
static pb_status check_prefix(pb_writer *w, const char *name, uint64_t records, uint64_t bytes,
                              pb_writer_line_fn fn, void *ctx)
{
    pb_status st = PB_OK;
    line_scan ls = {.fn = fn, .ctx = ctx};
    pb_jbuf_init(&ls.cur);
    ZSTD_DStream *ds = NULL;
    size_t inb_cap = 1 << 17, outb_cap = ZSTD_DStreamOutSize();
    char *inb = NULL, *outb = NULL;
    PB_CHECK_GOTO(pb_malloc(inb_cap, &inb), st, out);
    PB_CHECK_GOTO(pb_malloc(outb_cap, &outb), st, out);
    if (w->cctx) {
        ds = ZSTD_createDStream();
        if (!ds || ZSTD_isError(ZSTD_initDStream(ds))) {
            st = pb_error(PB_ERR_NOMEM, "zstd: cannot create a decompression context");
            goto out;
        }
    }
    uint64_t done = 0;
    size_t last = 0; /* zstd: 0 when the input so far ends at a frame end */
    while (done < bytes) {
        size_t want = bytes - done < inb_cap ? (size_t)(bytes - done) : inb_cap;
        ssize_t k = pread(w->fd, inb, want, (off_t)done);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0) {
            st = pb_error(PB_ERR_IO, "%s: read: %s", name, strerror(errno));
            goto out;
        }
        if (k == 0) {
            st = pb_error(PB_ERR_USAGE, "%s: %llu bytes, but its state file records %llu: "
                          "the file was cut or replaced; cannot resume", name,
                          (unsigned long long)done, (unsigned long long)bytes);
            goto out;
        }
        done += (uint64_t)k;
        if (!ds) {
            PB_CHECK_GOTO(scan_bytes(&ls, inb, (size_t)k), st, out);
            continue;
        }
        ZSTD_inBuffer in = {inb, (size_t)k, 0};
        while (in.pos < in.size) {
            ZSTD_outBuffer o = {outb, outb_cap, 0};
            last = ZSTD_decompressStream(ds, &o, &in);
            if (ZSTD_isError(last)) {
                st = pb_error(PB_ERR_USAGE, "%s: the first %llu bytes are not intact zstd "
                              "frames (%s); cannot resume", name,
                              (unsigned long long)bytes, ZSTD_getErrorName(last));
                goto out;
            }
            PB_CHECK_GOTO(scan_bytes(&ls, outb, o.pos), st, out);
        }
    }
    if (ds && bytes > 0 && last != 0) {
        /* drain what the decoder still holds, then the frame must be complete */
        for (;;) {
            ZSTD_inBuffer in = {NULL, 0, 0};
            ZSTD_outBuffer o = {outb, outb_cap, 0};
            last = ZSTD_decompressStream(ds, &o, &in);
            if (ZSTD_isError(last))
                break;
            PB_CHECK_GOTO(scan_bytes(&ls, outb, o.pos), st, out);
            if (o.pos == 0)
                break;
        }
        if (last != 0) {
            st = pb_error(PB_ERR_USAGE, "%s: byte %llu is not the end of a zstd frame; "
                          "cannot resume", name, (unsigned long long)bytes);
            goto out;
        }
    }
    if (ls.cur.len || (records != PB_WRITER_ANY_RECORDS && ls.lines != records))
        st = pb_error(PB_ERR_USAGE, "%s: the first %llu bytes hold %llu%s records, but its state "
                      "file records %llu; cannot resume", name, (unsigned long long)bytes,
                      (unsigned long long)ls.lines, ls.cur.len ? " and a partial line of" : "",
                      (unsigned long long)records);
out:
    ZSTD_freeDStream(ds);
    free(inb);
    free(outb);
    pb_jbuf_free(&ls.cur);
    return st;
}

pb_status pb_writer_resume(const char *path, const pb_writer_opts *o, uint64_t records,
                           uint64_t bytes, pb_writer_line_fn line_fn, void *line_ctx,
                           pb_writer **out)
{
    *out = NULL;
    pb_writer *w;
    pb_status st;
    PB_CHECK(writer_new(path, o, &w));
    if (w->is_stdout) {
        st = pb_error(PB_ERR_USAGE, "standard output cannot be resumed");
        goto fail;
    }
    w->fd = open(w->partial, O_RDWR | O_CLOEXEC);
    if (w->fd < 0) {
        st = pb_error(errno == ENOENT ? PB_ERR_USAGE : PB_ERR_IO, "%s: %s", w->partial,
                      strerror(errno));
        goto fail;
    }
    PB_CHECK_GOTO(check_prefix(w, w->partial, records, bytes, line_fn, line_ctx), st, fail);
    /* drop whatever followed the last durable frame end */
    if (ftruncate(w->fd, (off_t)bytes) != 0 || lseek(w->fd, (off_t)bytes, SEEK_SET) < 0 ||
        fsync(w->fd) != 0) {
        st = pb_error(PB_ERR_IO, "%s: cannot cut at byte %llu: %s", w->partial,
                      (unsigned long long)bytes, strerror(errno));
        goto fail;
    }
    w->records = records;
    w->bytes = bytes;
    w->next = records;
    *out = w;
    return PB_OK;
fail:
    writer_free(w);
    return st;
}

pb_status pb_writer_scan(const char *path, const pb_writer_opts *o, pb_writer_line_fn line_fn,
                         void *line_ctx)
{
    pb_writer *w;
    pb_status st;
    PB_CHECK(writer_new(path, o, &w));
    struct stat sb;
    w->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (w->fd < 0 || fstat(w->fd, &sb) != 0) {
        st = pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
        goto out;
    }
    st = check_prefix(w, path, PB_WRITER_ANY_RECORDS, (uint64_t)sb.st_size, line_fn, line_ctx);
out:
    writer_free(w);
    return st;
}

void pb_writer_set_frame_hook(pb_writer *w, pb_writer_frame_fn fn, void *ctx)
{
    w->hook = fn;
    w->hook_ctx = ctx;
}

/* Feed src to the compressor with the given directive until consumed (and,
 * for ZSTD_e_end, until the frame is fully flushed). */
static pb_status zfeed(pb_writer *w, const void *src, size_t n, ZSTD_EndDirective mode)
{
    ZSTD_inBuffer in = {src, n, 0};
    for (;;) {
        ZSTD_outBuffer outb = {w->zout, w->zout_cap, 0};
        size_t rem = ZSTD_compressStream2(w->cctx, &outb, &in, mode);
        if (ZSTD_isError(rem))
            return pb_error(PB_ERR_INTERNAL, "zstd: %s", ZSTD_getErrorName(rem));
        if (outb.pos)
            PB_CHECK(write_all(w, w->zout, outb.pos));
        if (mode == ZSTD_e_end ? rem == 0 : in.pos == in.size)
            return PB_OK;
    }
}

static pb_status flush_plain(pb_writer *w)
{
    if (w->plain.len) {
        PB_CHECK(write_all(w, w->plain.data, w->plain.len));
        pb_jbuf_reset(&w->plain);
    }
    return PB_OK;
}

static pb_status end_frame(pb_writer *w)
{
    bool had = w->frame_n > 0;
    if (w->failed)
        return pb_error(PB_ERR_IO, "%s: an earlier write failed", w->partial ? w->partial : "<stdout>");
    if (w->cctx) {
        if (w->frame_n > 0)
            PB_CHECK(zfeed(w, NULL, 0, ZSTD_e_end));
    } else {
        PB_CHECK(flush_plain(w));
    }
    w->frame_n = 0;
    w->frame_t0 = pb_now();
    if (!had)
        return PB_OK;
    if (!w->is_stdout && fsync(w->fd) != 0) {
        w->failed = true;
        return pb_error(PB_ERR_IO, "%s: fsync: %s", w->partial, strerror(errno));
    }
    if (w->hook)
        PB_CHECK(w->hook(w->hook_ctx, w->records, w->bytes));
    return PB_OK;
}

/* Make a rename in path's directory durable. */
static pb_status sync_dir(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? pb_strdup(path) : pb_strdup(".");
    if (!dir)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (slash)
        dir[slash == path ? 1 : slash - path] = '\0';
    pb_status st = PB_OK;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0 || fsync(fd) != 0)
        st = pb_error(PB_ERR_IO, "%s: fsync: %s", dir, strerror(errno));
    if (fd >= 0)
        close(fd);
    free(dir);
    return st;
}

pb_status pb_writer_sync_dir(const char *path) { return sync_dir(path); }

static pb_status emit(pb_writer *w, const char *line, size_t len)
{
    if (w->frame_n == 0)
        w->frame_t0 = pb_now();
    if (w->cctx) {
        PB_CHECK(zfeed(w, line, len, ZSTD_e_continue));
        PB_CHECK(zfeed(w, "\n", 1, ZSTD_e_continue));
    } else {
        pb_jbuf_put(&w->plain, line, len);
        pb_jbuf_put(&w->plain, "\n", 1);
        PB_CHECK(pb_jbuf_status(&w->plain));
        /* a pipe reader sees each record at once; files flush per frame */
        if (w->is_stdout || w->plain.len >= PLAIN_FLUSH)
            PB_CHECK(flush_plain(w));
    }
    w->records++;
    w->frame_n++;
    if (w->frame_n >= w->o.frame_records)
        PB_CHECK(end_frame(w));
    return PB_OK;
}

pb_status pb_writer_put(pb_writer *w, uint64_t seq, const char *line, size_t len)
{
    uint64_t cap = (uint64_t)w->o.reorder_cap;
    if (seq < w->next)
        return pb_error(PB_ERR_INTERNAL, "writer: output %llu written twice", (unsigned long long)seq);
    if (seq == w->next) {
        PB_CHECK(emit(w, line, len));
        w->next++;
        /* drain what was waiting for this one */
        for (;;) {
            slot *s = &w->ring[w->next % cap];
            if (!s->used)
                break;
            pb_status st = emit(w, s->line, s->len);
            free(s->line);
            s->line = NULL;
            s->used = false;
            PB_CHECK(st);
            w->next++;
        }
        return PB_OK;
    }
    if (seq - w->next >= cap)
        return pb_error(PB_ERR_INTERNAL, "writer: output %llu arrived while waiting for %llu "
                        "(reorder buffer of %d records full)", (unsigned long long)seq,
                        (unsigned long long)w->next, w->o.reorder_cap);
    slot *s = &w->ring[seq % cap];
    if (s->used)
        return pb_error(PB_ERR_INTERNAL, "writer: output %llu queued twice", (unsigned long long)seq);
    PB_CHECK(pb_malloc(len + 1, &s->line));
    memcpy(s->line, line, len);
    s->line[len] = '\0';
    s->len = len;
    s->used = true;
    return PB_OK;
}

pb_status pb_writer_tick(pb_writer *w)
{
    if (w->frame_n > 0 && pb_now() - w->frame_t0 >= w->o.frame_seconds)
        return end_frame(w);
    return PB_OK;
}

pb_status pb_writer_close(pb_writer *w, bool complete)
{
    if (!w)
        return PB_OK;
    pb_status st = PB_OK;
    uint64_t waiting = 0;
    for (int i = 0; i < w->o.reorder_cap; i++)
        if (w->ring[i].used) {
            waiting++;
            free(w->ring[i].line);
        }
    if (complete && waiting)
        st = pb_error(PB_ERR_INTERNAL, "writer: %llu records still wait for output %llu",
                      (unsigned long long)waiting, (unsigned long long)w->next);
    pb_status st2 = end_frame(w);
    if (st == PB_OK)
        st = st2;
    /* no records at all: still a valid .zst (one empty frame), as zstd
     * writes for empty input, so `zstdcat out-*.jsonl.zst` works on every shard */
    if (st == PB_OK && complete && w->cctx && w->bytes == 0)
        st = zfeed(w, NULL, 0, ZSTD_e_end);
    if (!w->is_stdout) {
        if (st == PB_OK && fsync(w->fd) != 0)
            st = pb_error(PB_ERR_IO, "%s: fsync: %s", w->partial, strerror(errno));
        if (close(w->fd) != 0 && st == PB_OK)
            st = pb_error(PB_ERR_IO, "%s: close: %s", w->partial, strerror(errno));
        w->fd = -1;
        if (st == PB_OK && complete && rename(w->partial, w->path) != 0)
            st = pb_error(PB_ERR_IO, "rename %s to %s: %s", w->partial, w->path, strerror(errno));
        if (st == PB_OK && complete)
            st = sync_dir(w->path);
    }
    writer_free(w);
    return st;
}

uint64_t pb_writer_records(const pb_writer *w) { return w->records; }
uint64_t pb_writer_bytes(const pb_writer *w) { return w->bytes; }
bool pb_writer_compressed(const pb_writer *w) { return w->cctx != NULL; }
int pb_writer_workers(const pb_writer *w) { return w->workers; }
