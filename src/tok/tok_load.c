/* tokenizer.json loading: model (BPE), added tokens, normalizer,
 * pre-tokenizer, post-processor and decoder, each validated with a message
 * naming the file and the JSON path of the field. */
#include "config.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <zstd.h>

#include "common/util.h"
#include "tok/tok_internal.h"

#define TK_MAX_FILE ((size_t)1 << 30)   /* 1 GiB of JSON is far beyond any real tokenizer */
#define TK_MAX_DEPTH 64                 /* nesting of Sequence components */
/* Token ids index tables of (highest id + 1) entries, 17 bytes each: an id of 2^31 would ask for 36 GB. The
 * largest real vocabularies hold about 262k ids; 2^24 leaves room for any real one. */
#define TK_MAX_ID ((1 << 24) - 1)

typedef struct ld {
    const char *name;   /* file name for messages */
    pb_tokenizer *tok;
} ld;

static pb_status ferr(const ld *L, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static pb_status ferr(const ld *L, const char *path, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return pb_error(PB_ERR_FORMAT, "%s: %s: %s", L->name, path, msg);
}

/* ---- JSON accessors ---- */

static const cJSON *jget(const cJSON *o, const char *key)
{
    return cJSON_GetObjectItemCaseSensitive(o, key);
}

static bool jnull(const cJSON *j) { return !j || cJSON_IsNull(j); }

static pb_status jbool(const ld *L, const char *path, const cJSON *o, const char *key, bool def,
                       bool *out)
{
    const cJSON *j = jget(o, key);
    if (jnull(j)) { *out = def; return PB_OK; }
    if (!cJSON_IsBool(j))
        return ferr(L, path, "field '%s' must be true or false", key);
    *out = cJSON_IsTrue(j);
    return PB_OK;
}

static pb_status jstr(const ld *L, const char *path, const cJSON *o, const char *key, bool required,
                      const char **out)
{
    const cJSON *j = jget(o, key);
    if (jnull(j)) {
        *out = NULL;
        if (required)
            return ferr(L, path, "missing string field '%s'", key);
        return PB_OK;
    }
    if (!cJSON_IsString(j) || !j->valuestring)
        return ferr(L, path, "field '%s' must be a string", key);
    *out = j->valuestring;
    return PB_OK;
}

static pb_status jint(const ld *L, const char *path, const cJSON *j, const char *what, double lo,
                      double hi, int64_t *out)
{
    if (!cJSON_IsNumber(j))
        return ferr(L, path, "%s must be a number", what);
    double v = j->valuedouble;
    if (!isfinite(v) || v != floor(v) || v < lo || v > hi)
        return ferr(L, path, "%s must be an integer in [%.0f, %.0f] (got %g)", what, lo, hi, v);
    *out = (int64_t)v;
    return PB_OK;
}

static char *dupn(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static pb_status one_char(const ld *L, const char *path, const char *key, const char *s, uint32_t *cp)
{
    size_t n = strlen(s);
    if (n == 0 || !tk_utf8_valid(s, n) || tk_utf8_next(s, n, cp) != n)
        return ferr(L, path, "field '%s' must be exactly one character (got \"%s\")", key, s);
    return PB_OK;
}

/* {"String": s} or {"Regex": r} */
static pb_status parse_pattern(const ld *L, const char *path, const cJSON *o, tk_regex *re)
{
    const cJSON *p = jget(o, "pattern");
    if (!cJSON_IsObject(p))
        return ferr(L, path, "missing object field 'pattern' ({\"String\": ...} or {\"Regex\": ...})");
    const cJSON *s = jget(p, "String"), *r = jget(p, "Regex");
    char where[600];
    snprintf(where, sizeof where, "%s: %s.pattern", L->name, path);
    if (cJSON_IsString(s))
        return tk_regex_compile(re, s->valuestring, strlen(s->valuestring), true, where);
    if (cJSON_IsString(r))
        return tk_regex_compile(re, r->valuestring, strlen(r->valuestring), false, where);
    return ferr(L, path, "field 'pattern' must be {\"String\": ...} or {\"Regex\": ...}");
}

static pb_status parse_behavior(const ld *L, const char *path, const cJSON *o, tk_behavior def,
                                tk_behavior *out)
{
    const char *b;
    PB_CHECK(jstr(L, path, o, "behavior", false, &b));
    if (!b) { *out = def; return PB_OK; }
    static const struct { const char *name; tk_behavior b; } names[] = {
        {"Removed", TK_REMOVED}, {"Isolated", TK_ISOLATED},
        {"MergedWithPrevious", TK_MERGED_PREV}, {"MergedWithNext", TK_MERGED_NEXT},
        {"Contiguous", TK_CONTIGUOUS}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(b, names[i].name) == 0) { *out = names[i].b; return PB_OK; }
    return ferr(L, path, "unknown behavior '%s' (Removed, Isolated, MergedWithPrevious, "
                "MergedWithNext, Contiguous)", b);
}

/* Metaspace: prepend_scheme, or the older add_prefix_space. */
static pb_status parse_prepend(const ld *L, const char *path, const cJSON *o, tk_prepend *out)
{
    const char *s;
    PB_CHECK(jstr(L, path, o, "prepend_scheme", false, &s));
    if (s) {
        if (strcmp(s, "always") == 0) *out = TK_PREPEND_ALWAYS;
        else if (strcmp(s, "first") == 0) *out = TK_PREPEND_FIRST;
        else if (strcmp(s, "never") == 0) *out = TK_PREPEND_NEVER;
        else return ferr(L, path, "unknown prepend_scheme '%s' (always, first, never)", s);
        return PB_OK;
    }
    bool aps;
    PB_CHECK(jbool(L, path, o, "add_prefix_space", true, &aps));
    *out = aps ? TK_PREPEND_ALWAYS : TK_PREPEND_NEVER;
    return PB_OK;
}

static const char *type_of(const cJSON *o)
{
    const cJSON *t = jget(o, "type");
    return cJSON_IsString(t) ? t->valuestring : NULL;
}

/* Parse an array of sub-components into a freshly allocated array. */
#define PARSE_LIST(L, path, arr, key, T, parse_fn, free_fn, depth, out_v, out_n)             \
    do {                                                                                    \
        const cJSON *arr_ = jget(o, key);                                                   \
        if (!cJSON_IsArray(arr_))                                                           \
            return ferr(L, path, "missing array field '%s'", key);                          \
        size_t n_ = (size_t)cJSON_GetArraySize(arr_);                                       \
        T *v_;                                                                              \
        PB_CHECK(pb_calloc(n_ ? n_ : 1, sizeof(T), &v_));                                  \
        out_v = v_;                                                                         \
        size_t i_ = 0;                                                                      \
        const cJSON *e_;                                                                    \
        cJSON_ArrayForEach(e_, arr_) {                                                      \
            char sub_[512];                                                                 \
            snprintf(sub_, sizeof sub_, "%s.%s[%zu]", path, key, i_);                       \
            pb_status st_ = parse_fn(L, sub_, e_, depth + 1, &v_[i_]);                      \
            if (st_ != PB_OK) {                                                             \
                out_n = i_ + 1;                                                             \
                return st_;                                                                 \
            }                                                                               \
            i_++;                                                                           \
        }                                                                                   \
        out_n = i_;                                                                         \
    } while (0)

/* ---- normalizers ---- */

/* what every component's parser checks first: the nesting depth, an object,
 * its string field 'type' (*t) */
static pb_status component_type(const ld *L, const char *path, const cJSON *o, int depth, const char **t)
{
    if (depth > TK_MAX_DEPTH)
        return ferr(L, path, "components nested too deeply");
    if (!cJSON_IsObject(o))
        return ferr(L, path, "must be an object");
    if (!(*t = type_of(o)))
        return ferr(L, path, "missing string field 'type'");
    return PB_OK;
}

/* string field key (dflt where it is absent and not required) copied into
 * *str, its length in *len */
static pb_status jstr_dup(const ld *L, const char *path, const cJSON *o, const char *key, bool required,
                          const char *dflt, char **str, size_t *len)
{
    const char *s;
    PB_CHECK(jstr(L, path, o, key, required, &s));
    if (!s)
        s = dflt;
    *len = strlen(s);
    if (!(*str = dupn(s, *len)))
        return pb_error(PB_ERR_NOMEM, "out of memory");
    return PB_OK;
}

static pb_status parse_norm(const ld *L, const char *path, const cJSON *o, int depth, tk_norm *n)
{
    memset(n, 0, sizeof *n);
    const char *t;
    PB_CHECK(component_type(L, path, o, depth, &t));
    if (strcmp(t, "Sequence") == 0) {
        n->kind = TK_NORM_SEQUENCE;
        PARSE_LIST(L, path, arr, "normalizers", tk_norm, parse_norm, tk_norm_free, depth, n->sub, n->n_sub);
    } else if (strcmp(t, "Prepend") == 0) {
        n->kind = TK_NORM_PREPEND;
        PB_CHECK(jstr_dup(L, path, o, "prepend", true, "", &n->str, &n->str_len));
    } else if (strcmp(t, "Replace") == 0) {
        n->kind = TK_NORM_REPLACE;
        PB_CHECK(parse_pattern(L, path, o, &n->re));
        PB_CHECK(jstr_dup(L, path, o, "content", true, "", &n->str, &n->str_len));
    } else if (strcmp(t, "NFC") == 0) n->kind = TK_NORM_NFC;
    else if (strcmp(t, "NFD") == 0) n->kind = TK_NORM_NFD;
    else if (strcmp(t, "NFKC") == 0) n->kind = TK_NORM_NFKC;
    else if (strcmp(t, "NFKD") == 0) n->kind = TK_NORM_NFKD;
    else if (strcmp(t, "Lowercase") == 0) n->kind = TK_NORM_LOWERCASE;
    else if (strcmp(t, "StripAccents") == 0) n->kind = TK_NORM_STRIP_ACCENTS;
    else if (strcmp(t, "Strip") == 0) {
        n->kind = TK_NORM_STRIP;
        PB_CHECK(jbool(L, path, o, "strip_left", true, &n->left));
        PB_CHECK(jbool(L, path, o, "strip_right", true, &n->right));
    } else if (strcmp(t, "BertNormalizer") == 0) {
        n->kind = TK_NORM_BERT;
        PB_CHECK(jbool(L, path, o, "clean_text", true, &n->left));
        PB_CHECK(jbool(L, path, o, "handle_chinese_chars", true, &n->right));
        PB_CHECK(jbool(L, path, o, "lowercase", true, &n->lowercase));
        PB_CHECK(jbool(L, path, o, "strip_accents", n->lowercase, &n->strip_accents));
    } else
        return ferr(L, path, "unknown normalizer type '%s' (supported: Sequence, Prepend, Replace, "
                    "NFC, NFD, NFKC, NFKD, Lowercase, Strip, StripAccents, BertNormalizer)", t);
    return PB_OK;
}

void tk_norm_free(tk_norm *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->n_sub; i++)
        tk_norm_free(&n->sub[i]);
    free(n->sub);
    free(n->str);
    tk_regex_free(&n->re);
}

/* ---- pre-tokenizers ---- */

/* The GPT-2 split regex that HF's ByteLevel pre-tokenizer applies. */
static const char GPT2_RE[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static pb_status parse_pre(const ld *L, const char *path, const cJSON *o, int depth, tk_pre *p)
{
    memset(p, 0, sizeof *p);
    const char *t;
    PB_CHECK(component_type(L, path, o, depth, &t));
    char where[600];
    snprintf(where, sizeof where, "%s: %s", L->name, path);
    if (strcmp(t, "Sequence") == 0) {
        p->kind = TK_PRE_SEQUENCE;
        PARSE_LIST(L, path, arr, "pretokenizers", tk_pre, parse_pre, tk_pre_free, depth, p->sub, p->n_sub);
    } else if (strcmp(t, "ByteLevel") == 0) {
        bool use_regex;
        p->kind = TK_PRE_BYTELEVEL;
        PB_CHECK(jbool(L, path, o, "add_prefix_space", true, &p->add_prefix_space));
        PB_CHECK(jbool(L, path, o, "use_regex", true, &use_regex));
        if (use_regex) {
            PB_CHECK(tk_regex_compile(&p->re, GPT2_RE, sizeof GPT2_RE - 1, false, where));
            p->has_re = true;
        }
    } else if (strcmp(t, "Split") == 0) {
        p->kind = TK_PRE_SPLIT;
        PB_CHECK(parse_pattern(L, path, o, &p->re));
        p->has_re = true;
        PB_CHECK(parse_behavior(L, path, o, TK_ISOLATED, &p->behavior));
        if (!jget(o, "behavior"))
            return ferr(L, path, "missing string field 'behavior'");
        PB_CHECK(jbool(L, path, o, "invert", false, &p->invert));
    } else if (strcmp(t, "Metaspace") == 0) {
        const char *r;
        p->kind = TK_PRE_METASPACE;
        PB_CHECK(jstr(L, path, o, "replacement", true, &r));
        PB_CHECK(one_char(L, path, "replacement", r, &p->replacement));
        PB_CHECK(parse_prepend(L, path, o, &p->prepend));
        PB_CHECK(jbool(L, path, o, "split", true, &p->split));
    } else if (strcmp(t, "Digits") == 0) {
        p->kind = TK_PRE_DIGITS;
        PB_CHECK(jbool(L, path, o, "individual_digits", false, &p->individual));
    } else if (strcmp(t, "Whitespace") == 0) {
        static const char ws[] = "\\w+|[^\\w\\s]+";
        p->kind = TK_PRE_WHITESPACE;
        PB_CHECK(tk_regex_compile(&p->re, ws, sizeof ws - 1, false, where));
        p->has_re = true;
    } else if (strcmp(t, "WhitespaceSplit") == 0) {
        p->kind = TK_PRE_WHITESPACE_SPLIT;
    } else if (strcmp(t, "Punctuation") == 0) {
        p->kind = TK_PRE_PUNCTUATION;
        PB_CHECK(parse_behavior(L, path, o, TK_ISOLATED, &p->behavior));
    } else if (strcmp(t, "BertPreTokenizer") == 0) {
        p->kind = TK_PRE_BERT;
    } else
        return ferr(L, path, "unknown pre_tokenizer type '%s' (supported: Sequence, ByteLevel, Split, "
                    "Metaspace, Digits, Whitespace, WhitespaceSplit, Punctuation, BertPreTokenizer)", t);
    return PB_OK;
}

void tk_pre_free(tk_pre *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_sub; i++)
        tk_pre_free(&p->sub[i]);
    free(p->sub);
    tk_regex_free(&p->re);
}

/* ---- post-processors ---- */

static pb_status push_id(int32_t **v, size_t *n, int32_t id)
{
    PB_CHECK(pb_realloc_array(v, *n + 1, sizeof **v));
    (*v)[(*n)++] = id;
    return PB_OK;
}

/* ["[CLS]", 101] */
static pb_status parse_tok_pair(const ld *L, const char *path, const cJSON *o, const char *key,
                                int32_t *id)
{
    const cJSON *a = jget(o, key);
    int64_t v;
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != 2 || !cJSON_IsString(cJSON_GetArrayItem(a, 0)))
        return ferr(L, path, "field '%s' must be [token, id]", key);
    PB_CHECK(jint(L, path, cJSON_GetArrayItem(a, 1), key, 0, TK_MAX_ID, &v));
    *id = (int32_t)v;
    return PB_OK;
}

