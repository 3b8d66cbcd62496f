/* Packed weights kept in a file: see wcache.h for the format and the rules. */
#include "config.h"
#include "cpu/wcache.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "cpu/kern_impl.h"

#define WC_MAGIC "PBWCACHE"
#define WC_VERSION 1u
#define WC_HEADER 64
#define WC_ENTRY 40
#define WC_ALIGN 4096
#define WC_CHUNK ((size_t)1 << 20) /* bytes per checksum work item */
#define WC_MAX_KEY 65536
#define WC_MAX_ENTRIES (1u << 20)

typedef struct wc_entry {
    uint32_t n_out, n_in, dtype;
    uint64_t offset, bytes, sum;
} wc_entry;

struct pb_wcache {
    char *path, *key;
    /* the file mapped (a hit) */
    const unsigned char *map;
    size_t map_len;
    wc_entry *ent;
    uint32_t n_ent, n_taken;
    bool hit, stale; /* stale: a matrix did not match its entry */
    /* every matrix of the stage in order, for a rewrite */
    const pb_kmat **rec;
    size_t n_rec, cap_rec;
};

/* ---- checksums ---- */

/* Fletcher-style sums in four lanes of 64-bit words (n a multiple of 32):
 * any change of one word changes it; vectorizes. */
static uint64_t chunk_sum(const unsigned char *p, size_t n)
{
    uint64_t a[4] = {1, 2, 3, 4}, b[4] = {0, 0, 0, 0};
    for (size_t i = 0; i + 32 <= n; i += 32) {
        uint64_t w[4];
        memcpy(w, p + i, sizeof w);
        for (int j = 0; j < 4; j++) {
            a[j] += w[j];
            b[j] += a[j];
        }
    }
    uint64_t h = PB_FNV_START ^ (uint64_t)n;
    for (int j = 0; j < 4; j++) {
        h = (h ^ a[j]) * 0x9e3779b97f4a7c15ull;
        h = (h ^ b[j]) * 0xc2b2ae3d27d4eb4full;
    }
    return h ^ (h >> 29);
}

typedef struct sum_job {
    const unsigned char *const *data; /* [n] each entry's bytes */
    const uint64_t *bytes;            /* [n] */
    const size_t *first;              /* [n + 1] prefix sums of chunks */
    uint32_t n;
    uint64_t *chunk;                  /* [first[n]] */
} sum_job;

static void sum_item(void *ctx, int item, int worker)
{
    (void)worker;
    sum_job *j = ctx;
    uint32_t lo = 0, hi = j->n; /* the entry holding chunk `item` */
    while (hi - lo > 1) {
        uint32_t mid = (lo + hi) / 2;
        if (j->first[mid] <= (size_t)item)
            lo = mid;
        else
            hi = mid;
    }
    size_t c = (size_t)item - j->first[lo], off = c * WC_CHUNK;
    size_t len = j->bytes[lo] - off < WC_CHUNK ? (size_t)(j->bytes[lo] - off) : WC_CHUNK;
    j->chunk[item] = chunk_sum(j->data[lo] + off, len);
}

