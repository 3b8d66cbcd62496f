/* Jinja2 subset for chat templates: lexer (Jinja's whitespace rules with
 * trim_blocks + lstrip_blocks), recursive-descent parser to an AST, and a
 * tree-walking evaluator over Python-like values. All memory of a parse or a
 * render lives in one arena; errors unwind with longjmp to the entry point,
 * which turns them into a pb_status (the arena frees everything). */
#include "config.h"

#include "chat/jinja.h"

#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "common/util.h"

/* ------------------------------------------------------------------ arena + errors */

typedef struct chunk {
    struct chunk *next;
    size_t size, used;
    max_align_t data[];
} chunk;

typedef struct jfail {
    jmp_buf jb;
    pb_status st;
    char msg[768];
    const char *name;
} jfail;

typedef struct arena {
    chunk *head;
    size_t total, cap;
    jfail *f;
} arena;

static void fail(jfail *f, pb_status st, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5), noreturn));
static void fail(jfail *f, pb_status st, int line, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (line > 0)
        snprintf(f->msg, sizeof f->msg, "%s line %d: %s", f->name, line, buf);
    else
        snprintf(f->msg, sizeof f->msg, "%s: %s", f->name, buf);
    f->st = st;
    longjmp(f->jb, 1);
}

static void *aalloc(arena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->size - a->head->used < n) {
        size_t sz = n > 65536 ? n : 65536;
        if (a->total + sz > a->cap)
            fail(a->f, PB_ERR_INPUT, 0, "template used more than %zu bytes of memory", a->cap);
        chunk *c = malloc(sizeof *c + sz);
        if (!c)
            fail(a->f, PB_ERR_NOMEM, 0, "out of memory");
        c->next = a->head;
        c->size = sz;
        c->used = 0;
        a->head = c;
        a->total += sz;
    }
    void *p = (char *)a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

static void afree(arena *a)
{
    for (chunk *c = a->head, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    a->head = NULL;
    a->total = 0;
}

/* ------------------------------------------------------------------ values */

enum { JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR, JV_LIST, JV_DICT, JV_NS, JV_LOOP,
       JV_MACRO, JV_BUILTIN, JV_METHOD };

typedef struct jstr { size_t n; char p[]; } jstr;
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jloop jloop;
typedef struct jmeth jmeth;
typedef struct node node;

typedef struct jv {
    int t;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s;
        jlist *l;
        jdict *d;       /* JV_DICT and JV_NS */
        jloop *lp;
        const node *mac;
        int bi;
        jmeth *m;
    } u;
} jv;

struct jlist { size_t n; jv *v; bool tuple; };   /* tuple: printed as (a, b) */
struct jdict { size_t n, cap; jstr **k; jv *v; };
struct jloop { size_t index0, length; const jlist *items; };
struct jmeth { jv self; const char *name; };

enum { BI_RANGE, BI_NAMESPACE, BI_RAISE, BI_STRFTIME, BI_DICT };

/* ------------------------------------------------------------------ AST */

enum {
    N_BODY, N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_BREAK, N_CONTINUE,
    E_LIT, E_NAME, E_ATTR, E_ITEM, E_SLICE, E_CALL, E_FILTER, E_TEST, E_BIN, E_NEG, E_POS,
    E_AND, E_OR, E_NOT, E_COND, E_LIST, E_DICT
};

enum { OP_ADD = 1, OP_SUB, OP_MUL, OP_DIV, OP_FDIV, OP_MOD, OP_POW, OP_CAT,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN };

struct node {
    int kind, line, op;
    bool neg;
    const char *name;       /* NUL-terminated (arena) */
    size_t name_len;
    jv lit;
    node *a, *b, *c, *d;
    node **list;            /* body statements, positional args, list items, dict keys, defaults */
    size_t n;
    const char **kwnames;   /* keyword names, for targets, macro parameters */
    node **kwvals;          /* keyword values, dict values */
    size_t nkw;
};

/* ------------------------------------------------------------------ small string helpers */

static jstr *mkstr(arena *a, const char *p, size_t n)
{
    size_t sz;
    if (__builtin_add_overflow(sizeof(jstr) + 1, n, &sz))
        fail(a->f, PB_ERR_NOMEM, 0, "out of memory");
    jstr *s = aalloc(a, sz);
    s->n = n;
    if (n)
        memcpy(s->p, p, n);
    s->p[n] = '\0';
    return s;
}

static jv vstr(arena *a, const char *p, size_t n)
{
    jv v = {.t = JV_STR};
    v.u.s = mkstr(a, p, n);
    return v;
}
static jv vcstr(arena *a, const char *p) { return vstr(a, p, strlen(p)); }
static jv vint(int64_t i) { jv v = {.t = JV_INT}; v.u.i = i; return v; }
static jv vbool(bool b) { jv v = {.t = JV_BOOL}; v.u.b = b; return v; }
static jv vfloat(double f) { jv v = {.t = JV_FLOAT}; v.u.f = f; return v; }
static jv vnone(void) { jv v = {.t = JV_NONE}; return v; }
static jv vundef(void) { jv v = {.t = JV_UNDEF}; return v; }

/* growable byte buffer in the arena's error domain (malloc'ed, bounded) */
typedef struct sbuf { char *p; size_t n, cap, max; jfail *f; arena *a; } sbuf;

static void sb_put(sbuf *b, const void *p, size_t n)
{
    if (!n)
        return;
    if (b->n + n > b->max)
        fail(b->f, PB_ERR_INPUT, 0, "rendered text longer than %zu bytes", b->max);
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap : 256;
        while (nc < b->n + n + 1)
            nc *= 2;
        char *q = aalloc(b->a, nc);
        if (b->n)
            memcpy(q, b->p, b->n);
        b->p = q;
        b->cap = nc;
    }
    memcpy(b->p + b->n, p, n);
    b->n += n;
    b->p[b->n] = '\0';
}
static void sb_puts(sbuf *b, const char *s) { sb_put(b, s, strlen(s)); }
static void sb_putc(sbuf *b, char c) { sb_put(b, &c, 1); }

/* One UTF-8 sequence at s (n bytes left): its length (invalid byte = 1) and code point. */
static size_t u8dec(const unsigned char *s, size_t n, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate(s, (utf8proc_ssize_t)(n > 4 ? 4 : n), &c);
    if (k <= 0) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = c;
    return (size_t)k;
}

static void sb_cp(sbuf *b, int32_t cp)
{
    utf8proc_uint8_t e[4];
    utf8proc_ssize_t k = utf8proc_encode_char(cp, e);
    sb_put(b, e, (size_t)k);
}

/* Python's str.isspace() for one code point. */
static bool py_space(int32_t c)
{
    return (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 ||
           c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 ||
           c == 0x202f || c == 0x205f || c == 0x3000;
}

static size_t u8count(const char *p, size_t n)
{
    size_t c = 0;
    int32_t cp;
    for (size_t i = 0; i < n; c++)
        i += u8dec((const unsigned char *)p + i, n - i, &cp);
    return c;
}

/* ------------------------------------------------------------------ lexer */

enum { T_DATA, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };

typedef struct tok {
    int t, line;
    const char *p;      /* NAME/OP/DATA text (DATA and STR in the arena) */
    size_t n;
    int64_t i;
    double f;
} tok;

typedef struct lexer {
    arena *a;
    jfail *f;
    const char *s;
    size_t n, pos;
    int line;
    tok *v;
    size_t nt, cap;
} lexer;

static void push_tok(lexer *L, tok t)
{
    if (L->nt == L->cap) {
        size_t nc = L->cap ? L->cap * 2 : 256;
        tok *nv = aalloc(L->a, nc * sizeof *nv);
        if (L->nt)
            memcpy(nv, L->v, L->nt * sizeof *nv);
        L->v = nv;
        L->cap = nc;
    }
    L->v[L->nt++] = t;
}

static int count_nl(const char *p, size_t n)
{
    int c = 0;
    for (size_t i = 0; i < n; i++)
        c += p[i] == '\n';
    return c;
}

/* Length of the Python-whitespace run at p (regex \s*). */
static size_t ws_run(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int32_t cp;
        size_t k = u8dec((const unsigned char *)p + i, n - i, &cp);
        if (!py_space(cp))
            break;
        i += k;
    }
    return i;
}

/* Length of text with trailing Python whitespace removed (str.rstrip()). */
static size_t rstrip_len(const char *p, size_t n)
{
    size_t end = 0, i = 0;
    while (i < n) {
        int32_t cp;
        size_t k = u8dec((const unsigned char *)p + i, n - i, &cp);
        i += k;
        if (!py_space(cp))
            end = i;
    }
    return end;
}

size_t pb_py_lstrip_len(const char *p, size_t n) { return ws_run(p, n); }
size_t pb_py_rstrip_len(const char *p, size_t n) { return rstrip_len(p, n); }

static const char *const OPS3[] = {"//", "**", "==", "!=", ">=", "<=", NULL};
static const char OPS1[] = "+-/*%~[](){}><=.:|,;";

/* Python unicode-escape decoding of a string literal body. */
static void decode_string(lexer *L, const char *p, size_t n, tok *t)
{
    sbuf b = {.max = (size_t)1 << 30, .f = L->f, .a = L->a};
    for (size_t i = 0; i < n; i++) {
        char c = p[i];
        if (c != '\\' || i + 1 >= n) {
            sb_putc(&b, c);
            continue;
        }
        char e = p[++i];
        int32_t cp = -1;
        int hex = 0;
        switch (e) {
        case 'n': sb_putc(&b, '\n'); break;
        case 't': sb_putc(&b, '\t'); break;
        case 'r': sb_putc(&b, '\r'); break;
        case '\\': sb_putc(&b, '\\'); break;
        case '\'': sb_putc(&b, '\''); break;
        case '"': sb_putc(&b, '"'); break;
        case 'a': sb_putc(&b, '\a'); break;
        case 'b': sb_putc(&b, '\b'); break;
        case 'f': sb_putc(&b, '\f'); break;
        case 'v': sb_putc(&b, '\v'); break;
        case '\n': break;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                cp = e - '0';
                for (int k = 0; k < 2 && i + 1 < n && p[i + 1] >= '0' && p[i + 1] <= '7'; k++)
                    cp = cp * 8 + (p[++i] - '0');
                sb_cp(&b, cp);
            } else {
                sb_putc(&b, '\\');
                sb_putc(&b, e);
            }
        }
        if (hex) {
            cp = 0;
            for (int k = 0; k < hex; k++) {
                char h = i + 1 < n ? p[i + 1] : 0;
                int d = h >= '0' && h <= '9' ? h - '0' : h >= 'a' && h <= 'f' ? h - 'a' + 10
                      : h >= 'A' && h <= 'F' ? h - 'A' + 10 : -1;
                if (d < 0)
                    fail(L->f, PB_ERR_FORMAT, L->line, "bad \\%c escape in a string literal", e);
                cp = cp * 16 + d;
                i++;
            }
            if (cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
                fail(L->f, PB_ERR_FORMAT, L->line, "escape \\%c names an invalid code point", e);
            sb_cp(&b, cp);
        }
    }
    jstr *s = mkstr(L->a, b.p ? b.p : "", b.n);
    t->p = s->p;
    t->n = s->n;
}

/* Tokens of one {{ }} or {% %} tag, from L->pos up to and including its end. */
static void lex_tag(lexer *L, bool block, bool *line_starting)
{
    int depth = 0;
    const char *s = L->s;
    size_t n = L->n;
    for (;;) {
        size_t w = ws_run(s + L->pos, n - L->pos);
        L->line += count_nl(s + L->pos, w);
        L->pos += w;
        size_t p = L->pos;
        if (p >= n)
            fail(L->f, PB_ERR_FORMAT, L->line, "unexpected end of template, expected '%s'",
                 block ? "%}" : "}}");
        if (depth == 0) {
            const char *end = block ? "%}" : "}}";
            size_t e = 0;
            bool minus = false;
            if (block && s[p] == '+' && p + 2 < n && strncmp(s + p + 1, end, 2) == 0)
                e = 3;
            else if (s[p] == '-' && p + 2 < n && strncmp(s + p + 1, end, 2) == 0)
                e = 3, minus = true;
            else if (p + 1 < n && strncmp(s + p, end, 2) == 0)
                e = 2;
            if (e) {
                tok t = {.t = block ? T_BEND : T_VEND, .line = L->line};
                push_tok(L, t);
                L->pos = p + e;
                if (minus) {
                    size_t k = ws_run(s + L->pos, n - L->pos);
                    L->line += count_nl(s + L->pos, k);
                    L->pos += k;
                } else if (block && e == 2 && L->pos < n && s[L->pos] == '\n') {
                    L->pos++;   /* trim_blocks */
                    L->line++;
                }
                *line_starting = s[L->pos - 1] == '\n';
                return;
            }
        }
        char c = s[p];
        tok t = {.line = L->line};
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
            size_t q = p;
            while (q < n && ((s[q] >= 'a' && s[q] <= 'z') || (s[q] >= 'A' && s[q] <= 'Z') ||
                             (s[q] >= '0' && s[q] <= '9') || s[q] == '_'))
                q++;
            t.t = T_NAME;
            t.p = s + p;
            t.n = q - p;
            L->pos = q;
        } else if (c >= '0' && c <= '9') {
            size_t q = p;
            while (q < n && ((s[q] >= '0' && s[q] <= '9') || s[q] == '_'))
                q++;
            bool isf = false;
            if (q + 1 < n && s[q] == '.' && s[q + 1] >= '0' && s[q + 1] <= '9') {
                isf = true;
                q++;
                while (q < n && ((s[q] >= '0' && s[q] <= '9') || s[q] == '_'))
                    q++;
            }
            if (q < n && (s[q] == 'e' || s[q] == 'E')) {
                size_t r = q + 1;
                if (r < n && (s[r] == '+' || s[r] == '-'))
                    r++;
                if (r < n && s[r] >= '0' && s[r] <= '9') {
                    isf = true;
                    q = r;
                    while (q < n && s[q] >= '0' && s[q] <= '9')
                        q++;
                }
            }
            char num[64];
            size_t k = 0;
            for (size_t i = p; i < q && k + 1 < sizeof num; i++)
                if (s[i] != '_')
                    num[k++] = s[i];
            num[k] = '\0';
            if (q - p >= sizeof num)
                fail(L->f, PB_ERR_FORMAT, L->line, "number literal too long");
            if (isf) {
                t.t = T_FLOAT;
                t.f = strtod(num, NULL);
            } else {
                t.t = T_INT;
                char *e;
                unsigned long long v = strtoull(num, &e, 10);
                if (v > INT64_MAX || k > 19)
                    fail(L->f, PB_ERR_UNSUPPORTED, L->line, "integer literal %s is too large", num);
                t.i = (int64_t)v;
            }
            L->pos = q;
        } else if (c == '\'' || c == '"') {
            size_t q = p + 1;
            while (q < n && s[q] != c) {
                if (s[q] == '\\')
                    q++;
                q++;
            }
            if (q >= n)
                fail(L->f, PB_ERR_FORMAT, L->line, "unterminated string literal");
            t.t = T_STR;
            decode_string(L, s + p + 1, q - p - 1, &t);
            L->line += count_nl(s + p, q - p);
            L->pos = q + 1;
        } else {
            t.t = T_OP;
            t.p = s + p;
            t.n = 0;
            for (int k = 0; OPS3[k]; k++)
                if (p + 1 < n && strncmp(s + p, OPS3[k], 2) == 0)
                    t.n = 2;
            if (!t.n && strchr(OPS1, c) && c)
                t.n = 1;
            if (!t.n)
                fail(L->f, PB_ERR_FORMAT, L->line, "unexpected character '%c'", c);
            if (c == '(' || c == '[' || c == '{')
                depth++;
            else if (t.n == 1 && (c == ')' || c == ']' || c == '}')) {
                if (depth == 0)
                    fail(L->f, PB_ERR_FORMAT, L->line, "unexpected '%c'", c);
                depth--;
            }
            L->pos = p + t.n;
        }
        push_tok(L, t);
    }
}

/* At p: [ws] word [ws] ; returns the position after, or 0 if no match. */
static size_t match_word(const char *s, size_t n, size_t p, const char *w)
{
    while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r'))
        p++;
    size_t k = strlen(w);
    if (p + k > n || memcmp(s + p, w, k))
        return 0;
    p += k;
    if (p < n && ((s[p] >= 'a' && s[p] <= 'z') || (s[p] >= 'A' && s[p] <= 'Z') || s[p] == '_' ||
                  (s[p] >= '0' && s[p] <= '9')))
        return 0;
    while (p < n && (s[p] == ' ' || s[p] == '\t' || s[p] == '\n' || s[p] == '\r'))
        p++;
    return p;
}

/* {% raw %}...{% endraw %} at L->pos (just after '{%' and its sign): the
 * text inside as data. false if this tag is not raw. */
