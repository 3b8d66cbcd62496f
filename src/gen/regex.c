/* Regular expressions to byte DFAs (see regex.h): the pattern is parsed to a
 * tree of code point sets, concatenations, alternations and repetitions;
 * the tree becomes a Thompson NFA over UTF-8 bytes (sets split into byte
 * range sequences as RE2 does); subset construction over byte classes gives
 * a DFA; states that cannot reach a match are dropped, Hopcroft's algorithm
 * merges equivalent states and identical byte columns are merged last. */
#include "config.h"
#include "gen/regex.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define MAX_COUNT 1000          /* largest {n,m} count */
#define MAX_DEPTH 500           /* group nesting: the parser and the NFA builder recurse */
#define MAX_NFA (2000 * 1000)   /* NFA states: bounds what counted repetitions expand to */
#define MAX_CP 0x10FFFFu
#define SUR_LO 0xD800u
#define SUR_HI 0xDFFFu

enum { F_ACCEPT = 1, F_FINAL = 2 };

struct pb_dfa {
    int32_t n_states, n_classes, start;
    uint8_t class_of[256];
    int32_t *next;  /* n_states rows of n_classes targets, -1 where no match can follow */
    uint8_t *flags; /* F_ACCEPT, F_FINAL per state */
};

/* Doubles *cap until need elements of elem bytes fit in *pptr. */
static pb_status grow(void *pptr, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return PB_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2)
            return pb_error(PB_ERR_NOMEM, "regex: array of %zu elements overflows", need);
        c *= 2;
    }
    PB_CHECK(pb_realloc_array(pptr, c, elem));
    *cap = c;
    return PB_OK;
}

/* ---- parser: pattern -> tree ------------------------------------------- */

typedef struct {
    uint32_t lo, hi;
} cp_range;

enum { N_EMPTY, N_SET, N_CAT, N_ALT, N_REP };

typedef struct {
    uint8_t kind;
    int32_t first, next; /* first child; next sibling (CAT children are kept last first) */
    int32_t a, b;        /* SET: first range, count; REP: min, max (-1 unbounded) */
    size_t off;          /* where it starts in the pattern, for errors */
} node;

typedef struct {
    const uint8_t *p;
    size_t len, pos;
    node *nodes;
    size_t n_nodes, cap_nodes;
    cp_range *rg; /* every set's ranges, sorted and disjoint per set */
    size_t n_rg, cap_rg;
} parser;

static pb_status bad(size_t off, const char *what)
{
    return pb_error(PB_ERR_INPUT, "at offset %zu: %s", off, what);
}

static pb_status new_node(parser *ps, uint8_t kind, size_t off, int32_t *id)
{
    if (ps->n_nodes >= INT32_MAX)
        return bad(off, "pattern too large");
    PB_CHECK(grow(&ps->nodes, &ps->cap_nodes, ps->n_nodes + 1, sizeof *ps->nodes));
    ps->nodes[ps->n_nodes] = (node){.kind = kind, .first = -1, .next = -1, .off = off};
    *id = (int32_t)ps->n_nodes++;
    return PB_OK;
}

static pb_status push_range(parser *ps, uint32_t lo, uint32_t hi)
{
    PB_CHECK(grow(&ps->rg, &ps->cap_rg, ps->n_rg + 1, sizeof *ps->rg));
    ps->rg[ps->n_rg++] = (cp_range){lo, hi};
    return PB_OK;
}

/* Strict UTF-8: no overlong forms, no surrogates, nothing past U+10FFFF.
 * The length used, or 0 when p[0..n) does not start with a valid character. */
static size_t utf8_decode(const uint8_t *p, size_t n, uint32_t *cp)
{
    uint8_t b = p[0];
    if (b < 0x80) {
        *cp = b;
        return 1;
    }
    size_t k;
    uint32_t c, lo2 = 0x80, hi2 = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) {
        k = 2; c = b & 0x1Fu;
    } else if (b >= 0xE0 && b <= 0xEF) {
        k = 3; c = b & 0x0Fu;
        if (b == 0xE0) lo2 = 0xA0;
        if (b == 0xED) hi2 = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        k = 4; c = b & 0x07u;
        if (b == 0xF0) lo2 = 0x90;
        if (b == 0xF4) hi2 = 0x8F;
    } else {
        return 0;
    }
    if (n < k || p[1] < lo2 || p[1] > hi2)
        return 0;
    for (size_t i = 1; i < k; i++) {
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
        c = (c << 6) | (p[i] & 0x3Fu);
    }
    *cp = c;
    return k;
}

