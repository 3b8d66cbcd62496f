/* The pipeline on a real (test) checkpoint, run alone (local pipe) and under
 * mpirun/srun (one stage per rank) by pipeline.sh, which compares the token
 * ids: they must be identical whatever the number of ranks and chunks.
 *   pipe_test MODEL OUT [--chunks C] [--points a,b,..] [--threshold SIZE] [--balanced] [--die R] [--nccl]
 * --nccl: the stages (still on the CPU) talk through the NCCL transport, each
 * rank on GPU local rank % visible GPUs (tests/net/nccl.sh, on GPU machines).
 * Eight sequences (even: greedy, odd: sampled with a fixed seed) in C
 * micro-batches that keep cycling: prefill, then 12 decode steps each. */
#include "config.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/stage.h"
#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "ckpt/weights.h"
#include "common/util.h"
#include "cuda/cuda.h"
#include "gen/pipe.h"
#include "model/config.h"
#include "net/bootstrap.h"
#include "net/pipeline.h"
#include "net/transport.h"

#define NSEQ 8
#define STEPS 12
#define MAX_PROMPT 12

typedef struct seq {
    int32_t prompt[MAX_PROMPT];
    int prompt_len;
    int32_t gen[STEPS + 1];
    int n_gen;
} seq;

static pb_status build_mb(pb_microbatch *mb, seq *s, int group, int chunks, int vocab)
{
    pb_mb_clear(mb);
    mb->tag = (uint64_t)group * 1000 + (uint64_t)s[group].n_gen;
    for (int i = group; i < NSEQ; i += chunks) {
        seq *q = &s[i];
        if (q->n_gen >= STEPS)
            continue;
        pb_mb_seq d = {.slot = i, .flags = PB_SEQ_SAMPLE};
        d.sample = pb_sample_params_default();
        if (i % 2) {
            d.sample.temperature = 0.8f;
            d.sample.top_k = 20;
            d.sample.repetition_penalty = 1.1f;
        }
        if (i % 4 == 3) {
            d.sample.top_p = 0.9f;
            d.sample.min_p = 0.02f;
        }
        d.key = (pb_rng_key){.seed = 1234, .record = (uint64_t)i, .step = (uint64_t)q->n_gen};
        if (q->n_gen == 0) {
            d.flags |= PB_SEQ_NEW;
            d.pos = 0;
            d.n_tokens = q->prompt_len;
            PB_CHECK(pb_mb_add(mb, &d, q->prompt));
        } else {
            d.pos = q->prompt_len + q->n_gen - 1;
            d.n_tokens = 1;
            PB_CHECK(pb_mb_add(mb, &d, &q->gen[q->n_gen - 1]));
        }
    }
    (void)vocab;
    return PB_OK;
}

static pb_status drive(pb_pipe *p, int chunks, int vocab, FILE *out)
{
    seq s[NSEQ];
    memset(s, 0, sizeof s);
    for (int i = 0; i < NSEQ; i++) {
        s[i].prompt_len = 3 + (i * 5) % 9;
        for (int k = 0; k < s[i].prompt_len; k++)
            s[i].prompt[k] = (int32_t)((i * 7 + k * 13 + 2) % vocab);
    }
    pb_microbatch mb = {0};
    pb_mb_result res = {0};
    pb_status st;
    PB_CHECK_GOTO(pb_mb_init(&mb, NSEQ, NSEQ * MAX_PROMPT), st, out);
    PB_CHECK_GOTO(pb_mb_result_init(&res, NSEQ), st, out);
    for (int g = 0; g < chunks; g++) {
        PB_CHECK_GOTO(build_mb(&mb, s, g, chunks, vocab), st, out);
        PB_CHECK_GOTO(pb_pipe_submit(p, &mb), st, out);
    }
    while (pb_pipe_in_flight(p) > 0) {
        PB_CHECK_GOTO(pb_pipe_wait(p, &res), st, out);
        int g = (int)(res.tag / 1000), k = 0;
        for (int i = g; i < NSEQ; i += chunks) {
            if (k >= res.n_seqs || res.tokens[k] < 0) {
                st = pb_error(PB_ERR_INTERNAL, "result of group %d lacks sequence %d", g, i);
                goto out;
            }
            s[i].gen[s[i].n_gen++] = res.tokens[k++];
        }
        if (s[g].n_gen < STEPS) {
            PB_CHECK_GOTO(build_mb(&mb, s, g, chunks, vocab), st, out);
            PB_CHECK_GOTO(pb_pipe_submit(p, &mb), st, out);
        }
    }
    for (int i = 0; i < NSEQ; i++) {
        fprintf(out, "seq %d:", i);
        for (int k = 0; k < s[i].n_gen; k++) fprintf(out, " %d", (int)s[i].gen[k]);
        fprintf(out, "\n");
    }
    st = PB_OK;
out:
    pb_mb_release(&mb);
    pb_mb_result_release(&res);
    return st;
}