static pb_status parse_template(const ld *L, const char *path, const cJSON *o, tk_post *p)
{
    const cJSON *single = jget(o, "single"), *specials = jget(o, "special_tokens");
    if (!cJSON_IsArray(single))
        return ferr(L, path, "missing array field 'single'");
    if (!jnull(specials) && !cJSON_IsObject(specials))
        return ferr(L, path, "field 'special_tokens' must be an object");
    bool seen_a = false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, single) {
        const cJSON *sp = jget(e, "SpecialToken"), *sq = jget(e, "Sequence");
        if (cJSON_IsObject(sq)) {
            const char *sid;
            PB_CHECK(jstr(L, path, sq, "id", true, &sid));
            if (strcmp(sid, "A") != 0)
                return ferr(L, path, "single[%zu]: the single template may only hold sequence A", i);
            if (seen_a)
                return ferr(L, path, "single[%zu]: sequence A appears twice", i);
            seen_a = true;
        } else if (cJSON_IsObject(sp)) {
            const char *sid;
            PB_CHECK(jstr(L, path, sp, "id", true, &sid));
            const cJSON *def = specials ? jget(specials, sid) : NULL;
            if (!cJSON_IsObject(def))
                return ferr(L, path, "single[%zu]: special token '%s' is not in special_tokens", i, sid);
            const cJSON *ids = jget(def, "ids");
            if (!cJSON_IsArray(ids))
                return ferr(L, path, "special_tokens.%s: missing array field 'ids'", sid);
            const cJSON *x;
            cJSON_ArrayForEach(x, ids) {
                int64_t v;
                PB_CHECK(jint(L, path, x, "special_tokens id", 0, TK_MAX_ID, &v));
                if (seen_a)
                    PB_CHECK(push_id(&p->after, &p->n_after, (int32_t)v));
                else
                    PB_CHECK(push_id(&p->before, &p->n_before, (int32_t)v));
            }
        } else
            return ferr(L, path, "single[%zu]: must be {\"SpecialToken\": ...} or {\"Sequence\": ...}", i);
        i++;
    }
    if (!seen_a)
        return ferr(L, path, "the single template has no sequence A");
    return PB_OK;
}