static int hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static bool is_alnum(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int cmp_range(const void *x, const void *y)
{
    uint32_t a = ((const cp_range *)x)->lo, b = ((const cp_range *)y)->lo;
    return (a > b) - (a < b);
}

/* Sorts and merges the ranges rg[start..), drops the surrogates and, if negate, takes the complement
 * within the Unicode scalar values. */
static pb_status finish_set(parser *ps, size_t start, bool negate)
{
    cp_range *r = ps->rg + start;
    size_t n = ps->n_rg - start, m = 0;
    if (n > 1)
        qsort(r, n, sizeof *r, cmp_range);
    for (size_t i = 0; i < n; i++) {
        if (m > 0 && r[i].lo <= r[m - 1].hi + 1) {
            if (r[i].hi > r[m - 1].hi)
                r[m - 1].hi = r[i].hi;
        } else {
            r[m++] = r[i];
        }
    }
    ps->n_rg = start + m;
    if (negate) {
        /* the complement has at most one range more than the set */
        PB_CHECK(grow(&ps->rg, &ps->cap_rg, ps->n_rg + 1, sizeof *ps->rg));
        r = ps->rg + start;
        uint32_t from = 0;
        size_t k = 0;
        for (size_t i = 0; i < m; i++) {
            cp_range x = r[i]; /* read before writing: k <= i */
            if (x.lo > from)
                r[k++] = (cp_range){from, x.lo - 1};
            from = x.hi + 1;
        }
        if (from <= MAX_CP)
            r[k++] = (cp_range){from, MAX_CP};
        m = k;
        ps->n_rg = start + m;
    }
    /* cut the surrogates out: at most one range spans them, and it may become two */
    for (size_t i = 0; i < m; i++) {
        cp_range x = ps->rg[start + i];
        if (x.hi < SUR_LO || x.lo > SUR_HI)
            continue;
        if (x.lo < SUR_LO && x.hi > SUR_HI) {
            PB_CHECK(grow(&ps->rg, &ps->cap_rg, ps->n_rg + 1, sizeof *ps->rg));
            r = ps->rg + start;
            memmove(r + i + 2, r + i + 1, (m - i - 1) * sizeof *r);
            r[i] = (cp_range){x.lo, SUR_LO - 1};
            r[i + 1] = (cp_range){SUR_HI + 1, x.hi};
            m++;
            i++;
        } else if (x.lo < SUR_LO) {
            ps->rg[start + i].hi = SUR_LO - 1;
        } else if (x.hi > SUR_HI) {
            ps->rg[start + i].lo = SUR_HI + 1;
        } else {
            memmove(ps->rg + start + i, ps->rg + start + i + 1, (m - i - 1) * sizeof *ps->rg);
            m--;
            i--;
        }
        ps->n_rg = start + m;
    }
    return PB_OK;
}

/* The class escapes \d \w \s (and their negations) as ranges appended at rg's end. */
static pb_status push_class_escape(parser *ps, uint8_t c)
{
    size_t start = ps->n_rg;
    switch (c | 0x20) {
    case 'd':
        PB_CHECK(push_range(ps, '0', '9'));
        break;
    case 'w':
        PB_CHECK(push_range(ps, '0', '9'));
        PB_CHECK(push_range(ps, 'A', 'Z'));
        PB_CHECK(push_range(ps, '_', '_'));
        PB_CHECK(push_range(ps, 'a', 'z'));
        break;
    default: /* s: the ASCII white space \t \n \v \f \r and space */
        PB_CHECK(push_range(ps, '\t', '\r'));
        PB_CHECK(push_range(ps, ' ', ' '));
        break;
    }
    if (c >= 'A' && c <= 'Z')
        PB_CHECK(finish_set(ps, start, true));
    return PB_OK;
}

/* Reads n hex digits at the parser's position into *cp. */
static pb_status read_hex(parser *ps, int n, size_t esc, uint32_t *cp)
{
    uint32_t v = 0;
    for (int i = 0; i < n; i++) {
        int h = ps->pos < ps->len ? hex_val(ps->p[ps->pos]) : -1;
        if (h < 0)
            return bad(esc, "incomplete hexadecimal escape");
        v = v * 16 + (uint32_t)h;
        ps->pos++;
    }
    if (v > MAX_CP)
        return bad(esc, "code point above U+10FFFF");
    *cp = v;
    return PB_OK;
}

/* An escape after the backslash at esc: either one code point (*cp, *is_set false) or, for \d \D \w \W
 * \s \S, ranges appended to rg (*is_set true). */
static pb_status parse_escape(parser *ps, size_t esc, bool in_class, uint32_t *cp, bool *is_set)
{
    *is_set = false;
    if (ps->pos >= ps->len)
        return bad(esc, "dangling backslash at the end of the pattern");
    uint8_t c = ps->p[ps->pos++];
    switch (c) {
    case 'd': case 'D': case 'w': case 'W': case 's': case 'S':
        *is_set = true;
        return push_class_escape(ps, c);
    case 'n': *cp = '\n'; return PB_OK;
    case 't': *cp = '\t'; return PB_OK;
    case 'r': *cp = '\r'; return PB_OK;
    case 'f': *cp = '\f'; return PB_OK;
    case 'v': *cp = '\v'; return PB_OK;
    case '0':
        /* Python reads \0NN as octal, ECMAScript refuses it: neither is worth the ambiguity */
        if (ps->pos < ps->len && ps->p[ps->pos] >= '0' && ps->p[ps->pos] <= '9')
            return bad(esc, "octal escapes are not supported");
        *cp = 0;
        return PB_OK;
    case 'x': return read_hex(ps, 2, esc, cp);
    case 'u': return read_hex(ps, 4, esc, cp);
    case 'U': return read_hex(ps, 8, esc, cp);
    case 'b':
        if (in_class) { /* backspace in a class, in Python and ECMAScript alike */
            *cp = '\b';
            return PB_OK;
        }
        return bad(esc, "word boundaries (\\b) are not supported");
    case 'B': case 'A': case 'Z': case 'z': case 'G':
        return bad(esc, "anchors other than ^ and $ are not supported");
    default:
        break;
    }
    if (c >= '1' && c <= '9')
        return bad(esc, "back references are not supported");
    if (is_alnum(c))
        return bad(esc, "unknown escape");
    size_t k = utf8_decode(ps->p + ps->pos - 1, ps->len - (ps->pos - 1), cp);
    if (!k)
        return bad(ps->pos - 1, "invalid UTF-8 in the pattern");
    ps->pos += k - 1;
    return PB_OK;
}

/* One literal character (UTF-8) at the parser's position. */
static pb_status parse_char(parser *ps, uint32_t *cp)
{
    size_t k = utf8_decode(ps->p + ps->pos, ps->len - ps->pos, cp);
    if (!k)
        return bad(ps->pos, "invalid UTF-8 in the pattern");
    ps->pos += k;
    return PB_OK;
}

static pb_status set_node(parser *ps, size_t start, size_t off, int32_t *id)
{
    PB_CHECK(new_node(ps, N_SET, off, id));
    if (ps->n_rg - start > INT32_MAX || start > INT32_MAX)
        return bad(off, "pattern too large");
    ps->nodes[*id].a = (int32_t)start;
    ps->nodes[*id].b = (int32_t)(ps->n_rg - start);
    return PB_OK;
}

static pb_status single(parser *ps, uint32_t cp, size_t off, int32_t *id)
{
    if (cp >= SUR_LO && cp <= SUR_HI)
        return bad(off, "a surrogate code point matches no UTF-8 text");
    size_t start = ps->n_rg;
    PB_CHECK(push_range(ps, cp, cp));
    return set_node(ps, start, off, id);
}

/* [...] or [^...] starting at the parser's position ('['). */
static pb_status parse_class(parser *ps, int32_t *id)
{
    size_t open = ps->pos++, start = ps->n_rg;
    bool negate = false, first = true;
    if (ps->pos < ps->len && ps->p[ps->pos] == '^') {
        negate = true;
        ps->pos++;
    }
    for (;;) {
        if (ps->pos >= ps->len)
            return bad(open, "unterminated character class");
        if (ps->p[ps->pos] == ']' && !first) { /* a ']' first is itself, as in Python */
            ps->pos++;
            break;
        }
        first = false;
        size_t at = ps->pos;
        uint32_t lo, hi;
        bool is_set = false;
        if (ps->p[ps->pos] == '\\') {
            ps->pos++;
            PB_CHECK(parse_escape(ps, at, true, &lo, &is_set));
        } else {
            PB_CHECK(parse_char(ps, &lo));
        }
        if (ps->pos + 1 < ps->len && ps->p[ps->pos] == '-' && ps->p[ps->pos + 1] != ']') {
            ps->pos++;
            size_t at2 = ps->pos;
            bool is_set2 = false;
            if (ps->p[ps->pos] == '\\') {
                ps->pos++;
                PB_CHECK(parse_escape(ps, at2, true, &hi, &is_set2));
            } else {
                PB_CHECK(parse_char(ps, &hi));
            }
            if (is_set || is_set2 || lo > hi)
                return bad(at, "bad character range");
            PB_CHECK(push_range(ps, lo, hi));
        } else if (!is_set) {
            if (lo >= SUR_LO && lo <= SUR_HI)
                return bad(at, "a surrogate code point matches no UTF-8 text");
            PB_CHECK(push_range(ps, lo, lo));
        }
    }
    PB_CHECK(finish_set(ps, start, negate));
    return set_node(ps, start, open, id);
}

static size_t read_digits(parser *ps, int32_t *v)
{
    size_t n = 0;
    int32_t x = 0;
    while (ps->pos < ps->len && ps->p[ps->pos] >= '0' && ps->p[ps->pos] <= '9') {
        if (x <= MAX_COUNT) /* saturate: anything past the cap is refused anyway */
            x = x * 10 + (ps->p[ps->pos] - '0');
        ps->pos++;
        n++;
    }
    *v = x;
    return n;
}

/* A quantifier at the parser's position: *got false (position unchanged) when there is none, as
 * for a '{' that does not start {n}, {n,}, {,m}, {n,m} or {,} (then a literal, as in Python). */
static pb_status parse_quant(parser *ps, bool *got, int32_t *min, int32_t *max)
{
    *got = false;
    if (ps->pos >= ps->len)
        return PB_OK;
    uint8_t c = ps->p[ps->pos];
    if (c == '*' || c == '+' || c == '?') {
        ps->pos++;
        *got = true;
        *min = c == '+' ? 1 : 0;
        *max = c == '?' ? 1 : -1;
        return PB_OK;
    }
    if (c != '{')
        return PB_OK;
    size_t open = ps->pos;
    ps->pos++;
    size_t at_lo = ps->pos, at_hi;
    int32_t lo, hi;
    size_t n_lo = read_digits(ps, &lo), n_hi;
    bool comma = ps->pos < ps->len && ps->p[ps->pos] == ',';
    if (comma) {
        ps->pos++;
        at_hi = ps->pos;
        n_hi = read_digits(ps, &hi);
    } else {
        at_hi = at_lo;
        n_hi = n_lo;
        hi = lo;
    }
    if ((!n_lo && !comma) || ps->pos >= ps->len || ps->p[ps->pos] != '}') {
        ps->pos = open;
        return PB_OK;
    }
    ps->pos++;
    if (n_lo && lo > MAX_COUNT)
        return bad(at_lo, "repetition count over 1000");
    if (n_hi && hi > MAX_COUNT)
        return bad(at_hi, "repetition count over 1000");
    *min = n_lo ? lo : 0;
    *max = n_hi ? hi : -1;
    if (*max >= 0 && *min > *max)
        return bad(open, "min repeat greater than max repeat");
    *got = true;
    return PB_OK;
}

static pb_status parse_alt(parser *ps, int depth, int32_t *id);

/* (...), (?:...), (?P<name>...), (?<name>...) at the parser's position. */
static pb_status parse_group(parser *ps, int depth, int32_t *id)
{
    size_t open = ps->pos++;
    const uint8_t *p = ps->p;
    size_t n = ps->len;
    if (ps->pos < n && p[ps->pos] == '?') {
        size_t q = ps->pos + 1;
        if (q < n && p[q] == ':') {
            ps->pos = q + 1;
        } else if ((q < n && p[q] == '<' && q + 1 < n && p[q + 1] != '=' && p[q + 1] != '!') ||
                   (q + 1 < n && p[q] == 'P' && p[q + 1] == '<')) {
            size_t s = p[q] == 'P' ? q + 2 : q + 1, e = s;
            while (e < n && p[e] != '>' && (is_alnum(p[e]) || p[e] == '_' || p[e] >= 0x80))
                e++;
            if (e == s || e >= n || p[e] != '>' || (p[s] >= '0' && p[s] <= '9'))
                return bad(open, "bad group name");
            ps->pos = e + 1;
        } else if (q + 1 < n && p[q] == 'P' && p[q + 1] == '=') {
            return bad(open, "back references are not supported");
        } else if (q < n && (p[q] == '=' || p[q] == '!' || p[q] == '<')) {
            return bad(open, "look-around is not supported");
        } else if (q < n && (p[q] == '-' || (p[q] >= 'a' && p[q] <= 'z'))) {
            return bad(open, "inline flags are not supported");
        } else {
            return bad(open, "unknown group extension");
        }
    }
    if (depth >= MAX_DEPTH)
        return bad(open, "groups nested too deeply");
    PB_CHECK(parse_alt(ps, depth + 1, id));
    if (ps->pos >= ps->len || ps->p[ps->pos] != ')')
        return bad(open, "missing ')': unbalanced group");
    ps->pos++;
    return PB_OK;
}

/* A concatenation: up to '|', ')' or the end. */
static pb_status parse_cat(parser *ps, int depth, int32_t *id)
{
    PB_CHECK(new_node(ps, N_CAT, ps->pos, id));
    int32_t cat = *id;
    while (ps->pos < ps->len) {
        size_t at = ps->pos;
        uint8_t c = ps->p[at];
        if (c == '|' || c == ')')
            break;
        int32_t atom = -1;
        uint32_t cp;
        bool is_set;
        switch (c) {
        case '^': /* the match is whole anyway: only the start of the pattern says nothing new */
            if (at != 0)
                return bad(at, "'^' is only supported at the start of the pattern");
            ps->pos++;
            continue;
        case '$':
            if (at != ps->len - 1)
                return bad(at, "'$' is only supported at the end of the pattern");
            ps->pos++;
            continue;
        case '(':
            PB_CHECK(parse_group(ps, depth, &atom));
            break;
        case '[':
            PB_CHECK(parse_class(ps, &atom));
            break;
        case '.': {
            size_t start = ps->n_rg;
            ps->pos++;
            PB_CHECK(push_range(ps, 0, '\n' - 1));
            PB_CHECK(push_range(ps, '\n' + 1, MAX_CP));
            PB_CHECK(finish_set(ps, start, false));
            PB_CHECK(set_node(ps, start, at, &atom));
            break;
        }
        case '\\': {
            size_t start = ps->n_rg;
            ps->pos++;
            PB_CHECK(parse_escape(ps, at, false, &cp, &is_set));
            if (is_set)
                PB_CHECK(set_node(ps, start, at, &atom));
            else
                PB_CHECK(single(ps, cp, at, &atom));
            break;
        }
        default: {
            bool q;
            int32_t mn, mx;
            PB_CHECK(parse_quant(ps, &q, &mn, &mx));
            if (q)
                return bad(at, "nothing to repeat");
            PB_CHECK(parse_char(ps, &cp));
            PB_CHECK(single(ps, cp, at, &atom));
            break;
        }
        }
        for (bool quantified = false;;) {
            size_t qat = ps->pos;
            bool q;
            int32_t mn, mx;
            PB_CHECK(parse_quant(ps, &q, &mn, &mx));
            if (!q)
                break;
            if (quantified)
                return bad(qat, "multiple repeat");
            quantified = true;
            int32_t rep;
            PB_CHECK(new_node(ps, N_REP, at, &rep));
            ps->nodes[rep].first = atom;
            ps->nodes[rep].a = mn;
            ps->nodes[rep].b = mx;
            atom = rep;
            /* a lazy '?' after the quantifier: a whole match is the same; a possessive '+' is not (a*+a
             * matches nothing), and would need more than a DFA */
            if (ps->pos < ps->len && ps->p[ps->pos] == '?')
                ps->pos++;
            else if (ps->pos < ps->len && ps->p[ps->pos] == '+')
                return bad(ps->pos, "possessive quantifiers are not supported");
        }
        ps->nodes[atom].next = ps->nodes[cat].first; /* last first: the NFA is built back to front */
        ps->nodes[cat].first = atom;
    }
    return PB_OK;
}

static pb_status parse_alt(parser *ps, int depth, int32_t *id)
{
    int32_t first;
    PB_CHECK(parse_cat(ps, depth, &first));
    if (ps->pos >= ps->len || ps->p[ps->pos] != '|') {
        *id = first;
        return PB_OK;
    }
    PB_CHECK(new_node(ps, N_ALT, ps->nodes[first].off, id));
    int32_t alt = *id, last = first;
    ps->nodes[alt].first = first;
    while (ps->pos < ps->len && ps->p[ps->pos] == '|') {
        ps->pos++;
        int32_t next;
        PB_CHECK(parse_cat(ps, depth, &next));
        ps->nodes[last].next = next;
        last = next;
    }
    return PB_OK;
}

/* ---- NFA over bytes ------------------------------------------------------ */

enum { S_RANGE, S_SPLIT, S_MATCH };

typedef struct {
    uint8_t kind, lo, hi;
    int32_t out, out1; /* -1: none (a SPLIT with neither leads nowhere) */
} nstate;

typedef struct {
    const parser *ps;
    nstate *st;
    size_t n, cap;
    size_t off; /* of the construct being built, for "pattern too large" */
    int32_t *entries; /* scratch of build_set */
    size_t n_entries, cap_entries;
    struct suffix { uint8_t lo, hi; int32_t out, id; } *suf; /* build_set's shared tails */
    size_t n_suf, cap_suf;
} nfa;

static pb_status add_state(nfa *a, uint8_t kind, uint8_t lo, uint8_t hi, int32_t out, int32_t out1, int32_t *id)
{
    if (a->n >= MAX_NFA)
        return pb_error(PB_ERR_INPUT, "at offset %zu: pattern too large (over %d NFA states)", a->off, MAX_NFA);
    PB_CHECK(grow(&a->st, &a->cap, a->n + 1, sizeof *a->st));
    a->st[a->n] = (nstate){kind, lo, hi, out, out1};
    *id = (int32_t)a->n++;
    return PB_OK;
}

/* A byte range state lo..hi -> out, shared with an equal one built for the same set: the tails of
 * UTF-8 sequences ([80-BF][80-BF] -> next) repeat. */
static pb_status range_state(nfa *a, uint8_t lo, uint8_t hi, int32_t out, int32_t *id)
{
    for (size_t i = 0; i < a->n_suf; i++)
        if (a->suf[i].lo == lo && a->suf[i].hi == hi && a->suf[i].out == out) {
            *id = a->suf[i].id;
            return PB_OK;
        }
    PB_CHECK(add_state(a, S_RANGE, lo, hi, out, -1, id));
    if (a->n_suf < 256) { /* a short cache: linear search */
        PB_CHECK(grow(&a->suf, &a->cap_suf, a->n_suf + 1, sizeof *a->suf));
        a->suf[a->n_suf++] = (struct suffix){lo, hi, out, *id};
    }
    return PB_OK;
}

static int utf8_encode(uint32_t c, uint8_t *b)
{
    if (c < 0x80) {
        b[0] = (uint8_t)c;
        return 1;
    }
    if (c < 0x800) {
        b[0] = (uint8_t)(0xC0 | (c >> 6));
        b[1] = (uint8_t)(0x80 | (c & 0x3F));
        return 2;
    }
    if (c < 0x10000) {
        b[0] = (uint8_t)(0xE0 | (c >> 12));
        b[1] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
        b[2] = (uint8_t)(0x80 | (c & 0x3F));
        return 3;
    }
    b[0] = (uint8_t)(0xF0 | (c >> 18));
    b[1] = (uint8_t)(0x80 | ((c >> 12) & 0x3F));
    b[2] = (uint8_t)(0x80 | ((c >> 6) & 0x3F));
    b[3] = (uint8_t)(0x80 | (c & 0x3F));
    return 4;
}

/* The byte sequences of the code points lo..hi (no surrogates) as NFA chains to next, their entries
 * appended to a->entries. The range is cut until each piece's first and last code point encode to
 * the same length and every byte position spans a whole range (regex-syntax's Utf8Sequences). */
static pb_status build_utf8(nfa *a, uint32_t lo, uint32_t hi, int32_t next)
{
    static const uint32_t max_len[3] = {0x7F, 0x7FF, 0xFFFF};
    uint32_t stk[64][2];
    int sp = 0;
    stk[sp][0] = lo;
    stk[sp][1] = hi;
    sp++;
    while (sp > 0) {
        sp--;
        uint32_t s = stk[sp][0], e = stk[sp][1];
        for (bool cut = true; cut;) {
            cut = false;
            for (int i = 0; i < 3 && !cut; i++)
                if (s <= max_len[i] && e > max_len[i]) {
                    stk[sp][0] = max_len[i] + 1;
                    stk[sp][1] = e;
                    sp++;
                    e = max_len[i];
                    cut = true;
                }
            if (cut || e <= 0x7F)
                continue;
            for (int i = 1; i < 4 && !cut; i++) {
                uint32_t m = (1u << (6 * i)) - 1;
                if ((s & ~m) == (e & ~m))
                    continue;
                if (s & m) {
                    stk[sp][0] = (s | m) + 1;
                    stk[sp][1] = e;
                    sp++;
                    e = s | m;
                    cut = true;
                } else if ((e & m) != m) {
                    stk[sp][0] = e & ~m;
                    stk[sp][1] = e;
                    sp++;
                    e = (e & ~m) - 1;
                    cut = true;
                }
            }
        }
        uint8_t bs[4], be[4];
        int k = utf8_encode(s, bs);
        (void)utf8_encode(e, be);
        int32_t cur = next;
        for (int i = k - 1; i >= 0; i--)
            PB_CHECK(range_state(a, bs[i], be[i], cur, &cur));
        PB_CHECK(grow(&a->entries, &a->cap_entries, a->n_entries + 1, sizeof *a->entries));
        a->entries[a->n_entries++] = cur;
    }
    return PB_OK;
}

/* Alternation of the entries [from, n_entries) by a chain of splits; a dead state when there are none. */
static pb_status join_entries(nfa *a, size_t from, int32_t *entry)
{
    if (a->n_entries == from)
        return add_state(a, S_SPLIT, 0, 0, -1, -1, entry);
    int32_t cur = a->entries[a->n_entries - 1];
    for (size_t i = a->n_entries - 1; i > from; i--)
        PB_CHECK(add_state(a, S_SPLIT, 0, 0, a->entries[i - 1], cur, &cur));
    a->n_entries = from;
    *entry = cur;
    return PB_OK;
}

static pb_status build_set(nfa *a, const node *nd, int32_t next, int32_t *entry)
{
    a->n_suf = 0;
    a->n_entries = 0;
    const cp_range *r = a->ps->rg + nd->a;
    for (int32_t i = 0; i < nd->b; i++)
        PB_CHECK(build_utf8(a, r[i].lo, r[i].hi, next));
    return join_entries(a, 0, entry);
}

/* The NFA of node id followed by next (built back to front, so no patch lists): its entry state. */
static pb_status build(nfa *a, int32_t id, int32_t next, int32_t *entry)
{
    const node *nd = &a->ps->nodes[id];
    int32_t cur = next, e;
    a->off = nd->off;
    switch (nd->kind) {
    case N_SET:
        return build_set(a, nd, next, entry);
    case N_CAT: /* children are listed last first */
        for (int32_t c = nd->first; c >= 0; c = a->ps->nodes[c].next)
            PB_CHECK(build(a, c, cur, &cur));
        break;
    case N_ALT: {
        int32_t c = nd->first;
        PB_CHECK(build(a, c, next, &cur));
        for (c = a->ps->nodes[c].next; c >= 0; c = a->ps->nodes[c].next) {
            PB_CHECK(build(a, c, next, &e));
            PB_CHECK(add_state(a, S_SPLIT, 0, 0, e, cur, &cur));
        }
        break;
    }
    case N_REP: {
        int32_t min = nd->a, max = nd->b, x = nd->first;
        size_t off = nd->off;
        if (max < 0) {
            /* loop: x then back to the split, which goes on to x again or leaves to next */
            int32_t loop;
            PB_CHECK(add_state(a, S_SPLIT, 0, 0, -1, next, &loop));
            PB_CHECK(build(a, x, loop, &e));
            a->st[loop].out = e;
            cur = min > 0 ? e : loop;
            min = min > 0 ? min - 1 : 0;
        } else {
            /* x{0,k} nested as (x(x(x)?)?)?: after j copies only copy j+1 is live, so the DFA stays small */
            for (int32_t i = 0; i < max - min; i++) {
                PB_CHECK(build(a, x, cur, &e));
                a->off = off;
                PB_CHECK(add_state(a, S_SPLIT, 0, 0, e, next, &cur));
            }
        }
        for (int32_t i = 0; i < min; i++)
            PB_CHECK(build(a, x, cur, &cur));
        break;
    }
    default: /* N_EMPTY */
        break;
    }
    *entry = cur;
    return PB_OK;
}

/* ---- subset construction ----------------------------------------------- */

typedef struct {
    const nstate *st;
    int32_t n_nfa, n_classes, max_states;
    uint8_t class_of[256];
    /* DFA states: their NFA sets (sorted RANGE/MATCH states) in pool, rows in trans */
    int32_t n_states;
    size_t cap_states, cap_trans, cap_pool, n_pool;
    int32_t *trans;
    uint8_t *accept;
    size_t *set_off;
    uint64_t *set_hash;
    int32_t *pool;
    int32_t *table; /* open addressing over the sets: state id or -1 */
    size_t table_cap;
    /* scratch */
    uint32_t *mark, gen;
    int32_t *stack, *set;
    size_t n_set;
    bool set_accepts;
    int32_t *pairs, *bucket_start; /* (class, target) pairs of one state, and by class */
    size_t cap_pairs;
    int32_t *seeds;
    size_t cap_seeds;
} builder;

static int cmp_i32(const void *x, const void *y)
{
    int32_t a = *(const int32_t *)x, b = *(const int32_t *)y;
    return (a > b) - (a < b);
}

/* The RANGE and MATCH states reachable by splits from seeds[0..n), sorted, into b->set. */
static void closure(builder *b, const int32_t *seeds, size_t n)
{
    if (++b->gen == 0) { /* wrapped: old marks could look current */
        memset(b->mark, 0, (size_t)b->n_nfa * sizeof *b->mark);
        b->gen = 1;
    }
    size_t sp = 0;
    b->n_set = 0;
    b->set_accepts = false;
    for (size_t i = 0; i < n; i++)
        if (b->mark[seeds[i]] != b->gen) {
            b->mark[seeds[i]] = b->gen;
            b->stack[sp++] = seeds[i];
        }
    while (sp > 0) {
        int32_t s = b->stack[--sp];
        const nstate *ns = &b->st[s];
        if (ns->kind != S_SPLIT) {
            b->set[b->n_set++] = s;
            b->set_accepts |= ns->kind == S_MATCH;
            continue;
        }
        /* out1 first so that out is expanded first: the order does not matter once sorted */
        if (ns->out1 >= 0 && b->mark[ns->out1] != b->gen) {
            b->mark[ns->out1] = b->gen;
            b->stack[sp++] = ns->out1;
        }
        if (ns->out >= 0 && b->mark[ns->out] != b->gen) {
            b->mark[ns->out] = b->gen;
            b->stack[sp++] = ns->out;
        }
    }
    qsort(b->set, b->n_set, sizeof *b->set, cmp_i32);
}

/* The DFA state of b->set, added if new; -1 for the empty set. */
static pb_status intern(builder *b, int32_t *id)
{
    if (b->n_set == 0) {
        *id = -1;
        return PB_OK;
    }
    uint64_t h = pb_fnv1a(PB_FNV_START, b->set, b->n_set * sizeof *b->set);
    size_t mask = b->table_cap - 1, i = (size_t)h & mask;
    for (; b->table[i] >= 0; i = (i + 1) & mask) {
        int32_t s = b->table[i];
        size_t off = b->set_off[s], n = b->set_off[s + 1] - off;
        if (b->set_hash[s] == h && n == b->n_set && memcmp(b->pool + off, b->set, n * sizeof *b->set) == 0) {
            *id = s;
            return PB_OK;
        }
    }
    if (b->n_states >= b->max_states)
        return pb_error(PB_ERR_INPUT, "pattern needs more than %d states", (int)b->max_states);
    size_t s = (size_t)b->n_states, row;
    if (!pb_mul_ok(s + 1, (size_t)b->n_classes, &row))
        return pb_error(PB_ERR_NOMEM, "regex: DFA too large");
    PB_CHECK(grow(&b->trans, &b->cap_trans, row, sizeof *b->trans));
    if (s + 2 > b->cap_states) {
        size_t cap = b->cap_states;
        PB_CHECK(grow(&b->set_off, &cap, s + 2, sizeof *b->set_off));
        PB_CHECK(pb_realloc_array(&b->set_hash, cap, sizeof *b->set_hash));
        PB_CHECK(pb_realloc_array(&b->accept, cap, sizeof *b->accept));
        b->cap_states = cap;
    }
    PB_CHECK(grow(&b->pool, &b->cap_pool, b->n_pool + b->n_set, sizeof *b->pool));
    memcpy(b->pool + b->n_pool, b->set, b->n_set * sizeof *b->set);
    b->set_off[s] = b->n_pool;
    b->n_pool += b->n_set;
    b->set_off[s + 1] = b->n_pool;
    b->set_hash[s] = h;
    b->accept[s] = b->set_accepts;
    b->table[i] = (int32_t)s;
    b->n_states++;
    *id = (int32_t)s;
    if ((size_t)b->n_states * 2 > b->table_cap) { /* keep the load under a half */
        size_t cap = b->table_cap * 2;
        int32_t *t;
        PB_CHECK(pb_malloc(cap * sizeof *t, &t));
        memset(t, 0xff, cap * sizeof *t);
        for (int32_t k = 0; k < b->n_states; k++) {
            size_t j = (size_t)b->set_hash[k] & (cap - 1);
            while (t[j] >= 0)
                j = (j + 1) & (cap - 1);
            t[j] = k;
        }
        free(b->table);
        b->table = t;
        b->table_cap = cap;
    }
    return PB_OK;
}

/* Byte classes: bytes that no range of the NFA tells apart. */
static void byte_classes(builder *b)
{
    bool cut[257] = {false};
    for (int32_t i = 0; i < b->n_nfa; i++)
        if (b->st[i].kind == S_RANGE) {
            cut[b->st[i].lo] = true;
            cut[b->st[i].hi + 1] = true;
        }
    int k = 0;
    for (int c = 0; c < 256; c++) {
        if (c > 0 && cut[c])
            k++;
        b->class_of[c] = (uint8_t)k;
    }
    b->n_classes = k + 1;
}

static pb_status subset(builder *b, int32_t start)
{
    byte_classes(b);
    size_t n = (size_t)b->n_nfa;
    PB_CHECK(pb_calloc(n, sizeof *b->mark, &b->mark));
    PB_CHECK(pb_malloc(n * sizeof *b->stack, &b->stack));
    PB_CHECK(pb_malloc(n * sizeof *b->set, &b->set));
    PB_CHECK(pb_malloc(((size_t)b->n_classes + 1) * sizeof *b->bucket_start, &b->bucket_start));
    b->table_cap = 64;
    PB_CHECK(pb_malloc(b->table_cap * sizeof *b->table, &b->table));
    memset(b->table, 0xff, b->table_cap * sizeof *b->table);
    closure(b, &start, 1);
    int32_t id;
    PB_CHECK(intern(b, &id));
    int32_t k = b->n_classes;
    for (int32_t s = 0; s < b->n_states; s++) {
        /* (class, target) for every class each RANGE member covers, then grouped by class */
        size_t off = b->set_off[s], end = b->set_off[s + 1], np = 0;
        for (size_t i = off; i < end; i++) {
            const nstate *ns = &b->st[b->pool[i]];
            if (ns->kind != S_RANGE)
                continue;
            int c0 = b->class_of[ns->lo], c1 = b->class_of[ns->hi];
            PB_CHECK(grow(&b->pairs, &b->cap_pairs, 2 * (np + (size_t)(c1 - c0 + 1)), sizeof *b->pairs));
            for (int c = c0; c <= c1; c++) {
                b->pairs[2 * np] = c;
                b->pairs[2 * np + 1] = ns->out;
                np++;
            }
        }
        PB_CHECK(grow(&b->seeds, &b->cap_seeds, np, sizeof *b->seeds));
        memset(b->bucket_start, 0, ((size_t)k + 1) * sizeof *b->bucket_start);
        for (size_t i = 0; i < np; i++)
            b->bucket_start[b->pairs[2 * i] + 1]++;
        for (int32_t c = 0; c < k; c++)
            b->bucket_start[c + 1] += b->bucket_start[c];
        for (size_t i = 0; i < np; i++) /* fills by moving each class's start on; rewound below */
            b->seeds[b->bucket_start[b->pairs[2 * i]]++] = b->pairs[2 * i + 1];
        for (int32_t c = k; c > 0; c--)
            b->bucket_start[c] = b->bucket_start[c - 1];
        b->bucket_start[0] = 0;
        for (int32_t c = 0; c < k; c++) {
            int32_t lo = b->bucket_start[c], hi = b->bucket_start[c + 1], t = -1;
            if (hi > lo) {
                closure(b, b->seeds + lo, (size_t)(hi - lo));
                PB_CHECK(intern(b, &t));
            }
            b->trans[(size_t)s * (size_t)k + (size_t)c] = t;
        }
    }
    return PB_OK;
}

static void builder_free(builder *b)
{
    free(b->trans);
    free(b->accept);
    free(b->set_off);
    free(b->set_hash);
    free(b->pool);
    free(b->table);
    free(b->mark);
    free(b->stack);
    free(b->set);
    free(b->pairs);
    free(b->bucket_start);
    free(b->seeds);
}

/* ---- pruning and minimization ---------------------------------------------- */

/* Keeps the states that can reach an accepting one, renumbered in order (the start stays 0 if live):
 * trans and accept are rewritten in place, *n_live is their count. */
static pb_status prune(int32_t n, int32_t k, int32_t *trans, uint8_t *accept, int32_t *n_live)
{
    pb_status st = PB_OK;
    size_t edges = (size_t)n * (size_t)k;
    int32_t *off = NULL, *src = NULL, *queue = NULL, *id = NULL;
    if (edges >= INT32_MAX)
        return pb_error(PB_ERR_NOMEM, "regex: DFA too large");
    PB_CHECK_GOTO(pb_calloc((size_t)n + 1, sizeof *off, &off), st, out);
    PB_CHECK_GOTO(pb_malloc(edges * sizeof *src, &src), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)n * sizeof *queue, &queue), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)n * sizeof *id, &id), st, out);
    /* predecessors, grouped by target (edges <= n * k fits: the rows did) */
    for (size_t e = 0; e < edges; e++)
        if (trans[e] >= 0)
            off[trans[e] + 1]++;
    for (int32_t s = 0; s < n; s++)
        off[s + 1] += off[s];
    for (size_t e = 0; e < edges; e++)
        if (trans[e] >= 0)
            src[off[trans[e]]++] = (int32_t)(e / (size_t)k);
    for (int32_t s = n; s > 0; s--)
        off[s] = off[s - 1];
    off[0] = 0;
    int32_t qn = 0;
    for (int32_t s = 0; s < n; s++) {
        id[s] = accept[s] ? 0 : -1;
        if (accept[s])
            queue[qn++] = s;
    }
    for (int32_t q = 0; q < qn; q++)
        for (int32_t i = off[queue[q]]; i < off[queue[q] + 1]; i++)
            if (id[src[i]] < 0) {
                id[src[i]] = 0;
                queue[qn++] = src[i];
            }
    int32_t m = 0;
    for (int32_t s = 0; s < n; s++)
        if (id[s] >= 0)
            id[s] = m++;
    for (int32_t s = 0; s < n; s++) {
        if (id[s] < 0)
            continue;
        int32_t *row = trans + (size_t)s * (size_t)k, *to = trans + (size_t)id[s] * (size_t)k;
        for (int32_t c = 0; c < k; c++)
            to[c] = row[c] >= 0 ? id[row[c]] : -1;
        accept[id[s]] = accept[s];
    }
    *n_live = m;
