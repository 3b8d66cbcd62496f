/* Encoding pipeline, in HF's order (tokenizer/mod.rs encode_single_sequence):
 *   1. split on added tokens matched in the raw text (normalized: false),
 *   2. normalize each remaining piece, split on added tokens matched in the
 *      normalized text (normalized: true),
 *   3. pre-tokenize the text pieces, 4. BPE each pre-token,
 *   5. post-process (special tokens) when add_special.
 * Added tokens match leftmost-longest (HF uses Aho-Corasick with that match
 * kind) with single_word, lstrip and rstrip applied as find_matches does. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tok/tok_internal.h"

/* ---- trie ---- */

static pb_status trie_node(tk_trie *t, int32_t *out)
{
    if (t->n_nodes == t->cap_nodes) {
        size_t nc = t->cap_nodes ? t->cap_nodes * 2 : 64;
        PB_CHECK(pb_realloc_array(&t->nodes, nc, sizeof *t->nodes));
        t->cap_nodes = nc;
    }
    t->nodes[t->n_nodes] = (tk_trie_node){-1, -1};
    *out = (int32_t)t->n_nodes++;
    return PB_OK;
}

static int32_t trie_child(const tk_trie *t, int32_t node, unsigned char b)
{
    for (int32_t e = t->nodes[node].first_edge; e >= 0; e = t->edges[e].next)
        if (t->edges[e].byte == b)
            return t->edges[e].child;
    return -1;
}

pb_status tk_trie_build(tk_trie *t, const tk_added *added, size_t n_added, bool normalized)
{
    memset(t, 0, sizeof *t);
    int32_t root;
    PB_CHECK(trie_node(t, &root));
    for (size_t k = 0; k < n_added; k++) {
        const tk_added *a = &added[k];
        if (a->normalized != normalized || a->match_len == 0)
            continue;
        if (a->match_len > INT32_MAX / 2)
            return pb_error(PB_ERR_FORMAT, "tokenizer: added token too long");
        int32_t node = root;
        for (size_t i = 0; i < a->match_len; i++) {
            unsigned char b = (unsigned char)a->match[i];
            int32_t c = trie_child(t, node, b);
            if (c < 0) {
                PB_CHECK(trie_node(t, &c));
                if (t->n_edges == t->cap_edges) {
                    size_t nc = t->cap_edges ? t->cap_edges * 2 : 64;
                    PB_CHECK(pb_realloc_array(&t->edges, nc, sizeof *t->edges));
                    t->cap_edges = nc;
                }
                t->edges[t->n_edges] = (tk_trie_edge){c, t->nodes[node].first_edge, b};
                t->nodes[node].first_edge = (int32_t)t->n_edges++;
            }
            node = c;
        }
        /* the first token listed with the same text keeps it, as HF's id list does */
        if (t->nodes[node].token < 0)
            t->nodes[node].token = (int32_t)k;
        t->first_byte[(unsigned char)a->match[0]] = true;
    }
    return PB_OK;
}

void tk_trie_free(tk_trie *t)
{
    free(t->nodes);
    free(t->edges);
    memset(t, 0, sizeof *t);
}

/* Longest token starting at s[i]; returns its added index or -1, and its end. */
static int32_t trie_longest(const tk_trie *t, const char *s, size_t n, size_t i, size_t *end)
{
    int32_t node = 0, best = -1;
    for (size_t j = i; j < n; j++) {
        node = trie_child(t, node, (unsigned char)s[j]);
        if (node < 0)
            break;
        if (t->nodes[node].token >= 0) {
            best = t->nodes[node].token;
            *end = j + 1;
        }
    }
    return best;
}

/* ---- added-token splitting ---- */

static uint32_t last_char(const char *s, size_t n)
{
    size_t k = 1;
    while (k < n && ((unsigned char)s[n - k] & 0xC0) == 0x80)
        k++;
    uint32_t c;
    tk_utf8_next(s + n - k, k, &c);
    return c;
}

/* find_matches over s[0..n): pieces of text and tokens appended to out. */
static pb_status split_added(const pb_tokenizer *tok, const tk_trie *t, const char *s, size_t n,
                             bool first, tk_pieces *out)
{
    size_t start_offset = 0;
    size_t i = 0;
    while (i < n) {
        if (!t->first_byte[(unsigned char)s[i]]) {
            i++;
            continue;
        }
        size_t stop = 0;
        int32_t k = trie_longest(t, s, n, i, &stop);
        if (k < 0) {
            i++;
            continue;
        }
        size_t start = i;
        i = stop;   /* the scan goes on after the match, whatever strip does */
        const tk_added *a = &tok->added[k];
        if (a->single_word) {
            bool start_space = start == 0 || !tk_is_word(last_char(s, start));
            uint32_t c = 0;
            if (stop < n)
                tk_utf8_next(s + stop, n - stop, &c);
            bool stop_space = stop == n || !tk_is_word(c);
            if (!start_space || !stop_space)
                continue;
        }
        if (a->lstrip) {
            size_t ns = start;
            while (ns > 0) {
                size_t kk = 1;
                while (kk < ns && ((unsigned char)s[ns - kk] & 0xC0) == 0x80)
                    kk++;
                uint32_t c;
                tk_utf8_next(s + ns - kk, kk, &c);
                if (!tk_is_whitespace(c))
                    break;
                ns -= kk;
            }
            start = ns > start_offset ? ns : start_offset;
        }
        if (a->rstrip) {
            while (stop < n) {
                uint32_t c;
                size_t kk = tk_utf8_next(s + stop, n - stop, &c);
                if (!tk_is_whitespace(c))
                    break;
                stop += kk;
            }
        }
        if (start_offset < start)
            PB_CHECK(tk_pieces_add(out, s + start_offset, start - start_offset, -1,
                                   first && start_offset == 0));
        PB_CHECK(tk_pieces_add(out, "", 0, a->id, false));
        start_offset = stop;
    }
    if (start_offset < n)
        PB_CHECK(tk_pieces_add(out, s + start_offset, n - start_offset, -1, first && start_offset == 0));
    return PB_OK;
}