static pb_status parse_post(const ld *L, const char *path, const cJSON *o, int depth, tk_post *p)
{
    memset(p, 0, sizeof *p);
    const char *t;
    PB_CHECK(component_type(L, path, o, depth, &t));
    if (strcmp(t, "Sequence") == 0) {
        p->kind = TK_POST_SEQUENCE;
        PARSE_LIST(L, path, arr, "processors", tk_post, parse_post, tk_post_free, depth, p->sub, p->n_sub);
    } else if (strcmp(t, "ByteLevel") == 0) {
        p->kind = TK_POST_NOOP;   /* offsets only */
    } else if (strcmp(t, "TemplateProcessing") == 0) {
        p->kind = TK_POST_TEMPLATE;
        PB_CHECK(parse_template(L, path, o, p));
    } else if (strcmp(t, "BertProcessing") == 0 || strcmp(t, "RobertaProcessing") == 0) {
        int32_t cls, sep;
        p->kind = TK_POST_TEMPLATE;
        PB_CHECK(parse_tok_pair(L, path, o, "cls", &cls));
        PB_CHECK(parse_tok_pair(L, path, o, "sep", &sep));
        PB_CHECK(push_id(&p->before, &p->n_before, cls));
        PB_CHECK(push_id(&p->after, &p->n_after, sep));
    } else
        return ferr(L, path, "unknown post_processor type '%s' (supported: Sequence, ByteLevel, "
                    "TemplateProcessing, BertProcessing, RobertaProcessing)", t);
    return PB_OK;
}

