/* The pipe for world size 1: one stage holding every layer, embeddings and
 * head; each micro-batch is forwarded and sampled in this process, in order. */
#include "config.h"
#include "gen/pipe.h"

#include <stdlib.h>
#include <string.h>

#include "backend/stage.h"
#include "common/util.h"

typedef struct local_pipe {
    pb_stage *stage;
    pb_mb_limits lim;
    pb_slot_sampler *sampler;
    int depth;
    pb_mb_result *results; /* ring of depth results */
    int head, count;
    pb_mb_batch batch;      /* the batch description for the stage */
    float *logits;          /* [n_slots, vocab] */
    double busy, t_first, t_last; /* compute time; first submit to last result */
} local_pipe;

static pb_status local_submit(void *self, const pb_microbatch *mb)
{
    local_pipe *lp = self;
    if (lp->count >= lp->depth)
        return pb_error(PB_ERR_INTERNAL, "local pipe: full");
    double t = pb_now();
    if (lp->t_first == 0)
        lp->t_first = t;
    pb_seq_batch b = pb_mb_batch_of(&lp->batch, mb);
    pb_mb_result *r = &lp->results[(lp->head + lp->count) % lp->depth];
    PB_CHECK(pb_slot_sampler_stage(lp->sampler, lp->stage, &b, mb->tokens, mb, lp->logits, r));
    lp->count++;
    lp->t_last = pb_now();
    lp->busy += lp->t_last - t;
    return PB_OK;
}

static pb_status local_wait(void *self, pb_mb_result *res)
{
    local_pipe *lp = self;
    if (lp->count == 0)
        return pb_error(PB_ERR_INTERNAL, "local pipe: nothing in flight");
    pb_mb_result *r = &lp->results[lp->head];
    PB_CHECK(pb_mb_result_copy(res, r));
    lp->head = (lp->head + 1) % lp->depth;
    lp->count--;
    return PB_OK;
}

static pb_status local_stats(void *self, pb_pipe_stats *out)
{
    local_pipe *lp = self;
    out->n_stages = 1;
    out->busy_seconds[0] = lp->busy;
    out->wall_seconds = lp->t_last - lp->t_first;
    return PB_OK;
}

static void local_destroy(void *self)
{
    local_pipe *lp = self;
    if (!lp)
        return;
    if (lp->results)
        for (int i = 0; i < lp->depth; i++)
            pb_mb_result_release(&lp->results[i]);
    free(lp->results);
    pb_slot_sampler_free(lp->sampler);
    pb_mb_batch_free(&lp->batch);
    free(lp->logits);
    free(lp);
}

static const pb_pipe_ops local_ops = {
    .name = "local",
    .submit = local_submit,
    .wait = local_wait,
    .stats = local_stats,
    .destroy = local_destroy,
};

pb_status pb_pipe_local_create(pb_stage *stage, const pb_mb_limits *lim, int depth, pb_pipe **out)
{
    *out = NULL;
    pb_status st;
    local_pipe *lp = NULL;
    if (depth < 1 || lim->n_slots < 1 || lim->vocab < 1)
        return pb_error(PB_ERR_INTERNAL, "local pipe: bad depth or limits");
    if (pb_stage_vocab_size(stage) != lim->vocab)
        return pb_error(PB_ERR_INTERNAL, "local pipe: stage vocabulary %d, limits say %d",
                        pb_stage_vocab_size(stage), lim->vocab);
    PB_CHECK(pb_calloc(1, sizeof *lp, &lp));
    lp->stage = stage;
    lp->lim = *lim;
    lp->depth = depth;
    size_t n_logits;
    if (!pb_mul_ok((size_t)lim->n_slots, (size_t)lim->vocab, &n_logits)) {
        st = pb_error(PB_ERR_NOMEM, "local pipe: logits buffer overflows");
        goto fail;
    }
    PB_CHECK_GOTO(pb_calloc((size_t)depth, sizeof *lp->results, &lp->results), st, fail);
    for (int i = 0; i < depth; i++)
        PB_CHECK_GOTO(pb_mb_result_init(&lp->results[i], lim->n_slots), st, fail);
    PB_CHECK_GOTO(pb_slot_sampler_create(lim->n_slots, lim->max_seq_len, lim->vocab, &lp->sampler),
                  st, fail);
    PB_CHECK_GOTO(pb_slot_sampler_set_eos(lp->sampler, lim->eos_ids, lim->n_eos), st, fail);
    PB_CHECK_GOTO(pb_mb_batch_init(&lp->batch, lim->n_slots), st, fail);
    PB_CHECK_GOTO(pb_calloc(n_logits, sizeof(float), &lp->logits), st, fail);
    return pb_pipe_create(&local_ops, lp, depth, lim, out);
fail:
    local_destroy(lp);
    return st;
}
