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

/* Parse sizes such as 490M, 1.5G, 4096 (binary multiples K/M/G/T = 2^10..2^40). */
pb_status pb_parse_size(const char *s, uint64_t *out);

#endif
