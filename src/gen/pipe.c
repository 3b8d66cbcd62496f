/* Micro-batches: building, validation, wire format; the last stage's slot
 * sampler; the generic pipe wrapper (depth and FIFO checks). */
#include "config.h"
#include "gen/pipe.h"

#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend/stage.h"
#include "common/util.h"

#define MB_MAGIC 0x424d4250u /* "PBMB" little-endian */
#define RS_MAGIC 0x53524250u /* "PBRS" */
#define WIRE_VERSION 8u /* 2: PB_SEQ_FORK and its fork_slot; 3: frequency and presence penalties, prompt length;
                           4: log probabilities (of sampled and prompt tokens), logit biases; 5: masks;
                           6: the log probabilities of given ids (PB_SEQ_LP_IDS); 7: a fork's fork_from;
                           8: embeddings (PB_SEQ_EMBED_*) */
#define MB_HEADER 24
#define MB_SEQ_BYTES 100
#define RS_HEADER 24
/* Bounds on what unpack accepts before any allocation. */
#define MB_MAX_SEQS (1 << 20)
#define MB_MAX_TOKENS (1 << 26)
#define MB_MAX_BIAS (1 << 24)

/* ---- micro-batch storage ---------------------------------------------- */

pb_status pb_mb_init(pb_microbatch *mb, int cap_seqs, int cap_tokens)
{
    memset(mb, 0, sizeof *mb);
    return pb_mb_reserve(mb, cap_seqs, cap_tokens);
}

pb_status pb_mb_reserve(pb_microbatch *mb, int cap_seqs, int cap_tokens)
{
    if (cap_seqs < 0 || cap_tokens < 0)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: negative capacity");
    if (cap_seqs > mb->cap_seqs || !mb->seqs) {
        int c = cap_seqs > 0 ? cap_seqs : 1;
        PB_CHECK(pb_realloc_array(&mb->seqs, (size_t)c, sizeof *mb->seqs));
        mb->cap_seqs = c;
    }
    if (cap_tokens > mb->cap_tokens || !mb->tokens) {
        int c = cap_tokens > 0 ? cap_tokens : 1;
        PB_CHECK(pb_realloc_array(&mb->tokens, (size_t)c, sizeof *mb->tokens));
        mb->cap_tokens = c;
    }
    return PB_OK;
}

void pb_mb_clear(pb_microbatch *mb)
{
    mb->n_seqs = 0;
    mb->n_tokens = 0;
    mb->n_bias = 0;
    mb->n_allow = 0;
    mb->n_masks = 0;
    mb->mask_words = 0;
    mb->n_lp_ids = 0;
}

void pb_mb_release(pb_microbatch *mb)
{
    if (!mb)
        return;
    free(mb->seqs);
    free(mb->tokens);
    free(mb->bias);
    free(mb->allow);
    free(mb->mask);
    free(mb->lp_ids);
    memset(mb, 0, sizeof *mb);
}

static int grow_cap(int have, int need)
{
    int c = have > 0 ? have : 8;
    while (c < need)
        c = c > (1 << 29) ? need : c * 2;
    return c;
}

pb_status pb_mb_add(pb_microbatch *mb, const pb_mb_seq *seq, const int32_t *tokens)
{
    if (seq->n_tokens < 1 || mb->n_tokens > MB_MAX_TOKENS - seq->n_tokens ||
        mb->n_seqs >= MB_MAX_SEQS)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: cannot add %d tokens", (int)seq->n_tokens);
    int need_s = mb->n_seqs + 1, need_t = mb->n_tokens + seq->n_tokens;
    PB_CHECK(pb_mb_reserve(mb, need_s > mb->cap_seqs ? grow_cap(mb->cap_seqs, need_s) : 0,
                           need_t > mb->cap_tokens ? grow_cap(mb->cap_tokens, need_t) : 0));
    mb->seqs[mb->n_seqs++] = *seq;
    memcpy(mb->tokens + mb->n_tokens, tokens, (size_t)seq->n_tokens * sizeof *tokens);
    mb->n_tokens += seq->n_tokens;
    mb->seqs[mb->n_seqs - 1].n_bias = 0;
    mb->seqs[mb->n_seqs - 1].n_allow = 0;
    mb->seqs[mb->n_seqs - 1].flags &= ~(PB_SEQ_MASK | PB_SEQ_LP_IDS);
    return PB_OK;
}

/* Room for need elements of size bytes in *arr (capacity *cap; contents kept),
 * allocated even for none, so that arr + 0 is never a null pointer. */
static pb_status reserve_list(void *arr, int32_t *cap, int need, size_t size)
{
    void *p;
    memcpy(&p, arr, sizeof p);
    if (need <= *cap && p)
        return PB_OK;
    int c = grow_cap(*cap, need);
    PB_CHECK(pb_realloc_array(arr, (size_t)c, size));
    *cap = c;
    return PB_OK;
}
#define reserve_allow(mb, need) reserve_list(&(mb)->allow, &(mb)->cap_allow, (need), sizeof *(mb)->allow)
#define reserve_bias(mb, need) reserve_list(&(mb)->bias, &(mb)->cap_bias, (need), sizeof *(mb)->bias)
#define reserve_mask(mb, need) reserve_list(&(mb)->mask, &(mb)->cap_mask, (need), sizeof *(mb)->mask)
#define reserve_lp_ids(mb, need) reserve_list(&(mb)->lp_ids, &(mb)->cap_lp_ids, (need), sizeof *(mb)->lp_ids)

pb_status pb_mb_add_allow(pb_microbatch *mb, const int32_t *ids, int n)
{
    if (mb->n_seqs < 1 || n < 0 || n > MB_MAX_BIAS - mb->n_allow)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: cannot add %d allowed ids", n);
    PB_CHECK(reserve_allow(mb, mb->n_allow + n));
    memcpy(mb->allow + mb->n_allow, ids, (size_t)n * sizeof *ids);
    mb->n_allow += n;
    mb->seqs[mb->n_seqs - 1].n_allow += n;
    return PB_OK;
}

pb_status pb_mb_add_mask(pb_microbatch *mb, const uint32_t *mask, int words)
{
    if (mb->n_seqs < 1 || words < 1 || (mb->n_masks && words != mb->mask_words) ||
        (mb->seqs[mb->n_seqs - 1].flags & PB_SEQ_MASK) || (int64_t)(mb->n_masks + 1) * words > MB_MAX_BIAS)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: cannot add a mask of %d words", words);
    PB_CHECK(reserve_mask(mb, (mb->n_masks + 1) * words));
    memcpy(mb->mask + (size_t)mb->n_masks * (size_t)words, mask, (size_t)words * sizeof *mask);
    mb->mask_words = words;
    mb->n_masks++;
    mb->seqs[mb->n_seqs - 1].flags |= PB_SEQ_MASK;
    return PB_OK;
}

pb_status pb_mb_add_lp_ids(pb_microbatch *mb, const int32_t *ids, int n)
{
    pb_mb_seq *q = mb->n_seqs > 0 ? &mb->seqs[mb->n_seqs - 1] : NULL;
    if (!q || n < 1 || n > PB_MAX_LOGPROBS || !(q->flags & PB_SEQ_LOGPROBS) || (q->flags & PB_SEQ_LP_IDS))
        return pb_error(PB_ERR_INTERNAL, "micro-batch: cannot add %d log probability ids", n);
    PB_CHECK(reserve_lp_ids(mb, mb->n_lp_ids + n));
    memcpy(mb->lp_ids + mb->n_lp_ids, ids, (size_t)n * sizeof *ids);
    mb->n_lp_ids += n;
    q->n_logprobs = n;
    q->flags |= PB_SEQ_LP_IDS;
    return PB_OK;
}

pb_status pb_mb_add_bias(pb_microbatch *mb, const pb_id_bias *b, int n)
{
    if (mb->n_seqs < 1 || n < 0 || n > MB_MAX_BIAS - mb->n_bias)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: cannot add %d logit biases", n);
    PB_CHECK(reserve_bias(mb, mb->n_bias + n));
    memcpy(mb->bias + mb->n_bias, b, (size_t)n * sizeof *b);
    mb->n_bias += n;
    mb->seqs[mb->n_seqs - 1].n_bias += n;
    return PB_OK;
}

pb_status pb_mb_result_init(pb_mb_result *r, int cap)
{
    memset(r, 0, sizeof *r);
    return pb_mb_result_reserve(r, cap);
}

pb_status pb_mb_result_reserve(pb_mb_result *r, int cap)
{
    if (cap <= r->cap && r->tokens)
        return PB_OK;
    int c = cap > 0 ? cap : 1;
    PB_CHECK(pb_realloc_array(&r->tokens, (size_t)c, sizeof *r->tokens));
    PB_CHECK(pb_realloc_array(&r->lps, (size_t)c, sizeof *r->lps));
    PB_CHECK(pb_realloc_array(&r->n_plp, (size_t)c, sizeof *r->n_plp));
    PB_CHECK(pb_realloc_array(&r->n_emb, (size_t)c, sizeof *r->n_emb));
    for (int i = r->cap; i < c; i++) {
        r->lps[i].n_top = -1; /* none asked until filled */
        r->n_plp[i] = 0;
        r->n_emb[i] = 0;
    }
    r->cap = c;
    return PB_OK;
}

