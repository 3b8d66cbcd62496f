/* JSON schemas and choice lists as regular expressions (see schema.h).
 *
 * The approach is outlines' json_schema module, written again here: each
 * schema becomes a pattern of its JSON text, with `ws` between tokens:
 *   {ws "k" ws : ws V (ws , ws "k2" ws : ws V)* ws}     [ws V (ws , ws V)* ws]
 * (empty: {ws} and [ws]). The patterns use only the common subset of
 * gen/regex.h and Python's re (no \d \w \s; metacharacters escaped). */
#include "config.h"
#include "gen/schema.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/jbuf.h"

#define MAX_OUT ((size_t)1 << 20) /* the largest pattern we hand out */
#define MAX_NEST 128              /* schema nesting (through $ref too) */
#define MAX_REP 1000              /* the largest count regex.h takes in {n,m} */
#define MAX_BOUND 1e15            /* integer bounds we turn into digit ranges */

/* One character of a JSON string: plain, a short escape or \uXXXX. */
#define STR_ALTS "[^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4}"
#define STR_CHAR "(?:" STR_ALTS ")"
#define RX_STRING PB_SCHEMA_RX_STRING
#define RX_INT "-?(?:0|[1-9][0-9]*)"
#define RX_NUMBER PB_SCHEMA_RX_NUMBER
#define RX_DATE "[0-9]{4}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
#define RX_TIME "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?" \
                "(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
#define RX_UUID "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

/* ---- a growing string, bounded by MAX_OUT ---------------------------- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf;

static void sb_free(sbuf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static pb_status sb_put(sbuf *b, const void *s, size_t n)
{
    if (n > MAX_OUT || b->len + n > MAX_OUT)
        return pb_error(PB_ERR_INPUT, "the schema's pattern is too large (over %zu bytes)", MAX_OUT);
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        b->p = p;
        b->cap = cap;
    }
    if (n)
        memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return PB_OK;
}

static pb_status sb_puts(sbuf *b, const char *s)
{
    return sb_put(b, s, strlen(s));
}

static pb_status sb_printf(sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static pb_status sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return pb_error(PB_ERR_INTERNAL, "schema: formatted piece too long");
    return sb_put(b, tmp, (size_t)n);
}

/* s[0..n) as a regex literal: metacharacters escaped, control bytes \xHH,
 * everything else (UTF-8 included) as is. */
static pb_status put_lit(sbuf *b, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch < 0x20 || ch == 0x7f)
            PB_CHECK(sb_printf(b, "\\x%02x", ch));
        else if (strchr(".^$*+?()[]{}|\\", ch))
            PB_CHECK(sb_printf(b, "\\%c", ch));
        else
            PB_CHECK(sb_put(b, s + i, 1));
    }
    return PB_OK;
}

/* The JSON string literal of s (as json.dumps(s, ensure_ascii=False) and
 * cJSON write it), as a regex literal. */
static pb_status put_json_str(sbuf *b, const char *s)
{
    sbuf q = {0};
    pb_status st = sb_put(&q, "\"", 1);
    for (const unsigned char *u = (const unsigned char *)s; st == PB_OK && *u; u++) {
        switch (*u) {
        case '"': st = sb_puts(&q, "\\\""); break;
        case '\\': st = sb_puts(&q, "\\\\"); break;
        case '\b': st = sb_puts(&q, "\\b"); break;
        case '\f': st = sb_puts(&q, "\\f"); break;
        case '\n': st = sb_puts(&q, "\\n"); break;
        case '\r': st = sb_puts(&q, "\\r"); break;
        case '\t': st = sb_puts(&q, "\\t"); break;
        default:
            st = *u < 0x20 ? sb_printf(&q, "\\u%04x", *u) : sb_put(&q, u, 1);
        }
    }
    if (st == PB_OK)
        st = sb_put(&q, "\"", 1);
    if (st == PB_OK)
        st = put_lit(b, q.p, q.len);
    sb_free(&q);
    return st;
}

/* ---- repetition counts (regex.h takes at most 1000 in {n,m}) ---------- */

/* (u){n} for any n >= 0, nesting groups when n > MAX_REP. */
static pb_status rep_exact(sbuf *b, const char *u, size_t ulen, long n)
{
    if (n == 0)
        return PB_OK;
    if (n <= MAX_REP) {
        PB_CHECK(sb_puts(b, "(?:"));
        PB_CHECK(sb_put(b, u, ulen));
        return n == 1 ? sb_puts(b, ")") : sb_printf(b, "){%ld}", n);
    }
    sbuf big = {0};
    pb_status st = sb_puts(&big, "(?:");
    if (st == PB_OK) st = sb_put(&big, u, ulen);
    if (st == PB_OK) st = sb_printf(&big, "){%d}", MAX_REP);
    if (st == PB_OK) st = rep_exact(b, big.p, big.len, n / MAX_REP);
    if (st == PB_OK) st = rep_exact(b, u, ulen, n % MAX_REP);
    sb_free(&big);
    return st;
}

/* (u){lo,hi}; hi < 0: no upper bound. */
static pb_status rep(sbuf *b, const char *u, size_t ulen, long lo, long hi)
{
    if (hi >= 0 && hi <= MAX_REP) {
        if (hi == 0)
            return PB_OK;
        PB_CHECK(sb_puts(b, "(?:"));
        PB_CHECK(sb_put(b, u, ulen));
        if (lo == hi)
            return lo == 1 ? sb_puts(b, ")") : sb_printf(b, "){%ld}", lo);
        return lo == 0 && hi == 1 ? sb_puts(b, ")?") : sb_printf(b, "){%ld,%ld}", lo, hi);
    }
    if (hi < 0 && lo <= MAX_REP) {
        PB_CHECK(sb_puts(b, "(?:"));
        PB_CHECK(sb_put(b, u, ulen));
        return lo == 0 ? sb_puts(b, ")*") : lo == 1 ? sb_puts(b, ")+") : sb_printf(b, "){%ld,}", lo);
    }
    PB_CHECK(rep_exact(b, u, ulen, lo));
    if (hi < 0)
        return rep(b, u, ulen, 0, -1);
    /* up to hi - lo more: ((u)?){hi - lo} */
    sbuf opt = {0};
    pb_status st = sb_puts(&opt, "(?:");
    if (st == PB_OK) st = sb_put(&opt, u, ulen);
    if (st == PB_OK) st = sb_puts(&opt, ")?");
    if (st == PB_OK) st = rep_exact(b, opt.p, opt.len, hi - lo);
    sb_free(&opt);
    return st;
}