void tk_post_free(tk_post *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_sub; i++)
        tk_post_free(&p->sub[i]);
    free(p->sub);
    free(p->before);
    free(p->after);
}

/* ---- decoders ---- */

static pb_status parse_dec(const ld *L, const char *path, const cJSON *o, int depth, tk_dec *d)
{
    memset(d, 0, sizeof *d);
    const char *t;
    PB_CHECK(component_type(L, path, o, depth, &t));
    if (strcmp(t, "Sequence") == 0) {
        d->kind = TK_DEC_SEQUENCE;
        PARSE_LIST(L, path, arr, "decoders", tk_dec, parse_dec, tk_dec_free, depth, d->sub, d->n_sub);
    } else if (strcmp(t, "ByteLevel") == 0) {
        d->kind = TK_DEC_BYTELEVEL;
    } else if (strcmp(t, "Metaspace") == 0) {
        const char *r;
        d->kind = TK_DEC_METASPACE;
        PB_CHECK(jstr(L, path, o, "replacement", true, &r));
        PB_CHECK(one_char(L, path, "replacement", r, &d->ch));
        PB_CHECK(parse_prepend(L, path, o, &d->prepend));
    } else if (strcmp(t, "Replace") == 0) {
        d->kind = TK_DEC_REPLACE;
        PB_CHECK(parse_pattern(L, path, o, &d->re));
        PB_CHECK(jstr_dup(L, path, o, "content", true, "", &d->str, &d->str_len));
    } else if (strcmp(t, "ByteFallback") == 0) {
        d->kind = TK_DEC_BYTEFALLBACK;
    } else if (strcmp(t, "Fuse") == 0) {
        d->kind = TK_DEC_FUSE;
    } else if (strcmp(t, "Strip") == 0) {
        const char *c;
        int64_t v;
        d->kind = TK_DEC_STRIP;
        PB_CHECK(jstr(L, path, o, "content", true, &c));
        PB_CHECK(one_char(L, path, "content", c, &d->ch));
        PB_CHECK(jint(L, path, jget(o, "start"), "field 'start'", 0, 1e9, &v));
        d->start = (size_t)v;
        PB_CHECK(jint(L, path, jget(o, "stop"), "field 'stop'", 0, 1e9, &v));
        d->stop = (size_t)v;
    } else if (strcmp(t, "BPEDecoder") == 0) {
        d->kind = TK_DEC_BPE;
        PB_CHECK(jstr_dup(L, path, o, "suffix", false, "</w>", &d->str, &d->str_len));
    } else if (strcmp(t, "WordPiece") == 0) {
        d->kind = TK_DEC_WORDPIECE;
        PB_CHECK(jstr_dup(L, path, o, "prefix", false, "##", &d->str, &d->str_len));
        PB_CHECK(jbool(L, path, o, "cleanup", true, &d->cleanup));
    } else
        return ferr(L, path, "unknown decoder type '%s' (supported: Sequence, ByteLevel, Metaspace, "
                    "Replace, ByteFallback, Fuse, Strip, BPEDecoder, WordPiece)", t);
    return PB_OK;
}

void tk_dec_free(tk_dec *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n_sub; i++)
        tk_dec_free(&d->sub[i]);
    free(d->sub);
    free(d->str);
    tk_regex_free(&d->re);
}

/* ---- model ---- */

static pb_status set_id_token(pb_tokenizer *tok, int32_t id, const char *s, size_t len, bool replace)
{
    if (tok->id_tok[id] && !replace)
        return PB_OK;
    char *c = dupn(s, len);
    if (!c)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    free(tok->id_tok[id]);
    tok->id_tok[id] = c;
    tok->id_tok_len[id] = (uint32_t)len;
    return PB_OK;
}

/* Split a "a b" merge line on its single space. */
static pb_status merge_parts(const ld *L, size_t i, const cJSON *m, const char **a, size_t *alen,
                             const char **b, size_t *blen)
{
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return ferr(L, "model.merges", "merge %zu (\"%s\") must be two tokens separated by one space",
                        i, s);
        *a = s;
        *alen = (size_t)(sp - s);
        *b = sp + 1;
        *blen = strlen(sp + 1);
        return PB_OK;
    }
    if (cJSON_IsArray(m) && cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
        cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
        *a = cJSON_GetArrayItem(m, 0)->valuestring;
        *b = cJSON_GetArrayItem(m, 1)->valuestring;
        *alen = strlen(*a);
        *blen = strlen(*b);
        return PB_OK;
    }
    return ferr(L, "model.merges", "merge %zu must be a string \"a b\" or a pair [\"a\", \"b\"]", i);
}

