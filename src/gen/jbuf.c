/* Growable buffer and JSON string escaping. */
#include "config.h"
#include "gen/jbuf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void pb_jbuf_init(pb_jbuf *b)
{
    memset(b, 0, sizeof *b);
}

void pb_jbuf_free(pb_jbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

void pb_jbuf_reset(pb_jbuf *b)
{
    b->len = 0;
    b->err = false;
}

static bool reserve(pb_jbuf *b, size_t extra)
{
    if (b->err)
        return false;
    if (extra > SIZE_MAX - b->len - 1) {
        b->err = true;
        return false;
    }
    size_t need = b->len + extra + 1;
    if (need <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *p = realloc(b->data, cap);
    if (!p) {
        b->err = true;
        return false;
    }
    b->data = p;
    b->cap = cap;
    return true;
}

void pb_jbuf_put(pb_jbuf *b, const void *p, size_t n)
{
    if (!reserve(b, n))
        return;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
}

void pb_jbuf_puts(pb_jbuf *b, const char *s)
{
    pb_jbuf_put(b, s, strlen(s));
}

void pb_jbuf_printf(pb_jbuf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char small[256];
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->err = true;
        return;
    }
    if ((size_t)n < sizeof small) {
        pb_jbuf_put(b, small, (size_t)n);
        return;
    }
    if (!reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

size_t pb_utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t len;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c == 0xE0) { len = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) len = 3;
    else if (c == 0xED) { len = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) len = 3;
    else if (c == 0xF0) { len = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) len = 4;
    else if (c == 0xF4) { len = 4; hi = 0x8F; }
    else return 0;
    if (n < len)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return len;
}

void pb_jbuf_str(pb_jbuf *b, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    pb_jbuf_put(b, "\"", 1);
    size_t run = 0; /* start of a run of bytes copied verbatim */
    size_t i = 0;
    while (i < n) {
        unsigned c = u[i];
        const char *esc = NULL;
        char tmp[8];
        size_t step = 1;
        if (c < 0x80) {
            if (c == '"') esc = "\\\"";
            else if (c == '\\') esc = "\\\\";
            else if (c == '\n') esc = "\\n";
            else if (c == '\r') esc = "\\r";
            else if (c == '\t') esc = "\\t";
            else if (c == '\b') esc = "\\b";
            else if (c == '\f') esc = "\\f";
            else if (c < 0x20 || c == 0x7f) {
                snprintf(tmp, sizeof tmp, "\\u%04x", c);
                esc = tmp;
            }
        } else {
            step = pb_utf8_seq_len(u + i, n - i);
            if (step == 0) {
                esc = "\xEF\xBF\xBD"; /* U+FFFD for one invalid byte */
                step = 1;
            }
        }
        if (esc) {
            pb_jbuf_put(b, s + run, i - run);
            pb_jbuf_puts(b, esc);
            run = i + step;
        }
        i += step;
    }
    pb_jbuf_put(b, s + run, n - run);
    pb_jbuf_put(b, "\"", 1);
}

pb_status pb_jbuf_status(const pb_jbuf *b)
{
    return b->err ? pb_error(PB_ERR_NOMEM, "out of memory building an output record") : PB_OK;
}