/* --sample-op: the CPU backend with a sample op (pb_backend_ops.sample) that
 * runs pb_sample on its rows in host memory, so that the slot sampler and
 * the stage take the path of a backend that samples on its device (the
 * rows' settings, keys, histories and masks, the head's row chunks): the
 * ids must be those of the host path */
static pb_backend_ops sample_ops;

static pb_status host_sample_op(pb_backend *be, const float *x, int rows, int n, int ld, const pb_sample_row *row,
                                const int32_t *mask_ids, int n_mask, int32_t *ids)
{
    (void)be;
    void *scratch = malloc(pb_sample_scratch_bytes(n));
    float *m = malloc((size_t)n * sizeof(float));
    if (!scratch || !m) {
        free(scratch), free(m);
        return pb_error(PB_ERR_NOMEM, "sample op: out of memory");
    }
    for (int r = 0; r < rows; r++) {
        const pb_sample_row *q = &row[r];
        memcpy(m, x + (size_t)r * ld, (size_t)n * sizeof(float));
        for (int e = 0; q->masked && e < n_mask; e++)
            m[mask_ids[e]] = -INFINITY;
        const pb_sample_params sp = {.temperature = q->temperature, .top_k = q->top_k, .top_p = q->top_p,
                                     .min_p = q->min_p, .repetition_penalty = q->repetition_penalty};
        const pb_rng_key key = {q->seed, q->record, q->step};
        ids[r] = pb_sample(m, n, &sp, q->hist, (size_t)q->n_hist, &key, scratch);
    }
    free(scratch), free(m);
    return PB_OK;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: pipe_test MODEL OUT [--chunks C] [--points a,b] [--threshold SIZE] [--balanced] "
                        "[--die R] [--nccl] [--sample-op]\n");
        return 2;
    }
    const char *model = argv[1], *out_path = argv[2];
    int chunks = 2, die = -1;
    int points[16], n_points = 0;
    uint64_t threshold = 0;
    bool balanced = false, nccl = false, sample_op = false;
    for (int i = 3; i < argc; i++) {
        if (!strcmp(argv[i], "--chunks") && i + 1 < argc) chunks = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--nccl")) nccl = true;
        else if (!strcmp(argv[i], "--balanced")) balanced = true;
        else if (!strcmp(argv[i], "--sample-op")) sample_op = true;
        else if (!strcmp(argv[i], "--die") && i + 1 < argc) die = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threshold") && i + 1 < argc) {
            if (pb_parse_size(argv[++i], &threshold) != PB_OK) return 2;
        } else if (!strcmp(argv[i], "--points") && i + 1 < argc) {
            for (char *p = argv[++i]; *p && n_points < 16;) {
                points[n_points++] = (int)strtol(p, &p, 10);
                if (*p == ',') p++;
            }
        } else { fprintf(stderr, "pipe_test: bad argument %s\n", argv[i]); return 2; }
    }
    if (chunks < 1 || chunks > NSEQ) return 2;

    pb_bootstrap *b = NULL;
    pb_model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_weights *w = NULL;
    pb_stage *stage = NULL;
    pb_backend *be = NULL;
    pb_transport *t = NULL;
    pb_pipe *pipe = NULL;
    pb_net_pipe *np = NULL;
    FILE *out = NULL;
    int rc = 1;
    pb_status st = pb_bootstrap_init(&b);
    if (st != PB_OK) {
        fprintf(stderr, "pipe_test: %s\n", pb_last_error());
        return 1;
    }
    int rank = pb_bootstrap_rank(b), world = pb_bootstrap_size(b);
    PB_CHECK_GOTO(pb_model_config_load(model, &cfg), st, fail);
    PB_CHECK_GOTO(pb_ckpt_open(model, NULL, &cfg, &ck), st, fail);
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = world,
                          .batch_size = NSEQ, .max_seq_len = 64};
    if (n_points) {
        spec.policy = PB_SPLIT_POLICY_POINTS;
        spec.points = points;
        spec.n_points = n_points;
    } else if (threshold) {
        spec.policy = PB_SPLIT_POLICY_THRESHOLD;
        spec.threshold = threshold;
    } else if (balanced) {
        spec.policy = PB_SPLIT_POLICY_BALANCED;
    }
    PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &spec, &plan), st, fail);
    const pb_stage_plan *sp = &plan->stages[rank];
    PB_CHECK_GOTO(pb_weights_load(ck, sp, &w), st, fail);
    pb_stage_opts so = {.n_slots = NSEQ, .max_seq_len = 64, .max_batch_tokens = NSEQ * MAX_PROMPT,
                        .threads = 1};
    pb_backend_opts bo = {.threads = 1};
    PB_CHECK_GOTO(pb_backend_create("cpu", &bo, &be), st, fail);
    if (sample_op) {
        sample_ops = *be->ops;
        sample_ops.sample = host_sample_op;
        be->ops = &sample_ops;
    }
    PB_CHECK_GOTO(pb_stage_create(&cfg, sp, w, be, &so, &stage), st, fail);
    pb_weights_free(w);
    w = NULL;
    pb_mb_limits lim = {.n_slots = NSEQ, .max_seq_len = 64, .max_batch_tokens = NSEQ * MAX_PROMPT,
                        .vocab = cfg.vocab_size};
    if (world == 1) {
        PB_CHECK_GOTO(pb_pipe_local_create(stage, &lim, chunks, &pipe), st, fail);
    } else {
        int lb[64], le[64];
        for (int i = 0; i < plan->n_stages && i < 64; i++) {
            lb[i] = plan->stages[i].layer_begin;
            le[i] = plan->stages[i].layer_end;
        }
        pb_pipeline_cfg pc = {.hidden = cfg.hidden_size, .lim = lim,
                              .plan_hash = pb_pipeline_plan_hash(plan->n_stages, lb, le),
                              .plan_mem = sp->mem_total};
        pb_tcp_opts to = {.max_msg_bytes = 64u << 20, .timeout_s = 60};
        if (nccl) {
            int ndev = pb_cuda_device_count(NULL);
            pb_nccl_opts no = {.ctl = to};
            PB_CHECK_GOTO(pb_transport_nccl_create(b, pb_bootstrap_local_rank(b) % (ndev > 0 ? ndev : 1),
                                                   &no, &t), st, fail);
        } else {
            PB_CHECK_GOTO(pb_transport_tcp_create(b, &to, &t), st, fail);
        }
        if (rank == die) {
            fflush(NULL);
            raise(SIGKILL);
        }
        if (rank > 0) {
            PB_CHECK_GOTO(pb_pipeline_run_worker(t, stage, &pc, sp->has_head), st, fail);
            rc = 0;
            goto done;
        }
        PB_CHECK_GOTO(pb_net_pipe_create(t, stage, &pc, chunks, &pipe, &np), st, fail);
    }
    out = fopen(out_path, "w");
    if (!out) {
        st = pb_error(PB_ERR_IO, "%s: cannot write", out_path);
        goto fail;
    }
    PB_CHECK_GOTO(drive(pipe, chunks, cfg.vocab_size, out), st, fail);
    if (np) {
        pb_pipeline_report rep;
        char *json = NULL;
        PB_CHECK_GOTO(pb_net_pipe_report(np, &rep), st, fail);
        pb_pipeline_report_print(&rep, stderr);
        PB_CHECK_GOTO(pb_pipeline_report_json(&rep, &json), st, fail);
        fprintf(stderr, "report: %s\n", json);
        free(json);
        uint64_t mbs = 0;
        for (int i = 0; i < rep.n_stages; i++)
            if (rep.stage[i].microbatches != rep.microbatches || rep.stage[i].bytes_sent == 0 ||
                rep.stage[i].peak_rss_bytes == 0)
                mbs++;
        if (rep.n_stages != world || mbs || rep.microbatches != (uint64_t)chunks * (STEPS)) {
            st = pb_error(PB_ERR_INTERNAL, "pipeline report is inconsistent");
            goto fail;
        }
    }
    rc = 0;
    goto done;
fail:
    fprintf(stderr, "pipe_test: rank %d: %s\n", rank, pb_last_error());
    pb_bootstrap_abort(b, st, pb_last_error());
done:
    if (out && fclose(out) != 0)
        rc = 1;
    pb_pipe_free(pipe);
    pb_transport_free(t);
    pb_stage_free(stage);
    pb_backend_free(be);
    pb_weights_free(w);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    pb_bootstrap_free(b);
    return rc;
}
