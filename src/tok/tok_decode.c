/* Decoding (HF Tokenizer::decode): ids -> token strings (special tokens
 * optionally skipped) -> decoder chain (each decoder maps a list of strings
 * to a list of strings) -> joined. Without a decoder, tokens are joined by
 * spaces. Also the streaming detokenizer used during generation. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tok/tok_internal.h"

typedef tk_pieces strs;   /* a list of strings: text + spans (id unused) */

static pb_status strs_add(strs *l, const char *s, size_t n)
{
    return tk_pieces_add(l, s, n, -1, false);
}

#define TOK(l, i) ((l)->text.p + (l)->v[i].off)
#define TLEN(l, i) ((l)->v[i].len)

static bool ends_with(const char *s, size_t n, const char *suf, size_t k)
{
    return n >= k && memcmp(s + n - k, suf, k) == 0;
}

/* u8::from_str_radix(s[0..2], 16): two hex digits, or '+' and one. */
static int hex2(const char *s)
{
    int v = 0;
    size_t i = 0;
    if (s[0] == '+')
        i = 1;
    for (; i < 2; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10
              : (c >= 'A' && c <= 'F') ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return (s[0] == '+' && s[1] == '\0') ? -1 : v;
}

static pb_status flush_bytes(strs *out, tk_buf *bytes, bool raw)
{
    if (!bytes->len)
        return PB_OK;
    if (raw || tk_utf8_valid(bytes->p, bytes->len))
        PB_CHECK(strs_add(out, bytes->p, bytes->len));
    else
        for (size_t k = 0; k < bytes->len; k++)
            PB_CHECK(strs_add(out, "\xEF\xBF\xBD", 3));
    bytes->len = 0;
    return PB_OK;
}

static pb_status replace_all(tk_buf *out, const char *s, size_t n, const char *pat, size_t pl,
                             const char *rep, size_t rl)
{
    size_t i = 0, copied = 0;
    while (pl && i + pl <= n) {
        if (memcmp(s + i, pat, pl) == 0) {
            PB_CHECK(tk_buf_put(out, s + copied, i - copied));
            PB_CHECK(tk_buf_put(out, rep, rl));
            i += pl;
            copied = i;
        } else
            i++;
    }
    return tk_buf_put(out, s + copied, n - copied);
}

static pb_status wordpiece_cleanup(tk_buf *t)
{
    static const char *const pairs[][2] = {
        {" .", "."}, {" ?", "?"}, {" !", "!"}, {" ,", ","}, {" ' ", "'"}, {" n't", "n't"},
        {" 'm", "'m"}, {" do not", " don't"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"}};
    tk_buf o = {0};
    for (size_t k = 0; k < sizeof pairs / sizeof pairs[0]; k++) {
        o.len = 0;
        pb_status st = replace_all(&o, t->p ? t->p : "", t->len, pairs[k][0], strlen(pairs[k][0]),
                                   pairs[k][1], strlen(pairs[k][1]));
        if (st != PB_OK) {
            tk_buf_free(&o);
            return st;
        }
        tk_buf x = *t; *t = o; o = x;
    }
    tk_buf_free(&o);
    return PB_OK;
}

/* raw: the pieces stand inside a text, neither first nor last (Metaspace's prepended space, Strip, the BPE
 * suffix and WordPiece's joins as there), and bytes stay as they are (no U+FFFD for a piece of a character). */
static pb_status dec_apply(const tk_dec *d, strs *in, strs *out, bool raw)
{
    tk_pieces_clear(out);
    tk_buf tmp = {0};
    pb_status st = PB_OK;
    switch (d->kind) {
    case TK_DEC_SEQUENCE:
        for (size_t i = 0; i < d->n_sub; i++) {
            PB_CHECK(dec_apply(&d->sub[i], in, out, raw));
            strs t = *in; *in = *out; *out = t;
        }
        /* the result is in *in: move it to *out */
        { strs t = *in; *in = *out; *out = t; }
        return PB_OK;
    case TK_DEC_BYTELEVEL: {
        tk_buf bytes = {0};
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i), mark = bytes.len;
            bool ok = true;
            for (size_t j = 0; j < n && ok && st == PB_OK;) {
                uint32_t cp;
                j += tk_utf8_next(s + j, n - j, &cp);
                int b = tk_cp_to_byte(cp);
                if (b < 0)
                    ok = false;
                else
                    st = tk_buf_putc(&bytes, (char)b);
            }
            if (!ok) {   /* not byte-level text: the token's own bytes */
                bytes.len = mark;
                st = tk_buf_put(&bytes, s, n);
            }
        }
        if (st == PB_OK && raw)
            st = strs_add(out, bytes.p ? bytes.p : "", bytes.len);
        else if (st == PB_OK)
            st = tk_utf8_lossy(&tmp, bytes.p ? bytes.p : "", bytes.len);
        if (st == PB_OK && !raw)
            st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        tk_buf_free(&bytes);
        break;
    }
    case TK_DEC_METASPACE:
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i);
            tmp.len = 0;
            for (size_t j = 0; j < n && st == PB_OK;) {
                uint32_t cp;
                size_t k = tk_utf8_next(s + j, n - j, &cp);
                if (cp == d->ch) {
                    if (!(i == 0 && d->prepend != TK_PREPEND_NEVER) || raw)
                        st = tk_buf_putc(&tmp, ' ');
                } else
                    st = tk_buf_put(&tmp, s + j, k);
                j += k;
            }
            if (st == PB_OK)
                st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        }
        break;
    case TK_DEC_REPLACE: {
        pcre2_match_data *md = tk_regex_match_data(&d->re);
        if (d->re.code && !md)
            return pb_error(PB_ERR_NOMEM, "tokenizer: out of memory");
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i), pos = 0, copied = 0, ms, me;
            tmp.len = 0;
            while (st == PB_OK && pos <= n && tk_regex_find(&d->re, md, s, n, pos, &ms, &me)) {
                st = tk_buf_put(&tmp, s + copied, ms - copied);
                if (st == PB_OK)
                    st = tk_buf_put(&tmp, d->str, d->str_len);
                copied = me;
                if (me == ms) {
                    if (me >= n)
                        break;
                    size_t k = tk_utf8_len((unsigned char)s[me]);
                    k = k < n - me ? k : n - me;
                    if (st == PB_OK)
                        st = tk_buf_put(&tmp, s + me, k);
                    copied = pos = me + k;
                } else
                    pos = me;
            }
            if (st == PB_OK)
                st = tk_buf_put(&tmp, s + copied, n - copied);
            if (st == PB_OK)
                st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        }
        if (md)
            pcre2_match_data_free(md);
        break;
    }
    case TK_DEC_BYTEFALLBACK:
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i);
            int v = -1;
            if (n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
                char h[3] = {s[3], s[4], '\0'};
                v = hex2(h);
            }
            if (v >= 0)
                st = tk_buf_putc(&tmp, (char)v);
            else {
                st = flush_bytes(out, &tmp, raw);
                if (st == PB_OK)
                    st = strs_add(out, s, n);
            }
        }
        if (st == PB_OK)
            st = flush_bytes(out, &tmp, raw);
        break;
    case TK_DEC_FUSE:
        for (size_t i = 0; i < in->n && st == PB_OK; i++)
            st = tk_buf_put(&tmp, TOK(in, i), TLEN(in, i));
        if (st == PB_OK)
            st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        break;
    case TK_DEC_STRIP:
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i), a = 0, b = n;
            for (size_t k = 0; k < d->start && a < n && !raw; k++) {
                uint32_t cp;
                size_t l = tk_utf8_next(s + a, n - a, &cp);
                if (cp != d->ch)
                    break;
                a += l;
            }
            for (size_t k = 0; k < d->stop && b > a && !raw; k++) {
                size_t l = 1;
                while (l < b && ((unsigned char)s[b - l] & 0xC0) == 0x80)
                    l++;
                uint32_t cp;
                tk_utf8_next(s + b - l, l, &cp);
                if (cp != d->ch)
                    break;
                b -= l;
            }
            st = strs_add(out, s + a, b - a);
        }
        break;
    case TK_DEC_BPE:
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            bool last = i + 1 == in->n && !raw;
            tmp.len = 0;
            st = replace_all(&tmp, TOK(in, i), TLEN(in, i), d->str, d->str_len, last ? "" : " ",
                             last ? 0 : 1);
            if (st == PB_OK)
                st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        }
        break;
    case TK_DEC_WORDPIECE:
        for (size_t i = 0; i < in->n && st == PB_OK; i++) {
            const char *s = TOK(in, i);
            size_t n = TLEN(in, i);
            tmp.len = 0;
            if (i != 0 || raw) {
                if (n >= d->str_len && memcmp(s, d->str, d->str_len) == 0) {
                    s += d->str_len;
                    n -= d->str_len;
                } else
                    st = tk_buf_putc(&tmp, ' ');
            }
            if (st == PB_OK)
                st = tk_buf_put(&tmp, s, n);
            if (st == PB_OK && d->cleanup)
                st = wordpiece_cleanup(&tmp);
            if (st == PB_OK)
                st = strs_add(out, tmp.p ? tmp.p : "", tmp.len);
        }
        break;
    }
    tk_buf_free(&tmp);
    return st;
}

