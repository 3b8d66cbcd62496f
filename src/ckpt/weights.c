/* Per-stage loader: opens only the files of the stage plan, validates each
 * header, then maps read-only only the byte range that covers the stage's
 * tensors in that file. Views that are not contiguous row-major (possible in
 * .bin files) or not aligned to their element size are copied out. */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ckpt/ckpt_impl.h"
#include "ckpt/weights.h"
#include "common/log.h"
#include "common/util.h"

typedef struct name_idx {
    const char *canon;
    int idx;
} name_idx;

typedef struct mapping {
    void *addr;
    size_t len;
    int fd;       /* the file, kept open for the reader (-1: closed) */
    uint64_t off; /* its offset of addr */
} mapping;

/* The reader: one thread reads the stage's mapped ranges from the files in
 * order, mapping after mapping, in large sequential reads, while the backend
 * packs the tensors already read (pb_weights_wait). Touching the mapping
 * from the packing threads instead reads it in small, scattered page faults:
 * a cold stage load ran at 0.52-0.58 of a plain read of the same files, with
 * the reader 3-15% faster (Zen 5 VM, fwd-harness loadbench, three
 * interleaved batches of 8-20 rounds; the rest is this VM's cost of fresh
 * memory for the packed copy). */
typedef struct wreader {
    pthread_t tid;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t *prefix;  /* prefix[m]: bytes of the mappings before m */
    uint64_t done;     /* bytes read, mappings in order (under mu) */
    uint64_t bytes_read; /* of those, read from the files (not cached already) */
    double t0, seconds;
    bool finished;     /* read all (or gave up: the faults read the rest) */
    bool stop;
} wreader;

struct pb_weights {
    const pb_family *family;
    int n;
    pb_tensor *t;
    char **canon;
    char **names;             /* t[i].name */
    name_idx *sorted;         /* sorted by canonical name */
    mapping *maps;
    int n_maps;
    void **owned;
    int n_owned;
    uint64_t bytes_read;
    /* read-ahead: the whole mapped range while it fits in readahead_budget
     * (half the memory available at load); past it, each tensor just before
     * it is used (pb_weights_prefetch), so a stage larger than free memory
     * does not read the file twice */
    uint64_t readahead_budget, readahead_bytes;
    bool lazy; /* nothing read ahead or prefetched (pb_weights_load_ex) */
    bool windowed;
    wreader *rd;
};

static uint64_t readahead_budget(void);

/* One tensor to place: where its bytes are in the file and how to read them. */
typedef struct span {
    int ti;                   /* index in w->t */
    uint64_t off, len;        /* needed byte range in the file */
    bool contiguous;
    /* strided view (bin): element offset relative to off, strides in elements */
    int ndim;
    int64_t shape[PB_MAX_DIMS], stride[PB_MAX_DIMS];
} span;


static int cmp_name_idx(const void *a, const void *b)
{
    return strcmp(((const name_idx *)a)->canon, ((const name_idx *)b)->canon);
}

static void reader_stop(pb_weights *w);

static size_t page_size(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    return (size_t)(pg > 0 ? pg : 4096);
}

/* The mapping t's data lies in, or -1 (an owned copy) */
static int map_of(const pb_weights *w, const pb_tensor *t)
{
    const uintptr_t a = (uintptr_t)t->data, b = a + t->nbytes;
    for (int i = 0; i < w->n_maps; i++) {
        const uintptr_t lo = (uintptr_t)w->maps[i].addr;
        if (a >= lo && b <= lo + w->maps[i].len)
            return i;
    }
    return -1;
}

void pb_weights_free(pb_weights *w)
{
    if (!w)
        return;
    reader_stop(w);
    for (int i = 0; i < w->n_maps; i++) {
        munmap(w->maps[i].addr, w->maps[i].len);
        if (w->maps[i].fd >= 0)
            close(w->maps[i].fd);
    }
    for (int i = 0; i < w->n_owned; i++)
        free(w->owned[i]);
    for (int i = 0; i < w->n; i++) {
        free(w->canon[i]);
        free(w->names[i]);
    }
    free(w->names);
    free(w->maps);
    free(w->owned);
    free(w->canon);
    free(w->sorted);
    free(w->t);
    free(w);
}