/* sums[i] of the n matrices' bytes, on k's threads */
static pb_status entry_sums(pb_kctx *k, const unsigned char *const *data, const uint64_t *bytes, uint32_t n,
                            uint64_t *sums)
{
    size_t *first = malloc(((size_t)n + 1) * sizeof *first);
    if (!first)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    first[0] = 0;
    for (uint32_t i = 0; i < n; i++)
        first[i + 1] = first[i] + (size_t)((bytes[i] + WC_CHUNK - 1) / WC_CHUNK);
    uint64_t *chunk = malloc((first[n] ? first[n] : 1) * sizeof *chunk);
    if (!chunk) {
        free(first);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    sum_job j = {data, bytes, first, n, chunk};
    if (first[n] > 0)
        pb_kctx_run(k, (int)first[n], sum_item, &j);
    for (uint32_t i = 0; i < n; i++) {
        uint64_t h = bytes[i];
        for (size_t c = first[i]; c < first[i + 1]; c++)
            h = ((h << 7 | h >> 57) ^ chunk[c]) * 0x100000001b3ull;
        sums[i] = h;
    }
    free(chunk);
    free(first);
    return PB_OK;
}

/* ---- reading ---- */

static uint64_t table_sum(const char *key, size_t key_len, const unsigned char *table, size_t table_len)
{
    return pb_fnv1a(pb_fnv1a(PB_FNV_START, key, key_len), table, table_len);
}

static bool is_store_dt(uint32_t dt)
{
    return dt == PB_DT_F32 || dt == PB_DT_F16 || dt == PB_DT_BF16 || dt == PB_DT_Q8 ||
           dt == PB_DT_F8_E4M3;
}

/* Maps and checks the file: true on a hit; false with *why set (NULL: no file) */
static bool load(pb_wcache *c, pb_kctx *k, const char **why, char *buf, size_t cap)
{
    *why = NULL;
    int fd = open(c->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno != ENOENT) {
            snprintf(buf, cap, "cannot open it: %s", strerror(errno));
            *why = buf;
        }
        return false;
    }
    struct stat sb;
    unsigned char h[WC_HEADER];
    bool ok = false;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        *why = "not a regular file";
    } else if ((uint64_t)sb.st_size < WC_HEADER || pread(fd, h, WC_HEADER, 0) != WC_HEADER) {
        *why = "shorter than its header";
    } else if (memcmp(h, WC_MAGIC, 8) != 0) {
        *why = "not a pippy-batch weights cache (no PBWCACHE header)";
    } else if (pb_get_u32le(h + 8) != WC_VERSION) {
        snprintf(buf, cap, "format version %u, not %u", pb_get_u32le(h + 8), WC_VERSION);
        *why = buf;
    } else if (pb_get_u64le(h + 32) != (uint64_t)sb.st_size) {
        snprintf(buf, cap, "%llu bytes where its header says %llu (cut short or grown)",
                 (unsigned long long)sb.st_size, (unsigned long long)pb_get_u64le(h + 32));
        *why = buf;
    } else {
        ok = true;
    }
    if (!ok) {
        close(fd);
        return false;
    }
    const uint32_t n = pb_get_u32le(h + 12);
    const uint64_t key_len = pb_get_u64le(h + 16), data_off = pb_get_u64le(h + 24), file_size = pb_get_u64le(h + 32);
    const size_t want_len = strlen(c->key);
    if (n == 0 || n > WC_MAX_ENTRIES || key_len > WC_MAX_KEY ||
        WC_HEADER + key_len + (uint64_t)n * WC_ENTRY > data_off || data_off > file_size || data_off % WC_ALIGN) {
        close(fd);
        *why = "its header is not sound (entries, key or data offset)";
        return false;
    }
    void *m = mmap(NULL, (size_t)file_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(buf, cap, "cannot map it: %s", strerror(errno));
        *why = buf;
        return false;
    }
    c->map = m;
    c->map_len = (size_t)file_size;
    const unsigned char *key = c->map + WC_HEADER, *table = key + key_len;
    if (key_len != want_len || memcmp(key, c->key, want_len) != 0) {
        *why = "made for another checkpoint, stage or settings (its key differs)";
        return false;
    }
    if (table_sum(c->key, want_len, table, (size_t)n * WC_ENTRY) != pb_get_u64le(h + 40)) {
        *why = "its entry table fails its checksum";
        return false;
    }
    c->ent = calloc(n, sizeof *c->ent);
    const unsigned char **data = calloc(n, sizeof *data);
    uint64_t *bytes = calloc(n, sizeof *bytes), *sums = calloc(n, sizeof *sums);
    ok = c->ent && data && bytes && sums;
    if (!ok)
        *why = "out of memory checking it";
    for (uint32_t i = 0; ok && i < n; i++) {
        const unsigned char *e = table + (size_t)i * WC_ENTRY;
        wc_entry *w = &c->ent[i];
        *w = (wc_entry){pb_get_u32le(e), pb_get_u32le(e + 4), pb_get_u32le(e + 8), pb_get_u64le(e + 16),
                        pb_get_u64le(e + 24), pb_get_u64le(e + 32)};
        if (w->n_out < 1 || w->n_out > INT32_MAX || w->n_in < 1 || w->n_in > INT32_MAX || !is_store_dt(w->dtype) ||
            w->bytes + sizeof(pb_kmat) != pb_kmat_bytes((pb_dtype)w->dtype, (int)w->n_out, (int)w->n_in) ||
            w->offset < data_off || w->offset % WC_ALIGN || w->offset > file_size || w->bytes > file_size - w->offset) {
            snprintf(buf, cap, "entry %u ([%u, %u] dtype %u, %llu bytes at %llu) is not sound", i, w->n_out, w->n_in,
                     w->dtype, (unsigned long long)w->bytes, (unsigned long long)w->offset);
            *why = buf;
            ok = false;
        }
        data[i] = c->map + w->offset;
        bytes[i] = w->bytes;
    }
    if (ok && entry_sums(k, data, bytes, n, sums) != PB_OK) {
        *why = "out of memory checking it";
        ok = false;
    }
    for (uint32_t i = 0; ok && i < n; i++)
        if (sums[i] != c->ent[i].sum) {
            snprintf(buf, cap, "matrix %u of %u fails its checksum (the file is damaged)", i, n);
            *why = buf;
            ok = false;
        }
    free(data);
    free(bytes);
    free(sums);
    if (ok)
        c->n_ent = n;
    return ok;
}

