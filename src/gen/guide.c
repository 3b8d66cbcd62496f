/* Constrained decoding's masks (see guide.h). */
#include "config.h"
#include "gen/guide.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/regex.h"

/* Most DFA states a pattern's subset construction may make (before minimization; JSON mode's any object stays
 * under 200000, minimized to 2561, 0.6 s and 90 MB at the peak here): a row of byte classes each. */
#define GUIDE_MAX_STATES 400000

struct pb_guide_vocab {
    int vocab, words;
    int n;            /* ids with bytes (order[0..n)) */
    int32_t *order;   /* those ids, their bytes in ascending order */
    int32_t *lcp;     /* [n]: bytes order[k] shares with order[k - 1] from the start (0 for k = 0) */
    size_t *off;      /* [vocab + 1]: id's bytes at bytes + off[id] (empty: never in a mask) */
    unsigned char *bytes;
    int max_len;
};

struct pb_guide {
    const pb_guide_vocab *v;
    pb_dfa *dfa;
    uint32_t **masks; /* [n_states]: a reached state's mask, else NULL */
    int *n_allowed;   /* [n_states] */
    int32_t *stack;   /* [max_len + 1] states along a token's bytes */
    size_t bytes;
};

typedef struct tok_bytes {
    const unsigned char *p;
    size_t len;
    int32_t id;
} tok_bytes;

static int cmp_bytes(const void *a, const void *b)
{
    const tok_bytes *x = a, *y = b;
    const int c = memcmp(x->p, y->p, x->len < y->len ? x->len : y->len);
    if (c)
        return c;
    return x->len != y->len ? (x->len < y->len ? -1 : 1) : (x->id > y->id) - (x->id < y->id);
}

void pb_guide_vocab_free(pb_guide_vocab *v)
{
    if (!v)
        return;
    free(v->order);
    free(v->lcp);
    free(v->off);
    free(v->bytes);
    free(v);
}

int pb_guide_vocab_words(const pb_guide_vocab *v)
{
    return v->words;
}

pb_status pb_guide_vocab_create(const pb_tokenizer *tok, int vocab, const int *eos_ids, int n_eos,
                                pb_guide_vocab **out)
{
    *out = NULL;
    if (vocab < 1)
        return pb_error(PB_ERR_INTERNAL, "guide: vocabulary of %d ids", vocab);
    pb_guide_vocab *v;
    PB_CHECK(pb_calloc(1, sizeof *v, &v));
    v->vocab = vocab;
    v->words = (vocab + 31) / 32;
    pb_status st;
    size_t cap = 1 << 16, len = 0;
    PB_CHECK_GOTO(pb_calloc((size_t)vocab + 1, sizeof *v->off, &v->off), st, fail);
    PB_CHECK_GOTO(pb_malloc(cap, &v->bytes), st, fail);
    const int n_tok = pb_tokenizer_vocab_size(tok);
    for (int id = 0; id < vocab; id++) {
        v->off[id] = len;
        bool skip = id >= n_tok || !pb_tokenizer_id_to_token(tok, id) || pb_tokenizer_is_special(tok, id);
        for (int e = 0; e < n_eos && !skip; e++)
            skip = eos_ids[e] == id;
        if (skip)
            continue;
        char *b;
        size_t n;
        PB_CHECK_GOTO(pb_tokenizer_token_bytes(tok, id, &b, &n), st, fail);
        if (len + n > cap) {
            while (len + n > cap)
                cap *= 2;
            unsigned char *g = realloc(v->bytes, cap);
            if (!g) {
                free(b);
                st = pb_error(PB_ERR_NOMEM, "out of memory for the vocabulary's bytes");
                goto fail;
            }
            v->bytes = g;
        }
        memcpy(v->bytes + len, b, n);
        free(b);
        len += n;
        v->n += n > 0;
        v->max_len = (int)n > v->max_len ? (int)n : v->max_len;
    }
    v->off[vocab] = len;
    PB_CHECK_GOTO(pb_calloc(v->n ? (size_t)v->n : 1, sizeof *v->order, &v->order), st, fail);
    PB_CHECK_GOTO(pb_calloc(v->n ? (size_t)v->n : 1, sizeof *v->lcp, &v->lcp), st, fail);
    tok_bytes *tb;
    PB_CHECK_GOTO(pb_calloc(v->n ? (size_t)v->n : 1, sizeof *tb, &tb), st, fail);
    for (int id = 0, k = 0; id < vocab; id++)
        if (v->off[id + 1] > v->off[id])
            tb[k++] = (tok_bytes){v->bytes + v->off[id], v->off[id + 1] - v->off[id], id};
    qsort(tb, (size_t)v->n, sizeof *tb, cmp_bytes);
    for (int k = 0; k < v->n; k++)
        v->order[k] = tb[k].id;
    free(tb);
    for (int k = 1; k < v->n; k++) {
        const int32_t x = v->order[k - 1], y = v->order[k];
        const size_t lx = v->off[x + 1] - v->off[x], ly = v->off[y + 1] - v->off[y];
        size_t l = 0;
        while (l < lx && l < ly && v->bytes[v->off[x] + l] == v->bytes[v->off[y] + l])
            l++;
        v->lcp[k] = (int32_t)l;
    }
    *out = v;
    return PB_OK;
fail:
    pb_guide_vocab_free(v);
    return st;
}

