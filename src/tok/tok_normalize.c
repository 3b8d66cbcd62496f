/* Normalizers (HF tokenizers/src/normalizers): each maps a whole string to a
 * new one. Only the text matters here: offsets are not tracked. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tok/tok_internal.h"

static pb_status put_lower(tk_buf *out, uint32_t cp)
{
    /* char::to_lowercase: U+0130 is the one unconditional multi-char mapping */
    if (cp == 0x130) {
        PB_CHECK(tk_buf_putc(out, 'i'));
        return tk_buf_put_cp(out, 0x307);
    }
    return tk_buf_put_cp(out, (uint32_t)utf8proc_tolower((utf8proc_int32_t)cp));
}

static pb_status unicode_form(const char *s, size_t len, int opts, tk_buf *out)
{
    if (len == 0)
        return PB_OK;
    utf8proc_uint8_t *dst = NULL;
    utf8proc_ssize_t r = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)len, &dst,
                                      (utf8proc_option_t)(UTF8PROC_STABLE | opts));
    if (r < 0) {
        free(dst);
        return pb_error(PB_ERR_INPUT, "tokenizer: Unicode normalization failed: %s",
                        utf8proc_errmsg(r));
    }
    pb_status st = tk_buf_put(out, dst, (size_t)r);
    free(dst);
    return st;
}

static bool is_chinese(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B920 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

static bool is_other(uint32_t c)
{
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO || k == UTF8PROC_CATEGORY_CS;
}

static pb_status bert(const tk_norm *n, const char *s, size_t len, tk_buf *out)
{
    tk_buf a = {0}, b = {0};
    pb_status st = PB_OK;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        i += tk_utf8_next(s + i, len - i, &c);
        if (n->left) {
            if (c == 0 || c == 0xFFFD || (c != '\t' && c != '\n' && c != '\r' && is_other(c)))
                continue;
            if (c == '\t' || c == '\n' || c == '\r' || tk_is_whitespace(c))
                c = ' ';
        }
        if (n->right && is_chinese(c)) {
            PB_CHECK_GOTO(tk_buf_putc(&a, ' '), st, out);
            PB_CHECK_GOTO(tk_buf_put_cp(&a, c), st, out);
            PB_CHECK_GOTO(tk_buf_putc(&a, ' '), st, out);
        } else
            PB_CHECK_GOTO(tk_buf_put_cp(&a, c), st, out);
    }
    const char *cur = a.p ? a.p : "";
    size_t cur_len = a.len;
    if (n->strip_accents) {
        PB_CHECK_GOTO(unicode_form(cur, cur_len, UTF8PROC_DECOMPOSE, &b), st, out);
        a.len = 0;
        for (size_t i = 0; i < b.len;) {
            uint32_t c;
            size_t k = tk_utf8_next(b.p + i, b.len - i, &c);
            if (!tk_is_mark_nonspacing(c))
                PB_CHECK_GOTO(tk_buf_put(&a, b.p + i, k), st, out);
            i += k;
        }
        cur = a.p ? a.p : "";
        cur_len = a.len;
    }
    if (n->lowercase) {
        for (size_t i = 0; i < cur_len;) {
            uint32_t c;
            i += tk_utf8_next(cur + i, cur_len - i, &c);
            PB_CHECK_GOTO(put_lower(out, c), st, out);
        }
    } else
        PB_CHECK_GOTO(tk_buf_put(out, cur, cur_len), st, out);
out:
    tk_buf_free(&a);
    tk_buf_free(&b);
    return st;
}

static pb_status replace(const tk_norm *n, const char *s, size_t len, tk_buf *out)
{
    pcre2_match_data *md = tk_regex_match_data(&n->re);
    if (n->re.code && !md)
        return pb_error(PB_ERR_NOMEM, "tokenizer: out of memory");
    pb_status st = PB_OK;
    size_t pos = 0, copied = 0, ms, me;
    while (pos <= len && tk_regex_find(&n->re, md, s, len, pos, &ms, &me)) {
        PB_CHECK_GOTO(tk_buf_put(out, s + copied, ms - copied), st, out);
        PB_CHECK_GOTO(tk_buf_put(out, n->str, n->str_len), st, out);
        copied = me;
        if (me == ms) {   /* empty match: step over one character */
            if (me >= len)
                break;
            size_t k = tk_utf8_len((unsigned char)s[me]);
            if (k > len - me)
                k = len - me;
            PB_CHECK_GOTO(tk_buf_put(out, s + me, k), st, out);
            copied = me + k;
            pos = me + k;
        } else
            pos = me;
    }
    st = tk_buf_put(out, s + copied, len - copied);
out:
    if (md)
        pcre2_match_data_free(md);
    return st;
}

pb_status tk_normalize(const tk_norm *n, const char *s, size_t len, tk_buf *out)
{
    out->len = 0;
    PB_CHECK(tk_buf_reserve(out, len));
    out->p[0] = '\0';
    switch (n->kind) {
    case TK_NORM_SEQUENCE: {
        tk_buf a = {0}, b = {0};
        pb_status st = tk_buf_put(&a, s, len);
        for (size_t i = 0; st == PB_OK && i < n->n_sub; i++) {
            st = tk_normalize(&n->sub[i], a.p, a.len, &b);
            tk_buf t = a; a = b; b = t;
        }
        if (st == PB_OK)
            st = tk_buf_put(out, a.p, a.len);
        tk_buf_free(&a);
        tk_buf_free(&b);
        return st;
    }
    case TK_NORM_PREPEND:
        if (len)
            PB_CHECK(tk_buf_put(out, n->str, n->str_len));
        return tk_buf_put(out, s, len);
    case TK_NORM_REPLACE:
        return replace(n, s, len, out);
    case TK_NORM_NFC: return unicode_form(s, len, UTF8PROC_COMPOSE, out);
    case TK_NORM_NFD: return unicode_form(s, len, UTF8PROC_DECOMPOSE, out);
    case TK_NORM_NFKC: return unicode_form(s, len, UTF8PROC_COMPOSE | UTF8PROC_COMPAT, out);
    case TK_NORM_NFKD: return unicode_form(s, len, UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT, out);
    case TK_NORM_LOWERCASE:
        for (size_t i = 0; i < len;) {
            uint32_t c;
            i += tk_utf8_next(s + i, len - i, &c);
            PB_CHECK(put_lower(out, c));
        }
        return PB_OK;
    case TK_NORM_STRIP: {
        size_t a = 0, b = len;
        if (n->left)
            while (a < b) {
                uint32_t c;
                size_t k = tk_utf8_next(s + a, b - a, &c);
                if (!tk_is_whitespace(c))
                    break;
                a += k;
            }
        if (n->right)
            while (b > a) {
                size_t k = 1;
                while (k < b - a && ((unsigned char)s[b - k] & 0xC0) == 0x80)
                    k++;
                uint32_t c;
                tk_utf8_next(s + b - k, k, &c);
                if (!tk_is_whitespace(c))
                    break;
                b -= k;
            }
        return tk_buf_put(out, s + a, b - a);
    }
    case TK_NORM_STRIP_ACCENTS:
        for (size_t i = 0; i < len;) {
            uint32_t c;
            size_t k = tk_utf8_next(s + i, len - i, &c);
            if (!tk_strips_as_accent(c))
                PB_CHECK(tk_buf_put(out, s + i, k));
            i += k;
        }
        return PB_OK;
    case TK_NORM_BERT:
        return bert(n, s, len, out);
    }
    return pb_error(PB_ERR_INTERNAL, "tokenizer: unknown normalizer kind %d", (int)n->kind);
}
