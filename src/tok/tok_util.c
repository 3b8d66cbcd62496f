/* Tokenizer helpers: buffers, UTF-8, Unicode classes, hash maps, regexes. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "common/util.h"
#include "tok/tok_internal.h"

/* ---- buffer ---- */

pb_status tk_buf_reserve(tk_buf *b, size_t extra)
{
    size_t need;
    if (!pb_add_ok(b->len, extra, &need) || !pb_add_ok(need, 1, &need))
        return pb_error(PB_ERR_NOMEM, "tokenizer: buffer size overflows");
    if (need <= b->cap)
        return PB_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return pb_error(PB_ERR_NOMEM, "tokenizer: buffer size overflows");
        cap *= 2;
    }
    char *p = realloc(b->p, cap);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "tokenizer: out of memory (%zu bytes)", cap);
    b->p = p;
    b->cap = cap;
    return PB_OK;
}

pb_status tk_buf_put(tk_buf *b, const void *s, size_t n)
{
    PB_CHECK(tk_buf_reserve(b, n));
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return PB_OK;
}

pb_status tk_buf_put_cp(tk_buf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) { u[0] = (char)cp; n = 1; }
    else if (cp < 0x800) { u[0] = (char)(0xC0 | (cp >> 6)); u[1] = (char)(0x80 | (cp & 0x3F)); n = 2; }
    else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12)); u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F)); n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18)); u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[3] = (char)(0x80 | (cp & 0x3F)); n = 4;
    }
    return tk_buf_put(b, u, n);
}

void tk_buf_free(tk_buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

/* ---- UTF-8 ---- */

/* Well-formed sequences (Unicode Table 3-7). Returns the length of the valid
 * sequence at s, or 0 with *sub = the maximal subpart to replace by one U+FFFD. */
size_t tk_utf8_valid_at(const unsigned char *s, size_t n, size_t *sub)
{
    unsigned char c = s[0];
    *sub = 1;
    if (c < 0x80)
        return 1;
    size_t need;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) need = 2;
    else if (c == 0xE0) { need = 3; lo = 0xA0; }
    else if (c >= 0xE1 && c <= 0xEC) need = 3;
    else if (c == 0xED) { need = 3; hi = 0x9F; }
    else if (c >= 0xEE && c <= 0xEF) need = 3;
    else if (c == 0xF0) { need = 4; lo = 0x90; }
    else if (c >= 0xF1 && c <= 0xF3) need = 4;
    else if (c == 0xF4) { need = 4; hi = 0x8F; }
    else return 0;
    for (size_t i = 1; i < need; i++) {
        if (i >= n)
            return 0;
        unsigned char b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF))
            return 0;
        *sub = i + 1;
    }
    return need;
}

bool tk_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, sub;
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t k = tk_utf8_valid_at(u + i, n - i, &sub);
        if (!k)
            return false;
        i += k;
    }
    return true;
}

pb_status tk_utf8_lossy(tk_buf *out, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, run = 0, sub;
    PB_CHECK(tk_buf_reserve(out, n));
    while (i < n) {
        if (u[i] < 0x80) { i++; continue; }
        size_t k = tk_utf8_valid_at(u + i, n - i, &sub);
        if (k) { i += k; continue; }
        PB_CHECK(tk_buf_put(out, s + run, i - run));
        PB_CHECK(tk_buf_put(out, "\xEF\xBF\xBD", 3));
        i += sub;
        run = i;
    }
    return tk_buf_put(out, s + run, n - run);
}

/* ---- Unicode classes ---- */

bool tk_is_whitespace(uint32_t c)
{
    return (c >= 0x09 && c <= 0x0D) || c == 0x20 || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

bool tk_is_numeric(uint32_t c)
{
    if (c < 0x80)
        return c >= '0' && c <= '9';
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NL || k == UTF8PROC_CATEGORY_NO;
}

static bool is_alpha_cat(utf8proc_category_t k)
{
    return k == UTF8PROC_CATEGORY_LU || k == UTF8PROC_CATEGORY_LL || k == UTF8PROC_CATEGORY_LT ||
           k == UTF8PROC_CATEGORY_LM || k == UTF8PROC_CATEGORY_LO || k == UTF8PROC_CATEGORY_NL;
}

bool tk_is_alphanumeric(uint32_t c)
{
    if (c < 0x80)
        return (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return is_alpha_cat(k) || k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_NO;
}

/* HF's accent stripping and punctuation use Rust crates with older Unicode
 * tables than utf8proc's, and some characters changed class since (U+1734
 * Mn -> Mc in Unicode 14), so those tests use HF's own sets (tok_marks.inc) */
#include "tok/tok_marks.inc"

static bool in_ranges(const uint32_t (*r)[2], size_t n, uint32_t c)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (c < r[mid][0])
            hi = mid;
        else if (c > r[mid][1])
            lo = mid + 1;
        else
            return true;
    }
    return false;
}