pb_status pb_mb_result_reserve_plp(pb_mb_result *r, int n)
{
    return reserve_list(&r->plp, &r->plp_cap, n, sizeof *r->plp);
}

pb_status pb_mb_result_reserve_emb(pb_mb_result *r, int n)
{
    return reserve_list(&r->emb, &r->emb_cap, n, sizeof *r->emb);
}

/* Entries in r's prompt tokens' list. */
static int plp_total(const pb_mb_result *r)
{
    int n = 0;
    for (int i = 0; i < r->n_seqs; i++)
        n += r->n_plp[i];
    return n;
}

/* Floats in r's embeddings. */
static int64_t emb_total(const pb_mb_result *r)
{
    int64_t n = 0;
    for (int i = 0; i < r->n_seqs; i++)
        n += r->n_emb[i];
    return n;
}

pb_status pb_mb_result_copy(pb_mb_result *dst, const pb_mb_result *src)
{
    PB_CHECK(pb_mb_result_reserve(dst, src->n_seqs));
    dst->tag = src->tag;
    dst->n_seqs = src->n_seqs;
    memcpy(dst->tokens, src->tokens, (size_t)src->n_seqs * sizeof *src->tokens);
    memcpy(dst->lps, src->lps, (size_t)src->n_seqs * sizeof *src->lps);
    memcpy(dst->n_plp, src->n_plp, (size_t)src->n_seqs * sizeof *src->n_plp);
    const int n = plp_total(src);
    PB_CHECK(pb_mb_result_reserve_plp(dst, n));
    if (n)
        memcpy(dst->plp, src->plp, (size_t)n * sizeof *src->plp);
    memcpy(dst->n_emb, src->n_emb, (size_t)src->n_seqs * sizeof *src->n_emb);
    const int ne = (int)emb_total(src);
    PB_CHECK(pb_mb_result_reserve_emb(dst, ne));
    if (ne)
        memcpy(dst->emb, src->emb, (size_t)ne * sizeof *src->emb);
    return PB_OK;
}

void pb_mb_result_release(pb_mb_result *r)
{
    if (!r)
        return;
    free(r->tokens);
    free(r->lps);
    free(r->n_plp);
    free(r->plp);
    free(r->n_emb);
    free(r->emb);
    memset(r, 0, sizeof *r);
}

/* ---- validation ------------------------------------------------------- */

pb_status pb_mb_validate(const pb_microbatch *mb, const pb_mb_limits *lim)
{
    if (mb->n_seqs < 1)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: no sequences", (unsigned long long)mb->tag);
    if (lim->n_slots > 0 && mb->n_seqs > lim->n_slots)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d sequences for %d slots",
                        (unsigned long long)mb->tag, (int)mb->n_seqs, lim->n_slots);
    if (lim->max_batch_tokens > 0 && mb->n_tokens > lim->max_batch_tokens)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d tokens, more than the stage's %d",
                        (unsigned long long)mb->tag, (int)mb->n_tokens, lim->max_batch_tokens);
    int64_t sum = 0;
    int nb = 0, na = 0, nm = 0, nl = 0;
    uint32_t all_flags = 0;
    const int words = (lim->vocab + 31) / 32;
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *s = &mb->seqs[i];
        if (s->slot < 0 || s->slot >= lim->n_slots)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: slot %d not in [0, %d)",
                            (unsigned long long)mb->tag, i, (int)s->slot, lim->n_slots);
        for (int j = 0; j < i; j++)
            if (mb->seqs[j].slot == s->slot)
                return pb_error(PB_ERR_INPUT, "micro-batch %llu: slot %d used twice",
                                (unsigned long long)mb->tag, (int)s->slot);
        if (s->n_tokens < 1)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: n_tokens %d < 1",
                            (unsigned long long)mb->tag, i, (int)s->n_tokens);
        if (s->pos < 0 || (int64_t)s->pos + s->n_tokens > lim->max_seq_len)
            return pb_error(PB_ERR_INPUT,
                            "micro-batch %llu, sequence %d: pos %d + %d tokens exceeds max_seq_len %d",
                            (unsigned long long)mb->tag, i, (int)s->pos, (int)s->n_tokens,
                            lim->max_seq_len);
        if (s->flags & ~PB_SEQ_FLAGS_ALL)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: unknown flags 0x%x",
                            (unsigned long long)mb->tag, i, (unsigned)s->flags);
        const uint32_t emb = s->flags & PB_SEQ_EMBED;
        if (emb && ((emb & (emb - 1)) || (s->flags & (PB_SEQ_SAMPLE | PB_SEQ_PROMPT_LOGPROBS)) ||
                    (emb == PB_SEQ_EMBED_FIRST && s->pos != 0)))
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: embedding flags 0x%x with others",
                            (unsigned long long)mb->tag, i, (unsigned)s->flags);
        all_flags |= s->flags;
        if ((s->flags & PB_SEQ_NEW) && !(s->flags & PB_SEQ_FORK) && s->pos != 0)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: new sequence at pos %d",
                            (unsigned long long)mb->tag, i, (int)s->pos);
        if ((s->flags & PB_SEQ_FORK) &&
            (!(s->flags & PB_SEQ_NEW) || s->pos < 1 || s->fork_slot < 0 || s->fork_slot >= lim->n_slots ||
             s->fork_from < 0 || s->fork_from >= s->pos))
            return pb_error(PB_ERR_INPUT,
                            "micro-batch %llu, sequence %d: slot %d cannot start as %d positions of slot %d (from %d)",
                            (unsigned long long)mb->tag, i, (int)s->slot, (int)s->pos, (int)s->fork_slot,
                            (int)s->fork_from);
        if (!(s->flags & PB_SEQ_FORK) && s->fork_from != 0)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: fork_from %d without PB_SEQ_FORK",
                            (unsigned long long)mb->tag, i, (int)s->fork_from);
        if ((s->flags & PB_SEQ_LOGPROBS) ? !(s->flags & PB_SEQ_SAMPLE) || s->n_logprobs < 0 ||
                                               s->n_logprobs > PB_MAX_LOGPROBS
                                             : s->n_logprobs != 0)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: %d log probabilities asked%s",
                            (unsigned long long)mb->tag, i, (int)s->n_logprobs,
                            (s->flags & PB_SEQ_LOGPROBS) ? "" : " without PB_SEQ_LOGPROBS");
        pb_status st = pb_sample_params_check(&s->sample);
        if (st != PB_OK)
            return pb_error_ctx(st, "micro-batch %llu, sequence %d", (unsigned long long)mb->tag, i);
        if (s->n_bias < 0 || (s->n_bias > 0 && !(s->flags & PB_SEQ_SAMPLE)) || s->n_bias > mb->n_bias - nb)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: %d logit biases", (unsigned long long)mb->tag,
                            i, (int)s->n_bias);
        const bool plp = s->flags & PB_SEQ_PROMPT_LOGPROBS;
        if (plp ? s->n_prompt_logprobs < 0 || s->n_prompt_logprobs > PB_MAX_LOGPROBS || s->next_id < -1 ||
                      s->next_id >= lim->vocab || ((s->flags & PB_SEQ_SAMPLE) != 0) != (s->next_id == -1) ||
                      (s->flags & PB_SEQ_FORK)
                : s->n_prompt_logprobs != 0)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: prompt log probabilities %d, next id %d%s",
                            (unsigned long long)mb->tag, i, (int)s->n_prompt_logprobs, (int)s->next_id,
                            plp ? "" : " without PB_SEQ_PROMPT_LOGPROBS");
        for (int k = nb; k < nb + s->n_bias; k++) {
            const pb_id_bias *b = &mb->bias[k];
            if (b->id < 0 || b->id >= lim->vocab || (k > nb && b->id <= mb->bias[k - 1].id) ||
                !((b->bias >= -100.0f && b->bias <= 100.0f) || b->bias == -INFINITY))
                return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: logit bias %g for id %d (ids ascending "
                                "in [0, %d), biases in [-100, 100] or -inf)", (unsigned long long)mb->tag, i,
                                (double)b->bias, (int)b->id, lim->vocab);
        }
        nb += s->n_bias;
        if (s->n_allow < 0 || (s->n_allow > 0 && !(s->flags & PB_SEQ_SAMPLE)) || s->n_allow > mb->n_allow - na)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: %d allowed ids", (unsigned long long)mb->tag,
                            i, (int)s->n_allow);
        for (int k = na; k < na + s->n_allow; k++)
            if (mb->allow[k] < 0 || mb->allow[k] >= lim->vocab || (k > na && mb->allow[k] <= mb->allow[k - 1]))
                return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: allowed id %d (ids ascending in "
                                "[0, %d))", (unsigned long long)mb->tag, i, (int)mb->allow[k], lim->vocab);
        na += s->n_allow;
        if (s->flags & PB_SEQ_MASK) {
            if (!(s->flags & PB_SEQ_SAMPLE) || mb->mask_words != words || nm >= mb->n_masks)
                return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: a mask of %d words (%d for the "
                                "vocabulary) where it %s", (unsigned long long)mb->tag, i, (int)mb->mask_words, words,
                                (s->flags & PB_SEQ_SAMPLE) ? "samples" : "does not sample");
            const uint32_t *m = mb->mask + (size_t)nm * (size_t)words;
            uint32_t any = 0;
            for (int w = 0; w < words; w++)
                any |= m[w];
            const uint32_t past = (lim->vocab % 32) ? ~0u << (lim->vocab % 32) : 0;
            if (!any || (m[words - 1] & past))
                return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: its mask allows %s",
                                (unsigned long long)mb->tag, i, any ? "ids past the vocabulary" : "no id");
            nm++;
        }
        if (s->flags & PB_SEQ_LP_IDS) {
            if (!(s->flags & PB_SEQ_LOGPROBS) || s->n_logprobs < 1 || s->n_logprobs > mb->n_lp_ids - nl)
                return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: %d log probability ids%s",
                                (unsigned long long)mb->tag, i, (int)s->n_logprobs,
                                (s->flags & PB_SEQ_LOGPROBS) ? "" : " without PB_SEQ_LOGPROBS");
            for (int k = nl; k < nl + s->n_logprobs; k++)
                if (mb->lp_ids[k] < 0 || mb->lp_ids[k] >= lim->vocab)
                    return pb_error(PB_ERR_INPUT, "micro-batch %llu, sequence %d: log probability id %d not in "
                                    "[0, %d)", (unsigned long long)mb->tag, i, (int)mb->lp_ids[k], lim->vocab);
            nl += s->n_logprobs;
        }
        sum += s->n_tokens;
    }
    if (nl != mb->n_lp_ids)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d log probability ids but sequences hold %d",
                        (unsigned long long)mb->tag, (int)mb->n_lp_ids, nl);
    if (nm != mb->n_masks)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d masks but %d sequences have one",
                        (unsigned long long)mb->tag, (int)mb->n_masks, nm);
    if (na != mb->n_allow)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d allowed ids but sequences hold %d",
                        (unsigned long long)mb->tag, (int)mb->n_allow, na);
    if (nb != mb->n_bias)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: %d logit biases but sequences hold %d",
                        (unsigned long long)mb->tag, (int)mb->n_bias, nb);
    if (sum != mb->n_tokens)
        return pb_error(PB_ERR_INPUT, "micro-batch %llu: n_tokens %d but sequences hold %lld",
                        (unsigned long long)mb->tag, (int)mb->n_tokens, (long long)sum);
    for (int i = 0; i < mb->n_tokens; i++)
        if (mb->tokens[i] < 0 || mb->tokens[i] >= lim->vocab)
            return pb_error(PB_ERR_INPUT, "micro-batch %llu: token id %d at %d not in [0, %d)",
                            (unsigned long long)mb->tag, (int)mb->tokens[i], i, lim->vocab);
    if ((all_flags & PB_SEQ_EMBED) && (all_flags & PB_SEQ_SAMPLE))
        return pb_error(PB_ERR_INPUT, "micro-batch %llu both samples and embeds", (unsigned long long)mb->tag);
    return PB_OK;
}