/* ---- post-processing ---- */

static pb_status post(const tk_post *p, int32_t **ids, size_t *n, size_t *cap)
{
    switch (p->kind) {
    case TK_POST_SEQUENCE:
        for (size_t i = 0; i < p->n_sub; i++)
            PB_CHECK(post(&p->sub[i], ids, n, cap));
        return PB_OK;
    case TK_POST_NOOP:
        return PB_OK;
    case TK_POST_TEMPLATE:
    case TK_POST_CLS_SEP: {
        size_t total;
        if (!pb_add_ok(*n, p->n_before, &total) || !pb_add_ok(total, p->n_after, &total))
            return pb_error(PB_ERR_NOMEM, "tokenizer: too many ids");
        if (total > *cap) {
            PB_CHECK(pb_realloc_array(ids, total, sizeof **ids));
            *cap = total;
        }
        memmove(*ids + p->n_before, *ids, *n * sizeof **ids);
        if (p->n_before)
            memcpy(*ids, p->before, p->n_before * sizeof **ids);
        if (p->n_after)
            memcpy(*ids + p->n_before + *n, p->after, p->n_after * sizeof **ids);
        *n = total;
        return PB_OK;
    }
    }
    return pb_error(PB_ERR_INTERNAL, "tokenizer: unknown post-processor kind");
}

/* ---- encode ---- */

pb_status pb_tokenizer_encode(const pb_tokenizer *tok, const char *text, size_t len,
                              bool add_special, int32_t **ids_out, size_t *n_out)
{
    *ids_out = NULL;
    *n_out = 0;
    if (!text && len)
        return pb_error(PB_ERR_INPUT, "tokenizer: NULL text");
    tk_buf clean = {0}, norm = {0};
    tk_pieces a = {0}, b = {0};
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    pb_status st = PB_OK;

    if (len && !tk_utf8_valid(text, len)) {
        PB_CHECK_GOTO(tk_utf8_lossy(&clean, text, len), st, fail);
        text = clean.p;
        len = clean.len;
    }

    /* 1. added tokens in the raw text */
    if (tok->trie_raw.n_nodes > 1)
        PB_CHECK_GOTO(split_added(tok, &tok->trie_raw, text ? text : "", len, true, &a), st, fail);
    else if (len)
        PB_CHECK_GOTO(tk_pieces_add(&a, text, len, -1, true), st, fail);

    /* 2. normalize, then added tokens in the normalized text */
    if (tok->norm || tok->trie_norm.n_nodes > 1) {
        tk_pieces_clear(&b);
        for (size_t i = 0; i < a.n; i++) {
            const tk_piece *pc = &a.v[i];
            if (pc->id >= 0) {
                PB_CHECK_GOTO(tk_pieces_add(&b, "", 0, pc->id, pc->first), st, fail);
                continue;
            }
            const char *s = a.text.p + pc->off;
            size_t sl = pc->len;
            if (tok->norm) {
                PB_CHECK_GOTO(tk_normalize(tok->norm, s, sl, &norm), st, fail);
                s = norm.p;
                sl = norm.len;
            }
            if (sl == 0)
                continue;
            if (tok->trie_norm.n_nodes > 1)
                PB_CHECK_GOTO(split_added(tok, &tok->trie_norm, s, sl, pc->first, &b), st, fail);
            else
                PB_CHECK_GOTO(tk_pieces_add(&b, s, sl, -1, pc->first), st, fail);
        }
        tk_pieces t = a; a = b; b = t;
    }

    /* 3. pre-tokenize */
    if (tok->pre)
        PB_CHECK_GOTO(tk_pretokenize(tok, tok->pre, &a, &b), st, fail);

    /* 4. model */
    for (size_t i = 0; i < a.n; i++) {
        const tk_piece *pc = &a.v[i];
        if (pc->id >= 0) {
            if (n == cap) {
                size_t nc = cap ? cap * 2 : 64;
                PB_CHECK_GOTO(pb_realloc_array(&ids, nc, sizeof *ids), st, fail);
                cap = nc;
            }
            ids[n++] = pc->id;
        } else
            PB_CHECK_GOTO(tk_bpe_word(tok, a.text.p + pc->off, pc->len, &ids, &n, &cap), st, fail);
    }

    /* 5. special tokens */
    if (add_special && tok->post)
        PB_CHECK_GOTO(post(tok->post, &ids, &n, &cap), st, fail);

    if (!ids)
        PB_CHECK_GOTO(pb_malloc(sizeof *ids, &ids), st, fail);
    *ids_out = ids;
    *n_out = n;
    ids = NULL;
fail:
    free(ids);
    tk_buf_free(&clean);
    tk_buf_free(&norm);
    tk_pieces_free(&a);
    tk_pieces_free(&b);
    return st;
}
