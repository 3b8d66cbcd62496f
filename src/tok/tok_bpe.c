/* The BPE model (HF tokenizers/src/models/bpe): a pre-token becomes one
 * symbol per character (byte-fallback tokens or <unk> where the character
 * is not in the vocabulary), then pairs are merged lowest rank first, the
 * leftmost on ties, through a binary heap with lazy invalidation exactly as
 * HF's Word::merge_all does. Results of short words are cached. */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tok/tok_internal.h"

typedef struct sym {
    int32_t id;
    int32_t prev, next;
    uint32_t len;          /* bytes of the original word; 0 = merged away */
} sym;

typedef struct hent {
    uint32_t rank, pos;
    int32_t nid;
} hent;

static inline bool hless(hent a, hent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void hpush(hent *h, size_t *n, hent e)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!hless(e, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static hent hpop(hent *h, size_t *n)
{
    hent top = h[0], last = h[--(*n)];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m)
            break;
        if (c + 1 < m && hless(h[c + 1], h[c]))
            c++;
        if (!hless(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (m)
        h[i] = last;
    return top;
}

typedef struct word {
    sym *s;
    size_t n, cap;
} word;

static pb_status word_add(word *w, int32_t id, uint32_t len)
{
    if (w->n == w->cap)
        return pb_error(PB_ERR_INTERNAL, "tokenizer: BPE word overflow");
    int32_t k = (int32_t)w->n;
    if (k > 0)
        w->s[k - 1].next = k;
    w->s[w->n++] = (sym){id, k - 1, -1, len};
    return PB_OK;
}

static void merge_all(const tk_pairmap *merges, word *w, hent *heap)
{
    size_t hn = 0;
    uint32_t rank;
    int32_t nid;
    for (size_t i = 0; i + 1 < w->n; i++)
        if (tk_pairmap_get(merges, w->s[i].id, w->s[i + 1].id, &rank, &nid))
            hpush(heap, &hn, (hent){rank, (uint32_t)i, nid});
    while (hn) {
        hent top = hpop(heap, &hn);
        sym *cur = &w->s[top.pos];
        if (cur->len == 0 || cur->next < 0)
            continue;
        sym right = w->s[cur->next];
        if (!tk_pairmap_get(merges, cur->id, right.id, &rank, &nid) || nid != top.nid)
            continue;
        /* merge right into cur */
        w->s[cur->next].len = 0;
        cur->id = top.nid;
        cur->len += right.len;
        cur->next = right.next;
        if (right.next >= 0)
            w->s[right.next].prev = (int32_t)top.pos;
        if (cur->prev >= 0 &&
            tk_pairmap_get(merges, w->s[cur->prev].id, cur->id, &rank, &nid))
            hpush(heap, &hn, (hent){rank, (uint32_t)cur->prev, nid});
        if (cur->next >= 0 && tk_pairmap_get(merges, cur->id, w->s[cur->next].id, &rank, &nid))
            hpush(heap, &hn, (hent){rank, top.pos, nid});
    }
}

static pb_status ids_push(int32_t **ids, size_t *n, size_t *cap, int32_t id)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        PB_CHECK(pb_realloc_array(ids, nc, sizeof **ids));
        *cap = nc;
    }
    (*ids)[(*n)++] = id;
    return PB_OK;
}

#define CACHE_MAX_KEY 64

static bool cache_get(const pb_tokenizer *tok, uint64_t h, const char *w, size_t len, int32_t **ids,
                      size_t *n, size_t *cap, pb_status *st)
{
    pb_tokenizer *mt = (pb_tokenizer *)tok;   /* the cache is the one mutable part */
    if (pthread_mutex_trylock(&mt->cache_lock) != 0)
        return false;
    tk_cache_entry *e = &mt->cache[h & mt->cache_mask];
    bool hit = e->key && e->hash == h && e->klen == len && memcmp(e->key, w, len) == 0;
    *st = PB_OK;
    if (hit)
        for (uint32_t i = 0; i < e->n_ids && *st == PB_OK; i++)
            *st = ids_push(ids, n, cap, e->ids[i]);
    pthread_mutex_unlock(&mt->cache_lock);
    return hit;
}

static void cache_put(const pb_tokenizer *tok, uint64_t h, const char *w, size_t len,
                      const int32_t *ids, size_t n)
{
    pb_tokenizer *mt = (pb_tokenizer *)tok;
    char *k = malloc(len + 1);
    int32_t *v = malloc((n ? n : 1) * sizeof *v);
    if (!k || !v || pthread_mutex_trylock(&mt->cache_lock) != 0) {
        free(k);
        free(v);
        return;
    }
    memcpy(k, w, len);
    memcpy(v, ids, n * sizeof *v);
    tk_cache_entry *e = &mt->cache[h & mt->cache_mask];
    free(e->key);
    free(e->ids);
    *e = (tk_cache_entry){h, k, (uint32_t)len, (uint32_t)n, v};
    pthread_mutex_unlock(&mt->cache_lock);
}

static pb_status bpe_word(const pb_tokenizer *tok, const char *w, size_t len, int32_t **ids,
                         size_t *n, size_t *cap);

/* Tokenize one pre-token w[0..len) (valid UTF-8), appending ids. */
pb_status tk_bpe_word(const pb_tokenizer *tok, const char *w, size_t len, int32_t **ids, size_t *n,
                      size_t *cap)
{
    if (!tok->split_meta || len <= CACHE_MAX_KEY || tok->ignore_merges)
        return bpe_word(tok, w, len, ids, n, cap);
    /* cut before each U+2581 that follows another character (see split_meta) */
    size_t start = 0;
    for (size_t i = 3; i + 3 <= len; i++) {
        if ((unsigned char)w[i] == 0xE2 && (unsigned char)w[i + 1] == 0x96 &&
            (unsigned char)w[i + 2] == 0x81 &&
            !((unsigned char)w[i - 3] == 0xE2 && (unsigned char)w[i - 2] == 0x96 &&
              (unsigned char)w[i - 1] == 0x81)) {
            PB_CHECK(bpe_word(tok, w + start, i - start, ids, n, cap));
            start = i;
        }
    }
    return bpe_word(tok, w + start, len - start, ids, n, cap);
}

static pb_status bpe_word(const pb_tokenizer *tok, const char *w, size_t len, int32_t **ids,
                         size_t *n, size_t *cap)
{
    if (len == 0)
        return PB_OK;
    uint64_t h = 0;
    pb_status st = PB_OK;
    bool cacheable = len <= CACHE_MAX_KEY && tok->cache;
    if (tok->ignore_merges) {   /* a whole word in the vocabulary is one token (no cache needed) */
        int32_t id = tk_strmap_get(&tok->vocab, w, len);
        if (id >= 0)
            return ids_push(ids, n, cap, id);
    }
    if (cacheable) {
        h = tk_hash(w, len);
        if (cache_get(tok, h, w, len, ids, n, cap, &st))
            return st;
    }

    /* at most one symbol per byte (byte fallback, prefix and suffix included);
     * each merge pushes at most two heap entries */
    sym stack_s[CACHE_MAX_KEY * 2];
    hent stack_h[CACHE_MAX_KEY * 8];
    word wd = {stack_s, 0, sizeof stack_s / sizeof stack_s[0]};
    hent *heap = stack_h;
    size_t need_s, need_h;
    if (!pb_mul_ok(len, 1 + tok->cont_prefix_len, &need_s) ||
        !pb_add_ok(need_s, tok->eow_suffix_len, &need_s) || !pb_mul_ok(need_s, 3, &need_h) ||
        !pb_add_ok(need_h, 16, &need_h))
        return pb_error(PB_ERR_NOMEM, "tokenizer: word too long");
    tk_buf tmp = {0};
    if (need_s > wd.cap) {
        PB_CHECK(pb_malloc(need_s * sizeof *wd.s, &wd.s));
        wd.cap = need_s;
    }
    if (need_h > sizeof stack_h / sizeof stack_h[0])
        PB_CHECK_GOTO(pb_malloc(need_h * sizeof *heap, &heap), st, out);

    bool affix = tok->cont_prefix || tok->eow_suffix;
    int32_t unk = -1;
    uint32_t unk_len = 0;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        size_t k = tk_utf8_next(w + i, len - i, &cp);
        const char *s = w + i;
        size_t slen = k;
        if (affix) {
            tmp.len = 0;
            if (i > 0 && tok->cont_prefix)
                PB_CHECK_GOTO(tk_buf_put(&tmp, tok->cont_prefix, tok->cont_prefix_len), st, out);
            PB_CHECK_GOTO(tk_buf_put(&tmp, s, k), st, out);
            if (i + k == len && tok->eow_suffix)
                PB_CHECK_GOTO(tk_buf_put(&tmp, tok->eow_suffix, tok->eow_suffix_len), st, out);
            s = tmp.p;
            slen = tmp.len;
        }
        i += k;
        int32_t id = tok->char_ids && cp < 65536 ? tok->char_ids[cp] : tk_strmap_get(&tok->vocab, s, slen);
        if (id >= 0) {
            if (unk >= 0) {
                PB_CHECK_GOTO(word_add(&wd, unk, unk_len), st, out);
                unk = -1;
            }
            PB_CHECK_GOTO(word_add(&wd, id, (uint32_t)k), st, out);
            continue;
        }
        if (tok->byte_fallback) {
            bool all = true;
            for (size_t b = 0; b < slen; b++)
                all = all && tok->byte_ids[(unsigned char)s[b]] >= 0;
            if (all && slen <= wd.cap - wd.n) {
                /* as HF: a pending <unk> is not flushed before byte tokens */
                for (size_t b = 0; b < slen; b++)
                    PB_CHECK_GOTO(word_add(&wd, tok->byte_ids[(unsigned char)s[b]], 1), st, out);
                continue;
            }
        }
        if (tok->unk_token) {
            if (tok->unk_id < 0) {
                st = pb_error(PB_ERR_CONFIG, "%s: model.unk_token '%s' is not in the vocabulary",
                              tok->name, tok->unk_token);
                goto out;
            }
            if (unk >= 0 && tok->fuse_unk)
                unk_len += (uint32_t)k;
            else {
                if (unk >= 0)
                    PB_CHECK_GOTO(word_add(&wd, unk, unk_len), st, out);
                unk = tok->unk_id;
                unk_len = (uint32_t)k;
            }
        }
        /* no unk_token: HF drops the character */
    }
    if (unk >= 0)
        PB_CHECK_GOTO(word_add(&wd, unk, unk_len), st, out);

    if (wd.n > 1)
        merge_all(&tok->merges, &wd, heap);
    size_t first = *n;
    for (size_t i = 0; i < wd.n && st == PB_OK; i++)
        if (wd.s[i].len)
            st = ids_push(ids, n, cap, wd.s[i].id);
    if (st == PB_OK && cacheable)
        cache_put(tok, h, w, len, *ids + first, *n - first);
out:
    if (wd.s != stack_s)
        free(wd.s);
    if (heap != stack_h)
        free(heap);
    tk_buf_free(&tmp);
    return st;
}
