/* The engine (see engine.h). */
#include "config.h"
#include "gen/engine.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "gen/beam.h"
#include "gen/guide.h"
#include "gen/stop.h"

/* A compiled constraint, shared by the sequences whose records give the same pattern; kept after the last of them
 * finishes (the next record often has the same schema) while fewer than GUIDE_CACHE are kept. */
/* The most logit biases a sequence sends with a token: its record's, its stop ids (banned under min_tokens) and
 * its bad words' last tokens. */
#define BIAS_MAX (PB_MAX_LOGIT_BIAS + PB_MAX_STOP_IDS + 2 * PB_MAX_BAD_WORDS)

typedef struct guide_entry {
    char *regex;           /* its regex, grammar or whitespace pattern (kind) */
    int kind;
    pb_guide *g;
    int refs;              /* sequences (and the pending record) using it */
    uint64_t used;         /* the engine's clock when last taken */
} guide_entry;
#define GUIDE_CACHE 16

/* The completions of a record with n > 1, kept until the last finishes: the
 * record's output line holds them all. Shared by its sequences and the
 * engine's pending record (refs). */
typedef struct group {
    int n, left, refs;
    pb_choice *ch;         /* ch[i]: choice i once finished (text owned) */
    pb_lp_pair *plp;       /* choice 0's prompt log probabilities, once it finished (owned) */
    int32_t *prank;
    int n_plp;
} group;

/* A record's bad_words as token sequences, and the completion's ids they are matched against. */
typedef struct bad_words {
    int32_t *ids;          /* the sequences one after another, len[i] ids each */
    int32_t *len;
    int n;
    int32_t *out;          /* the completion's ids so far (max_tokens) */
} bad_words;

static void bad_words_free(bad_words *b)
{
    free(b->ids);
    free(b->len);
    free(b->out);
    memset(b, 0, sizeof *b);
}

/* A record's beam search (gen/beam.h): B slots taken at once, stepped together; after each step's results the
 * next beams' tokens are chosen, a beam continuing in its parent's slot (the parent's first child) or in a slot
 * given up, which starts as a copy of the parent's cache (PB_SEQ_FORK at the current length). */
typedef struct beam_run {
    pb_beam *b;
    int refs;              /* the slots holding it */
    int n_slots;           /* B */
    int *all;              /* [B] the slots it holds */
    int *slot;             /* [B] running beam j's slot (this step's numbering) */
    int *parent, *fork;    /* [B] scratch for a step */
    int32_t *token;
    int pending;           /* running beams whose step is not back */
    int want;              /* log probabilities asked of each this step */
} beam_run;

static void beam_unref(beam_run *br)
{
    if (!br || --br->refs > 0)
        return;
    pb_beam_free(br->b);
    free(br->all);
    free(br->slot);
    free(br->parent);
    free(br->fork);
    free(br->token);
    free(br);
}

typedef struct seq_state {
    bool active;
    pb_record rec;
    uint64_t out_no;       /* output ordinal */
    int choice;            /* which of the record's n completions (0 when n = 1) */
    group *grp;            /* n > 1: the record's completions; else NULL */
    int32_t *prompt;       /* the prompt; with LongRoPE also the generated tokens after it */
    int n_prompt;
    int n_feed;            /* tokens to prefill: n_prompt, or all so far when LongRoPE feeds again */
    bool rope_long;        /* LongRoPE: past original_max_position_embeddings */
    int cached;            /* tokens in the KV cache */
    int wait_for;          /* >= 0: admitted, waiting for this slot to compute a prefix the two share */
    int generated;
    int32_t last;          /* last sampled token, fed at the next decode */
    pb_detok *detok;
    pb_lp_pair *lp;        /* with logprobs: generated x (1 + top_logprobs) pairs */
    size_t lp_cap;
    int32_t *ids;          /* with return_token_ids: the ids generated (ids_cap) */
    int ids_cap;
    pb_lp_pair *plp;       /* with prompt_logprobs (choice 0): n_plp prompt tokens x (1 + prompt_top) pairs */
    int32_t *prank;        /* and their ranks */
    int n_plp;
    bad_words bw;          /* the record's bad_words, tokenized */
    guide_entry *ge;       /* constrained decoding: the record's guide (a reference), else NULL */
    int32_t gstate;        /* and the completion's state in it */
    beam_run *br;          /* beam search: the record's beams (a reference), else NULL */
    int beam;              /* the running beam this slot holds */
    bool beam_hold;        /* not stepped now: its result is awaited, or the others' are */
    int beam_fork;         /* >= 0: at its next step the slot starts as the first `cached` positions of this slot */
    bool beam_primed;      /* its cache holds the prompt (beam 0's, or a copy): a fork copies only what follows */
    float *emb;            /* an embeddings record (gs.embed): its pooled final hidden state so far (hidden floats) */
    double t_admit;
} seq_state;

typedef struct engine {
    const pb_engine_opts *o;
    const pb_engine_io *io;
    pb_pipe *pipe;
    const pb_tokenizer *tok;
    seq_state *slots;
    int n_slots;
    /* A finished sequence's prompt, whose cache stays in its slot (every
     * stage's, and the last stage's history) until the slot takes the next
     * prompt: ghost[i] (NULL: none) holds n_ghost[i] tokens computed there. */
    int32_t **ghost;
    int *n_ghost;
    int max_batch_tokens;
    bool input_done;
    /* A record with n > 1 whose choices pend.choice.. still wait for slots:
     * pend holds its record, prompt (pend_cap ids) and group, not active. */
    seq_state pend;
    size_t pend_cap;
    bool has_pend;
    /* A beam search record waiting for as many free slots as it has beams (admission stops meanwhile) */
    seq_state bhold;
    bool has_bhold;
    pb_microbatch *mbs;    /* one per chunk */
    int *fifo;             /* chunk ids in flight, oldest first */
    int fifo_head, fifo_n;
    bool *in_flight;
    pb_id_bias *bias;      /* a sequence's logit biases for one micro-batch (BIAS_MAX) */
    int32_t *ban;          /* and the ids it may not sample (BIAS_MAX) */
    pb_guide_vocab *gvocab; /* the vocabulary's bytes, made for the first constrained record */
    guide_entry **guides;  /* [n_guides] */
    int n_guides, cap_guides;
    uint64_t guide_clock;
    uint32_t *maskbuf;     /* a sequence's mask for one micro-batch (pb_guide_vocab_words) */
    uint64_t tag;
    pb_engine_stats *st;
    double t0, t_last_result;
    double ttft_sum;
    uint64_t ttft_n;
    /* stop signal */
    bool stopping;         /* no new prompts */
    bool dropping;         /* grace over: no new micro-batches */
    double deadline;
} engine;

static void group_unref(group *g)
{
    if (!g || --g->refs > 0)
        return;
    for (int i = 0; i < g->n; i++) {
        free((char *)g->ch[i].text);
        free((pb_lp_pair *)g->ch[i].lp);
        free((int32_t *)g->ch[i].token_ids);
    }
    free(g->plp);
    free(g->prank);
    free(g->ch);
    free(g);
}

static pb_status group_new(int n, group **out)
{
    group *g = NULL;
    PB_CHECK(pb_calloc(1, sizeof *g, &g));
    pb_status st = pb_calloc((size_t)n, sizeof *g->ch, &g->ch);
    if (st != PB_OK) {
        free(g);
        return st;
    }
    g->n = g->left = n;
    g->refs = 1;
    *out = g;
    return PB_OK;
}

static void slot_release(seq_state *s)
{
    pb_record_clear(&s->rec);
    free(s->prompt);
    pb_detok_free(s->detok);
    free(s->lp);
    free(s->ids);
    free(s->plp);
    free(s->prank);
    bad_words_free(&s->bw);
    group_unref(s->grp);
    beam_unref(s->br);
    free(s->emb);
    if (s->ge)
        s->ge->refs--;
    memset(s, 0, sizeof *s);
}

/* A sequence not yet started from src's record and prompt (a buffer of cap
 * ids), as its choice `choice`, in src's group. dst is released on failure. */
static pb_status seq_clone(seq_state *dst, const seq_state *src, size_t cap, int choice)
{
    memset(dst, 0, sizeof *dst);
    dst->wait_for = -1;
    dst->out_no = src->out_no;
    dst->n_prompt = dst->n_feed = src->n_prompt;
    dst->rope_long = src->rope_long;
    dst->choice = choice;
    dst->grp = src->grp;
    dst->grp->refs++;
    dst->ge = src->ge;
    dst->gstate = src->gstate;
    if (dst->ge)
        dst->ge->refs++;
    pb_status st = pb_record_copy(&dst->rec, &src->rec);
    if (st == PB_OK && (st = pb_calloc(cap, sizeof *dst->prompt, &dst->prompt)) == PB_OK)
        memcpy(dst->prompt, src->prompt, (size_t)src->n_prompt * sizeof *dst->prompt);
    const bad_words *sb = &src->bw;
    if (st == PB_OK && sb->n) {
        int total = 0;
        for (int i = 0; i < sb->n; i++)
            total += sb->len[i];
        bad_words *db = &dst->bw;
        if ((st = pb_calloc((size_t)total, sizeof *db->ids, &db->ids)) == PB_OK &&
            (st = pb_calloc((size_t)sb->n, sizeof *db->len, &db->len)) == PB_OK &&
            (st = pb_calloc((size_t)src->rec.gs.max_tokens, sizeof *db->out, &db->out)) == PB_OK) {
            memcpy(db->ids, sb->ids, (size_t)total * sizeof *db->ids);
            memcpy(db->len, sb->len, (size_t)sb->n * sizeof *db->len);
            db->n = sb->n;
        }
    }
    if (st != PB_OK)
        slot_release(dst);
    return st;
}

