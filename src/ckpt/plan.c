/* Split planner. equal_size costs are stored parameter bytes per decoder
 * layer, with the embeddings added to the first stage and the final norm +
 * head (and a tied embedding) to the last, all known from the index or single
 * header; balanced costs are multiply-adds per token (see plan.h). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"
#include "ckpt/plan.h"
#include "common/util.h"

void pb_plan_free(pb_plan *plan)
{
    if (!plan)
        return;
    for (int s = 0; s < plan->n_stages; s++) {
        for (int f = 0; f < plan->stages[s].n_files; f++)
            free(plan->stages[s].files[f].path);
        free(plan->stages[s].files);
    }
    free(plan->stages);
    free(plan);
}

/* Bytes of stage [b, e) given per-layer costs and the first/last extras. */
static uint64_t stage_cost(const uint64_t *prefix, int b, int e, int L, uint64_t embed, uint64_t head)
{
    uint64_t c = prefix[e] - prefix[b];
    if (b == 0)
        c += embed;
    if (e == L)
        c += head;
    return c;
}

/* equal_size and balanced: contiguous split into exactly n stages minimising
 * the largest stage cost (ties: the earliest cut), by dynamic programming over
 * cut points. */
static pb_status split_minmax(const uint64_t *prefix, int L, uint64_t embed, uint64_t head, int n, int *begin)
{
    pb_status st = PB_OK;
    uint64_t *best = NULL;
    int *from = NULL;
    size_t cells;
    if (!pb_mul_ok((size_t)(n + 1), (size_t)(L + 1), &cells))
        return pb_error(PB_ERR_NOMEM, "plan too large");
    PB_CHECK_GOTO(pb_calloc(cells, sizeof *best, &best), st, out);
    PB_CHECK_GOTO(pb_calloc(cells, sizeof *from, &from), st, out);
#define AT(k, j) ((size_t)(k) * (size_t)(L + 1) + (size_t)(j))
    for (size_t i = 0; i < cells; i++)
        best[i] = UINT64_MAX;
    best[AT(0, 0)] = 0;
    for (int k = 1; k <= n; k++)
        for (int j = k; j <= L - (n - k); j++)
            for (int i = k - 1; i < j; i++) {
                if (best[AT(k - 1, i)] == UINT64_MAX)
                    continue;
                uint64_t c = stage_cost(prefix, i, j, L, embed, head);
                uint64_t m = c > best[AT(k - 1, i)] ? c : best[AT(k - 1, i)];
                if (m < best[AT(k, j)]) {
                    best[AT(k, j)] = m;
                    from[AT(k, j)] = i;
                }
            }
    int j = L;
    for (int k = n; k >= 1; k--) {
        begin[k - 1] = from[AT(k, j)];
        j = begin[k - 1];
    }
#undef AT
out:
    free(best);
    free(from);
    return st;
}