static bool lex_raw(lexer *L, bool *line_starting)
{
    const char *s = L->s;
    size_t n = L->n, p = match_word(s, n, L->pos, "raw");
    if (!p)
        return false;
    bool strip_after = false;
    if (p < n && (s[p] == '-' || s[p] == '+')) {
        strip_after = s[p] == '-';
        p++;
    }
    if (p + 1 >= n || s[p] != '%' || s[p + 1] != '}')
        return false;
    p += 2;
    if (strip_after)
        p += ws_run(s + p, n - p);
    for (size_t q = p; q + 1 < n; q++) {
        if (s[q] != '{' || s[q + 1] != '%')
            continue;
        size_t r = q + 2;
        bool strip_before = false;
        if (r < n && (s[r] == '-' || s[r] == '+')) {
            strip_before = s[r] == '-';
            r++;
        }
        size_t e = match_word(s, n, r, "endraw");
        if (!e)
            continue;
        char sign = 0;
        if (e < n && (s[e] == '-' || s[e] == '+'))
            sign = s[e++];
        if (e + 1 >= n || s[e] != '%' || s[e + 1] != '}')
            fail(L->f, PB_ERR_FORMAT, L->line, "bad endraw tag");
        e += 2;
        size_t len = q - p;
        if (strip_before)
            len = rstrip_len(s + p, len);
        if (len) {
            tok t = {.t = T_DATA, .line = L->line, .p = s + p, .n = len};
            push_tok(L, t);
        }
        if (sign == '-')
            e += ws_run(s + e, n - e);
        else if (sign != '+' && e < n && s[e] == '\n')
            e++;
        L->line += count_nl(s + L->pos, e - L->pos);
        L->pos = e;
        *line_starting = s[e - 1] == '\n';
        return true;
    }
    fail(L->f, PB_ERR_FORMAT, L->line, "missing end of raw directive");
}

static void lex(lexer *L)
{
    const char *s = L->s;
    size_t n = L->n;
    bool line_starting = true;
    L->line = 1;
    while (L->pos < n) {
        /* the next tag start */
        size_t q = L->pos;
        int kind = -1;
        for (; q + 1 < n; q++) {
            if (s[q] != '{')
                continue;
            if (s[q + 1] == '{') { kind = 0; break; }
            if (s[q + 1] == '%') { kind = 1; break; }
            if (s[q + 1] == '#') { kind = 2; break; }
        }
        if (kind < 0) {
            tok t = {.t = T_DATA, .line = L->line, .p = s + L->pos, .n = n - L->pos};
            push_tok(L, t);
            L->line += count_nl(t.p, t.n);
            break;
        }
        char sign = q + 2 < n && (s[q + 2] == '-' || s[q + 2] == '+') ? s[q + 2] : 0;
        size_t tl = q - L->pos;
        const char *text = s + L->pos;
        int text_line = L->line;
        L->line += count_nl(text, tl);
        if (sign == '-')
            tl = rstrip_len(text, tl);
        else if (sign != '+' && kind != 0) {
            size_t l_pos = 0;
            for (size_t i = tl; i > 0; i--)
                if (text[i - 1] == '\n') { l_pos = i; break; }
            if ((l_pos > 0 || line_starting) && l_pos < tl && ws_run(text + l_pos, tl - l_pos) == tl - l_pos)
                tl = l_pos;
        }
        if (tl) {
            tok t = {.t = T_DATA, .line = text_line, .p = text, .n = tl};
            push_tok(L, t);
        }
        L->pos = q + 2 + (sign ? 1 : 0);
        if (kind == 2) {
            size_t i = L->pos;
            for (;; i++) {
                if (i + 1 >= n)
                    fail(L->f, PB_ERR_FORMAT, L->line, "missing end of comment tag");
                if ((s[i] == '+' || s[i] == '-') && i + 2 < n && s[i + 1] == '#' && s[i + 2] == '}') {
                    L->line += count_nl(s + L->pos, i - L->pos);
                    L->pos = i + 3;
                    if (s[i] == '-') {
                        size_t k = ws_run(s + L->pos, n - L->pos);
                        L->line += count_nl(s + L->pos, k);
                        L->pos += k;
                    }
                    break;
                }
                if (s[i] == '#' && s[i + 1] == '}') {
                    L->line += count_nl(s + L->pos, i - L->pos);
                    L->pos = i + 2;
                    if (L->pos < n && s[L->pos] == '\n') {
                        L->pos++;
                        L->line++;
                    }
                    break;
                }
            }
            line_starting = s[L->pos - 1] == '\n';
            continue;
        }
        if (kind == 1 && lex_raw(L, &line_starting))
            continue;
        tok t = {.t = kind == 0 ? T_VBEGIN : T_BBEGIN, .line = L->line};
        push_tok(L, t);
        lex_tag(L, kind == 1, &line_starting);
    }
    tok e = {.t = T_EOF, .line = L->line};
    push_tok(L, e);
}

/* ------------------------------------------------------------------ parser */

typedef struct parser {
    arena *a;
    jfail *f;
    tok *t;
    size_t i;
    int depth, loops;
} parser;

static const char *const FILTERS[] = {
    "trim", "tojson", "length", "count", "upper", "lower", "replace", "default", "d", "first",
    "last", "join", "items", "capitalize", "title", "string", "int", "float", "list", "map",
    "select", "reject", "selectattr", "rejectattr", "abs", "unique", "reverse", "sort",
    "dictsort", "safe", "sum", "min", "max", "attr", "round", "indent", "e", "escape", "wordcount",
    "bool", "center", "batch", NULL};
static const char *const TESTS[] = {
    "defined", "undefined", "none", "string", "mapping", "iterable", "number", "integer",
    "float", "sequence", "boolean", "true", "false", "equalto", "eq", "==", "ne", "!=", "in",
    "odd", "even", "divisibleby", "sameas", "lower", "upper", "callable", "gt", "lt", "ge", "le",
    ">", "<", ">=", "<=", "greaterthan", "lessthan", NULL};

static bool in_list(const char *const *l, const char *s, size_t n)
{
    for (; *l; l++)
        if (strlen(*l) == n && memcmp(*l, s, n) == 0)
            return true;
    return false;
}

static tok *cur(parser *P) { return &P->t[P->i]; }
static bool is_op(parser *P, const char *op)
{
    tok *t = cur(P);
    return t->t == T_OP && t->n == strlen(op) && memcmp(t->p, op, t->n) == 0;
}
static bool is_name(parser *P, const char *nm)
{
    tok *t = cur(P);
    return t->t == T_NAME && t->n == strlen(nm) && memcmp(t->p, nm, t->n) == 0;
}
static const char *tokdesc(parser *P, char *buf, size_t cap)
{
    tok *t = cur(P);
    switch (t->t) {
    case T_DATA: return "template text";
    case T_VBEGIN: return "'{{'";
    case T_VEND: return "'}}'";
    case T_BBEGIN: return "'{%'";
    case T_BEND: return "'%}'";
    case T_EOF: return "end of template";
    case T_STR: return "a string";
    case T_INT: case T_FLOAT: return "a number";
    default:
        snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->p);
        return buf;
    }
}
static void expect_op(parser *P, const char *op)
{
    if (!is_op(P, op)) {
        char b[64];
        fail(P->f, PB_ERR_FORMAT, cur(P)->line, "expected '%s', got %s", op, tokdesc(P, b, sizeof b));
    }
    P->i++;
}
static void expect_t(parser *P, int t, const char *what)
{
    if (cur(P)->t != t) {
        char b[64];
        fail(P->f, PB_ERR_FORMAT, cur(P)->line, "expected %s, got %s", what, tokdesc(P, b, sizeof b));
    }
    P->i++;
}
static const char *name_dup(parser *P, tok *t)
{
    return mkstr(P->a, t->p, t->n)->p;
}
static const char *expect_name(parser *P)
{
    tok *t = cur(P);
    if (t->t != T_NAME) {
        char b[64];
        fail(P->f, PB_ERR_FORMAT, t->line, "expected a name, got %s", tokdesc(P, b, sizeof b));
    }
    P->i++;
    return name_dup(P, t);
}

static node *mknode(parser *P, int kind, int line)
{
    node *x = aalloc(P->a, sizeof *x);
    memset(x, 0, sizeof *x);
    x->kind = kind;
    x->line = line;
    return x;
}

/* growable node-pointer vector in the arena */
typedef struct nvec { node **v; const char **names; size_t n, cap; } nvec;
static void nv_push(parser *P, nvec *v, node *x, const char *name)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 8;
        node **nv = aalloc(P->a, nc * sizeof *nv);
        const char **nn = aalloc(P->a, nc * sizeof *nn);
        if (v->n) {
            memcpy(nv, v->v, v->n * sizeof *nv);
            memcpy(nn, v->names, v->n * sizeof *nn);
        }
        v->v = nv;
        v->names = nn;
        v->cap = nc;
    }
    v->names[v->n] = name;
    v->v[v->n++] = x;
}

static node *p_expr(parser *P, bool with_cond);
static node *p_unary(parser *P, bool with_filter);

static void enter(parser *P)
{
    if (++P->depth > 400)
        fail(P->f, PB_ERR_FORMAT, cur(P)->line, "expressions or blocks nested too deeply");
}

/* call arguments after '(' : positional and keyword */
static void p_args(parser *P, node *x)
{
    nvec pos = {0}, kw = {0};
    while (!is_op(P, ")")) {
        if (pos.n + kw.n)
            expect_op(P, ",");
        if (is_op(P, ")"))
            break;
        if (is_op(P, "*") || is_op(P, "**"))
            fail(P->f, PB_ERR_UNSUPPORTED, cur(P)->line, "unsupported: *args/**kwargs in a call");
        if (cur(P)->t == T_NAME && P->t[P->i + 1].t == T_OP && P->t[P->i + 1].n == 1 &&
            P->t[P->i + 1].p[0] == '=') {
            const char *nm = expect_name(P);
            P->i++;
            nv_push(P, &kw, p_expr(P, true), nm);
        } else {
            if (kw.n)
                fail(P->f, PB_ERR_FORMAT, cur(P)->line, "positional argument after a keyword argument");
            nv_push(P, &pos, p_expr(P, true), NULL);
        }
    }
    P->i++;
    x->list = pos.v;
    x->n = pos.n;
    x->kwnames = kw.names;
    x->kwvals = kw.v;
    x->nkw = kw.n;
}

static node *p_primary(parser *P)
{
    tok *t = cur(P);
    int line = t->line;
    node *x;
    enter(P);
    if (t->t == T_NAME) {
        P->i++;
        x = mknode(P, E_LIT, line);
        if ((t->n == 4 && (!memcmp(t->p, "true", 4) || !memcmp(t->p, "True", 4))))
            x->lit = vbool(true);
        else if (t->n == 5 && (!memcmp(t->p, "false", 5) || !memcmp(t->p, "False", 5)))
            x->lit = vbool(false);
        else if (t->n == 4 && (!memcmp(t->p, "none", 4) || !memcmp(t->p, "None", 4)))
            x->lit = vnone();
        else {
            x->kind = E_NAME;
            x->name = name_dup(P, t);
            x->name_len = t->n;
        }
    } else if (t->t == T_STR) {
        /* adjacent literals concatenate */
        sbuf b = {.max = (size_t)1 << 30, .f = P->f, .a = P->a};
        while (cur(P)->t == T_STR) {
            sb_put(&b, cur(P)->p, cur(P)->n);
            P->i++;
        }
        x = mknode(P, E_LIT, line);
        x->lit = vstr(P->a, b.p ? b.p : "", b.n);
    } else if (t->t == T_INT) {
        P->i++;
        x = mknode(P, E_LIT, line);
        x->lit = vint(t->i);
    } else if (t->t == T_FLOAT) {
        P->i++;
        x = mknode(P, E_LIT, line);
        x->lit = vfloat(t->f);
    } else if (is_op(P, "(")) {
        P->i++;
        if (is_op(P, ")")) {
            P->i++;
            x = mknode(P, E_LIST, line);
            x->op = 1;
        } else {
            x = p_expr(P, true);
            if (is_op(P, ",")) {   /* tuple -> list */
                nvec v = {0};
                nv_push(P, &v, x, NULL);
                while (is_op(P, ",")) {
                    P->i++;
                    if (is_op(P, ")"))
                        break;
                    nv_push(P, &v, p_expr(P, true), NULL);
                }
                x = mknode(P, E_LIST, line);
                x->list = v.v;
                x->n = v.n;
                x->op = 1;
            }
            expect_op(P, ")");
        }
    } else if (is_op(P, "[")) {
        P->i++;
        nvec v = {0};
        while (!is_op(P, "]")) {
            if (v.n)
                expect_op(P, ",");
            if (is_op(P, "]"))
                break;
            nv_push(P, &v, p_expr(P, true), NULL);
        }
        P->i++;
        x = mknode(P, E_LIST, line);
        x->list = v.v;
        x->n = v.n;
    } else if (is_op(P, "{")) {
        P->i++;
        nvec k = {0}, v = {0};
        while (!is_op(P, "}")) {
            if (k.n)
                expect_op(P, ",");
            if (is_op(P, "}"))
                break;
            nv_push(P, &k, p_expr(P, true), NULL);
            expect_op(P, ":");
            nv_push(P, &v, p_expr(P, true), NULL);
        }
        P->i++;
        x = mknode(P, E_DICT, line);
        x->list = k.v;
        x->kwvals = v.v;
        x->n = k.n;
    } else {
        char b[64];
        fail(P->f, PB_ERR_FORMAT, line, "unexpected %s in an expression", tokdesc(P, b, sizeof b));
    }
    P->depth--;
    return x;
}

static node *p_postfix(parser *P, node *x)
{
    for (;;) {
        int line = cur(P)->line;
        enter(P);
        if (is_op(P, ".")) {
            P->i++;
            tok *t = cur(P);
            node *y = mknode(P, E_ATTR, line);
            y->a = x;
            if (t->t == T_NAME) {
                y->name = expect_name(P);
            } else if (t->t == T_INT) {
                y->kind = E_ITEM;
                y->b = mknode(P, E_LIT, line);
                y->b->lit = vint(t->i);
                P->i++;
            } else
                fail(P->f, PB_ERR_FORMAT, line, "expected an attribute name after '.'");
            x = y;
        } else if (is_op(P, "[")) {
            P->i++;
            node *parts[3] = {NULL, NULL, NULL};
            int k = 0;
            bool slice = false;
            for (;;) {
                if (is_op(P, ":")) {
                    slice = true;
                    if (++k > 2)
                        fail(P->f, PB_ERR_FORMAT, line, "bad slice");
                    P->i++;
                    continue;
                }
                if (is_op(P, "]"))
                    break;
                if (parts[k])
                    fail(P->f, PB_ERR_FORMAT, line, "bad subscript");
                parts[k] = p_expr(P, true);
                if (is_op(P, ","))
                    fail(P->f, PB_ERR_UNSUPPORTED, line, "unsupported: tuple subscripts");
            }
            P->i++;
            node *y = mknode(P, slice ? E_SLICE : E_ITEM, line);
            y->a = x;
            y->b = parts[0];
            y->c = parts[1];
            y->d = parts[2];
            if (!slice && !parts[0])
                fail(P->f, PB_ERR_FORMAT, line, "empty subscript");
            x = y;
        } else if (is_op(P, "(")) {
            P->i++;
            node *y = mknode(P, E_CALL, line);
            y->a = x;
            p_args(P, y);
            x = y;
        } else
            return x;
    }
}

static node *p_filters(parser *P, node *x)
{
    for (;;) {
        int line = cur(P)->line;
        enter(P);
        if (is_op(P, "|")) {
            P->i++;
            const char *nm = expect_name(P);
            while (is_op(P, ".")) {   /* dotted filter names do not exist here */
                fail(P->f, PB_ERR_UNSUPPORTED, line, "unsupported filter '%s.'", nm);
            }
            node *y = mknode(P, E_FILTER, line);
            y->a = x;
            y->name = nm;
            if (is_op(P, "(")) {
                P->i++;
                p_args(P, y);
            }
            x = y;
        } else if (is_name(P, "is")) {
            P->i++;
            node *y = mknode(P, E_TEST, line);
            y->a = x;
            if (is_name(P, "not")) {
                P->i++;
                y->neg = true;
            }
            tok *t = cur(P);
            const char *nm;
            if (t->t == T_NAME)
                nm = expect_name(P);
            else if (t->t == T_OP && (is_op(P, "==") || is_op(P, "!=") || is_op(P, "<") ||
                                      is_op(P, ">") || is_op(P, "<=") || is_op(P, ">="))) {
                nm = name_dup(P, t);
                P->i++;
            } else
                fail(P->f, PB_ERR_FORMAT, line, "expected a test name after 'is'");
            y->name = nm;
            if (is_op(P, "(")) {
                P->i++;
                p_args(P, y);
            } else {
                tok *c = cur(P);
                bool arg = (c->t == T_NAME || c->t == T_STR || c->t == T_INT || c->t == T_FLOAT ||
                            is_op(P, "[") || is_op(P, "{")) &&
                           !is_name(P, "else") && !is_name(P, "or") && !is_name(P, "and") &&
                           !is_name(P, "if") && !is_name(P, "is") && !is_name(P, "in") && !is_name(P, "not");
                if (arg) {
                    node **l = aalloc(P->a, sizeof *l);
                    l[0] = p_postfix(P, p_primary(P));
                    y->list = l;
                    y->n = 1;
                }
            }
            x = y;
        } else if (is_op(P, "(")) {
            P->i++;
            node *y = mknode(P, E_CALL, line);
            y->a = x;
            p_args(P, y);
            x = y;
        } else
            return x;
    }
}