/* ---- integer ranges ---------------------------------------------------- */

static int n_digits(long long v)
{
    int n = 1;
    while (v >= 10) {
        v /= 10;
        n++;
    }
    return n;
}

static long long pow10ll(int n)
{
    long long p = 1;
    while (n-- > 0)
        p *= 10;
    return p;
}

/* The numbers between the digit strings x <= y (both n digits). */
static pb_status digit_range(sbuf *b, const char *x, const char *y, size_t n)
{
    size_t i = 0;
    while (i < n && x[i] == y[i])
        i++;
    PB_CHECK(sb_put(b, x, i));
    if (i == n)
        return PB_OK;
    x += i;
    y += i;
    n -= i;
    char nines[24], zeros[24];
    memset(nines, '9', n - 1);
    memset(zeros, '0', n - 1);
    bool x_low = !memcmp(x + 1, zeros, n - 1), y_high = !memcmp(y + 1, nines, n - 1);
    char lo = (char)(x[0] + !x_low), hi = (char)(y[0] - !y_high);
    int alts = !x_low + (lo <= hi) + !y_high;
    bool first = true;
    if (alts > 1)
        PB_CHECK(sb_puts(b, "(?:"));
    if (!x_low) { /* x0 then x[1..] up to 99..9 */
        PB_CHECK(sb_put(b, x, 1));
        PB_CHECK(digit_range(b, x + 1, nines, n - 1));
        first = false;
    }
    if (lo <= hi) { /* whole decades in the middle */
        if (!first)
            PB_CHECK(sb_puts(b, "|"));
        PB_CHECK(lo == hi ? sb_put(b, &lo, 1) : sb_printf(b, "[%c-%c]", lo, hi));
        if (n - 1 == 1)
            PB_CHECK(sb_puts(b, "[0-9]"));
        else if (n > 2)
            PB_CHECK(sb_printf(b, "[0-9]{%zu}", n - 1));
        first = false;
    }
    if (!y_high) { /* y0 then 00..0 up to y[1..] */
        if (!first)
            PB_CHECK(sb_puts(b, "|"));
        PB_CHECK(sb_put(b, y, 1));
        PB_CHECK(digit_range(b, zeros, y + 1, n - 1));
    }
    return alts > 1 ? sb_puts(b, ")") : PB_OK;
}

/* Decimals without leading zeros in [a, b], 0 <= a; b < 0: no upper bound.
 * Alternatives of the form "|x" (each with a leading bar). */
static pb_status nonneg_range(sbuf *b, long long a, long long hi)
{
    int la = n_digits(a), lb = hi < 0 ? la : n_digits(hi);
    for (int len = la; len <= lb; len++) {
        long long x = len == 1 ? 0 : pow10ll(len - 1), y = pow10ll(len) - 1;
        if (x < a)
            x = a;
        if (hi >= 0 && y > hi)
            y = hi;
        char xs[24], ys[24];
        snprintf(xs, sizeof xs, "%lld", x);
        snprintf(ys, sizeof ys, "%lld", y);
        PB_CHECK(sb_puts(b, "|"));
        PB_CHECK(digit_range(b, xs, ys, (size_t)len));
    }
    if (hi < 0) /* every longer number */
        PB_CHECK(sb_printf(b, "|[1-9][0-9]{%d,}", la));
    return PB_OK;
}

/* The integers in [lo, hi] (has_lo / has_hi false: unbounded), lo <= hi. */
static pb_status int_range(sbuf *b, bool has_lo, long long lo, bool has_hi, long long hi)
{
    if (!has_lo && !has_hi)
        return sb_puts(b, RX_INT);
    sbuf alt = {0};
    pb_status st = PB_OK;
    if (!has_lo || lo < 0) { /* the negatives: "-" then [max(1, -hi), -lo] */
        long long a = has_hi && hi < 0 ? -hi : 1;
        sbuf neg = {0};
        st = nonneg_range(&neg, a, has_lo ? -lo : -1);
        if (st == PB_OK) st = sb_puts(&alt, "|-(?:");
        if (st == PB_OK) st = sb_put(&alt, neg.p + 1, neg.len - 1);
        if (st == PB_OK) st = sb_puts(&alt, ")");
        sb_free(&neg);
    }
    if (st == PB_OK && (!has_hi || hi >= 0))
        st = nonneg_range(&alt, has_lo && lo > 0 ? lo : 0, has_hi ? hi : -1);
    if (st == PB_OK) st = sb_puts(b, "(?:");
    if (st == PB_OK) st = sb_put(b, alt.p + 1, alt.len - 1);
    if (st == PB_OK) st = sb_puts(b, ")");
    sb_free(&alt);
    return st;
}

/* ---- the converter ----------------------------------------------------- */

typedef struct ctx {
    const cJSON *root;
    const char *ws;
    sbuf path; /* JSON pointer of the schema at hand */
    const cJSON *refs[MAX_NEST]; /* $ref targets being expanded */
    int n_refs, depth;
    sbuf any[PB_SCHEMA_ANY_DEPTH + 1]; /* any JSON value, nesting at most d */
} ctx;

