/* GBNF/EBNF grammars and their parse over bytes (see grammar.h). */
#include "config.h"
#include "gen/grammar.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/regex.h"

/* Symbols of a rule's alternatives: >= 0 a rule, <= -2 terminal -(s + 2); -1 ends an alternative (the
 * compiled items) or is the empty string (while parsing). */
#define SYM_END (-1)
#define SYM_TERM(t) (-(int32_t)(t) - 2)
#define TERM_OF(s) (-(s) - 2)

#define MAX_COUNT 1000        /* x{m,n}: m, n */
#define MAX_DEPTH 100         /* groups within groups */
#define MAX_ITEMS (1 << 24)   /* symbols of the whole grammar, rewritten */
#define MAX_TOPS 65536        /* stacks in one state */
#define MAX_NODES (1 << 22)   /* stack frames */
#define MAX_STATES (1 << 20)
#define MAX_WORK (1 << 20)    /* (item, frame) pairs one byte's move expands */

/* ---- parsing ---- */

typedef struct alt {
    int32_t *sym;
    int n, cap;
} alt;

typedef struct prule {
    char *name;
    size_t off;  /* where it was first named (its definition or first use) */
    bool defined, anon;
    bool term;   /* Lark: a terminal's (an UPPERCASE name's, or within one), where %ignore does not reach */
    int rep_kind; /* made for x* (1), x+ (2) or x? (3) of rep_of: (x*)+ and the like fold into one (0: not) */
    int32_t rep_of;
    alt *alts;
    int n_alts, cap_alts;
} prule;

typedef struct pterm {
    char *re; /* a terminal's regex */
    uint64_t hash;
} pterm;

typedef struct parser {
    const char *s;
    size_t n, i;
    prule *rules;
    int n_rules, cap_rules;
    pterm *terms;
    int n_terms, cap_terms;
    int cur, anon_n, depth;
    size_t n_syms;
    bool lark;   /* Lark's syntax (no ::=), as vLLM takes it */
    int first;   /* Lark: the first rule defined */
    int ign;     /* Lark: %ignore's rule (its alternatives what may come between lexemes), else -1 */
    bool internal; /* a grammar of ours (pb_cfg_json_object): its regex terminals may match the empty string */
    char *re; /* a terminal's regex being written */
    size_t re_n, re_cap;
} parser;