static node *p_unary(parser *P, bool with_filter)
{
    int line = cur(P)->line;
    node *x;
    enter(P);
    if (is_op(P, "-") || is_op(P, "+")) {
        bool neg = is_op(P, "-");
        P->i++;
        x = mknode(P, neg ? E_NEG : E_POS, line);
        x->a = p_unary(P, false);
    } else
        x = p_postfix(P, p_primary(P));
    if (with_filter)
        x = p_filters(P, x);
    P->depth--;
    return x;
}

static node *bin(parser *P, int op, node *l, node *r, int line)
{
    node *x = mknode(P, E_BIN, line);
    x->op = op;
    x->a = l;
    x->b = r;
    return x;
}

static node *p_pow(parser *P)
{
    node *x = p_unary(P, true);
    while (is_op(P, "**")) {
        int line = cur(P)->line;
        P->i++;
        enter(P);
        x = bin(P, OP_POW, x, p_unary(P, true), line);
    }
    return x;
}
static node *p_math2(parser *P)
{
    node *x = p_pow(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "*")) op = OP_MUL;
        else if (is_op(P, "/")) op = OP_DIV;
        else if (is_op(P, "//")) op = OP_FDIV;
        else if (is_op(P, "%")) op = OP_MOD;
        else return x;
        P->i++;
        enter(P);
        x = bin(P, op, x, p_pow(P), line);
    }
}
static node *p_concat(parser *P)
{
    node *x = p_math2(P);
    while (is_op(P, "~")) {
        int line = cur(P)->line;
        P->i++;
        enter(P);
        x = bin(P, OP_CAT, x, p_math2(P), line);
    }
    return x;
}
static node *p_math1(parser *P)
{
    node *x = p_concat(P);
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "+")) op = OP_ADD;
        else if (is_op(P, "-")) op = OP_SUB;
        else return x;
        P->i++;
        enter(P);
        x = bin(P, op, x, p_concat(P), line);
    }
}
static node *p_compare(parser *P)
{
    node *x = p_math1(P);
    node *prev = NULL, *res = NULL;
    for (;;) {
        int line = cur(P)->line, op;
        if (is_op(P, "==")) op = OP_EQ;
        else if (is_op(P, "!=")) op = OP_NE;
        else if (is_op(P, "<")) op = OP_LT;
        else if (is_op(P, "<=")) op = OP_LE;
        else if (is_op(P, ">")) op = OP_GT;
        else if (is_op(P, ">=")) op = OP_GE;
        else if (is_name(P, "in")) op = OP_IN;
        else if (is_name(P, "not") && P->t[P->i + 1].t == T_NAME && P->t[P->i + 1].n == 2 &&
                 !memcmp(P->t[P->i + 1].p, "in", 2)) {
            op = OP_NOTIN;
            P->i++;
        } else
            break;
        P->i++;
        node *left = prev ? prev : x;
        node *right = p_math1(P);
        enter(P);
        node *c = bin(P, op, left, right, line);
        if (!res)
            res = c;
        else {   /* a < b < c  ->  (a < b) and (b < c) */
            node *y = mknode(P, E_AND, line);
            y->a = res;
            y->b = c;
            res = y;
        }
        prev = right;
    }
    return res ? res : x;
}
static node *p_not(parser *P)
{
    if (is_name(P, "not")) {
        int line = cur(P)->line;
        P->i++;
        enter(P);
        node *x = mknode(P, E_NOT, line);
        x->a = p_not(P);
        P->depth--;
        return x;
    }
    return p_compare(P);
}
static node *p_and(parser *P)
{
    node *x = p_not(P);
    while (is_name(P, "and")) {
        int line = cur(P)->line;
        P->i++;
        enter(P);
        node *y = mknode(P, E_AND, line);
        y->a = x;
        y->b = p_not(P);
        x = y;
    }
    return x;
}
static node *p_or(parser *P)
{
    node *x = p_and(P);
    while (is_name(P, "or")) {
        int line = cur(P)->line;
        P->i++;
        enter(P);
        node *y = mknode(P, E_OR, line);
        y->a = x;
        y->b = p_and(P);
        x = y;
    }
    return x;
}
static node *p_expr(parser *P, bool with_cond)
{
    int saved = P->depth;
    enter(P);
    node *x = p_or(P);
    while (with_cond && is_name(P, "if")) {
        int line = cur(P)->line;
        P->i++;
        node *y = mknode(P, E_COND, line);
        y->a = x;
        y->b = p_or(P);
        if (is_name(P, "else")) {
            P->i++;
            y->c = p_expr(P, true);
        }
        x = y;
    }
    P->depth = saved;
    return x;
}

/* ---- statements */

static node *p_body(parser *P, const char *const *ends, const char **which);

static void end_block(parser *P) { expect_t(P, T_BEND, "'%}'"); }

static node *p_if(parser *P, int line)
{
    enter(P);
    node *x = mknode(P, N_IF, line);
    x->a = p_expr(P, true);
    end_block(P);
    static const char *const ends[] = {"elif", "else", "endif", NULL};
    const char *w;
    x->b = p_body(P, ends, &w);
    if (!strcmp(w, "elif"))
        x->c = p_if(P, P->t[P->i - 1].line);
    else if (!strcmp(w, "else")) {
        end_block(P);
        static const char *const e2[] = {"endif", NULL};
        x->c = p_body(P, e2, &w);
        end_block(P);
    } else
        end_block(P);
    P->depth--;
    return x;
}

static node *p_stmt(parser *P)
{
    tok *t = cur(P);
    int line = t->line;
    if (t->t != T_NAME)
        fail(P->f, PB_ERR_FORMAT, line, "expected a statement name after '{%%'");
    const char *nm = expect_name(P);
    enter(P);
    node *x = NULL;
    const char *w;
    if (!strcmp(nm, "if")) {
        x = p_if(P, line);
    } else if (!strcmp(nm, "for")) {
        x = mknode(P, N_FOR, line);
        nvec tg = {0};
        bool paren = is_op(P, "(");
        if (paren)
            P->i++;
        do {
            if (tg.n)
                P->i++;
            nv_push(P, &tg, NULL, expect_name(P));
        } while (is_op(P, ","));
        if (paren)
            expect_op(P, ")");
        x->kwnames = tg.names;
        x->nkw = tg.n;
        if (!is_name(P, "in"))
            fail(P->f, PB_ERR_FORMAT, cur(P)->line, "expected 'in' in a for statement");
        P->i++;
        x->a = p_expr(P, false);
        if (is_name(P, "if")) {
            P->i++;
            x->d = p_expr(P, true);
        }
        if (is_name(P, "recursive"))
            fail(P->f, PB_ERR_UNSUPPORTED, line, "unsupported: recursive for loops");
        end_block(P);
        static const char *const ends[] = {"endfor", "else", NULL};
        P->loops++;
        x->b = p_body(P, ends, &w);
        P->loops--;
        end_block(P);
        if (!strcmp(w, "else")) {
            static const char *const e2[] = {"endfor", NULL};
            x->c = p_body(P, e2, &w);
            end_block(P);
        }
    } else if (!strcmp(nm, "set")) {
        nvec tg = {0};
        const char *first = expect_name(P);
        const char *attr = NULL;
        if (is_op(P, ".")) {
            P->i++;
            attr = expect_name(P);
        }
        nv_push(P, &tg, NULL, first);
        while (!attr && is_op(P, ",")) {
            P->i++;
            nv_push(P, &tg, NULL, expect_name(P));
        }
        if (is_op(P, "=")) {
            P->i++;
            x = mknode(P, N_SET, line);
            x->a = p_expr(P, true);
            if (is_op(P, ",")) {   /* a, b = x, y */
                nvec v = {0};
                nv_push(P, &v, x->a, NULL);
                while (is_op(P, ",")) {
                    P->i++;
                    nv_push(P, &v, p_expr(P, true), NULL);
                }
                node *l = mknode(P, E_LIST, line);
                l->list = v.v;
                l->n = v.n;
                x->a = l;
            }
            end_block(P);
        } else {
            if (attr || tg.n > 1)
                fail(P->f, PB_ERR_FORMAT, line, "expected '=' in a set statement");
            if (is_op(P, "|"))
                fail(P->f, PB_ERR_UNSUPPORTED, line, "unsupported: filtered block set");
            end_block(P);
            x = mknode(P, N_SETBLOCK, line);
            static const char *const ends[] = {"endset", NULL};
            int saved = P->loops;
            x->b = p_body(P, ends, &w);
            P->loops = saved;
            end_block(P);
        }
        x->name = first;
        x->kwnames = tg.names;
        x->nkw = tg.n;
        x->lit = vundef();
        if (attr) {
            x->lit = vcstr(P->a, attr);
        }
    } else if (!strcmp(nm, "macro")) {
        x = mknode(P, N_MACRO, line);
        x->name = expect_name(P);
        expect_op(P, "(");
        nvec ps = {0};
        while (!is_op(P, ")")) {
            if (ps.n)
                expect_op(P, ",");
            if (is_op(P, ")"))
                break;
            const char *pn = expect_name(P);
            node *def = NULL;
            if (is_op(P, "=")) {
                P->i++;
                def = p_expr(P, true);
            }
            nv_push(P, &ps, def, pn);
        }
        P->i++;
        x->kwnames = ps.names;
        x->kwvals = ps.v;
        x->nkw = ps.n;
        end_block(P);
        static const char *const ends[] = {"endmacro", NULL};
        int saved = P->loops;
        P->loops = 0;
        x->b = p_body(P, ends, &w);
        P->loops = saved;
        if (cur(P)->t == T_NAME)
            P->i++;
        end_block(P);
    } else if (!strcmp(nm, "break") || !strcmp(nm, "continue")) {
        if (!P->loops)
            fail(P->f, PB_ERR_FORMAT, line, "'%s' outside of a loop", nm);
        x = mknode(P, nm[0] == 'b' ? N_BREAK : N_CONTINUE, line);
        end_block(P);
    } else if (!strcmp(nm, "generation")) {
        end_block(P);
        static const char *const ends[] = {"endgeneration", NULL};
        x = p_body(P, ends, &w);
        end_block(P);
    } else if (!strcmp(nm, "call") || !strcmp(nm, "filter") || !strcmp(nm, "include") ||
               !strcmp(nm, "import") || !strcmp(nm, "from") || !strcmp(nm, "extends") ||
               !strcmp(nm, "block") || !strcmp(nm, "with") || !strcmp(nm, "raw") ||
               !strcmp(nm, "autoescape") || !strcmp(nm, "do") || !strcmp(nm, "trans")) {
        fail(P->f, PB_ERR_UNSUPPORTED, line, "unsupported statement '%s'", nm);
    } else
        fail(P->f, PB_ERR_FORMAT, line, "unknown tag '%s'", nm);
    P->depth--;
    return x;
}

static node *p_body(parser *P, const char *const *ends, const char **which)
{
    nvec v = {0};
    int line = cur(P)->line;
    for (;;) {
        tok *t = cur(P);
        if (t->t == T_DATA) {
            node *x = mknode(P, N_TEXT, t->line);
            x->name = t->p;
            x->name_len = t->n;
            nv_push(P, &v, x, NULL);
            P->i++;
        } else if (t->t == T_VBEGIN) {
            P->i++;
            node *x = mknode(P, N_OUT, t->line);
            x->a = p_expr(P, true);
            expect_t(P, T_VEND, "'}}'");
            nv_push(P, &v, x, NULL);
        } else if (t->t == T_BBEGIN) {
            tok *nt = &P->t[P->i + 1];
            if (ends && nt->t == T_NAME && in_list(ends, nt->p, nt->n)) {
                P->i += 2;
                *which = name_dup(P, nt);
                break;
            }
            if (nt->t == T_NAME && nt->n > 3 && !memcmp(nt->p, "end", 3))
                fail(P->f, PB_ERR_FORMAT, nt->line, "unexpected '%.*s'", (int)nt->n, nt->p);
            if (nt->t == T_NAME && ((nt->n == 4 && (!memcmp(nt->p, "elif", 4) || !memcmp(nt->p, "else", 4)))))
                fail(P->f, PB_ERR_FORMAT, nt->line, "unexpected '%.*s'", (int)nt->n, nt->p);
            P->i++;
            nv_push(P, &v, p_stmt(P), NULL);
        } else if (t->t == T_EOF) {
            if (ends) {
                const char *want = ends[0];
                for (int k = 0; ends[k]; k++)
                    if (!strncmp(ends[k], "end", 3))
                        want = ends[k];
                fail(P->f, PB_ERR_FORMAT, t->line, "unexpected end of template, expected '%s'", want);
            }
            break;
        } else {
            char b[64];
            fail(P->f, PB_ERR_FORMAT, t->line, "unexpected %s", tokdesc(P, b, sizeof b));
        }
    }
    node *x = mknode(P, N_BODY, line);
    x->list = v.v;
    x->n = v.n;
    return x;
}

struct pb_jinja {
    arena a;
    jfail f;
    node *root;
    char name[64];
};

pb_status pb_jinja_parse(const char *src, size_t len, const char *name, pb_jinja **out)
{
    *out = NULL;
    pb_jinja *T = calloc(1, sizeof *T);
    if (!T)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    snprintf(T->name, sizeof T->name, "%s", name ? name : "template");
    T->f.name = T->name;
    T->a.cap = (size_t)512 << 20;
    T->a.f = &T->f;
    if (setjmp(T->f.jb)) {
        pb_status st = pb_error(T->f.st, "%s", T->f.msg);
        afree(&T->a);
        free(T);
        return st;
    }
    /* normalize newlines as Jinja does; drop one trailing newline */
    char *s = aalloc(&T->a, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else
            s[n++] = src[i];
    }
    if (n && s[n - 1] == '\n')
        n--;
    s[n] = '\0';
    lexer L = {.a = &T->a, .f = &T->f, .s = s, .n = n};
    lex(&L);
    parser P = {.a = &T->a, .f = &T->f, .t = L.v};
    T->root = p_body(&P, NULL, NULL);
    *out = T;
    return PB_OK;
}

void pb_jinja_free(pb_jinja *t)
{
    if (!t)
        return;
    afree(&t->a);
    free(t);
}

/* ------------------------------------------------------------------ evaluation */

typedef struct frame {
    struct frame *parent;
    jdict vars;
} frame;

typedef struct ev {
    arena *a;
    jfail *f;
    sbuf *out;
    frame *root;
    jdict globals;
    size_t iters, max_iters;
    int depth, max_depth;
    int brk;   /* 1 break, 2 continue */
    frame *fr; /* current scope */
} ev;

static const char *type_name(const jv *v)
{
    switch (v->t) {
    case JV_UNDEF: return "undefined";
    case JV_NONE: return "none";
    case JV_BOOL: return "boolean";
    case JV_INT: return "integer";
    case JV_FLOAT: return "float";
    case JV_STR: return "string";
    case JV_LIST: return "list";
    case JV_DICT: return "dict";
    case JV_NS: return "namespace";
    case JV_LOOP: return "loop";
    case JV_MACRO: return "macro";
    case JV_BUILTIN: return "function";
    default: return "method";
    }
}

/* dict helpers (insertion-ordered, linear lookup) */
static jv *dget(const jdict *d, const char *k, size_t n)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->k[i]->n == n && memcmp(d->k[i]->p, k, n) == 0)
            return &d->v[i];
    return NULL;
}
static void dset(arena *a, jdict *d, jstr *k, jv v)
{
    jv *e = dget(d, k->p, k->n);
    if (e) {
        *e = v;
        return;
    }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 8;
        jstr **nk = aalloc(a, nc * sizeof *nk);
        jv *nv = aalloc(a, nc * sizeof *nv);
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof *nk);
            memcpy(nv, d->v, d->n * sizeof *nv);
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = k;
    d->v[d->n++] = v;
}

static jv from_json(ev *E, const cJSON *j, int depth)
{
    if (depth > 100)
        fail(E->f, PB_ERR_INPUT, 0, "variables nested more than 100 deep");
    if (cJSON_IsNull(j))
        return vnone();
    if (cJSON_IsBool(j))
        return vbool(cJSON_IsTrue(j));
    if (cJSON_IsNumber(j)) {
        double d = j->valuedouble;
        if (d == floor(d) && fabs(d) < 9007199254740992.0)
            return vint((int64_t)d);
        return vfloat(d);
    }
    if (cJSON_IsString(j))
        return vcstr(E->a, j->valuestring ? j->valuestring : "");
    if (cJSON_IsArray(j)) {
        size_t n = (size_t)cJSON_GetArraySize(j), i = 0;
        jlist *l = aalloc(E->a, sizeof *l);
        l->n = n;
        l->v = aalloc(E->a, (n ? n : 1) * sizeof *l->v);
        l->tuple = false;
        const cJSON *e;
        cJSON_ArrayForEach(e, j) l->v[i++] = from_json(E, e, depth + 1);
        jv v = {.t = JV_LIST};
        v.u.l = l;
        return v;
    }
    if (cJSON_IsObject(j)) {
        jdict *d = aalloc(E->a, sizeof *d);
        memset(d, 0, sizeof *d);
        const cJSON *e;
        cJSON_ArrayForEach(e, j) {
            const char *k = e->string ? e->string : "";
            dset(E->a, d, mkstr(E->a, k, strlen(k)), from_json(E, e, depth + 1));
        }
        jv v = {.t = JV_DICT};
        v.u.d = d;
        return v;
    }
    return vnone();
}