/* Admit the pending record's next choice into s. */
static pb_status admit_choice(engine *d, seq_state *s)
{
    seq_state *p = &d->pend;
    PB_CHECK(seq_clone(s, p, d->pend_cap, p->choice++));
    pb_status st = pb_detok_create_ex(d->tok, s->prompt, (size_t)s->n_prompt, !s->rec.gs.keep_special, &s->detok);
    if (st != PB_OK) {
        slot_release(s);
        return st;
    }
    if (p->choice >= p->grp->n) { /* the last one: the record leaves the queue */
        slot_release(p);
        d->has_pend = false;
    }
    s->active = true;
    s->t_admit = pb_now();
    return PB_OK;
}

/* ---- admission -------------------------------------------------------- */

/* The token ids a record names are the model's (else it becomes an error record). */
static pb_status check_ids(const engine *d, pb_record *rec)
{
    const int vocab = pb_pipe_limits(d->pipe)->vocab;
    for (int i = 0; i < rec->gs.n_bias; i++)
        if (rec->gs.bias[i].id >= vocab)
            return pb_record_set_error(rec, "field 'logit_bias': token %d is not in the model's vocabulary (0 to %d)",
                                       (int)rec->gs.bias[i].id, vocab - 1);
    for (int i = 0; i < rec->gs.n_allow; i++)
        if (rec->gs.allow[i] >= vocab)
            return pb_record_set_error(rec, "field 'allowed_token_ids': token %d is not in the model's vocabulary "
                                       "(0 to %d)", (int)rec->gs.allow[i], vocab - 1);
    for (int i = 0; i < rec->gs.n_stop_ids; i++)
        if (rec->gs.stop_ids[i] >= vocab)
            return pb_record_set_error(rec, "field 'stop_token_ids': token %d is not in the model's vocabulary "
                                       "(0 to %d)", (int)rec->gs.stop_ids[i], vocab - 1);
    for (int i = 0; i < rec->gs.n_lp_ids; i++)
        if (rec->gs.lp_ids[i] >= vocab)
            return pb_record_set_error(rec, "field 'logprob_token_ids': token %d is not in the model's vocabulary "
                                       "(0 to %d)", (int)rec->gs.lp_ids[i], vocab - 1);
    for (int i = 0; i < rec->n_prompt_ids; i++)
        if (rec->prompt_ids[i] >= vocab)
            return pb_record_set_error(rec, "field 'prompt': token %d (item %d) is not in the model's vocabulary "
                                       "(0 to %d)", (int)rec->prompt_ids[i], i, vocab - 1);
    return PB_OK;
}

/* The guide of rec's pattern (compiled, or the one kept for the same pattern), a reference taken; *ge NULL and
 * rec an error record when the pattern cannot be used. */