static pb_status parse_model(ld *L, const cJSON *root, const cJSON *added)
{
    pb_tokenizer *tok = L->tok;
    const cJSON *m = jget(root, "model");
    if (!cJSON_IsObject(m))
        return ferr(L, "model", "missing object field 'model'");
    const char *t = type_of(m);
    if (t && strcmp(t, "BPE") != 0)
        return ferr(L, "model", "unsupported model type '%s' (supported: BPE)", t);
    const cJSON *vocab = jget(m, "vocab"), *merges = jget(m, "merges");
    if (!cJSON_IsObject(vocab))
        return ferr(L, "model.vocab", "missing vocabulary (object token -> id)");
    if (!cJSON_IsArray(merges))
        return ferr(L, "model.merges", "missing merges (array)");
    const cJSON *dropout = jget(m, "dropout");
    if (!jnull(dropout) && !(cJSON_IsNumber(dropout) && dropout->valuedouble == 0.0))
        return ferr(L, "model.dropout", "BPE dropout is not supported (non-deterministic)");

    /* ids: max over vocab and added tokens */
    int64_t max_id = -1;
    size_t nv = (size_t)cJSON_GetArraySize(vocab);
    PB_CHECK(tk_strmap_init(&tok->vocab, nv));
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab) {
        int64_t v;
        char p[64];
        snprintf(p, sizeof p, "model.vocab");
        PB_CHECK(jint(L, p, e, "token id", 0, TK_MAX_ID, &v));
        if (!e->string)
            return ferr(L, "model.vocab", "entry without a token");
        PB_CHECK(tk_strmap_put(&tok->vocab, e->string, strlen(e->string), (int32_t)v));
        if (v > max_id) max_id = v;
    }
    size_t i = 0;
    cJSON_ArrayForEach(e, added) {
        int64_t v;
        char p[64];
        snprintf(p, sizeof p, "added_tokens[%zu]", i++);
        if (!cJSON_IsObject(e))
            return ferr(L, p, "must be an object");
        PB_CHECK(jint(L, p, jget(e, "id"), "field 'id'", 0, TK_MAX_ID, &v));
        if (v > max_id) max_id = v;
    }
    tok->n_ids = (int32_t)(max_id + 1);
    size_t n = (size_t)tok->n_ids;
    PB_CHECK(pb_calloc(n ? n : 1, sizeof *tok->id_tok, &tok->id_tok));
    PB_CHECK(pb_calloc(n ? n : 1, sizeof *tok->id_tok_len, &tok->id_tok_len));
    PB_CHECK(pb_calloc(n ? n : 1, 1, &tok->id_flags));
    for (size_t k = 0; k < tok->vocab.n; k++)
        PB_CHECK(set_id_token(tok, tok->vocab.vals[k], tok->vocab.keys[k], tok->vocab.klen[k], false));

    /* options */
    const char *s;
    PB_CHECK(jbool(L, "model", m, "byte_fallback", false, &tok->byte_fallback));
    PB_CHECK(jbool(L, "model", m, "fuse_unk", false, &tok->fuse_unk));
    PB_CHECK(jbool(L, "model", m, "ignore_merges", false, &tok->ignore_merges));
    PB_CHECK(jstr(L, "model", m, "unk_token", false, &s));
    tok->unk_id = -1;
    if (s) {
        if (!(tok->unk_token = pb_strdup(s)))
            return pb_error(PB_ERR_NOMEM, "out of memory");
        tok->unk_id = tk_strmap_get(&tok->vocab, s, strlen(s));
        if (tok->unk_id < 0)
            tok->unk_id = -2;
    }
    PB_CHECK(jstr(L, "model", m, "continuing_subword_prefix", false, &s));
    if (s && *s) {
        tok->cont_prefix_len = strlen(s);
        if (!(tok->cont_prefix = dupn(s, tok->cont_prefix_len)))
            return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    PB_CHECK(jstr(L, "model", m, "end_of_word_suffix", false, &s));
    if (s && *s) {
        tok->eow_suffix_len = strlen(s);
        if (!(tok->eow_suffix = dupn(s, tok->eow_suffix_len)))
            return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        tok->byte_ids[b] = tk_strmap_get(&tok->vocab, name, 6);
    }

    /* merges: rank = position; a later duplicate wins, as in HF's HashMap */
    size_t nm = (size_t)cJSON_GetArraySize(merges);
    PB_CHECK(tk_pairmap_init(&tok->merges, nm));
    tk_buf joined = {0};
    pb_status st = PB_OK;
    i = 0;
    cJSON_ArrayForEach(e, merges) {
        const char *a = NULL, *b = NULL;
        size_t alen = 0, blen = 0;
        PB_CHECK_GOTO(merge_parts(L, i, e, &a, &alen, &b, &blen), st, out);
        int32_t ia = tk_strmap_get(&tok->vocab, a, alen), ib = tk_strmap_get(&tok->vocab, b, blen);
        if (ia < 0 || ib < 0) {
            st = ferr(L, "model.merges", "merge %zu: token '%.*s' is not in the vocabulary", i,
                      (int)(ia < 0 ? alen : blen), ia < 0 ? a : b);
            goto out;
        }
        size_t skip = tok->cont_prefix_len <= blen ? tok->cont_prefix_len : blen;
        joined.len = 0;
        PB_CHECK_GOTO(tk_buf_put(&joined, a, alen), st, out);
        PB_CHECK_GOTO(tk_buf_put(&joined, b + skip, blen - skip), st, out);
        int32_t im = tk_strmap_get(&tok->vocab, joined.p, joined.len);
        if (im < 0) {
            st = ferr(L, "model.merges", "merge %zu: merged token '%s' is not in the vocabulary", i,
                      joined.p);
            goto out;
        }
        tk_pairmap_put(&tok->merges, ia, ib, (uint32_t)i, im);
        i++;
    }
out:
    tk_buf_free(&joined);
    return st;
}

/* ---- added tokens ---- */

