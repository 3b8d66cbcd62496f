/* Constrained decoding's masks (see guide.h). */
#include "config.h"
#include "gen/guide.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/grammar.h"
#include "gen/regex.h"
#include "gen/schema.h"

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
    pb_dfa *dfa;      /* a regex's, or */
    pb_cfg *cfg;      /* a grammar's parse, its states made as reached */
    uint32_t **masks; /* [cap]: a reached state's mask, else NULL */
    int *n_allowed;   /* [cap] */
    int32_t cap;
    int32_t *stack;   /* [max_len + 1] states along a token's bytes */
    size_t bytes;     /* the masks and tables (the DFA's or grammar's own apart) */
};

static int32_t n_states(const pb_guide *g)
{
    return g->cfg ? pb_cfg_n_states(g->cfg) : pb_dfa_n_states(g->dfa);
}

/* The state after byte b from s; -1 where no match can follow. */
static pb_status step(pb_guide *g, int32_t s, uint8_t b, int32_t *t)
{
    if (g->cfg)
        return pb_cfg_next(g->cfg, s, b, t);
    *t = pb_dfa_next(g->dfa, s, b);
    return PB_OK;
}

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
    for (int32_t s = 0; g->masks && s < g->cap; s++)
        free(g->masks[s]);
    free(g->masks);
    free(g->n_allowed);
    free(g->stack);
    pb_dfa_free(g->dfa);
    pb_cfg_free(g->cfg);
    free(g);
}

/* Room for the masks of states [0, n). */
static pb_status reserve(pb_guide *g, int32_t n)
{
    if (n <= g->cap)
        return PB_OK;
    int32_t cap = g->cap ? g->cap : 16;
    while (cap < n)
        cap *= 2;
    PB_CHECK(pb_realloc_array(&g->masks, (size_t)cap, sizeof *g->masks));
    memset(g->masks + g->cap, 0, (size_t)(cap - g->cap) * sizeof *g->masks);
    PB_CHECK(pb_realloc_array(&g->n_allowed, (size_t)cap, sizeof *g->n_allowed));
    g->bytes += (size_t)(cap - g->cap) * (sizeof *g->masks + sizeof *g->n_allowed);
    g->cap = cap;
    return PB_OK;
}

pb_status pb_guide_create(const pb_guide_vocab *v, pb_guide_kind kind, const char *text, size_t len, pb_guide **out)
{
    *out = NULL;
    pb_guide *g;
    PB_CHECK(pb_calloc(1, sizeof *g, &g));
    g->v = v;
    pb_status st;
    if (kind == PB_GUIDE_GRAMMAR)
        PB_CHECK_GOTO(pb_cfg_compile(text, len, &g->cfg), st, fail);
    else if (kind == PB_GUIDE_JSON_OBJECT)
        PB_CHECK_GOTO(pb_cfg_json_object(PB_SCHEMA_RX_STRING, PB_SCHEMA_RX_NUMBER, text, len, &g->cfg), st, fail);
    else
        PB_CHECK_GOTO(pb_dfa_compile(text, len, GUIDE_MAX_STATES, &g->dfa), st, fail);
    PB_CHECK_GOTO(reserve(g, n_states(g) > 0 ? n_states(g) : 1), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)v->max_len + 1, sizeof *g->stack, &g->stack), st, fail);
    g->bytes += sizeof *g;
    *out = g;
    return PB_OK;
fail:
    pb_guide_free(g);
    return st;
}

int32_t pb_guide_start(const pb_guide *g)
{
    return g->cfg ? pb_cfg_start(g->cfg) : pb_dfa_start(g->dfa);
}

bool pb_guide_accepts(const pb_guide *g, int32_t s)
{
    return s >= 0 && (g->cfg ? pb_cfg_accepts(g->cfg, s) : pb_dfa_accepts(g->dfa, s));
}

size_t pb_guide_bytes(const pb_guide *g)
{
    return g->bytes + (g->cfg ? pb_cfg_bytes(g->cfg) : pb_dfa_bytes(g->dfa));
}

/* The ids whose bytes lead on from s: the tokens in byte order, each resuming from the state after the bytes it
 * shares with the one before (stack[l]); a prefix that fails skips every token that shares it. */
static pb_status fill_mask(pb_guide *g, int32_t s, uint32_t *mask, int *count)
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
            PB_CHECK(step(g, cur, b[d], &cur));
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
    return PB_OK;
}

pb_status pb_guide_mask(pb_guide *g, int32_t s, const uint32_t **mask, int *n)
{
    if (s < 0 || s >= n_states(g))
        return pb_error(PB_ERR_INTERNAL, "guide: state %d of %d", (int)s, (int)n_states(g));
    PB_CHECK(reserve(g, s + 1));
    if (!g->masks[s]) {
        uint32_t *m;
        PB_CHECK(pb_calloc((size_t)g->v->words, sizeof *m, &m));
        pb_status st = fill_mask(g, s, m, &g->n_allowed[s]);
        if (st != PB_OK) {
            free(m);
            return st;
        }
        g->masks[s] = m;
        g->bytes += (size_t)g->v->words * sizeof *m;
    }
    *mask = g->masks[s];
    *n = g->n_allowed[s];
    return PB_OK;
}

pb_status pb_guide_next(pb_guide *g, int32_t s, int32_t id, int32_t *next)
{
    const pb_guide_vocab *v = g->v;
    *next = -1;
    if (s < 0 || id < 0 || id >= v->vocab || v->off[id + 1] == v->off[id])
        return PB_OK;
    for (size_t k = v->off[id]; k < v->off[id + 1] && s >= 0; k++)
        PB_CHECK(step(g, s, v->bytes[k], &s));
    *next = s;
    return PB_OK;
}
