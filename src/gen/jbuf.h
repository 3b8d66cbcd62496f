/* A growable byte buffer for building JSON output lines. Appends never fail
 * silently: the first allocation failure is remembered in `err` and later
 * appends do nothing, so callers check once at the end. */
#ifndef PB_GEN_JBUF_H
#define PB_GEN_JBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_jbuf {
    char *data;
    size_t len, cap;
    bool err;
} pb_jbuf;

void pb_jbuf_init(pb_jbuf *b);
void pb_jbuf_free(pb_jbuf *b);
void pb_jbuf_reset(pb_jbuf *b);                        /* len = 0, keeps memory */
void pb_jbuf_put(pb_jbuf *b, const void *p, size_t n); /* raw bytes */
void pb_jbuf_puts(pb_jbuf *b, const char *s);          /* raw NUL-terminated */
void pb_jbuf_printf(pb_jbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A JSON string literal (quotes included) of s[0..n): control characters
 * escaped, invalid UTF-8 replaced by U+FFFD so the output is always valid. */
void pb_jbuf_str(pb_jbuf *b, const char *s, size_t n);
/* PB_ERR_NOMEM if an append failed, else PB_OK. */
pb_status pb_jbuf_status(const pb_jbuf *b);

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if invalid. */
size_t pb_utf8_seq_len(const unsigned char *s, size_t n);

#endif
