/* Beam search's choices (see beam.h). */
#include "config.h"
#include "gen/beam.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define NEG_BIG (-1.0e9f) /* HF's "very large negative value" */

typedef struct cand {
    float score;   /* the running beam's sum plus the token's log probability (f32, as HF's) */
    float lp;      /* the token's */
    float adj;     /* and NEG_BIG where the continuation ends (HF's topk_running_log_probs) */
    int r;         /* the running beam it continues */
    int32_t id;
    int k;         /* its place among the K best */
} cand;

struct pb_beam {
    pb_beam_opts o;
    int32_t *stop;          /* o.stop_ids, owned */
    int B, K, want_max;
    int t;                  /* tokens each running beam has generated */
    int running;            /* 1 at the first step, then B */
    bool done, heur;        /* heur: HF's is_early_stop_heuristic_unsatisfied */
    float *score;           /* [B] the running beams' sums */
    int32_t *hist, *hist2;  /* [B][max_new] their tokens (hist2: the next step's) */
    int *n_in;              /* [B] step inputs: n_in[r] ids and log probabilities from in_id/in_lp[r * want_max] */
    int32_t *in_id;
    float *in_lp;
    float *fscore;          /* [B] finished hypotheses, best first: score (NEG_BIG while empty), */
    bool *fdone, *fstop;    /* whether one is there, whether it ended with a stop id, */
    int32_t *fids;          /* its tokens [B][max_new] and how many */
    int *fn;
    int top;                /* logprobs: pairs a token keeps, 1 + top, in lph (running beams), lph2 (scratch) and
                               flp (finished), [B][max_new][1 + top] each; -1: none (NULL) */
    pb_lp_pair *lph, *lph2, *flp;
    float *mscore;          /* [2B] merge scratch */
    int *mfrom;
    cand *c;                /* [B * want_max] candidates */
};

static bool is_stop(const pb_beam *b, int32_t id)
{
    for (int i = 0; i < b->o.n_stop; i++)
        if (b->stop[i] == id)
            return true;
    return false;
}

pb_status pb_beam_create(const pb_beam_opts *o, int max_logprobs, pb_beam **out)
{
    *out = NULL;
    if (o->beams < 1 || o->beams > PB_BEAM_MAX || o->n_return < 1 || o->n_return > o->beams || o->max_new < 1 || o->n_stop < 0 ||
        o->min_new < 0 || !isfinite(o->length_penalty))
        return pb_error(PB_ERR_INTERNAL, "beam search: %d beams, %d returned, %d tokens", o->beams, o->n_return,
                        o->max_new);
    const int per = 1 + o->n_stop > 2 ? 1 + o->n_stop : 2;
    const long K = (long)per * o->beams, want_k = K + (o->min_new > 0 ? o->n_stop : 0);
    const long want = o->top > want_k ? o->top : want_k;
    if (want > max_logprobs)
        return pb_error(PB_ERR_INPUT, "beam search of %d beams with %d stop ids%s keeps the %ld most likely tokens "
                        "of each beam a step; at most %d", o->beams, o->n_stop, o->min_new > 0 ? " under min_tokens" : "",
                        want, max_logprobs);
    pb_beam *b;
    PB_CHECK(pb_calloc(1, sizeof *b, &b));
    b->o = *o;
    b->B = o->beams;
    b->K = (int)K;
    b->want_max = (int)want;
    b->running = 1;
    b->heur = true;
    b->top = o->top;
    const size_t B = (size_t)b->B, H = B * (size_t)o->max_new;
    pb_status st = PB_OK;
    if (o->top >= 0) {
        const size_t LP = H * (1 + (size_t)o->top);
        if ((st = pb_calloc(LP, sizeof *b->lph, &b->lph)) != PB_OK ||
            (st = pb_calloc(LP, sizeof *b->lph2, &b->lph2)) != PB_OK ||
            (st = pb_calloc(LP, sizeof *b->flp, &b->flp)) != PB_OK) {
            pb_beam_free(b);
            return st;
        }
    }
    if ((o->n_stop && (st = pb_calloc((size_t)o->n_stop, sizeof *b->stop, &b->stop)) != PB_OK) ||
        (st = pb_calloc(B, sizeof *b->score, &b->score)) != PB_OK ||
        (st = pb_calloc(H, sizeof *b->hist, &b->hist)) != PB_OK ||
        (st = pb_calloc(H, sizeof *b->hist2, &b->hist2)) != PB_OK ||
        (st = pb_calloc(B, sizeof *b->n_in, &b->n_in)) != PB_OK ||
        (st = pb_calloc(B * (size_t)want, sizeof *b->in_id, &b->in_id)) != PB_OK ||
        (st = pb_calloc(B * (size_t)want, sizeof *b->in_lp, &b->in_lp)) != PB_OK ||
        (st = pb_calloc(B, sizeof *b->fscore, &b->fscore)) != PB_OK ||
        (st = pb_calloc(B, sizeof *b->fdone, &b->fdone)) != PB_OK ||
        (st = pb_calloc(B, sizeof *b->fstop, &b->fstop)) != PB_OK ||
        (st = pb_calloc(H, sizeof *b->fids, &b->fids)) != PB_OK ||
        (st = pb_calloc(B, sizeof *b->fn, &b->fn)) != PB_OK ||
        (st = pb_calloc(2 * B, sizeof *b->mscore, &b->mscore)) != PB_OK ||
        (st = pb_calloc(2 * B, sizeof *b->mfrom, &b->mfrom)) != PB_OK ||
        (st = pb_calloc(B * (size_t)want, sizeof *b->c, &b->c)) != PB_OK) {
        pb_beam_free(b);
        return st;
    }
    if (o->n_stop)
        memcpy(b->stop, o->stop_ids, (size_t)o->n_stop * sizeof *b->stop);
    b->o.stop_ids = b->stop;
    for (int i = 0; i < b->B; i++) {
        b->fscore[i] = NEG_BIG;
        b->n_in[i] = -1;
    }
    *out = b;
    return PB_OK;
}