static pb_status perr(const parser *p, size_t off, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static pb_status perr(const parser *p, size_t off, const char *fmt, ...)
{
    int line = 1, col = 1;
    for (size_t k = 0; k < off && k < p->n; k++) {
        if (p->s[k] == '\n') {
            line++;
            col = 1;
        } else if (((unsigned char)p->s[k] & 0xc0) != 0x80) {
            col++;
        }
    }
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pb_error(PB_ERR_INPUT, "grammar line %d, column %d: %s", line, col, msg);
}

/* Grows *arr (of *cap elements of size) to hold need. */
static pb_status grow(void *arr, int *cap, int need, size_t size)
{
    if (need <= *cap)
        return PB_OK;
    int c = *cap ? *cap : 4;
    while (c < need)
        c *= 2;
    PB_CHECK(pb_realloc_array(arr, (size_t)c, size));
    *cap = c;
    return PB_OK;
}

static pb_status alt_push(parser *p, alt *a, int32_t sym)
{
    if (++p->n_syms > MAX_ITEMS)
        return pb_error(PB_ERR_INPUT, "the grammar is too large (more than %d symbols once rewritten)", MAX_ITEMS);
    PB_CHECK(grow(&a->sym, &a->cap, a->n + 1, sizeof *a->sym));
    a->sym[a->n++] = sym;
    return PB_OK;
}

/* A new alternative of rule r; *out its index. */
static pb_status alt_new(parser *p, int r, int *out)
{
    prule *ru = &p->rules[r];
    PB_CHECK(grow(&ru->alts, &ru->cap_alts, ru->n_alts + 1, sizeof *ru->alts));
    ru->alts[ru->n_alts] = (alt){0};
    *out = ru->n_alts++;
    return PB_OK;
}

static pb_status rule_new(parser *p, const char *name, size_t len, size_t off, bool anon, int *out)
{
    PB_CHECK(grow(&p->rules, &p->cap_rules, p->n_rules + 1, sizeof *p->rules));
    prule *ru = &p->rules[p->n_rules];
    *ru = (prule){.off = off, .anon = anon};
    PB_CHECK(pb_malloc(len + 1, &ru->name));
    memcpy(ru->name, name, len);
    ru->name[len] = 0;
    if (anon) {
        ru->term = p->cur < p->n_rules && p->rules[p->cur].term;
    } else {
        size_t k = 0;
        while (k < len && name[k] == '_')
            k++;
        ru->term = k < len && name[k] >= 'A' && name[k] <= 'Z';
    }
    *out = p->n_rules++;
    return PB_OK;
}

/* An anonymous rule for a group or repetition within the rule being defined (named after it, for messages). */
static pb_status rule_anon(parser *p, size_t off, int *out)
{
    char name[200];
    snprintf(name, sizeof name, "%.150s_%d", p->rules[p->cur].name, ++p->anon_n);
    return rule_new(p, name, strlen(name), off, true, out);
}

static int rule_find(const parser *p, const char *name, size_t len)
{
    for (int r = 0; r < p->n_rules; r++)
        if (!p->rules[r].anon && strlen(p->rules[r].name) == len && !memcmp(p->rules[r].name, name, len))
            return r;
    return -1;
}

static bool name_char_of(bool lark, int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
           (c == '-' && !lark);
}

#define name_char(c) name_char_of(p->lark, (c))

static int peek(const parser *p)
{
    return p->i < p->n ? (unsigned char)p->s[p->i] : -1;
}

/* Spaces, newlines and # comments. */
static void skip_ws(parser *p)
{
    while (p->i < p->n) {
        const char c = p->s[p->i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
            p->i++;
        } else if (c == '#' || (p->lark && c == '/' && p->i + 1 < p->n && p->s[p->i + 1] == '/')) {
            while (p->i < p->n && p->s[p->i] != '\n')
                p->i++;
        } else {
            break;
        }
    }
}

/* Whether a rule definition (name ::=; Lark's [?!]name[.priority]: or a %directive) starts at p->i. */
static bool at_rule_start(parser *p)
{
    const size_t save = p->i;
    if (p->lark && p->i < p->n && p->s[p->i] == '%')
        return true;
    if (p->lark && p->i < p->n && (p->s[p->i] == '?' || p->s[p->i] == '!'))
        p->i++;
    const size_t at = p->i;
    while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
        p->i++;
    bool yes = p->i > at;
    if (p->lark && yes && p->i + 1 < p->n && p->s[p->i] == '.' && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
        p->i++;
        while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
            p->i++;
    }
    while (yes && p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
        p->i++;
    if (p->lark)
        yes = yes && p->i < p->n && p->s[p->i] == ':';
    else
        yes = yes && p->n - p->i >= 3 && !memcmp(p->s + p->i, "::=", 3);
    p->i = save;
    return yes;
}

static pb_status re_put(parser *p, const char *t)
{
    const size_t l = strlen(t);
    if (p->re_n + l + 1 > p->re_cap) {
        size_t c = p->re_cap ? p->re_cap : 64;
        while (c < p->re_n + l + 1)
            c *= 2;
        char *g = realloc(p->re, c);
        if (!g)
            return pb_error(PB_ERR_NOMEM, "out of memory for a grammar");
        p->re = g;
        p->re_cap = c;
    }
    memcpy(p->re + p->re_n, t, l + 1);
    p->re_n += l;
    return PB_OK;
}

static pb_status re_cp(parser *p, uint32_t cp)
{
    char e[16];
    snprintf(e, sizeof e, "\\U%08X", (unsigned)cp);
    return re_put(p, e);
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a literal or class at p->i (an escape or a UTF-8 character), a Unicode scalar value. */
static pb_status read_char(parser *p, uint32_t *cp)
{
    const size_t at = p->i;
    const unsigned char *u = (const unsigned char *)p->s;
    if (u[p->i] == '\\') {
        if (++p->i >= p->n)
            return perr(p, at, "a backslash ends the grammar");
        const int c = u[p->i++];
        int digits = 0;
        switch (c) {
        case 'n': *cp = '\n'; return PB_OK;
        case 'r': *cp = '\r'; return PB_OK;
        case 't': *cp = '\t'; return PB_OK;
        case '\\': case '"': case '\'': case '[': case ']': case '-': case '^': case '/':
            *cp = (uint32_t)c;
            return PB_OK;
        case 'x': digits = 2; break;
        case 'u': digits = 4; break;
        case 'U': digits = 8; break;
        default:
            if (c >= 0x20 && c < 0x7f)
                return perr(p, at, "unknown escape '\\%c'", c);
            return perr(p, at, "unknown escape");
        }
        uint32_t v = 0;
        for (int k = 0; k < digits; k++) {
            const int h = p->i < p->n ? hexval(u[p->i]) : -1;
            if (h < 0)
                return perr(p, at, "'\\%c' needs %d hex digits", c, digits);
            v = v * 16 + (uint32_t)h;
            p->i++;
        }
        if (v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
            return perr(p, at, "U+%04X is not a Unicode scalar value", (unsigned)v);
        *cp = v;
        return PB_OK;
    }
    const unsigned c = u[p->i];
    int more = c < 0x80 ? 0 : (c & 0xe0) == 0xc0 ? 1 : (c & 0xf0) == 0xe0 ? 2 : (c & 0xf8) == 0xf0 ? 3 : -1;
    uint32_t v = more == 0 ? c : more == 1 ? c & 0x1f : more == 2 ? c & 0x0f : c & 0x07;
    if (more < 0 || p->i + (size_t)more >= p->n)
        return perr(p, at, "invalid UTF-8");
    for (int k = 1; k <= more; k++) {
        if ((u[p->i + (size_t)k] & 0xc0) != 0x80)
            return perr(p, at, "invalid UTF-8");
        v = v << 6 | (u[p->i + (size_t)k] & 0x3f);
    }
    static const uint32_t least[4] = {0, 0x80, 0x800, 0x10000};
    if (v < least[more] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return perr(p, at, "invalid UTF-8");
    p->i += (size_t)more + 1;
    *cp = v;
    return PB_OK;
}

/* The terminal of regex p->re (one kept for the same regex, else a new one). */
static pb_status term_of_re(parser *p, int32_t *sym)
{
    const uint64_t h = pb_fnv1a(1469598103934665603ull, p->re, p->re_n);
    for (int t = 0; t < p->n_terms; t++)
        if (p->terms[t].hash == h && !strcmp(p->terms[t].re, p->re)) {
            *sym = SYM_TERM(t);
            return PB_OK;
        }
    PB_CHECK(grow(&p->terms, &p->cap_terms, p->n_terms + 1, sizeof *p->terms));
    if (!(p->terms[p->n_terms].re = pb_strdup(p->re)))
        return pb_error(PB_ERR_NOMEM, "out of memory for a grammar");
    p->terms[p->n_terms].hash = h;
    *sym = SYM_TERM(p->n_terms++);
    return PB_OK;
}

static pb_status parse_literal(parser *p, int32_t *sym)
{
    const char q = p->s[p->i];
    const size_t at = p->i++;
    p->re_n = 0;
    PB_CHECK(re_put(p, ""));
    while (p->i < p->n && p->s[p->i] != q) {
        uint32_t cp;
        PB_CHECK(read_char(p, &cp));
        PB_CHECK(re_cp(p, cp));
    }
    if (p->i >= p->n)
        return perr(p, at, "the string is not closed");
    p->i++;
    if (!p->re_n) {
        *sym = SYM_END; /* "": the empty string */
        return PB_OK;
    }
    return term_of_re(p, sym);
}

static pb_status parse_class(parser *p, int32_t *sym)
{
    const size_t at = p->i++;
    p->re_n = 0;
    PB_CHECK(re_put(p, "["));
    if (peek(p) == '^') {
        p->i++;
        PB_CHECK(re_put(p, "^"));
    }
    int items = 0;
    while (p->i < p->n && p->s[p->i] != ']') {
        uint32_t lo, hi;
        PB_CHECK(read_char(p, &lo));
        hi = lo;
        if (p->i + 1 < p->n && p->s[p->i] == '-' && p->s[p->i + 1] != ']') {
            const size_t r = p->i++;
            PB_CHECK(read_char(p, &hi));
            if (hi < lo)
                return perr(p, r, "the range's end U+%04X is before its start U+%04X", (unsigned)hi, (unsigned)lo);
        }
        PB_CHECK(re_cp(p, lo));
        if (hi != lo) {
            PB_CHECK(re_put(p, "-"));
            PB_CHECK(re_cp(p, hi));
        }
        items++;
    }
    if (p->i >= p->n)
        return perr(p, at, "the character class is not closed");
    p->i++;
    if (!items)
        return perr(p, at, "an empty character class");
    PB_CHECK(re_put(p, "]"));
    return term_of_re(p, sym);
}

static pb_status parse_alternates(parser *p, int r);

/* Lark's /regex/: the terminal of that regex (gen/regex.h's syntax, Python's common subset); flags are refused,
 * as is a regex that matches the empty string (Lark's terminals may not). */
static pb_status parse_regex(parser *p, int32_t *sym)
{
    const size_t at = p->i++;
    p->re_n = 0;
    PB_CHECK(re_put(p, ""));
    while (p->i < p->n && p->s[p->i] != '/' && p->s[p->i] != '\n') {
        char c[3] = {p->s[p->i], 0, 0};
        if (c[0] == '\\' && p->i + 1 < p->n && p->s[p->i + 1] != '\n') {
            p->i++;
            if (p->s[p->i] == '/') {
                c[0] = '/';
            } else {
                c[1] = p->s[p->i];
            }
        }
        if (!c[0]) /* a NUL byte in the pattern */
            return perr(p, p->i, "a NUL byte in the regex");
        p->i++;
        PB_CHECK(re_put(p, c));
    }
    if (p->i >= p->n || p->s[p->i] != '/')
        return perr(p, at, "the regex is not closed with '/' on its line");
    p->i++;
    if (p->i < p->n && p->s[p->i] && strchr("imslux", p->s[p->i]))
        return perr(p, p->i, "regex flags (/.../%c) are not done", p->s[p->i]);
    if (!p->re_n)
        return perr(p, at, "an empty regex");
    pb_dfa *d;
    const pb_status st = pb_dfa_compile(p->re, p->re_n, 0, &d);
    if (st == PB_ERR_NOMEM)
        return st;
    if (st != PB_OK)
        return perr(p, at, "the regex: %s", pb_last_error());
    const bool empty = pb_dfa_start(d) >= 0 && pb_dfa_accepts(d, pb_dfa_start(d));
    const bool none = pb_dfa_start(d) < 0;
    pb_dfa_free(d);
    if (empty && !p->internal)
        return perr(p, at, "the regex matches the empty string (a terminal must not)");
    if (none)
        return perr(p, at, "the regex matches no text");
    return term_of_re(p, sym);
}

/* Lark's "a".."z": a class of one range; *is false (and nothing read) where no range starts at p->i. */
static pb_status parse_range(parser *p, bool *is, int32_t *sym)
{
    const size_t save = p->i;
    uint32_t lo, hi;
    *is = false;
    p->i++;
    if (p->i >= p->n || p->s[p->i] == '"' || read_char(p, &lo) != PB_OK || peek(p) != '"' ||
        p->n - p->i < 4 || memcmp(p->s + p->i, "\"..\"", 4)) {
        p->i = save;
        return PB_OK;
    }
    p->i += 4;
    const size_t at = p->i;
    if (p->i >= p->n || p->s[p->i] == '"')
        return perr(p, at, "the range's end must be one character");
    PB_CHECK(read_char(p, &hi));
    if (peek(p) != '"')
        return perr(p, at, "the range's end must be one character");
    p->i++;
    if (hi < lo)
        return perr(p, at, "the range's end U+%04X is before its start U+%04X", (unsigned)hi, (unsigned)lo);
    *is = true;
    p->re_n = 0;
    PB_CHECK(re_put(p, "["));
    PB_CHECK(re_cp(p, lo));
    PB_CHECK(re_put(p, "-"));
    PB_CHECK(re_cp(p, hi));
    PB_CHECK(re_put(p, "]"));
    return term_of_re(p, sym);
}

/* r ::= sym r | "" (sym repeated any number of times). */
static pb_status make_star(parser *p, int32_t sym, size_t off, int *out)
{
    int r, a;
    PB_CHECK(rule_anon(p, off, &r));
    PB_CHECK(alt_new(p, r, &a));
    PB_CHECK(alt_push(p, &p->rules[r].alts[a], sym));
    PB_CHECK(alt_push(p, &p->rules[r].alts[a], r));
    PB_CHECK(alt_new(p, r, &a));
    *out = r;
    return PB_OK;
}

/* sym{m,n} (n < 0: no bound) as a rule: sym m times, then the rest optional. */
static pb_status make_count(parser *p, int32_t sym, int m, int n, size_t off, int32_t *out)
{
    int32_t tail = SYM_END;
    if (n < 0) {
        int r;
        PB_CHECK(make_star(p, sym, off, &r));
        tail = r;
    } else {
        for (int k = 0; k < n - m; k++) { /* o ::= sym tail | "" */
            int r, a;
            PB_CHECK(rule_anon(p, off, &r));
            PB_CHECK(alt_new(p, r, &a));
            PB_CHECK(alt_push(p, &p->rules[r].alts[a], sym));
            if (tail != SYM_END)
                PB_CHECK(alt_push(p, &p->rules[r].alts[a], tail));
            PB_CHECK(alt_new(p, r, &a));
            tail = r;
        }
    }
    if (m == 0) {
        *out = tail;
        return PB_OK;
    }
    int r, a;
    PB_CHECK(rule_anon(p, off, &r));
    PB_CHECK(alt_new(p, r, &a));
    for (int k = 0; k < m; k++)
        PB_CHECK(alt_push(p, &p->rules[r].alts[a], sym));
    if (tail != SYM_END)
        PB_CHECK(alt_push(p, &p->rules[r].alts[a], tail));
    *out = r;
    return PB_OK;
}

static pb_status parse_int(parser *p, int *v)
{
    *v = -1;
    const size_t at = p->i;
    while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9') {
        *v = (*v < 0 ? 0 : *v) * 10 + (p->s[p->i++] - '0');
        if (*v > MAX_COUNT)
            return perr(p, at, "a repetition count over %d", MAX_COUNT);
    }
    return PB_OK;
}

/* Quantifiers after an element: sym becomes the rule that repeats it. */
static pb_status parse_quant(parser *p, int32_t *sym)
{
    for (;;) {
        const size_t save = p->i;
        skip_ws(p);
        const int c = peek(p);
        const size_t at = p->i;
        if ((c != '*' && c != '+' && c != '?' && c != '{' && (c != '~' || !p->lark)) ||
            (p->lark && c == '?' && at_rule_start(p))) { /* Lark's ?rule: on the next line */
            p->i = save;
            return PB_OK;
        }
        p->i++;
        int m = 0, n = -1;
        if (c == '~') { /* Lark's x ~ n, x ~ n..m */
            skip_ws(p);
            PB_CHECK(parse_int(p, &m));
            if (m < 0)
                return perr(p, at, "'~' needs a count: x ~ n or x ~ n..m");
            n = m;
            if (p->n - p->i >= 2 && !memcmp(p->s + p->i, "..", 2)) {
                p->i += 2;
                PB_CHECK(parse_int(p, &n));
                if (n < 0)
                    return perr(p, at, "'~ n..' needs its upper count");
            }
            if (n < m)
                return perr(p, at, "the repetition ~ %d..%d has its bound below its minimum", m, n);
        } else if (c == '+') {
            m = 1;
        } else if (c == '?') {
            n = 1;
        } else if (c == '{') {
            skip_ws(p);
            PB_CHECK(parse_int(p, &m));
            skip_ws(p);
            if (peek(p) == ',') {
                p->i++;
                skip_ws(p);
                PB_CHECK(parse_int(p, &n));
                skip_ws(p);
                if (m < 0 && n < 0)
                    return perr(p, at, "a repetition {,} without counts");
            } else {
                if (m < 0)
                    return perr(p, at, "a repetition needs a count: {m}, {m,}, {m,n} or {,n}");
                n = m;
            }
            if (peek(p) != '}')
                return perr(p, at, "the repetition count is not closed with '}'");
            p->i++;
            m = m < 0 ? 0 : m;
            if (n >= 0 && n < m)
                return perr(p, at, "the repetition {%d,%d} has its bound below its minimum", m, n);
        }
        if (*sym == SYM_END || n == 0) {
            *sym = SYM_END;
            continue;
        }
        if (m == 1 && n == 1)
            continue;
        /* x**, (x+)?, (x?)+ ...: one repetition of x (nested ones are ambiguous: a parse's stacks would multiply) */
        const int kind = m == 0 && n < 0 ? 1 : m == 1 && n < 0 ? 2 : m == 0 && n == 1 ? 3 : 0;
        if (kind && *sym >= 0 && p->rules[*sym].rep_kind) {
            const int old = p->rules[*sym].rep_kind;
            const int32_t x = p->rules[*sym].rep_of;
            if (old == kind || old == 1)
                continue;
            PB_CHECK(make_count(p, x, 0, -1, at, sym));
            p->rules[*sym].rep_kind = 1;
            p->rules[*sym].rep_of = x;
            continue;
        }
        const int32_t x = *sym;
        PB_CHECK(make_count(p, x, m, n, at, sym));
        if (kind) {
            p->rules[*sym].rep_kind = kind;
            p->rules[*sym].rep_of = x;
        }
    }
}

static pb_status parse_element(parser *p, int32_t *sym)
{
    const int c = peek(p);
    const size_t at = p->i;
    if (p->lark && c == '"') {
        bool is;
        PB_CHECK(parse_range(p, &is, sym));
        if (is)
            return PB_OK;
        PB_CHECK(parse_literal(p, sym));
        if (peek(p) == 'i')
            return perr(p, p->i, "case-insensitive strings (\"...\"i) are not done");
        return PB_OK;
    }
    if (p->lark && c == '\'') /* not Lark's, but vLLM's conversion takes them */
        return parse_literal(p, sym);
    if (p->lark && c == '/')
        return parse_regex(p, sym);
    if (p->lark && c == '[') { /* Lark's [x]: x optional */
        p->i++;
        if (++p->depth > MAX_DEPTH)
            return perr(p, at, "groups nested more than %d deep", MAX_DEPTH);
        int r, a;
        PB_CHECK(rule_anon(p, at, &r));
        PB_CHECK(parse_alternates(p, r));
        if (peek(p) != ']')
            return p->i < p->n ? perr(p, p->i, "expected ']' to close the optional group")
                               : perr(p, at, "the optional group is not closed");
        p->i++;
        p->depth--;
        PB_CHECK(alt_new(p, r, &a));
        *sym = r;
        return PB_OK;
    }
    if (c == '"')
        return parse_literal(p, sym);
    if (c == '[')
        return parse_class(p, sym);
    if (c == '.' && !p->lark) {
        p->i++;
        p->re_n = 0;
        PB_CHECK(re_put(p, "(?:.|\\n)"));
        return term_of_re(p, sym);
    }
    if (c == '(') {
        p->i++;
        skip_ws(p);
        if (peek(p) == '=' || peek(p) == '!')
            return perr(p, at, "lookahead assertions (%c ...) are not supported", peek(p));
        if (++p->depth > MAX_DEPTH)
            return perr(p, at, "groups nested more than %d deep", MAX_DEPTH);
        int r;
        PB_CHECK(rule_anon(p, at, &r));
        PB_CHECK(parse_alternates(p, r));
        if (peek(p) != ')')
            return p->i < p->n ? perr(p, p->i, "expected ')' to close the group") : perr(p, at, "the group is not "
                                                                                         "closed");
        p->i++;
        p->depth--;
        const prule *ru = &p->rules[r];
        if (ru->n_alts == 1 && ru->alts[0].n <= 1)
            *sym = ru->alts[0].n ? ru->alts[0].sym[0] : SYM_END; /* (x) is x; the rule stays unused */
        else
            *sym = r;
        return PB_OK;
    }
    if (c >= 0 && name_char(c)) {
        while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
            p->i++;
        int r = rule_find(p, p->s + at, p->i - at);
        if (r < 0)
            PB_CHECK(rule_new(p, p->s + at, p->i - at, at, false, &r));
        *sym = r;
        return PB_OK;
    }
    if (c == '<')
        return perr(p, at, "token references <...> are not supported");
    if (c >= 0x20 && c < 0x7f)
        return perr(p, at, "unexpected '%c'", c);
    return perr(p, at, "unexpected character");
}

static pb_status parse_sequence(parser *p, int r)
{
    int a;
    PB_CHECK(alt_new(p, r, &a));
    for (;;) {
        skip_ws(p);
        const int c = peek(p);
        if (c < 0 || c == '|' || c == ')' || (p->lark && c == ']') ||
            ((name_char(c) || (p->lark && (c == '%' || c == '?' || c == '!'))) && at_rule_start(p)))
            return PB_OK;
        if (p->lark && c == '-' && p->i + 1 < p->n && p->s[p->i + 1] == '>') { /* -> alias: names a tree node */
            p->i += 2;
            skip_ws(p);
            const size_t at = p->i;
            while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
                p->i++;
            if (p->i == at)
                return perr(p, at, "expected a name after '->'");
            continue;
        }
        int32_t sym;
        PB_CHECK(parse_element(p, &sym));
        PB_CHECK(parse_quant(p, &sym));
        if (sym != SYM_END)
            PB_CHECK(alt_push(p, &p->rules[r].alts[a], sym));
    }
}

static pb_status parse_alternates(parser *p, int r)
{
    PB_CHECK(parse_sequence(p, r));
    for (;;) {
        skip_ws(p);
        if (peek(p) != '|')
            return PB_OK;
        p->i++;
        PB_CHECK(parse_sequence(p, r));
    }
}

static pb_status parse_grammar(parser *p)
{
    for (;;) {
        skip_ws(p);
        if (p->i >= p->n)
            return PB_OK;
        const size_t at = p->i;
        if (!name_char(peek(p)))
            return peek(p) >= 0x20 && peek(p) < 0x7f ? perr(p, at, "expected a rule name, not '%c'", peek(p))
                                                     : perr(p, at, "expected a rule name");
        while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
            p->i++;
        const size_t len = p->i - at;
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
            p->i++;
        if (p->i < p->n && p->s[p->i] == ':' && (p->n - p->i < 3 || memcmp(p->s + p->i, "::=", 3)))
            return perr(p, at, "expected '::=' after the rule name '%.*s' (a grammar with ::= is GBNF; Lark's "
                        "'name: ...' rules do not mix in)", (int)(len > 100 ? 100 : len), p->s + at);
        if (p->n - p->i < 3 || memcmp(p->s + p->i, "::=", 3))
            return perr(p, at, "expected '::=' after the rule name '%.*s'", (int)(len > 100 ? 100 : len), p->s + at);
        p->i += 3;
        int r = rule_find(p, p->s + at, len);
        if (r >= 0 && p->rules[r].defined)
            return perr(p, at, "rule '%.*s' is defined twice", (int)(len > 100 ? 100 : len), p->s + at);
        if (r < 0)
            PB_CHECK(rule_new(p, p->s + at, len, at, false, &r));
        p->rules[r].defined = true;
        p->rules[r].off = at;
        p->cur = r;
        p->anon_n = 0;
        PB_CHECK(parse_alternates(p, r));
        skip_ws(p);
        if (p->i < p->n && !at_rule_start(p))
            return peek(p) >= 0x20 && peek(p) < 0x7f ? perr(p, p->i, "unexpected '%c'", peek(p))
                                                     : perr(p, p->i, "unexpected character");
    }
}

/* Lark's common.lark terminals that %import common.NAME brings, as regexes. */
static const struct {
    const char *name, *re;
} COMMON[] = {
    {"DIGIT", "[0-9]"}, {"HEXDIGIT", "[a-fA-F0-9]"}, {"INT", "[0-9]+"}, {"SIGNED_INT", "[+-]?[0-9]+"},
    {"DECIMAL", "[0-9]+\\.[0-9]*|\\.[0-9]+"},
    {"FLOAT", "[0-9]+[eE][+-]?[0-9]+|([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?"},
    {"SIGNED_FLOAT", "[+-]?([0-9]+[eE][+-]?[0-9]+|([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?)"},
    {"NUMBER", "[0-9]+[eE][+-]?[0-9]+|([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+"},
    {"SIGNED_NUMBER", "[+-]?([0-9]+[eE][+-]?[0-9]+|([0-9]+\\.[0-9]*|\\.[0-9]+)([eE][+-]?[0-9]+)?|[0-9]+)"},
    {"ESCAPED_STRING", "\"([^\"\\\\\\n]|\\\\[^\\n])*\""},
    {"LCASE_LETTER", "[a-z]"}, {"UCASE_LETTER", "[A-Z]"}, {"LETTER", "[a-zA-Z]"}, {"WORD", "[a-zA-Z]+"},
    {"CNAME", "[_a-zA-Z][_a-zA-Z0-9]*"}, {"WS_INLINE", "[ \\t]+"}, {"WS", "[ \\t\\f\\r\\n]+"},
    {"CR", "\\r"}, {"LF", "\\n"}, {"NEWLINE", "(\\r?\\n)+"}, {"SH_COMMENT", "#[^\\n]*"},
    {"CPP_COMMENT", "//[^\\n]*"},
};

/* %import common.NAME [-> ALIAS] or %import common (A, B, ...): each a terminal of COMMON's regex. */
static pb_status lark_import(parser *p, size_t at)
{
    skip_ws(p);
    if (p->n - p->i < 6 || memcmp(p->s + p->i, "common", 6))
        return perr(p, p->i, "only Lark's common terminals can be imported (%%import common.NAME)");
    p->i += 6;
    const bool list = peek(p) != '.';
    if (list) {
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
            p->i++;
        if (peek(p) != '(')
            return perr(p, p->i, "expected '.NAME' or '(NAME, ...)' after %%import common");
    }
    p->i++;
    for (;;) {
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || (list && p->s[p->i] == '\n')))
            p->i++;
        const size_t nat = p->i;
        while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
            p->i++;
        size_t len = p->i - nat, dat = nat, dlen = len;
        int k = -1;
        for (size_t j = 0; j < sizeof COMMON / sizeof *COMMON && k < 0; j++)
            if (strlen(COMMON[j].name) == len && !memcmp(COMMON[j].name, p->s + nat, len))
                k = (int)j;
        if (k < 0)
            return perr(p, nat, "'%.*s' is not one of Lark's common terminals done here (DIGIT, HEXDIGIT, INT, "
                        "SIGNED_INT, DECIMAL, FLOAT, SIGNED_FLOAT, NUMBER, SIGNED_NUMBER, ESCAPED_STRING, LETTER, "
                        "WORD, CNAME, WS, WS_INLINE, NEWLINE, ...)", (int)(len > 60 ? 60 : len), p->s + nat);
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
            p->i++;
        if (!list && p->n - p->i >= 2 && !memcmp(p->s + p->i, "->", 2)) {
            p->i += 2;
            while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
                p->i++;
            dat = p->i;
            while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
                p->i++;
            dlen = p->i - dat;
            if (!dlen)
                return perr(p, dat, "expected a name after '->'");
        }
        int r = rule_find(p, p->s + dat, dlen);
        if (r >= 0 && p->rules[r].defined)
            return perr(p, dat, "'%.*s' is defined twice", (int)(dlen > 60 ? 60 : dlen), p->s + dat);
        if (r < 0)
            PB_CHECK(rule_new(p, p->s + dat, dlen, dat, false, &r));
        p->rules[r].defined = true;
        p->rules[r].term = true;
        p->rules[r].off = at;
        p->re_n = 0;
        PB_CHECK(re_put(p, COMMON[k].re));
        int32_t sym;
        int a;
        PB_CHECK(term_of_re(p, &sym));
        PB_CHECK(alt_new(p, r, &a));
        PB_CHECK(alt_push(p, &p->rules[r].alts[a], sym));
        if (!list)
            return PB_OK;
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n'))
            p->i++;
        if (peek(p) == ')') {
            p->i++;
            return PB_OK;
        }
        if (peek(p) != ',')
            return perr(p, p->i, "expected ',' or ')' in %%import common (...)");
        p->i++;
    }
}

/* A Lark grammar: definitions [?!]name[.priority]: expansions (a terminal when the name is UPPERCASE), and the
 * directives %import common and %ignore. */
static pb_status parse_lark(parser *p)
{
    for (;;) {
        skip_ws(p);
        if (p->i >= p->n)
            return PB_OK;
        const size_t at = p->i;
        if (peek(p) == '%') {
            p->i++;
            const size_t w = p->i;
            while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
                p->i++;
            const size_t wl = p->i - w;
            if (wl == 6 && !memcmp(p->s + w, "import", 6)) {
                PB_CHECK(lark_import(p, at));
            } else if (wl == 6 && !memcmp(p->s + w, "ignore", 6)) {
                if (p->ign < 0) {
                    p->cur = p->n_rules ? p->n_rules - 1 : 0;
                    PB_CHECK(rule_new(p, "%ignore", 7, at, true, &p->ign));
                    p->rules[p->ign].term = true;
                    p->rules[p->ign].defined = true;
                }
                const int save = p->cur;
                p->cur = p->ign;
                PB_CHECK(parse_alternates(p, p->ign));
                p->cur = save;
            } else {
                return perr(p, at, "the directive %%%.*s is not done (%%import common and %%ignore are)",
                            (int)(wl > 20 ? 20 : wl), p->s + w);
            }
            continue;
        }
        if (peek(p) == '?' || peek(p) == '!')
            p->i++;
        const size_t nat = p->i;
        while (p->i < p->n && name_char((unsigned char)p->s[p->i]))
            p->i++;
        const size_t len = p->i - nat;
        if (!len)
            return peek(p) >= 0x20 && peek(p) < 0x7f ? perr(p, at, "expected a rule name, not '%c'", peek(p))
                                                     : perr(p, at, "expected a rule name");
        if (p->i + 1 < p->n && p->s[p->i] == '.' && p->s[p->i + 1] >= '0' && p->s[p->i + 1] <= '9') {
            p->i++; /* a priority: the language is the same */
            while (p->i < p->n && p->s[p->i] >= '0' && p->s[p->i] <= '9')
                p->i++;
        }
        while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t'))
            p->i++;
        if (peek(p) == '{')
            return perr(p, p->i, "rule templates (name{params}) are not done");
        if (peek(p) != ':')
            return perr(p, nat, "expected ':' after the rule name '%.*s'", (int)(len > 100 ? 100 : len), p->s + nat);
        p->i++;
        int r = rule_find(p, p->s + nat, len);
        if (r >= 0 && p->rules[r].defined)
            return perr(p, nat, "rule '%.*s' is defined twice", (int)(len > 100 ? 100 : len), p->s + nat);
        if (r < 0)
            PB_CHECK(rule_new(p, p->s + nat, len, nat, false, &r));
        p->rules[r].defined = true;
        p->rules[r].off = nat;
        if (p->first < 0)
            p->first = r;
        p->cur = r;
        p->anon_n = 0;
        PB_CHECK(parse_alternates(p, r));
        skip_ws(p);
        if (p->i < p->n && !at_rule_start(p))
            return peek(p) >= 0x20 && peek(p) < 0x7f ? perr(p, p->i, "unexpected '%c'", peek(p))
                                                     : perr(p, p->i, "unexpected character");
    }
}

/* %ignore: what it names may come before each lexeme of a rule (a string, a regex or an UPPERCASE terminal, not
 * within terminals) and at the end: ign* put before each, and the start rule followed by it. *root: that rule. */
static pb_status lark_ignore(parser *p, int start, int *root)
{
    *root = start;
    if (p->ign < 0)
        return PB_OK;
    int star, a;
    p->cur = p->ign;
    PB_CHECK(make_star(p, p->ign, p->rules[p->ign].off, &star));
    p->rules[star].term = true; /* nothing put within it */
    const int n = p->n_rules;
    for (int r = 0; r < n; r++) {
        if (p->rules[r].term)
            continue;
        for (int k = 0; k < p->rules[r].n_alts; k++) {
            alt old = p->rules[r].alts[k], now = {0};
            for (int j = 0; j < old.n; j++) {
                const int32_t sy = old.sym[j];
                if (sy <= -2 || (sy >= 0 && p->rules[sy].term))
                    PB_CHECK(alt_push(p, &now, star));
                PB_CHECK(alt_push(p, &now, sy));
            }
            free(old.sym);
            p->rules[r].alts[k] = now;
        }
    }
    p->cur = start;
    PB_CHECK(rule_anon(p, p->rules[start].off, root));
    PB_CHECK(alt_new(p, *root, &a));
    PB_CHECK(alt_push(p, &p->rules[*root].alts[a], start));
    PB_CHECK(alt_push(p, &p->rules[*root].alts[a], star));
    return PB_OK;
}

/* Whether text is Lark's (vLLM's test: no line, comments cut, holds ::=). */
static bool is_lark(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t e = i;
        while (e < n && s[e] != '\n')
            e++;
        for (size_t k = i; k < e; k++) {
            if (s[k] == '#' || (s[k] == '/' && k + 1 < e && s[k + 1] == '/'))
                break;
            if (k + 2 < e && s[k] == ':' && s[k + 1] == ':' && s[k + 2] == '=')
                return false;
        }
        i = e + 1;
    }
    return true;
}

/* Direct left recursion (a ::= a x | y) rewritten to the right: a ::= y a', a' ::= x a' | "". */
static pb_status rewrite_left(parser *p)
{
    const int n = p->n_rules;
    for (int r = 0; r < n; r++) {
        int rec = 0;
        for (int k = 0; k < p->rules[r].n_alts; k++)
            rec += p->rules[r].alts[k].n > 0 && p->rules[r].alts[k].sym[0] == r;
        if (!rec)
            continue;
        if (rec == p->rules[r].n_alts)
            return perr(p, p->rules[r].off, "rule '%s' never ends: each of its alternatives begins with itself",
                        p->rules[r].name);
        int t, a;
        p->cur = r;
        PB_CHECK(rule_anon(p, p->rules[r].off, &t));
        prule *ru = &p->rules[r];
        int keep = 0;
        for (int k = 0; k < ru->n_alts; k++) {
            alt *x = &ru->alts[k];
            if (x->n > 0 && x->sym[0] == r) {
                if (x->n > 1) { /* a' ::= x a' */
                    PB_CHECK(alt_new(p, t, &a));
                    ru = &p->rules[r];
                    x = &ru->alts[k];
                    for (int j = 1; j < x->n; j++)
                        PB_CHECK(alt_push(p, &p->rules[t].alts[a], x->sym[j]));
                    PB_CHECK(alt_push(p, &p->rules[t].alts[a], t));
                }
                free(x->sym);
            } else {
                PB_CHECK(alt_push(p, x, t));
                ru->alts[keep++] = *x;
            }
        }
        ru->n_alts = keep;
        PB_CHECK(alt_new(p, t, &a));
    }
    return PB_OK;
}

/* Refuses the left recursion left after rewrite_left where a parse would grow its stack forever without reading
 * a byte: rule r may begin with rule s (after symbols that can be empty) with more to follow s in that alternative,
 * and s may begin with r. (Where nothing follows, as in x* of an x that can be empty, the parse meets the same
 * frame again and stops there.) Strongly connected components of "may begin with" (Tarjan's, iteratively). */
static pb_status check_left(parser *p)
{
    const int n = p->n_rules;
    bool *nul = NULL;
    int *eoff = NULL, *eto = NULL, *idx = NULL, *low = NULL, *comp = NULL, *stk = NULL, *call = NULL, *it = NULL;
    bool *grows = NULL, *on = NULL;
    pb_status st = PB_OK;
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *nul, &nul), st, out);
    for (bool changed = true; changed;) {
        changed = false;
        for (int r = 0; r < n; r++)
            for (int k = 0; k < p->rules[r].n_alts && !nul[r]; k++) {
                const alt *x = &p->rules[r].alts[k];
                bool all = true;
                for (int j = 0; j < x->n && all; j++)
                    all = x->sym[j] >= 0 && nul[x->sym[j]];
                if (all)
                    changed = nul[r] = true;
            }
    }
    /* the edges r -> s, two passes: count, then fill */
    PB_CHECK_GOTO(pb_calloc((size_t)n + 1, sizeof *eoff, &eoff), st, out);
    for (int pass = 0; pass < 2; pass++) {
        int e = 0;
        for (int r = 0; r < n; r++) {
            eoff[r] = e;
            for (int k = 0; k < p->rules[r].n_alts; k++) {
                const alt *x = &p->rules[r].alts[k];
                for (int j = 0; j < x->n; j++) {
                    const int32_t sy = x->sym[j];
                    if (sy < 0)
                        break;
                    if (pass) {
                        eto[e] = sy;
                        grows[e] = j < x->n - 1;
                    }
                    e++;
                    if (!nul[sy])
                        break;
                }
            }
        }
        eoff[n] = e;
        if (!pass) {
            PB_CHECK_GOTO(pb_calloc(e ? (size_t)e : 1, sizeof *eto, &eto), st, out);
            PB_CHECK_GOTO(pb_calloc(e ? (size_t)e : 1, sizeof *grows, &grows), st, out);
        }
    }
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *idx, &idx), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *low, &low), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *comp, &comp), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *stk, &stk), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *call, &call), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *it, &it), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *on, &on), st, out);
    int counter = 0, ns = 0, nc = 0;
    for (int r0 = 0; r0 < n; r0++) {
        if (idx[r0])
            continue;
        int top = 0;
        call[top++] = r0;
        idx[r0] = low[r0] = ++counter;
        it[r0] = eoff[r0];
        stk[ns++] = r0;
        on[r0] = true;
        while (top) {
            const int r = call[top - 1];
            if (it[r] < eoff[r + 1]) {
                const int t = eto[it[r]++];
                if (!idx[t]) {
                    idx[t] = low[t] = ++counter;
                    it[t] = eoff[t];
                    stk[ns++] = t;
                    on[t] = true;
                    call[top++] = t;
                } else if (on[t] && idx[t] < low[r]) {
                    low[r] = idx[t];
                }
                continue;
            }
            if (low[r] == idx[r]) {
                int t;
                do {
                    t = stk[--ns];
                    on[t] = false;
                    comp[t] = nc;
                } while (t != r);
                nc++;
            }
            top--;
            if (top && low[r] < low[call[top - 1]])
                low[call[top - 1]] = low[r];
        }
    }
    for (int r = 0; r < n; r++)
        for (int e = eoff[r]; e < eoff[r + 1]; e++)
            if (grows[e] && comp[eto[e]] == comp[r]) {
                const char *a = p->rules[r].name, *b = p->rules[eto[e]].name;
                if (eto[e] == r)
                    st = perr(p, p->rules[r].off, "rule '%s' is left-recursive after symbols that can be empty; only "
                              "a rule that begins with itself is rewritten", a);
                else
                    st = perr(p, p->rules[r].off, "rules '%s' and '%s' are left-recursive through each other; only a "
                              "rule that begins with itself is rewritten", a, b);
                goto out;
            }