pb_status tk_decode_into(const pb_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                         tk_buf *out)
{
    strs a = {0}, b = {0};
    pb_status st = PB_OK;
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0) {
            st = pb_error(PB_ERR_INPUT, "id %lld at position %zu is negative", (long long)id, i);
            goto out;
        }
        /* an id the tokenizer does not know (a padded row of a larger model
         * vocabulary) decodes to nothing, as HF's decode skips it */
        if (!tk_known_id(tok, id))
            continue;
        if (tok->bl_bytes || (skip_special && (tok->id_flags[id] & TK_ID_SPECIAL)))
            continue;
        PB_CHECK_GOTO(strs_add(&a, tok->id_tok[id], tok->id_tok_len[id]), st, out);
    }
    if (tok->bl_bytes) {
        /* ByteLevel alone: the ids' bytes, made valid UTF-8 as a whole */
        tk_buf bytes = {0};
        for (size_t i = 0; i < n && st == PB_OK; i++) {
            int32_t id = ids[i];
            if (!tk_known_id(tok, id) || (skip_special && (tok->id_flags[id] & TK_ID_SPECIAL)))
                continue;
            st = tk_buf_put(&bytes, tok->bl_bytes + tok->bl_off[id], tok->bl_off[id + 1] - tok->bl_off[id]);
        }
        if (st == PB_OK)
            st = tk_utf8_lossy(out, bytes.p ? bytes.p : "", bytes.len);
        tk_buf_free(&bytes);
        if (st != PB_OK)
            goto out;
    } else if (tok->dec) {
        PB_CHECK_GOTO(dec_apply(tok->dec, &a, &b, false), st, out);
        for (size_t i = 0; i < b.n; i++)
            PB_CHECK_GOTO(tk_buf_put(out, TOK(&b, i), TLEN(&b, i)), st, out);
    } else {
        for (size_t i = 0; i < a.n; i++) {
            if (i)
                PB_CHECK_GOTO(tk_buf_putc(out, ' '), st, out);
            PB_CHECK_GOTO(tk_buf_put(out, TOK(&a, i), TLEN(&a, i)), st, out);
        }
    }
    PB_CHECK_GOTO(tk_buf_reserve(out, 0), st, out);
    out->p[out->len] = '\0';