static pb_status refuse(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static pb_status refuse(ctx *c, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pb_error(PB_ERR_INPUT, "at %s: %s", c->path.len ? c->path.p : "/", msg);
}

/* Append "/seg" (escaped as a JSON pointer) to the path; *mark: where to cut back. */
static pb_status path_push(ctx *c, const char *seg, size_t *mark)
{
    *mark = c->path.len;
    PB_CHECK(sb_put(&c->path, "/", 1));
    for (const char *s = seg; *s; s++)
        PB_CHECK(*s == '~' ? sb_puts(&c->path, "~0") : *s == '/' ? sb_puts(&c->path, "~1") : sb_put(&c->path, s, 1));
    return PB_OK;
}

static pb_status path_push_index(ctx *c, int i, size_t *mark)
{
    char s[16];
    snprintf(s, sizeof s, "%d", i);
    return path_push(c, s, mark);
}

static void path_pop(ctx *c, size_t mark)
{
    c->path.len = mark;
    if (c->path.p)
        c->path.p[mark] = '\0';
}

/* refuse() about keyword kw of the schema at hand: "at /path/kw: ..." */
#define REFUSE_AT(c, kw, ...) \
    do { size_t m_; PB_CHECK(path_push((c), (kw), &m_)); pb_status s_ = refuse((c), __VA_ARGS__); \
         path_pop((c), m_); return s_; } while (0)

static const char *const annotations[] = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs",
                                          "definitions", NULL};
static const char *const keywords[] = {"type", "properties", "required", "additionalProperties", "minProperties",
                                       "maxProperties", "items", "prefixItems", "minItems", "maxItems", "enum",
                                       "const", "anyOf", "oneOf", "allOf", "$ref", "minLength", "maxLength",
                                       "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
                                       "exclusiveMaximum", NULL};
/* keywords that make the whole schema (nothing else but annotations beside them) */
static const char *const combinators[] = {"$ref", "anyOf", "oneOf", "allOf", "enum", "const", NULL};

static bool in_list(const char *const *list, const char *s)
{
    for (; *list; list++)
        if (!strcmp(*list, s))
            return true;
    return false;
}

enum { T_NULL = 1, T_BOOL = 2, T_OBJ = 4, T_ARR = 8, T_STR = 16, T_NUM = 32, T_INT = 64 };
static const struct {
    const char *name;
    int bit;
} type_names[] = {{"null", T_NULL}, {"boolean", T_BOOL}, {"object", T_OBJ}, {"array", T_ARR},
                  {"string", T_STR}, {"number", T_NUM}, {"integer", T_INT}};
#define N_TYPES ((int)(sizeof type_names / sizeof type_names[0]))

static const cJSON *kw(const cJSON *s, const char *name)
{
    return cJSON_GetObjectItemCaseSensitive(s, name);
}

/* A count keyword: absent (*v = def) or a non-negative integer. */
static pb_status get_count(ctx *c, const cJSON *s, const char *name, long def, long *v)
{
    const cJSON *j = kw(s, name);
    *v = def;
    if (!j)
        return PB_OK;
    if (!cJSON_IsNumber(j) || !isfinite(j->valuedouble) || j->valuedouble < 0 || j->valuedouble > 2147483647.0 ||
        floor(j->valuedouble) != j->valuedouble)
        REFUSE_AT(c, name, "must be a non-negative integer");
    *v = (long)j->valuedouble;
    return PB_OK;
}

static pb_status gen(ctx *c, const cJSON *s, sbuf *out);

/* The schema sub into out, the path extended by key (if any) and index (if >= 0). */
static pb_status gen_at(ctx *c, const cJSON *sub, const char *key, int index, sbuf *out)
{
    size_t mark = c->path.len, m2;
    if (key)
        PB_CHECK(path_push(c, key, &m2));
    if (index >= 0)
        PB_CHECK(path_push_index(c, index, &m2));
    PB_CHECK(gen(c, sub, out)); /* on failure the message names the path already */
    path_pop(c, mark);
    return PB_OK;
}

/* Any JSON value with objects and arrays nested at most d deep. */
static pb_status any_value(ctx *c, int d, sbuf *out)
{
    sbuf *a = &c->any[d];
    if (!a->len) {
        const char *ws = c->ws;
        if (d == 0) {
            PB_CHECK(sb_puts(a, "(?:" RX_STRING "|" RX_NUMBER "|true|false|null)"));
        } else {
            sbuf v = {0};
            pb_status st = any_value(c, d - 1, &v);
            const char *V = v.p;
            if (st == PB_OK)
                st = sb_puts(a, "(?:" RX_STRING "|" RX_NUMBER "|true|false|null");
            /* |\[ws(?:V(?:ws,ws V)*ws)?\]|\{ws(?:S ws:ws V(?:ws,ws S ws:ws V)*ws)?\}) */
            const char *parts[] = {"|\\[", ws, "(?:", V, "(?:", ws, ",", ws, V, ")*", ws, ")?\\]",
                                   "|\\{", ws, "(?:" RX_STRING, ws, ":", ws, V, "(?:", ws, ",", ws,
                                   RX_STRING, ws, ":", ws, V, ")*", ws, ")?\\})", NULL};
            for (int i = 0; st == PB_OK && parts[i]; i++)
                st = sb_puts(a, parts[i]);
            sb_free(&v);
            PB_CHECK(st);
        }
    }
    return sb_put(out, a->p, a->len);
}

/* A const / enum value: scalars as their JSON text, objects and arrays
 * with ws between tokens (keys in the value's order). */