static pb_status parse_added(ld *L, const cJSON *added)
{
    pb_tokenizer *tok = L->tok;
    size_t n = (size_t)cJSON_GetArraySize(added);
    PB_CHECK(pb_calloc(n ? n : 1, sizeof *tok->added, &tok->added));
    PB_CHECK(tk_strmap_init(&tok->added_map, n));
    const cJSON *e;
    size_t i = 0;
    cJSON_ArrayForEach(e, added) {
        char p[64];
        snprintf(p, sizeof p, "added_tokens[%zu]", i);
        tk_added *a = &tok->added[tok->n_added];
        const char *content;
        int64_t id;
        PB_CHECK(jint(L, p, jget(e, "id"), "field 'id'", 0, TK_MAX_ID, &id));
        PB_CHECK(jstr(L, p, e, "content", true, &content));
        PB_CHECK(jbool(L, p, e, "special", false, &a->special));
        PB_CHECK(jbool(L, p, e, "lstrip", false, &a->lstrip));
        PB_CHECK(jbool(L, p, e, "rstrip", false, &a->rstrip));
        PB_CHECK(jbool(L, p, e, "single_word", false, &a->single_word));
        PB_CHECK(jbool(L, p, e, "normalized", !a->special, &a->normalized));
        a->id = (int32_t)id;
        a->len = strlen(content);
        if (!(a->content = dupn(content, a->len)))
            return pb_error(PB_ERR_NOMEM, "out of memory");
        tok->n_added++;
        PB_CHECK(tk_strmap_put(&tok->added_map, a->content, a->len, a->id));
        PB_CHECK(set_id_token(tok, a->id, a->content, a->len, true));
        tok->id_flags[a->id] |= TK_ID_ADDED;
        i++;
    }
    return PB_OK;
}

/* Special by text, as HF's decode(skip_special_tokens) asks is_special_token
 * of id_to_token(id): an id is skipped when its token text is the content of
 * a special added token (a vocabulary entry with that text too). */
static pb_status mark_special(pb_tokenizer *tok)
{
    tk_strmap sp;
    PB_CHECK(tk_strmap_init(&sp, tok->n_added));
    pb_status st = PB_OK;
    size_t n_sp = 0;
    for (size_t k = 0; k < tok->n_added && st == PB_OK; k++)
        if (tok->added[k].special) {
            st = tk_strmap_put(&sp, tok->added[k].content, tok->added[k].len, 1);
            n_sp++;
        }
    for (int32_t id = 0; id < tok->n_ids && st == PB_OK && n_sp; id++)
        if (tok->id_tok[id] && tk_strmap_get(&sp, tok->id_tok[id], tok->id_tok_len[id]) >= 0)
            tok->id_flags[id] |= TK_ID_SPECIAL;
    tk_strmap_free(&sp);
    return st;
}

/* The strings the normalized trie matches are the normalized contents. A
 * normalized added token also decodes as its normalized content: tokenizers
 * >= 0.23 stores it so (id_to_token), e.g. "dog" under Prepend("_") is "_dog". */