static bool same_shape(const int64_t *a, int na, const int64_t *b, int nb)
{
    if (na != nb)
        return false;
    for (int i = 0; i < na; i++)
        if (a[i] != b[i])
            return false;
    return true;
}

static void shape_str(char *buf, size_t cap, const int64_t *s, int n)
{
    size_t k = 0;
    buf[0] = '\0';
    for (int i = 0; i < n && k + 24 < cap; i++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", i ? ", " : "", (long long)s[i]);
}

static pb_status check_tensor(const char *path, const pb_ckpt_tensor *ct, pb_dtype dt, const int64_t *shape, int ndim)
{
    const bool one_scale = ct->fp8 == 2 && ct->ndim == 0 && ndim == 1 && shape[0] == 1; /* [] or [1] */
    if (!same_shape(shape, ndim, ct->shape, ct->ndim) && !one_scale) {
        char got[160], want[64];
        shape_str(got, sizeof got, shape, ndim);
        shape_str(want, sizeof want, ct->shape, ct->ndim);
        return pb_error(PB_ERR_CONFIG, "%s: tensor '%s' has shape [%s] but config.json implies [%s]", path, ct->name,
                        got, want);
    }
    if (dt == PB_DT_F8_E4M3 && ct->fp8 != 1)
        return pb_error(PB_ERR_CONFIG, "%s: tensor '%s' is F8_E4M3 but %s", path, ct->name,
                        ct->fp8 == 2 ? "it holds scales (F32, F16 or BF16 needed)"
                                     : "no scales go with it (an FP8 checkpoint needs an FP8 quantization_config, "
                                       "quant_method \"fp8\" or compressed-tensors, in config.json and each F8_E4M3 "
                                       "matrix's scales, '..._scale_inv' or '..._scale')");
    if (dt != PB_DT_F32 && dt != PB_DT_F16 && dt != PB_DT_BF16 && dt != PB_DT_F8_E4M3)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: tensor '%s' has dtype %s (F32, F16 or BF16 needed%s)", path,
                        ct->name, pb_dtype_name(dt), ct->fp8 == 1 ? ", or F8_E4M3" : "");
    return PB_OK;
}

static pb_status add_owned(pb_weights *w, size_t n, void **out)
{
    PB_CHECK(pb_realloc_array(&w->owned, (size_t)w->n_owned + 1, sizeof *w->owned));
    PB_CHECK(pb_malloc(n, out));
    w->owned[w->n_owned++] = *out;
    return PB_OK;
}

/* Copy a strided view into dst (contiguous row-major). src points at element 0 of the view. */
static void gather(unsigned char *dst, const unsigned char *src, size_t es, const span *s)
{
    int64_t idx[PB_MAX_DIMS] = {0};
    size_t numel = 1;
    for (int i = 0; i < s->ndim; i++)
        numel *= (size_t)s->shape[i];
    for (size_t k = 0; k < numel; k++) {
        int64_t off = 0;
        for (int i = 0; i < s->ndim; i++)
            off += idx[i] * s->stride[i];
        memcpy(dst + k * es, src + (size_t)off * es, es);
        for (int i = s->ndim - 1; i >= 0; i--) {
            if (++idx[i] < s->shape[i])
                break;
            idx[i] = 0;
        }
    }
}

/* Map [lo, hi) of fd and place each span's tensor. The mapping keeps a
 * duplicate of fd for the reader unless the load is lazy or windowed. */