out:
    tk_pieces_free(&a);
    tk_pieces_free(&b);
    return st;
}

pb_status pb_tokenizer_decode(const pb_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len)
{
    tk_buf out = {0};
    *text = NULL;
    *len = 0;
    pb_status st = tk_decode_into(tok, ids, n, skip_special, &out);
    if (st != PB_OK) {
        tk_buf_free(&out);
        return st;
    }
    *text = out.p;
    *len = out.len;
    return PB_OK;
}

pb_status pb_tokenizer_token_bytes(const pb_tokenizer *tok, int32_t id, char **bytes, size_t *len)
{
    *bytes = NULL;
    *len = 0;
    if (!tk_known_id(tok, id))
        return pb_error(PB_ERR_INPUT, "id %lld is not in the tokenizer", (long long)id);
    tk_buf out = {0};
    strs a = {0}, b = {0};
    pb_status st = PB_OK;
    if (tok->bl_bytes) {
        st = tk_buf_put(&out, tok->bl_bytes + tok->bl_off[id], tok->bl_off[id + 1] - tok->bl_off[id]);
    } else if (tok->dec) {
        PB_CHECK_GOTO(strs_add(&a, tok->id_tok[id], tok->id_tok_len[id]), st, done);
        PB_CHECK_GOTO(dec_apply(tok->dec, &a, &b, true), st, done);
        for (size_t i = 0; i < b.n; i++)
            PB_CHECK_GOTO(tk_buf_put(&out, TOK(&b, i), TLEN(&b, i)), st, done);
    } else { /* tokens joined by spaces: one inside a text follows its space */
        st = tk_buf_putc(&out, ' ');
        if (st == PB_OK)
            st = tk_buf_put(&out, tok->id_tok[id], tok->id_tok_len[id]);
    }
    if (st == PB_OK)
        st = tk_buf_reserve(&out, 0);
done:
    tk_pieces_free(&a);
    tk_pieces_free(&b);
    if (st != PB_OK) {
        tk_buf_free(&out);
        return st;
    }
    out.p[out.len] = '\0';
    *bytes = out.p;
    *len = out.len;
    return PB_OK;
}