static bool truthy(const jv *v)
{
    switch (v->t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v->u.b;
    case JV_INT: return v->u.i != 0;
    case JV_FLOAT: return v->u.f != 0;
    case JV_STR: return v->u.s->n > 0;
    case JV_LIST: return v->u.l->n > 0;
    case JV_DICT: return v->u.d->n > 0;
    default: return true;
    }
}

static bool is_num(const jv *v) { return v->t == JV_INT || v->t == JV_FLOAT || v->t == JV_BOOL; }
static double num_f(const jv *v)
{
    return v->t == JV_FLOAT ? v->u.f : v->t == JV_INT ? (double)v->u.i : (double)v->u.b;
}
static int64_t num_i(const jv *v) { return v->t == JV_INT ? v->u.i : (int64_t)v->u.b; }

/* Python float repr */
static void fmt_float(sbuf *b, double f)
{
    char x[PB_PY_FLOAT_MAX];
    sb_puts(b, pb_py_float_repr(f, x));
}

static void py_repr(ev *E, sbuf *b, const jv *v, int depth);

/* Python str() */
static void py_str(ev *E, sbuf *b, const jv *v, int depth)
{
    char x[32];
    switch (v->t) {
    case JV_UNDEF: break;
    case JV_NONE: sb_puts(b, "None"); break;
    case JV_BOOL: sb_puts(b, v->u.b ? "True" : "False"); break;
    case JV_INT: snprintf(x, sizeof x, "%lld", (long long)v->u.i); sb_puts(b, x); break;
    case JV_FLOAT: fmt_float(b, v->u.f); break;
    case JV_STR: sb_put(b, v->u.s->p, v->u.s->n); break;
    default: py_repr(E, b, v, depth);
    }
}

static void py_repr(ev *E, sbuf *b, const jv *v, int depth)
{
    if (depth > 100)
        fail(E->f, PB_ERR_INPUT, 0, "value nested too deeply to print");
    if (v->t == JV_STR) {
        const jstr *s = v->u.s;
        char q = memchr(s->p, '\'', s->n) && !memchr(s->p, '"', s->n) ? '"' : '\'';
        sb_putc(b, q);
        for (size_t i = 0; i < s->n; i++) {
            unsigned char c = (unsigned char)s->p[i];
            char x[8];
            if (c == (unsigned char)q || c == '\\') { sb_putc(b, '\\'); sb_putc(b, (char)c); }
            else if (c == '\n') sb_puts(b, "\\n");
            else if (c == '\r') sb_puts(b, "\\r");
            else if (c == '\t') sb_puts(b, "\\t");
            else if (c < 0x20 || c == 0x7f) { snprintf(x, sizeof x, "\\x%02x", c); sb_puts(b, x); }
            else sb_putc(b, (char)c);
        }
        sb_putc(b, q);
    } else if (v->t == JV_LIST) {
        bool tp = v->u.l->tuple;
        sb_putc(b, tp ? '(' : '[');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i)
                sb_puts(b, ", ");
            py_repr(E, b, &v->u.l->v[i], depth + 1);
        }
        if (tp && v->u.l->n == 1)
            sb_putc(b, ',');
        sb_putc(b, tp ? ')' : ']');
    } else if (v->t == JV_DICT) {
        sb_putc(b, '{');
        for (size_t i = 0; i < v->u.d->n; i++) {
            if (i)
                sb_puts(b, ", ");
            jv k = {.t = JV_STR};
            k.u.s = v->u.d->k[i];
            py_repr(E, b, &k, depth + 1);
            sb_puts(b, ": ");
            py_repr(E, b, &v->u.d->v[i], depth + 1);
        }
        sb_putc(b, '}');
    } else if (v->t == JV_NS) {
        sb_puts(b, "<Namespace>");
    } else if (v->t == JV_UNDEF) {
        sb_puts(b, "Undefined");
    } else if (v->t == JV_LOOP || v->t == JV_MACRO || v->t == JV_BUILTIN || v->t == JV_METHOD) {
        sb_putc(b, '<');
        sb_puts(b, type_name(v));
        sb_putc(b, '>');
    } else
        py_str(E, b, v, depth);
}

static jv to_str(ev *E, const jv *v)
{
    if (v->t == JV_STR)
        return *v;
    sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
    py_str(E, &b, v, 0);
    jv r = vstr(E->a, b.p ? b.p : "", b.n);
    return r;
}

/* json.dumps(ensure_ascii=False, indent, separators, sort_keys) */
typedef struct jsonopt { int indent; const char *isep, *ksep; bool sort; } jsonopt;

static void json_str(sbuf *b, const jstr *s)
{
    sb_putc(b, '"');
    for (size_t i = 0; i < s->n; i++) {
        unsigned char c = (unsigned char)s->p[i];
        char x[8];
        switch (c) {
        case '"': sb_puts(b, "\\\""); break;
        case '\\': sb_puts(b, "\\\\"); break;
        case '\n': sb_puts(b, "\\n"); break;
        case '\r': sb_puts(b, "\\r"); break;
        case '\t': sb_puts(b, "\\t"); break;
        case '\b': sb_puts(b, "\\b"); break;
        case '\f': sb_puts(b, "\\f"); break;
        default:
            if (c < 0x20) {
                snprintf(x, sizeof x, "\\u%04x", c);
                sb_puts(b, x);
            } else
                sb_putc(b, (char)c);
        }
    }
    sb_putc(b, '"');
}

static int cmp_keys(const void *x, const void *y)
{
    const jstr *a = *(jstr *const *)x, *b = *(jstr *const *)y;
    size_t n = a->n < b->n ? a->n : b->n;
    int c = memcmp(a->p, b->p, n);
    return c ? c : (a->n > b->n) - (a->n < b->n);
}

static void json_nl(sbuf *b, const jsonopt *o, int level)
{
    sb_putc(b, '\n');
    for (int i = 0; i < o->indent * level; i++)
        sb_putc(b, ' ');
}

static void to_json(ev *E, sbuf *b, const jv *v, const jsonopt *o, int level, int line)
{
    if (level > 100)
        fail(E->f, PB_ERR_INPUT, line, "tojson: value nested too deeply");
    switch (v->t) {
    case JV_NONE: sb_puts(b, "null"); break;
    case JV_BOOL: sb_puts(b, v->u.b ? "true" : "false"); break;
    case JV_INT: py_str(E, b, v, 0); break;
    case JV_FLOAT:
        if (isnan(v->u.f)) sb_puts(b, "NaN");
        else if (isinf(v->u.f)) sb_puts(b, v->u.f < 0 ? "-Infinity" : "Infinity");
        else fmt_float(b, v->u.f);
        break;
    case JV_STR: json_str(b, v->u.s); break;
    case JV_LIST:
        if (!v->u.l->n) { sb_puts(b, "[]"); break; }
        sb_putc(b, '[');
        for (size_t i = 0; i < v->u.l->n; i++) {
            if (i)
                sb_puts(b, o->isep);
            if (o->indent >= 0)
                json_nl(b, o, level + 1);
            to_json(E, b, &v->u.l->v[i], o, level + 1, line);
        }
        if (o->indent >= 0)
            json_nl(b, o, level);
        sb_putc(b, ']');
        break;
    case JV_DICT: {
        const jdict *d = v->u.d;
        if (!d->n) { sb_puts(b, "{}"); break; }
        jstr **keys = aalloc(E->a, d->n * sizeof *keys);
        memcpy(keys, d->k, d->n * sizeof *keys);
        if (o->sort)
            qsort(keys, d->n, sizeof *keys, cmp_keys);
        sb_putc(b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i)
                sb_puts(b, o->isep);
            if (o->indent >= 0)
                json_nl(b, o, level + 1);
            json_str(b, keys[i]);
            sb_puts(b, o->ksep);
            to_json(E, b, dget(d, keys[i]->p, keys[i]->n), o, level + 1, line);
        }
        if (o->indent >= 0)
            json_nl(b, o, level);
        sb_putc(b, '}');
        break;
    }
    default:
        fail(E->f, PB_ERR_INPUT, line, "tojson: %s is not JSON serializable", type_name(v));
    }
}

static bool equal(const jv *x, const jv *y, int depth)
{
    if (depth > 100)
        return false;
    if (is_num(x) && is_num(y)) {
        if (x->t == JV_FLOAT || y->t == JV_FLOAT)
            return num_f(x) == num_f(y);
        return num_i(x) == num_i(y);
    }
    if (x->t != y->t)
        return false;
    switch (x->t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR: return x->u.s->n == y->u.s->n && !memcmp(x->u.s->p, y->u.s->p, x->u.s->n);
    case JV_LIST:
        if (x->u.l->n != y->u.l->n)
            return false;
        for (size_t i = 0; i < x->u.l->n; i++)
            if (!equal(&x->u.l->v[i], &y->u.l->v[i], depth + 1))
                return false;
        return true;
    case JV_DICT:
        if (x->u.d->n != y->u.d->n)
            return false;
        for (size_t i = 0; i < x->u.d->n; i++) {
            jv *o = dget(y->u.d, x->u.d->k[i]->p, x->u.d->k[i]->n);
            if (!o || !equal(&x->u.d->v[i], o, depth + 1))
                return false;
        }
        return true;
    case JV_NS: return x->u.d == y->u.d;
    case JV_MACRO: return x->u.mac == y->u.mac;
    default: return false;
    }
}

/* <0, 0, >0; fails on types Python would not order */
static int compare(ev *E, const jv *x, const jv *y, int line)
{
    if (is_num(x) && is_num(y)) {
        if (x->t == JV_FLOAT || y->t == JV_FLOAT) {
            double a = num_f(x), b = num_f(y);
            return (a > b) - (a < b);
        }
        int64_t a = num_i(x), b = num_i(y);
        return (a > b) - (a < b);
    }
    if (x->t == JV_STR && y->t == JV_STR)
        return cmp_keys(&x->u.s, &y->u.s);
    if (x->t == JV_LIST && y->t == JV_LIST) {
        size_t n = x->u.l->n < y->u.l->n ? x->u.l->n : y->u.l->n;
        for (size_t i = 0; i < n; i++) {
            if (!equal(&x->u.l->v[i], &y->u.l->v[i], 0))
                return compare(E, &x->u.l->v[i], &y->u.l->v[i], line);
        }
        return (x->u.l->n > y->u.l->n) - (x->u.l->n < y->u.l->n);
    }
    fail(E->f, PB_ERR_INPUT, line, "cannot compare %s with %s", type_name(x), type_name(y));
}

static jv mklist(ev *E, size_t n)
{
    jlist *l = aalloc(E->a, sizeof *l);
    l->n = n;
    l->tuple = false;
    size_t bytes;
    if (__builtin_mul_overflow(n ? n : 1, sizeof(jv), &bytes))
        fail(E->f, PB_ERR_NOMEM, 0, "out of memory");
    l->v = aalloc(E->a, bytes);
    jv v = {.t = JV_LIST};
    v.u.l = l;
    return v;
}

static jv mkdict(ev *E, int t)
{
    jdict *d = aalloc(E->a, sizeof *d);
    memset(d, 0, sizeof *d);
    jv v = {.t = t};
    v.u.d = d;
    return v;
}

/* Items of an iterable: list items, dict keys, string characters. */
static jv iter_list(ev *E, const jv *v, int line)
{
    switch (v->t) {
    case JV_UNDEF: return mklist(E, 0);
    case JV_LIST: return *v;
    case JV_DICT: {
        jv l = mklist(E, v->u.d->n);
        for (size_t i = 0; i < v->u.d->n; i++) {
            l.u.l->v[i].t = JV_STR;
            l.u.l->v[i].u.s = v->u.d->k[i];
        }
        return l;
    }
    case JV_STR: {
        const jstr *s = v->u.s;
        jv l = mklist(E, u8count(s->p, s->n));
        size_t k = 0;
        for (size_t i = 0; i < s->n;) {
            int32_t cp;
            size_t m = u8dec((const unsigned char *)s->p + i, s->n - i, &cp);
            l.u.l->v[k++] = vstr(E->a, s->p + i, m);
            i += m;
        }
        return l;
    }
    default:
        fail(E->f, PB_ERR_INPUT, line, "%s is not iterable", type_name(v));
    }
}

static void out_text(ev *E, const char *p, size_t n) { sb_put(E->out, p, n); }

static jv eval(ev *E, const node *x);
static void exec_body(ev *E, const node *body, frame *fr);

/* variables */
static jv *lookup(ev *E, frame *fr, const char *name, size_t n)
{
    for (; fr; fr = fr->parent) {
        jv *v = dget(&fr->vars, name, n);
        if (v)
            return v;
    }
    return dget(&E->globals, name, n);
}

/* string slicing and indexing by code point */
static size_t cp_offsets(ev *E, const jstr *s, size_t **offs)
{
    size_t n = u8count(s->p, s->n);
    size_t *o = aalloc(E->a, (n + 1) * sizeof *o);
    size_t k = 0;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        o[k++] = i;
        i += u8dec((const unsigned char *)s->p + i, s->n - i, &cp);
    }
    o[n] = s->n;
    *offs = o;
    return n;
}

static jv get_item(ev *E, const jv *obj, const jv *key, int line);

static bool str_method_name(const char *nm)
{
    static const char *const m[] = {"startswith", "endswith", "strip", "lstrip", "rstrip",
        "split", "rsplit", "upper", "lower", "replace", "title", "capitalize", "format", "find",
        "count", "join", "splitlines", "isdigit", "isspace", "isalpha", "isalnum", "islower",
        "isupper", NULL};
    return in_list(m, nm, strlen(nm));
}

static jv get_attr(ev *E, const jv *obj, const char *nm, int line)
{
    size_t n = strlen(nm);
    switch (obj->t) {
    case JV_UNDEF:
        fail(E->f, PB_ERR_INPUT, line, "'%s' of an undefined value: the value is undefined", nm);
    case JV_DICT:
        if (!strcmp(nm, "get") || !strcmp(nm, "items") || !strcmp(nm, "keys") || !strcmp(nm, "values"))
            break;
        {
            jv *v = dget(obj->u.d, nm, n);
            return v ? *v : vundef();
        }
    case JV_NS: {
        jv *v = dget(obj->u.d, nm, n);
        return v ? *v : vundef();
    }
    case JV_STR:
        if (str_method_name(nm))
            break;
        return vundef();
    case JV_LOOP: {
        const jloop *l = obj->u.lp;
        if (!strcmp(nm, "index")) return vint((int64_t)l->index0 + 1);
        if (!strcmp(nm, "index0")) return vint((int64_t)l->index0);
        if (!strcmp(nm, "revindex")) return vint((int64_t)(l->length - l->index0));
        if (!strcmp(nm, "revindex0")) return vint((int64_t)(l->length - l->index0 - 1));
        if (!strcmp(nm, "first")) return vbool(l->index0 == 0);
        if (!strcmp(nm, "last")) return vbool(l->index0 + 1 == l->length);
        if (!strcmp(nm, "length")) return vint((int64_t)l->length);
        if (!strcmp(nm, "depth")) return vint(1);
        if (!strcmp(nm, "depth0")) return vint(0);
        if (!strcmp(nm, "previtem")) return l->index0 ? l->items->v[l->index0 - 1] : vundef();
        if (!strcmp(nm, "nextitem")) return l->index0 + 1 < l->length ? l->items->v[l->index0 + 1] : vundef();
        if (!strcmp(nm, "cycle")) break;
        fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported loop attribute 'loop.%s'", nm);
    }
    default:
        return vundef();
    }
    jmeth *m = aalloc(E->a, sizeof *m);
    m->self = *obj;
    m->name = nm;
    jv r = {.t = JV_METHOD};
    r.u.m = m;
    return r;
}

static jv get_item(ev *E, const jv *obj, const jv *key, int line)
{
    if (obj->t == JV_UNDEF)
        fail(E->f, PB_ERR_INPUT, line, "subscript of an undefined value");
    if ((obj->t == JV_LIST || obj->t == JV_STR) && (key->t == JV_INT || key->t == JV_BOOL)) {
        int64_t i = num_i(key);
        if (obj->t == JV_LIST) {
            int64_t n = (int64_t)obj->u.l->n;
            if (i < 0)
                i += n;
            return i >= 0 && i < n ? obj->u.l->v[i] : vundef();
        }
        size_t *o;
        int64_t n = (int64_t)cp_offsets(E, obj->u.s, &o);
        if (i < 0)
            i += n;
        return i >= 0 && i < n ? vstr(E->a, obj->u.s->p + o[i], o[i + 1] - o[i]) : vundef();
    }
    if ((obj->t == JV_DICT || obj->t == JV_NS) && key->t == JV_STR) {
        jv *v = dget(obj->u.d, key->u.s->p, key->u.s->n);
        if (v)
            return *v;
    }
    if (key->t == JV_STR && obj->t != JV_NS)
        return get_attr(E, obj, key->u.s->p, line);
    return vundef();
}

static int64_t slice_idx(ev *E, const node *x, int64_t def)
{
    if (!x)
        return def;
    jv v = eval(E, x);
    if (v.t == JV_NONE)
        return def;
    if (v.t != JV_INT && v.t != JV_BOOL)
        fail(E->f, PB_ERR_INPUT, x->line, "slice indices must be integers, not %s", type_name(&v));
    return num_i(&v);
}

