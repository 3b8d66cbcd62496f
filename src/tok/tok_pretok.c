/* Pre-tokenizers (HF tokenizers/src/pre_tokenizers): split text pieces into
 * smaller ones. Splitting follows HF's NormalizedString::split: a pattern
 * yields alternating (span, is_match) runs, the behavior decides how match
 * runs join their neighbours, and empty pieces are dropped. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tok/tok_internal.h"

typedef struct span { size_t s, e; bool m; } span;
typedef struct spans { span *v; size_t n, cap; } spans;

static pb_status spans_push(spans *sp, size_t s, size_t e, bool m)
{
    if (sp->n == sp->cap) {
        size_t nc = sp->cap ? sp->cap * 2 : 32;
        PB_CHECK(pb_realloc_array(&sp->v, nc, sizeof *sp->v));
        sp->cap = nc;
    }
    sp->v[sp->n++] = (span){s, e, m};
    return PB_OK;
}

/* Pattern::find_matches for a regex (or literal). */
static pb_status find_regex(const tk_regex *re, pcre2_match_data *md, const char *s, size_t len,
                            spans *out)
{
    out->n = 0;
    if (len == 0)
        return spans_push(out, 0, 0, false);
    size_t prev = 0, pos = 0, ms, me;
    while (pos <= len && tk_regex_find(re, md, s, len, pos, &ms, &me)) {
        if (prev != ms)
            PB_CHECK(spans_push(out, prev, ms, false));
        PB_CHECK(spans_push(out, ms, me, true));
        prev = me;
        if (me == ms) {
            if (me >= len)
                break;
            size_t k = tk_utf8_len((unsigned char)s[me]);
            pos = me + (k < len - me ? k : len - me);
        } else
            pos = me;
    }
    if (prev != len)
        PB_CHECK(spans_push(out, prev, len, false));
    return PB_OK;
}

/* Pattern::find_matches for a char predicate: each matching char is its own match. */
static pb_status find_pred(bool (*pred)(uint32_t, const void *), const void *arg, const char *s,
                           size_t len, spans *out)
{
    out->n = 0;
    if (len == 0)
        return spans_push(out, 0, 0, false);
    size_t last = 0;
    for (size_t i = 0; i < len;) {
        uint32_t c;
        size_t k = tk_utf8_next(s + i, len - i, &c);
        if (pred(c, arg)) {
            if (last < i)
                PB_CHECK(spans_push(out, last, i, false));
            PB_CHECK(spans_push(out, i, i + k, true));
            last = i + k;
        }
        i += k;
    }
    if (len > last)
        PB_CHECK(spans_push(out, last, len, false));
    return PB_OK;
}

/* Apply a split behavior in place; removed spans get s == e. */
static void apply_behavior(spans *sp, tk_behavior b, bool invert)
{
    if (invert)
        for (size_t i = 0; i < sp->n; i++)
            sp->v[i].m = !sp->v[i].m;
    size_t w = 0;
    bool prev = false;
    switch (b) {
    case TK_ISOLATED:
        return;
    case TK_REMOVED:
        for (size_t i = 0; i < sp->n; i++)
            if (sp->v[i].m)
                sp->v[i].e = sp->v[i].s;
        return;
    case TK_CONTIGUOUS:
        for (size_t i = 0; i < sp->n; i++) {
            bool m = sp->v[i].m;
            if (m == prev && w > 0)
                sp->v[w - 1].e = sp->v[i].e;
            else
                sp->v[w++] = sp->v[i];
            prev = m;
        }
        sp->n = w;
        return;
    case TK_MERGED_PREV:
        for (size_t i = 0; i < sp->n; i++) {
            bool m = sp->v[i].m;
            if (m && !prev && w > 0)
                sp->v[w - 1].e = sp->v[i].e;
            else
                sp->v[w++] = sp->v[i];
            prev = m;
        }
        sp->n = w;
        return;
    case TK_MERGED_NEXT: {
        /* walk backwards, writing from the end */
        size_t r = sp->n;   /* sp->v[r..n) holds the output, in order */
        for (size_t i = sp->n; i-- > 0;) {
            span cur = sp->v[i];
            if (cur.m && !prev && r < sp->n)
                sp->v[r].s = cur.s;
            else
                sp->v[--r] = cur;
            prev = cur.m;
        }
        memmove(sp->v, sp->v + r, (sp->n - r) * sizeof *sp->v);
        sp->n -= r;
        return;
    }
    }
}

