/* Split planner: which decoder layers each pipeline stage holds, the files
 * and bytes it reads, and its memory estimate. The plan depends only on the
 * config and on the index (or single file header), so every rank computes the
 * same plan without opening shard files. */
#ifndef PB_PLAN_H
#define PB_PLAN_H

#include <stdbool.h>
#include <stdint.h>

#include "ckpt/ckpt.h"
#include "common/status.h"
#include "model/config.h"

typedef enum pb_split_policy {
    PB_SPLIT_POLICY_EQUAL_SIZE = 0, /* exactly n_stages stages of near-equal parameter bytes */
    PB_SPLIT_POLICY_THRESHOLD,      /* cut before a layer that would push a stage past threshold */
    PB_SPLIT_POLICY_POINTS,         /* stage i (i >= 1) begins at layer points[i-1] */
    PB_SPLIT_POLICY_BALANCED        /* exactly n_stages stages of near-equal compute per token */
} pb_split_policy;

/* Attention is counted at this context (or the plan's max_seq_len when smaller) in the
 * compute per token that the balanced policy evens out. */
#define PB_PLAN_BALANCE_CONTEXT 256

typedef struct pb_split_spec {
    pb_split_policy policy;
    int n_stages;           /* world size: every policy must produce exactly this many */
    uint64_t threshold;     /* bytes, for PB_SPLIT_POLICY_THRESHOLD */
    int n_points;           /* PB_SPLIT_POLICY_POINTS: n_stages - 1 increasing layer numbers */
    const int *points;
    int batch_size;         /* sequences in flight (KV-cache slots); >= 1 */
    int max_seq_len;        /* KV length per sequence; 0 = the model context */
} pb_split_spec;

typedef struct pb_plan_file {
    char *path;             /* as opened by the loader */
    int file_index;         /* pb_ckpt_file_path(ck, file_index) */
    uint64_t bytes;         /* bytes of this stage's tensors in this file */
} pb_plan_file;

typedef struct pb_stage_plan {
    int stage;
    int layer_begin, layer_end;     /* decoder layers [begin, end) */
    bool has_embed;                 /* token (+ position) embeddings: first stage */
    bool has_head;                  /* final norm + LM head: last stage (tied embedding loaded too) */
    uint64_t param_bytes;           /* stored bytes of the stage's tensors */
    uint64_t compute;               /* multiply-adds per decoded token (see pb_plan_make) */
    int n_tensors;
    int n_files;
    pb_plan_file *files;            /* in checkpoint file order */
    /* Memory, filled by pb_stage_plan_memory (backend/stage.h), which asks
     * the backend for its bytes; 0 until then. */
    uint64_t mem_weights;           /* weights as the backend keeps them */
    uint64_t mem_kv;                /* KV cache */
    uint64_t mem_act;               /* activations workspace and backend scratch */
    uint64_t mem_total;
} pb_stage_plan;

typedef struct pb_plan {
    int n_stages;
    pb_stage_plan *stages;
    int n_layers;
    int batch_size, max_seq_len;    /* as used for the memory estimate */
    int max_batch_tokens;           /* a micro-batch's tokens the activations are for (pb_stage_plan_memory) */
    uint64_t total_param_bytes;     /* over all tensors once */
    uint64_t total_compute;         /* sum of the stages' compute */
} pb_plan;

/* Compute per token, which the balanced policy evens out, in multiply-adds:
 * every element of a layer's weights (a GEMV row each; of its experts'
 * weights num_experts_per_tok / num_experts, what a token runs), attention over
 * PB_PLAN_BALANCE_CONTEXT cached tokens (QK and PV: 2 * n_heads * head_dim per
 * token; local layers at most their window), the LM head (vocab x hidden, also
 * when tied) on the last stage, and only hidden per token for the embedding
 * lookups on the first. */
pb_status pb_plan_make(const pb_ckpt *ck, const pb_model_config *cfg, const pb_split_spec *spec, pb_plan **out);
void pb_plan_free(pb_plan *plan);

#endif