/* ---- streaming detokenizer ----
 * ids[] holds the ids from `prefix` on. Each push decodes ids[prefix..read)
 * and ids[prefix..n); when the second is longer and does not end in U+FFFD
 * (an incomplete character), the difference is released and the window
 * moves: prefix = read, read = n. Decoders that treat the first token
 * specially (Strip, Metaspace) do so identically in both decodes, so the
 * difference is what decoding everything would add. */

#define DETOK_CONTEXT 5    /* prompt ids kept as left context */

struct pb_detok {
    const pb_tokenizer *tok;
    bool skip_special;
    int32_t *ids;
    size_t n, cap;
    size_t read;           /* index in ids of the first unreleased id */
    tk_buf out;            /* all released text */
    tk_buf a, b;           /* scratch decodes */
    size_t last_off;       /* where the last released text begins in out */
};

/* Ids the tokenizer does not know are kept (they decode to nothing); only a
 * negative id is an error. */
static pb_status check_id(const pb_tokenizer *tok, int32_t id)
{
    (void)tok;
    if (id < 0)
        return pb_error(PB_ERR_INPUT, "id %lld is negative", (long long)id);
    return PB_OK;
}

/* id_flags of a known id, 0 for one the tokenizer does not know */
static unsigned id_flags(const pb_tokenizer *tok, int32_t id)
{
    return tk_known_id(tok, id) ? tok->id_flags[id] : 0u;
}

pb_status pb_detok_create_ex(const pb_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                             bool skip_special, pb_detok **out)
{
    *out = NULL;
    for (size_t i = 0; i < n_prompt; i++)
        PB_CHECK(check_id(tok, prompt[i]));
    /* left context: a few ids, not starting inside a UTF-8 character nor
     * inside a run of byte-fallback tokens (ByteFallback decodes a run as one) */
    size_t start = n_prompt > DETOK_CONTEXT ? n_prompt - DETOK_CONTEXT : 0;
    for (int k = 0; k < 64 && start > 0 && (id_flags(tok, prompt[start]) & TK_ID_BYTE) &&
                    (id_flags(tok, prompt[start - 1]) & TK_ID_BYTE); k++)
        start--;
    for (int k = 0; k < 8 && start > 0 && (id_flags(tok, prompt[start]) & TK_ID_CONT); k++)
        start--;
    pb_detok *d;
    PB_CHECK(pb_calloc(1, sizeof *d, &d));
    d->tok = tok;
    d->skip_special = skip_special;
    d->cap = n_prompt - start + 64;
    pb_status st = pb_malloc(d->cap * sizeof *d->ids, &d->ids);
    if (st == PB_OK)
        st = tk_buf_reserve(&d->out, 64);
    if (st != PB_OK) {
        pb_detok_free(d);
        return st;
    }
    d->out.p[0] = '\0';
    d->n = n_prompt - start;
    if (d->n)
        memcpy(d->ids, prompt + start, d->n * sizeof *d->ids);
    d->read = d->n;
    *out = d;
    return PB_OK;
}