/* ---- the stage's view ------------------------------------------------- */

pb_status pb_mb_batch_init(pb_mb_batch *a, int n_slots)
{
    memset(a, 0, sizeof *a);
    pb_status st;
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(int), &a->slot), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(int), &a->pos), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(int), &a->ntok), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(int), &a->fork), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(int), &a->fork_from), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof(bool), &a->rope_long), st, fail);
    return PB_OK;
fail:
    pb_mb_batch_free(a);
    return st;
}

void pb_mb_batch_free(pb_mb_batch *a)
{
    free(a->slot);
    free(a->pos);
    free(a->ntok);
    free(a->fork);
    free(a->fork_from);
    free(a->rope_long);
    memset(a, 0, sizeof *a);
}

pb_seq_batch pb_mb_batch_of(pb_mb_batch *a, const pb_microbatch *mb)
{
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        a->slot[i] = q->slot;
        a->pos[i] = q->pos;
        a->ntok[i] = q->n_tokens;
        a->rope_long[i] = (q->flags & PB_SEQ_ROPE_LONG) != 0;
        a->fork[i] = (q->flags & PB_SEQ_FORK) ? q->fork_slot : -1;
        a->fork_from[i] = (q->flags & PB_SEQ_FORK) ? q->fork_from : 0;
    }
    return (pb_seq_batch){.n_seqs = mb->n_seqs, .slot = a->slot, .pos = a->pos, .n_tokens = a->ntok,
                          .rope_long = a->rope_long, .fork_src = a->fork, .fork_from = a->fork_from};
}

/* ---- wire format ------------------------------------------------------ */

static void put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v; p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16); p[3] = (unsigned char)(v >> 24);
}
static void put64(unsigned char *p, uint64_t v)
{
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}
static void putf(unsigned char *p, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    put32(p, v);
}
static uint32_t get32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t get64(const unsigned char *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}
static int32_t geti(const unsigned char *p)
{
    uint32_t v = get32(p);
    int32_t i;
    memcpy(&i, &v, 4);
    return i;
}
static float getf(const unsigned char *p)
{
    uint32_t v = get32(p);
    float f;
    memcpy(&f, &v, 4);
    return f;
}

size_t pb_mb_packed_size(const pb_microbatch *mb)
{
    return MB_HEADER + (size_t)mb->n_seqs * MB_SEQ_BYTES + (size_t)mb->n_tokens * 4 + (size_t)mb->n_bias * 8 +
           (size_t)mb->n_allow * 4 + (size_t)mb->n_masks * (size_t)mb->mask_words * 4 + (size_t)mb->n_lp_ids * 4;
}

size_t pb_mb_max_size(int n_seqs, int n_tokens, int vocab)
{
    const size_t s = n_seqs > 0 ? (size_t)n_seqs : 0, t = n_tokens > 0 ? (size_t)n_tokens : 0;
    const size_t mask = vocab > 0 ? ((size_t)vocab + 31) / 32 * 4 : 0;
    const size_t bias = PB_MAX_LOGIT_BIAS + PB_MAX_STOP_IDS + 2 * PB_MAX_BAD_WORDS;
    return MB_HEADER + s * (MB_SEQ_BYTES + bias * 8 + PB_MAX_ALLOWED_IDS * 4 + mask + PB_MAX_LOGPROBS * 4) + t * 4;
}

pb_status pb_mb_pack(const pb_microbatch *mb, void *dst, size_t cap, size_t *written)
{
    if (mb->n_seqs < 0 || mb->n_tokens < 0 || mb->n_bias < 0 || mb->n_allow < 0 || mb->n_masks < 0 ||
        mb->mask_words < 0 || mb->n_lp_ids < 0)
        return pb_error(PB_ERR_INTERNAL, "micro-batch: negative counts");
    size_t need = pb_mb_packed_size(mb);
    if (cap < need)
        return pb_error(PB_ERR_INTERNAL, "micro-batch pack: %zu bytes needed, %zu given", need, cap);
    unsigned char *p = dst;
    put32(p, MB_MAGIC); put32(p + 4, WIRE_VERSION); put64(p + 8, mb->tag);
    put32(p + 16, (uint32_t)mb->n_seqs); put32(p + 20, (uint32_t)mb->n_tokens);
    p += MB_HEADER;
    for (int i = 0; i < mb->n_seqs; i++, p += MB_SEQ_BYTES) {
        const pb_mb_seq *s = &mb->seqs[i];
        put32(p, (uint32_t)s->slot); put32(p + 4, (uint32_t)s->pos);
        put32(p + 8, (uint32_t)s->n_tokens); put32(p + 12, s->flags);
        putf(p + 16, s->sample.temperature); put32(p + 20, (uint32_t)s->sample.top_k);
        putf(p + 24, s->sample.top_p); putf(p + 28, s->sample.min_p);
        putf(p + 32, s->sample.repetition_penalty);
        put32(p + 36, (s->flags & PB_SEQ_FORK) ? (uint32_t)s->fork_slot : 0);
        put64(p + 40, s->key.seed); put64(p + 48, s->key.record); put64(p + 56, s->key.step);
        putf(p + 64, s->sample.frequency_penalty); putf(p + 68, s->sample.presence_penalty);
        put32(p + 72, (uint32_t)s->sample.prompt_len);
        put32(p + 76, (uint32_t)s->n_logprobs);
        put32(p + 80, (uint32_t)s->n_bias);
        const bool plp = s->flags & PB_SEQ_PROMPT_LOGPROBS;
        put32(p + 84, plp ? (uint32_t)s->n_prompt_logprobs : 0);
        put32(p + 88, plp ? (uint32_t)s->next_id : 0);
        put32(p + 92, (uint32_t)s->n_allow);
        put32(p + 96, (s->flags & PB_SEQ_FORK) ? (uint32_t)s->fork_from : 0);
    }
    for (int i = 0; i < mb->n_tokens; i++, p += 4)
        put32(p, (uint32_t)mb->tokens[i]);
    for (int i = 0; i < mb->n_bias; i++, p += 8) {
        put32(p, (uint32_t)mb->bias[i].id);
        putf(p + 4, mb->bias[i].bias);
    }
    for (int i = 0; i < mb->n_allow; i++, p += 4)
        put32(p, (uint32_t)mb->allow[i]);
    for (size_t i = 0; i < (size_t)mb->n_masks * (size_t)mb->mask_words; i++, p += 4)
        put32(p, mb->mask[i]);
    for (int i = 0; i < mb->n_lp_ids; i++, p += 4)
        put32(p, (uint32_t)mb->lp_ids[i]);
    *written = need;
    return PB_OK;
}