out:
    free(nul);
    free(eoff);
    free(eto);
    free(grows);
    free(idx);
    free(low);
    free(comp);
    free(stk);
    free(call);
    free(it);
    free(on);
    return st;
}

/* ---- the compiled grammar and its parse ---- */

typedef struct gnode {
    int32_t pos, q, par;
} gnode;

typedef struct gstate {
    int64_t off; /* its top frames at pool[off .. off + len) */
    int32_t len;
    bool acc;
} gstate;

struct pb_cfg {
    int32_t *items; /* [n_items]: items[0..1] = root, END; then each rule's alternatives, each ended by END */
    int n_items;
    int32_t *alt_off, *alt_n; /* [n_rules]: the rule's alternatives at alt_pos[alt_off .. + alt_n) */
    int32_t *alt_pos;
    int n_rules;
    pb_dfa **dfa; /* [n_terms] */
    int n_terms;
    int32_t start;
    /* stack frames (pos, q, parent): a top frame is at a terminal, q its DFA state; a frame below is the item to
     * go on at once the one above is done (q = -1); parent -1 below the bottom */
    gnode *nodes;
    int n_nodes, cap_nodes;
    int32_t *nhash;
    size_t nhash_cap;
    /* states: sorted top frames pool[off .. + len), whether the bytes so far are a whole match */
    gstate *states;
    int n_states, cap_states;
    int32_t *pool;
    int64_t pool_n, pool_cap;
    int32_t *shash;
    size_t shash_cap;
    /* (state, byte) -> state */
    uint64_t *tkey;
    int32_t *tval;
    size_t tcap, tn;
    /* a move's work: tops made, (pos, parent) pairs to expand, those already expanded (by generation) */
    int32_t *tops;
    int n_tops, cap_tops;
    int32_t *work;
    int n_work, cap_work;
    uint64_t *vkey;
    uint32_t *vgen;
    size_t vcap, vn;
    uint32_t gen;
    bool acc;
};