/* Python slice of n items: fills idx (arena) and returns the count. */
static size_t slice_pick(ev *E, const node *x, int64_t n, int64_t **out)
{
    int64_t step = slice_idx(E, x->d, 1);
    if (step == 0)
        fail(E->f, PB_ERR_INPUT, x->line, "slice step cannot be zero");
    int64_t lo, hi;
    if (step > 0) {
        lo = slice_idx(E, x->b, 0);
        hi = slice_idx(E, x->c, n);
        if (lo < 0) lo = lo + n < 0 ? 0 : lo + n;
        if (hi < 0) hi = hi + n < 0 ? 0 : hi + n;
        if (lo > n) lo = n;
        if (hi > n) hi = n;
    } else {
        lo = slice_idx(E, x->b, n - 1);
        hi = slice_idx(E, x->c, INT64_MIN);
        if (x->b) { if (lo < 0) lo = lo + n < 0 ? -1 : lo + n; if (lo >= n) lo = n - 1; }
        if (hi == INT64_MIN) hi = -1;
        else if (hi < 0) hi = hi + n < 0 ? -1 : hi + n;
        else if (hi >= n) hi = n - 1;
    }
    int64_t *idx = aalloc(E->a, (size_t)(n > 0 ? n : 1) * sizeof *idx);
    size_t k = 0;
    if (step > 0)
        for (int64_t i = lo; i < hi; i += step) {
            idx[k++] = i;
            if (i > INT64_MAX - step) break;
        }
    else
        for (int64_t i = lo; i > hi; i += step) {
            idx[k++] = i;
            if (i < INT64_MIN - step) break;
        }
    *out = idx;
    return k;
}

static jv eval_slice(ev *E, const node *x)
{
    jv obj = eval(E, x->a);
    int64_t *idx;
    if (obj.t == JV_LIST) {
        size_t k = slice_pick(E, x, (int64_t)obj.u.l->n, &idx);
        jv r = mklist(E, k);
        for (size_t i = 0; i < k; i++)
            r.u.l->v[i] = obj.u.l->v[idx[i]];
        return r;
    }
    if (obj.t == JV_STR) {
        size_t *o;
        size_t n = cp_offsets(E, obj.u.s, &o);
        size_t k = slice_pick(E, x, (int64_t)n, &idx);
        sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        for (size_t i = 0; i < k; i++)
            sb_put(&b, obj.u.s->p + o[idx[i]], o[idx[i] + 1] - o[idx[i]]);
        jv r = vstr(E->a, b.p ? b.p : "", b.n);
        return r;
    }
    if (obj.t == JV_UNDEF)
        fail(E->f, PB_ERR_INPUT, x->line, "slice of an undefined value");
    return vundef();
}

/* ---- evaluated call arguments */
typedef struct args {
    jv *pos;
    size_t n;
    const char **kwn;
    jv *kwv;
    size_t nkw;
    int line;
} args;

static args eval_args(ev *E, const node *x)
{
    args A = {.n = x->n, .nkw = x->nkw, .kwn = x->kwnames, .line = x->line};
    A.pos = aalloc(E->a, (x->n + 1) * sizeof *A.pos);
    A.kwv = aalloc(E->a, (x->nkw + 1) * sizeof *A.kwv);
    for (size_t i = 0; i < x->n; i++)
        A.pos[i] = eval(E, x->list[i]);
    for (size_t i = 0; i < x->nkw; i++)
        A.kwv[i] = eval(E, x->kwvals[i]);
    return A;
}

/* argument i by position or keyword name, or NULL */
static const jv *arg(const args *A, size_t i, const char *kw)
{
    if (i < A->n)
        return &A->pos[i];
    for (size_t k = 0; kw && k < A->nkw; k++)
        if (!strcmp(A->kwn[k], kw))
            return &A->kwv[k];
    return NULL;
}

static void check_args(ev *E, const args *A, size_t maxpos, const char *const *kws, const char *what)
{
    if (A->n > maxpos)
        fail(E->f, PB_ERR_INPUT, A->line, "%s: too many arguments", what);
    for (size_t k = 0; k < A->nkw; k++) {
        bool ok = false;
        for (size_t j = 0; kws && kws[j]; j++)
            ok |= !strcmp(kws[j], A->kwn[k]);
        if (!ok)
            fail(E->f, PB_ERR_UNSUPPORTED, A->line, "%s: unsupported keyword argument '%s'", what, A->kwn[k]);
    }
}

static const jstr *want_str(ev *E, const jv *v, int line, const char *what)
{
    if (!v || v->t != JV_STR)
        fail(E->f, PB_ERR_INPUT, line, "%s: expected a string, got %s", what, v ? type_name(v) : "nothing");
    return v->u.s;
}

/* ---- string helpers */

static bool in_chars(int32_t cp, const jstr *chars)
{
    if (!chars)
        return py_space(cp);
    for (size_t i = 0; i < chars->n;) {
        int32_t c;
        i += u8dec((const unsigned char *)chars->p + i, chars->n - i, &c);
        if (c == cp)
            return true;
    }
    return false;
}

static jv str_strip(ev *E, const jstr *s, const jstr *chars, bool left, bool right)
{
    size_t lo = 0, hi = s->n;
    if (left)
        while (lo < hi) {
            int32_t cp;
            size_t k = u8dec((const unsigned char *)s->p + lo, hi - lo, &cp);
            if (!in_chars(cp, chars))
                break;
            lo += k;
        }
    if (right) {
        size_t end = lo;
        for (size_t i = lo; i < hi;) {
            int32_t cp;
            i += u8dec((const unsigned char *)s->p + i, hi - i, &cp);
            if (!in_chars(cp, chars))
                end = i;
        }
        hi = end;
    }
    return vstr(E->a, s->p + lo, hi - lo);
}

enum { CASE_UPPER, CASE_LOWER, CASE_TITLE, CASE_CAP, CASE_JTITLE };
static jv str_case(ev *E, const jstr *s, int mode)
{
    sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
    bool prev_cased = false, first = true;
    for (size_t i = 0; i < s->n;) {
        int32_t cp;
        size_t k = u8dec((const unsigned char *)s->p + i, s->n - i, &cp);
        int32_t o = cp;
        if (mode == CASE_UPPER)
            o = utf8proc_toupper(cp);
        else if (mode == CASE_LOWER)
            o = utf8proc_tolower(cp);
        else if (mode == CASE_JTITLE) {
            /* Jinja's title filter: upper after - space ( { [ <, lower elsewhere */
            o = prev_cased ? utf8proc_tolower(cp) : utf8proc_toupper(cp);
            prev_cased = !(py_space(cp) || cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<');
        } else if (mode == CASE_TITLE) {
            o = prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp);
            prev_cased = utf8proc_tolower(cp) != cp || utf8proc_toupper(cp) != cp ||
                         utf8proc_totitle(cp) != cp;
        } else
            o = first ? utf8proc_totitle(cp) : utf8proc_tolower(cp);
        first = false;
        if (o == cp)
            sb_put(&b, s->p + i, k);
        else
            sb_cp(&b, o);
        i += k;
    }
    jv r = vstr(E->a, b.p ? b.p : "", b.n);
    return r;
}

static jv str_replace(ev *E, const jstr *s, const jstr *old, const jstr *new, int64_t count)
{
    sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
    int64_t done = 0;
    if (old->n == 0) {
        /* Python inserts `new` between characters */
        for (size_t i = 0; i <= s->n;) {
            if (count < 0 || done < count) {
                sb_put(&b, new->p, new->n);
                done++;
            }
            if (i == s->n)
                break;
            int32_t cp;
            size_t k = u8dec((const unsigned char *)s->p + i, s->n - i, &cp);
            sb_put(&b, s->p + i, k);
            i += k;
        }
    } else {
        size_t i = 0;
        while (i < s->n) {
            if ((count < 0 || done < count) && s->n - i >= old->n && !memcmp(s->p + i, old->p, old->n)) {
                sb_put(&b, new->p, new->n);
                i += old->n;
                done++;
            } else
                sb_putc(&b, s->p[i++]);
        }
    }
    jv r = vstr(E->a, b.p ? b.p : "", b.n);
    return r;
}

static jv str_split(ev *E, const jstr *s, const jstr *sep, int64_t maxsplit, bool from_right)
{
    /* collect pieces as (offset, length) */
    size_t cap = 16, n = 0;
    size_t *off = aalloc(E->a, cap * sizeof *off), *len = aalloc(E->a, cap * sizeof *len);
#define PUSH_PIECE(o, l) do { if (n == cap) { size_t *a2 = aalloc(E->a, 2 * cap * sizeof *a2), *b2 = aalloc(E->a, 2 * cap * sizeof *b2); memcpy(a2, off, n * sizeof *a2); memcpy(b2, len, n * sizeof *b2); off = a2; len = b2; cap *= 2; } off[n] = (o); len[n] = (l); n++; } while (0)
    if (sep) {
        if (!sep->n)
            fail(E->f, PB_ERR_INPUT, 0, "split: empty separator");
        if (!from_right) {
            size_t start = 0, i = 0;
            int64_t done = 0;
            while (i + sep->n <= s->n) {
                if ((maxsplit < 0 || done < maxsplit) && !memcmp(s->p + i, sep->p, sep->n)) {
                    PUSH_PIECE(start, i - start);
                    i += sep->n;
                    start = i;
                    done++;
                } else
                    i++;
            }
            PUSH_PIECE(start, s->n - start);
        } else {
            size_t end = s->n;
            int64_t done = 0;
            size_t i = s->n;
            while (i >= sep->n) {
                if ((maxsplit < 0 || done < maxsplit) && !memcmp(s->p + i - sep->n, sep->p, sep->n)) {
                    PUSH_PIECE(i, end - i);
                    i -= sep->n;
                    end = i;
                    done++;
                } else
                    i--;
            }
            PUSH_PIECE(0, end);
        }
    } else {
        /* runs of whitespace; leading/trailing ignored */
        size_t i = 0;
        int64_t done = 0;
        if (from_right && maxsplit >= 0)
            fail(E->f, PB_ERR_UNSUPPORTED, 0, "rsplit() without a separator and with maxsplit");
        while (i < s->n) {
            int32_t cp;
            size_t k;
            while (i < s->n && (k = u8dec((const unsigned char *)s->p + i, s->n - i, &cp), py_space(cp)))
                i += k;
            if (i >= s->n)
                break;
            if (maxsplit >= 0 && done >= maxsplit) {
                size_t e = s->n;
                /* the rest, with trailing whitespace removed */
                e = i + rstrip_len(s->p + i, s->n - i);
                PUSH_PIECE(i, e - i);
                break;
            }
            size_t st = i;
            while (i < s->n && (k = u8dec((const unsigned char *)s->p + i, s->n - i, &cp), !py_space(cp)))
                i += k;
            PUSH_PIECE(st, i - st);
            done++;
        }
    }
#undef PUSH_PIECE
    jv r = mklist(E, n);
    for (size_t i = 0; i < n; i++) {
        size_t j = from_right && sep ? n - 1 - i : i;
        r.u.l->v[i] = vstr(E->a, s->p + off[j], len[j]);
    }
    return r;
}

static bool starts_ends(ev *E, const jstr *s, const jv *p, bool end, int line)
{
    if (p && p->t == JV_LIST) {
        for (size_t i = 0; i < p->u.l->n; i++)
            if (starts_ends(E, s, &p->u.l->v[i], end, line))
                return true;
        return false;
    }
    const jstr *q = want_str(E, p, line, end ? "endswith" : "startswith");
    if (q->n > s->n)
        return false;
    return !memcmp(end ? s->p + s->n - q->n : s->p, q->p, q->n);
}

static int64_t want_int(ev *E, const jv *v, int line, const char *what)
{
    if (!v || (v->t != JV_INT && v->t != JV_BOOL))
        fail(E->f, PB_ERR_INPUT, line, "%s: expected an integer, got %s", what, v ? type_name(v) : "nothing");
    return num_i(v);
}

static jv join_list(ev *E, const jv *seq, const jstr *sep, const char *attr, int line);

static jv call_str_method(ev *E, const jstr *s, const char *nm, const args *A)
{
    int line = A->line;
    if (!strcmp(nm, "startswith") || !strcmp(nm, "endswith")) {
        check_args(E, A, 1, NULL, nm);
        return vbool(starts_ends(E, s, arg(A, 0, NULL), nm[0] == 'e', line));
    }
    if (!strcmp(nm, "strip") || !strcmp(nm, "lstrip") || !strcmp(nm, "rstrip")) {
        check_args(E, A, 1, NULL, nm);
        const jv *c = arg(A, 0, NULL);
        const jstr *chars = c && c->t != JV_NONE ? want_str(E, c, line, nm) : NULL;
        return str_strip(E, s, chars, nm[0] != 'r', nm[0] != 'l');
    }
    if (!strcmp(nm, "split") || !strcmp(nm, "rsplit")) {
        static const char *const kw[] = {"sep", "maxsplit", NULL};
        check_args(E, A, 2, kw, nm);
        const jv *sp = arg(A, 0, "sep"), *mx = arg(A, 1, "maxsplit");
        const jstr *sep = sp && sp->t != JV_NONE ? want_str(E, sp, line, nm) : NULL;
        int64_t m = mx ? want_int(E, mx, line, nm) : -1;
        return str_split(E, s, sep, m, nm[0] == 'r');
    }
    if (!strcmp(nm, "upper") || !strcmp(nm, "lower") || !strcmp(nm, "title") || !strcmp(nm, "capitalize")) {
        check_args(E, A, 0, NULL, nm);
        return str_case(E, s, nm[0] == 'u' ? CASE_UPPER : nm[0] == 'l' ? CASE_LOWER
                             : nm[0] == 't' ? CASE_TITLE : CASE_CAP);
    }
    if (!strcmp(nm, "replace")) {
        check_args(E, A, 3, NULL, nm);
        const jstr *o = want_str(E, arg(A, 0, NULL), line, nm), *n = want_str(E, arg(A, 1, NULL), line, nm);
        const jv *c = arg(A, 2, NULL);
        return str_replace(E, s, o, n, c ? want_int(E, c, line, nm) : -1);
    }
    if (!strcmp(nm, "find") || !strcmp(nm, "count")) {
        check_args(E, A, 1, NULL, nm);
        const jstr *q = want_str(E, arg(A, 0, NULL), line, nm);
        int64_t cnt = 0;
        for (size_t i = 0; i + q->n <= s->n;) {
            if (!memcmp(s->p + i, q->p, q->n)) {
                if (nm[0] == 'f')
                    return vint((int64_t)u8count(s->p, i));
                cnt++;
                i += q->n ? q->n : 1;
            } else
                i++;
        }
        return vint(nm[0] == 'f' ? -1 : cnt);
    }
    if (!strcmp(nm, "join")) {
        check_args(E, A, 1, NULL, nm);
        const jv *l = arg(A, 0, NULL);
        if (!l)
            fail(E->f, PB_ERR_INPUT, line, "join: missing argument");
        return join_list(E, l, s, NULL, line);
    }
    if (!strcmp(nm, "splitlines")) {
        check_args(E, A, 0, NULL, nm);
        jstr nl = {0};
        (void)nl;
        size_t cnt = 0;
        for (size_t i = 0; i < s->n; i++)
            cnt += s->p[i] == '\n';
        jv r = mklist(E, cnt + 1);
        size_t k = 0, st = 0;
        for (size_t i = 0; i <= s->n; i++)
            if (i == s->n || s->p[i] == '\n') {
                size_t e = i;
                if (e > st && s->p[e - 1] == '\r')
                    e--;
                if (i < s->n || st < s->n)
                    r.u.l->v[k++] = vstr(E->a, s->p + st, e - st);
                st = i + 1;
            }
        r.u.l->n = k;
        return r;
    }
    if (!strncmp(nm, "is", 2)) {
        check_args(E, A, 0, NULL, nm);
        if (!s->n)
            return vbool(false);
        bool all = true, any_cased = false;
        for (size_t i = 0; i < s->n;) {
            int32_t cp;
            i += u8dec((const unsigned char *)s->p + i, s->n - i, &cp);
            const utf8proc_property_t *pr = utf8proc_get_property(cp);
            bool alpha = pr->category >= UTF8PROC_CATEGORY_LU && pr->category <= UTF8PROC_CATEGORY_LO;
            bool digit = pr->category == UTF8PROC_CATEGORY_ND;
            if (!strcmp(nm, "isdigit")) all &= digit;
            else if (!strcmp(nm, "isspace")) all &= py_space(cp);
            else if (!strcmp(nm, "isalpha")) all &= alpha;
            else if (!strcmp(nm, "isalnum")) all &= alpha || digit;
            else if (!strcmp(nm, "islower")) { if (utf8proc_toupper(cp) != cp) any_cased = true; if (utf8proc_tolower(cp) != cp) all = false; }
            else if (!strcmp(nm, "isupper")) { if (utf8proc_tolower(cp) != cp) any_cased = true; if (utf8proc_toupper(cp) != cp) all = false; }
        }
        if (!strcmp(nm, "islower") || !strcmp(nm, "isupper"))
            return vbool(all && any_cased);
        return vbool(all);
    }
    if (!strcmp(nm, "format")) {
        /* '{}' and '{0}' fields, '{{' '}}' escapes */
        sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        size_t auto_i = 0;
        for (size_t i = 0; i < s->n; i++) {
            char c = s->p[i];
            if (c == '{' && i + 1 < s->n && s->p[i + 1] == '{') { sb_putc(&b, '{'); i++; continue; }
            if (c == '}' && i + 1 < s->n && s->p[i + 1] == '}') { sb_putc(&b, '}'); i++; continue; }
            if (c != '{') { sb_putc(&b, c); continue; }
            size_t j = i + 1;
            while (j < s->n && s->p[j] != '}')
                j++;
            if (j >= s->n) { fail(E->f, PB_ERR_INPUT, line, "format: unmatched '{'"); }
            const jv *v = NULL;
            if (j == i + 1)
                v = arg(A, auto_i++, NULL);
            else {
                bool digits = true;
                for (size_t k = i + 1; k < j; k++)
                    digits &= s->p[k] >= '0' && s->p[k] <= '9';
                if (digits && j - i - 1 < 6)
                    v = arg(A, (size_t)atoi(s->p + i + 1), NULL);
                else
                    for (size_t k = 0; k < A->nkw; k++)
                        if (strlen(A->kwn[k]) == j - i - 1 && !memcmp(A->kwn[k], s->p + i + 1, j - i - 1))
                            v = &A->kwv[k];
            }
            if (!v) { fail(E->f, PB_ERR_UNSUPPORTED, line, "format: unsupported or missing field '%.*s'", (int)(j - i - 1 > 40 ? 40 : j - i - 1), s->p + i + 1); }
            jv t = to_str(E, v);
            sb_put(&b, t.u.s->p, t.u.s->n);
            i = j;
        }
        jv r = vstr(E->a, b.p ? b.p : "", b.n);
        return r;
    }
    fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported string method '%s'", nm);
}