static pb_status guide_take(engine *d, pb_record *rec, guide_entry **ge)
{
    *ge = NULL;
    const pb_mb_limits *lim = pb_pipe_limits(d->pipe);
    if (!d->gvocab) {
        PB_CHECK(pb_guide_vocab_create(d->tok, lim->vocab, d->o->eos_ids, d->o->n_eos, &d->gvocab));
        PB_CHECK(pb_calloc((size_t)pb_guide_vocab_words(d->gvocab), sizeof *d->maskbuf, &d->maskbuf));
    }
    guide_entry *e = NULL;
    for (int i = 0; i < d->n_guides && !e; i++)
        if (d->guides[i]->kind == rec->gs.guide_kind && !strcmp(d->guides[i]->regex, rec->gs.guide))
            e = d->guides[i];
    if (!e) {
        pb_guide *g = NULL;
        const double t0 = pb_now();
        pb_status st = pb_guide_create(d->gvocab, (pb_guide_kind)rec->gs.guide_kind, rec->gs.guide,
                                       strlen(rec->gs.guide), &g);
        if (st == PB_ERR_INPUT)
            return pb_record_set_error(rec, "field '%s': %s", rec->gs.guide_field, pb_last_error());
        PB_CHECK(st);
        char *regex = pb_strdup(rec->gs.guide);
        if (!regex) {
            pb_guide_free(g);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        pb_log_verbose("line %llu: constraint compiled in %.1f ms (%.1f KiB)", (unsigned long long)rec->line,
                       (pb_now() - t0) * 1e3, (double)pb_guide_bytes(g) / 1024.0);
        int victim = -1; /* a full cache drops the guide unused longest */
        for (int i = 0; i < d->n_guides && d->n_guides >= GUIDE_CACHE; i++)
            if (!d->guides[i]->refs && (victim < 0 || d->guides[i]->used < d->guides[victim]->used))
                victim = i;
        if (victim >= 0) {
            e = d->guides[victim];
            pb_guide_free(e->g);
            free(e->regex);
        } else {
            if (d->n_guides == d->cap_guides) {
                const int cap = d->cap_guides ? 2 * d->cap_guides : GUIDE_CACHE;
                st = pb_realloc_array(&d->guides, (size_t)cap, sizeof *d->guides);
                if (st == PB_OK)
                    d->cap_guides = cap;
            }
            if (st == PB_OK && (st = pb_calloc(1, sizeof *e, &e)) == PB_OK)
                d->guides[d->n_guides++] = e;
            if (st != PB_OK) {
                pb_guide_free(g);
                free(regex);
                return st;
            }
        }
        e->g = g;
        e->regex = regex;
        e->kind = rec->gs.guide_kind;
        e->refs = 0;
    }
    const int32_t start = pb_guide_start(e->g);
    const uint32_t *m = NULL;
    int n = 0;
    if (start >= 0) {
        const pb_status st = pb_guide_mask(e->g, start, &m, &n);
        if (st == PB_ERR_INPUT)
            return pb_record_set_error(rec, "field '%s': %s", rec->gs.guide_field, pb_last_error());
        PB_CHECK(st);
    }
    if (n == 0)
        return pb_record_set_error(rec, "field '%s': %s", rec->gs.guide_field,
                                   start < 0 ? "the pattern matches no text"
                                             : "no token of the model's vocabulary can begin a match");
    e->used = ++d->guide_clock;
    e->refs++;
    *ge = e;
    return PB_OK;
}

/* bad_words as vLLM tokenizes them (SamplingParams.update_from_tokenizer): each word without its leading
 * whitespace, without special tokens, alone and after a space, the second kept only where it is as long and starts
 * with another token. Into b (and its room for the completion's ids); a word that cannot be
 * tokenized makes rec an error record. */
static pb_status bad_prepare(engine *d, pb_record *rec, bad_words *b)
{
    const pb_gen_settings *g = &rec->gs;
    size_t cap = 0, total = 0;
    pb_status st = PB_OK;
    PB_CHECK(pb_calloc(2 * (size_t)g->n_bad, sizeof *b->len, &b->len));
    PB_CHECK(pb_calloc(g->max_tokens > 0 ? (size_t)g->max_tokens : 1, sizeof *b->out, &b->out));
    for (int w = 0; w < g->n_bad && st == PB_OK; w++) {
        const char *word = g->bad[w] + strspn(g->bad[w], " \t\n\r\f\v");
        char *spaced = malloc(strlen(word) + 2);
        if (!spaced)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        spaced[0] = ' ';
        strcpy(spaced + 1, word);
        for (int sp = 0; sp < 2 && st == PB_OK; sp++) {
            int32_t *ids = NULL;
            size_t n = 0;
            const char *text = sp ? spaced : word;
            st = pb_tokenizer_encode(d->tok, text, strlen(text), false, &ids, &n);
            if (st == PB_ERR_INPUT) {
                free(spaced);
                return pb_record_set_error(rec, "field 'bad_words': word %d: %s", w, pb_last_error());
            }
            const int32_t *prev = b->n ? b->ids + total - (size_t)b->len[b->n - 1] : NULL;
            const bool keep = st == PB_OK && n > 0 &&
                              (!sp || (prev && ids[0] != prev[0] && (int)n == b->len[b->n - 1]));
            if (keep && total + n > cap) {
                cap = 2 * (total + n);
                st = pb_realloc_array(&b->ids, cap, sizeof *b->ids);
            }
            if (keep && st == PB_OK) {
                memcpy(b->ids + total, ids, n * sizeof *ids);
                total += n;
                b->len[b->n++] = (int32_t)n;
            }
            free(ids);
        }
        free(spaced);
    }
    return st;
}

/* ---- beam search ------------------------------------------------------ */

static int free_slots(const engine *d, const seq_state *s)
{
    int n = 0;
    for (int i = 0; i < d->n_slots; i++)
        n += !d->slots[i].active && &d->slots[i] != s;
    return n;
}

/* ids[0..n) with id appended unless it is there (or < 0); the new count */
static int add_distinct(int32_t *ids, int n, int32_t id)
{
    for (int j = 0; j < n; j++)
        if (ids[j] == id)
            return n;
    if (id >= 0)
        ids[n++] = id;
    return n;
}

/* s's record asks for beam search: its beams (s->br), or s->rec an error record where they cannot be run. */
static pb_status beam_new(engine *d, seq_state *s)
{
    const pb_gen_settings *g = &s->rec.gs;
    if (d->o->rope_long_after > 0)
        return pb_record_set_error(&s->rec, "use_beam_search is not done with LongRoPE's two rotary scales (Phi-3)");
    if (g->beams > d->n_slots)
        return pb_record_set_error(&s->rec, "use_beam_search: %d beams run as %d sequences at once; --batch-size is "
                                   "%d", g->beams, g->beams, d->n_slots);
    int32_t stop[PB_MAX_STOP_IDS + 64]; /* the ids that end a beam, each once: EOS (unless ignored), stop ids */
    int ns = 0;
    for (int i = 0; !g->ignore_eos && i < d->o->n_eos && ns < 64; i++)
        ns = add_distinct(stop, ns, d->o->eos_ids[i]);
    for (int i = 0; i < g->n_stop_ids; i++)
        ns = add_distinct(stop, ns, g->stop_ids[i]);
    const int room = d->o->context - s->n_prompt;
    pb_beam_opts bo = {.beams = g->beams, .n_return = g->n > 1 ? g->n : 1,
                       .max_new = g->max_tokens < room ? g->max_tokens : room, .min_new = g->min_tokens,
                       .length_penalty = g->length_penalty, .early = (pb_beam_early)g->early_stopping,
                       .stop_ids = stop, .n_stop = ns, .top = g->logprobs ? g->top_logprobs : -1};
    pb_beam *b = NULL;
    pb_status st = pb_beam_create(&bo, PB_MAX_LOGPROBS, &b);
    if (st == PB_ERR_INPUT)
        return pb_record_set_error(&s->rec, "use_beam_search: %s", pb_last_error());
    PB_CHECK(st);
    beam_run *br = NULL;
    const size_t B = (size_t)g->beams;
    if ((st = pb_calloc(1, sizeof *br, &br)) != PB_OK || (st = pb_calloc(B, sizeof *br->all, &br->all)) != PB_OK ||
        (st = pb_calloc(B, sizeof *br->slot, &br->slot)) != PB_OK ||
        (st = pb_calloc(B, sizeof *br->parent, &br->parent)) != PB_OK ||
        (st = pb_calloc(B, sizeof *br->fork, &br->fork)) != PB_OK ||
        (st = pb_calloc(B, sizeof *br->token, &br->token)) != PB_OK) {
        if (br)
            br->refs = 1;
        beam_unref(br);
        pb_beam_free(b);
        return st;
    }
    br->b = b;
    br->refs = 1;
    br->n_slots = g->beams;
    br->pending = 1;
    br->want = pb_beam_want(b);
    s->br = br;
    s->beam_fork = -1;
    s->rec.gs.sample = pb_sample_params_default(); /* the sampled id is not used: the beams choose */
    return PB_OK;
}

/* Beam 0 in s (it computes the prompt) and the others' slots taken from the free ones (their kept caches
 * dropped), each with a copy of the record and prompt, given a beam at the first step. */
static pb_status beam_admit(engine *d, seq_state *s)
{
    beam_run *br = s->br;
    const int self = (int)(s - d->slots);
    br->all[0] = br->slot[0] = self;
    s->beam = 0;
    s->beam_primed = true;
    int k = 1;
    for (int i = 0; i < d->n_slots && k < br->n_slots; i++) {
        seq_state *x = &d->slots[i];
        if (x->active || i == self)
            continue;
        memset(x, 0, sizeof *x);
        PB_CHECK(pb_record_copy(&x->rec, &s->rec));
        pb_status st = pb_calloc((size_t)s->n_prompt, sizeof *x->prompt, &x->prompt);
        if (st != PB_OK) {
            slot_release(x);
            return st;
        }
        memcpy(x->prompt, s->prompt, (size_t)s->n_prompt * sizeof *x->prompt);
        x->wait_for = -1;
        x->out_no = s->out_no;
        x->n_prompt = x->n_feed = s->n_prompt;
        x->br = br;
        br->refs++;
        x->beam = -1;
        x->beam_fork = -1;
        x->beam_hold = true;
        x->active = true;
        free(d->ghost[i]); /* its cache is the beams' now */
        d->ghost[i] = NULL;
        br->all[k++] = i;
    }
    if (k < br->n_slots)
        return pb_error(PB_ERR_INTERNAL, "engine: %d slots free for %d beams", k, br->n_slots);
    s->active = true;
    s->t_admit = pb_now();
    return PB_OK;
}

/* Take records until one needs the model (admitted into s, *got) or none
 * is available now. Prompts that cannot be generated for and zero-token
 * requests are answered here. */
static pb_status next_prompt(engine *d, seq_state *s, bool *got)
{
    *got = false;
    while (!d->stopping) {
        if (d->has_pend) {
            PB_CHECK(admit_choice(d, s));
            *got = true;
            return PB_OK;
        }
        if (d->has_bhold) { /* until its beams' slots are free, nothing else is admitted */
            if (free_slots(d, s) < d->bhold.br->n_slots - 1)
                return PB_OK;
            *s = d->bhold;
            memset(&d->bhold, 0, sizeof d->bhold);
            d->has_bhold = false;
            PB_CHECK(beam_admit(d, s));
            *got = true;
            return PB_OK;
        }
        if (d->input_done)
            break;
        pb_record rec;
        uint64_t out_no = 0;
        bool have = false, ended = false;
        memset(&rec, 0, sizeof rec);
        PB_CHECK(d->io->next(d->io->ctx, &rec, &out_no, &have, &ended));
        if (ended)
            d->input_done = true;
        if (!have)
            return PB_OK;
        int32_t *ids = NULL;
        size_t n = 0;
        guide_entry *ge = NULL;
        bad_words bw = {0};
        pb_status st = PB_OK;
        if (rec.prompt_ids) { /* given as ids: used as they are (no special tokens added), as vLLM */
            n = (size_t)rec.n_prompt_ids;
            if ((ids = malloc(n * sizeof *ids)))
                memcpy(ids, rec.prompt_ids, n * sizeof *ids);
            else
                st = pb_error(PB_ERR_NOMEM, "out of memory for a prompt of %zu tokens", n);
        } else {
            st = pb_tokenizer_encode(d->tok, rec.prompt, rec.prompt_len,
                                     rec.gs.has_add_special ? rec.gs.add_special : !rec.chat, &ids, &n);
        }
        const size_t keep = rec.gs.truncate > 0 ? (size_t)rec.gs.truncate
                            : rec.gs.truncate < 0 ? (size_t)(d->o->context - 1) : n;
        if (st == PB_OK && n > keep) { /* truncate_prompt_tokens: the last ones (vLLM's left truncation) */
            if (!rec.gs.trunc_right) /* else the first ones */
                memmove(ids, ids + (n - keep), keep * sizeof *ids);
            n = keep;
        }
        /* chat prompts: the template wrote the special tokens (HF's
         * apply_chat_template tokenizes with add_special_tokens=False) */
        if (st != PB_OK) {
            if (st != PB_ERR_INPUT) {
                pb_record_clear(&rec);
                return st;
            }
            st = pb_record_set_error(&rec, "prompt: %s", pb_last_error());
        } else if ((st = check_ids(d, &rec)) != PB_OK || rec.error) {
            /* a token id the model does not have */
        } else if (rec.gs.guide && rec.gs.max_tokens > 0 && ((st = guide_take(d, &rec, &ge)) != PB_OK || rec.error)) {
            /* a pattern that cannot be used */
        } else if (rec.gs.n_bad && rec.gs.max_tokens > 0 &&
                   ((st = bad_prepare(d, &rec, &bw)) != PB_OK || rec.error)) {
            /* a word that cannot be tokenized */
        } else if (rec.gs.embed && n == 0) {
            st = pb_record_set_error(&rec, "input has no tokens (empty text and no special tokens added)");
        } else if (rec.gs.embed && n > (size_t)d->o->context) {
            st = pb_record_set_error(&rec, "input has %zu tokens; the context is %d tokens (truncate_prompt_tokens "
                                     "keeps the last ones)", n, d->o->context);
        } else if (rec.gs.embed && rec.gs.dimensions > pb_pipe_limits(d->pipe)->hidden) {
            st = pb_record_set_error(&rec, "field 'dimensions': %d, more than the model's %d", rec.gs.dimensions,
                                     pb_pipe_limits(d->pipe)->hidden);
        } else if (rec.gs.embed) {
            /* an embedding: the prompt alone */
        } else if (n == 0 && rec.gs.max_tokens > 0) {
            st = pb_record_set_error(&rec, "prompt has no tokens (empty prompt and no BOS token)");
        } else if (n >= (size_t)d->o->context && rec.gs.max_tokens > 0) {
            st = pb_record_set_error(&rec, "prompt has %zu tokens; the context is %d tokens, "
                                     "which leaves no room to generate", n, d->o->context);
        }
        if ((st != PB_OK || rec.error) && ge)
            ge->refs--;
        if (st != PB_OK || rec.error) {
            bad_words_free(&bw);
            free(ids);
            if (st == PB_OK)
                st = d->io->result(d->io->ctx, &rec, out_no, NULL);
            pb_record_clear(&rec);
            PB_CHECK(st);
            continue;
        }
        size_t cap = n;
        if (d->o->rope_long_after > 0 && n > 0) {
            /* room for the completion: the sequence may be fed again whole */
            cap = n > (size_t)d->o->context ? n : (size_t)d->o->context;
            int32_t *grown = realloc(ids, cap * sizeof *ids);
            if (!grown) {
                bad_words_free(&bw);
                if (ge)
                    ge->refs--;
                free(ids);
                pb_record_clear(&rec);
                return pb_error(PB_ERR_NOMEM, "out of memory for a prompt of %zu tokens", n);
            }
            ids = grown;
        }
        memset(s, 0, sizeof *s);
        s->wait_for = -1;
        s->ge = ge;
        s->gstate = ge ? pb_guide_start(ge->g) : 0;
        s->bw = bw;
        s->rec = rec;
        s->out_no = out_no;
        s->prompt = ids;
        s->n_prompt = (int)n;
        s->n_feed = (int)n;
        s->rope_long = d->o->rope_long_after > 0 && s->n_prompt > d->o->rope_long_after;
        if (rec.gs.embed) {
            if (pb_calloc((size_t)pb_pipe_limits(d->pipe)->hidden, sizeof *s->emb, &s->emb) != PB_OK) {
                slot_release(s);
                return PB_ERR_NOMEM;
            }
            s->active = true;
            s->t_admit = pb_now();
            *got = true;
            return PB_OK;
        }
        if (rec.gs.beams > 0 && rec.gs.max_tokens > 0) {
            st = beam_new(d, s);
            if (st == PB_OK && s->rec.error) {
                st = d->io->result(d->io->ctx, &s->rec, s->out_no, NULL);
                slot_release(s);
                PB_CHECK(st);
                continue;
            }
            if (st == PB_OK && free_slots(d, s) < s->br->n_slots - 1) { /* held until they are */
                d->bhold = *s;
                memset(s, 0, sizeof *s);
                d->has_bhold = true;
                return PB_OK;
            }
            if (st == PB_OK)
                st = beam_admit(d, s);
            if (st != PB_OK) {
                slot_release(s);
                return st;
            }
            *got = true;
            return PB_OK;
        }
        const int n_choices = rec.gs.n > 1 ? rec.gs.n : 1;
        if (rec.gs.max_tokens == 0 && !rec.gs.prompt_logprobs) {
            pb_choice empty[PB_GEN_MAX_N];
            for (int i = 0; i < n_choices; i++)
                empty[i] = (pb_choice){.text = "", .len = 0, .finish = "length"};
            pb_result res = {.text = "", .len = 0, .finish = "length", .prompt_tokens = s->n_prompt,
                             .prompt_ids = s->prompt, .n_choices = n_choices > 1 ? n_choices : 0, .choices = empty,
                             .tok = d->tok};
            st = d->io->result(d->io->ctx, &s->rec, s->out_no, &res);
            slot_release(s);
            PB_CHECK(st);
            continue;
        }
        if (n_choices > 1 && rec.gs.max_tokens > 0) {
            /* choice 0 here; the others wait in pend (a clone) for slots of their own (with max_tokens 0, for
             * the prompt's log probabilities, only the one: the choices are empty) */
            st = group_new(n_choices, &s->grp);
            if (st == PB_OK && (st = seq_clone(&d->pend, s, cap, 1)) == PB_OK) {
                d->pend_cap = cap;
                d->has_pend = true;
            }
        }
        if (st == PB_OK)
            st = pb_detok_create_ex(d->tok, ids, n, !rec.gs.keep_special, &s->detok);
        if (st != PB_OK) {
            slot_release(s);
            return st;
        }
        s->active = true;
        s->t_admit = pb_now();
        *got = true;
        return PB_OK;
    }
    return PB_OK;
}

/* ---- micro-batches ---------------------------------------------------- */

/* Whether the sequence's prefill gives the prompt's log probabilities: the
 * record asks them, its first choice, the prompt's first feed (LongRoPE's
 * second is not). */
static bool wants_plp(const seq_state *s)
{
    return s->rec.gs.prompt_logprobs && s->choice == 0 && s->generated == 0;
}

static pb_mb_seq seq_desc(const seq_state *s, int slot, int pos, int n, uint32_t flags)
{
    pb_mb_seq q;
    memset(&q, 0, sizeof q);
    q.slot = slot;
    q.pos = pos;
    q.n_tokens = n;
    /* min_tokens: as HF's min_new_tokens, EOS is masked until then */
    if ((flags & PB_SEQ_SAMPLE) && s->generated < s->rec.gs.min_tokens)
        flags |= PB_SEQ_NO_EOS;
    if (s->rope_long)
        flags |= PB_SEQ_ROPE_LONG;
    if ((flags & PB_SEQ_SAMPLE) && s->rec.gs.logprobs && s->rec.gs.max_tokens > 0) {
        flags |= PB_SEQ_LOGPROBS;
        q.n_logprobs = s->rec.gs.top_logprobs;
    }
    if ((flags & PB_SEQ_SAMPLE) && s->br) { /* a beam: its most likely continuations */
        flags |= PB_SEQ_LOGPROBS;
        q.n_logprobs = s->br->want;
    }
    q.next_id = -1;
    if (wants_plp(s) && pos < s->n_prompt) {
        flags |= PB_SEQ_PROMPT_LOGPROBS;
        q.n_prompt_logprobs = s->rec.gs.prompt_top;
        q.next_id = (flags & PB_SEQ_SAMPLE) ? -1 : s->prompt[pos + n];
    }
    q.flags = flags;
    q.sample = s->rec.gs.sample;
    q.sample.prompt_len = s->n_prompt; /* the output the frequency and presence penalties count follows it */
    q.key.seed = s->rec.gs.seed;
    /* a record with its own seed draws the same whatever its position (each prompt of a line's list, as vLLM:
     * the same seed each); without, its line's and its prompt's */
    q.key.record = s->rec.gs.own_seed ? 0 : s->rec.line | (uint64_t)s->rec.prompt_index << 48;
    /* choice i of n: its own stream, choice 0 the record's (n = 1's) */
    q.key.record |= (uint64_t)s->choice << 40;
    q.key.step = (uint64_t)s->generated;
    return q;
}

static int cmp_id32(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Appends sequence q (of s) with its tokens and, where it samples, its allowed ids, its constraint's mask and its
 * logit biases: the record's, and -inf for the ids banned now (its stop_token_ids while min_tokens is not reached,
 * as vLLM's min_tokens masks them with EOS; its bad words' last tokens). */
static pb_status add_seq(engine *d, pb_microbatch *mb, const seq_state *s, const pb_mb_seq *q, const int32_t *tok)
{
    PB_CHECK(pb_mb_add(mb, q, tok));
    const pb_gen_settings *g = &s->rec.gs;
    if ((q->flags & PB_SEQ_LOGPROBS) && g->n_lp_ids) /* logprob_token_ids: these ids' instead of the likeliest */
        PB_CHECK(pb_mb_add_lp_ids(mb, g->lp_ids, g->n_lp_ids));
    if ((q->flags & PB_SEQ_SAMPLE) && g->n_allow)
        PB_CHECK(pb_mb_add_allow(mb, g->allow, g->n_allow));
    if ((q->flags & PB_SEQ_SAMPLE) && s->ge) { /* the constraint's ids, and EOS where the text so far is a match */
        const uint32_t *m;
        int n;
        PB_CHECK(pb_guide_mask(s->ge->g, s->gstate, &m, &n));
        const int words = pb_guide_vocab_words(d->gvocab);
        memcpy(d->maskbuf, m, (size_t)words * sizeof *m);
        const bool eos_ok = pb_guide_accepts(s->ge->g, s->gstate) && !g->ignore_eos;
        for (int e = 0; eos_ok && e < d->o->n_eos; e++)
            if (d->o->eos_ids[e] >= 0 && d->o->eos_ids[e] < 32 * words)
                d->maskbuf[d->o->eos_ids[e] >> 5] |= 1u << (d->o->eos_ids[e] & 31);
        PB_CHECK(pb_mb_add_mask(mb, d->maskbuf, words));
    }
    if (!(q->flags & PB_SEQ_SAMPLE))
        return PB_OK;
    /* the ids it may not sample now: its stop ids under min_tokens, each bad word's last token where the completion
     * ends with the rest of it (vLLM's, on the completion's ids) */
    int nb = 0;
    for (int i = 0; (q->flags & PB_SEQ_NO_EOS) && i < g->n_stop_ids; i++)
        d->ban[nb++] = g->stop_ids[i];
    const bad_words *b = &s->bw;
    for (int i = 0, at = 0; i < b->n; at += b->len[i++]) {
        const int pre = b->len[i] - 1;
        if (pre <= s->generated && !memcmp(b->out + s->generated - pre, b->ids + at, (size_t)pre * sizeof *b->ids))
            d->ban[nb++] = b->ids[at + pre];
    }
    if (!nb)
        return g->n_bias ? pb_mb_add_bias(mb, g->bias, g->n_bias) : PB_OK;
    qsort(d->ban, (size_t)nb, sizeof *d->ban, cmp_id32);
    /* merged with the record's biases (ids ascending, a banned id's bias dropped) */
    int n = 0, j = 0;
    for (int i = 0; i < nb; i++) {
        if (i && d->ban[i] == d->ban[i - 1])
            continue;
        for (; j < g->n_bias && g->bias[j].id < d->ban[i]; j++)
            d->bias[n++] = g->bias[j];
        if (j < g->n_bias && g->bias[j].id == d->ban[i])
            j++;
        d->bias[n++] = (pb_id_bias){d->ban[i], -INFINITY};
    }
    for (; j < g->n_bias; j++)
        d->bias[n++] = g->bias[j];
    return pb_mb_add_bias(mb, d->bias, n);
}

/* How many of a[0..lim) and b[0..lim) agree from the start. */
static int common_prefix(const int32_t *a, const int32_t *b, int lim)
{
    int n = 0;
    while (n < lim && a[n] == b[n])
        n++;
    return n;
}

/* Shared tokens a wait must gain over what can be copied now. */
#define PREFIX_WAIT_MIN 8

/* A new prompt in slot `slot` (nothing of it computed): the slot in flight
 * whose cache holds the longest prefix of it (its own prompt's tokens,
 * results back, so computed on every stage; a slot forked in a micro-batch
 * still in flight counts too: each stage runs micro-batches in order),
 * leaving at least the prompt's last token to compute (its logits give the
 * first token): sets s->cached to that length and returns that slot (-1:
 * none). Or, where a sequence admitted before it shares at least
 * PREFIX_WAIT_MIN more tokens that it has yet to compute (prompts admitted
 * together, a batch's first), s->wait_for: the prompt waits for them rather
 * than compute them too (a sequence that waits is never waited for: no
 * cycles). A finished sequence's cache counts until its slot takes another
 * prompt (a later micro-batch, or this one after every fork's copy): this
 * slot's own too, where the copy is none. */
static int plan_prefix(engine *d, int slot)
{
    seq_state *s = &d->slots[slot];
    int best = 0, from = -1, later = 0, wait = -1;
    const int room = s->n_prompt - 1; /* its last token is always computed */
    s->wait_for = -1;
    if (wants_plp(s))
        return -1; /* every prompt position's logits are wanted */
    for (int j = 0; j < d->n_slots; j++) {
        const seq_state *o = &d->slots[j];
        if (j == slot || !o->active || o->rope_long || o->br) /* a beam's slot may be copied into before it runs */
            continue;
        const int n = common_prefix(o->prompt, s->prompt, o->n_prompt < room ? o->n_prompt : room);
        const int now = n < o->cached ? n : o->cached;
        if (now > best) {
            best = now;
            from = j;
        }
        if (n > later && n > o->cached && o->wait_for < 0) {
            later = n;
            wait = j;
        }
    }
    for (int j = 0; j < d->n_slots; j++) { /* finished sequences' caches, this slot's own among them */
        if (!d->ghost[j] || (j != slot && d->slots[j].active))
            continue;
        const int n = common_prefix(d->ghost[j], s->prompt, d->n_ghost[j] < room ? d->n_ghost[j] : room);
        if (n > best) {
            best = n;
            from = j;
        }
    }
    if (wait >= 0 && later >= best + PREFIX_WAIT_MIN) {
        s->wait_for = wait;
        return -1;
    }
    if (from >= 0) {
        s->cached = best;
        d->st->prompt_tokens_shared += (uint64_t)best;
    }
    return from;
}

/* Build chunk c's next micro-batch: decode steps first, then prefill (new
 * prompts admitted into free slots) within the token budget. */
static pb_status build(engine *d, int c, pb_microbatch *mb)
{
    pb_mb_clear(mb);
    if (d->dropping)
        return PB_OK;
    int C = d->o->chunks, budget = d->max_batch_tokens;
    for (int slot = c; slot < d->n_slots; slot += C) {
        seq_state *s = &d->slots[slot];
        if (!s->active || s->cached < s->n_feed)
            continue;
        if (s->br) { /* a beam's step: its token, where it is not its parent's first child in a copy of its cache */
            if (s->beam_hold)
                continue;
            const uint32_t fork = s->beam_fork >= 0 ? PB_SEQ_NEW | PB_SEQ_FORK : 0;
            pb_mb_seq q = seq_desc(s, slot, s->cached, 1, PB_SEQ_SAMPLE | fork);
            q.fork_slot = fork ? s->beam_fork : 0;
            q.fork_from = fork && s->beam_primed && s->n_prompt < s->cached ? s->n_prompt : 0;
            s->beam_primed = s->beam_primed || fork;
            PB_CHECK(add_seq(d, mb, s, &q, &s->last));
            s->beam_hold = true;
            s->beam_fork = -1;
            budget--;
            continue;
        }
        if (d->o->rope_long_after > 0 && !s->rope_long && s->cached == d->o->rope_long_after) {
            /* as Phi-3's generate(): the cache is dropped, all is fed again (below) */
            s->rope_long = true;
            s->n_feed = s->n_prompt + s->generated;
            s->cached = 0;
            continue;
        }
        pb_mb_seq q = seq_desc(s, slot, s->cached, 1, PB_SEQ_SAMPLE);
        PB_CHECK(add_seq(d, mb, s, &q, &s->last));
        budget--;
    }
    for (int slot = c; slot < d->n_slots && budget > 0; slot += C) {
        seq_state *s = &d->slots[slot];
        int fork = -1; /* the slot whose first s->cached positions this prompt starts with */
        if (!s->active) {
            bool got;
            PB_CHECK(next_prompt(d, s, &got));
            if (!got)
                continue;
            if (d->o->share_prefixes && !s->rope_long && !s->rec.gs.embed)
                fork = plan_prefix(d, slot);
            free(d->ghost[slot]); /* the new prompt overwrites the slot's cache */
            d->ghost[slot] = NULL;
        } else if (s->wait_for >= 0) {
            fork = plan_prefix(d, slot);
        }
        if (s->wait_for >= 0 || s->cached >= s->n_feed || (s->br && s->beam_hold))
            continue;
        int n = s->n_feed - s->cached;
        if (n > budget)
            n = budget;
        uint32_t flags = (s->cached == 0 || fork >= 0 ? PB_SEQ_NEW : 0) | (fork >= 0 ? PB_SEQ_FORK : 0) |
                         (s->cached + n == s->n_feed ? PB_SEQ_SAMPLE : 0);
        if (s->rec.gs.embed) /* its pooling's rows instead of a token */
            flags = (flags & ~PB_SEQ_SAMPLE) |
                    (s->rec.gs.pooling == PB_POOL_MEAN                       ? PB_SEQ_EMBED_SUM
                     : s->rec.gs.pooling == PB_POOL_CLS && s->cached == 0     ? PB_SEQ_EMBED_FIRST
                     : s->rec.gs.pooling == PB_POOL_LAST && (flags & PB_SEQ_SAMPLE) ? PB_SEQ_EMBED_LAST
                                                                               : 0);
        pb_mb_seq q = seq_desc(s, slot, s->cached, n, flags);
        q.fork_slot = fork >= 0 ? fork : 0;
        PB_CHECK(add_seq(d, mb, s, &q, s->prompt + s->cached));
        if (s->br && (flags & PB_SEQ_SAMPLE))
            s->beam_hold = true; /* beam 0's prompt: then the first step */
        budget -= n;
    }
    return PB_OK;
}

/* ---- results ---------------------------------------------------------- */

static bool is_eos(const engine *d, int32_t t)
{
    for (int i = 0; i < d->o->n_eos; i++)
        if (d->o->eos_ids[i] == t)
            return true;
    return false;
}

/* One of a record's n completions finished: kept; with the last, the record's result. */
static pb_status group_put(engine *d, seq_state *s, const pb_result *res)
{
    group *g = s->grp;
    char *text = malloc(res->len + 1);
    if (!text)
        return pb_error(PB_ERR_NOMEM, "out of memory for a completion of %zu bytes", res->len);
    memcpy(text, res->text, res->len);
    text[res->len] = '\0';
    g->ch[s->choice] = (pb_choice){.text = text, .len = res->len, .finish = res->finish,
                                   .completion_tokens = res->completion_tokens, .n_lp = res->n_lp, .lp = s->lp,
                                   .token_ids = s->ids};
    s->lp = NULL; /* the group's now */
    s->ids = NULL;
    if (s->plp) {
        g->plp = s->plp;
        g->prank = s->prank;
        g->n_plp = s->n_plp;
        s->plp = NULL;
        s->prank = NULL;
    }
    if (--g->left > 0)
        return PB_OK;
    int total = 0;
    for (int i = 0; i < g->n; i++)
        total += g->ch[i].completion_tokens;
    pb_result all = {.prompt_tokens = s->n_prompt, .prompt_ids = s->prompt, .completion_tokens = total,
                     .n_choices = g->n, .choices = g->ch, .tok = d->tok, .n_plp = g->n_plp, .plp = g->plp,
                     .prank = g->prank};
    return d->io->result(d->io->ctx, &s->rec, s->out_no, &all);
}

static pb_status finish(engine *d, seq_state *s, const char *reason, bool cut, size_t cut_at)
{
    size_t len;
    const char *text;
    if (!cut) {
        const char *nt;
        size_t nl;
        PB_CHECK(pb_detok_finish(s->detok, &nt, &nl));
        text = pb_detok_text(s->detok, &len);
        /* the rest released at the end may complete a stop string */
        size_t off;
        int which;
        if (s->rec.gs.n_stops && nl &&
            pb_detok_find_stop(s->detok, (const char *const *)s->rec.gs.stops, s->rec.gs.n_stops, nl,
                               &off, &which)) {
            len = off + (s->rec.gs.include_stop ? strlen(s->rec.gs.stops[which]) : 0);
            reason = "stop";
        }
    } else {
        text = pb_detok_text(s->detok, &len);
        len = cut_at;
    }
    pb_result res = {.text = text, .len = len, .finish = reason, .prompt_tokens = s->n_prompt,
                     .prompt_ids = s->prompt, .completion_tokens = s->generated, .n_lp = s->lp ? s->generated : 0,
                     .lp = s->lp, .tok = d->tok, .n_plp = s->n_plp, .plp = s->plp, .prank = s->prank,
                     .token_ids = s->ids};
    pb_choice empty[PB_GEN_MAX_N];
    if (!s->grp && s->rec.gs.n > 1) { /* max_tokens 0, run for the prompt's log probabilities: n empty choices */
        for (int i = 0; i < s->rec.gs.n; i++)
            empty[i] = (pb_choice){.text = "", .len = 0, .finish = "length"};
        res.n_choices = s->rec.gs.n;
        res.choices = empty;
    }
    pb_status st = s->grp ? group_put(d, s, &res) : d->io->result(d->io->ctx, &s->rec, s->out_no, &res);
    const int slot = (int)(s - d->slots);
    free(d->ghost[slot]);
    d->ghost[slot] = NULL;
    if (d->o->share_prefixes && !s->rope_long) {
        d->ghost[slot] = s->prompt; /* its cache: the prompt's first positions, as computed */
        d->n_ghost[slot] = s->cached < s->n_prompt ? s->cached : s->n_prompt;
        s->prompt = NULL;
    }
    slot_release(s);
    return st;
}

/* A grammar whose parse outgrew its bounds (grammar.h) mid-completion: the text so far is kept, unfinished. */
static pb_status guide_stop(engine *d, seq_state *s)
{
    pb_log_warn("line %llu: constrained decoding: %s; the completion ends unfinished", (unsigned long long)s->rec.line,
                pb_last_error());
    return finish(d, s, "stop", false, 0);
}

static pb_status on_token(engine *d, seq_state *s, int32_t t)
{
    if (s->rec.gs.max_tokens == 0) /* a prompt run for its log probabilities: no completion */
        return finish(d, s, "length", false, 0);
    if (s->generated == 0) {
        double now = pb_now(), dt = now - s->t_admit;
        d->ttft_sum += dt;
        d->ttft_n++;
        if (dt > d->st->ttft_max)
            d->st->ttft_max = dt;
        if (d->st->first_token_seconds == 0)
            d->st->first_token_seconds = now - d->t0;
    }
    if (s->rec.gs.return_ids) { /* the completion's ids, kept for the output */
        if (s->generated == s->ids_cap) {
            const int cap = s->ids_cap ? 2 * s->ids_cap : 64;
            int32_t *grown = realloc(s->ids, (size_t)cap * sizeof *grown);
            if (!grown)
                return pb_error(PB_ERR_NOMEM, "out of memory for a completion's token ids");
            s->ids = grown;
            s->ids_cap = cap;
        }
        s->ids[s->generated] = t;
    }
    s->generated++;
    s->last = t;
    if (s->bw.out && s->generated <= s->rec.gs.max_tokens)
        s->bw.out[s->generated - 1] = t;
    if (d->o->rope_long_after > 0 && s->n_prompt + s->generated <= d->o->context)
        s->prompt[s->n_prompt + s->generated - 1] = t; /* kept to be fed again */
    /* EOS or a stop id ends it; as vLLM, its text only with include_stop_str_in_output */
    bool stop_id = !s->rec.gs.ignore_eos && is_eos(d, t);
    for (int i = 0; i < s->rec.gs.n_stop_ids && !stop_id; i++)
        stop_id = s->rec.gs.stop_ids[i] == t;
    if (stop_id && !s->rec.gs.include_stop)
        return finish(d, s, "stop", false, 0);
    int32_t gnext = 0;
    if (s->ge && !stop_id) {
        const pb_status st = pb_guide_next(s->ge->g, s->gstate, t, &gnext);
        if (st == PB_ERR_INPUT) { /* a grammar's parse past its bounds */
            s->generated--;
            return guide_stop(d, s);
        }
        PB_CHECK(st);
    }
    if (s->ge && !stop_id && gnext < 0) {
        /* only where every id the constraint allows was masked (by min_tokens' bans): the text stays a prefix */
        pb_log_warn("line %llu: constrained decoding: no allowed token could be sampled; the completion ends",
                    (unsigned long long)s->rec.line);
        s->generated--;
        return finish(d, s, "stop", false, 0);
    }
    const char *nt;
    size_t nl;
    PB_CHECK(pb_detok_push(s->detok, t, &nt, &nl));
    if (stop_id)
        return finish(d, s, "stop", false, 0);
    size_t off;
    int which;
    /* as vLLM, stop strings count only after min_tokens */
    if (s->rec.gs.n_stops && nl && s->generated > s->rec.gs.min_tokens &&
        pb_detok_find_stop(s->detok, (const char *const *)s->rec.gs.stops, s->rec.gs.n_stops, nl,
                           &off, &which))
        return finish(d, s, "stop", true, off + (s->rec.gs.include_stop ? strlen(s->rec.gs.stops[which]) : 0));
    if (s->ge) {
        /* a state no token leads on from: the match is whole (as the EOS it would be given) */
        s->gstate = gnext;
        const uint32_t *m;
        int n;
        const pb_status st = pb_guide_mask(s->ge->g, s->gstate, &m, &n);
        if (st == PB_ERR_INPUT)
            return guide_stop(d, s);
        PB_CHECK(st);
        if (n == 0) {
            if (!pb_guide_accepts(s->ge->g, s->gstate))
                pb_log_warn("line %llu: constrained decoding: no token of the vocabulary continues the match; the "
                            "completion ends unfinished", (unsigned long long)s->rec.line);
            return finish(d, s, "stop", false, 0);
        }
    }
    if (s->generated >= s->rec.gs.max_tokens || s->n_prompt + s->generated >= d->o->context)
        return finish(d, s, "length", false, 0);
    return PB_OK;
}

/* The sampled token's log probabilities, as the sequence asked (q). */
static pb_status keep_logprobs(seq_state *s, const pb_mb_seq *q, int32_t t, const pb_logprobs *l)
{
    if (!(q->flags & PB_SEQ_LOGPROBS) || l->n_top != q->n_logprobs)
        return pb_error(PB_ERR_INTERNAL, "driver: slot %d asked %d log probabilities, the result has %d",
                        (int)q->slot, (q->flags & PB_SEQ_LOGPROBS) ? (int)q->n_logprobs : -1, (int)l->n_top);
    const size_t step = 1 + (size_t)l->n_top, need = ((size_t)s->generated + 1) * step;
    if (need > s->lp_cap) {
        size_t cap = s->lp_cap ? 2 * s->lp_cap : 64 * step;
        cap = cap < need ? need : cap;
        PB_CHECK(pb_realloc_array(&s->lp, cap, sizeof *s->lp));
        s->lp_cap = cap;
    }
    pb_lp_pair *e = s->lp + (size_t)s->generated * step;
    e[0] = (pb_lp_pair){t, l->logprob};
    for (int k = 0; k < l->n_top; k++)
        e[1 + k] = (pb_lp_pair){l->top_id[k], l->top_logprob[k]};
    return PB_OK;
}

/* A prefill chunk's prompt tokens' log probabilities (e[0..n)), kept in order. */
static pb_status keep_prompt_logprobs(seq_state *s, const pb_mb_seq *q, const pb_logprobs *e, int n)
{
    const int want = q->n_tokens - (q->next_id < 0), top = s->rec.gs.prompt_top;
    if (n != want || s->n_plp != q->pos)
        return pb_error(PB_ERR_INTERNAL, "driver: slot %d: %d prompt log probabilities at %d, expected %d at %d",
                        (int)q->slot, n, s->n_plp, want, (int)q->pos);
    if (!s->plp) { /* the prompt's tokens after the first */
        const size_t rows = s->n_prompt > 1 ? (size_t)s->n_prompt - 1 : 1;
        PB_CHECK(pb_calloc(rows * (1 + (size_t)top), sizeof *s->plp, &s->plp));
        PB_CHECK(pb_calloc(rows, sizeof *s->prank, &s->prank));
    }
    for (int k = 0; k < n; k++) {
        const int at = s->n_plp + k;
        if (at + 1 >= s->n_prompt || e[k].id != s->prompt[at + 1] || e[k].n_top != top)
            return pb_error(PB_ERR_INTERNAL, "driver: slot %d: prompt log probability %d for id %d", (int)q->slot, at,
                            (int)e[k].id);
        pb_lp_pair *o = s->plp + (size_t)at * (1 + (size_t)top);
        o[0] = (pb_lp_pair){e[k].id, e[k].logprob};
        for (int j = 0; j < top; j++)
            o[1 + j] = (pb_lp_pair){e[k].top_id[j], e[k].top_logprob[j]};
        s->prank[at] = e[k].rank;
    }
    s->n_plp += n;
    return PB_OK;
}

/* A beam search's end: its n best hypotheses as the record's choices (the text as decoded after the prompt, a stop
 * id's text left out unless include_stop_str_in_output), its slots given up (their caches kept for prefixes). */
static pb_status beam_finish(engine *d, beam_run *br)
{
    seq_state *s0 = &d->slots[br->all[0]];
    const pb_gen_settings *g = &s0->rec.gs;
    const int n = pb_beam_results(br->b);
    pb_choice ch[PB_BEAM_MAX];
    char *texts[PB_BEAM_MAX] = {NULL};
    pb_status st = PB_OK;
    int total = 0;
    for (int i = 0; i < n && st == PB_OK; i++) {
        int len;
        bool stopped;
        const int32_t *ids = pb_beam_result(br->b, i, &len, &stopped);
        pb_detok *dt = NULL;
        const char *nt;
        size_t nl, tl = 0;
        st = pb_detok_create_ex(d->tok, s0->prompt, (size_t)s0->n_prompt, !g->keep_special, &dt);
        for (int k = 0; st == PB_OK && k < len - (stopped && !g->include_stop); k++)
            st = pb_detok_push(dt, ids[k], &nt, &nl);
        if (st == PB_OK)
            st = pb_detok_finish(dt, &nt, &nl);
        if (st == PB_OK) {
            const char *t = pb_detok_text(dt, &tl);
            if ((texts[i] = malloc(tl + 1))) {
                memcpy(texts[i], t, tl);
                texts[i][tl] = '\0';
            } else {
                st = pb_error(PB_ERR_NOMEM, "out of memory for a completion of %zu bytes", tl);
            }
        }
        pb_detok_free(dt);
        const pb_lp_pair *lp = pb_beam_result_lp(br->b, i);
        ch[i] = (pb_choice){.text = texts[i], .len = tl, .finish = stopped ? "stop" : "length",
                            .completion_tokens = len, .n_lp = lp ? len : 0, .lp = lp,
                            .token_ids = g->return_ids ? ids : NULL};
        total += len;
    }
    if (st == PB_OK) {
        pb_result res = {.prompt_tokens = s0->n_prompt, .prompt_ids = s0->prompt, .completion_tokens = total,
                         .tok = d->tok, .n_plp = s0->n_plp, .plp = s0->plp, .prank = s0->prank};
        if (g->n > 1) {
            res.n_choices = n;
            res.choices = ch;
        } else if (n == 1) {
            res.text = ch[0].text;
            res.len = ch[0].len;
            res.finish = ch[0].finish;
            res.token_ids = ch[0].token_ids;
            res.n_lp = ch[0].n_lp;
            res.lp = ch[0].lp;
        } else {
            st = pb_error(PB_ERR_INTERNAL, "engine: beam search ended with %d hypotheses", n);
        }
        if (st == PB_OK)
            st = d->io->result(d->io->ctx, &s0->rec, s0->out_no, &res);
    }
    for (int i = 0; i < n; i++)
        free(texts[i]);
    br->refs++; /* held while its slots go */
    for (int i = 0; i < br->n_slots; i++) {
        const int slot = br->all[i];
        seq_state *x = &d->slots[slot];
        free(d->ghost[slot]);
        d->ghost[slot] = NULL;
        if (d->o->share_prefixes && x->cached > 0) { /* every beam's cache starts with the prompt */
            d->ghost[slot] = x->prompt;
            d->n_ghost[slot] = x->cached < x->n_prompt ? x->cached : x->n_prompt;
            x->prompt = NULL;
        }
        slot_release(x);
    }
    beam_unref(br);
    return st;
}

/* A beam's step is back: its continuations kept; with the last beam's, the next beams chosen (or the end). A
 * beam continuing its parent's first keeps the parent's slot; the others take the slots of beams left without
 * one, copies of their parents' caches at the next step (those slots are nobody's source). */
static pb_status beam_result(engine *d, seq_state *s, const pb_mb_seq *q, const pb_logprobs *l)
{
    beam_run *br = s->br;
    if (!(q->flags & PB_SEQ_LOGPROBS) || l->n_top != q->n_logprobs || s->beam < 0)
        return pb_error(PB_ERR_INTERNAL, "driver: beam in slot %d: %d log probabilities for %d", (int)q->slot,
                        (int)l->n_top, (int)q->n_logprobs);
    PB_CHECK(pb_beam_put(br->b, s->beam, l->top_id, l->top_logprob, l->n_top));
    if (pb_beam_generated(br->b) == 0) { /* the first token's time, as a sampled one's */
        const double now = pb_now(), dt = now - s->t_admit;
        d->ttft_sum += dt;
        d->ttft_n++;
        d->st->ttft_max = dt > d->st->ttft_max ? dt : d->st->ttft_max;
        if (d->st->first_token_seconds == 0)
            d->st->first_token_seconds = now - d->t0;
    }
    if (--br->pending > 0)
        return PB_OK;
    const int B = br->n_slots;
    bool done;
    PB_CHECK(pb_beam_step(br->b, &done, br->parent, br->token));
    if (done)
        return beam_finish(d, br);
    bool kept[PB_BEAM_MAX] = {false}; /* running beam r's slot taken by its first child */
    bool used[PB_BEAM_MAX] = {false}; /* all[i] taken */
    int new_slot[PB_BEAM_MAX];
    for (int j = 0; j < B; j++) {
        const int p = br->parent[j];
        new_slot[j] = -1;
        br->fork[j] = -1;
        if (!kept[p]) {
            kept[p] = true;
            new_slot[j] = br->slot[p];
        } else {
            br->fork[j] = br->slot[p];
        }
        for (int i = 0; new_slot[j] >= 0 && i < B; i++)
            used[i] = used[i] || br->all[i] == new_slot[j];
    }
    for (int j = 0, i = 0; j < B; j++) { /* the slots no first child keeps: every parent's is kept */
        if (new_slot[j] >= 0)
            continue;
        while (i < B && used[i])
            i++;
        if (i >= B)
            return pb_error(PB_ERR_INTERNAL, "engine: no slot for beam %d", j);
        used[i] = true;
        new_slot[j] = br->all[i];
    }
    const int t = pb_beam_generated(br->b);
    br->want = pb_beam_want(br->b);
    for (int j = 0; j < B; j++) {
        seq_state *x = &d->slots[new_slot[j]];
        x->beam = j;
        x->last = br->token[j];
        x->generated = t;
        x->beam_fork = br->fork[j];
        if (br->fork[j] >= 0)
            x->cached = d->slots[br->fork[j]].cached;
        x->beam_hold = false;
        br->slot[j] = new_slot[j];
    }
    br->pending = B;
    return PB_OK;
}

/* An embeddings record's prompt is done: its pooled state, cut to its dimensions and normalized, answered. */
static pb_status embed_finish(engine *d, seq_state *s)
{
    const pb_gen_settings *g = &s->rec.gs;
    const int H = pb_pipe_limits(d->pipe)->hidden, dim = g->dimensions > 0 ? g->dimensions : H;
    double ss = 0;
    bool finite = true;
    for (int k = 0; k < dim; k++) {
        if (g->pooling == PB_POOL_MEAN)
            s->emb[k] = (float)((double)s->emb[k] / s->n_prompt);
        finite = finite && isfinite(s->emb[k]);
        ss += (double)s->emb[k] * s->emb[k];
    }
    if (finite && g->normalize) { /* as torch's F.normalize: x / max(||x||, 1e-12) */
        const double norm = sqrt(ss) > 1e-12 ? sqrt(ss) : 1e-12;
        for (int k = 0; k < dim; k++)
            s->emb[k] = (float)(s->emb[k] / norm);
    }
    pb_status st;
    if (!finite) {
        st = pb_record_set_error(&s->rec, "the model's embedding of this input is not finite (NaN or infinity)");
        if (st == PB_OK)
            st = d->io->result(d->io->ctx, &s->rec, s->out_no, NULL);
    } else {
        pb_result res = {.prompt_tokens = s->n_prompt, .prompt_ids = s->prompt, .tok = d->tok, .embedding = s->emb,
                         .dim = dim, .finish = "stop", .text = ""};
        st = d->io->result(d->io->ctx, &s->rec, s->out_no, &res);
    }
    slot_release(s);
    return st;
}

static pb_status process(engine *d, const pb_microbatch *mb, const pb_mb_result *res)
{
    int plp_at = 0, emb_at = 0;
    const int H = pb_pipe_limits(d->pipe)->hidden;
    for (int i = 0; i < mb->n_seqs; i++) {
        const pb_mb_seq *q = &mb->seqs[i];
        seq_state *s = &d->slots[q->slot];
        if (!s->active || s->cached != q->pos)
            return pb_error(PB_ERR_INTERNAL, "driver: result for slot %d out of step", (int)q->slot);
        if (((q->flags & PB_SEQ_EMBED) != 0) != (res->n_emb[i] != 0) || (res->n_emb[i] && res->n_emb[i] != H))
            return pb_error(PB_ERR_INTERNAL, "driver: an embedding of %d floats for slot %d unasked or amiss",
                            (int)res->n_emb[i], (int)q->slot);
        if (s->rec.gs.embed) {
            const float *e = res->emb + emb_at;
            emb_at += res->n_emb[i];
            for (int k = 0; k < res->n_emb[i]; k++)
                s->emb[k] = (q->flags & PB_SEQ_EMBED_SUM) ? s->emb[k] + e[k] : e[k];
            s->cached += q->n_tokens;
            if (s->cached == s->n_feed)
                PB_CHECK(embed_finish(d, s));
            continue;
        }
        if ((q->flags & PB_SEQ_PROMPT_LOGPROBS) || res->n_plp[i]) {
            if (!(q->flags & PB_SEQ_PROMPT_LOGPROBS))
                return pb_error(PB_ERR_INTERNAL, "driver: prompt log probabilities for slot %d unasked", (int)q->slot);
            PB_CHECK(keep_prompt_logprobs(s, q, res->plp + plp_at, res->n_plp[i]));
            plp_at += res->n_plp[i];
        }
        s->cached += q->n_tokens;
        if ((q->flags & PB_SEQ_SAMPLE) && s->br) {
            PB_CHECK(beam_result(d, s, q, &res->lps[i]));
            continue;
        }
        if (q->flags & PB_SEQ_SAMPLE) {
            if (res->tokens[i] < 0)
                return pb_error(PB_ERR_INTERNAL, "driver: no token sampled for slot %d", (int)q->slot);
            if ((q->flags & PB_SEQ_LOGPROBS) != 0 || res->lps[i].n_top >= 0)
                PB_CHECK(keep_logprobs(s, q, res->tokens[i], &res->lps[i]));
            PB_CHECK(on_token(d, s, res->tokens[i]));
        }
    }
    return PB_OK;
}

/* ---- main loop -------------------------------------------------------- */

static int in_flight_records(const engine *d)
{
    int n = 0;
    for (int i = 0; i < d->n_slots; i++)
        n += d->slots[i].active;
    return n;
}

/* After a stop signal: no new prompts at once; after the grace period no new
 * micro-batches either (what is in flight is dropped, the pipe drains). */
static void check_stop(engine *d)
{
    if (!d->stopping && pb_stop_requested()) {
        d->stopping = true;
        d->deadline = pb_now() + d->o->grace_seconds;
        pb_log_info("%s: stopping: no new prompts; finishing %d records in flight within %gs",
                    pb_stop_signal_name(), in_flight_records(d), d->o->grace_seconds);
    }
    if (d->stopping && !d->dropping && pb_now() >= d->deadline) {
        d->dropping = true;
        int n = in_flight_records(d);
        if (n)
            pb_log_info("grace period over: dropping %d records in flight", n);
    }
}

static pb_status submit_chunk(engine *d, int c, bool *submitted)
{
    *submitted = false;
    pb_microbatch *mb = &d->mbs[c];
    PB_CHECK(build(d, c, mb));
    if (mb->n_seqs == 0)
        return PB_OK;
    mb->tag = ++d->tag;
    PB_CHECK(pb_pipe_submit(d->pipe, mb));
    d->fifo[(d->fifo_head + d->fifo_n) % d->o->chunks] = c;
    d->fifo_n++;
    d->in_flight[c] = true;
    *submitted = true;
    return PB_OK;
}

static pb_status loop(engine *d)
{
    pb_mb_result res;
    PB_CHECK(pb_mb_result_init(&res, d->n_slots));
    pb_status st = PB_OK;
    int C = d->o->chunks;
    d->t_last_result = pb_now();
    for (;;) {
        check_stop(d);
        for (int c = 0; c < C; c++) {
            if (d->in_flight[c])
                continue;
            bool sub;
            PB_CHECK_GOTO(submit_chunk(d, c, &sub), st, out);
        }
        if (d->fifo_n == 0)
            break; /* nothing in flight and nothing to submit: input done */
        int c = d->fifo[d->fifo_head];
        PB_CHECK_GOTO(pb_pipe_wait(d->pipe, &res), st, out);
        d->fifo_head = (d->fifo_head + 1) % C;
        d->fifo_n--;
        d->in_flight[c] = false;
        d->st->micro_batches++;
        /* share this interval between prefill and decode by token count */
        double now = pb_now(), dt = now - d->t_last_result;
        d->t_last_result = now;
        const pb_microbatch *mb = &d->mbs[c];
        int decode = 0;
        for (int i = 0; i < mb->n_seqs; i++)
            if (mb->seqs[i].pos >= d->slots[mb->seqs[i].slot].n_prompt)
                decode++;
        double fdec = mb->n_tokens ? (double)decode / mb->n_tokens : 0;
        d->st->decode_seconds += dt * fdec;
        d->st->prefill_seconds += dt * (1 - fdec);
        PB_CHECK_GOTO(process(d, mb, &res), st, out);
        if (d->io->tick)
            PB_CHECK_GOTO(d->io->tick(d->io->ctx), st, out);
    }
out:
    pb_mb_result_release(&res);
    return st;
}

pb_status pb_engine_run(const pb_engine_opts *o, pb_pipe *pipe, const pb_tokenizer *tok,
                        const pb_engine_io *io, pb_engine_stats *stats)
{
    memset(stats, 0, sizeof *stats);
    engine dd, *d = &dd;
    memset(d, 0, sizeof *d);
    d->o = o;
    d->io = io;
    d->pipe = pipe;
    d->tok = tok;
    d->st = stats;
    d->t0 = pb_now();
    const pb_mb_limits *lim = pb_pipe_limits(pipe);
    d->n_slots = o->batch_size;
    pb_status st = PB_OK;
    if (o->chunks < 1 || o->chunks > o->batch_size || o->batch_size > lim->n_slots ||
        o->context > lim->max_seq_len || o->chunks > pb_pipe_depth(pipe))
        return pb_error(PB_ERR_INTERNAL, "engine: batch %d, chunks %d do not fit the pipe (%d slots, depth %d)",
                        o->batch_size, o->chunks, lim->n_slots, pb_pipe_depth(pipe));
    d->max_batch_tokens = lim->max_batch_tokens;
    int per_chunk = (o->batch_size + o->chunks - 1) / o->chunks;
    if (d->max_batch_tokens < per_chunk)
        return pb_error(PB_ERR_INTERNAL, "engine: %d tokens per micro-batch cannot hold %d decode steps",
                        d->max_batch_tokens, per_chunk);
    PB_CHECK_GOTO(pb_calloc((size_t)d->n_slots, sizeof *d->slots, &d->slots), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)d->n_slots, sizeof *d->ghost, &d->ghost), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)d->n_slots, sizeof *d->n_ghost, &d->n_ghost), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->mbs, &d->mbs), st, out);
    for (int c = 0; c < o->chunks; c++)
        PB_CHECK_GOTO(pb_mb_init(&d->mbs[c], per_chunk, d->max_batch_tokens), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->fifo, &d->fifo), st, out);
    PB_CHECK_GOTO(pb_calloc((size_t)o->chunks, sizeof *d->in_flight, &d->in_flight), st, out);
    PB_CHECK_GOTO(pb_calloc(BIAS_MAX, sizeof *d->bias, &d->bias), st, out);
    PB_CHECK_GOTO(pb_calloc(BIAS_MAX, sizeof *d->ban, &d->ban), st, out);

    st = loop(d);
    if (st == PB_OK && d->stopping && (!d->input_done || d->has_pend || d->has_bhold || in_flight_records(d) > 0))
        stats->stopped = true;
    stats->ttft_mean = d->ttft_n ? d->ttft_sum / (double)d->ttft_n : 0;
    (void)pb_pipe_stats_get(pipe, &stats->pipe);
out:
    if (d->slots)
        for (int i = 0; i < d->n_slots; i++)
            slot_release(&d->slots[i]);
    slot_release(&d->pend);
    slot_release(&d->bhold);
    free(d->slots);
    for (int i = 0; d->ghost && i < d->n_slots; i++)
        free(d->ghost[i]);
    free(d->ghost);
    free(d->n_ghost);
    if (d->mbs)
        for (int c = 0; c < o->chunks; c++)
            pb_mb_release(&d->mbs[c]);
    free(d->mbs);
    free(d->fifo);
    free(d->in_flight);
    free(d->bias);
    free(d->ban);
    for (int i = 0; i < d->n_guides; i++) {
        pb_guide_free(d->guides[i]->g);
        free(d->guides[i]->regex);
        free(d->guides[i]);
    }
    free(d->guides);
    pb_guide_vocab_free(d->gvocab);
    free(d->maskbuf);
    return st;
}