static uint64_t mix(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static uint64_t node_hash(int32_t pos, int32_t q, int32_t par)
{
    return mix(((uint64_t)(uint32_t)pos << 32 | (uint32_t)q) ^ mix((uint64_t)(uint32_t)par + 0x9e3779b97f4a7c15ull));
}

static uint64_t node_key(const pb_cfg *g, int32_t k)
{
    return node_hash(g->nodes[k].pos, g->nodes[k].q, g->nodes[k].par);
}

/* An index of entries 0 .. n-1 by key(entry), open addressing, twice as large (-1: empty). */
static pb_status index_regrow(const pb_cfg *g, int32_t n, uint64_t (*key)(const pb_cfg *, int32_t), int32_t **table,
                              size_t *cap)
{
    const size_t c = *cap ? 2 * *cap : 1024;
    int32_t *h;
    PB_CHECK(pb_malloc(c * sizeof *h, &h));
    memset(h, 0xff, c * sizeof *h);
    for (int32_t k = 0; k < n; k++) {
        size_t i = key(g, k) & (c - 1);
        while (h[i] >= 0)
            i = (i + 1) & (c - 1);
        h[i] = k;
    }
    free(*table);
    *table = h;
    *cap = c;
    return PB_OK;
}

static pb_status node_get(pb_cfg *g, int32_t pos, int32_t q, int32_t par, int32_t *out)
{
    if ((size_t)g->n_nodes * 2 >= g->nhash_cap)
        PB_CHECK(index_regrow(g, g->n_nodes, node_key, &g->nhash, &g->nhash_cap));
    size_t i = node_hash(pos, q, par) & (g->nhash_cap - 1);
    for (; g->nhash[i] >= 0; i = (i + 1) & (g->nhash_cap - 1)) {
        const int32_t k = g->nhash[i];
        if (g->nodes[k].pos == pos && g->nodes[k].q == q && g->nodes[k].par == par) {
            *out = k;
            return PB_OK;
        }
    }
    if (g->n_nodes >= MAX_NODES)
        return pb_error(PB_ERR_INPUT, "the grammar's parse needs more than %d stack frames (nested too deep?)",
                        MAX_NODES);
    PB_CHECK(grow(&g->nodes, &g->cap_nodes, g->n_nodes + 1, sizeof *g->nodes));
    const int32_t k = g->n_nodes++;
    g->nodes[k] = (gnode){pos, q, par};
    g->nhash[i] = k;
    *out = k;
    return PB_OK;
}

static pb_status work_push(pb_cfg *g, int32_t pos, int32_t par)
{
    PB_CHECK(grow(&g->work, &g->cap_work, g->n_work + 2, sizeof *g->work));
    g->work[g->n_work++] = pos;
    g->work[g->n_work++] = par;
    return PB_OK;
}

/* Whether (pos, par) was expanded in this move; marks it. */
static pb_status visit(pb_cfg *g, int32_t pos, int32_t par, bool *seen)
{
    if (g->vn * 2 >= g->vcap) { /* regrow, keeping this generation's */
        const size_t cap = g->vcap ? 2 * g->vcap : 256;
        uint64_t *k;
        uint32_t *gen;
        PB_CHECK(pb_malloc(cap * sizeof *k, &k));
        if (pb_calloc(cap, sizeof *gen, &gen) != PB_OK) {
            free(k);
            return PB_ERR_NOMEM;
        }
        for (size_t i = 0; i < g->vcap; i++)
            if (g->vgen[i] == g->gen) {
                size_t j = mix(g->vkey[i]) & (cap - 1);
                while (gen[j] == g->gen)
                    j = (j + 1) & (cap - 1);
                k[j] = g->vkey[i];
                gen[j] = g->gen;
            }
        free(g->vkey);
        free(g->vgen);
        g->vkey = k;
        g->vgen = gen;
        g->vcap = cap;
    }
    const uint64_t key = (uint64_t)(uint32_t)pos << 32 | (uint32_t)par;
    size_t i = mix(key) & (g->vcap - 1);
    for (; g->vgen[i] == g->gen; i = (i + 1) & (g->vcap - 1))
        if (g->vkey[i] == key) {
            *seen = true;
            return PB_OK;
        }
    if (g->vn >= MAX_WORK)
        return pb_error(PB_ERR_INPUT, "the grammar's parse expands more than %d rule positions for one byte (too "
                        "ambiguous)", MAX_WORK);
    g->vkey[i] = key;
    g->vgen[i] = g->gen;
    g->vn++;
    *seen = false;
    return PB_OK;
}

static void move_begin(pb_cfg *g)
{
    g->n_tops = g->n_work = 0;
    g->acc = false;
    g->vn = 0;
    if (++g->gen == 0) { /* generations wrapped: forget every mark */
        if (g->vgen)
            memset(g->vgen, 0, g->vcap * sizeof *g->vgen);
        g->gen = 1;
    }
}

static pb_status top_add(pb_cfg *g, int32_t pos, int32_t q, int32_t par)
{
    int32_t k;
    PB_CHECK(node_get(g, pos, q, par, &k));
    if (g->n_tops >= MAX_TOPS)
        return pb_error(PB_ERR_INPUT, "the grammar's parse needs more than %d stacks at once (too ambiguous)",
                        MAX_TOPS);
    PB_CHECK(grow(&g->tops, &g->cap_tops, g->n_tops + 1, sizeof *g->tops));
    g->tops[g->n_tops++] = k;
    return PB_OK;
}

/* Expands the work: at a terminal a top frame; at a rule each alternative, over a frame to come back to (none
 * when the rule is the last of its alternative); at an alternative's end back to the frame below. */
static pb_status run_work(pb_cfg *g)
{
    while (g->n_work) {
        const int32_t par = g->work[--g->n_work], pos = g->work[--g->n_work];
        bool seen;
        PB_CHECK(visit(g, pos, par, &seen));
        if (seen)
            continue;
        const int32_t it = g->items[pos];
        if (it == SYM_END) {
            if (par < 0)
                g->acc = true;
            else
                PB_CHECK(work_push(g, g->nodes[par].pos, g->nodes[par].par));
        } else if (it <= -2) {
            const pb_dfa *d = g->dfa[TERM_OF(it)];
            PB_CHECK(top_add(g, pos, pb_dfa_start(d), par));
            if (pb_dfa_accepts(d, pb_dfa_start(d))) /* an internal grammar's terminal that may be empty */
                PB_CHECK(work_push(g, pos + 1, par));
        } else {
            int32_t np = par;
            if (g->items[pos + 1] != SYM_END)
                PB_CHECK(node_get(g, pos + 1, -1, par, &np));
            for (int k = 0; k < g->alt_n[it]; k++)
                PB_CHECK(work_push(g, g->alt_pos[g->alt_off[it] + k], np));
        }
    }
    return PB_OK;
}

static int cmp_i32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static uint64_t state_hash(const int32_t *t, int n, bool acc)
{
    return pb_fnv1a(acc ? 7 : 3, t, (size_t)n * sizeof *t);
}

static uint64_t state_key(const pb_cfg *g, int32_t s)
{
    return state_hash(g->pool + g->states[s].off, g->states[s].len, g->states[s].acc);
}

/* The state of the move's tops (sorted, unique) and acc; -1 when neither. */
static pb_status move_end(pb_cfg *g, int32_t *out)
{
    qsort(g->tops, (size_t)g->n_tops, sizeof *g->tops, cmp_i32);
    int n = 0;
    for (int k = 0; k < g->n_tops; k++)
        if (!n || g->tops[n - 1] != g->tops[k])
            g->tops[n++] = g->tops[k];
    if (!n && !g->acc) {
        *out = -1;
        return PB_OK;
    }
    if ((size_t)g->n_states * 2 >= g->shash_cap)
        PB_CHECK(index_regrow(g, g->n_states, state_key, &g->shash, &g->shash_cap));
    const uint64_t h = state_hash(g->tops, n, g->acc);
    size_t i = h & (g->shash_cap - 1);
    for (; g->shash[i] >= 0; i = (i + 1) & (g->shash_cap - 1)) {
        const int32_t s = g->shash[i];
        if (g->states[s].len == n && g->states[s].acc == g->acc && !memcmp(g->pool + g->states[s].off, g->tops, (size_t)n * 4)) {
            *out = s;
            return PB_OK;
        }
    }
    if (g->n_states >= MAX_STATES)
        return pb_error(PB_ERR_INPUT, "the grammar's parse needs more than %d states", MAX_STATES);
    if (g->pool_n + n > g->pool_cap) {
        int64_t cap = g->pool_cap ? g->pool_cap : 1024;
        while (cap < g->pool_n + n)
            cap *= 2;
        PB_CHECK(pb_realloc_array(&g->pool, (size_t)cap, sizeof *g->pool));
        g->pool_cap = cap;
    }
    PB_CHECK(grow(&g->states, &g->cap_states, g->n_states + 1, sizeof *g->states));
    const int32_t s = g->n_states++;
    memcpy(g->pool + g->pool_n, g->tops, (size_t)n * sizeof *g->tops);
    g->states[s] = (gstate){g->pool_n, n, g->acc};
    g->pool_n += n;
    g->shash[i] = s;
    *out = s;
    return PB_OK;
}

void pb_cfg_free(pb_cfg *g)
{
    if (!g)
        return;
    for (int t = 0; t < g->n_terms; t++)
        pb_dfa_free(g->dfa[t]);
    free(g->dfa);
    free(g->items);
    free(g->alt_off);
    free(g->alt_n);
    free(g->alt_pos);
    free(g->nodes);
    free(g->nhash);
    free(g->states);
    free(g->pool);
    free(g->shash);
    free(g->tkey);
    free(g->tval);
    free(g->tops);
    free(g->work);
    free(g->vkey);
    free(g->vgen);
    free(g);
}

static void parser_free(parser *p)
{
    for (int r = 0; r < p->n_rules; r++) {
        for (int k = 0; k < p->rules[r].n_alts; k++)
            free(p->rules[r].alts[k].sym);
        free(p->rules[r].alts);
        free(p->rules[r].name);
    }
    free(p->rules);
    for (int t = 0; t < p->n_terms; t++)
        free(p->terms[t].re);
    free(p->terms);
    free(p->re);
}

/* The rules as items; terminals as DFAs. */
static pb_status build(parser *p, int root, pb_cfg *g)
{
    size_t n_items = 2, n_alts = 0;
    for (int r = 0; r < p->n_rules; r++)
        for (int k = 0; k < p->rules[r].n_alts; k++) {
            n_items += (size_t)p->rules[r].alts[k].n + 1;
            n_alts++;
        }
    if (n_items > MAX_ITEMS)
        return pb_error(PB_ERR_INPUT, "the grammar is too large (more than %d symbols once rewritten)", MAX_ITEMS);
    g->n_rules = p->n_rules;
    PB_CHECK(pb_malloc(n_items * sizeof *g->items, &g->items));
    PB_CHECK(pb_calloc((size_t)p->n_rules, sizeof *g->alt_off, &g->alt_off));
    PB_CHECK(pb_calloc((size_t)p->n_rules, sizeof *g->alt_n, &g->alt_n));
    PB_CHECK(pb_calloc(n_alts ? n_alts : 1, sizeof *g->alt_pos, &g->alt_pos));
    int32_t ni = 0, na = 0;
    g->items[ni++] = root;
    g->items[ni++] = SYM_END;
    for (int r = 0; r < p->n_rules; r++) {
        g->alt_off[r] = na;
        g->alt_n[r] = p->rules[r].n_alts;
        for (int k = 0; k < p->rules[r].n_alts; k++) {
            g->alt_pos[na++] = ni;
            for (int j = 0; j < p->rules[r].alts[k].n; j++)
                g->items[ni++] = p->rules[r].alts[k].sym[j];
            g->items[ni++] = SYM_END;
        }
    }
    g->n_items = ni;
    PB_CHECK(pb_calloc(p->n_terms ? (size_t)p->n_terms : 1, sizeof *g->dfa, &g->dfa));
    for (int t = 0; t < p->n_terms; t++) {
        pb_status st = pb_dfa_compile(p->terms[t].re, strlen(p->terms[t].re), 0, &g->dfa[t]);
        if (st == PB_ERR_NOMEM)
            return st;
        if (st != PB_OK)
            return pb_error(PB_ERR_INTERNAL, "grammar: terminal /%.200s/: %s", p->terms[t].re, pb_last_error());
        g->n_terms = t + 1;
        /* a terminal reads at least a byte (but an internal grammar's) */
        if (pb_dfa_start(g->dfa[t]) < 0 || (!p->internal && pb_dfa_accepts(g->dfa[t], pb_dfa_start(g->dfa[t]))))
            return pb_error(PB_ERR_INTERNAL, "grammar: terminal /%.200s/ reads no byte", p->terms[t].re);
    }
    return PB_OK;
}

static pb_status compile(const char *text, size_t len, bool internal, pb_cfg **out)
{
    *out = NULL;
    parser p = {.s = text, .n = len, .lark = is_lark(text, len), .first = -1, .ign = -1, .internal = internal};
    pb_cfg *g = NULL;
    pb_status st;
    PB_CHECK_GOTO(p.lark ? parse_lark(&p) : parse_grammar(&p), st, fail);
    for (int r = 0; r < p.n_rules; r++)
        if (!p.rules[r].defined && !p.rules[r].anon) {
            st = perr(&p, p.rules[r].off, "rule '%s' is not defined", p.rules[r].name);
            goto fail;
        }
    int root = p.lark ? rule_find(&p, "start", 5) : rule_find(&p, "root", 4);
    if (p.lark && root < 0)
        root = p.first;
    if (root < 0) {
        st = pb_error(PB_ERR_INPUT, p.lark ? "the grammar defines no rule" : "the grammar has no rule 'root' (the "
                      "whole completion)");
        goto fail;
    }
    if (p.lark)
        PB_CHECK_GOTO(lark_ignore(&p, root, &root), st, fail);
    PB_CHECK_GOTO(rewrite_left(&p), st, fail);
    PB_CHECK_GOTO(check_left(&p), st, fail);
    PB_CHECK_GOTO(pb_calloc(1, sizeof *g, &g), st, fail);
    PB_CHECK_GOTO(build(&p, root, g), st, fail);
    PB_CHECK_GOTO(grow(&g->tops, &g->cap_tops, 16, sizeof *g->tops), st, fail);
    PB_CHECK_GOTO(pb_malloc(1024 * sizeof *g->pool, &g->pool), st, fail);
    g->pool_cap = 1024;
    move_begin(g);
    PB_CHECK_GOTO(work_push(g, 0, -1), st, fail);
    PB_CHECK_GOTO(run_work(g), st, fail);
    PB_CHECK_GOTO(move_end(g, &g->start), st, fail);
    parser_free(&p);
    *out = g;
    return PB_OK;
fail:
    parser_free(&p);
    pb_cfg_free(g);
    return st;
}

pb_status pb_cfg_compile(const char *text, size_t len, pb_cfg **out)
{
    return compile(text, len, false, out);
}

/* Appends regex r to b as a Lark /regex/ terminal's text: each bare '/' escaped, escapes kept whole. */
static pb_status put_slashed(parser *b, const char *r, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char c[5] = {r[i], 0, 0, 0, 0};
        if (r[i] == '\\' && i + 1 < n)
            c[1] = r[++i];
        else if (r[i] == '/')
            c[0] = '\\', c[1] = '/';
        else if (r[i] == '\n')
            c[0] = '\\', c[1] = 'n';
        else if (!r[i])
            memcpy(c, "\\x00", 4);
        PB_CHECK(re_put(b, c));
    }
    return PB_OK;
}