pb_status pb_wcache_open(const char *path, const char *key, pb_kctx *k, pb_wcache **out)
{
    *out = NULL;
    pb_wcache *c = calloc(1, sizeof *c);
    const char *layout = "|cpu packed: panels of %d rows, bf16 in k pairs, v1";
    const int len = snprintf(NULL, 0, layout, PB_KNR);
    if (!c || !(c->path = strdup(path)) || !(c->key = malloc(strlen(key) + (size_t)len + 1))) {
        pb_wcache_free(c);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    strcpy(c->key, key);
    snprintf(c->key + strlen(key), (size_t)len + 1, layout, PB_KNR);
    const double t0 = pb_now();
    char buf[256];
    const char *why;
    c->hit = load(c, k, &why, buf, sizeof buf);
    if (c->hit) {
        uint64_t total = 0;
        for (uint32_t i = 0; i < c->n_ent; i++)
            total += c->ent[i].bytes;
        pb_log_verbose("weights cache %s: %u matrices, %.1f MiB, checked in %.2f s", path, c->n_ent,
                       (double)total / 1048576.0, pb_now() - t0);
    } else {
        if (why)
            pb_log_warn("weights cache %s: %s; packing the checkpoint and writing the cache again", path, why);
        else
            pb_log_verbose("weights cache %s: not there yet; it is written once the weights are packed", path);
        if (c->map)
            munmap((void *)(uintptr_t)c->map, c->map_len);
        c->map = NULL;
        free(c->ent);
        c->ent = NULL;
        c->n_ent = 0;
    }
    *out = c;
    return PB_OK;
}

bool pb_wcache_hit(const pb_wcache *c)
{
    return c->hit && !c->stale;
}

pb_kmat *pb_wcache_take(pb_wcache *c, int n_out, int n_in, pb_dtype dt)
{
    if (!c->hit || c->stale)
        return NULL;
    const wc_entry *e = c->n_taken < c->n_ent ? &c->ent[c->n_taken] : NULL;
    pb_kmat *m = NULL;
    if (!e || e->n_out != (uint32_t)n_out || e->n_in != (uint32_t)n_in || e->dtype != (uint32_t)dt ||
        pb_kmat_wrap(c->map + e->offset, (size_t)e->bytes, dt, n_out, n_in, &m) != PB_OK) {
        if (e)
            pb_log_warn("weights cache %s: matrix %u is [%u, %u] %s, where the stage asks for [%d, %d] %s; packing "
                        "the rest from the checkpoint and writing the cache again", c->path, c->n_taken, e->n_out,
                        e->n_in, is_store_dt(e->dtype) ? pb_dtype_name((pb_dtype)e->dtype) : "?", n_out, n_in,
                        pb_dtype_name(dt));
        else
            pb_log_warn("weights cache %s: holds %u matrices, where the stage has more; packing the rest from the "
                        "checkpoint and writing the cache again", c->path, c->n_ent);
        c->stale = true;
        return NULL;
    }
    c->n_taken++;
    return m;
}

pb_status pb_wcache_record(pb_wcache *c, const pb_kmat *m)
{
    if (c->n_rec == c->cap_rec) {
        size_t cap = c->cap_rec ? 2 * c->cap_rec : 64;
        const pb_kmat **r = realloc(c->rec, cap * sizeof *r);
        if (!r)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        c->rec = r;
        c->cap_rec = cap;
    }
    c->rec[c->n_rec++] = m;
    return PB_OK;
}

/* ---- writing ---- */

static bool write_all(int fd, const void *p, size_t n, uint64_t off)
{
    const unsigned char *b = p;
    while (n > 0) {
        ssize_t w = pwrite(fd, b, n > ((size_t)1 << 30) ? (size_t)1 << 30 : n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        b += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return true;
}

/* Removes the temporary files of earlier writers of name in dir that died
 * mid-write (killed: no process of that pid here, and no write for 10
 * minutes, so that a writer on another host sharing dir is left alone). */
static void remove_dead_tmp(const char *dir, const char *name)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    const time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        char *end;
        if (strncmp(e->d_name, ".tmp.", 5) != 0)
            continue;
        long pid = strtol(e->d_name + 5, &end, 10);
        if (end == e->d_name + 5 || *end != '.' || strcmp(end + 1, name) != 0 || pid <= 0)
            continue;
        struct stat sb;
        char *p = pb_path_join(dir, e->d_name);
        if (p && (kill((pid_t)pid, 0) != 0 && errno == ESRCH) && stat(p, &sb) == 0 && S_ISREG(sb.st_mode) &&
            now - sb.st_mtime > 600 && unlink(p) == 0)
            pb_log_warn("weights cache: removed %s, left by a writer that died (%.1f MiB)", p,
                        (double)sb.st_size / 1048576.0);
        free(p);
    }
    closedir(d);
}

static void write_file(pb_wcache *c, pb_kctx *k)
{
    const uint32_t n = (uint32_t)c->n_rec;
    const size_t key_len = strlen(c->key);
    const size_t head = WC_HEADER + key_len + (size_t)n * WC_ENTRY;
    const uint64_t data_off = (head + WC_ALIGN - 1) / WC_ALIGN * WC_ALIGN;
    unsigned char *h = calloc(1, (size_t)data_off);
    const unsigned char **data = calloc(n ? n : 1, sizeof *data);
    uint64_t *bytes = calloc(n ? n : 1, sizeof *bytes), *sums = calloc(n ? n : 1, sizeof *sums);
    char *tmp = malloc(strlen(c->path) + 32), *dir = strdup(c->path);
    int fd = -1;
    const char *why = NULL;
    char buf[160];
    if (tmp)
        tmp[0] = '\0';
    if (!h || !data || !bytes || !sums || !tmp || !dir) {
        why = "out of memory";
        goto out;
    }
    uint64_t off = data_off;
    for (uint32_t i = 0; i < n; i++) {
        size_t b;
        data[i] = pb_kmat_packed(c->rec[i], &b);
        bytes[i] = b;
        unsigned char *e = h + WC_HEADER + key_len + (size_t)i * WC_ENTRY;
        pb_put_u32le(e, (uint32_t)pb_kmat_rows(c->rec[i]));
        pb_put_u32le(e + 4, (uint32_t)pb_kmat_cols(c->rec[i]));
        pb_put_u32le(e + 8, (uint32_t)pb_kmat_dtype(c->rec[i]));
        pb_put_u64le(e + 16, off);
        pb_put_u64le(e + 24, b);
        off += (b + WC_ALIGN - 1) / WC_ALIGN * WC_ALIGN;
    }
    const uint64_t file_size = off;
    if (entry_sums(k, data, bytes, n, sums) != PB_OK) {
        why = "out of memory";
        goto out;
    }
    for (uint32_t i = 0; i < n; i++)
        pb_put_u64le(h + WC_HEADER + key_len + (size_t)i * WC_ENTRY + 32, sums[i]);
    memcpy(h, WC_MAGIC, 8);
    pb_put_u32le(h + 8, WC_VERSION);
    pb_put_u32le(h + 12, n);
    pb_put_u64le(h + 16, key_len);
    pb_put_u64le(h + 24, data_off);
    pb_put_u64le(h + 32, file_size);
    memcpy(h + WC_HEADER, c->key, key_len);
    pb_put_u64le(h + 40, table_sum(c->key, key_len, h + WC_HEADER + key_len, (size_t)n * WC_ENTRY));

    const char *slash = strrchr(c->path, '/');
    const size_t dir_len = slash ? (size_t)(slash - c->path) + 1 : 0;
    sprintf(tmp, "%.*s.tmp.%ld.%s", (int)dir_len, c->path, (long)getpid(), c->path + dir_len);
    if (dir_len)
        dir[dir_len] = '\0';
    remove_dead_tmp(dir_len ? dir : ".", c->path + dir_len);
    struct statvfs vs;
    if (statvfs(dir_len ? dir : ".", &vs) == 0 && (uint64_t)vs.f_bavail * vs.f_frsize < file_size + (64u << 20)) {
        snprintf(buf, sizeof buf, "%.1f MiB free where it needs %.1f MiB (and 64 MiB to spare); not written",
                 (double)vs.f_bavail * (double)vs.f_frsize / 1048576.0, (double)file_size / 1048576.0);
        why = buf;
        goto out;
    }
    fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        why = strerror(errno);
        goto out;
    }
    bool ok = write_all(fd, h, (size_t)data_off, 0);
    for (uint32_t i = 0; ok && i < n; i++)
        ok = write_all(fd, data[i], (size_t)bytes[i],
                       pb_get_u64le(h + WC_HEADER + key_len + (size_t)i * WC_ENTRY + 16));
    ok = ok && ftruncate(fd, (off_t)file_size) == 0 && fsync(fd) == 0;
    if (!ok) {
        why = strerror(errno ? errno : EIO);
    } else if (close(fd) != 0) {
        fd = -1;
        why = strerror(errno);
    } else {
        fd = -1;
        if (rename(tmp, c->path) != 0)
            why = strerror(errno);
        else
            pb_log_verbose("weights cache %s: wrote %u matrices, %.1f MiB", c->path, n,
                           (double)file_size / 1048576.0);
    }
out:
    if (fd >= 0)
        close(fd);
    if (why) {
        pb_log_warn("weights cache %s: cannot write it: %s (the run goes on without it)", c->path, why);
        if (tmp && tmp[0])
            unlink(tmp);
    }
    free(h);
    free(data);
    free(bytes);
    free(sums);
    free(tmp);
    free(dir);
}

void pb_wcache_finish(pb_wcache *c, pb_kctx *k)
{
    if (c->hit && !c->stale && c->n_taken == c->n_ent && c->n_rec == c->n_ent)
        return;
    if (c->hit && !c->stale)
        pb_log_warn("weights cache %s: holds %u matrices, where the stage has %zu; writing it again", c->path,
                    c->n_ent, c->n_rec);
    if (c->n_rec > 0)
        write_file(c, k);
}

void pb_wcache_free(pb_wcache *c)
{
    if (!c)
        return;
    if (c->map)
        munmap((void *)(uintptr_t)c->map, c->map_len);
    free(c->ent);
    free(c->rec);
    free(c->path);
    free(c->key);
    free(c);
}