static pb_status place(pb_weights *w, const char *path, int fd, span *sp, int n_sp)
{
    if (n_sp == 0)
        return PB_OK;
    uint64_t lo = UINT64_MAX, hi = 0;
    for (int i = 0; i < n_sp; i++) {
        if (sp[i].len == 0)
            continue;
        if (sp[i].off < lo)
            lo = sp[i].off;
        if (sp[i].off + sp[i].len > hi)
            hi = sp[i].off + sp[i].len;
        w->bytes_read += sp[i].len;
    }
    unsigned char *base = NULL;
    uint64_t map_start = 0;
    if (hi > 0) {
        map_start = lo - lo % (uint64_t)page_size();
        size_t len = (size_t)(hi - map_start);
        PB_CHECK(pb_realloc_array(&w->maps, (size_t)w->n_maps + 1, sizeof *w->maps));
        void *a = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, (off_t)map_start);
        if (a == MAP_FAILED)
            return pb_error(PB_ERR_IO, "%s: mmap of %zu bytes failed: %s", path, len, strerror(errno));
        /* Not populated: the backend reads each tensor once while packing it
         * (several threads) and pb_weights_release drops its pages right
         * after, so only the tensors being packed are resident, never the
         * whole file beside the packed copy. Within the read-ahead budget
         * the reader (pb_weights_load_ex) reads the whole range while the
         * first tensors pack; past it, pb_weights_prefetch. */
        if (w->lazy) /* only small tensors are read: no read-around of whole windows */
            (void)madvise(a, len, MADV_RANDOM);
        if (!w->windowed && w->readahead_bytes + len <= w->readahead_budget) {
            w->readahead_bytes += len;
        } else {
            if (!w->windowed && !w->lazy)
                pb_log_verbose("%s: read ahead tensor by tensor from here on (the stage's files pass the "
                               "read-ahead budget of %llu MiB)", path,
                               (unsigned long long)(w->readahead_budget >> 20));
            w->windowed = true;
        }
        int keep = -1;
        if (!w->lazy && !w->windowed && (keep = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
            pb_log_verbose("%s: no descriptor left for the reader (%s): its pages come in as they are packed", path,
                           strerror(errno));
        w->maps[w->n_maps++] = (mapping){a, len, keep, map_start};
        base = a;
    }
    for (int i = 0; i < n_sp; i++) {
        pb_tensor *t = &w->t[sp[i].ti];
        size_t es = pb_dtype_size(t->dtype);
        if (t->nbytes == 0) {
            static const uint64_t empty[1];
            t->data = empty;
            continue;
        }
        const unsigned char *src = base + (sp[i].off - map_start);
        if (sp[i].contiguous && (uintptr_t)src % es == 0) {
            t->data = src;
            continue;
        }
        void *dst;
        PB_CHECK(add_owned(w, t->nbytes, &dst));
        if (sp[i].contiguous)
            memcpy(dst, src, t->nbytes);
        else
            gather(dst, src, es, &sp[i]);
        t->data = dst;
    }
    return PB_OK;
}

static pb_status load_safetensors(pb_weights *w, const pb_ckpt *ck, const char *path, int fd, const int *tis,
                                  int n_ti, span *sp)
{
    pb_st_header h;
    PB_CHECK(pb_st_read_header(path, fd, &h));
    pb_status st = PB_OK;
    for (int k = 0; k < n_ti; k++) {
        const pb_ckpt_tensor *ct = &ck->t[tis[k]];
        const pb_st_entry *e = pb_st_find(&h, ct->name);
        if (!e) {
            st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' is not in this file (%s says it is)", path, ct->name,
                          ck->source);
            goto out;
        }
        PB_CHECK_GOTO(check_tensor(path, ct, e->dtype, e->shape, e->ndim), st, out);
        pb_tensor *t = &w->t[w->n];
        w->names[w->n] = pb_strdup(ct->name);
        t->name = w->names[w->n];
        t->dtype = e->dtype;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->nbytes = (size_t)(e->end - e->begin);
        sp[k] = (span){.ti = w->n, .off = h.data_start + e->begin, .len = e->end - e->begin, .contiguous = true};
        w->canon[w->n] = pb_strdup(ct->canon);
        if (!w->canon[w->n++] || !t->name) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    st = place(w, path, fd, sp, n_ti);
out:
    pb_st_header_free(&h);
    return st;
}

static pb_status load_bin(pb_weights *w, const pb_ckpt *ck, const char *path, int fd, const int *tis, int n_ti,
                          span *sp)
{
    pb_bin_archive a;
    PB_CHECK(pb_bin_open(path, fd, &a));
    pb_status st = PB_OK;
    for (int k = 0; k < n_ti; k++) {
        const pb_ckpt_tensor *ct = &ck->t[tis[k]];
        const pb_bin_tensor *bt = pb_bin_find(&a, ct->name);
        if (!bt) {
            st = pb_error(PB_ERR_CONFIG, "%s: tensor '%s' is not in this file (%s says it is)", path, ct->name,
                          ck->source);
            goto out;
        }
        PB_CHECK_GOTO(check_tensor(path, ct, bt->dtype, bt->shape, bt->ndim), st, out);
        uint64_t soff, ssize;
        PB_CHECK_GOTO(pb_bin_storage_span(path, fd, &a, bt->storage_key, &soff, &ssize), st, out);
        size_t es = pb_dtype_size(bt->dtype);
        /* the view's element range within the storage (strides are >= 0, checked by the unpickler) */
        uint64_t numel = 1, maxoff = 0;
        bool contiguous = true;
        int64_t expect = 1;
        for (int d = bt->ndim - 1; d >= 0; d--) {
            numel *= (uint64_t)bt->shape[d];
            if (bt->shape[d] > 1 && bt->stride[d] != expect)
                contiguous = false;
            expect *= bt->shape[d];
        }
        if (numel)
            for (int d = 0; d < bt->ndim; d++)
                maxoff += (uint64_t)(bt->shape[d] - 1) * (uint64_t)bt->stride[d];
        uint64_t first = bt->offset, last = bt->offset + maxoff; /* element indices, bounded by the unpickler */
        if (numel && (last >= bt->storage_numel || (last + 1) * es > ssize)) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s': view (offset %llu, last element %llu) runs past its storage "
                          "'%s' (%llu bytes)", path, ct->name, (unsigned long long)first, (unsigned long long)last,
                          bt->storage_key, (unsigned long long)ssize);
            goto out;
        }
        pb_tensor *t = &w->t[w->n];
        w->names[w->n] = pb_strdup(ct->name);
        t->name = w->names[w->n];
        t->dtype = bt->dtype;
        t->ndim = bt->ndim;
        memcpy(t->shape, bt->shape, sizeof t->shape);
        t->nbytes = (size_t)(numel * es);
        sp[k] = (span){.ti = w->n, .off = soff + first * es, .len = numel ? (last - first + 1) * es : 0,
                       .contiguous = contiguous, .ndim = bt->ndim};
        memcpy(sp[k].shape, bt->shape, sizeof sp[k].shape);
        memcpy(sp[k].stride, bt->stride, sizeof sp[k].stride);
        w->canon[w->n] = pb_strdup(ct->canon);
        if (!w->canon[w->n++] || !t->name) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    st = place(w, path, fd, sp, n_ti);
out:
    pb_bin_archive_free(&a);
    return st;
}