pb_status pb_mb_unpack(const void *src, size_t len, const pb_mb_limits *lim, pb_microbatch *mb)
{
    const unsigned char *p = src;
    if (len < MB_HEADER)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: %zu bytes, shorter than its header", len);
    if (get32(p) != MB_MAGIC)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: bad magic 0x%08x", get32(p));
    if (get32(p + 4) != WIRE_VERSION)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: version %u, expected %u", get32(p + 4),
                        WIRE_VERSION);
    uint64_t tag = get64(p + 8);
    int32_t n_seqs = geti(p + 16), n_tokens = geti(p + 20);
    if (n_seqs < 0 || n_seqs > MB_MAX_SEQS || n_tokens < 0 || n_tokens > MB_MAX_TOKENS)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: bad counts (%d sequences, %d tokens)",
                        (int)n_seqs, (int)n_tokens);
    size_t need = MB_HEADER + (size_t)n_seqs * MB_SEQ_BYTES + (size_t)n_tokens * 4;
    if (len < need)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: %zu bytes, expected at least %zu", len, need);
    int64_t n_bias = 0, n_allow = 0, n_masks = 0, n_lp_ids = 0;
    for (int i = 0; i < n_seqs; i++) {
        const unsigned char *q = p + MB_HEADER + (size_t)i * MB_SEQ_BYTES;
        int32_t k = geti(q + 80), a = geti(q + 92), l = geti(q + 76);
        n_masks += (get32(q + 12) & PB_SEQ_MASK) != 0;
        if (k < 0 || k > MB_MAX_BIAS || a < 0 || a > MB_MAX_BIAS)
            return pb_error(PB_ERR_FORMAT, "micro-batch message: sequence %d: %d logit biases, %d allowed ids", i,
                            (int)k, (int)a);
        if ((get32(q + 12) & PB_SEQ_LP_IDS) && (l < 1 || l > PB_MAX_LOGPROBS))
            return pb_error(PB_ERR_FORMAT, "micro-batch message: sequence %d: %d log probability ids", i, (int)l);
        n_lp_ids += (get32(q + 12) & PB_SEQ_LP_IDS) ? l : 0;
        n_bias += k;
        n_allow += a;
    }
    if (n_bias > MB_MAX_BIAS || n_allow > MB_MAX_BIAS)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: %lld logit biases, %lld allowed ids", (long long)n_bias,
                        (long long)n_allow);
    const int words = lim->vocab > 0 ? (lim->vocab + 31) / 32 : 0;
    if (n_masks && (!words || n_masks * words > MB_MAX_BIAS))
        return pb_error(PB_ERR_FORMAT, "micro-batch message: %lld masks of %d words", (long long)n_masks, words);
    need += (size_t)n_bias * 8 + (size_t)n_allow * 4 + (size_t)n_masks * (size_t)words * 4 + (size_t)n_lp_ids * 4;
    if (len != need)
        return pb_error(PB_ERR_FORMAT, "micro-batch message: %zu bytes, expected %zu", len, need);
    PB_CHECK(reserve_bias(mb, (int)n_bias));
    PB_CHECK(reserve_allow(mb, (int)n_allow));
    mb->n_bias = (int32_t)n_bias;
    mb->n_allow = (int32_t)n_allow;
    PB_CHECK(reserve_mask(mb, (int)(n_masks * words)));
    mb->n_masks = (int32_t)n_masks;
    mb->mask_words = n_masks ? words : 0;
    PB_CHECK(reserve_lp_ids(mb, (int)n_lp_ids));
    mb->n_lp_ids = (int32_t)n_lp_ids;
    PB_CHECK(pb_mb_reserve(mb, n_seqs, n_tokens));
    mb->tag = tag;
    mb->n_seqs = n_seqs;
    mb->n_tokens = n_tokens;
    p += MB_HEADER;
    for (int i = 0; i < n_seqs; i++, p += MB_SEQ_BYTES) {
        pb_mb_seq *s = &mb->seqs[i];
        s->slot = geti(p); s->pos = geti(p + 4); s->n_tokens = geti(p + 8); s->flags = get32(p + 12);
        s->sample.temperature = getf(p + 16); s->sample.top_k = geti(p + 20);
        s->sample.top_p = getf(p + 24); s->sample.min_p = getf(p + 28);
        s->sample.repetition_penalty = getf(p + 32);
        s->fork_slot = (s->flags & PB_SEQ_FORK) ? geti(p + 36) : 0;
        s->fork_from = (s->flags & PB_SEQ_FORK) ? geti(p + 96) : 0;
        if (!(s->flags & PB_SEQ_FORK) && (get32(p + 36) != 0 || get32(p + 96) != 0))
            return pb_error(PB_ERR_FORMAT, "micro-batch message: sequence %d: fork slot without PB_SEQ_FORK", i);
        s->key.seed = get64(p + 40); s->key.record = get64(p + 48); s->key.step = get64(p + 56);
        s->sample.frequency_penalty = getf(p + 64); s->sample.presence_penalty = getf(p + 68);
        s->sample.prompt_len = geti(p + 72);
        s->n_logprobs = geti(p + 76);
        s->n_bias = geti(p + 80);
        s->n_prompt_logprobs = geti(p + 84);
        s->next_id = (s->flags & PB_SEQ_PROMPT_LOGPROBS) ? geti(p + 88) : -1;
        s->n_allow = geti(p + 92);
        if (!(s->flags & PB_SEQ_PROMPT_LOGPROBS) && get32(p + 88) != 0)
            return pb_error(PB_ERR_FORMAT, "micro-batch message: sequence %d: next id without PB_SEQ_PROMPT_LOGPROBS",
                            i);
    }
    for (int i = 0; i < n_tokens; i++, p += 4)
        mb->tokens[i] = geti(p);
    for (int i = 0; i < mb->n_bias; i++, p += 8)
        mb->bias[i] = (pb_id_bias){geti(p), getf(p + 4)};
    for (int i = 0; i < mb->n_allow; i++, p += 4)
        mb->allow[i] = geti(p);
    for (size_t i = 0; i < (size_t)mb->n_masks * (size_t)mb->mask_words; i++, p += 4)
        mb->mask[i] = get32(p);
    for (int i = 0; i < mb->n_lp_ids; i++, p += 4)
        mb->lp_ids[i] = geti(p);
    return pb_mb_validate(mb, lim);
}

size_t pb_mb_result_packed_size(const pb_mb_result *r)
{
    size_t n = RS_HEADER;
    for (int i = 0; i < r->n_seqs; i++)
        n += 12 + (r->lps[i].n_top >= 0 ? 4 + (size_t)r->lps[i].n_top * 8 : 0);
    const int np = plp_total(r);
    for (int k = 0; k < np; k++)
        n += 16 + (size_t)r->plp[k].n_top * 8;
    return n + (size_t)r->n_seqs * 4 + (size_t)emb_total(r) * 4;
}

size_t pb_mb_result_max_size(int n_seqs, int n_tokens, int hidden)
{
    const size_t s = n_seqs > 0 ? (size_t)n_seqs : 0, t = n_tokens > 0 ? (size_t)n_tokens : 0;
    const size_t h = hidden > 0 ? (size_t)hidden : 0;
    return RS_HEADER + s * (20 + PB_MAX_LOGPROBS * 8 + h * 4) + t * (16 + PB_MAX_LOGPROBS * 8);
}