static pb_status normalize_added(pb_tokenizer *tok)
{
    for (size_t k = 0; k < tok->n_added; k++) {
        tk_added *a = &tok->added[k];
        if (a->normalized && tok->norm) {
            tk_buf b = {0};
            pb_status st = tk_normalize(tok->norm, a->content, a->len, &b);
            if (st != PB_OK) {
                tk_buf_free(&b);
                return st;
            }
            a->match = b.p ? b.p : dupn("", 0);
            a->match_len = b.len;
            if (a->match)
                PB_CHECK(set_id_token(tok, a->id, a->match, a->match_len, true));
        } else {
            a->match = dupn(a->content, a->len);
            a->match_len = a->len;
        }
        if (!a->match)
            return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    return PB_OK;
}

/* Which ids decode to text that starts with a UTF-8 continuation byte:
 * the streaming detokenizer never starts its window on one. */
static void mark_cont(pb_tokenizer *tok)
{
    for (int32_t id = 0; id < tok->n_ids; id++) {
        const char *s = tok->id_tok[id];
        if (!s || !tok->id_tok_len[id])
            continue;
        unsigned b = (unsigned char)s[0];
        uint32_t cp;
        tk_utf8_next(s, tok->id_tok_len[id], &cp);
        int bl = tk_cp_to_byte(cp);
        if (bl >= 0)
            b = (unsigned)bl;   /* byte-level form */
        if (tok->id_tok_len[id] == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
            unsigned v;
            if (sscanf(s + 3, "%2x", &v) == 1) {
                b = v;
                tok->id_flags[id] |= TK_ID_BYTE;
            }
        }
        if (b >= 0x80 && b < 0xC0)
            tok->id_flags[id] |= TK_ID_CONT;
    }
}

/* Lookup tables for the hot paths: single-character ids for BPE's first
 * step, and each id's bytes when the decoder is ByteLevel alone. */
static pb_status build_fast_tables(pb_tokenizer *tok)
{
    /* SentencePiece-style vocabularies (Llama-2) have no pre-tokenizer, so a
     * whole text is one BPE word; when no token joins "x▁" (x not U+2581),
     * no merge can cross such a point and the word may be cut there. */
    tok->split_meta = !tok->cont_prefix && !tok->eow_suffix &&
                      tk_strmap_get(&tok->vocab, "\xE2\x96\x81", 3) >= 0;
    for (size_t k = 0; tok->split_meta && k < tok->vocab.n; k++) {
        const char *t = tok->vocab.keys[k];
        size_t n = tok->vocab.klen[k];
        for (size_t i = 1; i + 3 <= n; i++) {
            if (memcmp(t + i, "\xE2\x96\x81", 3) == 0 &&
                !(i >= 3 && memcmp(t + i - 3, "\xE2\x96\x81", 3) == 0)) {
                tok->split_meta = false;
                break;
            }
        }
    }
    if (!tok->cont_prefix && !tok->eow_suffix) {
        PB_CHECK(pb_malloc(65536 * sizeof *tok->char_ids, &tok->char_ids));
        for (size_t c = 0; c < 65536; c++)
            tok->char_ids[c] = -1;
        for (size_t k = 0; k < tok->vocab.n; k++) {
            const char *t = tok->vocab.keys[k];
            size_t n = tok->vocab.klen[k];
            uint32_t cp;
            if (n == 0 || n > 3 || !tk_utf8_valid(t, n) || tk_utf8_next(t, n, &cp) != n || cp >= 65536)
                continue;
            tok->char_ids[cp] = tok->vocab.vals[k];
        }
    }
    if (tok->dec && tok->dec->kind == TK_DEC_BYTELEVEL) {
        tk_buf b = {0};
        pb_status st = pb_malloc(((size_t)tok->n_ids + 1) * sizeof *tok->bl_off, &tok->bl_off);
        for (int32_t id = 0; st == PB_OK && id < tok->n_ids; id++) {
            if (b.len > UINT32_MAX / 2) {
                st = pb_error(PB_ERR_FORMAT, "%s: vocabulary too large", tok->name);
                break;
            }
            tok->bl_off[id] = (uint32_t)b.len;
            const char *t = tok->id_tok[id];
            size_t n = t ? tok->id_tok_len[id] : 0, mark = b.len;
            bool ok = true;
            for (size_t j = 0; j < n && ok && st == PB_OK;) {
                uint32_t cp;
                j += tk_utf8_next(t + j, n - j, &cp);
                int by = tk_cp_to_byte(cp);
                if (by < 0)
                    ok = false;
                else
                    st = tk_buf_putc(&b, (char)by);
            }
            if (!ok && st == PB_OK) {
                b.len = mark;
                st = tk_buf_put(&b, t, n);
            }
        }
        if (st == PB_OK)
            tok->bl_off[tok->n_ids] = (uint32_t)b.len;
        if (st != PB_OK) {
            tk_buf_free(&b);
            return st;
        }
        tok->bl_bytes = b.p ? b.p : pb_strdup("");
        if (!tok->bl_bytes)
            return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    return PB_OK;
}

static pb_status parse_root(ld *L, const cJSON *root)
{
    pb_tokenizer *tok = L->tok;
    if (!cJSON_IsObject(root))
        return ferr(L, "(top level)", "must be a JSON object");
    const cJSON *added = jget(root, "added_tokens");
    if (!jnull(added) && !cJSON_IsArray(added))
        return ferr(L, "added_tokens", "must be an array");
    static const cJSON empty_arr = {.type = cJSON_Array};
    if (jnull(added))
        added = &empty_arr;
    PB_CHECK(parse_model(L, root, added));
    PB_CHECK(parse_added(L, added));

    const cJSON *o;
    if (!jnull(o = jget(root, "normalizer"))) {
        PB_CHECK(pb_calloc(1, sizeof *tok->norm, &tok->norm));
        PB_CHECK(parse_norm(L, "normalizer", o, 0, tok->norm));
    }
    if (!jnull(o = jget(root, "pre_tokenizer"))) {
        PB_CHECK(pb_calloc(1, sizeof *tok->pre, &tok->pre));
        PB_CHECK(parse_pre(L, "pre_tokenizer", o, 0, tok->pre));
    }
    if (!jnull(o = jget(root, "post_processor"))) {
        PB_CHECK(pb_calloc(1, sizeof *tok->post, &tok->post));
        PB_CHECK(parse_post(L, "post_processor", o, 0, tok->post));
    }
    if (!jnull(o = jget(root, "decoder"))) {
        PB_CHECK(pb_calloc(1, sizeof *tok->dec, &tok->dec));
        PB_CHECK(parse_dec(L, "decoder", o, 0, tok->dec));
    }
    const cJSON *trunc = jget(root, "truncation"), *pad = jget(root, "padding");
    if (!jnull(trunc))
        return ferr(L, "truncation", "truncation is not supported (set it to null)");
    (void)pad;   /* padding only matters for batches of encodings */
    PB_CHECK(normalize_added(tok));
    PB_CHECK(mark_special(tok));
    PB_CHECK(tk_trie_build(&tok->trie_raw, tok->added, tok->n_added, false));
    PB_CHECK(tk_trie_build(&tok->trie_norm, tok->added, tok->n_added, true));
    mark_cont(tok);
    return build_fast_tables(tok);
}

/* Post-processor ids must exist. */
static pb_status check_post_ids(const ld *L, const tk_post *p)
{
    for (size_t i = 0; i < p->n_sub; i++)
        PB_CHECK(check_post_ids(L, &p->sub[i]));
    for (size_t i = 0; i < p->n_before + p->n_after; i++) {
        int32_t id = i < p->n_before ? p->before[i] : p->after[i - p->n_before];
        if (id >= L->tok->n_ids || !L->tok->id_tok[id])
            return ferr(L, "post_processor", "special token id %d is not in the vocabulary", (int)id);
    }
    return PB_OK;
}

static pb_status decompress(const void *buf, size_t len, const char *name, char **out, size_t *out_len)
{
    ZSTD_DStream *ds = ZSTD_createDStream();
    if (!ds)
        return pb_error(PB_ERR_NOMEM, "%s: out of memory", name);
    tk_buf b = {0};
    ZSTD_inBuffer in = {buf, len, 0};
    pb_status st = PB_OK;
    size_t ret = 1;
    while (in.pos < in.size) {
        if ((st = tk_buf_reserve(&b, 1 << 20)) != PB_OK)
            goto fail;
        ZSTD_outBuffer ob = {b.p + b.len, b.cap - b.len - 1, 0};
        ret = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(ret)) {
            st = pb_error(PB_ERR_FORMAT, "%s: zstd: %s", name, ZSTD_getErrorName(ret));
            goto fail;
        }
        b.len += ob.pos;
        if (b.len > TK_MAX_FILE) {
            st = pb_error(PB_ERR_FORMAT, "%s: decompressed size exceeds %zu bytes", name, TK_MAX_FILE);
            goto fail;
        }
        if (ret == 0 && in.pos < in.size)
            ZSTD_initDStream(ds);   /* next frame */
    }
    /* drain what is still buffered */
    while (ret != 0) {
        if ((st = tk_buf_reserve(&b, 1 << 20)) != PB_OK)
            goto fail;
        ZSTD_outBuffer ob = {b.p + b.len, b.cap - b.len - 1, 0};
        ret = ZSTD_decompressStream(ds, &ob, &in);
        if (ZSTD_isError(ret)) {
            st = pb_error(PB_ERR_FORMAT, "%s: zstd: %s", name, ZSTD_getErrorName(ret));
            goto fail;
        }
        b.len += ob.pos;
        if (ob.pos == 0 && ret != 0) {
            st = pb_error(PB_ERR_FORMAT, "%s: zstd: truncated frame", name);
            goto fail;
        }
        if (b.len > TK_MAX_FILE) {
            st = pb_error(PB_ERR_FORMAT, "%s: decompressed size exceeds %zu bytes", name, TK_MAX_FILE);
            goto fail;
        }
    }
    ZSTD_freeDStream(ds);
    if (!b.p && (st = tk_buf_reserve(&b, 1)) != PB_OK)
        goto fail2;
    b.p[b.len] = '\0';
    *out = b.p;
    *out_len = b.len;
    return PB_OK;
fail:
    ZSTD_freeDStream(ds);
fail2:
    tk_buf_free(&b);
    return st;
}

pb_status pb_tokenizer_load_buffer(const void *buf, size_t len, const char *name, pb_tokenizer **out)
{
    *out = NULL;
    if (!name)
        name = "tokenizer.json";
    char *plain = NULL;
    const char *json = buf;
    size_t json_len = len;
    pb_status st = PB_OK;
    cJSON *root = NULL;
    const unsigned char *u = buf;
    if (len >= 4 && u[0] == 0x28 && u[1] == 0xB5 && u[2] == 0x2F && u[3] == 0xFD) {
        PB_CHECK(decompress(buf, len, name, &plain, &json_len));
        json = plain;
    }
    if (json_len > TK_MAX_FILE) {
        free(plain);
        return pb_error(PB_ERR_FORMAT, "%s: file too large", name);
    }
    pb_tokenizer *tok;
    if ((st = pb_calloc(1, sizeof *tok, &tok)) != PB_OK) {
        free(plain);
        return st;
    }
    pthread_mutex_init(&tok->cache_lock, NULL);
    tok->unk_id = -1;
    if (!(tok->name = pb_strdup(name))) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto fail;
    }
    root = cJSON_ParseWithLength(json, json_len);
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = (at && at >= json && at <= json + json_len) ? (size_t)(at - json) : 0;
        size_t line = 1;
        for (size_t k = 0; k < off; k++)
            line += json[k] == '\n';
        st = pb_error(PB_ERR_FORMAT, "%s: invalid JSON near byte %zu (line %zu)", name, off, line);
        goto fail;
    }
    ld L = {name, tok};
    if ((st = parse_root(&L, root)) != PB_OK)
        goto fail;
    if (tok->post && (st = check_post_ids(&L, tok->post)) != PB_OK)
        goto fail;
    /* word cache */
    tok->cache_mask = (1u << 14) - 1;
    if ((st = pb_calloc(tok->cache_mask + 1, sizeof *tok->cache, &tok->cache)) != PB_OK)
        goto fail;
    cJSON_Delete(root);
    free(plain);
    *out = tok;
    return PB_OK;