/* The reader reads READ_SIZE at a time (one pread; on this project's VM a
 * cold file read at 3.1 GB/s in 128 KiB reads, 3.0 in 1 MiB, 2.5 in 4 MiB;
 * network file systems want large ones) and publishes its progress per
 * READ_CHUNK, skipping a chunk whose pages are all cached already. */
#define READ_SIZE ((size_t)1 << 20)
#define READ_CHUNK ((size_t)4 << 20)

/* Whether every page of [a, a + n) is in the page cache (vec: n / page + 1 bytes) */
static bool cached(const void *a, size_t n, unsigned char *vec)
{
    const size_t np = (n + page_size() - 1) / page_size();
    if (mincore((void *)(uintptr_t)a, n, vec) != 0)
        return false;
    for (size_t i = 0; i < np; i++)
        if (!(vec[i] & 1))
            return false;
    return true;
}

/* Reads mapping m's chunk at o (n bytes) from its file; false on an error
 * (the packing threads' page faults then read what is left, and meet the
 * error themselves). */
static bool read_chunk(const mapping *mp, size_t o, size_t n, unsigned char *buf)
{
    for (size_t got = 0; got < n;) {
        const size_t want = n - got < READ_SIZE ? n - got : READ_SIZE;
        ssize_t k = pread(mp->fd, buf, want, (off_t)(mp->off + o + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            pb_log_verbose("weights reader: stopped at byte %llu of a checkpoint file: %s",
                           (unsigned long long)(mp->off + o + got), k < 0 ? strerror(errno) : "end of file");
            return false;
        }
        got += (size_t)k;
    }
    return true;
}

static void *reader_main(void *arg)
{
    pb_weights *w = arg;
    wreader *r = w->rd;
    unsigned char *buf = malloc(READ_SIZE), *vec = malloc(READ_CHUNK / page_size() + 1);
    bool ok = buf && vec;
    for (int m = 0; ok && m < w->n_maps; m++) {
        const mapping *mp = &w->maps[m];
        for (size_t o = 0; ok && o < mp->len; o += READ_CHUNK) {
            const size_t n = mp->len - o < READ_CHUNK ? mp->len - o : READ_CHUNK;
            const bool in = cached((const char *)mp->addr + o, n, vec);
            ok = mp->fd >= 0 && (in || read_chunk(mp, o, n, buf));
            pthread_mutex_lock(&r->mu);
            if (ok) {
                r->done = r->prefix[m] + o + n;
                r->bytes_read += in ? 0 : n;
            }
            ok = ok && !r->stop;
            pthread_cond_broadcast(&r->cv);
            pthread_mutex_unlock(&r->mu);
        }
    }
    free(buf);
    free(vec);
    pthread_mutex_lock(&r->mu);
    r->finished = true;
    r->seconds = pb_now() - r->t0;
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Whether the stage's ranges look cached already: one page in the middle of
 * each chunk and the last one (a mincore of them all costs the reader
 * milliseconds of a core beside the packing threads on a warm load). */
static bool looks_cached(const pb_weights *w)
{
    unsigned char v;
    for (int m = 0; m < w->n_maps; m++)
        for (size_t o = 0; o < w->maps[m].len; o += READ_CHUNK) {
            const size_t n = w->maps[m].len - o < READ_CHUNK ? w->maps[m].len - o : READ_CHUNK;
            const size_t probe[2] = {o + n / 2, o + n - 1};
            for (int i = 0; i < 2; i++) {
                const uintptr_t a = ((uintptr_t)w->maps[m].addr + probe[i]) & ~(uintptr_t)(page_size() - 1);
                if (mincore((void *)a, 1, &v) != 0 || !(v & 1))
                    return false;
            }
        }
    return true;
}

/* Starts the reader unless the files look cached; without one (cached, no
 * memory, no thread) the pages come in as the tensors are packed. */
static void reader_start(pb_weights *w)
{
    if (looks_cached(w))
        return;
    wreader *r = calloc(1, sizeof *r);
    if (!r || !(r->prefix = calloc((size_t)w->n_maps + 1, sizeof *r->prefix))) {
        free(r);
        return;
    }
    for (int m = 0; m < w->n_maps; m++)
        r->prefix[m + 1] = r->prefix[m] + w->maps[m].len;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->t0 = pb_now();
    w->rd = r;
    int e = pthread_create(&r->tid, NULL, reader_main, w);
    if (e != 0) {
        pb_log_verbose("weights reader: no thread (%s): the pages come in as the tensors are packed", strerror(e));
        pthread_mutex_destroy(&r->mu);
        pthread_cond_destroy(&r->cv);
        free(r->prefix);
        free(r);
        w->rd = NULL;
    }
}

/* Stops the reader (at its next chunk if still reading) and says what it read. */
static void reader_stop(pb_weights *w)
{
    wreader *r = w->rd;
    if (!r)
        return;
    pthread_mutex_lock(&r->mu);
    r->stop = true;
    pthread_mutex_unlock(&r->mu);
    pthread_join(r->tid, NULL);
    const uint64_t total = r->prefix[w->n_maps];
    pb_log_verbose("weights reader: %.1f of %.1f MiB read from the files (the rest was in the page cache when "
                   "reached) in %.3f s%s", (double)r->bytes_read / 1048576.0, (double)total / 1048576.0, r->seconds,
                   r->done < total ? ", stopped early" : "");
    pthread_mutex_destroy(&r->mu);
    pthread_cond_destroy(&r->cv);
    free(r->prefix);
    free(r);
    w->rd = NULL;
}

pb_status pb_weights_load(const pb_ckpt *ck, const pb_stage_plan *stage, pb_weights **out)
{
    return pb_weights_load_ex(ck, stage, true, out);
}

pb_status pb_weights_load_ex(const pb_ckpt *ck, const pb_stage_plan *stage, bool read_ahead, pb_weights **out)
{
    pb_status st = PB_OK;
    pb_weights *w = NULL;
    int *tis = NULL;
    span *sp = NULL;
    int fd = -1;
    *out = NULL;

    PB_CHECK(pb_calloc(1, sizeof *w, &w));
    w->family = ck->family;
    const char *ra = getenv("PB_READAHEAD");
    if (ra && *ra) {
        st = pb_parse_size(ra, &w->readahead_budget);
        if (st != PB_OK) {
            st = pb_error(PB_ERR_USAGE, "PB_READAHEAD='%s': not a size in bytes (e.g. 512M, 4G)", ra);
            goto fail;
        }
    } else {
        w->readahead_budget = readahead_budget();
    }
    if (!read_ahead) {
        w->readahead_budget = 0;
        w->lazy = true;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_tensors, sizeof *w->t, &w->t), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_tensors, sizeof *w->canon, &w->canon), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_tensors, sizeof *w->names, &w->names), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_tensors, sizeof *tis, &tis), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_tensors, sizeof *sp, &sp), st, fail);

    for (int f = 0; f < stage->n_files; f++) {
        int fi = stage->files[f].file_index;
        if (fi < 0 || fi >= ck->n_files) {
            st = pb_error(PB_ERR_INTERNAL, "stage plan names file %d of %d", fi, ck->n_files);
            goto fail;
        }
        int n_ti = 0;
        for (int i = 0; i < ck->n_tensors; i++)
            if (ck->t[i].file == fi && pb_ckpt_tensor_in_stage(&ck->t[i], stage->layer_begin, stage->layer_end,
                                                               stage->has_embed, stage->has_head))
                tis[n_ti++] = i;
        const char *path = ck->files[fi];
        fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            st = pb_error(e == ENOENT ? PB_ERR_CONFIG : PB_ERR_IO, "%s: cannot open shard file%s%s (holds tensor '%s'): %s",
                          path, ck->source && strcmp(ck->source, path) ? " named in " : "",
                          ck->source && strcmp(ck->source, path) ? ck->source : "", n_ti ? ck->t[tis[0]].name : "?",
                          strerror(e));
            goto fail;
        }
        pb_log_verbose("opened %s", path);
        if (ck->fmt == PB_CKPT_SAFETENSORS)
            st = load_safetensors(w, ck, path, fd, tis, n_ti, sp);
        else
            st = load_bin(w, ck, path, fd, tis, n_ti, sp);
        close(fd);
        fd = -1;
        if (st != PB_OK)
            goto fail;
    }
    /* every tensor of the stage must have been placed: the plan's files cover them */
    int want = 0;
    for (int i = 0; i < ck->n_tensors; i++)
        want += pb_ckpt_tensor_in_stage(&ck->t[i], stage->layer_begin, stage->layer_end, stage->has_embed,
                                        stage->has_head);
    if (want != w->n) {
        st = pb_error(PB_ERR_INTERNAL, "stage %d: plan's files hold %d of its %d tensors", stage->stage, w->n, want);
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)w->n, sizeof *w->sorted, &w->sorted), st, fail);
    for (int i = 0; i < w->n; i++)
        w->sorted[i] = (name_idx){w->canon[i], i};
    qsort(w->sorted, (size_t)w->n, sizeof *w->sorted, cmp_name_idx);
    if (!w->lazy && !w->windowed)
        reader_start(w);
    free(tis);
    free(sp);
    *out = w;
    return PB_OK;