static pb_status gen_value(ctx *c, const cJSON *v, sbuf *out)
{
    if (cJSON_IsNull(v))
        return sb_puts(out, "null");
    if (cJSON_IsTrue(v))
        return sb_puts(out, "true");
    if (cJSON_IsFalse(v))
        return sb_puts(out, "false");
    if (cJSON_IsString(v))
        return put_json_str(out, v->valuestring);
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        if (isfinite(d) && floor(d) == d && fabs(d) < 1e16) /* 2 and 2.0 alike */
            return sb_printf(out, "%s%.0f(?:\\.0)?", d < 0 ? "-" : "", fabs(d));
        char *t = cJSON_PrintUnformatted(v);
        if (!t)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        pb_status st = put_lit(out, t, strlen(t));
        cJSON_free(t);
        return st;
    }
    bool obj = cJSON_IsObject(v);
    if (!obj && !cJSON_IsArray(v))
        return refuse(c, "a value of an unknown kind");
    PB_CHECK(sb_puts(out, obj ? "\\{" : "\\["));
    PB_CHECK(sb_puts(out, c->ws));
    const cJSON *e;
    bool first = true;
    cJSON_ArrayForEach(e, v) {
        if (!first) {
            PB_CHECK(sb_puts(out, c->ws));
            PB_CHECK(sb_puts(out, ","));
            PB_CHECK(sb_puts(out, c->ws));
        }
        first = false;
        if (obj) {
            PB_CHECK(put_json_str(out, e->string));
            PB_CHECK(sb_puts(out, c->ws));
            PB_CHECK(sb_puts(out, ":"));
            PB_CHECK(sb_puts(out, c->ws));
        }
        PB_CHECK(gen_value(c, e, out));
    }
    if (!first)
        PB_CHECK(sb_puts(out, c->ws));
    return sb_puts(out, obj ? "\\}" : "\\]");
}

static bool value_has_type(const cJSON *v, int types)
{
    if (cJSON_IsNull(v)) return types & T_NULL;
    if (cJSON_IsBool(v)) return types & T_BOOL;
    if (cJSON_IsString(v)) return types & T_STR;
    if (cJSON_IsObject(v)) return types & T_OBJ;
    if (cJSON_IsArray(v)) return types & T_ARR;
    if (cJSON_IsNumber(v)) {
        double d = v->valuedouble;
        return (types & T_NUM) || ((types & T_INT) && isfinite(d) && floor(d) == d);
    }
    return false;
}

/* The "type" keyword: *bits in the order given (order[], *n). */
static pb_status get_types(ctx *c, const cJSON *t, int *order, int *n)
{
    *n = 0;
    bool list = cJSON_IsArray(t);
    if (!list && !cJSON_IsString(t))
        REFUSE_AT(c, "type", "must be a type name or a list of them");
    const cJSON *e = list ? t->child : t;
    for (; e; e = list ? e->next : NULL) {
        int bit = 0;
        if (cJSON_IsString(e))
            for (int i = 0; i < N_TYPES; i++)
                if (!strcmp(e->valuestring, type_names[i].name))
                    bit = type_names[i].bit;
        if (!bit)
            REFUSE_AT(c, "type", "'%s' is not a type name", cJSON_IsString(e) ? e->valuestring : "(not a string)");
        bool dup = false;
        for (int i = 0; i < *n; i++)
            dup |= order[i] == bit;
        if (!dup)
            order[(*n)++] = bit;
    }
    if (!*n)
        REFUSE_AT(c, "type", "must not be an empty list");
    return PB_OK;
}

static pb_status gen_enum(ctx *c, const cJSON *s, const cJSON *vals, bool is_const, sbuf *out)
{
    int types = ~0, order[N_TYPES], n;
    const cJSON *t = kw(s, "type");
    if (t) {
        PB_CHECK(get_types(c, t, order, &n));
        types = 0;
        for (int i = 0; i < n; i++)
            types |= order[i];
    }
    if (!is_const && (!cJSON_IsArray(vals) || !vals->child))
        REFUSE_AT(c, "enum", "must be a non-empty list");
    PB_CHECK(sb_puts(out, "(?:"));
    int kept = 0;
    const cJSON *v = is_const ? vals : vals->child;
    for (; v; v = is_const ? NULL : v->next) {
        if (!value_has_type(v, types))
            continue;
        if (kept++)
            PB_CHECK(sb_puts(out, "|"));
        PB_CHECK(gen_value(c, v, out));
    }
    if (!kept)
        return refuse(c, "no %s value has the schema's type", is_const ? "const" : "enum");
    return sb_puts(out, ")");
}

/* $ref: a JSON pointer into the root schema ("#", "#/$defs/Name", ...). */
static pb_status gen_ref(ctx *c, const cJSON *r, sbuf *out)
{
    if (!cJSON_IsString(r))
        REFUSE_AT(c, "$ref", "must be a string");
    const char *ref = r->valuestring;
    if (ref[0] != '#' || (ref[1] && ref[1] != '/'))
        REFUSE_AT(c, "$ref", "only references into this schema ('#/$defs/Name') are supported: '%s'", ref);
    const cJSON *t = c->root;
    for (const char *p = ref + 1; *p && t;) {
        sbuf seg = {0};
        pb_status st = PB_OK;
        for (p++; st == PB_OK && *p && *p != '/'; p++) {
            char ch = *p;
            if (ch == '~' && (p[1] == '0' || p[1] == '1'))
                ch = *++p == '0' ? '~' : '/';
            st = sb_put(&seg, &ch, 1);
        }
        if (st == PB_OK && !seg.p)
            st = sb_put(&seg, "", 0);
        if (st != PB_OK) {
            sb_free(&seg);
            return st;
        }
        if (cJSON_IsObject(t)) {
            t = cJSON_GetObjectItemCaseSensitive(t, seg.p);
        } else if (cJSON_IsArray(t) && seg.len && seg.len < 9 && strspn(seg.p, "0123456789") == seg.len) {
            t = cJSON_GetArrayItem(t, atoi(seg.p));
        } else {
            t = NULL;
        }
        sb_free(&seg);
    }
    if (!t)
        REFUSE_AT(c, "$ref", "'%s' points nowhere in the schema", ref);
    for (int i = 0; i < c->n_refs; i++)
        if (c->refs[i] == t)
            REFUSE_AT(c, "$ref", "recursive $ref '%s' is not supported", ref);
    /* errors inside name the target's place */
    sbuf saved = c->path;
    c->path = (sbuf){0};
    pb_status st = sb_puts(&c->path, ref + 1);
    if (st == PB_OK) {
        c->refs[c->n_refs++] = t;
        st = gen(c, t, out);
        c->n_refs--;
    }
    sb_free(&c->path);
    c->path = saved;
    return st;
}