/* Emit the kept spans of s as pieces of out. */
static pb_status emit(tk_pieces *out, const char *s, const spans *sp, bool first)
{
    for (size_t i = 0; i < sp->n; i++) {
        if (sp->v[i].e <= sp->v[i].s)
            continue;
        PB_CHECK(tk_pieces_add(out, s + sp->v[i].s, sp->v[i].e - sp->v[i].s, -1,
                               first && sp->v[i].s == 0));
    }
    return PB_OK;
}

static bool pred_numeric(uint32_t c, const void *a) { (void)a; return tk_is_numeric(c); }
static bool pred_ws(uint32_t c, const void *a) { (void)a; return tk_is_whitespace(c); }
static bool pred_punct(uint32_t c, const void *a) { (void)a; return tk_is_punct(c); }
static bool pred_char(uint32_t c, const void *a) { return c == *(const uint32_t *)a; }

/* Byte-level: each byte of s as its GPT-2 printable code point. */
static pb_status bytes_to_chars(tk_buf *b, const char *s, size_t len)
{
    PB_CHECK(tk_buf_reserve(b, len * 2));
    char *w = b->p + b->len;
    for (size_t i = 0; i < len; i++) {
        uint32_t cp = tk_byte_to_cp[(unsigned char)s[i]];
        if (cp < 0x80)
            *w++ = (char)cp;
        else {
            *w++ = (char)(0xC0 | (cp >> 6));
            *w++ = (char)(0x80 | (cp & 0x3F));
        }
    }
    b->len = (size_t)(w - b->p);
    b->p[b->len] = '\0';
    return PB_OK;
}