void pb_guide_free(pb_guide *g)
{
    if (!g)
        return;
    const int32_t n = g->dfa ? pb_dfa_n_states(g->dfa) : 0;
    for (int32_t s = 0; g->masks && s < n; s++)
        free(g->masks[s]);
    free(g->masks);
    free(g->n_allowed);
    free(g->stack);
    pb_dfa_free(g->dfa);
    free(g);
}

pb_status pb_guide_create(const pb_guide_vocab *v, const char *regex, size_t len, pb_guide **out)
{
    *out = NULL;
    pb_guide *g;
    PB_CHECK(pb_calloc(1, sizeof *g, &g));
    g->v = v;
    pb_status st;
    PB_CHECK_GOTO(pb_dfa_compile(regex, len, GUIDE_MAX_STATES, &g->dfa), st, fail);
    const int32_t n = pb_dfa_n_states(g->dfa);
    PB_CHECK_GOTO(pb_calloc(n > 0 ? (size_t)n : 1, sizeof *g->masks, &g->masks), st, fail);
    PB_CHECK_GOTO(pb_calloc(n > 0 ? (size_t)n : 1, sizeof *g->n_allowed, &g->n_allowed), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)v->max_len + 1, sizeof *g->stack, &g->stack), st, fail);
    g->bytes = sizeof *g + pb_dfa_bytes(g->dfa) + (size_t)n * (sizeof *g->masks + sizeof *g->n_allowed);
    *out = g;
    return PB_OK;
fail:
    pb_guide_free(g);
    return st;
}

int32_t pb_guide_start(const pb_guide *g)
{
    return pb_dfa_start(g->dfa);
}

bool pb_guide_accepts(const pb_guide *g, int32_t s)
{
    return s >= 0 && pb_dfa_accepts(g->dfa, s);
}

size_t pb_guide_bytes(const pb_guide *g)
{
    return g->bytes;
}

/* The ids whose bytes lead on from s: the tokens in byte order, each resuming from the state after the bytes it
 * shares with the one before (stack[l]); a prefix that fails skips every token that shares it. */
static void fill_mask(pb_guide *g, int32_t s, uint32_t *mask, int *count)
{
    const pb_guide_vocab *v = g->v;
    int32_t *stack = g->stack;
    int dead_at = -1, n = 0; /* dead_at >= 1: the first dead_at bytes of the last token walked lead nowhere */
    stack[0] = s;
    for (int k = 0; k < v->n; k++) {
        const int32_t id = v->order[k];
        const int l = v->lcp[k];
        if (dead_at >= 1 && l >= dead_at)
            continue;
        dead_at = -1;
        const unsigned char *b = v->bytes + v->off[id];
        const int len = (int)(v->off[id + 1] - v->off[id]);
        int32_t cur = stack[l];
        for (int d = l; d < len; d++) {
            cur = pb_dfa_next(g->dfa, cur, b[d]);
            if (cur < 0) {
                dead_at = d + 1;
                break;
            }
            stack[d + 1] = cur;
        }
        if (dead_at < 0) {
            mask[id >> 5] |= 1u << (id & 31);
            n++;
        }
    }
    *count = n;
}

pb_status pb_guide_mask(pb_guide *g, int32_t s, const uint32_t **mask, int *n)
{
    if (s < 0 || s >= pb_dfa_n_states(g->dfa))
        return pb_error(PB_ERR_INTERNAL, "guide: state %d of %d", (int)s, (int)pb_dfa_n_states(g->dfa));
    if (!g->masks[s]) {
        uint32_t *m;
        PB_CHECK(pb_calloc((size_t)g->v->words, sizeof *m, &m));
        fill_mask(g, s, m, &g->n_allowed[s]);
        g->masks[s] = m;
        g->bytes += (size_t)g->v->words * sizeof *m;
    }
    *mask = g->masks[s];
    *n = g->n_allowed[s];
    return PB_OK;
}

int32_t pb_guide_next(const pb_guide *g, int32_t s, int32_t id)
{
    const pb_guide_vocab *v = g->v;
    if (s < 0 || id < 0 || id >= v->vocab || v->off[id + 1] == v->off[id])
        return -1;
    for (size_t k = v->off[id]; k < v->off[id + 1] && s >= 0; k++)
        s = pb_dfa_next(g->dfa, s, v->bytes[k]);
    return s;
}
