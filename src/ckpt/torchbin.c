/* PyTorch checkpoints as torch.save() writes them since 1.6: a zip archive
 * (stored, not compressed) holding <prefix>/data.pkl, <prefix>/byteorder and
 * one <prefix>/data/<key> entry per storage. Only the central directory, the
 * byteorder and data.pkl are read here; storages are located on demand. */
#include "config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ckpt/ckpt_impl.h"
#include "common/util.h"

static uint64_t rd(const unsigned char *p, int n)
{
    uint64_t x = 0;
    for (int i = n - 1; i >= 0; i--)
        x = (x << 8) | p[i];
    return x;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const pb_zip_entry *)a)->name, ((const pb_zip_entry *)b)->name);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const pb_bin_tensor *)a)->name, ((const pb_bin_tensor *)b)->name);
}

static const pb_zip_entry *find_entry(const pb_bin_archive *a, const char *name)
{
    pb_zip_entry key = {.name = (char *)name};
    return bsearch(&key, a->entries, (size_t)a->n_entries, sizeof *a->entries, cmp_entry);
}

const pb_bin_tensor *pb_bin_find(const pb_bin_archive *a, const char *name)
{
    pb_bin_tensor key = {.name = (char *)name};
    return bsearch(&key, a->t, (size_t)a->n, sizeof *a->t, cmp_tensor);
}

void pb_bin_archive_free(pb_bin_archive *a)
{
    if (!a)
        return;
    for (int i = 0; i < a->n_entries; i++)
        free(a->entries[i].name);
    free(a->entries);
    pb_bin_tensors_free(a->t, a->n);
    free(a->prefix);
    memset(a, 0, sizeof *a);
}

/* Locate the central directory (plain or zip64). */
static pb_status find_cd(const char *path, int fd, uint64_t fsize, uint64_t *cd_off, uint64_t *cd_size,
                         uint64_t *count)
{
    size_t tail = fsize < 65557 ? (size_t)fsize : 65557;
    unsigned char *buf;
    PB_CHECK(pb_malloc(tail, &buf));
    pb_status st = pb_pread_full(path, fd, buf, tail, fsize - tail);
    if (st != PB_OK) {
        free(buf);
        return st;
    }
    long eocd = -1;
    for (long i = (long)tail - 22; i >= 0; i--)
        if (rd(buf + i, 4) == 0x06054b50 && (size_t)i + 22 + rd(buf + i + 20, 2) == tail) {
            eocd = i;
            break;
        }
    if (eocd < 0) {
        free(buf);
        return pb_error(PB_ERR_FORMAT, "%s: not a zip archive (no end of central directory; truncated file?)", path);
    }
    const unsigned char *e = buf + eocd;
    *count = rd(e + 10, 2);
    *cd_size = rd(e + 12, 4);
    *cd_off = rd(e + 16, 4);
    if (*count == 0xffff || *cd_size == 0xffffffff || *cd_off == 0xffffffff) {
        /* zip64: locator just before the EOCD */
        if (eocd < 20 || rd(e - 20, 4) != 0x07064b50) {
            free(buf);
            return pb_error(PB_ERR_FORMAT, "%s: zip64 archive without a zip64 locator", path);
        }
        uint64_t z = rd(e - 20 + 8, 8);
        unsigned char z64[56];
        if (z > fsize || fsize - z < 56) {
            free(buf);
            return pb_error(PB_ERR_FORMAT, "%s: zip64 end of central directory out of range", path);
        }
        st = pb_pread_full(path, fd, z64, 56, z);
        if (st == PB_OK && rd(z64, 4) != 0x06064b50)
            st = pb_error(PB_ERR_FORMAT, "%s: bad zip64 end of central directory", path);
        if (st != PB_OK) {
            free(buf);
            return st;
        }
        *count = rd(z64 + 32, 8);
        *cd_size = rd(z64 + 40, 8);
        *cd_off = rd(z64 + 48, 8);
    }
    free(buf);
    if (*cd_off > fsize || *cd_size > fsize - *cd_off)
        return pb_error(PB_ERR_FORMAT, "%s: zip central directory out of range (truncated file?)", path);
    if (*cd_size > PB_CKPT_MAX_META || *count > *cd_size / 46)
        return pb_error(PB_ERR_FORMAT, "%s: zip central directory size/count inconsistent", path);
    return PB_OK;
}