pb_status pb_cfg_json_object(const char *string_re, const char *number_re, const char *ws, size_t ws_len,
                             pb_cfg **out)
{
    *out = NULL;
    parser b = {0}; /* only its text buffer */
    pb_status st = re_put(&b, "start: object\n"
                              "value: object | array | STRING | NUMBER | \"true\" | \"false\" | \"null\"\n"
                              "object: \"{\" w (STRING w \":\" w value (w \",\" w STRING w \":\" w value)* w)? \"}\"\n"
                              "array: \"[\" w (value (w \",\" w value)* w)? \"]\"\n"
                              "STRING: /");
    if (st == PB_OK) st = put_slashed(&b, string_re, strlen(string_re));
    if (st == PB_OK) st = re_put(&b, "/\nNUMBER: /");
    if (st == PB_OK) st = put_slashed(&b, number_re, strlen(number_re));
    if (st == PB_OK) st = re_put(&b, ws_len ? "/\nw: /(?:" : "/\nw:\n");
    if (st == PB_OK && ws_len) st = put_slashed(&b, ws, ws_len);
    if (st == PB_OK && ws_len) st = re_put(&b, ")/\n");
    if (st == PB_OK) {
        st = compile(b.re, b.re_n, true, out);
        if (st == PB_ERR_INPUT)
            st = pb_error(PB_ERR_INPUT, "the whitespace pattern: %s", pb_last_error());
    }
    free(b.re);
    return st;
}

