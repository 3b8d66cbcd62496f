/* The pipeline across ranks: one stage per rank, micro-batches streamed from
 * rank 0 through every stage over the transport ring, sampled token ids
 * returned from the last stage to rank 0.
 *
 *   rank 0:    pb_net_pipe_create() gives the driver a pb_pipe (gen/pipe.h):
 *              submit() runs stage 0 on the micro-batch and sends its hidden
 *              states on (the send is queued: rank 0 goes back to the driver
 *              while the other stages compute); wait() receives the oldest
 *              result from the last rank. With --chunks C micro-batches in
 *              flight the pipe fills once at the start and drains once at the
 *              end; in between every stage always has work queued.
 *   ranks > 0: pb_pipeline_run_worker() loops: receive a micro-batch from the
 *              previous rank, forward, send it on; the last stage samples
 *              (pb_slot_sampler: settings and RNG keys travel with the
 *              micro-batch) and returns the ids to rank 0. It returns when rank
 *              0 closes the pipe.
 *
 * Messages (transport types), all validated before use:
 *   HELLO   rank 0 -> ring -> rank 0: world, hidden size, limits, plan hash;
 *           every rank checks they equal its own (same options, same split).
 *   MB      u64 n = packed micro-batch size, the micro-batch (pb_mb_pack),
 *           f32 hidden states [n_tokens, hidden].
 *   RESULT  last rank -> rank 0: pb_mb_result_pack.
 *   STATS   rank 0 -> ring -> rank 0: each stage appends its metrics.
 *   END     rank 0 -> ring -> rank 0: every worker forwards it and returns.
 * Any failure (a bad message, a peer that died) is returned as PB_ERR_NET
 * naming the rank; the caller then aborts the job (pb_bootstrap_abort). */
#ifndef PB_NET_PIPELINE_H
#define PB_NET_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "common/status.h"
#include "gen/pipe.h"
#include "net/transport.h"

typedef struct pb_stage pb_stage;

/* What every rank must agree on. */
typedef struct pb_pipeline_cfg {
    int hidden;          /* hidden size carried between stages */
    pb_mb_limits lim;    /* as given to the stages (n_slots, max_seq_len, max_batch_tokens, vocab) */
    uint64_t plan_hash;  /* pb_pipeline_plan_hash() of the split (layer ranges) */
    uint64_t plan_mem;   /* this rank's stage memory estimate (plan mem_total), for the report */
} pb_pipeline_cfg;

/* Hash of the stages' layer ranges, so ranks that planned differently refuse. */
uint64_t pb_pipeline_plan_hash(int n_stages, const int *layer_begin, const int *layer_end);

/* One stage's measurements. */
typedef struct pb_stage_metrics {
    int32_t rank;
    uint64_t microbatches;
    double busy_seconds;      /* computing (forward, sampling on the last stage) */
    double recv_wait_seconds; /* blocked waiting for input (rank 0: for results) */
    double send_wait_seconds; /* blocked on a full send queue */
    double wall_seconds;      /* from the first micro-batch to the report */
    uint64_t bytes_sent, bytes_recv;
    uint64_t peak_rss_bytes;  /* this process's peak resident set */
    uint64_t plan_mem_bytes;  /* the planner's estimate for this stage */
} pb_stage_metrics;

typedef struct pb_pipeline_report {
    int n_stages;
    pb_stage_metrics stage[PB_PIPE_MAX_STAGES];
    uint64_t microbatches;     /* sent through the pipe */
    int chunks;                /* micro-batches in flight (pipe depth) */
    double wall_seconds;       /* rank 0: first submit to last result */
    double bubble_measured;    /* 1 - sum(busy) / (stages x wall) */
    double bubble_filldrain;   /* (p - 1) / (m + p - 1) for m micro-batches */
} pb_pipeline_report;

/* Ranks > 0: serve stage `stage` until rank 0 ends the pipe. is_last: this
 * rank holds the LM head and samples. */
pb_status pb_pipeline_run_worker(pb_transport *t, pb_stage *stage, const pb_pipeline_cfg *cfg,
                                 bool is_last);

/* Rank 0: the distributed pipe. stage0 (embeddings + first layers) and t are
 * borrowed and must outlive the pipe; depth = micro-batches in flight
 * (--chunks). Checks with every rank that the configuration agrees. *view
 * (optional) stays valid until pb_pipe_free and gives the report. Freeing
 * the pipe ends the workers (END round trip). */
typedef struct pb_net_pipe pb_net_pipe;
pb_status pb_net_pipe_create(pb_transport *t, pb_stage *stage0, const pb_pipeline_cfg *cfg,
                             int depth, pb_pipe **out, pb_net_pipe **view);
/* Collect every stage's metrics (a STATS round trip; nothing may be in
 * flight) into *rep. */
pb_status pb_net_pipe_report(pb_net_pipe *np, pb_pipeline_report *rep);

/* Human-readable lines (one per stage, then the bubble) to fp. */
void pb_pipeline_report_print(const pb_pipeline_report *rep, FILE *fp);
/* The same as a JSON object text: {"stages":[...],"bubble_measured":...}. */
pb_status pb_pipeline_report_json(const pb_pipeline_report *rep, char **out);

#endif