void pb_beam_free(pb_beam *b)
{
    if (!b)
        return;
    free(b->stop);
    free(b->score);
    free(b->hist);
    free(b->hist2);
    free(b->n_in);
    free(b->in_id);
    free(b->in_lp);
    free(b->fscore);
    free(b->fdone);
    free(b->fstop);
    free(b->fids);
    free(b->fn);
    free(b->mscore);
    free(b->mfrom);
    free(b->c);
    free(b->lph);
    free(b->lph2);
    free(b->flp);
    free(b);
}

int pb_beam_running(const pb_beam *b) { return b->running; }
int pb_beam_generated(const pb_beam *b) { return b->t; }

int pb_beam_want(const pb_beam *b)
{
    const int k = b->K + (b->t < b->o.min_new ? b->o.n_stop : 0);
    return b->top > k ? b->top : k;
}

/* logprobs: the pairs of hypothesis row r of lp (1 + top a token, max_new tokens) */
static pb_lp_pair *lp_row(const pb_beam *b, pb_lp_pair *lp, int r)
{
    return lp + (size_t)r * (size_t)b->o.max_new * (1 + (size_t)b->top);
}

/* logprobs: row dst of `to` = row r of lph's first t tokens, then x's token and its beam's most likely */
static void lp_extend(const pb_beam *b, pb_lp_pair *to, int dst, const cand *x)
{
    const size_t step = 1 + (size_t)b->top;
    pb_lp_pair *d = lp_row(b, to, dst);
    memcpy(d, lp_row(b, b->lph, x->r), (size_t)b->t * step * sizeof *d);
    pb_lp_pair *e = d + (size_t)b->t * step;
    e[0] = (pb_lp_pair){x->id, x->lp};
    const int32_t *id = b->in_id + (size_t)x->r * (size_t)b->want_max;
    const float *lp = b->in_lp + (size_t)x->r * (size_t)b->want_max;
    for (int k = 0; k < b->top; k++)
        e[1 + k] = (pb_lp_pair){id[k], lp[k]};
}

pb_status pb_beam_put(pb_beam *b, int r, const int32_t *ids, const float *lp, int n)
{
    if (b->done || r < 0 || r >= b->running || n < 1 || n > b->want_max || b->n_in[r] >= 0)
        return pb_error(PB_ERR_INTERNAL, "beam search: result %d of %d ids unexpected", r, n);
    memcpy(b->in_id + (size_t)r * (size_t)b->want_max, ids, (size_t)n * sizeof *ids);
    memcpy(b->in_lp + (size_t)r * (size_t)b->want_max, lp, (size_t)n * sizeof *lp);
    b->n_in[r] = n;
    return PB_OK;
}

