/* JSON re-written in Python's json.dumps form (see pyjson.h). */
#include "config.h"

#include "gen/pyjson.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define MAX_DEPTH 512

struct pb_jnode {
    char kind;
    char *text;        /* a string's decoded UTF-8 (lone surrogates as WTF-8), a number's own text */
    size_t len;
    int n, cap;        /* items or members */
    pb_jnode **kids;
    char **keys;       /* an object's keys (decoded) */
    size_t *klen;
};

typedef struct parser {
    const char *s;
    size_t n, i;
    bool nomem;
} parser;

void pb_jnode_free(pb_jnode *v)
{
    if (!v)
        return;
    for (int i = 0; i < v->n; i++) {
        pb_jnode_free(v->kids[i]);
        if (v->keys)
            free(v->keys[i]);
    }
    free(v->kids);
    free(v->keys);
    free(v->klen);
    free(v->text);
    free(v);
}

static void skip_ws(parser *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int hex4(const char *s)
{
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static void put_cp(pb_jbuf *b, uint32_t c)
{
    unsigned char u[4];
    size_t k;
    if (c < 0x80) {
        u[0] = (unsigned char)c;
        k = 1;
    } else if (c < 0x800) {
        u[0] = (unsigned char)(0xC0 | c >> 6);
        u[1] = (unsigned char)(0x80 | (c & 0x3F));
        k = 2;
    } else if (c < 0x10000) {
        u[0] = (unsigned char)(0xE0 | c >> 12);
        u[1] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        u[2] = (unsigned char)(0x80 | (c & 0x3F));
        k = 3;
    } else {
        u[0] = (unsigned char)(0xF0 | c >> 18);
        u[1] = (unsigned char)(0x80 | (c >> 12 & 0x3F));
        u[2] = (unsigned char)(0x80 | (c >> 6 & 0x3F));
        u[3] = (unsigned char)(0x80 | (c & 0x3F));
        k = 4;
    }
    pb_jbuf_put(b, u, k);
}

/* A string at p->i (its opening quote) decoded into *out (malloc'ed, NUL after len bytes). */
static bool parse_string(parser *p, char **out, size_t *len)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    p->i++;
    bool ok = false;
    while (p->i < p->n) {
        unsigned char c = (unsigned char)p->s[p->i];
        if (c == '"') {
            p->i++;
            ok = true;
            break;
        }
        if (c < 0x20)
            break; /* a raw control character: not JSON (Python's strict json.loads refuses it too) */
        if (c != '\\') {
            pb_jbuf_put(&b, &p->s[p->i++], 1);
            continue;
        }
        if (p->i + 1 >= p->n)
            break;
        char e = p->s[p->i + 1];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            static const char to[] = "\"\\/\b\f\n\r\t";
            pb_jbuf_put(&b, &to[simple - "\"\\/bfnrt"], 1);
            p->i += 2;
            continue;
        }
        if (e != 'u' || p->i + 6 > p->n)
            break;
        int cp = hex4(p->s + p->i + 2);
        if (cp < 0)
            break;
        p->i += 6;
        if (cp >= 0xD800 && cp < 0xDC00 && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
            int lo = hex4(p->s + p->i + 2);
            if (lo >= 0xDC00 && lo < 0xE000) {
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                p->i += 6;
            }
        }
        put_cp(&b, (uint32_t)cp); /* a lone surrogate as its 3 bytes (WTF-8), written back as \uXXXX */
    }
    pb_jbuf_put(&b, "", 1);
    if (b.err)
        p->nomem = true;
    if (!ok || b.err) {
        pb_jbuf_free(&b);
        return false;
    }
    *out = b.data;
    *len = b.len - 1;
    return true;
}