bool tk_strips_as_accent(uint32_t c)
{
    return in_ranges(tk_strip_m, sizeof tk_strip_m / sizeof tk_strip_m[0], c);
}

bool tk_is_mark_nonspacing(uint32_t c)
{
    return in_ranges(tk_bert_mn, sizeof tk_bert_mn / sizeof tk_bert_mn[0], c);
}

bool tk_is_word(uint32_t c)
{
    if (c < 0x80)
        return c == '_' || (c >= '0' && c <= '9') || ((c | 0x20) >= 'a' && (c | 0x20) <= 'z');
    if (c == 0x200C || c == 0x200D)
        return true;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return is_alpha_cat(k) || k == UTF8PROC_CATEGORY_ND || k == UTF8PROC_CATEGORY_PC ||
           k == UTF8PROC_CATEGORY_MN || k == UTF8PROC_CATEGORY_MC || k == UTF8PROC_CATEGORY_ME;
}

bool tk_is_punct(uint32_t c)
{
    if (c < 0x80)
        return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
               (c >= 123 && c <= 126);
    return in_ranges(tk_punct, sizeof tk_punct / sizeof tk_punct[0], c);
}

bool tk_is_control(uint32_t c)
{
    if (c == '\t' || c == '\n' || c == '\r')
        return false;
    utf8proc_category_t k = utf8proc_category((utf8proc_int32_t)c);
    return k == UTF8PROC_CATEGORY_CC || k == UTF8PROC_CATEGORY_CF || k == UTF8PROC_CATEGORY_CN ||
           k == UTF8PROC_CATEGORY_CO;
}

/* ---- byte-level tables (GPT-2 bytes_to_unicode) ---- */

const uint16_t tk_byte_to_cp[256] = {
    /* printable bytes map to themselves; the others, in order, to 256.. */
    256, 257, 258, 259, 260, 261, 262, 263, 264, 265, 266, 267, 268, 269, 270, 271,
    272, 273, 274, 275, 276, 277, 278, 279, 280, 281, 282, 283, 284, 285, 286, 287,
    288, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47,
    48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63,
    64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79,
    80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95,
    96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111,
    112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 289,
    290, 291, 292, 293, 294, 295, 296, 297, 298, 299, 300, 301, 302, 303, 304, 305,
    306, 307, 308, 309, 310, 311, 312, 313, 314, 315, 316, 317, 318, 319, 320, 321,
    322, 161, 162, 163, 164, 165, 166, 167, 168, 169, 170, 171, 172, 323, 174, 175,
    176, 177, 178, 179, 180, 181, 182, 183, 184, 185, 186, 187, 188, 189, 190, 191,
    192, 193, 194, 195, 196, 197, 198, 199, 200, 201, 202, 203, 204, 205, 206, 207,
    208, 209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223,
    224, 225, 226, 227, 228, 229, 230, 231, 232, 233, 234, 235, 236, 237, 238, 239,
    240, 241, 242, 243, 244, 245, 246, 247, 248, 249, 250, 251, 252, 253, 254, 255,
};

/* ---- hashing and maps ---- */

uint64_t tk_hash(const void *p, size_t n)
{
    /* FNV-1a over 8-byte words, then a final mix */
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull ^ n;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0x100000001b3ull;
        h ^= h >> 29;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 32;
    h *= 0x9E3779B97F4A7C15ull;
    h ^= h >> 29;
    return h;
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

pb_status tk_strmap_init(tk_strmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expect * 2 + 16);
    m->mask = slots - 1;
    m->cap = expect + 16;
    pb_status st = pb_calloc(slots, sizeof *m->slots, &m->slots);
    if (st == PB_OK) st = pb_calloc(m->cap, sizeof *m->keys, &m->keys);
    if (st == PB_OK) st = pb_calloc(m->cap, sizeof *m->klen, &m->klen);
    if (st == PB_OK) st = pb_calloc(m->cap, sizeof *m->vals, &m->vals);
    if (st != PB_OK)
        tk_strmap_free(m);
    return st;
}