pb_status pb_mb_result_pack(const pb_mb_result *r, void *dst, size_t cap, size_t *written)
{
    if (r->n_seqs < 0)
        return pb_error(PB_ERR_INTERNAL, "result: negative count");
    for (int i = 0; i < r->n_seqs; i++)
        if (r->lps[i].n_top < -1 || r->lps[i].n_top > PB_MAX_LOGPROBS || r->n_plp[i] < 0 || r->n_emb[i] < 0)
            return pb_error(PB_ERR_INTERNAL, "result: %d log probabilities", (int)r->lps[i].n_top);
    const int np = plp_total(r);
    for (int k = 0; k < np; k++)
        if (r->plp[k].n_top < 0 || r->plp[k].n_top > PB_MAX_LOGPROBS)
            return pb_error(PB_ERR_INTERNAL, "result: %d log probabilities", (int)r->plp[k].n_top);
    size_t need = pb_mb_result_packed_size(r);
    if (cap < need)
        return pb_error(PB_ERR_INTERNAL, "result pack: %zu bytes needed, %zu given", need, cap);
    unsigned char *p = dst;
    put32(p, RS_MAGIC); put32(p + 4, WIRE_VERSION); put64(p + 8, r->tag);
    put32(p + 16, (uint32_t)r->n_seqs); put32(p + 20, 0);
    p += RS_HEADER;
    for (int i = 0; i < r->n_seqs; i++, p += 4)
        put32(p, (uint32_t)r->tokens[i]);
    for (int i = 0; i < r->n_seqs; i++, p += 4)
        put32(p, (uint32_t)r->lps[i].n_top);
    for (int i = 0; i < r->n_seqs; i++) {
        const pb_logprobs *l = &r->lps[i];
        if (l->n_top < 0)
            continue;
        putf(p, l->logprob);
        p += 4;
        for (int k = 0; k < l->n_top; k++, p += 8) {
            put32(p, (uint32_t)l->top_id[k]);
            putf(p + 4, l->top_logprob[k]);
        }
    }
    for (int i = 0; i < r->n_seqs; i++, p += 4)
        put32(p, (uint32_t)r->n_plp[i]);
    for (int k = 0; k < np; k++) {
        const pb_logprobs *l = &r->plp[k];
        put32(p, (uint32_t)l->id); putf(p + 4, l->logprob); put32(p + 8, (uint32_t)l->rank);
        put32(p + 12, (uint32_t)l->n_top);
        p += 16;
        for (int j = 0; j < l->n_top; j++, p += 8) {
            put32(p, (uint32_t)l->top_id[j]);
            putf(p + 4, l->top_logprob[j]);
        }
    }
    for (int i = 0; i < r->n_seqs; i++, p += 4)
        put32(p, (uint32_t)r->n_emb[i]);
    const int64_t ne = emb_total(r);
    for (int64_t k = 0; k < ne; k++, p += 4)
        putf(p, r->emb[k]);
    *written = need;
    return PB_OK;
}

/* A log probability as computed: at most 0, or -inf; never NaN. */
static bool logprob_ok(float x)
{
    return x <= 0.0f;
}

pb_status pb_mb_result_unpack(const void *src, size_t len, int vocab, int hidden, pb_mb_result *r)
{
    const unsigned char *p = src;
    if (len < RS_HEADER)
        return pb_error(PB_ERR_FORMAT, "result message: %zu bytes, shorter than its header", len);
    if (get32(p) != RS_MAGIC)
        return pb_error(PB_ERR_FORMAT, "result message: bad magic 0x%08x", get32(p));
    if (get32(p + 4) != WIRE_VERSION)
        return pb_error(PB_ERR_FORMAT, "result message: version %u, expected %u", get32(p + 4),
                        WIRE_VERSION);
    int32_t n = geti(p + 16);
    if (n < 0 || n > MB_MAX_SEQS || get32(p + 20) != 0)
        return pb_error(PB_ERR_FORMAT, "result message: bad header");
    if (len < RS_HEADER + (size_t)n * 12)
        return pb_error(PB_ERR_FORMAT, "result message: %zu bytes, shorter than %d sequences' ids", len, (int)n);
    PB_CHECK(pb_mb_result_reserve(r, n));
    r->tag = get64(p + 8);
    r->n_seqs = n;
    p += RS_HEADER;
    size_t need = RS_HEADER + (size_t)n * 8;
    for (int i = 0; i < n; i++, p += 4) {
        int32_t t = geti(p), k = geti(p + (size_t)n * 4);
        if (t < -1 || t >= vocab)
            return pb_error(PB_ERR_FORMAT, "result message: token %d of sequence %d not in [-1, %d)",
                            (int)t, i, vocab);
        if (k < -1 || k > PB_MAX_LOGPROBS || (k >= 0 && t < 0))
            return pb_error(PB_ERR_FORMAT, "result message: sequence %d: %d log probabilities for token %d", i,
                            (int)k, (int)t);
        r->tokens[i] = t;
        r->lps[i].n_top = k;
        need += k >= 0 ? 4 + (size_t)k * 8 : 0;
    }
    need += (size_t)n * 4; /* the prompt entries' counts */
    if (len < need)
        return pb_error(PB_ERR_FORMAT, "result message: %zu bytes, expected at least %zu", len, need);
    p += (size_t)n * 4;
    const unsigned char *end = (const unsigned char *)src + len;
    for (int i = 0; i < n; i++) {
        pb_logprobs *l = &r->lps[i];
        if (l->n_top < 0)
            continue;
        l->id = r->tokens[i];
        l->rank = 0;
        l->logprob = getf(p);
        p += 4;
        bool ok = logprob_ok(l->logprob);
        for (int k = 0; k < l->n_top; k++, p += 8) {
            l->top_id[k] = geti(p);
            l->top_logprob[k] = getf(p + 4);
            ok = ok && l->top_id[k] >= 0 && l->top_id[k] < vocab && logprob_ok(l->top_logprob[k]);
        }
        if (!ok)
            return pb_error(PB_ERR_FORMAT, "result message: sequence %d: a log probability above 0 or NaN, "
                            "or an id not in [0, %d)", i, vocab);
    }
    int64_t np = 0;
    for (int i = 0; i < n; i++, p += 4) {
        r->n_plp[i] = geti(p);
        if (r->n_plp[i] < 0 || r->n_plp[i] > MB_MAX_TOKENS)
            return pb_error(PB_ERR_FORMAT, "result message: sequence %d: %d prompt entries", i, (int)r->n_plp[i]);
        np += r->n_plp[i];
    }
    if (np > MB_MAX_TOKENS || (size_t)(end - p) < (size_t)np * 16)
        return pb_error(PB_ERR_FORMAT, "result message: %lld prompt entries in %zu bytes", (long long)np,
                        (size_t)(end - p));
    PB_CHECK(pb_mb_result_reserve_plp(r, (int)np));
    for (int k = 0; k < np; k++) {
        pb_logprobs *l = &r->plp[k];
        if (end - p < 16)
            return pb_error(PB_ERR_FORMAT, "result message: prompt entry %d cut short", k);
        l->id = geti(p); l->logprob = getf(p + 4); l->rank = geti(p + 8); l->n_top = geti(p + 12);
        p += 16;
        if (l->id < 0 || l->id >= vocab || !logprob_ok(l->logprob) || l->rank < 1 || l->rank > vocab ||
            l->n_top < 0 || l->n_top > PB_MAX_LOGPROBS || end - p < (ptrdiff_t)l->n_top * 8)
            return pb_error(PB_ERR_FORMAT, "result message: prompt entry %d: id %d, log probability %g, rank %d, "
                            "%d listed", k, (int)l->id, (double)l->logprob, (int)l->rank, (int)l->n_top);
        for (int j = 0; j < l->n_top; j++, p += 8) {
            l->top_id[j] = geti(p);
            l->top_logprob[j] = getf(p + 4);
            if (l->top_id[j] < 0 || l->top_id[j] >= vocab || !logprob_ok(l->top_logprob[j]))
                return pb_error(PB_ERR_FORMAT, "result message: prompt entry %d: id %d, log probability %g", k,
                                (int)l->top_id[j], (double)l->top_logprob[j]);
        }
    }
    if ((size_t)(end - p) < (size_t)n * 4)
        return pb_error(PB_ERR_FORMAT, "result message: cut short before the embeddings' sizes");
    int64_t ne = 0;
    for (int i = 0; i < n; i++, p += 4) {
        r->n_emb[i] = geti(p);
        if ((r->n_emb[i] != 0 && r->n_emb[i] != hidden) || (r->n_emb[i] && r->tokens[i] >= 0))
            return pb_error(PB_ERR_FORMAT, "result message: sequence %d: an embedding of %d floats (hidden size %d)",
                            i, (int)r->n_emb[i], hidden);
        ne += r->n_emb[i];
    }
    if ((size_t)(end - p) != (size_t)ne * 4)
        return pb_error(PB_ERR_FORMAT, "result message: %zu bytes for %lld embedding floats", (size_t)(end - p),
                        (long long)ne);
    PB_CHECK(pb_mb_result_reserve_emb(r, (int)ne));
    for (int64_t k = 0; k < ne; k++, p += 4)
        r->emb[k] = getf(p); /* a model's NaN is the driver's to report (an error record) */
    if (p != end)
        return pb_error(PB_ERR_FORMAT, "result message: %zu bytes after the last entry", (size_t)(end - p));
    return PB_OK;
}