static bool parse_number(parser *p, pb_jnode *v)
{
    size_t st = p->i;
    const char *s = p->s;
    if (p->i < p->n && s[p->i] == '-')
        p->i++;
    if (p->i < p->n && s[p->i] == '0')
        p->i++;
    else if (p->i < p->n && s[p->i] >= '1' && s[p->i] <= '9')
        while (p->i < p->n && s[p->i] >= '0' && s[p->i] <= '9')
            p->i++;
    else
        return false;
    if (p->i < p->n && s[p->i] == '.') {
        size_t d = ++p->i;
        while (p->i < p->n && s[p->i] >= '0' && s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return false;
    }
    if (p->i < p->n && (s[p->i] == 'e' || s[p->i] == 'E')) {
        p->i++;
        if (p->i < p->n && (s[p->i] == '+' || s[p->i] == '-'))
            p->i++;
        size_t d = p->i;
        while (p->i < p->n && s[p->i] >= '0' && s[p->i] <= '9')
            p->i++;
        if (p->i == d)
            return false;
    }
    v->len = p->i - st;
    if (!(v->text = malloc(v->len + 1))) {
        p->nomem = true;
        return false;
    }
    memcpy(v->text, s + st, v->len);
    v->text[v->len] = '\0';
    return true;
}

static bool add_kid(parser *p, pb_jnode *v, pb_jnode *kid, char *key, size_t klen)
{
    if (key) /* a key given again: its first place, the last value (a Python dict's) */
        for (int i = 0; i < v->n; i++)
            if (v->klen[i] == klen && !memcmp(v->keys[i], key, klen)) {
                pb_jnode_free(v->kids[i]);
                v->kids[i] = kid;
                free(key);
                return true;
            }
    if (v->n == v->cap) {
        int cap = v->cap ? 2 * v->cap : 4;
        pb_jnode **k = realloc(v->kids, (size_t)cap * sizeof *k);
        if (k)
            v->kids = k;
        if (k && key) {
            char **ks = realloc(v->keys, (size_t)cap * sizeof *ks);
            if (ks)
                v->keys = ks;
            size_t *kl = ks ? realloc(v->klen, (size_t)cap * sizeof *kl) : NULL;
            if (kl)
                v->klen = kl;
            k = kl ? k : NULL;
        }
        if (!k) {
            p->nomem = true;
            pb_jnode_free(kid);
            free(key);
            return false;
        }
        v->cap = cap;
    }
    v->kids[v->n] = kid;
    if (key) {
        v->keys[v->n] = key;
        v->klen[v->n] = klen;
    }
    v->n++;
    return true;
}

static pb_jnode *parse_value(parser *p, int depth)
{
    skip_ws(p);
    if (p->i >= p->n || depth > MAX_DEPTH)
        return NULL;
    pb_jnode *v = calloc(1, sizeof *v);
    if (!v) {
        p->nomem = true;
        return NULL;
    }
    const char c = p->s[p->i];
    bool ok = false;
    if (c == '{' || c == '[') {
        v->kind = c == '{' ? 'o' : 'a';
        const char close = c == '{' ? '}' : ']';
        p->i++;
        skip_ws(p);
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            return v;
        }
        for (;;) {
            char *key = NULL;
            size_t klen = 0;
            if (v->kind == 'o') {
                skip_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"' || !parse_string(p, &key, &klen))
                    break;
                skip_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':') {
                    free(key);
                    break;
                }
                p->i++;
            }
            pb_jnode *kid = parse_value(p, depth + 1);
            if (!kid) {
                free(key);
                break;
            }
            if (!add_kid(p, v, kid, key, klen))
                break;
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                continue;
            }
            if (p->i < p->n && p->s[p->i] == close) {
                p->i++;
                ok = true;
            }
            break;
        }
    } else if (c == '"') {
        v->kind = 's';
        ok = parse_string(p, &v->text, &v->len);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        v->kind = 'n';
        ok = parse_number(p, v);
    } else {
        static const struct {
            const char *word;
            char kind;
        } words[] = {{"true", 't'}, {"false", 'f'}, {"null", 'z'}};
        for (size_t k = 0; k < 3 && !ok; k++) {
            size_t l = strlen(words[k].word);
            if (p->n - p->i >= l && !memcmp(p->s + p->i, words[k].word, l)) {
                v->kind = words[k].kind;
                p->i += l;
                ok = true;
            }
        }
    }
    if (!ok) {
        pb_jnode_free(v);
        return NULL;
    }
    return v;
}

