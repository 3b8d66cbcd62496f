/* Streaming line reader (see reader.h). */
#include "config.h"
#include "gen/reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"

#define BLOCK (1u << 16)

struct pb_reader {
    int fd;
    bool own_fd;
    char *name;
    size_t max_line;
    char blk[BLOCK];
    size_t blk_pos, blk_len;
    bool eof;
    char *line;          /* current line, up to max_line bytes + NUL */
    size_t line_cap;
    uint64_t line_no;
    uint64_t offset;
    int64_t size;
};

pb_status pb_reader_open(const char *path, size_t max_line, pb_reader **out)
{
    *out = NULL;
    pb_reader *r;
    PB_CHECK(pb_calloc(1, sizeof *r, &r));
    r->max_line = max_line ? max_line : 1;
    r->size = -1;
    pb_status st;
    bool is_stdin = strcmp(path, "-") == 0;
    r->name = pb_strdup(is_stdin ? "<stdin>" : path);
    if (!r->name) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (is_stdin) {
        r->fd = 0;
    } else {
        r->fd = open(path, O_RDONLY | O_CLOEXEC);
        if (r->fd < 0) {
            st = pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
            goto fail;
        }
        r->own_fd = true;
    }
    struct stat sb;
    if (fstat(r->fd, &sb) == 0) {
        if (S_ISDIR(sb.st_mode)) {
            st = pb_error(PB_ERR_IO, "%s: is a directory", r->name);
            goto fail;
        }
        if (S_ISREG(sb.st_mode))
            r->size = (int64_t)sb.st_size;
    }
#ifdef POSIX_FADV_SEQUENTIAL
    if (r->size >= 0)
        (void)posix_fadvise(r->fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    *out = r;
    return PB_OK;
fail:
    pb_reader_close(r);
    return st;
}

static pb_status fill(pb_reader *r)
{
    for (;;) {
        ssize_t n = read(r->fd, r->blk, BLOCK);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return pb_error(PB_ERR_IO, "%s: read: %s", r->name, strerror(errno));
        r->blk_pos = 0;
        r->blk_len = (size_t)n;
        if (n == 0)
            r->eof = true;
        return PB_OK;
    }
}

pb_status pb_reader_next(pb_reader *r, const char **line, size_t *len, uint64_t *line_no,
                         bool *too_long)
{
    *line = NULL;
    *len = 0;
    *too_long = false;
    size_t n = 0;
    bool any = false, cut = false;
    for (;;) {
        if (r->blk_pos == r->blk_len) {
            if (r->eof)
                break;
            PB_CHECK(fill(r));
            if (r->eof)
                break;
        }
        any = true;
        const char *start = r->blk + r->blk_pos;
        size_t avail = r->blk_len - r->blk_pos;
        const char *nl = memchr(start, '\n', avail);
        size_t take = nl ? (size_t)(nl - start) : avail;
        size_t keep = take;
        if (n + keep > r->max_line) {
            keep = n < r->max_line ? r->max_line - n : 0;
            cut = true;
        }
        if (keep) {
            if (n + keep + 1 > r->line_cap) {
                size_t cap = r->line_cap ? r->line_cap : 4096;
                while (cap < n + keep + 1)
                    cap *= 2;
                if (cap > r->max_line + 1)
                    cap = r->max_line + 1;
                char *p = realloc(r->line, cap);
                if (!p)
                    return pb_error(PB_ERR_NOMEM, "%s: line %llu: out of memory (%zu bytes)", r->name,
                                    (unsigned long long)r->line_no + 1, cap);
                r->line = p;
                r->line_cap = cap;
            }
            memcpy(r->line + n, start, keep);
            n += keep;
        }
        r->blk_pos += take + (nl ? 1 : 0);
        r->offset += take + (nl ? 1 : 0);
        if (nl)
            break;
    }
    if (!any)
        return PB_OK; /* end of input */
    if (!r->line) {
        r->line = malloc(1);
        if (!r->line)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        r->line_cap = 1;
    }
    if (n > 0 && r->line[n - 1] == '\r' && !cut)
        n--;
    r->line[n] = '\0';
    r->line_no++;
    *line = r->line;
    *len = n;
    *line_no = r->line_no;
    *too_long = cut;
    return PB_OK;
}

uint64_t pb_reader_offset(const pb_reader *r) { return r->offset; }
int64_t pb_reader_size(const pb_reader *r) { return r->size; }
const char *pb_reader_name(const pb_reader *r) { return r->name; }

void pb_reader_close(pb_reader *r)
{
    if (!r)
        return;
    if (r->own_fd && r->fd >= 0)
        close(r->fd);
    free(r->line);
    free(r->name);
    free(r);
}