/* ---- last-stage sampler ----------------------------------------------- */

struct pb_slot_sampler {
    int n_slots, max_seq_len, vocab;
    int32_t *hist;  /* [n_slots][max_seq_len] */
    int32_t *n_hist; /* [n_slots] */
    int32_t *eos;    /* [n_eos] ids in [0, vocab) */
    int n_eos;
    uint8_t *mask_rows; /* [n_slots] greedy picks on the stage: rows whose EOS ids are masked */
    int32_t *ids;       /* [n_slots] and their picks */
    pb_sample_row *rows; /* [n_slots] sampled picks on the stage: each row's settings, key and history */
    int32_t *bias_at;    /* [n_slots] where each sequence's logit biases start in its micro-batch's */
    int32_t *allow_at;   /* [n_slots] and its allowed ids */
    int32_t *mask_at;    /* [n_slots] and its mask (a PB_SEQ_MASK sequence's index among the masks) */
    int32_t *lp_ids_at;  /* [n_slots] and its first log probability id (PB_SEQ_LP_IDS) in lp_ids */
    float *all;          /* every position's logits for prompt log probabilities [cap_all, vocab] */
    int cap_all;
    float *hid;          /* every position's final hidden state for embeddings [cap_hid, hidden] */
    int cap_hid;
    /* each worker's buffers (rows are sampled on the backend's host threads: host_run) */
    int n_work;
    void **scratch;  /* [n_work] pb_sample's scratch */
    float **masked;  /* [n_work] a logits row with the EOS ids at -inf, NULL until a row needs it */
};

pb_status pb_slot_sampler_set_eos(pb_slot_sampler *s, const int *ids, int n)
{
    free(s->eos);
    s->eos = NULL;
    s->n_eos = 0;
    if (n <= 0)
        return PB_OK;
    PB_CHECK(pb_malloc((size_t)n * sizeof *s->eos, &s->eos));
    for (int i = 0; i < n; i++)
        if (ids[i] >= 0 && ids[i] < s->vocab)
            s->eos[s->n_eos++] = ids[i];
    return PB_OK;
}

pb_status pb_slot_sampler_create(int n_slots, int max_seq_len, int vocab, pb_slot_sampler **out)
{
    *out = NULL;
    if (n_slots < 1 || max_seq_len < 1 || vocab < 1)
        return pb_error(PB_ERR_INTERNAL, "slot sampler: bad sizes %d/%d/%d", n_slots, max_seq_len, vocab);
    pb_slot_sampler *s;
    PB_CHECK(pb_calloc(1, sizeof *s, &s));
    s->n_slots = n_slots;
    s->max_seq_len = max_seq_len;
    s->vocab = vocab;
    size_t cells;
    pb_status st;
    if (!pb_mul_ok((size_t)n_slots, (size_t)max_seq_len, &cells)) {
        st = pb_error(PB_ERR_NOMEM, "slot sampler: %d x %d history overflows", n_slots, max_seq_len);
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc(cells, sizeof *s->hist, &s->hist), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->n_hist, &s->n_hist), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->mask_rows, &s->mask_rows), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->ids, &s->ids), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->rows, &s->rows), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->bias_at, &s->bias_at), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->allow_at, &s->allow_at), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->mask_at, &s->mask_at), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n_slots, sizeof *s->lp_ids_at, &s->lp_ids_at), st, fail);
    *out = s;
    return PB_OK;
fail:
    pb_slot_sampler_free(s);
    return st;
}

/* Slot slot's token history (n_hist[slot] ids). */
static int32_t *slot_hist(const pb_slot_sampler *s, int slot)
{
    return s->hist + (size_t)slot * (size_t)s->max_seq_len;
}

/* Appends sequence q's tokens (tok) to its slot's history. */
static pb_status hist_add(pb_slot_sampler *s, const pb_mb_seq *q, const int32_t *tok)
{
    if (q->slot < 0 || q->slot >= s->n_slots)
        return pb_error(PB_ERR_INTERNAL, "slot sampler: slot %d out of range", (int)q->slot);
    int32_t *h = slot_hist(s, q->slot);
    if ((q->flags & PB_SEQ_NEW) && !(q->flags & PB_SEQ_FORK))
        s->n_hist[q->slot] = 0; /* a fork's history: fork_hist, before any sequence's tokens */
    /* The history is the cached tokens: keep it aligned with pos. */
    if (q->pos != s->n_hist[q->slot] || q->pos + q->n_tokens > s->max_seq_len)
        return pb_error(PB_ERR_INTERNAL, "slot sampler: slot %d holds %d tokens, micro-batch says pos %d",
                        (int)q->slot, (int)s->n_hist[q->slot], (int)q->pos);
    memcpy(h + q->pos, tok, (size_t)q->n_tokens * sizeof *tok);
    s->n_hist[q->slot] = q->pos + q->n_tokens;
    return PB_OK;
}

/* Each forked sequence's history: the shared prefix's ids from the slot it
 * was computed in (its own: kept), in order, before any sequence of mb adds
 * its tokens (a slot forked from may take a new prompt in the same mb). */
static pb_status fork_hist(pb_slot_sampler *s, const pb_microbatch *mb)
{
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        if (!(q->flags & PB_SEQ_FORK))
            continue;
        if (q->slot < 0 || q->slot >= s->n_slots || q->fork_slot < 0 || q->fork_slot >= s->n_slots ||
            s->n_hist[q->fork_slot] < q->pos)
            return pb_error(PB_ERR_INTERNAL, "slot sampler: slot %d starts as %d positions of slot %d, which holds %d",
                            (int)q->slot, (int)q->pos, (int)q->fork_slot,
                            q->fork_slot >= 0 && q->fork_slot < s->n_slots ? (int)s->n_hist[q->fork_slot] : -1);
        if (q->fork_slot != q->slot)
            memcpy(slot_hist(s, q->slot), slot_hist(s, q->fork_slot), (size_t)q->pos * sizeof(int32_t));
        s->n_hist[q->slot] = q->pos;
    }
    return PB_OK;
}

/* Buffers for workers 0 .. n - 1: scratch, and masked rows where a row needs them. */
static pb_status reserve_workers(pb_slot_sampler *s, int n, bool masked)
{
    if (n > s->n_work) {
        void **sc = realloc(s->scratch, (size_t)n * sizeof *sc);
        if (!sc)
            return pb_error(PB_ERR_NOMEM, "slot sampler: out of memory for %d workers", n);
        s->scratch = sc;
        float **mk = realloc(s->masked, (size_t)n * sizeof *mk);
        if (!mk)
            return pb_error(PB_ERR_NOMEM, "slot sampler: out of memory for %d workers", n);
        s->masked = mk;
        for (; s->n_work < n; s->n_work++)
            s->scratch[s->n_work] = s->masked[s->n_work] = NULL;
    }
    for (int w = 0; w < n; w++) {
        if (!s->scratch[w])
            PB_CHECK(pb_malloc(pb_sample_scratch_bytes(s->vocab), &s->scratch[w]));
        if (masked && !s->masked[w])
            PB_CHECK(pb_malloc((size_t)s->vocab * sizeof(float), &s->masked[w]));
    }
    return PB_OK;
}

typedef struct sample_job {
    pb_slot_sampler *s;
    const pb_microbatch *mb;
    const float *logits;
    pb_mb_result *res;
} sample_job;

/* Row i of a micro-batch: its token from its logits (a worker's scratch and masked row; the draw depends only on
 * the row, the sequence's settings, history and key, so not on the worker or the order) */
static void sample_row(void *ctx, int i, int worker)
{
    const sample_job *j = ctx;
    pb_slot_sampler *s = j->s;
    const pb_mb_seq *q = &j->mb->seqs[i];
    if (!(q->flags & PB_SEQ_SAMPLE))
        return;
    const float *raw = j->logits + (size_t)i * (size_t)s->vocab, *row = raw;
    if (((q->flags & PB_SEQ_NO_EOS) && s->n_eos) || q->n_bias || q->n_allow || (q->flags & PB_SEQ_MASK)) {
        /* as vLLM: the allowed ids, the constraint's mask, min_tokens' mask and the logit biases, before the
         * penalties */
        float *m = s->masked[worker];
        if (q->n_allow) {
            const int32_t *a = j->mb->allow + s->allow_at[i];
            for (int k = 0; k < s->vocab; k++)
                m[k] = -INFINITY;
            for (int k = 0; k < q->n_allow; k++)
                m[a[k]] = row[a[k]];
        } else {
            memcpy(m, row, (size_t)s->vocab * sizeof *row);
        }
        if (q->flags & PB_SEQ_MASK) {
            const uint32_t *bits = j->mb->mask + (size_t)s->mask_at[i] * (size_t)j->mb->mask_words;
            for (int k = 0; k < s->vocab; k++)
                if (!(bits[k >> 5] >> (k & 31) & 1u))
                    m[k] = -INFINITY;
        }
        for (int e = 0; (q->flags & PB_SEQ_NO_EOS) && e < s->n_eos; e++)
            m[s->eos[e]] = -INFINITY;
        for (int k = 0; k < q->n_bias; k++) {
            const pb_id_bias *b = &j->mb->bias[s->bias_at[i] + k];
            m[b->id] += b->bias;
        }
        row = m;
    }
    /* its slot's history, hist_add's (each slot once in a micro-batch) */
    j->res->tokens[i] = pb_sample(row, s->vocab, &q->sample, slot_hist(s, q->slot), (size_t)s->n_hist[q->slot],
                                  &q->key, s->scratch[worker]);
    if (q->flags & PB_SEQ_LP_IDS) /* the model's distribution: before the EOS mask */
        pb_sample_logprobs_ids(raw, s->vocab, j->res->tokens[i], j->mb->lp_ids + s->lp_ids_at[i], q->n_logprobs,
                               &j->res->lps[i], s->scratch[worker]);
    else if (q->flags & PB_SEQ_LOGPROBS)
        pb_sample_logprobs(raw, s->vocab, j->res->tokens[i], q->n_logprobs, &j->res->lps[i], s->scratch[worker]);
}