out:
    free(off);
    free(src);
    free(queue);
    free(id);
    return st;
}

/* Hopcroft's partition refinement over the n live states plus a sink (state n, the target of every
 * missing edge). blk[s] gets each state's block; *n_blocks their count. */
static pb_status minimize(int32_t n, int32_t k, const int32_t *trans, const uint8_t *accept, int32_t *blk,
                          int32_t *n_blocks)
{
    pb_status st = PB_OK;
    int32_t N = n + 1;
    size_t edges = (size_t)N * (size_t)k;
    int32_t *inv_off = NULL, *inv = NULL, *elems = NULL, *loc = NULL, *bstart = NULL, *bend = NULL;
    int32_t *bmarked = NULL, *work = NULL, *touched = NULL, *spl = NULL;
    uint8_t *in_work = NULL;
    if (edges >= INT32_MAX)
        return pb_error(PB_ERR_NOMEM, "regex: DFA too large to minimize");
    PB_CHECK_GOTO(pb_calloc(edges + 1, sizeof *inv_off, &inv_off), st, out);
    PB_CHECK_GOTO(pb_malloc(edges * sizeof *inv, &inv), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *elems, &elems), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *loc, &loc), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *bstart, &bstart), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *bend, &bend), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)N, sizeof *bmarked, &bmarked), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *work, &work), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *touched, &touched), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)N * sizeof *spl, &spl), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)N, sizeof *in_work, &in_work), st, out);
    /* inverse edges, grouped by (target, class) */