pb_status pb_jnode_parse(const char *s, size_t n, pb_jnode **out)
{
    parser p = {.s = s, .n = n};
    pb_jnode *v = parse_value(&p, 0);
    skip_ws(&p);
    if (v && p.i == n) {
        *out = v;
        return PB_OK;
    }
    pb_jnode_free(v);
    *out = NULL;
    if (p.nomem)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    return pb_error(PB_ERR_INPUT, "not one JSON value (at byte %zu)", p.i + 1);
}

char pb_jnode_kind(const pb_jnode *v) { return v->kind; }
int pb_jnode_count(const pb_jnode *v) { return v->n; }
const pb_jnode *pb_jnode_item(const pb_jnode *v, int i) { return i >= 0 && i < v->n ? v->kids[i] : NULL; }

const pb_jnode *pb_jnode_get(const pb_jnode *v, const char *key)
{
    const size_t l = strlen(key);
    for (int i = 0; v->kind == 'o' && i < v->n; i++)
        if (v->klen[i] == l && !memcmp(v->keys[i], key, l))
            return v->kids[i];
    return NULL;
}

const char *pb_jnode_str(const pb_jnode *v, size_t *len)
{
    if (v->kind != 's')
        return NULL;
    *len = v->len;
    return v->text;
}

/* A string as Python's json encoder writes it with ensure_ascii=False. */
static void dump_str(pb_jbuf *b, const char *s, size_t n)
{
    pb_jbuf_put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        const unsigned char c = (unsigned char)s[i];
        const char *e = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\r' ? "\\r" :
                        c == '\t' ? "\\t" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : NULL;
        if (e)
            pb_jbuf_puts(b, e);
        else if (c < 0x20)
            pb_jbuf_printf(b, "\\u%04x", c);
        else if (c == 0xED && i + 2 < n && ((unsigned char)s[i + 1] & 0xE0) == 0xA0) { /* a lone surrogate */
            pb_jbuf_printf(b, "\\u%04x", 0xD000 | ((unsigned char)s[i + 1] & 0x3F) << 6 | ((unsigned char)s[i + 2] & 0x3F));
            i += 2;
        } else
            pb_jbuf_put(b, s + i, 1);
    }
    pb_jbuf_put(b, "\"", 1);
}

/* Python's json.dumps of a float: its repr; infinities as JavaScript names them */
static void dump_double(pb_jbuf *b, double x)
{
    char r[PB_PY_FLOAT_MAX];
    pb_jbuf_puts(b, isinf(x) ? (x > 0 ? "Infinity" : "-Infinity") : pb_py_float_repr(x, r));
}

void pb_jnode_dumps(const pb_jnode *v, pb_jbuf *b)
{
    switch (v->kind) {
    case 'o':
    case 'a':
        pb_jbuf_put(b, v->kind == 'o' ? "{" : "[", 1);
        for (int i = 0; i < v->n; i++) {
            if (i)
                pb_jbuf_puts(b, ", ");
            if (v->kind == 'o') {
                dump_str(b, v->keys[i], v->klen[i]);
                pb_jbuf_puts(b, ": ");
            }
            pb_jnode_dumps(v->kids[i], b);
        }
        pb_jbuf_put(b, v->kind == 'o' ? "}" : "]", 1);
        break;
    case 's':
        dump_str(b, v->text, v->len);
        break;
    case 'n':
        if (strpbrk(v->text, ".eE"))
            dump_double(b, strtod(v->text, NULL));
        else /* a Python int: its digits ("-0" is 0) */
            pb_jbuf_puts(b, strcmp(v->text, "-0") ? v->text : "0");
        break;
    default:
        pb_jbuf_puts(b, v->kind == 't' ? "true" : v->kind == 'f' ? "false" : "null");
    }
}

pb_status pb_pyjson_dumps(const char *s, size_t n, pb_jbuf *out)
{
    pb_jnode *v;
    PB_CHECK(pb_jnode_parse(s, n, &v));
    pb_jnode_dumps(v, out);
    pb_jnode_free(v);
    return pb_jbuf_status(out);
}