/* The histories of mb's sequences: the forks' shared prefixes, then each sequence's tokens */
static pb_status hist_all(pb_slot_sampler *s, const pb_microbatch *mb)
{
    PB_CHECK(fork_hist(s, mb));
    const int32_t *tok = mb->tokens;
    for (int i = 0; i < mb->n_seqs; i++) {
        PB_CHECK(hist_add(s, &mb->seqs[i], tok));
        tok += mb->seqs[i].n_tokens;
    }
    return PB_OK;
}

/* Each sampling sequence's token (the histories added: hist_all): picks[i]
 * where picks (made on the stage's device), else sampled from logits row i:
 * on be's host threads where it has them (host_run) and two or more rows
 * sample, else in turn. */
static pb_status pick_all(pb_slot_sampler *s, const pb_microbatch *mb, const float *logits, const int32_t *picks,
                          pb_mb_result *res, pb_backend *be)
{
    PB_CHECK(pb_mb_result_reserve(res, mb->n_seqs));
    res->tag = mb->tag;
    res->n_seqs = mb->n_seqs;
    int n_sample = 0, at = 0, at_allow = 0, at_mask = 0, at_lp = 0;
    bool masked = false;
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        s->bias_at[i] = at;
        s->allow_at[i] = at_allow;
        s->mask_at[i] = at_mask;
        s->lp_ids_at[i] = at_lp;
        at_lp += (q->flags & PB_SEQ_LP_IDS) ? q->n_logprobs : 0;
        at += q->n_bias;
        at_allow += q->n_allow;
        at_mask += (q->flags & PB_SEQ_MASK) != 0;
        masked = masked || q->n_bias || q->n_allow || (q->flags & PB_SEQ_MASK);
        res->n_plp[i] = 0;
        res->n_emb[i] = 0;
        res->tokens[i] = -1;
        res->lps[i].n_top = -1;
        if (!(q->flags & PB_SEQ_SAMPLE))
            continue;
        if (picks) {
            res->tokens[i] = picks[i];
            continue;
        }
        n_sample++;
        masked = masked || ((q->flags & PB_SEQ_NO_EOS) && s->n_eos);
    }
    if (!n_sample)
        return PB_OK;
    sample_job j = {.s = s, .mb = mb, .logits = logits, .res = res};
    const bool par = be && be->ops->host_run && be->threads > 1 && n_sample > 1;
    PB_CHECK(reserve_workers(s, par ? be->threads : 1, masked));
    if (par)
        be->ops->host_run(be, mb->n_seqs, sample_row, &j);
    else
        for (int i = 0; i < mb->n_seqs; i++)
            sample_row(&j, i, 0);
    return PB_OK;
}

/* Every position's logits: the prompt tokens' log probabilities where asked
 * (a chunk's token k + 1 from position k's logits, next_id from the last),
 * each sequence's last row into logits for the picks. */
static pb_status prompt_logprobs(pb_slot_sampler *s, pb_stage *stage, const pb_seq_batch *b, const void *in,
                                 const pb_microbatch *mb, float *logits, pb_mb_result *res)
{
    const size_t V = (size_t)s->vocab;
    if (mb->n_tokens > s->cap_all) {
        size_t n;
        if (!pb_mul_ok((size_t)mb->n_tokens, V * sizeof(float), &n))
            return pb_error(PB_ERR_NOMEM, "slot sampler: %d x %d logits overflow", (int)mb->n_tokens, s->vocab);
        float *a = realloc(s->all, n);
        if (!a)
            return pb_error(PB_ERR_NOMEM, "out of memory for the logits of %d positions (%.0f MiB) for prompt log "
                            "probabilities", (int)mb->n_tokens, (double)n / 1048576.0);
        s->all = a;
        s->cap_all = mb->n_tokens;
    }
    PB_CHECK(pb_stage_forward(stage, b, in, s->all, true));
    int n_entries = 0, at = 0;
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        if (q->flags & PB_SEQ_PROMPT_LOGPROBS)
            n_entries += q->n_tokens - (q->next_id < 0);
    }
    PB_CHECK(pb_mb_result_reserve(res, mb->n_seqs));
    PB_CHECK(pb_mb_result_reserve_plp(res, n_entries));
    PB_CHECK(reserve_workers(s, 1, false));
    pb_logprobs *e = res->plp;
    const int32_t *tok = mb->tokens;
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        const float *rows = s->all + (size_t)at * V;
        memcpy(logits + (size_t)i * V, rows + (size_t)(q->n_tokens - 1) * V, V * sizeof(float));
        if (q->flags & PB_SEQ_PROMPT_LOGPROBS) {
            for (int k = 0; k < q->n_tokens - (q->next_id < 0); k++, e++) {
                const int32_t t = k + 1 < q->n_tokens ? tok[k + 1] : q->next_id;
                pb_sample_logprobs(rows + (size_t)k * V, s->vocab, t, q->n_prompt_logprobs, e, s->scratch[0]);
                e->rank = pb_sample_rank(rows + (size_t)k * V, s->vocab, t);
            }
        }
        tok += q->n_tokens;
        at += q->n_tokens;
    }
    PB_CHECK(pick_all(s, mb, logits, NULL, res, pb_stage_backend(stage)));
    for (int i = 0; i < mb->n_seqs; i++) { /* pick_all cleared the counts */
        const pb_mb_seq *q = &mb->seqs[i];
        res->n_plp[i] = (q->flags & PB_SEQ_PROMPT_LOGPROBS) ? q->n_tokens - (q->next_id < 0) : 0;
    }
    return PB_OK;
}

/* Picks on the stage's backend where it can make them and no row asks log
 * probabilities or has logit biases: greedy ones by its argmax where every sampling row is
 * greedy, else sampled ones by its sample op (the host sampler's bits);
 * otherwise the logits come to the host. */
/* A micro-batch that embeds: every position's final hidden state, each sequence's pooled (its chunk's last
 * token's, its first's, or their sum) into res. */
static pb_status embed_all(pb_slot_sampler *s, pb_stage *stage, const pb_seq_batch *b, const void *in,
                           const pb_microbatch *mb, pb_mb_result *res)
{
    const int H = pb_stage_hidden_size(stage);
    if (mb->n_tokens > s->cap_hid) {
        size_t n;
        if (!pb_mul_ok((size_t)mb->n_tokens, (size_t)H, &n))
            return pb_error(PB_ERR_NOMEM, "embeddings: %d x %d floats overflow", (int)mb->n_tokens, H);
        float *g = realloc(s->hid, n * sizeof *g);
        if (!g)
            return pb_error(PB_ERR_NOMEM, "out of memory for %d tokens' hidden states", (int)mb->n_tokens);
        s->hid = g;
        s->cap_hid = mb->n_tokens;
    }
    PB_CHECK(pb_stage_forward_hidden(stage, b, in, s->hid));
    PB_CHECK(pb_mb_result_reserve(res, mb->n_seqs));
    res->tag = mb->tag;
    res->n_seqs = mb->n_seqs;
    int n_emb = 0;
    for (int i = 0; i < mb->n_seqs; i++)
        n_emb += (mb->seqs[i].flags & PB_SEQ_EMBED) != 0;
    PB_CHECK(pb_mb_result_reserve_emb(res, n_emb * H));
    float *dst = res->emb;
    for (int i = 0, at = 0; i < mb->n_seqs; at += mb->seqs[i++].n_tokens) {
        const pb_mb_seq *q = &mb->seqs[i];
        res->tokens[i] = -1;
        res->lps[i].n_top = -1;
        res->n_plp[i] = 0;
        res->n_emb[i] = (q->flags & PB_SEQ_EMBED) ? H : 0;
        const float *rows = s->hid + (size_t)at * H;
        if (q->flags & PB_SEQ_EMBED_SUM) {
            for (int k = 0; k < H; k++) {
                double sum = 0;
                for (int t = 0; t < q->n_tokens; t++)
                    sum += rows[(size_t)t * H + k];
                dst[k] = (float)sum;
            }
        } else if (q->flags & PB_SEQ_EMBED) {
            const int t = (q->flags & PB_SEQ_EMBED_FIRST) ? 0 : q->n_tokens - 1;
            memcpy(dst, rows + (size_t)t * H, (size_t)H * sizeof *dst);
        }
        dst += res->n_emb[i];
    }
    return PB_OK;
}