/* HF's torch.topk order: the larger first; equal ones by their place in the flattened (beam, id) scores */
static int by_score(const void *pa, const void *pb)
{
    const cand *x = pa, *y = pb;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    if (x->r != y->r)
        return x->r < y->r ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

static int by_adj(const void *pa, const void *pb)
{
    const cand *x = pa, *y = pb;
    if (x->adj != y->adj)
        return x->adj > y->adj ? -1 : 1;
    return (x->k > y->k) - (x->k < y->k);
}

/* The finished hypotheses merged with the candidates of the first B that end (HF's _update_finished_beams): the
 * B best of both, the kept ones first among equals. */
static void update_finished(pb_beam *b, const cand *c, int nk)
{
    const int B = b->B;
    const size_t L = (size_t)b->o.max_new;
    const float den = (float)pow((double)(b->t + 1), (double)b->o.length_penalty);
    int m = 0;
    for (int i = 0; i < B; i++) {
        b->mscore[m] = b->fscore[i];
        b->mfrom[m++] = i;
    }
    int n_new = 0;
    for (int k = 0; k < nk && k < B; k++) {
        if (!(is_stop(b, c[k].id) || b->t + 1 >= b->o.max_new))
            continue;
        b->mscore[m] = c[k].score / den;
        b->mfrom[m++] = B + k;
        n_new++;
    }
    if (!n_new)
        return;
    /* selection of the B best, stable (m <= 2B) */
    int pick[2 * PB_BEAM_MAX];
    bool taken[2 * PB_BEAM_MAX] = {false};
    for (int j = 0; j < B; j++) {
        int best = -1;
        for (int i = 0; i < m; i++)
            if (!taken[i] && (best < 0 || b->mscore[i] > b->mscore[best]))
                best = i;
        taken[best] = true;
        pick[j] = best;
    }
    /* new arrays in place: the kept old ones move, so copy through hist2 as scratch for their tokens */
    float ns[PB_BEAM_MAX];
    bool nd[PB_BEAM_MAX], nst[PB_BEAM_MAX];
    int nn[PB_BEAM_MAX];
    for (int j = 0; j < B; j++) {
        const int f = b->mfrom[pick[j]];
        int32_t *dst = b->hist2 + (size_t)j * L;
        ns[j] = b->mscore[pick[j]];
        if (f < B) {
            nd[j] = b->fdone[f];
            nst[j] = b->fstop[f];
            nn[j] = b->fn[f];
            memcpy(dst, b->fids + (size_t)f * L, (size_t)b->fn[f] * sizeof *dst);
            if (b->top >= 0)
                memcpy(lp_row(b, b->lph2, j), lp_row(b, b->flp, f), (size_t)nn[j] * (1 + (size_t)b->top) *
                       sizeof *b->lph2);
        } else {
            const cand *x = &c[f - B];
            nd[j] = true;
            nst[j] = is_stop(b, x->id);
            nn[j] = b->t + 1;
            memcpy(dst, b->hist + (size_t)x->r * L, (size_t)b->t * sizeof *dst);
            dst[b->t] = x->id;
            if (b->top >= 0)
                lp_extend(b, b->lph2, j, x);
        }
    }
    for (int j = 0; j < B; j++) {
        b->fscore[j] = ns[j];
        b->fdone[j] = nd[j];
        b->fstop[j] = nst[j];
        b->fn[j] = nn[j];
        memcpy(b->fids + (size_t)j * L, b->hist2 + (size_t)j * L, (size_t)nn[j] * sizeof *b->fids);
        if (b->top >= 0)
            memcpy(lp_row(b, b->flp, j), lp_row(b, b->lph2, j), (size_t)nn[j] * (1 + (size_t)b->top) *
                   sizeof *b->flp);
    }
}

pb_status pb_beam_step(pb_beam *b, bool *done, int *parent, int32_t *token)
{
    *done = b->done;
    if (b->done)
        return PB_OK;
    for (int r = 0; r < b->running; r++)
        if (b->n_in[r] < 0)
            return pb_error(PB_ERR_INTERNAL, "beam search: step without beam %d's result", r);
    const int B = b->B, K = b->K;
    const size_t L = (size_t)b->o.max_new;
    const bool banned = b->t < b->o.min_new;
    /* every running beam's K best continuations (HF's -inf for stop ids under min_tokens: skipped) */
    int nc = 0;
    for (int r = 0; r < b->running; r++) {
        const int32_t *id = b->in_id + (size_t)r * (size_t)b->want_max;
        const float *lp = b->in_lp + (size_t)r * (size_t)b->want_max;
        for (int k = 0, taken = 0; k < b->n_in[r] && taken < K; k++) {
            if (banned && is_stop(b, id[k]))
                continue;
            b->c[nc++] = (cand){.score = b->score[r] + lp[k], .lp = lp[k], .r = r, .id = id[k]};
            taken++;
        }
        b->n_in[r] = -1;
    }
    qsort(b->c, (size_t)nc, sizeof *b->c, by_score);
    const int nk = nc < K ? nc : K;
    if (nk < B)
        return pb_error(PB_ERR_INTERNAL, "beam search: %d continuations for %d beams", nk, B);
    bool all_end = true;
    for (int k = 0; k < nk; k++) {
        const bool end = is_stop(b, b->c[k].id) || b->t + 1 >= b->o.max_new;
        b->c[k].adj = b->c[k].score + (end ? NEG_BIG : 0.0f);
        b->c[k].k = k;
        all_end = all_end && end;
    }
    update_finished(b, b->c, nk);
    /* the B best that go on (by adj, stable), from the K best */
    qsort(b->c, (size_t)nk, sizeof *b->c, by_adj);
    const cand *next = b->c;
    b->t++;
    /* HF's _check_early_stop_heuristic */
    const int best_len = b->o.early == PB_BEAM_EARLY_NEVER && b->o.length_penalty > 0.0f ? b->o.max_new : b->t;
    const float best = next[0].adj / (float)pow((double)best_len, (double)b->o.length_penalty);
    float worst_all = b->fscore[0];
    bool all_fin = true;
    for (int i = 0; i < B; i++) {
        worst_all = b->fscore[i] < worst_all ? b->fscore[i] : worst_all;
        all_fin = all_fin && b->fdone[i];
    }
    bool improve = false;
    for (int i = 0; i < B && !improve; i++)
        improve = best > (b->fdone[i] ? worst_all : NEG_BIG);
    b->heur = b->heur && improve;
    b->done = !b->heur || (all_fin && b->o.early == PB_BEAM_EARLY_TRUE) || all_end;
    *done = b->done;
    if (b->done)
        return PB_OK;
    b->t--; /* lp_extend's count: the tokens before this step's */
    for (int j = 0; j < B; j++) {
        memcpy(b->hist2 + (size_t)j * L, b->hist + (size_t)next[j].r * L, (size_t)b->t * sizeof *b->hist);
        b->hist2[(size_t)j * L + (size_t)b->t] = next[j].id;
        if (b->top >= 0)
            lp_extend(b, b->lph2, j, &next[j]);
        b->score[j] = next[j].adj;
        parent[j] = next[j].r;
        token[j] = next[j].id;
    }
    b->t++;
    int32_t *h = b->hist;
    b->hist = b->hist2;
    b->hist2 = h;
    pb_lp_pair *l = b->lph;
    b->lph = b->lph2;
    b->lph2 = l;
    b->running = B;
    return PB_OK;
}

int pb_beam_results(const pb_beam *b)
{
    int n = 0;
    while (b->done && n < b->o.n_return && b->fdone[n])
        n++;
    return n;
}

const int32_t *pb_beam_result(const pb_beam *b, int i, int *n, bool *stopped)
{
    *n = b->fn[i];
    *stopped = b->fstop[i];
    return b->fids + (size_t)i * (size_t)b->o.max_new;
}

const pb_lp_pair *pb_beam_result_lp(const pb_beam *b, int i)
{
    return b->top >= 0 ? lp_row(b, b->flp, i) : NULL;
}