static pb_status strmap_grow(tk_strmap *m)
{
    size_t ncap = m->cap * 2;
    PB_CHECK(pb_realloc_array(&m->keys, ncap, sizeof *m->keys));
    PB_CHECK(pb_realloc_array(&m->klen, ncap, sizeof *m->klen));
    PB_CHECK(pb_realloc_array(&m->vals, ncap, sizeof *m->vals));
    m->cap = ncap;
    size_t slots = (m->mask + 1) * 2;
    uint32_t *ns;
    PB_CHECK(pb_calloc(slots, sizeof *ns, &ns));
    for (size_t e = 0; e < m->n; e++) {
        size_t i = (size_t)tk_hash(m->keys[e], m->klen[e]) & (slots - 1);
        while (ns[i])
            i = (i + 1) & (slots - 1);
        ns[i] = (uint32_t)(e + 1);
    }
    free(m->slots);
    m->slots = ns;
    m->mask = slots - 1;
    return PB_OK;
}

pb_status tk_strmap_put(tk_strmap *m, const char *k, size_t klen, int32_t v)
{
    if (klen > UINT32_MAX)
        return pb_error(PB_ERR_FORMAT, "tokenizer: token of %zu bytes is too long", klen);
    size_t i = (size_t)tk_hash(k, klen) & m->mask;
    while (m->slots[i]) {
        size_t e = m->slots[i] - 1;
        if (m->klen[e] == klen && memcmp(m->keys[e], k, klen) == 0) {
            m->vals[e] = v;
            return PB_OK;
        }
        i = (i + 1) & m->mask;
    }
    if (m->n >= UINT32_MAX - 1)
        return pb_error(PB_ERR_FORMAT, "tokenizer: too many tokens");
    if (m->n + 1 >= m->cap || (m->n + 1) * 2 > m->mask + 1) {
        PB_CHECK(strmap_grow(m));
        return tk_strmap_put(m, k, klen, v);
    }
    char *copy = malloc(klen + 1);
    if (!copy)
        return pb_error(PB_ERR_NOMEM, "tokenizer: out of memory");
    memcpy(copy, k, klen);
    copy[klen] = '\0';
    m->keys[m->n] = copy;
    m->klen[m->n] = (uint32_t)klen;
    m->vals[m->n] = v;
    m->slots[i] = (uint32_t)(++m->n);
    return PB_OK;
}

int32_t tk_strmap_get(const tk_strmap *m, const char *k, size_t klen)
{
    if (!m->slots)
        return -1;
    size_t i = (size_t)tk_hash(k, klen) & m->mask;
    while (m->slots[i]) {
        size_t e = m->slots[i] - 1;
        if (m->klen[e] == klen && memcmp(m->keys[e], k, klen) == 0)
            return m->vals[e];
        i = (i + 1) & m->mask;
    }
    return -1;
}

void tk_strmap_free(tk_strmap *m)
{
    if (m->keys)
        for (size_t e = 0; e < m->n; e++)
            free(m->keys[e]);
    free(m->keys);
    free(m->klen);
    free(m->vals);
    free(m->slots);
    memset(m, 0, sizeof *m);
}

pb_status tk_pairmap_init(tk_pairmap *m, size_t expect)
{
    memset(m, 0, sizeof *m);
    size_t slots = pow2_at_least(expect * 2 + 16);
    m->mask = slots - 1;
    pb_status st = pb_calloc(slots, sizeof *m->keys, &m->keys);
    if (st == PB_OK) st = pb_calloc(slots, sizeof *m->rank, &m->rank);
    if (st == PB_OK) st = pb_calloc(slots, sizeof *m->merged, &m->merged);
    if (st != PB_OK)
        tk_pairmap_free(m);
    return st;
}