#define DELTA(s, c) ((s) < n && trans[(size_t)(s) * (size_t)k + (size_t)(c)] >= 0 \
                         ? trans[(size_t)(s) * (size_t)k + (size_t)(c)] : n)
    for (int32_t s = 0; s < N; s++)
        for (int32_t c = 0; c < k; c++)
            inv_off[(size_t)DELTA(s, c) * (size_t)k + (size_t)c + 1]++;
    for (size_t e = 0; e < edges; e++)
        inv_off[e + 1] += inv_off[e];
    for (int32_t s = 0; s < N; s++)
        for (int32_t c = 0; c < k; c++)
            inv[inv_off[(size_t)DELTA(s, c) * (size_t)k + (size_t)c]++] = s;
    for (size_t e = edges; e > 0; e--)
        inv_off[e] = inv_off[e - 1];
    inv_off[0] = 0;
    /* first partition: accepting, other live, sink */
    int32_t nb = 0, at = 0, nw = 0;
    for (int pass = 0; pass < 3; pass++) {
        int32_t from = at;
        for (int32_t s = 0; s < N; s++) {
            int cls = s == n ? 2 : accept[s] ? 0 : 1;
            if (cls != pass)
                continue;
            elems[at] = s;
            loc[s] = at++;
            blk[s] = nb;
        }
        if (at > from) {
            bstart[nb] = from;
            bend[nb] = at;
            work[nw++] = nb;
            in_work[nb] = 1;
            nb++;
        }
    }
    while (nw > 0) {
        int32_t B = work[--nw];
        in_work[B] = 0;
        int32_t m = bend[B] - bstart[B];
        memcpy(spl, elems + bstart[B], (size_t)m * sizeof *spl);
        for (int32_t c = 0; c < k; c++) {
            int32_t nt = 0;
            for (int32_t i = 0; i < m; i++) {
                size_t e = (size_t)spl[i] * (size_t)k + (size_t)c;
                for (int32_t j = inv_off[e]; j < inv_off[e + 1]; j++) {
                    /* each state has one c-successor, so it comes once per class */
                    int32_t s = inv[j], X = blk[s], p = loc[s], mp = bstart[X] + bmarked[X];
                    int32_t other = elems[mp];
                    elems[mp] = s;
                    loc[s] = mp;
                    elems[p] = other;
                    loc[other] = p;
                    if (bmarked[X]++ == 0)
                        touched[nt++] = X;
                }
            }
            for (int32_t t = 0; t < nt; t++) {
                int32_t X = touched[t], mk = bmarked[X];
                bmarked[X] = 0;
                if (mk == bend[X] - bstart[X])
                    continue;
                int32_t Y = nb++;
                bstart[Y] = bstart[X];
                bend[Y] = bstart[X] + mk;
                bstart[X] = bend[Y];
                for (int32_t p = bstart[Y]; p < bend[Y]; p++)
                    blk[elems[p]] = Y;
                if (in_work[X] || bend[Y] - bstart[Y] <= bend[X] - bstart[X]) {
                    work[nw++] = Y;
                    in_work[Y] = 1;
                } else {
                    work[nw++] = X;
                    in_work[X] = 1;
                }
            }
        }
    }