static jv call_method(ev *E, const jv *self, const char *nm, const args *A)
{
    int line = A->line;
    if (self->t == JV_STR)
        return call_str_method(E, self->u.s, nm, A);
    if (self->t == JV_DICT) {
        const jdict *d = self->u.d;
        if (!strcmp(nm, "get")) {
            check_args(E, A, 2, NULL, nm);
            const jv *k = arg(A, 0, NULL), *def = arg(A, 1, NULL);
            if (!k)
                fail(E->f, PB_ERR_INPUT, line, "get: missing key");
            jv *v = k->t == JV_STR ? dget(d, k->u.s->p, k->u.s->n) : NULL;
            return v ? *v : def ? *def : vnone();
        }
        check_args(E, A, 0, NULL, nm);
        jv r = mklist(E, d->n);
        for (size_t i = 0; i < d->n; i++) {
            jv k = {.t = JV_STR};
            k.u.s = d->k[i];
            if (!strcmp(nm, "keys"))
                r.u.l->v[i] = k;
            else if (!strcmp(nm, "values"))
                r.u.l->v[i] = d->v[i];
            else {
                jv p = mklist(E, 2);
                p.u.l->tuple = true;
                p.u.l->v[0] = k;
                p.u.l->v[1] = d->v[i];
                r.u.l->v[i] = p;
            }
        }
        return r;
    }
    if (self->t == JV_LOOP && !strcmp(nm, "cycle")) {
        if (!A->n)
            fail(E->f, PB_ERR_INPUT, line, "loop.cycle: no items");
        return A->pos[self->u.lp->index0 % A->n];
    }
    fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported method '%s' of a %s", nm, type_name(self));
}

static void tick(ev *E, int line)
{
    if (++E->iters > E->max_iters)
        fail(E->f, PB_ERR_INPUT, line, "more than %zu loop iterations and macro calls", E->max_iters);
}

static frame *new_frame(ev *E, frame *parent)
{
    frame *f = aalloc(E->a, sizeof *f);
    memset(f, 0, sizeof *f);
    f->parent = parent;
    return f;
}

static jv call_macro(ev *E, const node *m, const args *A)
{
    if (E->depth >= E->max_depth)
        fail(E->f, PB_ERR_INPUT, A->line, "macro calls nested more than %d deep", E->max_depth);
    tick(E, A->line);
    if (A->n > m->nkw)
        fail(E->f, PB_ERR_INPUT, A->line, "macro '%s' takes %zu arguments, got %zu", m->name, m->nkw, A->n);
    frame *saved = E->fr;
    frame *f = new_frame(E, E->root);
    for (size_t i = 0; i < m->nkw; i++) {
        const jv *v = arg(A, i, m->kwnames[i]);
        jv val;
        if (v)
            val = *v;
        else if (m->kwvals[i]) {
            E->fr = f;
            val = eval(E, m->kwvals[i]);
        } else
            val = vundef();
        dset(E->a, &f->vars, mkstr(E->a, m->kwnames[i], strlen(m->kwnames[i])), val);
    }
    for (size_t k = 0; k < A->nkw; k++) {
        bool ok = false;
        for (size_t i = 0; i < m->nkw; i++)
            ok |= !strcmp(m->kwnames[i], A->kwn[k]);
        if (!ok)
            fail(E->f, PB_ERR_INPUT, A->line, "macro '%s' has no argument '%s'", m->name, A->kwn[k]);
    }
    sbuf *out_saved = E->out;
    sbuf b = {.max = out_saved->max, .f = E->f, .a = E->a};
    E->out = &b;
    E->depth++;
    exec_body(E, m->b, f);
    E->depth--;
    E->out = out_saved;
    E->fr = saved;
    jv r = vstr(E->a, b.p ? b.p : "", b.n);
    return r;
}

static jv call_value(ev *E, const jv *fn, const args *A)
{
    int line = A->line;
    switch (fn->t) {
    case JV_MACRO:
        return call_macro(E, fn->u.mac, A);
    case JV_METHOD:
        return call_method(E, &fn->u.m->self, fn->u.m->name, A);
    case JV_BUILTIN:
        switch (fn->u.bi) {
        case BI_RAISE: {
            const jv *m = arg(A, 0, NULL);
            jv s = m ? to_str(E, m) : vcstr(E->a, "");
            fail(E->f, PB_ERR_INPUT, line, "raise_exception: %s", s.u.s->p);
        }
        case BI_STRFTIME: {
            const jstr *f = want_str(E, arg(A, 0, NULL), line, "strftime_now");
            time_t now = time(NULL);
            struct tm tmv;
            localtime_r(&now, &tmv);
            char buf[512];
            size_t n = f->n ? strftime(buf, sizeof buf, f->p, &tmv) : 0;
            return vstr(E->a, buf, n);
        }
        case BI_RANGE: {
            check_args(E, A, 3, NULL, "range");
            int64_t lo = 0, hi, st = 1;
            if (A->n == 1)
                hi = want_int(E, &A->pos[0], line, "range");
            else if (A->n >= 2) {
                lo = want_int(E, &A->pos[0], line, "range");
                hi = want_int(E, &A->pos[1], line, "range");
                if (A->n == 3)
                    st = want_int(E, &A->pos[2], line, "range");
            } else
                fail(E->f, PB_ERR_INPUT, line, "range: missing arguments");
            if (st == 0)
                fail(E->f, PB_ERR_INPUT, line, "range: step cannot be zero");
            double cnt = st > 0 ? ceil(((double)hi - (double)lo) / (double)st)
                                : ceil(((double)lo - (double)hi) / (double)-st);
            if (cnt < 0)
                cnt = 0;
            if (cnt > 1e6)
                fail(E->f, PB_ERR_INPUT, line, "range: more than 1000000 items");
            jv r = mklist(E, (size_t)cnt);
            for (size_t i = 0; i < (size_t)cnt; i++)
                r.u.l->v[i] = vint(lo + (int64_t)i * st);
            return r;
        }
        case BI_NAMESPACE:
        case BI_DICT: {
            jv r = mkdict(E, fn->u.bi == BI_NAMESPACE ? JV_NS : JV_DICT);
            for (size_t i = 0; i < A->n; i++) {
                if (A->pos[i].t != JV_DICT && A->pos[i].t != JV_NS)
                    fail(E->f, PB_ERR_UNSUPPORTED, line, "%s(): positional arguments must be dicts",
                         fn->u.bi == BI_NAMESPACE ? "namespace" : "dict");
                for (size_t k = 0; k < A->pos[i].u.d->n; k++)
                    dset(E->a, r.u.d, A->pos[i].u.d->k[k], A->pos[i].u.d->v[k]);
            }
            for (size_t k = 0; k < A->nkw; k++)
                dset(E->a, r.u.d, mkstr(E->a, A->kwn[k], strlen(A->kwn[k])), A->kwv[k]);
            return r;
        }
        }
        break;
    case JV_UNDEF:
        fail(E->f, PB_ERR_INPUT, line, "call of an undefined value");
    default:
        break;
    }
    fail(E->f, PB_ERR_INPUT, line, "%s is not callable", type_name(fn));
}

/* ---- tests */

static bool run_test(ev *E, const node *x, const jv *v)
{
    const char *t = x->name;
    int line = x->line;
    args A = eval_args(E, x);
    const jv *a0 = arg(&A, 0, NULL);
#define NEED_ARG() do { if (!a0) fail(E->f, PB_ERR_INPUT, line, "test '%s' needs an argument", t); } while (0)
    if (!strcmp(t, "defined")) return v->t != JV_UNDEF;
    if (!strcmp(t, "undefined")) return v->t == JV_UNDEF;
    if (!strcmp(t, "none")) return v->t == JV_NONE;
    if (!strcmp(t, "string")) return v->t == JV_STR;
    if (!strcmp(t, "mapping")) return v->t == JV_DICT;
    if (!strcmp(t, "iterable")) return v->t == JV_LIST || v->t == JV_DICT || v->t == JV_STR;
    if (!strcmp(t, "sequence")) return v->t == JV_LIST || v->t == JV_DICT || v->t == JV_STR;
    if (!strcmp(t, "number")) return is_num(v);
    if (!strcmp(t, "integer")) return v->t == JV_INT;
    if (!strcmp(t, "float")) return v->t == JV_FLOAT;
    if (!strcmp(t, "boolean")) return v->t == JV_BOOL;
    if (!strcmp(t, "true")) return v->t == JV_BOOL && v->u.b;
    if (!strcmp(t, "false")) return v->t == JV_BOOL && !v->u.b;
    if (!strcmp(t, "callable")) return v->t == JV_MACRO || v->t == JV_BUILTIN || v->t == JV_METHOD;
    if (!strcmp(t, "lower") || !strcmp(t, "upper")) {
        if (v->t != JV_STR)
            fail(E->f, PB_ERR_INPUT, line, "test '%s' of a %s", t, type_name(v));
        args none = {.line = line};
        jv r = call_str_method(E, v->u.s, t[0] == 'l' ? "islower" : "isupper", &none);
        return truthy(&r);
    }
    if (!strcmp(t, "odd") || !strcmp(t, "even")) {
        int64_t i = want_int(E, v, line, t);
        return (i % 2 != 0) == (t[0] == 'o');
    }
    if (!strcmp(t, "divisibleby")) {
        NEED_ARG();
        int64_t d = want_int(E, a0, line, t);
        if (!d)
            fail(E->f, PB_ERR_INPUT, line, "divisibleby 0");
        return want_int(E, v, line, t) % d == 0;
    }
    NEED_ARG();
    if (!strcmp(t, "equalto") || !strcmp(t, "eq") || !strcmp(t, "==")) return equal(v, a0, 0);
    if (!strcmp(t, "ne") || !strcmp(t, "!=")) return !equal(v, a0, 0);
    if (!strcmp(t, "sameas")) return equal(v, a0, 0) && v->t == a0->t && (v->t == JV_NONE || v->t == JV_BOOL || v->t == JV_UNDEF);
    if (!strcmp(t, "gt") || !strcmp(t, ">") || !strcmp(t, "greaterthan")) return compare(E, v, a0, line) > 0;
    if (!strcmp(t, "lt") || !strcmp(t, "<") || !strcmp(t, "lessthan")) return compare(E, v, a0, line) < 0;
    if (!strcmp(t, "ge") || !strcmp(t, ">=")) return compare(E, v, a0, line) >= 0;
    if (!strcmp(t, "le") || !strcmp(t, "<=")) return compare(E, v, a0, line) <= 0;
    if (!strcmp(t, "in")) {
        if (a0->t == JV_STR) {
            const jstr *s = want_str(E, v, line, "in");
            if (!s->n) return true;
            for (size_t i = 0; i + s->n <= a0->u.s->n; i++)
                if (!memcmp(a0->u.s->p + i, s->p, s->n))
                    return true;
            return false;
        }
        jv l = iter_list(E, a0, line);
        for (size_t i = 0; i < l.u.l->n; i++)
            if (equal(v, &l.u.l->v[i], 0))
                return true;
        return false;
    }
#undef NEED_ARG
    fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported test '%s'", t);
}

/* a test by name with extra args, for select/reject */
static bool named_test(ev *E, const char *name, const jv *v, const jv *extra, size_t nextra, int line)
{
    if (!in_list(TESTS, name, strlen(name)))
        fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported test '%s'", name);
    node tn = {.kind = E_TEST, .line = line, .name = name};
    node *lits[8];
    node litn[8];
    if (nextra > 8)
        fail(E->f, PB_ERR_INPUT, line, "too many test arguments");
    for (size_t i = 0; i < nextra; i++) {
        memset(&litn[i], 0, sizeof litn[i]);
        litn[i].kind = E_LIT;
        litn[i].line = line;
        litn[i].lit = extra[i];
        lits[i] = &litn[i];
    }
    tn.list = lits;
    tn.n = nextra;
    return run_test(E, &tn, v);
}

/* ---- filters */

static jv join_list(ev *E, const jv *seq, const jstr *sep, const char *attr, int line)
{
    jv l = iter_list(E, seq, line);
    sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
    for (size_t i = 0; i < l.u.l->n; i++) {
        if (i && sep)
            sb_put(&b, sep->p, sep->n);
        jv it = l.u.l->v[i];
        if (attr)
            it = get_attr(E, &it, attr, line);
        jv s = to_str(E, &it);
        sb_put(&b, s.u.s->p, s.u.s->n);
    }
    jv r = vstr(E->a, b.p ? b.p : "", b.n);
    return r;
}

static int sort_cmp_line;
static ev *sort_ev;
static const char *sort_attr;
static bool sort_ci;

static jv sort_key(const jv *v)
{
    jv k = sort_attr ? get_attr(sort_ev, v, sort_attr, sort_cmp_line) : *v;
    if (sort_ci && k.t == JV_STR)
        k = str_case(sort_ev, k.u.s, CASE_LOWER);
    return k;
}
static int sort_cmp(const void *x, const void *y)
{
    jv a = sort_key(x), b = sort_key(y);
    return compare(sort_ev, &a, &b, sort_cmp_line);
}