pb_status pb_plan_make(const pb_ckpt *ck, const pb_model_config *cfg, const pb_split_spec *spec, pb_plan **out)
{
    pb_status st = PB_OK;
    pb_plan *plan = NULL;
    uint64_t *prefix = NULL, *cprefix = NULL;
    int *begin = NULL;
    uint64_t *fbytes = NULL;
    const int L = cfg->n_layers;
    int n = spec->n_stages;
    *out = NULL;

    if (n < 1)
        return pb_error(PB_ERR_USAGE, "the number of stages must be at least 1");
    if (spec->batch_size < 1 || spec->max_seq_len < 0)
        return pb_error(PB_ERR_USAGE, "batch size must be >= 1 and max sequence length >= 0");
    if (spec->policy != PB_SPLIT_POLICY_THRESHOLD && n > L)
        return pb_error(PB_ERR_USAGE, "cannot split %d decoder layers into %d stages: use at most %d ranks", L, n, L);

    PB_CHECK_GOTO(pb_calloc((size_t)L + 1, sizeof *prefix, &prefix), st, fail);
    uint64_t embed = 0, head = 0;
    for (int i = 0; i < ck->n_tensors; i++) {
        const pb_ckpt_tensor *t = &ck->t[i];
        if (t->role == PB_ROLE_LAYER)
            prefix[t->layer + 1] += t->nbytes;
        else if (t->role == PB_ROLE_EMBED)
            embed += t->nbytes;
        else
            head += t->nbytes;
        if (t->tied_embed)
            head += t->nbytes;
    }
    for (int l = 0; l < L; l++)
        prefix[l + 1] += prefix[l];

    /* compute per token (multiply-adds), as documented in plan.h */
    PB_CHECK_GOTO(pb_calloc((size_t)L + 1, sizeof *cprefix, &cprefix), st, fail);
    uint64_t cembed = 0, chead = 0;
    for (int i = 0; i < ck->n_tensors; i++) {
        const pb_ckpt_tensor *t = &ck->t[i];
        if (t->role == PB_ROLE_LAYER && cfg->n_experts > 0 && strstr(t->canon, ".experts."))
            /* a token runs num_experts_per_tok of the layer's experts */
            cprefix[t->layer + 1] += t->numel * (uint64_t)cfg->n_experts_per_tok / (uint64_t)cfg->n_experts;
        else if (t->role == PB_ROLE_LAYER)
            cprefix[t->layer + 1] += t->numel;
        else if (t->role == PB_ROLE_HEAD)
            chead += t->numel;
        else if (t->ndim == 2 && strcmp(t->canon, "project_in.weight") != 0)
            cembed += (uint64_t)t->shape[1]; /* a lookup: one row per token */
        else
            cembed += t->numel;
        if (t->tied_embed)
            chead += t->numel;               /* the tied head is a full GEMV */
    }
    uint64_t ctx = PB_PLAN_BALANCE_CONTEXT;
    int64_t seq = spec->max_seq_len ? spec->max_seq_len : cfg->max_position;
    if (seq > 0 && (uint64_t)seq < ctx)
        ctx = (uint64_t)seq;
    for (int l = 0; l < L; l++) {
        uint64_t c = ctx;
        if (cfg->layer_local && cfg->layer_local[l] && cfg->sliding_window > 0 &&
            (uint64_t)cfg->sliding_window < c)
            c = (uint64_t)cfg->sliding_window;
        cprefix[l + 1] += 2 * (uint64_t)cfg->n_heads * (uint64_t)cfg->head_dim * c;
    }
    for (int l = 0; l < L; l++)
        cprefix[l + 1] += cprefix[l];

    PB_CHECK_GOTO(pb_calloc((size_t)L + 1, sizeof *begin, &begin), st, fail);
    switch (spec->policy) {
    case PB_SPLIT_POLICY_EQUAL_SIZE:
        PB_CHECK_GOTO(split_minmax(prefix, L, embed, head, n, begin), st, fail);
        break;
    case PB_SPLIT_POLICY_BALANCED:
        PB_CHECK_GOTO(split_minmax(cprefix, L, cembed, chead, n, begin), st, fail);
        break;
    case PB_SPLIT_POLICY_THRESHOLD: {
        /* greedy: cut before a layer that would push the current stage past the threshold */
        int k = 0;
        begin[k++] = 0;
        for (int l = 1; l < L; l++) {
            uint64_t with = stage_cost(prefix, begin[k - 1], l + 1, L, embed, head);
            if (with > spec->threshold)
                begin[k++] = l;
        }
        if (k != n) {
            st = pb_error(PB_ERR_USAGE,
                          "threshold:%llu splits the %d layers into %d stage%s, but %d rank%s %s planned: launch %d "
                          "rank%s (or use --ranks %d for plan)",
                          (unsigned long long)spec->threshold, L, k, k == 1 ? "" : "s", n, n == 1 ? "" : "s",
                          n == 1 ? "is" : "are", k, k == 1 ? "" : "s", k);
            goto fail;
        }
        break;
    }
    case PB_SPLIT_POLICY_POINTS:
        if (spec->n_points != n - 1) {
            st = pb_error(PB_ERR_USAGE, "--split-points gives %d split point%s (%d stages) but %d rank%s %s planned",
                          spec->n_points, spec->n_points == 1 ? "" : "s", spec->n_points + 1, n, n == 1 ? "" : "s",
                          n == 1 ? "is" : "are");
            goto fail;
        }
        begin[0] = 0;
        for (int i = 0; i < spec->n_points; i++) {
            int p = spec->points[i];
            if (p <= (i ? spec->points[i - 1] : 0) || p >= L) {
                st = pb_error(PB_ERR_USAGE, "--split-points: %d must be increasing layer numbers in 1..%d", p, L - 1);
                goto fail;
            }
            begin[i + 1] = p;
        }
        break;
    }

    PB_CHECK_GOTO(pb_calloc(1, sizeof *plan, &plan), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)n, sizeof *plan->stages, &plan->stages), st, fail);
    plan->n_stages = n;
    plan->n_layers = L;
    plan->batch_size = spec->batch_size;
    plan->max_seq_len = spec->max_seq_len ? spec->max_seq_len : cfg->max_position;
    plan->total_param_bytes = ck->total_bytes;
    PB_CHECK_GOTO(pb_calloc((size_t)ck->n_files, sizeof *fbytes, &fbytes), st, fail);
    for (int s = 0; s < n; s++) {
        pb_stage_plan *sp = &plan->stages[s];
        sp->stage = s;
        sp->layer_begin = begin[s];
        sp->layer_end = s + 1 < n ? begin[s + 1] : L;
        sp->has_embed = s == 0;
        sp->has_head = s == n - 1;
        sp->compute = stage_cost(cprefix, sp->layer_begin, sp->layer_end, L, cembed, chead);
        plan->total_compute += sp->compute;
        memset(fbytes, 0, (size_t)ck->n_files * sizeof *fbytes);
        for (int i = 0; i < ck->n_tensors; i++) {
            const pb_ckpt_tensor *t = &ck->t[i];
            if (!pb_ckpt_tensor_in_stage(t, sp->layer_begin, sp->layer_end, sp->has_embed, sp->has_head))
                continue;
            sp->n_tensors++;
            sp->param_bytes += t->nbytes;
            fbytes[t->file] += t->nbytes;
        }
        /* files the stage opens: every file holding one of its tensors */
        int nf = 0;
        bool *need = NULL;
        PB_CHECK_GOTO(pb_calloc((size_t)ck->n_files, sizeof *need, &need), st, fail);
        for (int i = 0; i < ck->n_tensors; i++)
            if (pb_ckpt_tensor_in_stage(&ck->t[i], sp->layer_begin, sp->layer_end, sp->has_embed, sp->has_head))
                need[ck->t[i].file] = true;
        for (int f = 0; f < ck->n_files; f++)
            nf += need[f];
        st = pb_calloc((size_t)nf, sizeof *sp->files, &sp->files);
        if (st != PB_OK) {
            free(need);
            goto fail;
        }
        for (int f = 0; f < ck->n_files; f++) {
            if (!need[f])
                continue;
            pb_plan_file *pf = &sp->files[sp->n_files];
            pf->path = pb_strdup(ck->files[f]);
            if (!pf->path) {
                free(need);
                st = pb_error(PB_ERR_NOMEM, "out of memory");
                goto fail;
            }
            pf->file_index = f;
            pf->bytes = fbytes[f];
            sp->n_files++;
        }
        free(need);
    }
    free(prefix);
    free(cprefix);
    free(begin);
    free(fbytes);
    *out = plan;
    return PB_OK;
fail:
    free(prefix);
    free(cprefix);
    free(begin);
    free(fbytes);
    pb_plan_free(plan);
    return st;
}