/* anyOf / oneOf (as anyOf) / allOf of one schema. */
static pb_status gen_combo(ctx *c, const cJSON *list, const char *name, sbuf *out)
{
    if (!cJSON_IsArray(list) || !list->child)
        REFUSE_AT(c, name, "must be a non-empty list of schemas");
    if (!strcmp(name, "allOf")) {
        if (list->child->next)
            REFUSE_AT(c, name, "allOf with more than one schema is not supported");
        return gen_at(c, list->child, name, 0, out);
    }
    PB_CHECK(sb_puts(out, "(?:"));
    int i = 0;
    for (const cJSON *e = list->child; e; e = e->next, i++) {
        if (i)
            PB_CHECK(sb_puts(out, "|"));
        PB_CHECK(gen_at(c, e, name, i, out));
    }
    return sb_puts(out, ")");
}

/* A bound of an integer: absent, or an integer within +-MAX_BOUND. */
static pb_status int_bound(ctx *c, const cJSON *s, const char *name, bool *has, long long *v)
{
    const cJSON *j = kw(s, name);
    *has = false;
    if (!j || cJSON_IsBool(j))
        return PB_OK;
    if (!cJSON_IsNumber(j))
        REFUSE_AT(c, name, "must be a number");
    double d = j->valuedouble;
    if (!isfinite(d) || floor(d) != d || fabs(d) > MAX_BOUND)
        REFUSE_AT(c, name, "bounds of integers must be integers within +-1e15");
    *has = true;
    *v = (long long)d;
    return PB_OK;
}

static pb_status gen_integer(ctx *c, const cJSON *s, sbuf *out)
{
    bool has_min, has_max, has_xmin, has_xmax;
    long long min = 0, max = 0, xmin = 0, xmax = 0;
    PB_CHECK(int_bound(c, s, "minimum", &has_min, &min));
    PB_CHECK(int_bound(c, s, "maximum", &has_max, &max));
    PB_CHECK(int_bound(c, s, "exclusiveMinimum", &has_xmin, &xmin));
    PB_CHECK(int_bound(c, s, "exclusiveMaximum", &has_xmax, &xmax));
    /* draft 4: exclusiveMinimum / exclusiveMaximum true make minimum / maximum exclusive */
    if (cJSON_IsTrue(kw(s, "exclusiveMinimum"))) {
        if (!has_min)
            REFUSE_AT(c, "exclusiveMinimum", "true needs a minimum");
        min++;
    }
    if (cJSON_IsTrue(kw(s, "exclusiveMaximum"))) {
        if (!has_max)
            REFUSE_AT(c, "exclusiveMaximum", "true needs a maximum");
        max--;
    }
    if (has_xmin && (!has_min || xmin + 1 > min)) {
        min = xmin + 1;
        has_min = true;
    }
    if (has_xmax && (!has_max || xmax - 1 < max)) {
        max = xmax - 1;
        has_max = true;
    }
    if (has_min && has_max && min > max)
        return refuse(c, "no integer is within the bounds");
    return int_range(out, has_min, min, has_max, max);
}

static pb_status gen_string(ctx *c, const cJSON *s, sbuf *out)
{
    long min, max;
    PB_CHECK(get_count(c, s, "minLength", 0, &min));
    PB_CHECK(get_count(c, s, "maxLength", -1, &max));
    const cJSON *pat = kw(s, "pattern"), *fmt = kw(s, "format");
    const char *other = kw(s, "minLength") ? "minLength" : kw(s, "maxLength") ? "maxLength" : NULL;
    if (pat && fmt)
        REFUSE_AT(c, "format", "format beside pattern is not supported");
    if (pat) {
        if (!cJSON_IsString(pat))
            REFUSE_AT(c, "pattern", "must be a string");
        if (other)
            REFUSE_AT(c, other, "%s beside pattern is not supported", other);
        /* the pattern matches the raw characters between the quotes, whole */
        const char *p = pat->valuestring;
        size_t n = strlen(p);
        if (n && p[0] == '^') {
            p++;
            n--;
        }
        if (n && p[n - 1] == '$') {
            size_t bs = 0;
            while (bs + 1 < n && p[n - 2 - bs] == '\\')
                bs++;
            if (bs % 2 == 0)
                n--;
        }
        PB_CHECK(sb_puts(out, "\"(?:"));
        PB_CHECK(sb_put(out, p, n));
        return sb_puts(out, ")\"");
    }
    if (fmt) {
        if (!cJSON_IsString(fmt))
            REFUSE_AT(c, "format", "must be a string");
        if (other)
            REFUSE_AT(c, other, "%s beside format is not supported", other);
        const char *f = fmt->valuestring, *rx = NULL;
        if (!strcmp(f, "date")) rx = "\"" RX_DATE "\"";
        else if (!strcmp(f, "time")) rx = "\"" RX_TIME "\"";
        else if (!strcmp(f, "date-time")) rx = "\"" RX_DATE "T" RX_TIME "\"";
        else if (!strcmp(f, "uuid")) rx = "\"" RX_UUID "\"";
        else
            REFUSE_AT(c, "format", "format '%s' is not supported", f);
        return sb_puts(out, rx);
    }
    if (max >= 0 && min > max)
        return refuse(c, "minLength is over maxLength");
    PB_CHECK(sb_puts(out, "\""));
    PB_CHECK(rep(out, STR_ALTS, strlen(STR_ALTS), min, max));
    return sb_puts(out, "\"");
}

/* [ws E (ws,ws E){min-1,max-1} ws] with E the element (or nothing for {0,0}),
 * the whole body optional when min == 0. Also for objects' members. */