/* The map is sized for the number of merges up front, so it never fills. */
void tk_pairmap_put(tk_pairmap *m, int32_t a, int32_t b, uint32_t rank, int32_t merged)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint64_t h = key * 0x9E3779B97F4A7C15ull;
    size_t i = (size_t)(h >> 20) & m->mask;
    while (m->keys[i] && m->keys[i] != key)
        i = (i + 1) & m->mask;
    if (!m->keys[i])
        m->n++;
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

void tk_pairmap_free(tk_pairmap *m)
{
    free(m->keys);
    free(m->rank);
    free(m->merged);
    memset(m, 0, sizeof *m);
}

/* ---- regex ---- */

/* Oniguruma (Ruby syntax, as HF uses it) to PCRE2: \s is Unicode's
 * White_Space (PCRE2's leaves out U+0085 and keeps U+180E, which left
 * White_Space in Unicode 6.3), \w is Unicode's word class
 * (Alphabetic, marks, decimal digits, connectors, joiners; PCRE2 10.42 leaves
 * out marks), \h/\H are hex digits. */
#define WS_CLASS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
#define WORD_CLASS "\\p{L}\\p{Nl}\\p{M}\\p{Nd}\\p{Pc}\\x{200C}\\x{200D}\\x{24B6}-\\x{24E9}"
static pb_status translate_onig(const char *p, size_t n, tk_buf *out, const char *where)
{
    int depth = 0;   /* character-class nesting; onig allows [a[bc]], PCRE2 does not */
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        bool in_class = depth > 0;
        if (c == '\\' && i + 1 < n) {
            char e = p[i + 1];
            i++;
            if (e == 's')
                PB_CHECK(tk_buf_put(out, in_class ? WS_CLASS : "[" WS_CLASS "]",
                                    in_class ? sizeof WS_CLASS - 1 : sizeof WS_CLASS + 1));
            else if (e == 'S' && !in_class)
                PB_CHECK(tk_buf_put(out, "[^" WS_CLASS "]", sizeof WS_CLASS + 2));
            else if (e == 'w')
                PB_CHECK(tk_buf_put(out, in_class ? WORD_CLASS : "[" WORD_CLASS "]",
                                    in_class ? sizeof WORD_CLASS - 1 : sizeof WORD_CLASS + 1));
            else if (e == 'W' && !in_class)
                PB_CHECK(tk_buf_put(out, "[^" WORD_CLASS "]", sizeof WORD_CLASS + 2));
            else if (e == 'h')
                PB_CHECK(tk_buf_put(out, in_class ? "0-9a-fA-F" : "[0-9a-fA-F]", in_class ? 9 : 11));
            else if (e == 'H' && !in_class)
                PB_CHECK(tk_buf_put(out, "[^0-9a-fA-F]", 12));
            else {
                PB_CHECK(tk_buf_putc(out, c));
                PB_CHECK(tk_buf_putc(out, e));
            }
            continue;
        }
        if (!in_class && c == '[') {
            depth = 1;
            PB_CHECK(tk_buf_putc(out, c));
            /* a ']' right after '[' or '[^' is literal */
            if (i + 1 < n && p[i + 1] == '^') { PB_CHECK(tk_buf_putc(out, '^')); i++; }
            if (i + 1 < n && p[i + 1] == ']') { PB_CHECK(tk_buf_putc(out, ']')); i++; }
            continue;
        }
        if (in_class && c == '[') {
            if (i + 1 < n && p[i + 1] == ':') {   /* POSIX [:name:] */
                const char *end = NULL;
                for (size_t j = i + 2; j + 1 < n; j++)
                    if (p[j] == ':' && p[j + 1] == ']') { end = p + j + 2; break; }
                if (end) {
                    PB_CHECK(tk_buf_put(out, p + i, (size_t)(end - (p + i))));
                    i = (size_t)(end - p) - 1;
                    continue;
                }
            }
            if (i + 1 < n && p[i + 1] == '^')
                return pb_error(PB_ERR_UNSUPPORTED, "%s: negated character class nested in a class "
                                "is not supported", where);
            depth++;   /* a nested set is a union: its members join the outer class */
            continue;
        }
        if (in_class && c == '&' && i + 1 < n && p[i + 1] == '&')
            return pb_error(PB_ERR_UNSUPPORTED, "%s: character class intersection (&&) is not supported",
                            where);
        if (in_class && c == ']') {
            if (--depth > 0)
                continue;
        }
        PB_CHECK(tk_buf_putc(out, c));
    }
    return PB_OK;
}