#undef DELTA
    *n_blocks = nb;
out:
    free(inv_off);
    free(inv);
    free(elems);
    free(loc);
    free(bstart);
    free(bend);
    free(bmarked);
    free(work);
    free(touched);
    free(spl);
    free(in_work);
    return st;
}

/* The final DFA from the blocks: numbered breadth first from the start's block, byte classes with
 * equal columns merged. */
static pb_status assemble(int32_t n, int32_t k, const int32_t *trans, const uint8_t *accept, const int32_t *blk,
                          int32_t nb, const uint8_t *class_of, pb_dfa *d)
{
    pb_status st = PB_OK;
    int32_t *rep = NULL, *id = NULL, *order = NULL, *tab = NULL;
    uint64_t *colh = NULL;
    PB_CHECK_GOTO(pb_malloc((size_t)nb * sizeof *rep, &rep), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)nb * sizeof *id, &id), st, out);
    PB_CHECK_GOTO(pb_malloc((size_t)nb * sizeof *order, &order), st, out);
    for (int32_t b = 0; b < nb; b++)
        id[b] = -1;
    for (int32_t s = n - 1; s >= 0; s--)
        rep[blk[s]] = s;
    int32_t sink = blk[n], m = 0;
    id[blk[0]] = m;
    order[m++] = blk[0];
    for (int32_t q = 0; q < m; q++) {
        const int32_t *row = trans + (size_t)rep[order[q]] * (size_t)k;
        for (int32_t c = 0; c < k; c++)
            if (row[c] >= 0 && blk[row[c]] != sink && id[blk[row[c]]] < 0) {
                id[blk[row[c]]] = m;
                order[m++] = blk[row[c]];
            }
    }
    /* the table with the old classes, then its distinct columns */
    size_t cells = (size_t)m * (size_t)k;
    PB_CHECK_GOTO(pb_malloc(cells * sizeof *tab, &tab), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)m, sizeof *d->flags, &d->flags), st, out);
    for (int32_t q = 0; q < m; q++) {
        const int32_t *row = trans + (size_t)rep[order[q]] * (size_t)k;
        bool any = false;
        for (int32_t c = 0; c < k; c++) {
            int32_t t = row[c] >= 0 && blk[row[c]] != sink ? id[blk[row[c]]] : -1;
            tab[(size_t)q * (size_t)k + (size_t)c] = t;
            any |= t >= 0;
        }
        if (accept[rep[order[q]]])
            d->flags[q] = (uint8_t)(F_ACCEPT | (any ? 0 : F_FINAL));
    }
    PB_CHECK_GOTO(pb_malloc((size_t)k * sizeof *colh, &colh), st, out);
    int32_t newc[256], keep[256], nk = 0;
    for (int32_t c = 0; c < k; c++) {
        uint64_t h = PB_FNV_START;
        for (int32_t q = 0; q < m; q++)
            h = pb_fnv1a(h, &tab[(size_t)q * (size_t)k + (size_t)c], sizeof *tab);
        colh[c] = h;
        newc[c] = -1;
        for (int32_t j = 0; j < nk && newc[c] < 0; j++) {
            int32_t o = keep[j];
            if (colh[o] != h)
                continue;
            int32_t q = 0;
            while (q < m && tab[(size_t)q * (size_t)k + (size_t)o] == tab[(size_t)q * (size_t)k + (size_t)c])
                q++;
            if (q == m)
                newc[c] = j;
        }
        if (newc[c] < 0) {
            newc[c] = nk;
            keep[nk++] = c;
        }
    }
    PB_CHECK_GOTO(pb_malloc(((size_t)m * (size_t)nk) * sizeof *d->next, &d->next), st, out);
    for (int32_t q = 0; q < m; q++)
        for (int32_t j = 0; j < nk; j++)
            d->next[(size_t)q * (size_t)nk + (size_t)j] = tab[(size_t)q * (size_t)k + (size_t)keep[j]];
    for (int c = 0; c < 256; c++)
        d->class_of[c] = (uint8_t)newc[class_of[c]];
    d->n_states = m;
    d->n_classes = nk;
    d->start = 0;