static jv apply_filter(ev *E, const node *x, jv v)
{
    const char *f = x->name;
    int line = x->line;
    args A = eval_args(E, x);
    if (!strcmp(f, "trim")) {
        static const char *const kw[] = {"chars", NULL};
        check_args(E, &A, 1, kw, f);
        const jv *c = arg(&A, 0, "chars");
        jv s = to_str(E, &v);
        return str_strip(E, s.u.s, c && c->t != JV_NONE ? want_str(E, c, line, f) : NULL, true, true);
    }
    if (!strcmp(f, "tojson")) {
        static const char *const kw[] = {"indent", "ensure_ascii", "separators", "sort_keys", NULL};
        check_args(E, &A, 1, kw, f);
        jsonopt o = {.indent = -1, .isep = ", ", .ksep = ": "};
        const jv *ind = arg(&A, 0, "indent"), *sk = arg(&A, 99, "sort_keys"), *sp = arg(&A, 99, "separators");
        const jv *ea = arg(&A, 99, "ensure_ascii");
        if (ea && truthy(ea))
            fail(E->f, PB_ERR_UNSUPPORTED, line, "tojson: ensure_ascii=true is not supported");
        if (ind && ind->t != JV_NONE) {
            int64_t i = want_int(E, ind, line, f);
            if (i < 0 || i > 64)
                fail(E->f, PB_ERR_UNSUPPORTED, line, "tojson: indent %lld is not supported", (long long)i);
            o.indent = (int)i;
            o.isep = ",";
        }
        if (sk)
            o.sort = truthy(sk);
        if (sp && sp->t != JV_NONE) {
            if (sp->t != JV_LIST || sp->u.l->n != 2)
                fail(E->f, PB_ERR_INPUT, line, "tojson: separators must be a pair of strings");
            o.isep = want_str(E, &sp->u.l->v[0], line, f)->p;
            o.ksep = want_str(E, &sp->u.l->v[1], line, f)->p;
        }
        sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        to_json(E, &b, &v, &o, 0, line);
        jv r = vstr(E->a, b.p ? b.p : "", b.n);
        return r;
    }
    if (!strcmp(f, "length") || !strcmp(f, "count")) {
        check_args(E, &A, 0, NULL, f);
        switch (v.t) {
        case JV_STR: return vint((int64_t)u8count(v.u.s->p, v.u.s->n));
        case JV_LIST: return vint((int64_t)v.u.l->n);
        case JV_DICT: case JV_NS: return vint((int64_t)v.u.d->n);
        case JV_UNDEF: return vint(0);
        default: fail(E->f, PB_ERR_INPUT, line, "length of a %s", type_name(&v));
        }
    }
    if (!strcmp(f, "upper") || !strcmp(f, "lower") || !strcmp(f, "capitalize") || !strcmp(f, "title")) {
        check_args(E, &A, 0, NULL, f);
        jv s = to_str(E, &v);
        return str_case(E, s.u.s, f[0] == 'u' ? CASE_UPPER : f[0] == 'l' ? CASE_LOWER
                                   : f[0] == 'c' ? CASE_CAP : CASE_JTITLE);
    }
    if (!strcmp(f, "replace")) {
        check_args(E, &A, 3, NULL, f);
        jv s = to_str(E, &v);
        const jv *o = arg(&A, 0, NULL), *n = arg(&A, 1, NULL), *c = arg(&A, 2, NULL);
        if (!o || !n)
            fail(E->f, PB_ERR_INPUT, line, "replace: needs two arguments");
        jv os = to_str(E, o), ns = to_str(E, n);
        return str_replace(E, s.u.s, os.u.s, ns.u.s, c && c->t != JV_NONE ? want_int(E, c, line, f) : -1);
    }
    if (!strcmp(f, "default") || !strcmp(f, "d")) {
        static const char *const kw[] = {"default_value", "boolean", NULL};
        check_args(E, &A, 2, kw, f);
        const jv *d = arg(&A, 0, "default_value"), *bo = arg(&A, 1, "boolean");
        bool use = bo && truthy(bo) ? !truthy(&v) : v.t == JV_UNDEF;
        return use ? (d ? *d : vcstr(E->a, "")) : v;
    }
    if (!strcmp(f, "first") || !strcmp(f, "last")) {
        check_args(E, &A, 0, NULL, f);
        jv l = iter_list(E, &v, line);
        if (!l.u.l->n)
            return vundef();
        return f[0] == 'f' ? l.u.l->v[0] : l.u.l->v[l.u.l->n - 1];
    }
    if (!strcmp(f, "join")) {
        static const char *const kw[] = {"d", "attribute", NULL};
        check_args(E, &A, 2, kw, f);
        const jv *sep = arg(&A, 0, "d"), *at = arg(&A, 1, "attribute");
        jv ss = sep ? to_str(E, sep) : vcstr(E->a, "");
        return join_list(E, &v, ss.u.s, at ? want_str(E, at, line, f)->p : NULL, line);
    }
    if (!strcmp(f, "items")) {
        check_args(E, &A, 0, NULL, f);
        if (v.t == JV_UNDEF)
            return mklist(E, 0);
        if (v.t != JV_DICT)
            fail(E->f, PB_ERR_INPUT, line, "items: expected a mapping, got %s", type_name(&v));
        args none = {.line = line};
        return call_method(E, &v, "items", &none);
    }
    if (!strcmp(f, "string") || !strcmp(f, "safe") || !strcmp(f, "e") || !strcmp(f, "escape")) {
        check_args(E, &A, 0, NULL, f);
        if (f[0] == 'e') {
            jv s = to_str(E, &v);
            sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
            for (size_t i = 0; i < s.u.s->n; i++) {
                char c = s.u.s->p[i];
                switch (c) {
                case '&': sb_puts(&b, "&amp;"); break;
                case '<': sb_puts(&b, "&lt;"); break;
                case '>': sb_puts(&b, "&gt;"); break;
                case '"': sb_puts(&b, "&#34;"); break;
                case '\'': sb_puts(&b, "&#39;"); break;
                default: sb_putc(&b, c);
                }
            }
            jv r = vstr(E->a, b.p ? b.p : "", b.n);
            return r;
        }
        return f[0] == 's' && f[1] == 'a' ? v : to_str(E, &v);
    }
    if (!strcmp(f, "int") || !strcmp(f, "float")) {
        static const char *const kw[] = {"default", "base", NULL};
        check_args(E, &A, 2, kw, f);
        const jv *d = arg(&A, 0, "default");
        bool isint = f[0] == 'i';
        jv def = d ? *d : isint ? vint(0) : vfloat(0);
        if (v.t == JV_INT || v.t == JV_BOOL)
            return isint ? vint(num_i(&v)) : vfloat((double)num_i(&v));
        if (v.t == JV_FLOAT) {
            if (!isint)
                return v;
            if (!isfinite(v.u.f) || fabs(v.u.f) > 9.2e18)
                return def;
            return vint((int64_t)v.u.f);
        }
        if (v.t == JV_STR) {
            char *e;
            const char *p = v.u.s->p;
            if (isint) {
                long long r = strtoll(p, &e, 10);
                while (*e == ' ' || *e == '\t' || *e == '\n') e++;
                if (e != p && !*e)
                    return vint(r);
            }
            double r = strtod(p, &e);
            while (*e == ' ' || *e == '\t' || *e == '\n') e++;
            if (e != p && !*e && isfinite(r))
                return isint ? (fabs(r) < 9.2e18 ? vint((int64_t)r) : def) : vfloat(r);
        }
        return def;
    }
    if (!strcmp(f, "list")) {
        check_args(E, &A, 0, NULL, f);
        jv l = iter_list(E, &v, line);
        if (l.u.l == v.u.l && v.t == JV_LIST) {
            jv c = mklist(E, l.u.l->n);
            if (l.u.l->n)
                memcpy(c.u.l->v, l.u.l->v, l.u.l->n * sizeof(jv));
            return c;
        }
        return l;
    }
    if (!strcmp(f, "map")) {
        static const char *const kw[] = {"attribute", "default", NULL};
        check_args(E, &A, 99, kw, f);
        jv l = truthy(&v) ? iter_list(E, &v, line) : mklist(E, 0);
        jv r = mklist(E, l.u.l->n);
        const jv *at = arg(&A, 99, "attribute"), *def = arg(&A, 99, "default");
        if (at) {
            const jstr *an = want_str(E, at, line, f);
            for (size_t i = 0; i < l.u.l->n; i++) {
                jv it = get_attr(E, &l.u.l->v[i], an->p, line);
                r.u.l->v[i] = it.t == JV_UNDEF && def ? *def : it;
            }
            return r;
        }
        if (!A.n)
            fail(E->f, PB_ERR_INPUT, line, "map: needs a filter name or attribute=");
        const jstr *fname = want_str(E, &A.pos[0], line, f);
        if (!in_list(FILTERS, fname->p, fname->n))
            fail(E->f, PB_ERR_UNSUPPORTED, line, "map: unsupported filter '%s'", fname->p);
        node fn = {.kind = E_FILTER, .line = line, .name = fname->p};
        node litn[8];
        node *lits[8];
        if (A.n - 1 > 8 || A.nkw)
            fail(E->f, PB_ERR_UNSUPPORTED, line, "map: too many arguments");
        for (size_t i = 1; i < A.n; i++) {
            memset(&litn[i - 1], 0, sizeof litn[0]);
            litn[i - 1].kind = E_LIT;
            litn[i - 1].lit = A.pos[i];
            lits[i - 1] = &litn[i - 1];
        }
        fn.list = lits;
        fn.n = A.n - 1;
        for (size_t i = 0; i < l.u.l->n; i++)
            r.u.l->v[i] = apply_filter(E, &fn, l.u.l->v[i]);
        return r;
    }
    if (!strcmp(f, "select") || !strcmp(f, "reject") || !strcmp(f, "selectattr") || !strcmp(f, "rejectattr")) {
        bool attr = strlen(f) > 6, sel = f[0] == 's';
        check_args(E, &A, 99, NULL, f);
        jv l = truthy(&v) ? iter_list(E, &v, line) : mklist(E, 0);
        jv r = mklist(E, l.u.l->n);
        size_t k = 0, ai = 0;
        const char *an = NULL;
        if (attr) {
            if (!A.n)
                fail(E->f, PB_ERR_INPUT, line, "%s: needs an attribute name", f);
            an = want_str(E, &A.pos[0], line, f)->p;
            ai = 1;
        }
        const char *tn = NULL;
        if (A.n > ai)
            tn = want_str(E, &A.pos[ai], line, f)->p;
        for (size_t i = 0; i < l.u.l->n; i++) {
            jv it = an ? get_attr(E, &l.u.l->v[i], an, line) : l.u.l->v[i];
            bool ok = tn ? named_test(E, tn, &it, A.pos + ai + 1, A.n - ai - 1, line) : truthy(&it);
            if (ok == sel)
                r.u.l->v[k++] = l.u.l->v[i];
        }
        r.u.l->n = k;
        return r;
    }
    if (!strcmp(f, "abs")) {
        check_args(E, &A, 0, NULL, f);
        if (v.t == JV_FLOAT) return vfloat(fabs(v.u.f));
        int64_t i = want_int(E, &v, line, f);
        if (i == INT64_MIN) fail(E->f, PB_ERR_INPUT, line, "abs: overflow");
        return vint(i < 0 ? -i : i);
    }
    if (!strcmp(f, "unique") || !strcmp(f, "reverse")) {
        check_args(E, &A, 0, NULL, f);
        if (f[0] == 'r' && v.t == JV_STR) {
            size_t *o;
            size_t n = cp_offsets(E, v.u.s, &o);
            sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
            for (size_t i = n; i > 0; i--)
                sb_put(&b, v.u.s->p + o[i - 1], o[i] - o[i - 1]);
            jv r = vstr(E->a, b.p ? b.p : "", b.n);
            return r;
        }
        jv l = iter_list(E, &v, line);
        jv r = mklist(E, l.u.l->n);
        size_t k = 0;
        for (size_t i = 0; i < l.u.l->n; i++) {
            if (f[0] == 'r') {
                r.u.l->v[k++] = l.u.l->v[l.u.l->n - 1 - i];
                continue;
            }
            bool seen = false;
            for (size_t j = 0; j < k && !seen; j++)
                seen = equal(&r.u.l->v[j], &l.u.l->v[i], 0);
            if (!seen)
                r.u.l->v[k++] = l.u.l->v[i];
        }
        r.u.l->n = k;
        return r;
    }
    if (!strcmp(f, "sort") || !strcmp(f, "dictsort")) {
        static const char *const kw[] = {"reverse", "case_sensitive", "attribute", "by", NULL};
        check_args(E, &A, 3, kw, f);
        jv l;
        if (f[0] == 'd') {
            if (v.t != JV_DICT)
                fail(E->f, PB_ERR_INPUT, line, "dictsort: expected a mapping");
            args none = {.line = line};
            l = call_method(E, &v, "items", &none);
        } else {
            jv src = iter_list(E, &v, line);
            l = mklist(E, src.u.l->n);
            if (src.u.l->n)
                memcpy(l.u.l->v, src.u.l->v, src.u.l->n * sizeof(jv));
        }
        const jv *rev = arg(&A, f[0] == 'd' ? 2 : 0, "reverse"), *cs = arg(&A, f[0] == 'd' ? 0 : 1, "case_sensitive");
        const jv *at = f[0] == 's' ? arg(&A, 2, "attribute") : NULL;
        const jv *by = f[0] == 'd' ? arg(&A, 1, "by") : NULL;
        sort_ev = E;
        sort_cmp_line = line;
        sort_attr = at ? want_str(E, at, line, f)->p : NULL;
        sort_ci = !(cs && truthy(cs));
        if (f[0] == 'd')
            sort_attr = NULL;
        if (by && (by->t != JV_STR || strcmp(by->u.s->p, "key")))
            fail(E->f, PB_ERR_UNSUPPORTED, line, "dictsort: only by='key' is supported");
        /* stable insertion sort (lists are small) */
        jv *a = l.u.l->v;
        size_t n = l.u.l->n;
        bool desc = rev && truthy(rev);
        for (size_t i = 1; i < n; i++) {
            jv t = a[i];
            size_t j = i;
            while (j > 0) {
                jv ka = f[0] == 'd' ? a[j - 1].u.l->v[0] : a[j - 1];
                jv kb = f[0] == 'd' ? t.u.l->v[0] : t;
                int c = sort_cmp(&ka, &kb);
                if (desc ? c < 0 : c > 0) {
                    a[j] = a[j - 1];
                    j--;
                } else
                    break;
            }
            a[j] = t;
        }
        sort_attr = NULL;
        return l;
    }
    if (!strcmp(f, "sum") || !strcmp(f, "min") || !strcmp(f, "max")) {
        static const char *const kw[] = {"attribute", "start", "case_sensitive", NULL};
        check_args(E, &A, 2, kw, f);
        jv l = iter_list(E, &v, line);
        const jv *at = arg(&A, 99, "attribute");
        if (f[0] == 's') {
            const jv *st = arg(&A, 99, "start");
            jv acc = st ? *st : vint(0);
            for (size_t i = 0; i < l.u.l->n; i++) {
                jv it = at ? get_attr(E, &l.u.l->v[i], want_str(E, at, line, f)->p, line) : l.u.l->v[i];
                if (!is_num(&it) || !is_num(&acc))
                    fail(E->f, PB_ERR_INPUT, line, "sum of a %s", type_name(&it));
                if (acc.t == JV_FLOAT || it.t == JV_FLOAT)
                    acc = vfloat(num_f(&acc) + num_f(&it));
                else {
                    int64_t r;
                    if (__builtin_add_overflow(num_i(&acc), num_i(&it), &r))
                        fail(E->f, PB_ERR_INPUT, line, "integer overflow");
                    acc = vint(r);
                }
            }
            return acc;
        }
        if (!l.u.l->n)
            return vundef();
        jv best = l.u.l->v[0];
        for (size_t i = 1; i < l.u.l->n; i++) {
            int c = compare(E, &l.u.l->v[i], &best, line);
            if (f[1] == 'i' ? c < 0 : c > 0)
                best = l.u.l->v[i];
        }
        return best;
    }
    if (!strcmp(f, "attr")) {
        check_args(E, &A, 1, NULL, f);
        return get_attr(E, &v, want_str(E, arg(&A, 0, NULL), line, f)->p, line);
    }
    if (!strcmp(f, "round")) {
        static const char *const kw[] = {"precision", "method", NULL};
        check_args(E, &A, 2, kw, f);
        const jv *pr = arg(&A, 0, "precision"), *me = arg(&A, 1, "method");
        int64_t p = pr ? want_int(E, pr, line, f) : 0;
        if (p < 0 || p > 15)
            fail(E->f, PB_ERR_UNSUPPORTED, line, "round: precision %lld", (long long)p);
        if (!is_num(&v))
            fail(E->f, PB_ERR_INPUT, line, "round of a %s", type_name(&v));
        double m = pow(10, (double)p), x0 = num_f(&v) * m;
        const char *meth = me ? want_str(E, me, line, f)->p : "common";
        double r = !strcmp(meth, "floor") ? floor(x0) : !strcmp(meth, "ceil") ? ceil(x0) : round(x0);
        return vfloat(r / m);
    }
    if (!strcmp(f, "indent")) {
        static const char *const kw[] = {"width", "first", "blank", NULL};
        check_args(E, &A, 3, kw, f);
        const jv *w = arg(&A, 0, "width"), *fi = arg(&A, 1, "first"), *bl = arg(&A, 2, "blank");
        jv pad;
        if (w && w->t == JV_STR)
            pad = *w;
        else {
            int64_t n = w ? want_int(E, w, line, f) : 4;
            if (n < 0 || n > 256)
                fail(E->f, PB_ERR_UNSUPPORTED, line, "indent: width %lld", (long long)n);
            char sp[257];
            memset(sp, ' ', (size_t)n);
            pad = vstr(E->a, sp, (size_t)n);
        }
        jv s = to_str(E, &v);
        sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        bool first = fi && truthy(fi), blank = bl && truthy(bl);
        const jstr *t = s.u.s;
        size_t st = 0;
        for (size_t i = 0; i <= t->n; i++) {
            if (i < t->n && t->p[i] != '\n')
                continue;
            bool line0 = st == 0;
            bool empty = i == st;
            if ((line0 ? first : true) && (blank || !empty) && !(line0 && !first))
                sb_put(&b, pad.u.s->p, pad.u.s->n);
            sb_put(&b, t->p + st, i - st);
            if (i < t->n)
                sb_putc(&b, '\n');
            st = i + 1;
        }
        jv r = vstr(E->a, b.p ? b.p : "", b.n);
        return r;
    }
    fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported filter '%s'", f);
}

/* ---- arithmetic */