static pb_status pre_one(const tk_pre *p, const char *s, size_t len, bool first, tk_pieces *out,
                         spans *sp, tk_buf *tmp, pcre2_match_data *md)
{
    switch (p->kind) {
    case TK_PRE_SEQUENCE:
        return pb_error(PB_ERR_INTERNAL, "tokenizer: nested sequence in pre_one");
    case TK_PRE_BYTELEVEL: {
        const char *t = s;
        size_t tl = len;
        if (p->add_prefix_space && (len == 0 || s[0] != ' ')) {
            tmp->len = 0;
            PB_CHECK(tk_buf_putc(tmp, ' '));
            PB_CHECK(tk_buf_put(tmp, s, len));
            t = tmp->p;
            tl = tmp->len;
        }
        if (p->has_re)
            PB_CHECK(find_regex(&p->re, md, t, tl, sp));
        else {
            sp->n = 0;
            PB_CHECK(spans_push(sp, 0, tl, false));
        }
        for (size_t i = 0; i < sp->n; i++) {
            if (sp->v[i].e <= sp->v[i].s)
                continue;
            size_t off = out->text.len;
            PB_CHECK(bytes_to_chars(&out->text, t + sp->v[i].s, sp->v[i].e - sp->v[i].s));
            PB_CHECK(tk_pieces_add_span(out, off, out->text.len - off, -1, first && sp->v[i].s == 0));
        }
        return PB_OK;
    }
    case TK_PRE_SPLIT:
        PB_CHECK(find_regex(&p->re, md, s, len, sp));
        apply_behavior(sp, p->behavior, p->invert);
        return emit(out, s, sp, first);
    case TK_PRE_METASPACE: {
        tmp->len = 0;
        PB_CHECK(tk_buf_reserve(tmp, len + 8));
        tmp->p[0] = '\0';
        for (size_t i = 0; i < len; i++) {
            if (s[i] == ' ')
                PB_CHECK(tk_buf_put_cp(tmp, p->replacement));
            else
                PB_CHECK(tk_buf_putc(tmp, s[i]));
        }
        uint32_t c0 = 0;
        if (tmp->len)
            tk_utf8_next(tmp->p, tmp->len, &c0);
        bool starts = tmp->len && c0 == p->replacement;
        if (!starts && (p->prepend == TK_PREPEND_ALWAYS || (p->prepend == TK_PREPEND_FIRST && first))) {
            tk_buf t2 = {0};
            pb_status st = tk_buf_put_cp(&t2, p->replacement);
            if (st == PB_OK)
                st = tk_buf_put(&t2, tmp->p, tmp->len);
            if (st != PB_OK) {
                tk_buf_free(&t2);
                return st;
            }
            tk_buf_free(tmp);
            *tmp = t2;
        }
        if (p->split) {
            PB_CHECK(find_pred(pred_char, &p->replacement, tmp->p, tmp->len, sp));
            apply_behavior(sp, TK_MERGED_NEXT, false);
        } else {
            sp->n = 0;
            PB_CHECK(spans_push(sp, 0, tmp->len, false));
        }
        return emit(out, tmp->p, sp, first);
    }
    case TK_PRE_DIGITS:
        PB_CHECK(find_pred(pred_numeric, NULL, s, len, sp));
        apply_behavior(sp, p->individual ? TK_ISOLATED : TK_CONTIGUOUS, false);
        return emit(out, s, sp, first);
    case TK_PRE_WHITESPACE:
        PB_CHECK(find_regex(&p->re, md, s, len, sp));
        apply_behavior(sp, TK_REMOVED, true);
        return emit(out, s, sp, first);
    case TK_PRE_WHITESPACE_SPLIT:
        PB_CHECK(find_pred(pred_ws, NULL, s, len, sp));
        apply_behavior(sp, TK_REMOVED, false);
        return emit(out, s, sp, first);
    case TK_PRE_PUNCTUATION:
        PB_CHECK(find_pred(pred_punct, NULL, s, len, sp));
        apply_behavior(sp, p->behavior, false);
        return emit(out, s, sp, first);
    case TK_PRE_BERT: {
        /* whitespace removed, then punctuation isolated */
        tk_pieces mid = {0};
        pb_status st = find_pred(pred_ws, NULL, s, len, sp);
        if (st == PB_OK) {
            apply_behavior(sp, TK_REMOVED, false);
            st = emit(&mid, s, sp, first);
        }
        for (size_t i = 0; st == PB_OK && i < mid.n; i++) {
            st = find_pred(pred_punct, NULL, mid.text.p + mid.v[i].off, mid.v[i].len, sp);
            if (st == PB_OK) {
                apply_behavior(sp, TK_ISOLATED, false);
                st = emit(out, mid.text.p + mid.v[i].off, sp, mid.v[i].first);
            }
        }
        tk_pieces_free(&mid);
        return st;
    }
    }
    return pb_error(PB_ERR_INTERNAL, "tokenizer: unknown pre-tokenizer kind %d", (int)p->kind);
}

/* Run p over the text pieces of *in (added-token pieces pass through);
 * the result replaces *in. tmp is scratch space of the same type. */
pb_status tk_pretokenize(const pb_tokenizer *tok, const tk_pre *p, tk_pieces *in, tk_pieces *tmp)
{
    if (p->kind == TK_PRE_SEQUENCE) {
        for (size_t i = 0; i < p->n_sub; i++)
            PB_CHECK(tk_pretokenize(tok, &p->sub[i], in, tmp));
        return PB_OK;
    }
    pcre2_match_data *md = NULL;
    if (p->has_re && p->re.code && !(md = tk_regex_match_data(&p->re)))
        return pb_error(PB_ERR_NOMEM, "tokenizer: out of memory");
    spans sp = {0};
    tk_buf scratch = {0};
    pb_status st = PB_OK;
    tk_pieces_clear(tmp);
    for (size_t i = 0; i < in->n && st == PB_OK; i++) {
        const tk_piece *pc = &in->v[i];
        if (pc->id >= 0)
            st = tk_pieces_add(tmp, "", 0, pc->id, pc->first);
        else
            st = pre_one(p, in->text.p + pc->off, pc->len, pc->first, tmp, &sp, &scratch, md);
    }
    free(sp.v);
    tk_buf_free(&scratch);
    if (md)
        pcre2_match_data_free(md);
    if (st == PB_OK) {
        tk_pieces t = *in;
        *in = *tmp;
        *tmp = t;
    }
    return st;
}