fail:
    if (fd >= 0)
        close(fd);
    free(tis);
    free(sp);
    pb_weights_free(w);
    return st;
}

const pb_tensor *pb_weights_get(const pb_weights *w, const char *canonical_name)
{
    if (!w || !w->sorted)
        return NULL;
    int lo = 0, hi = w->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(w->sorted[mid].canon, canonical_name);
        if (c == 0)
            return &w->t[w->sorted[mid].idx];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

const pb_tensor *pb_weights_layer(const pb_weights *w, int layer, const char *suffix)
{
    char name[256];
    if (!w)
        return NULL;
    int n = pb_ckpt_layer_name(w->family, layer, suffix, name, sizeof name);
    if (n < 0 || (size_t)n >= sizeof name)
        return NULL;
    return pb_weights_get(w, name);
}

int pb_weights_count(const pb_weights *w) { return w ? w->n : 0; }
const pb_tensor *pb_weights_at(const pb_weights *w, int i) { return i >= 0 && i < w->n ? &w->t[i] : NULL; }
const char *pb_weights_canonical_at(const pb_weights *w, int i) { return i >= 0 && i < w->n ? w->canon[i] : NULL; }
uint64_t pb_weights_bytes_read(const pb_weights *w) { return w ? w->bytes_read : 0; }

/* The page-aligned part of t inside one of w's file mappings: [*s, *e). */
static bool mapped_pages(const pb_weights *w, const pb_tensor *t, uintptr_t *s, uintptr_t *e, bool outward)
{
    const int m = map_of(w, t);
    if (m < 0)
        return false;
    const uintptr_t a = (uintptr_t)t->data, b = a + t->nbytes, p = page_size();
    const uintptr_t hi = (uintptr_t)w->maps[m].addr + w->maps[m].len;
    if (outward) { /* every page t touches (the mapping starts on a page) */
        *s = a / p * p;
        *e = (b + p - 1) / p * p < hi ? (b + p - 1) / p * p : hi;
    } else { /* only pages wholly t's */
        *s = (a + p - 1) / p * p;
        *e = b / p * p;
    }
    return *e > *s;
}

/* Half of MemAvailable; no limit when it cannot be read. */
static uint64_t readahead_budget(void)
{
    uint64_t kib;
    return pb_proc_kib("/proc/meminfo", "MemAvailable", &kib) ? kib * 1024u / 2 : UINT64_MAX;
}

bool pb_weights_windowed(const pb_weights *w) { return w && w->windowed; }

void pb_weights_wait(const pb_weights *w, const pb_tensor *t)
{
    if (!w || !w->rd || !t || !t->data || !t->nbytes)
        return;
    const int m = map_of(w, t);
    if (m < 0)
        return;
    wreader *r = w->rd;
    const uint64_t need = r->prefix[m] + ((uintptr_t)t->data + t->nbytes - (uintptr_t)w->maps[m].addr);
    pthread_mutex_lock(&r->mu);
    while (!r->finished && r->done < need)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
}

void pb_weights_prefetch(const pb_weights *w, const pb_tensor *t)
{
    uintptr_t s, e;
    if (w && w->windowed && !w->lazy && t && t->data && t->nbytes && mapped_pages(w, t, &s, &e, true))
        for (uintptr_t a = s; a < e; a += READ_CHUNK) /* one call reads a few MiB at most (Linux caps it) */
            (void)madvise((void *)a, e - a < READ_CHUNK ? e - a : READ_CHUNK, MADV_WILLNEED);
}

void pb_weights_release(const pb_weights *w, const pb_tensor *t)
{
    if (!w || !t || !t->data || t->nbytes == 0)
        return;
    /* Only data inside one of our read-only file mappings: drop the whole
     * pages it covers. A later read faults them back in from the file. */
    uintptr_t s, e;
    if (mapped_pages(w, t, &s, &e, false))
        (void)madvise((void *)s, e - s, MADV_DONTNEED);
}