fail:
    cJSON_Delete(root);
    free(plain);
    pb_tokenizer_free(tok);
    return st;
}

pb_status tk_read_maybe_zstd(const char *path, char **out, size_t *out_len)
{
    char *buf;
    size_t len;
    PB_CHECK(pb_read_file(path, TK_MAX_FILE, &buf, &len));
    const unsigned char *u = (const unsigned char *)buf;
    if (len >= 4 && u[0] == 0x28 && u[1] == 0xB5 && u[2] == 0x2F && u[3] == 0xFD) {
        pb_status st = decompress(buf, len, path, out, out_len);
        free(buf);
        return st;
    }
    *out = buf;
    *out_len = len;
    return PB_OK;
}

pb_status pb_tokenizer_load(const char *path, pb_tokenizer **out)
{
    char *buf;
    size_t len;
    *out = NULL;
    PB_CHECK(pb_read_file(path, TK_MAX_FILE, &buf, &len));
    pb_status st = pb_tokenizer_load_buffer(buf, len, path, out);
    free(buf);
    return st;
}

void pb_tokenizer_free(pb_tokenizer *tok)
{
    if (!tok)
        return;
    tk_strmap_free(&tok->vocab);
    if (tok->id_tok)
        for (int32_t i = 0; i < tok->n_ids; i++)
            free(tok->id_tok[i]);
    free(tok->id_tok);
    free(tok->id_tok_len);
    free(tok->id_flags);
    tk_pairmap_free(&tok->merges);
    free(tok->unk_token);
    free(tok->cont_prefix);
    free(tok->eow_suffix);
    free(tok->char_ids);
    free(tok->bl_bytes);
    free(tok->bl_off);
    for (size_t i = 0; i < tok->n_added; i++) {
        free(tok->added[i].content);
        free(tok->added[i].match);
    }
    free(tok->added);
    tk_strmap_free(&tok->added_map);
    tk_trie_free(&tok->trie_raw);
    tk_trie_free(&tok->trie_norm);
    tk_norm_free(tok->norm);
    free(tok->norm);
    tk_pre_free(tok->pre);
    free(tok->pre);
    tk_post_free(tok->post);
    free(tok->post);
    tk_dec_free(tok->dec);
    free(tok->dec);
    if (tok->cache) {
        for (size_t i = 0; i <= tok->cache_mask; i++) {
            free(tok->cache[i].key);
            free(tok->cache[i].ids);
        }
        free(tok->cache);
    }
    pthread_mutex_destroy(&tok->cache_lock);
    free(tok->name);
    free(tok);
}

int pb_tokenizer_vocab_size(const pb_tokenizer *tok)
{
    return tok->n_ids;
}

int32_t pb_tokenizer_token_to_id(const pb_tokenizer *tok, const char *token)
{
    size_t n = strlen(token);
    int32_t id = tk_strmap_get(&tok->added_map, token, n);
    return id >= 0 ? id : tk_strmap_get(&tok->vocab, token, n);
}

const char *pb_tokenizer_id_to_token(const pb_tokenizer *tok, int32_t id)
{
    return (id >= 0 && id < tok->n_ids) ? tok->id_tok[id] : NULL;
}

bool pb_tokenizer_is_special(const pb_tokenizer *tok, int32_t id)
{
    return id >= 0 && id < tok->n_ids && (tok->id_flags[id] & TK_ID_SPECIAL);
}