int32_t pb_cfg_start(const pb_cfg *g)
{
    return g->start;
}

bool pb_cfg_accepts(const pb_cfg *g, int32_t s)
{
    return s >= 0 && s < g->n_states && g->states[s].acc;
}

int32_t pb_cfg_n_states(const pb_cfg *g)
{
    return g->n_states;
}

size_t pb_cfg_bytes(const pb_cfg *g)
{
    size_t b = sizeof *g + (size_t)g->n_items * 4 + (size_t)g->n_rules * 8;
    for (int t = 0; t < g->n_terms; t++)
        b += pb_dfa_bytes(g->dfa[t]);
    b += (size_t)g->cap_nodes * sizeof *g->nodes + g->nhash_cap * 4 + (size_t)g->cap_states * sizeof *g->states +
         (size_t)g->pool_cap * 4 +
         g->shash_cap * 4 + g->tcap * 12 + (size_t)g->cap_tops * 4 + (size_t)g->cap_work * 4 + g->vcap * 12;
    return b;
}

static pb_status trans_rehash(pb_cfg *g)
{
    const size_t cap = g->tcap ? 2 * g->tcap : 1024;
    uint64_t *k;
    int32_t *v;
    PB_CHECK(pb_malloc(cap * sizeof *k, &k));
    if (pb_malloc(cap * sizeof *v, &v) != PB_OK) {
        free(k);
        return PB_ERR_NOMEM;
    }
    memset(k, 0xff, cap * sizeof *k);
    for (size_t i = 0; i < g->tcap; i++)
        if (g->tkey[i] != UINT64_MAX) {
            size_t j = mix(g->tkey[i]) & (cap - 1);
            while (k[j] != UINT64_MAX)
                j = (j + 1) & (cap - 1);
            k[j] = g->tkey[i];
            v[j] = g->tval[i];
        }
    free(g->tkey);
    free(g->tval);
    g->tkey = k;
    g->tval = v;
    g->tcap = cap;
    return PB_OK;
}

