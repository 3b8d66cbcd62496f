#include "config.h"
#include "common/util.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

pb_status pb_malloc(size_t n, void *out_ptr)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    *(void **)out_ptr = p;
    return PB_OK;
}

pb_status pb_calloc(size_t count, size_t size, void *out_ptr)
{
    size_t n;
    if (!pb_mul_ok(count, size, &n))
        return pb_error(PB_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    *(void **)out_ptr = p;
    return PB_OK;
}

pb_status pb_realloc_array(void *inout_ptr, size_t count, size_t size)
{
    size_t n;
    if (!pb_mul_ok(count, size, &n))
        return pb_error(PB_ERR_NOMEM, "allocation of %zu x %zu bytes overflows", count, size);
    void *p = realloc(*(void **)inout_ptr, n ? n : 1);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory allocating %zu bytes", n);
    *(void **)inout_ptr = p;
    return PB_OK;
}

char *pb_strdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = malloc(n);
    if (p)
        memcpy(p, s, n);
    return p;
}

pb_status pb_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return pb_error(PB_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(f), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(f);
        return pb_error(PB_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        fclose(f);
        return pb_error(PB_ERR_FORMAT, "%s: file too large (%lld bytes, limit %zu)", path,
                        (long long)sb.st_size, max_bytes);
    }
    size_t n = (size_t)sb.st_size;
    char *buf = malloc(n + 1);
    if (!buf) {
        fclose(f);
        return pb_error(PB_ERR_NOMEM, "%s: out of memory reading %zu bytes", path, n);
    }
    if (n && fread(buf, 1, n, f) != n) {
        int e = ferror(f) ? errno : 0;
        free(buf);
        fclose(f);
        return pb_error(PB_ERR_IO, "%s: short read%s%s", path, e ? ": " : "", e ? strerror(e) : "");
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    if (out_len)
        *out_len = n;
    return PB_OK;
}

char *pb_path_join(const char *dir, const char *name)
{
    size_t a = strlen(dir), b = strlen(name);
    char *p = malloc(a + b + 2);
    if (!p)
        return NULL;
    memcpy(p, dir, a);
    size_t k = a;
    if (a && dir[a - 1] != '/')
        p[k++] = '/';
    memcpy(p + k, name, b + 1);
    return p;
}

bool pb_file_exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

uint64_t pb_fnv1a(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

double pb_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

pb_status pb_parse_size(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno || !(v >= 0) || !isfinite(v))
        return pb_error(PB_ERR_USAGE, "invalid size '%s'", s);
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (*end == 'i' || *end == 'I')
        end++;
    if (*end == 'b' || *end == 'B')
        end++;
    if (*end)
        return pb_error(PB_ERR_USAGE, "invalid size '%s' (use e.g. 490M, 2G)", s);
    v *= mult;
    if (v > 9.0e18)
        return pb_error(PB_ERR_USAGE, "size '%s' too large", s);
    *out = (uint64_t)v;
    return PB_OK;
}

pb_status pb_pread_full(const char *path, int fd, void *buf, size_t n, uint64_t off)
{
    size_t done = 0;
    while (done < n) {
        ssize_t r = pread(fd, (char *)buf + done, n - done, (off_t)(off + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return pb_error(PB_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0)
            return pb_error(PB_ERR_FORMAT, "%s: truncated file (wanted %zu bytes at offset %llu)", path, n,
                            (unsigned long long)off);
        done += (size_t)r;
    }
    return PB_OK;
}

bool pb_proc_kib(const char *path, const char *key, uint64_t *kib)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return false;
    char line[256];
    const size_t n = strlen(key);
    bool found = false;
    unsigned long long v = 0;
    while (!found && fgets(line, sizeof line, f))
        found = strncmp(line, key, n) == 0 && line[n] == ':' && sscanf(line + n + 1, " %llu kB", &v) == 1;
    fclose(f);
    if (found)
        *kib = v;
    return found;
}

void pb_heap_release(void)
{
#ifdef __GLIBC__
    (void)malloc_trim(0);
#endif
}

/* Peak resident set of this process's memory since it started its program:
 * VmHWM. getrusage's ru_maxrss is not that: Linux carries it across execve,
 * so a process started from a large parent (a Python harness with torch
 * loaded) reports at least the parent's peak. */
uint64_t pb_peak_rss_bytes(void)
{
    uint64_t kib;
    if (pb_proc_kib("/proc/self/status", "VmHWM", &kib))
        return kib * 1024u;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0 || ru.ru_maxrss < 0)
        return 0;
    return (uint64_t)ru.ru_maxrss * 1024u; /* Linux: kilobytes */
}

const char *pb_human_bytes(uint64_t b, char *buf, size_t cap)
{
    static const char *const units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, cap, "%" PRIu64 " B", b);
    else
        snprintf(buf, cap, "%.2f %s", v, units[u]);
    return buf;
}

const char *pb_py_float_repr(double f, char buf[PB_PY_FLOAT_MAX])
{
    if (isnan(f) || isinf(f)) {
        snprintf(buf, PB_PY_FLOAT_MAX, "%s", isnan(f) ? "nan" : f < 0 ? "-inf" : "inf");
        return buf;
    }
    char e[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    /* e = [-]d[.ddd]e[+-]XX */
    char digits[24];
    int nd = 0;
    const char *q = e;
    char *o = buf;
    if (*q == '-')
        *o++ = *q++;
    for (; *q && *q != 'e'; q++)
        if (*q != '.')
            digits[nd++] = *q;
    const int ex = atoi(q + 1);
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    if (ex >= -4 && ex < 16) {
        if (ex >= 0) {
            for (int i = 0; i <= ex; i++)
                *o++ = i < nd ? digits[i] : '0';
            *o++ = '.';
            if (ex + 1 < nd)
                for (int i = ex + 1; i < nd; i++)
                    *o++ = digits[i];
            else
                *o++ = '0';
        } else {
            *o++ = '0';
            *o++ = '.';
            for (int i = 0; i < -ex - 1; i++)
                *o++ = '0';
            for (int i = 0; i < nd; i++)
                *o++ = digits[i];
        }
        *o = '\0';
    } else {
        *o++ = digits[0];
        if (nd > 1) {
            *o++ = '.';
            for (int i = 1; i < nd; i++)
                *o++ = digits[i];
        }
        snprintf(o, (size_t)(buf + PB_PY_FLOAT_MAX - o), "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    return buf;
}