static pb_status gen_seq(ctx *c, const char *open, const char *close, const sbuf *e, long min, long max,
                         sbuf *out)
{
    PB_CHECK(sb_puts(out, open));
    PB_CHECK(sb_puts(out, c->ws));
    if (max != 0) {
        sbuf more = {0};
        pb_status st = sb_puts(&more, c->ws);
        if (st == PB_OK) st = sb_puts(&more, ",");
        if (st == PB_OK) st = sb_puts(&more, c->ws);
        if (st == PB_OK) st = sb_put(&more, e->p, e->len);
        if (st == PB_OK && min == 0) st = sb_puts(out, "(?:");
        if (st == PB_OK) st = sb_put(out, e->p, e->len);
        if (st == PB_OK) st = rep(out, more.p, more.len, min ? min - 1 : 0, max < 0 ? -1 : max - 1);
        if (st == PB_OK) st = sb_puts(out, c->ws);
        if (st == PB_OK && min == 0) st = sb_puts(out, ")?");
        sb_free(&more);
        PB_CHECK(st);
    }
    return sb_puts(out, close);
}

static pb_status gen_array(ctx *c, const cJSON *s, sbuf *out)
{
    long min, max;
    PB_CHECK(get_count(c, s, "minItems", 0, &min));
    PB_CHECK(get_count(c, s, "maxItems", -1, &max));
    if (max >= 0 && min > max)
        return refuse(c, "minItems is over maxItems");
    const cJSON *items = kw(s, "items"), *prefix = kw(s, "prefixItems");
    if (items && cJSON_IsArray(items))
        REFUSE_AT(c, "items", "a list of schemas is not supported (use prefixItems)");
    if (items && !cJSON_IsObject(items) && !cJSON_IsBool(items))
        REFUSE_AT(c, "items", "must be a schema");
    if (prefix && !cJSON_IsArray(prefix))
        REFUSE_AT(c, "prefixItems", "must be a list of schemas");
    int k = prefix ? cJSON_GetArraySize(prefix) : 0;
    bool rest_none = items && cJSON_IsFalse(items);
    if (rest_none && (max < 0 || max > k))
        max = k;
    if (max >= 0 && k > max)
        k = (int)max;
    if (max >= 0 && min > max)
        return refuse(c, "no array fits: minItems is over the items allowed");
    sbuf rest = {0};
    pb_status st = PB_OK;
    if (!rest_none)
        st = items ? gen_at(c, items, "items", -1, &rest) : any_value(c, PB_SCHEMA_ANY_DEPTH, &rest);
    if (st == PB_OK && k == 0)
        st = gen_seq(c, "\\[", "\\]", &rest, min, max, out);
    if (st != PB_OK || k == 0) {
        sb_free(&rest);
        return st;
    }
    /* tuple: E0 (ws,ws E1 (ws,ws E2 ... (ws,ws REST){a,b} )? )? ; element i optional when i >= min */
    sbuf el = {0}, more = {0};
    st = sb_puts(out, "\\[");
    if (st == PB_OK) st = sb_puts(out, c->ws);
    if (st == PB_OK && min == 0) st = sb_puts(out, "(?:");
    const cJSON *p = prefix->child;
    for (int i = 0; st == PB_OK && i < k; i++, p = p->next) {
        if (i) {
            if (i >= min) st = sb_puts(out, "(?:");
            if (st == PB_OK) st = sb_puts(out, c->ws);
            if (st == PB_OK) st = sb_puts(out, ",");
            if (st == PB_OK) st = sb_puts(out, c->ws);
        }
        el.len = 0;
        if (st == PB_OK) st = gen_at(c, p, "prefixItems", i, &el);
        if (st == PB_OK) st = sb_put(out, el.p, el.len);
    }
    if (st == PB_OK && !rest_none && (max < 0 || max > k)) {
        st = sb_puts(&more, c->ws);
        if (st == PB_OK) st = sb_puts(&more, ",");
        if (st == PB_OK) st = sb_puts(&more, c->ws);
        if (st == PB_OK) st = sb_put(&more, rest.p, rest.len);
        if (st == PB_OK) st = rep(out, more.p, more.len, min > k ? min - k : 0, max < 0 ? -1 : max - k);
    }
    for (int i = k - 1; st == PB_OK && i >= 1; i--)
        if (i >= min)
            st = sb_puts(out, ")?");
    if (st == PB_OK) st = sb_puts(out, c->ws);
    if (st == PB_OK && min == 0) st = sb_puts(out, ")?");
    if (st == PB_OK) st = sb_puts(out, "\\]");
    sb_free(&el);
    sb_free(&more);
    sb_free(&rest);
    return st;
}

/* An object without properties: any keys, values of additionalProperties. */
static pb_status gen_free_object(ctx *c, const cJSON *s, const cJSON *ap, sbuf *out)
{
    long min, max;
    PB_CHECK(get_count(c, s, "minProperties", 0, &min));
    PB_CHECK(get_count(c, s, "maxProperties", -1, &max));
    if (max >= 0 && min > max)
        return refuse(c, "minProperties is over maxProperties");
    const cJSON *req = kw(s, "required");
    if (req && (!cJSON_IsArray(req) || req->child))
        REFUSE_AT(c, "required", "required without properties is not supported");
    if (cJSON_IsFalse(ap))
        max = 0;
    if (max == 0 && min > 0)
        return refuse(c, "no object fits: minProperties > 0 and no property is allowed");
    sbuf v = {0}, m = {0};
    pb_status st = PB_OK;
    if (max != 0)
        st = ap && cJSON_IsObject(ap) ? gen_at(c, ap, "additionalProperties", -1, &v)
                                       : any_value(c, PB_SCHEMA_ANY_DEPTH, &v);
    const char *parts[] = {RX_STRING, c->ws, ":", c->ws, NULL};
    for (int i = 0; st == PB_OK && max != 0 && parts[i]; i++)
        st = sb_puts(&m, parts[i]);
    if (st == PB_OK && max != 0) st = sb_put(&m, v.p, v.len);
    if (st == PB_OK) st = gen_seq(c, "\\{", "\\}", &m, min, max, out);
    sb_free(&v);
    sb_free(&m);
    return st;
}

