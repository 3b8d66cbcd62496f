/* Small helpers: checked size arithmetic, allocation, files, time. */
#ifndef PB_UTIL_H
#define PB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

/* *out = a * b; false on overflow. */
static inline bool pb_mul_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_mul_overflow(a, b, out);
}
static inline bool pb_add_ok(size_t a, size_t b, size_t *out)
{
    return !__builtin_add_overflow(a, b, out);
}

/* Little-endian wire/file integers, independent of the host's byte order. */
static inline void pb_put_u32le(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline void pb_put_u64le(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}
static inline uint32_t pb_get_u32le(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) v |= (uint32_t)p[i] << (8 * i);
    return v;
}
static inline uint64_t pb_get_u64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v |= (uint64_t)p[i] << (8 * i);
    return v;
}

/* pread exactly n bytes at off (retrying short reads and EINTR); a short
 * file is PB_ERR_FORMAT "truncated", naming path. */
/* 64-bit FNV-1a, continued from h (start with PB_FNV_START). */
#define PB_FNV_START 0xcbf29ce484222325ull
uint64_t pb_fnv1a(uint64_t h, const void *p, size_t n);

pb_status pb_pread_full(const char *path, int fd, void *buf, size_t n, uint64_t off);

/* malloc/calloc/realloc that record PB_ERR_NOMEM with the size asked for. */
pb_status pb_malloc(size_t n, void *out_ptr);
pb_status pb_calloc(size_t count, size_t size, void *out_ptr);
pb_status pb_realloc_array(void *inout_ptr, size_t count, size_t size);
char *pb_strdup(const char *s);   /* NULL on failure */

/* Read a whole (small) file into a NUL-terminated buffer; at most max_bytes. */
pb_status pb_read_file(const char *path, size_t max_bytes, char **out, size_t *out_len);
/* Join directory and file name into a new string (caller frees). */
char *pb_path_join(const char *dir, const char *name);
bool pb_file_exists(const char *path);

/* Monotonic seconds. */
double pb_now(void);
/* Hand the heap's free pages back to the system (glibc: malloc_trim), for
 * after a large transient parse such as tokenizer.json's JSON tree, whose
 * freed nodes would otherwise stay resident under everything loaded later. */
void pb_heap_release(void);
/* this process's peak resident set in bytes (VmHWM; 0 when unknown) */
uint64_t pb_peak_rss_bytes(void);
/* The "KEY: N kB" line of a /proc file such as /proc/meminfo; false when absent. */
bool pb_proc_kib(const char *path, const char *key, uint64_t *kib);

/* Parse sizes such as 490M, 1.5G, 4096 (binary multiples K/M/G/T = 2^10..2^40). */
pb_status pb_parse_size(const char *s, uint64_t *out);
/* b in the largest binary unit that leaves at least 1 ("512 B", "3.50 MiB", "1.25 GiB") into buf[cap]; returns
 * buf. Messages about memory print sizes this way, so that a small one is not "0.00 GiB". */
const char *pb_human_bytes(uint64_t b, char *buf, size_t cap);
/* Python's repr of a double into buf (at most 32 bytes with the NUL): the shortest digits that read back to it,
 * fixed notation where the point falls within 16 digits before or 4 zeros after them ("1.0", "0.0001"), else
 * d.ddde+XX ("1e-05", "1e+16"); "inf", "-inf", "nan". Returns buf. */
#define PB_PY_FLOAT_MAX 32
const char *pb_py_float_repr(double f, char buf[PB_PY_FLOAT_MAX]);

#endif