pb_status pb_detok_create(const pb_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                          pb_detok **out)
{
    return pb_detok_create_ex(tok, prompt, n_prompt, false, out);
}

static bool ends_fffd(const tk_buf *b)
{
    return ends_with(b->p ? b->p : "", b->len, "\xEF\xBF\xBD", 3);
}

/* Release text per the window rule; `final` releases whatever is there. */
static pb_status detok_step(pb_detok *d, bool final, const char **new_text, size_t *new_len)
{
    d->a.len = d->b.len = 0;
    d->last_off = d->out.len;
    PB_CHECK(tk_decode_into(d->tok, d->ids, d->read, d->skip_special, &d->a));
    PB_CHECK(tk_decode_into(d->tok, d->ids, d->n, d->skip_special, &d->b));
    if (d->b.len > d->a.len && (final || !ends_fffd(&d->b))) {
        PB_CHECK(tk_buf_put(&d->out, d->b.p + d->a.len, d->b.len - d->a.len));
        /* slide the window: the released ids become the new left context */
        size_t drop = d->read;
        memmove(d->ids, d->ids + drop, (d->n - drop) * sizeof *d->ids);
        d->n -= drop;
        d->read = d->n;
    }
    *new_text = d->out.p + d->last_off;
    *new_len = d->out.len - d->last_off;
    return PB_OK;
}

pb_status pb_detok_push(pb_detok *d, int32_t id, const char **new_text, size_t *new_len)
{
    *new_text = d->out.p + d->out.len;
    *new_len = 0;
    d->last_off = d->out.len;
    PB_CHECK(check_id(d->tok, id));
    if (d->n == d->cap) {
        size_t nc = d->cap * 2;
        PB_CHECK(pb_realloc_array(&d->ids, nc, sizeof *d->ids));
        d->cap = nc;
    }
    d->ids[d->n++] = id;
    return detok_step(d, false, new_text, new_len);
}

pb_status pb_detok_finish(pb_detok *d, const char **new_text, size_t *new_len)
{
    *new_text = d->out.p + d->out.len;
    *new_len = 0;
    d->last_off = d->out.len;
    if (d->read == d->n)
        return PB_OK;
    return detok_step(d, true, new_text, new_len);
}

const char *pb_detok_text(const pb_detok *d, size_t *len)
{
    if (len)
        *len = d->out.len;
    return d->out.p;
}

bool pb_detok_find_stop(const pb_detok *d, const char *const *stops, int n_stops, size_t new_len,
                        size_t *offset, int *which)
{
    const char *t = d->out.p;
    size_t n = d->out.len;
    if (new_len > n)
        new_len = n;
    bool found = false;
    size_t best = 0;
    for (int k = 0; k < n_stops; k++) {
        size_t sl = stops[k] ? strlen(stops[k]) : 0;
        if (sl == 0 || sl > n)
            continue;
        /* occurrences that end inside the new text: start >= n - new_len - (sl - 1) */
        size_t from = n - new_len;
        from = from > sl - 1 ? from - (sl - 1) : 0;
        for (size_t i = from; i + sl <= n; i++) {
            if (found && i >= best)
                break;
            if (t[i] == stops[k][0] && memcmp(t + i, stops[k], sl) == 0) {
                best = i;
                *which = k;
                found = true;
                break;
            }
        }
    }
    if (found)
        *offset = best;
    return found;
}

void pb_detok_free(pb_detok *d)
{
    if (!d)
        return;
    free(d->ids);
    tk_buf_free(&d->out);
    tk_buf_free(&d->a);
    tk_buf_free(&d->b);
    free(d);
}