static pb_status gen_object(ctx *c, const cJSON *s, sbuf *out)
{
    const cJSON *props = kw(s, "properties"), *req = kw(s, "required"), *ap = kw(s, "additionalProperties");
    if (props && !cJSON_IsObject(props))
        REFUSE_AT(c, "properties", "must be an object of schemas");
    if (ap && !cJSON_IsObject(ap) && !cJSON_IsBool(ap))
        REFUSE_AT(c, "additionalProperties", "must be a schema");
    if (req) {
        if (!cJSON_IsArray(req))
            REFUSE_AT(c, "required", "must be a list of names");
        for (const cJSON *r = req->child; r; r = r->next)
            if (!cJSON_IsString(r))
                REFUSE_AT(c, "required", "must be a list of names");
    }
    int n = props ? cJSON_GetArraySize(props) : 0;
    if (n == 0)
        return gen_free_object(c, s, ap, out);
    if (ap && !cJSON_IsFalse(ap))
        REFUSE_AT(c, "additionalProperties", "additionalProperties other than false beside properties "
                                             "is not supported");
    const char *count_kw = kw(s, "minProperties") ? "minProperties" : kw(s, "maxProperties") ? "maxProperties" : NULL;
    if (count_kw)
        REFUSE_AT(c, count_kw, "%s beside properties is not supported", count_kw);
    if (req)
        for (const cJSON *r = req->child; r; r = r->next)
            if (!cJSON_GetObjectItemCaseSensitive(props, r->valuestring))
                REFUSE_AT(c, "required", "'%s' is not among the properties", r->valuestring);
    /* P_i = ws "key" ws : ws VALUE */
    sbuf *pv = calloc((size_t)n, sizeof *pv);
    bool *required = calloc((size_t)n, sizeof *required);
    sbuf comma = {0};
    pb_status st = pv && required ? PB_OK : pb_error(PB_ERR_NOMEM, "out of memory");
    int last_req = -1, i = 0;
    size_t mark = 0;
    if (st == PB_OK) st = path_push(c, "properties", &mark);
    for (const cJSON *p = props ? props->child : NULL; st == PB_OK && p; p = p->next, i++) {
        for (const cJSON *r = req ? req->child : NULL; r; r = r->next)
            if (!strcmp(r->valuestring, p->string))
                required[i] = true;
        if (required[i])
            last_req = i;
        st = sb_puts(&pv[i], c->ws);
        if (st == PB_OK) st = put_json_str(&pv[i], p->string);
        if (st == PB_OK) st = sb_puts(&pv[i], c->ws);
        if (st == PB_OK) st = sb_puts(&pv[i], ":");
        if (st == PB_OK) st = sb_puts(&pv[i], c->ws);
        if (st == PB_OK) st = gen_at(c, p, p->string, -1, &pv[i]);
    }
    if (st == PB_OK) {
        path_pop(c, mark);
        st = sb_puts(&comma, c->ws);
    }
    if (st == PB_OK) st = sb_puts(&comma, ",");
    if (st == PB_OK) st = sb_puts(out, "\\{");
    if (st == PB_OK && last_req >= 0) {
        /* before the last required: (P ws,)? or P ws, ; after: (ws,P)? */
        for (i = 0; st == PB_OK && i < n; i++) {
            bool opt = !required[i];
            if (opt) st = sb_puts(out, "(?:");
            if (st == PB_OK && i > last_req) st = sb_put(out, comma.p, comma.len);
            if (st == PB_OK) st = sb_put(out, pv[i].p, pv[i].len);
            if (st == PB_OK && i < last_req) st = sb_put(out, comma.p, comma.len);
            if (st == PB_OK && opt) st = sb_puts(out, ")?");
        }
    } else if (st == PB_OK) {
        /* none required: (P_i (ws,P_j)? ... | ...)? over the first one present */
        st = sb_puts(out, "(?:");
        for (i = 0; st == PB_OK && i < n; i++) {
            if (i) st = sb_puts(out, "|");
            if (st == PB_OK) st = sb_put(out, pv[i].p, pv[i].len);
            for (int j = i + 1; st == PB_OK && j < n; j++) {
                st = sb_puts(out, "(?:");
                if (st == PB_OK) st = sb_put(out, comma.p, comma.len);
                if (st == PB_OK) st = sb_put(out, pv[j].p, pv[j].len);
                if (st == PB_OK) st = sb_puts(out, ")?");
            }
        }
        if (st == PB_OK) st = sb_puts(out, ")?");
    }
    if (st == PB_OK) st = sb_puts(out, c->ws);
    if (st == PB_OK) st = sb_puts(out, "\\}");
    for (i = 0; pv && i < n; i++)
        sb_free(&pv[i]);
    free(pv);
    free(required);
    sb_free(&comma);
    return st;
}