static pb_status read_central_dir(const char *path, int fd, pb_bin_archive *a)
{
    uint64_t cd_off = 0, cd_size = 0, count = 0;
    PB_CHECK(find_cd(path, fd, a->file_size, &cd_off, &cd_size, &count));
    unsigned char *cd;
    PB_CHECK(pb_malloc((size_t)cd_size, &cd));
    pb_status st = pb_pread_full(path, fd, cd, (size_t)cd_size, cd_off);
    if (st != PB_OK)
        goto out;
    PB_CHECK_GOTO(pb_calloc((size_t)count, sizeof *a->entries, &a->entries), st, out);
    size_t pos = 0;
    for (uint64_t i = 0; i < count; i++) {
        if (cd_size - pos < 46 || rd(cd + pos, 4) != 0x02014b50) {
            st = pb_error(PB_ERR_FORMAT, "%s: corrupt zip central directory (entry %llu)", path, (unsigned long long)i);
            goto out;
        }
        const unsigned char *h = cd + pos;
        uint64_t method = rd(h + 10, 2), csize = rd(h + 20, 4), usize = rd(h + 24, 4);
        size_t nlen = (size_t)rd(h + 28, 2), xlen = (size_t)rd(h + 30, 2), clen = (size_t)rd(h + 32, 2);
        uint64_t loff = rd(h + 42, 4);
        if (cd_size - pos - 46 < nlen + xlen + clen) {
            st = pb_error(PB_ERR_FORMAT, "%s: corrupt zip central directory (entry %llu)", path, (unsigned long long)i);
            goto out;
        }
        /* zip64 extra field: the 0xffffffff fields, in order usize, csize, offset */
        const unsigned char *x = h + 46 + nlen, *xe = x + xlen;
        while (xe - x >= 4) {
            size_t id = (size_t)rd(x, 2), sz = (size_t)rd(x + 2, 2);
            if ((size_t)(xe - x - 4) < sz)
                break;
            if (id == 1) {
                const unsigned char *q = x + 4, *qe = x + 4 + sz;
                if (usize == 0xffffffff && qe - q >= 8) { usize = rd(q, 8); q += 8; }
                if (csize == 0xffffffff && qe - q >= 8) { csize = rd(q, 8); q += 8; }
                if (loff == 0xffffffff && qe - q >= 8) { loff = rd(q, 8); q += 8; }
            }
            x += 4 + sz;
        }
        pb_zip_entry *ze = &a->entries[a->n_entries];
        PB_CHECK_GOTO(pb_malloc(nlen + 1, &ze->name), st, out);
        memcpy(ze->name, h + 46, nlen);
        ze->name[nlen] = '\0';
        a->n_entries++;
        if (strlen(ze->name) != nlen) {
            st = pb_error(PB_ERR_FORMAT, "%s: zip entry name with a NUL byte", path);
            goto out;
        }
        ze->method = (uint16_t)method;
        ze->size = usize;
        ze->local_offset = loff;
        if (method == 0 && csize != usize) {
            st = pb_error(PB_ERR_FORMAT, "%s: zip entry '%s': stored sizes differ", path, ze->name);
            goto out;
        }
        if (loff >= a->file_size) {
            st = pb_error(PB_ERR_FORMAT, "%s: zip entry '%s' starts past the end of the file", path, ze->name);
            goto out;
        }
        pos += 46 + nlen + xlen + clen;
    }
    qsort(a->entries, (size_t)a->n_entries, sizeof *a->entries, cmp_entry);
    for (int i = 1; i < a->n_entries; i++)
        if (strcmp(a->entries[i].name, a->entries[i - 1].name) == 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: zip entry '%s' appears twice", path, a->entries[i].name);
            goto out;
        }
out:
    free(cd);
    return st;
}

/* Offset of an entry's data (after its local header), checked to lie inside the file. */
static pb_status entry_data(const char *path, int fd, const pb_bin_archive *a, const pb_zip_entry *e, uint64_t *off)
{
    unsigned char lh[30];
    if (e->method != 0)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: zip entry '%s' is compressed (method %u); torch.save stores entries "
                        "uncompressed", path, e->name, (unsigned)e->method);
    if (a->file_size - e->local_offset < 30)
        return pb_error(PB_ERR_FORMAT, "%s: zip entry '%s': local header past the end of the file", path, e->name);
    PB_CHECK(pb_pread_full(path, fd, lh, 30, e->local_offset));
    if (rd(lh, 4) != 0x04034b50)
        return pb_error(PB_ERR_FORMAT, "%s: zip entry '%s': bad local header", path, e->name);
    uint64_t start = e->local_offset + 30 + rd(lh + 26, 2) + rd(lh + 28, 2);
    if (start > a->file_size || e->size > a->file_size - start)
        return pb_error(PB_ERR_FORMAT, "%s: zip entry '%s' (%llu bytes) runs past the end of the file (truncated?)",
                        path, e->name, (unsigned long long)e->size);
    *off = start;
    return PB_OK;
}