static jv arith(ev *E, int op, const jv *x, const jv *y, int line)
{
    if (op == OP_CAT) {
        jv a = to_str(E, x), b = to_str(E, y);
        sbuf s = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        sb_put(&s, a.u.s->p, a.u.s->n);
        sb_put(&s, b.u.s->p, b.u.s->n);
        jv r = vstr(E->a, s.p ? s.p : "", s.n);
        return r;
    }
    if (x->t == JV_UNDEF || y->t == JV_UNDEF)
        fail(E->f, PB_ERR_INPUT, line, "arithmetic on an undefined value");
    if (op == OP_ADD && x->t == JV_STR && y->t == JV_STR) {
        size_t n;
        if (__builtin_add_overflow(x->u.s->n, y->u.s->n, &n))
            fail(E->f, PB_ERR_NOMEM, line, "string too long");
        jstr *s = aalloc(E->a, sizeof(jstr) + n + 1);
        s->n = n;
        memcpy(s->p, x->u.s->p, x->u.s->n);
        memcpy(s->p + x->u.s->n, y->u.s->p, y->u.s->n);
        s->p[n] = '\0';
        jv r = {.t = JV_STR};
        r.u.s = s;
        return r;
    }
    if (op == OP_ADD && x->t == JV_LIST && y->t == JV_LIST) {
        jv r = mklist(E, x->u.l->n + y->u.l->n);
        if (x->u.l->n) memcpy(r.u.l->v, x->u.l->v, x->u.l->n * sizeof(jv));
        if (y->u.l->n) memcpy(r.u.l->v + x->u.l->n, y->u.l->v, y->u.l->n * sizeof(jv));
        return r;
    }
    if (op == OP_MUL && ((x->t == JV_STR && (y->t == JV_INT || y->t == JV_BOOL)) ||
                         (y->t == JV_STR && (x->t == JV_INT || x->t == JV_BOOL)))) {
        const jstr *s = x->t == JV_STR ? x->u.s : y->u.s;
        int64_t k = x->t == JV_STR ? num_i(y) : num_i(x);
        if (k <= 0 || !s->n)
            return vcstr(E->a, "");
        if ((uint64_t)k > ((size_t)1 << 30) / s->n)
            fail(E->f, PB_ERR_INPUT, line, "string repetition too long");
        sbuf b = {.max = (size_t)1 << 30, .f = E->f, .a = E->a};
        for (int64_t i = 0; i < k; i++)
            sb_put(&b, s->p, s->n);
        jv r = vstr(E->a, b.p, b.n);
        return r;
    }
    if (op == OP_MOD && x->t == JV_STR)
        fail(E->f, PB_ERR_UNSUPPORTED, line, "unsupported: %% string formatting");
    if (!is_num(x) || !is_num(y))
        fail(E->f, PB_ERR_INPUT, line, "unsupported operand types for arithmetic: %s and %s",
             type_name(x), type_name(y));
    bool fl = x->t == JV_FLOAT || y->t == JV_FLOAT;
    if (op == OP_DIV) {
        double d = num_f(y);
        if (d == 0)
            fail(E->f, PB_ERR_INPUT, line, "division by zero");
        return vfloat(num_f(x) / d);
    }
    if (fl) {
        double a = num_f(x), b = num_f(y);
        switch (op) {
        case OP_ADD: return vfloat(a + b);
        case OP_SUB: return vfloat(a - b);
        case OP_MUL: return vfloat(a * b);
        case OP_POW: return vfloat(pow(a, b));
        case OP_FDIV: case OP_MOD:
            if (b == 0)
                fail(E->f, PB_ERR_INPUT, line, "division by zero");
            if (op == OP_FDIV)
                return vfloat(floor(a / b));
            {
                double m = fmod(a, b);
                if (m != 0 && ((m < 0) != (b < 0)))
                    m += b;
                return vfloat(m);
            }
        }
    }
    int64_t a = num_i(x), b = num_i(y), r;
    bool ovf = false;
    switch (op) {
    case OP_ADD: ovf = __builtin_add_overflow(a, b, &r); break;
    case OP_SUB: ovf = __builtin_sub_overflow(a, b, &r); break;
    case OP_MUL: ovf = __builtin_mul_overflow(a, b, &r); break;
    case OP_FDIV: case OP_MOD:
        if (b == 0)
            fail(E->f, PB_ERR_INPUT, line, "division by zero");
        if (a == INT64_MIN && b == -1)
            fail(E->f, PB_ERR_INPUT, line, "integer overflow");
        {
            int64_t q = a / b, m = a % b;
            if (m != 0 && ((m < 0) != (b < 0))) {
                q--;
                m += b;
            }
            r = op == OP_FDIV ? q : m;
        }
        break;
    case OP_POW:
        if (b < 0)
            return vfloat(pow((double)a, (double)b));
        r = 1;
        for (int64_t i = 0; i < b && !ovf; i++) {
            ovf = __builtin_mul_overflow(r, a, &r);
            if (r == 0 || r == 1)
                break;
        }
        if (b > 0 && (a == -1))
            r = b % 2 ? -1 : 1;
        break;
    default: r = 0;
    }
    if (ovf)
        fail(E->f, PB_ERR_INPUT, line, "integer overflow");
    return vint(r);
}

static bool contains(ev *E, const jv *needle, const jv *hay, int line)
{
    if (hay->t == JV_STR) {
        if (needle->t != JV_STR)
            fail(E->f, PB_ERR_INPUT, line, "'in <string>' requires a string on the left, not %s", type_name(needle));
        const jstr *s = needle->u.s, *h = hay->u.s;
        if (!s->n)
            return true;
        for (size_t i = 0; i + s->n <= h->n; i++)
            if (!memcmp(h->p + i, s->p, s->n))
                return true;
        return false;
    }
    if (hay->t == JV_DICT || hay->t == JV_NS)
        return needle->t == JV_STR && dget(hay->u.d, needle->u.s->p, needle->u.s->n);
    if (hay->t == JV_LIST) {
        for (size_t i = 0; i < hay->u.l->n; i++)
            if (equal(needle, &hay->u.l->v[i], 0))
                return true;
        return false;
    }
    if (hay->t == JV_UNDEF)
        return false;
    fail(E->f, PB_ERR_INPUT, line, "argument of type %s is not iterable", type_name(hay));
}

static jv eval(ev *E, const node *x)
{
    switch (x->kind) {
    case E_LIT:
        return x->lit;
    case E_NAME: {
        jv *v = lookup(E, E->fr, x->name, x->name_len);
        if (v)
            return *v;
        jv b = {.t = JV_BUILTIN};
        if (!strcmp(x->name, "range")) b.u.bi = BI_RANGE;
        else if (!strcmp(x->name, "namespace")) b.u.bi = BI_NAMESPACE;
        else if (!strcmp(x->name, "raise_exception")) b.u.bi = BI_RAISE;
        else if (!strcmp(x->name, "strftime_now")) b.u.bi = BI_STRFTIME;
        else if (!strcmp(x->name, "dict")) b.u.bi = BI_DICT;
        else return vundef();
        return b;
    }
    case E_ATTR: {
        jv o = eval(E, x->a);
        if (o.t == JV_UNDEF)
            fail(E->f, PB_ERR_INPUT, x->line, "'%s' of an undefined value%s%s%s", x->name,
                 x->a->kind == E_NAME ? " '" : "", x->a->kind == E_NAME ? x->a->name : "",
                 x->a->kind == E_NAME ? "'" : "");
        return get_attr(E, &o, x->name, x->line);
    }
    case E_ITEM: {
        jv o = eval(E, x->a), k = eval(E, x->b);
        if (o.t == JV_UNDEF)
            fail(E->f, PB_ERR_INPUT, x->line, "subscript of an undefined value%s%s%s",
                 x->a->kind == E_NAME ? " '" : "", x->a->kind == E_NAME ? x->a->name : "",
                 x->a->kind == E_NAME ? "'" : "");
        return get_item(E, &o, &k, x->line);
    }
    case E_SLICE:
        return eval_slice(E, x);
    case E_CALL: {
        if (x->a->kind == E_ATTR) {
            jv o = eval(E, x->a->a);
            if (o.t == JV_UNDEF)
                fail(E->f, PB_ERR_INPUT, x->line, "'%s' of an undefined value", x->a->name);
            jv fn = get_attr(E, &o, x->a->name, x->line);
            args A = eval_args(E, x);
            if (fn.t == JV_UNDEF)
                fail(E->f, PB_ERR_UNSUPPORTED, x->line, "unsupported method '%s' of a %s", x->a->name, type_name(&o));
            return call_value(E, &fn, &A);
        }
        jv fn = eval(E, x->a);
        args A = eval_args(E, x);
        if (fn.t == JV_UNDEF && x->a->kind == E_NAME)
            fail(E->f, PB_ERR_UNSUPPORTED, x->line, "unsupported or undefined function '%s'", x->a->name);
        return call_value(E, &fn, &A);
    }
    case E_FILTER:
        return apply_filter(E, x, eval(E, x->a));
    case E_TEST: {
        jv v = eval(E, x->a);
        return vbool(run_test(E, x, &v) != x->neg);
    }
    case E_BIN: {
        jv a = eval(E, x->a), b = eval(E, x->b);
        switch (x->op) {
        case OP_EQ: return vbool(equal(&a, &b, 0));
        case OP_NE: return vbool(!equal(&a, &b, 0));
        case OP_LT: return vbool(compare(E, &a, &b, x->line) < 0);
        case OP_LE: return vbool(compare(E, &a, &b, x->line) <= 0);
        case OP_GT: return vbool(compare(E, &a, &b, x->line) > 0);
        case OP_GE: return vbool(compare(E, &a, &b, x->line) >= 0);
        case OP_IN: return vbool(contains(E, &a, &b, x->line));
        case OP_NOTIN: return vbool(!contains(E, &a, &b, x->line));
        default: return arith(E, x->op, &a, &b, x->line);
        }
    }
    case E_NEG: case E_POS: {
        jv a = eval(E, x->a);
        if (a.t == JV_FLOAT)
            return vfloat(x->kind == E_NEG ? -a.u.f : a.u.f);
        if (a.t == JV_INT || a.t == JV_BOOL) {
            int64_t i = num_i(&a);
            if (x->kind == E_NEG && i == INT64_MIN)
                fail(E->f, PB_ERR_INPUT, x->line, "integer overflow");
            return vint(x->kind == E_NEG ? -i : i);
        }
        fail(E->f, PB_ERR_INPUT, x->line, "bad operand type for unary %c: %s", x->kind == E_NEG ? '-' : '+', type_name(&a));
    }
    case E_AND: {
        jv a = eval(E, x->a);
        return truthy(&a) ? eval(E, x->b) : a;
    }
    case E_OR: {
        jv a = eval(E, x->a);
        return truthy(&a) ? a : eval(E, x->b);
    }
    case E_NOT: {
        jv a = eval(E, x->a);
        return vbool(!truthy(&a));
    }
    case E_COND: {
        jv c = eval(E, x->b);
        if (truthy(&c))
            return eval(E, x->a);
        return x->c ? eval(E, x->c) : vundef();
    }
    case E_LIST: {
        jv r = mklist(E, x->n);
        r.u.l->tuple = x->op == 1;
        for (size_t i = 0; i < x->n; i++)
            r.u.l->v[i] = eval(E, x->list[i]);
        return r;
    }
    case E_DICT: {
        jv r = mkdict(E, JV_DICT);
        for (size_t i = 0; i < x->n; i++) {
            jv k = eval(E, x->list[i]);
            if (k.t != JV_STR)
                fail(E->f, PB_ERR_UNSUPPORTED, x->line, "unsupported: dict keys that are not strings");
            dset(E->a, r.u.d, k.u.s, eval(E, x->kwvals[i]));
        }
        return r;
    }
    default:
        fail(E->f, PB_ERR_INTERNAL, x->line, "bad expression node %d", x->kind);
    }
}

static void assign_targets(ev *E, frame *fr, const char *const *names, size_t n, const jv *v, int line)
{
    if (n == 1) {
        dset(E->a, &fr->vars, mkstr(E->a, names[0], strlen(names[0])), *v);
        return;
    }
    jv l = iter_list(E, v, line);
    if (l.u.l->n != n)
        fail(E->f, PB_ERR_INPUT, line, "cannot unpack %zu values into %zu names", l.u.l->n, n);
    for (size_t i = 0; i < n; i++)
        dset(E->a, &fr->vars, mkstr(E->a, names[i], strlen(names[i])), l.u.l->v[i]);
}

static void exec_stmt(ev *E, const node *x, frame *fr);

static void exec_body(ev *E, const node *body, frame *fr)
{
    frame *saved = E->fr;
    E->fr = fr;
    for (size_t i = 0; i < body->n && !E->brk; i++)
        exec_stmt(E, body->list[i], fr);
    E->fr = saved;
}

static void exec_stmt(ev *E, const node *x, frame *fr)
{
    E->fr = fr;
    switch (x->kind) {
    case N_BODY:
        exec_body(E, x, fr);
        break;
    case N_TEXT:
        out_text(E, x->name, x->name_len);
        break;
    case N_OUT: {
        jv v = eval(E, x->a);
        if (v.t == JV_STR)
            out_text(E, v.u.s->p, v.u.s->n);
        else
            py_str(E, E->out, &v, 0);
        break;
    }
    case N_IF: {
        jv c = eval(E, x->a);
        if (truthy(&c))
            exec_body(E, x->b, fr);
        else if (x->c) {
            if (x->c->kind == N_IF)
                exec_stmt(E, x->c, fr);
            else
                exec_body(E, x->c, fr);
        }
        break;
    }
    case N_FOR: {
        jv seq = eval(E, x->a);
        jv items = iter_list(E, &seq, x->line);
        if (x->d) {   /* loop filter: before loop.* is computed */
            jv kept = mklist(E, items.u.l->n);
            size_t k = 0;
            for (size_t i = 0; i < items.u.l->n; i++) {
                tick(E, x->line);
                frame *tf = new_frame(E, fr);
                assign_targets(E, tf, x->kwnames, x->nkw, &items.u.l->v[i], x->line);
                E->fr = tf;
                jv c = eval(E, x->d);
                if (truthy(&c))
                    kept.u.l->v[k++] = items.u.l->v[i];
            }
            kept.u.l->n = k;
            items = kept;
            E->fr = fr;
        }
        jloop *lp = aalloc(E->a, sizeof *lp);
        lp->length = items.u.l->n;
        lp->items = items.u.l;
        jstr *loopname = mkstr(E->a, "loop", 4);
        for (size_t i = 0; i < items.u.l->n; i++) {
            tick(E, x->line);
            frame *it = new_frame(E, fr);
            jloop *li = aalloc(E->a, sizeof *li);
            *li = *lp;
            li->index0 = i;
            jv lv = {.t = JV_LOOP};
            lv.u.lp = li;
            dset(E->a, &it->vars, loopname, lv);
            assign_targets(E, it, x->kwnames, x->nkw, &items.u.l->v[i], x->line);
            exec_body(E, x->b, it);
            if (E->brk == 1) {
                E->brk = 0;
                break;
            }
            E->brk = 0;
        }
        if (!items.u.l->n && x->c)
            exec_body(E, x->c, fr);
        break;
    }
    case N_SET: {
        jv v = eval(E, x->a);
        if (x->lit.t == JV_STR) {   /* ns.attr = v */
            jv *ns = lookup(E, fr, x->name, strlen(x->name));
            if (!ns || ns->t != JV_NS)
                fail(E->f, PB_ERR_INPUT, x->line, "cannot assign attribute '%s' on '%s': it is not a namespace",
                     x->lit.u.s->p, x->name);
            if (x->lit.u.s->p[0] == '_')
                fail(E->f, PB_ERR_INPUT, x->line, "namespace attributes cannot start with '_'");
            dset(E->a, ns->u.d, x->lit.u.s, v);
        } else
            assign_targets(E, fr, x->kwnames, x->nkw, &v, x->line);
        break;
    }
    case N_SETBLOCK: {
        sbuf *saved = E->out;
        sbuf b = {.max = saved->max, .f = E->f, .a = E->a};
        E->out = &b;
        exec_body(E, x->b, fr);
        E->out = saved;
        jv v = vstr(E->a, b.p ? b.p : "", b.n);
        dset(E->a, &fr->vars, mkstr(E->a, x->name, strlen(x->name)), v);
        break;
    }
    case N_MACRO: {
        jv m = {.t = JV_MACRO};
        m.u.mac = x;
        dset(E->a, &fr->vars, mkstr(E->a, x->name, strlen(x->name)), m);
        break;
    }
    case N_BREAK:
        E->brk = 1;
        break;
    case N_CONTINUE:
        E->brk = 2;
        break;
    default:
        fail(E->f, PB_ERR_INTERNAL, x->line, "bad statement node %d", x->kind);
    }
}

pb_status pb_jinja_render(const pb_jinja *t, const cJSON *vars, const pb_jinja_limits *lim,
                          char **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    /* on the heap: everything touched after setjmp stays valid after longjmp */
    struct rstate { jfail f; arena a; sbuf ob; ev E; } *R = calloc(1, sizeof *R);
    if (!R)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    R->f.name = t->name;
    R->a.cap = lim && lim->max_memory ? lim->max_memory : (size_t)256 << 20;
    R->a.f = &R->f;
    R->ob.max = lim && lim->max_output ? lim->max_output : (size_t)16 << 20;
    R->ob.f = &R->f;
    R->ob.a = &R->a;
    R->E.a = &R->a;
    R->E.f = &R->f;
    R->E.out = &R->ob;
    R->E.max_iters = lim && lim->max_iterations ? lim->max_iterations : 200000;
    R->E.max_depth = lim && lim->max_depth ? lim->max_depth : 64;
    if (setjmp(R->f.jb)) {
        pb_status st = pb_error(R->f.st, "%s", R->f.msg);
        afree(&R->a);
        free(R);
        return st;
    }
    if (vars && cJSON_IsObject(vars)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, vars) {
            const char *k = e->string ? e->string : "";
            dset(&R->a, &R->E.globals, mkstr(&R->a, k, strlen(k)), from_json(&R->E, e, 0));
        }
    }
    R->E.root = new_frame(&R->E, NULL);
    exec_body(&R->E, t->root, R->E.root);
    char *o = malloc(R->ob.n + 1);
    if (!o) {
        afree(&R->a);
        free(R);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    if (R->ob.n)
        memcpy(o, R->ob.p, R->ob.n);
    o[R->ob.n] = '\0';
    *out = o;
    *out_len = R->ob.n;
    afree(&R->a);
    free(R);
    return PB_OK;
}