static pb_status gen_type(ctx *c, const cJSON *s, int bit, sbuf *out)
{
    static const char *const num_kw[] = {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", NULL};
    switch (bit) {
    case T_NULL: return sb_puts(out, "null");
    case T_BOOL: return sb_puts(out, "(?:true|false)");
    case T_STR: return gen_string(c, s, out);
    case T_INT: return gen_integer(c, s, out);
    case T_ARR: return gen_array(c, s, out);
    case T_OBJ: return gen_object(c, s, out);
    default:
        for (int i = 0; num_kw[i]; i++)
            if (kw(s, num_kw[i]))
                REFUSE_AT(c, num_kw[i], "%s is not supported for numbers", num_kw[i]);
        return sb_puts(out, RX_NUMBER);
    }
}

static pb_status gen(ctx *c, const cJSON *s, sbuf *out)
{
    if (cJSON_IsTrue(s))
        return any_value(c, PB_SCHEMA_ANY_DEPTH, out);
    if (cJSON_IsFalse(s))
        return refuse(c, "the schema false matches nothing");
    if (!cJSON_IsObject(s))
        return refuse(c, "a schema must be an object or a boolean");
    if (c->depth >= MAX_NEST)
        return refuse(c, "the schema nests more than %d deep", MAX_NEST);
    const cJSON *k, *comb = NULL;
    cJSON_ArrayForEach(k, s) {
        if (in_list(annotations, k->string))
            continue;
        if (!in_list(keywords, k->string))
            return refuse(c, "keyword '%s' is not supported", k->string);
        if (in_list(combinators, k->string)) {
            if (comb)
                return refuse(c, "keyword '%s' beside '%s' is not supported", k->string, comb->string);
            comb = k;
        }
    }
    if (comb) /* nothing else but annotations (and type beside enum / const) */
        cJSON_ArrayForEach(k, s) {
            bool typed_enum = !strcmp(k->string, "type") && (!strcmp(comb->string, "enum") ||
                                                             !strcmp(comb->string, "const"));
            if (k != comb && !in_list(annotations, k->string) && !typed_enum)
                return refuse(c, "keyword '%s' beside '%s' is not supported", k->string, comb->string);
        }
    c->depth++;
    pb_status st;
    if (!comb) {
        int order[N_TYPES], n = 0;
        const cJSON *t = kw(s, "type");
        st = PB_OK;
        if (t) {
            st = get_types(c, t, order, &n);
        } else { /* no type: the kinds its keywords constrain, or any value */
            static const struct {
                const char *kw;
                int bit;
            } infer[] = {{"properties", T_OBJ}, {"required", T_OBJ}, {"additionalProperties", T_OBJ},
                         {"minProperties", T_OBJ}, {"maxProperties", T_OBJ}, {"items", T_ARR},
                         {"prefixItems", T_ARR}, {"minItems", T_ARR}, {"maxItems", T_ARR},
                         {"minLength", T_STR}, {"maxLength", T_STR}, {"pattern", T_STR},
                         {"format", T_STR}, {"minimum", T_NUM}, {"maximum", T_NUM},
                         {"exclusiveMinimum", T_NUM}, {"exclusiveMaximum", T_NUM}};
            for (size_t i = 0; i < sizeof infer / sizeof infer[0]; i++) {
                if (!kw(s, infer[i].kw))
                    continue;
                bool dup = false;
                for (int j = 0; j < n; j++)
                    dup |= order[j] == infer[i].bit;
                if (!dup)
                    order[n++] = infer[i].bit;
            }
            if (!n)
                st = any_value(c, PB_SCHEMA_ANY_DEPTH, out);
        }
        if (st == PB_OK && n > 1) st = sb_puts(out, "(?:");
        for (int i = 0; st == PB_OK && i < n; i++) {
            if (i) st = sb_puts(out, "|");
            if (st == PB_OK) st = gen_type(c, s, order[i], out);
        }
        if (st == PB_OK && n > 1) st = sb_puts(out, ")");
    } else if (!strcmp(comb->string, "$ref")) {
        st = gen_ref(c, comb, out);
    } else if (!strcmp(comb->string, "enum") || !strcmp(comb->string, "const")) {
        st = gen_enum(c, s, comb, !strcmp(comb->string, "const"), out);
    } else {
        st = gen_combo(c, comb, comb->string, out);
    }
    c->depth--;
    return st;
}

pb_status pb_schema_regex(const cJSON *schema, const char *ws, char **out)
{
    *out = NULL;
    if (!schema)
        return pb_error(PB_ERR_INPUT, "no schema");
    ctx c;
    memset(&c, 0, sizeof c);
    c.root = schema;
    sbuf wsb = {0}, res = {0};
    if (!ws)
        ws = PB_SCHEMA_WS;
    pb_status st = PB_OK;
    if (strchr(ws, '|')) { /* keep an alternation within its place */
        st = sb_puts(&wsb, "(?:");
        if (st == PB_OK) st = sb_puts(&wsb, ws);
        if (st == PB_OK) st = sb_puts(&wsb, ")");
        ws = wsb.p;
    }
    c.ws = ws;
    if (st == PB_OK) st = sb_put(&c.path, "", 0);
    if (st == PB_OK) st = gen(&c, schema, &res);
    if (st == PB_OK) st = sb_put(&res, "", 0); /* NUL-terminated even when empty */
    sb_free(&c.path);
    sb_free(&wsb);
    for (int d = 0; d <= PB_SCHEMA_ANY_DEPTH; d++)
        sb_free(&c.any[d]);
    if (st != PB_OK) {
        sb_free(&res);
        return st;
    }
    *out = res.p;
    return PB_OK;
}

pb_status pb_choice_regex(const char *const *choices, int n, char **out)
{
    *out = NULL;
    if (n < 1)
        return pb_error(PB_ERR_INPUT, "choices: at least one is needed");
    sbuf b = {0};
    pb_status st = sb_puts(&b, "(?:");
    for (int i = 0; st == PB_OK && i < n; i++) {
        const char *s = choices[i];
        if (!s) {
            st = pb_error(PB_ERR_INPUT, "choices: choice %d is missing", i);
            break;
        }
        size_t len = strlen(s);
        for (size_t j = 0; j < len;) {
            size_t step = pb_utf8_seq_len((const unsigned char *)s + j, len - j);
            if (!step) {
                st = pb_error(PB_ERR_INPUT, "choices: choice %d is not valid UTF-8", i);
                break;
            }
            j += step;
        }
        if (st == PB_OK && i) st = sb_puts(&b, "|");
        if (st == PB_OK) st = put_lit(&b, s, len);
    }
    if (st == PB_OK) st = sb_puts(&b, ")");
    if (st != PB_OK) {
        sb_free(&b);
        return st;
    }
    *out = b.p;
    return PB_OK;
}