out:
    free(rep);
    free(id);
    free(order);
    free(tab);
    free(colh);
    return st;
}

/* ---- API --------------------------------------------------------------------- */

pb_status pb_dfa_compile(const char *pat, size_t len, int max_states, pb_dfa **out)
{
    pb_status st = PB_OK;
    parser ps = {.p = (const uint8_t *)pat, .len = len};
    nfa a = {.ps = &ps};
    builder b = {0};
    int32_t *blk = NULL;
    pb_dfa *d = NULL;
    *out = NULL;
    int32_t root, start, match;
    PB_CHECK_GOTO(parse_alt(&ps, 0, &root), st, done);
    if (ps.pos < len) {
        st = bad(ps.pos, "unbalanced ')'");
        goto done;
    }
    PB_CHECK_GOTO(add_state(&a, S_MATCH, 0, 0, -1, -1, &match), st, done);
    PB_CHECK_GOTO(build(&a, root, match, &start), st, done);
    free(ps.nodes);
    free(ps.rg);
    ps.nodes = NULL;
    ps.rg = NULL;
    b.st = a.st;
    b.n_nfa = (int32_t)a.n;
    b.max_states = max_states > 0 ? max_states : INT32_MAX;
    PB_CHECK_GOTO(subset(&b, start), st, done);
    PB_CHECK_GOTO(pb_calloc(1, sizeof *d, &d), st, done);
    d->start = -1;
    int32_t n_live = 0, nb = 0;
    PB_CHECK_GOTO(prune(b.n_states, b.n_classes, b.trans, b.accept, &n_live), st, done);
    if (n_live > 0) { /* every state is reachable from the start: any live one makes it live (and still 0) */
        PB_CHECK_GOTO(pb_malloc(((size_t)n_live + 1) * sizeof *blk, &blk), st, done);
        PB_CHECK_GOTO(minimize(n_live, b.n_classes, b.trans, b.accept, blk, &nb), st, done);
        PB_CHECK_GOTO(assemble(n_live, b.n_classes, b.trans, b.accept, blk, nb, b.class_of, d), st, done);
    }
done:
    free(ps.nodes);
    free(ps.rg);
    free(a.st);
    free(a.entries);
    free(a.suf);
    builder_free(&b);
    free(blk);
    if (st != PB_OK) {
        pb_dfa_free(d);
        return st;
    }
    *out = d;
    return PB_OK;
}

void pb_dfa_free(pb_dfa *d)
{
    if (!d)
        return;
    free(d->next);
    free(d->flags);
    free(d);
}

int32_t pb_dfa_start(const pb_dfa *d) { return d->n_states > 0 ? d->start : -1; }

int32_t pb_dfa_next(const pb_dfa *d, int32_t s, uint8_t b)
{
    if (s < 0 || s >= d->n_states)
        return -1;
    return d->next[(size_t)s * (size_t)d->n_classes + d->class_of[b]];
}

bool pb_dfa_accepts(const pb_dfa *d, int32_t s)
{
    return s >= 0 && s < d->n_states && (d->flags[s] & F_ACCEPT);
}

bool pb_dfa_final(const pb_dfa *d, int32_t s)
{
    return s >= 0 && s < d->n_states && (d->flags[s] & F_FINAL);
}

int32_t pb_dfa_n_states(const pb_dfa *d) { return d->n_states; }

size_t pb_dfa_bytes(const pb_dfa *d)
{
    return sizeof *d + (size_t)d->n_states * ((size_t)d->n_classes * sizeof *d->next + sizeof *d->flags);
}