pb_status pb_cfg_next(pb_cfg *g, int32_t s, uint8_t b, int32_t *next)
{
    *next = -1;
    if (s < 0 || s >= g->n_states)
        return PB_OK;
    if (g->tn * 2 >= g->tcap)
        PB_CHECK(trans_rehash(g));
    const uint64_t key = (uint64_t)(uint32_t)s << 8 | b;
    size_t i = mix(key) & (g->tcap - 1);
    for (; g->tkey[i] != UINT64_MAX; i = (i + 1) & (g->tcap - 1))
        if (g->tkey[i] == key) {
            *next = g->tval[i];
            return PB_OK;
        }
    move_begin(g);
    for (int32_t k = 0; k < g->states[s].len; k++) {
        const int32_t nd = g->pool[g->states[s].off + k];
        const int32_t pos = g->nodes[nd].pos, par = g->nodes[nd].par;
        const pb_dfa *d = g->dfa[TERM_OF(g->items[pos])];
        const int32_t q = pb_dfa_next(d, g->nodes[nd].q, b);
        if (q < 0)
            continue;
        if (pb_dfa_accepts(d, q)) { /* the terminal may be done: on to what follows it */
            PB_CHECK(work_push(g, pos + 1, par));
            PB_CHECK(run_work(g));
        }
        if (!pb_dfa_final(d, q)) /* or it goes on (a regex terminal's [a-z]+) */
            PB_CHECK(top_add(g, pos, q, par));
    }
    int32_t t;
    PB_CHECK(move_end(g, &t));
    /* the table may have been regrown by nothing here; find the slot again */
    i = mix(key) & (g->tcap - 1);
    while (g->tkey[i] != UINT64_MAX)
        i = (i + 1) & (g->tcap - 1);
    g->tkey[i] = key;
    g->tval[i] = t;
    g->tn++;
    *next = t;
    return PB_OK;
}