pb_status pb_slot_sampler_stage(pb_slot_sampler *s, pb_stage *stage, const pb_seq_batch *b, const void *in,
                                const pb_microbatch *mb, float *logits, pb_mb_result *res)
{
    /* the histories first: a device draw's penalty reads its row's tokens of this micro-batch */
    PB_CHECK(hist_all(s, mb));
    for (int i = 0; i < mb->n_seqs; i++)
        if (mb->seqs[i].flags & PB_SEQ_EMBED) /* pb_mb_validate: then none samples */
            return embed_all(s, stage, b, in, mb, res);
    bool on_stage = mb->n_seqs <= s->n_slots;
    bool prompt_lp = false;
    for (int i = 0; i < mb->n_seqs; i++) { /* log probabilities and logit biases: on the host */
        on_stage = on_stage && !(mb->seqs[i].flags & (PB_SEQ_LOGPROBS | PB_SEQ_MASK)) && !mb->seqs[i].n_bias &&
                   !mb->seqs[i].n_allow;
        prompt_lp = prompt_lp || (mb->seqs[i].flags & PB_SEQ_PROMPT_LOGPROBS);
    }
    if (prompt_lp)
        return prompt_logprobs(s, stage, b, in, mb, logits, res);
    bool greedy = pb_stage_has_argmax(stage) && on_stage;
    for (int i = 0; i < mb->n_seqs && on_stage; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        if ((q->flags & PB_SEQ_SAMPLE) && (q->sample.temperature != 0.0f || q->sample.repetition_penalty != 1.0f ||
                                           pb_sample_output_penalties(&q->sample)))
            greedy = false;
        s->mask_rows[i] = (q->flags & PB_SEQ_SAMPLE) && (q->flags & PB_SEQ_NO_EOS) && s->n_eos;
    }
    if (greedy) {
        PB_CHECK(pb_stage_forward_argmax(stage, b, in, s->eos, s->n_eos, s->mask_rows, s->ids));
        return pick_all(s, mb, NULL, s->ids, res, NULL);
    }
    if (on_stage && pb_stage_has_sample(stage)) {
        for (int i = 0; i < mb->n_seqs; i++) {
            const pb_mb_seq *q = &mb->seqs[i];
            pb_sample_row *r = &s->rows[i];
            if (!(q->flags & PB_SEQ_SAMPLE)) { /* no token wanted: the cheapest pick */
                *r = (pb_sample_row){.temperature = 0.0f, .top_p = 1.0f, .repetition_penalty = 1.0f};
                continue;
            }
            *r = (pb_sample_row){.temperature = q->sample.temperature, .top_p = q->sample.top_p,
                                 .min_p = q->sample.min_p, .repetition_penalty = q->sample.repetition_penalty,
                                 .frequency_penalty = q->sample.frequency_penalty,
                                 .presence_penalty = q->sample.presence_penalty, .prompt_len = q->sample.prompt_len,
                                 .top_k = q->sample.top_k, .seed = q->key.seed, .record = q->key.record,
                                 .step = q->key.step, .hist = slot_hist(s, q->slot), .n_hist = s->n_hist[q->slot],
                                 .masked = s->mask_rows[i]};
        }
        PB_CHECK(pb_stage_forward_sample(stage, b, in, s->rows, s->eos, s->n_eos, s->ids));
        return pick_all(s, mb, NULL, s->ids, res, NULL);
    }
    PB_CHECK(pb_stage_forward(stage, b, in, logits, false));
    return pick_all(s, mb, logits, NULL, res, pb_stage_backend(stage));
}

pb_status pb_slot_sampler_run(pb_slot_sampler *s, const pb_microbatch *mb, const float *logits,
                              pb_mb_result *res)
{
    for (int i = 0; i < mb->n_seqs; i++)
        if (mb->seqs[i].flags & PB_SEQ_PROMPT_LOGPROBS)
            return pb_error(PB_ERR_INTERNAL, "slot sampler: prompt log probabilities need every position's logits");
    PB_CHECK(hist_all(s, mb));
    return pick_all(s, mb, logits, NULL, res, NULL);
}

void pb_slot_sampler_free(pb_slot_sampler *s)
{
    if (!s)
        return;
    free(s->hist);
    free(s->n_hist);
    free(s->eos);
    free(s->mask_rows);
    free(s->ids);
    free(s->rows);
    free(s->bias_at);
    free(s->allow_at);
    free(s->mask_at);
    free(s->lp_ids_at);
    free(s->all);
    free(s->hid);
    for (int w = 0; w < s->n_work; w++) {
        free(s->scratch[w]);
        free(s->masked[w]);
    }
    free(s->scratch);
    free(s->masked);
    free(s);
}

/* ---- pipe wrapper ----------------------------------------------------- */

struct pb_pipe {
    const pb_pipe_ops *ops;
    void *self;
    int depth;
    pb_mb_limits lim;
    /* tags and sizes of in-flight micro-batches, FIFO ring of depth entries */
    uint64_t *tags;
    int32_t *n_seqs;
    int head, count;
};

pb_status pb_pipe_create(const pb_pipe_ops *ops, void *self, int depth, const pb_mb_limits *lim,
                         pb_pipe **out)
{
    *out = NULL;
    pb_status st;
    pb_pipe *p = NULL;
    if (depth < 1 || !ops || !ops->submit || !ops->wait) {
        st = pb_error(PB_ERR_INTERNAL, "pipe: bad depth %d or ops", depth);
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc(1, sizeof *p, &p), st, fail);
    p->ops = ops;
    p->self = self;
    p->depth = depth;
    p->lim = *lim;
    PB_CHECK_GOTO(pb_calloc((size_t)depth, sizeof *p->tags, &p->tags), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)depth, sizeof *p->n_seqs, &p->n_seqs), st, fail);
    *out = p;
    return PB_OK;
fail:
    if (p) {
        free(p->tags);
        free(p->n_seqs);
        free(p);
    }
    if (ops && ops->destroy)
        ops->destroy(self);
    return st;
}

pb_status pb_pipe_submit(pb_pipe *p, const pb_microbatch *mb)
{
    if (p->count >= p->depth)
        return pb_error(PB_ERR_INTERNAL, "pipe: %d micro-batches already in flight", p->count);
    pb_status st = pb_mb_validate(mb, &p->lim);
    if (st != PB_OK)
        return pb_error_ctx(PB_ERR_INTERNAL, "pipe submit");
    PB_CHECK(p->ops->submit(p->self, mb));
    int at = (p->head + p->count) % p->depth;
    p->tags[at] = mb->tag;
    p->n_seqs[at] = mb->n_seqs;
    p->count++;
    return PB_OK;
}

pb_status pb_pipe_wait(pb_pipe *p, pb_mb_result *res)
{
    if (p->count == 0)
        return pb_error(PB_ERR_INTERNAL, "pipe: wait with nothing in flight");
    PB_CHECK(p->ops->wait(p->self, res));
    uint64_t tag = p->tags[p->head];
    int32_t n = p->n_seqs[p->head];
    p->head = (p->head + 1) % p->depth;
    p->count--;
    if (res->tag != tag || res->n_seqs != n)
        return pb_error(PB_ERR_INTERNAL, "pipe %s: result for micro-batch %llu (%d sequences), expected %llu (%d)",
                        p->ops->name, (unsigned long long)res->tag, (int)res->n_seqs,
                        (unsigned long long)tag, (int)n);
    for (int i = 0; i < n; i++)
        if (res->tokens[i] < -1 || res->tokens[i] >= p->lim.vocab)
            return pb_error(PB_ERR_INTERNAL, "pipe %s: sampled id %d out of range", p->ops->name,
                            (int)res->tokens[i]);
    return PB_OK;
}

int pb_pipe_depth(const pb_pipe *p) { return p->depth; }
int pb_pipe_in_flight(const pb_pipe *p) { return p->count; }
const pb_mb_limits *pb_pipe_limits(const pb_pipe *p) { return &p->lim; }

pb_status pb_pipe_stats_get(pb_pipe *p, pb_pipe_stats *out)
{
    memset(out, 0, sizeof *out);
    if (!p->ops->stats)
        return PB_OK;
    return p->ops->stats(p->self, out);
}

void pb_pipe_free(pb_pipe *p)
{
    if (!p)
        return;
    if (p->ops->destroy)
        p->ops->destroy(p->self);
    free(p->tags);
    free(p->n_seqs);
    free(p);
}