pb_status tk_regex_compile(tk_regex *re, const char *pattern, size_t len, bool literal,
                           const char *where)
{
    memset(re, 0, sizeof *re);
    if (len == 0)
        return pb_error(PB_ERR_FORMAT, "%s: empty pattern", where);
    if (!tk_utf8_valid(pattern, len))
        return pb_error(PB_ERR_FORMAT, "%s: pattern is not valid UTF-8", where);
    if (literal) {
        re->lit = malloc(len + 1);
        if (!re->lit)
            return pb_error(PB_ERR_NOMEM, "%s: out of memory", where);
        memcpy(re->lit, pattern, len);
        re->lit[len] = '\0';
        re->lit_len = len;
        return PB_OK;
    }
    tk_buf t = {0};
    pb_status st = translate_onig(pattern, len, &t, where);
    if (st != PB_OK) {
        tk_buf_free(&t);
        return st;
    }
    int err;
    PCRE2_SIZE off;
    re->code = pcre2_compile((PCRE2_SPTR)t.p, t.len, PCRE2_UTF | PCRE2_UCP | PCRE2_MULTILINE,
                             &err, &off, NULL);
    tk_buf_free(&t);
    if (!re->code) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return pb_error(PB_ERR_FORMAT, "%s: bad regex '%.*s': %s (at offset %zu)", where,
                        (int)(len > 200 ? 200 : len), pattern, (const char *)msg, (size_t)off);
    }
    re->jit = pcre2_jit_compile(re->code, PCRE2_JIT_COMPLETE) == 0;
    return PB_OK;
}

void tk_regex_free(tk_regex *re)
{
    if (re->code)
        pcre2_code_free(re->code);
    free(re->lit);
    memset(re, 0, sizeof *re);
}

pcre2_match_data *tk_regex_match_data(const tk_regex *re)
{
    return re->code ? pcre2_match_data_create_from_pattern(re->code, NULL) : NULL;
}

bool tk_regex_find(const tk_regex *re, pcre2_match_data *md, const char *s, size_t n, size_t from,
                   size_t *ms, size_t *me)
{
    if (!re->code) {
        size_t k = re->lit_len;
        if (k > n || from > n - k)
            return false;
        const char *end = s + n - k + 1;
        const char *q = s + from;
        while (q < end) {
            q = memchr(q, re->lit[0], (size_t)(end - q));
            if (!q)
                return false;
            if (memcmp(q, re->lit, k) == 0) {
                *ms = (size_t)(q - s);
                *me = *ms + k;
                return true;
            }
            q++;
        }
        return false;
    }
    int rc = re->jit ? pcre2_jit_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL)
                     : PCRE2_ERROR_JIT_STACKLIMIT;
    if (rc < 0 && rc != PCRE2_ERROR_NOMATCH)   /* JIT stack too small, or no JIT: the interpreter */
        rc = pcre2_match(re->code, (PCRE2_SPTR)s, n, from, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc < 0)
        return false;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return true;
}

/* ---- pieces ---- */

static pb_status pieces_grow(tk_pieces *p)
{
    if (p->n < p->cap)
        return PB_OK;
    size_t ncap = p->cap ? p->cap * 2 : 16;
    PB_CHECK(pb_realloc_array(&p->v, ncap, sizeof *p->v));
    p->cap = ncap;
    return PB_OK;
}

pb_status tk_pieces_add(tk_pieces *p, const char *s, size_t len, int32_t id, bool first)
{
    PB_CHECK(pieces_grow(p));
    size_t off = p->text.len;
    PB_CHECK(tk_buf_put(&p->text, s, len));
    p->v[p->n++] = (tk_piece){off, len, id, first};
    return PB_OK;
}

pb_status tk_pieces_add_span(tk_pieces *p, size_t off, size_t len, int32_t id, bool first)
{
    PB_CHECK(pieces_grow(p));
    p->v[p->n++] = (tk_piece){off, len, id, first};
    return PB_OK;
}

void tk_pieces_clear(tk_pieces *p)
{
    p->n = 0;
    p->text.len = 0;
    if (p->text.p)
        p->text.p[0] = '\0';
}

void tk_pieces_free(tk_pieces *p)
{
    tk_buf_free(&p->text);
    free(p->v);
    memset(p, 0, sizeof *p);
}