pb_status pb_bin_storage_span(const char *path, int fd, const pb_bin_archive *a, const char *storage_key,
                              uint64_t *offset, uint64_t *size)
{
    size_t pl = strlen(a->prefix), kl = strlen(storage_key);
    char *name = malloc(pl + kl + 1);
    if (!name)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    memcpy(name, a->prefix, pl);
    memcpy(name + pl, storage_key, kl + 1);
    const pb_zip_entry *e = find_entry(a, name);
    pb_status st;
    if (!e)
        st = pb_error(PB_ERR_FORMAT, "%s: storage '%s' named by data.pkl is not in the archive", path, name);
    else
        st = entry_data(path, fd, a, e, offset);
    if (st == PB_OK)
        *size = e->size;
    free(name);
    return st;
}

static pb_status read_entry(const char *path, int fd, const pb_bin_archive *a, const pb_zip_entry *e, size_t max,
                            unsigned char **out)
{
    uint64_t off;
    PB_CHECK(entry_data(path, fd, a, e, &off));
    if (e->size > max)
        return pb_error(PB_ERR_FORMAT, "%s: zip entry '%s' is too large (%llu bytes)", path, e->name,
                        (unsigned long long)e->size);
    PB_CHECK(pb_malloc((size_t)e->size + 1, out));
    pb_status st = pb_pread_full(path, fd, *out, (size_t)e->size, off);
    if (st != PB_OK) {
        free(*out);
        *out = NULL;
    }
    return st;
}

pb_status pb_bin_open(const char *path, int fd, pb_bin_archive *a)
{
    struct stat sb;
    unsigned char magic[4] = {0};
    unsigned char *pkl = NULL, *bo = NULL;
    pb_status st = PB_OK;
    memset(a, 0, sizeof *a);
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode))
        return pb_error(PB_ERR_IO, "%s: not a regular file", path);
    a->file_size = (uint64_t)sb.st_size;
    if (a->file_size < 4)
        return pb_error(PB_ERR_FORMAT, "%s: truncated file (%llu bytes)", path, (unsigned long long)a->file_size);
    PB_CHECK(pb_pread_full(path, fd, magic, 4, 0));
    if (magic[0] == 0x80 && magic[1] <= 5)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: legacy (pre-1.6, non-zip) torch.save format is not supported; "
                        "re-save it with torch >= 1.6 or convert it to safetensors", path);
    if (rd(magic, 4) != 0x04034b50)
        return pb_error(PB_ERR_FORMAT, "%s: not a PyTorch zip checkpoint (no zip signature)", path);
    PB_CHECK_GOTO(read_central_dir(path, fd, a), st, fail);

    /* <prefix>/data.pkl, the prefix being the archive's single top folder */
    const pb_zip_entry *pe = NULL;
    for (int i = 0; i < a->n_entries; i++) {
        const char *n = a->entries[i].name, *slash = strchr(n, '/');
        if (slash && slash != n && strcmp(slash, "/data.pkl") == 0) {
            if (pe) {
                st = pb_error(PB_ERR_FORMAT, "%s: archive holds more than one data.pkl", path);
                goto fail;
            }
            pe = &a->entries[i];
        }
    }
    if (!pe) {
        st = pb_error(PB_ERR_FORMAT, "%s: zip archive without <name>/data.pkl: not a torch.save checkpoint", path);
        goto fail;
    }
    size_t pl = (size_t)(strchr(pe->name, '/') - pe->name) + 1;
    PB_CHECK_GOTO(pb_malloc(pl + 1, &a->prefix), st, fail);
    memcpy(a->prefix, pe->name, pl);
    a->prefix[pl] = '\0';

    char bo_name[512];
    if (snprintf(bo_name, sizeof bo_name, "%sbyteorder", a->prefix) < (int)sizeof bo_name) {
        const pb_zip_entry *be = find_entry(a, bo_name);
        if (be) {
            PB_CHECK_GOTO(read_entry(path, fd, a, be, 64, &bo), st, fail);
            bo[be->size] = '\0';
            if (strcmp((char *)bo, "little") != 0) {
                st = pb_error(PB_ERR_UNSUPPORTED, "%s: byteorder is \"%s\"; only little-endian checkpoints are supported",
                              path, strcmp((char *)bo, "big") == 0 ? "big" : "?");
                goto fail;
            }
        }
    }
    PB_CHECK_GOTO(read_entry(path, fd, a, pe, PB_CKPT_MAX_META, &pkl), st, fail);
    PB_CHECK_GOTO(pb_pickle_load_state_dict(path, pkl, (size_t)pe->size, &a->t, &a->n), st, fail);
    qsort(a->t, (size_t)a->n, sizeof *a->t, cmp_tensor);
    for (int i = 1; i < a->n; i++)
        if (strcmp(a->t[i].name, a->t[i - 1].name) == 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: tensor '%s' appears twice in data.pkl", path, a->t[i].name);
            goto fail;
        }
    free(pkl);
    free(bo);
    return PB_OK;
fail:
    free(pkl);
    free(bo);
    pb_bin_archive_free(a);
    return st;
}
