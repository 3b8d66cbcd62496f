/* A pipeline stage: a contiguous range of decoder layers [layer_begin,
 * layer_end), plus the embeddings on the first stage and the final norm and
 * LM head on the last, run on the hidden states of many sequences at once.
 *
 * Each sequence owns a KV-cache slot. One call may mix prefill of whole
 * prompts (n_tokens > 1 at pos 0, or a chunk at pos > 0) and single-token
 * decode steps of sequences of different lengths. A sequence's results do not
 * depend on the other sequences of the batch (batch invariance: every
 * reduction runs in an order fixed by that sequence alone).
 *
 * Memory: weights as the backend keeps them (put_linear, in the dtype the
 * --weights-dtype policy gives: as stored by default), norm vectors f32; KV
 * cache [n_slots][layers][2][max_seq_len][n_kv_heads * head_dim] of the
 * --kv-dtype policy's type (the backend's kv_dtype by default); activations
 * from one arena sized from max_batch_tokens up front, plus the backend's
 * scratch. pb_stage_estimate gives the same
 * figures before loading (the planner's memory column).
 *
 * The backend is given (pb_backend_create): the stage uses it and does not
 * free it; several stages may share one. */
#ifndef PB_STAGE_H
#define PB_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/config.h"

#include "backend/backend.h"

/* Defined in ckpt/ (repeating a typedef is valid C11). */
typedef struct pb_stage_plan pb_stage_plan;
typedef struct pb_weights pb_weights;
typedef struct pb_ckpt pb_ckpt;
typedef struct pb_plan pb_plan;

typedef struct pb_stage pb_stage;

typedef struct pb_stage_opts {
    int n_slots;          /* KV-cache slots (sequences alive at once) */
    int max_seq_len;      /* tokens per slot (prompt + generated); <= cfg->max_position */
    int max_batch_tokens; /* most tokens (sum n_tokens) one pb_stage_forward call takes */
    int threads;          /* the backend's compute threads (pb_stage_estimate's scratch figure) */
    pb_wdtype weights_dtype; /* --weights-dtype: how matrices are kept (stored by default) */
    pb_kvdtype kv_dtype;     /* --kv-dtype: the KV cache's elements (the backend's default by default) */
} pb_stage_opts;

/* Per sequence: KV slot, tokens already cached in it, tokens this step. */
typedef struct pb_seq_batch {
    int n_seqs;
    const int *slot;
    const int *pos;
    const int *n_tokens;
    /* LongRoPE: rope_long[i] (NULL: all false) gives sequence i the long factors even in a chunk
     * that ends before original_max_position_embeddings (a long sequence prefilled in chunks) */
    const bool *rope_long;
    /* A shared prompt prefix: fork_src[i] >= 0 (NULL: all -1) is a slot whose first pos[i] positions
     * sequence i's slot starts with: copied before this batch runs (in order), so that only the rest of
     * the prompt is computed. The copied keys and values are those the slot would compute itself (the
     * kernels' results do not depend on the batch), so the output is the same bits either way. */
    const int *fork_src;
    /* fork_from[i] (NULL: all 0): positions before it already hold the same in both slots (a beam's prompt),
     * so only [fork_from[i], pos[i]) is copied */
    const int *fork_from;
} pb_seq_batch;

/* Has the backend store what it needs from w: w may be freed afterwards (its
 * mapped pages are released as each tensor is stored). Tensor shapes
 * contradicting the config give PB_ERR_CONFIG naming tensor and field;
 * unhandled variants PB_ERR_UNSUPPORTED. */
pb_status pb_stage_create(const pb_model_config *cfg, const pb_stage_plan *sp, const pb_weights *w, pb_backend *be,
                          const pb_stage_opts *opts, pb_stage **out);

/* in: int32 token ids [T] on the first stage (sp->has_embed), else f32 hidden
 * [T, hidden]; T = sum n_tokens, sequences concatenated in order; host memory.
 * out (host): f32 hidden [T, hidden]; on the last stage (sp->has_head) logits
 * [n_seqs, vocab] of each sequence's last token, or [T, vocab] when all_logits.
 * The batch is validated (slots in range and distinct, pos + n_tokens <=
 * max_seq_len, T <= max_batch_tokens, token ids < vocab): PB_ERR_INPUT.
 * Same as uploading `in` into pb_stage_input, pb_stage_run, downloading
 * pb_stage_output and a backend sync. */
pb_status pb_stage_forward(pb_stage *st, const pb_seq_batch *b, const void *in, float *out, bool all_logits);

/* The last stage's greedy picks without the logits leaving the backend:
 * ids[i] (host) = the first largest logit of sequence i's last token (NaN
 * never; where mask_rows[i], the n_mask ids mask_ids never; 0 when none is
 * above -inf), as the host sampler picks greedily. Only where
 * pb_stage_has_argmax (a head, and a backend with the argmax op). */
bool pb_stage_has_argmax(const pb_stage *st);
/* The backend the stage computes on (for host work between its calls: ops->host_run). */
pb_backend *pb_stage_backend(pb_stage *st);
pb_status pb_stage_forward_argmax(pb_stage *st, const pb_seq_batch *b, const void *in, const int32_t *mask_ids,
                                  int n_mask, const uint8_t *mask_rows, int32_t *ids);
/* The same with sampled picks: ids[i] = pb_sample()'s id for sequence i's
 * last token with row[i]'s settings, history and key (row[i].masked: the
 * n_mask ids mask_ids at -inf first), on the backend (pb_backend_ops.sample:
 * the host sampler's bits). Only where pb_stage_has_sample. */
bool pb_stage_has_sample(const pb_stage *st);
pb_status pb_stage_forward_sample(pb_stage *st, const pb_seq_batch *b, const void *in, const pb_sample_row *row,
                                  const int32_t *mask_ids, int n_mask, int32_t *ids);

/* Embeddings: out (host) = f32 [T, hidden], every token's final hidden state after the model's final norm (HF's
 * last_hidden_state), on a last stage whose model has no projection after that norm (pb_stage_has_embeddings). */
bool pb_stage_has_embeddings(const pb_stage *st);
pb_status pb_stage_forward_hidden(pb_stage *st, const pb_seq_batch *b, const void *in, float *out);

/* The stage's input and output as backend buffers, for a pipeline that keeps
 * activations on the device: input I32 [max_batch_tokens] ids on the first
 * stage, else F32 [max_batch_tokens, hidden]; output F32 [T, hidden], or on
 * the last stage F32 [n_seqs, vocab] logits. Valid for the stage's life. */
pb_buf pb_stage_input(const pb_stage *st);
pb_buf pb_stage_output(const pb_stage *st);
/* Runs batch b from pb_stage_input into pb_stage_output (no host copies, no
 * sync): the last stage gives the last token's logits of each sequence. */
pb_status pb_stage_run(pb_stage *st, const pb_seq_batch *b);

int pb_stage_hidden_size(const pb_stage *st);
int pb_stage_vocab_size(const pb_stage *st);
/* Backend memory of the stage's weights (matrices as kept + f32 vectors). */
uint64_t pb_stage_weight_bytes(const pb_stage *st);
void pb_stage_free(pb_stage *st);

/* ---- memory, before loading ---- */

typedef struct pb_stage_mem {
    uint64_t weights; /* exact: the backend's bytes for each matrix in its kept dtype, f32 vectors */
    uint64_t kv;      /* KV cache */
    uint64_t act;     /* activation arena, input/output buffers, backend scratch */
} pb_stage_mem;

/* --max-batch-tokens' default: PB_BATCH_TOKENS_CPU, or PB_BATCH_TOKENS_GPU
 * where every rank runs on a GPU, whose products gain from the rows (an H100,
 * session 40: a prefill of 16 x 847 tokens at 15.5k tok/s with 512, 18.1k
 * with 2048, 18.4k with 8192; the tensor-core products at about 90 TFLOP/s
 * with 512 rows, 170 with 4096). */
#define PB_BATCH_TOKENS_CPU 512
#define PB_BATCH_TOKENS_GPU 2048

/* Tokens a micro-batch carries: requested (--max-batch-tokens, or the device's
 * default; <= 0: max(per_mb, PB_BATCH_TOKENS_CPU)), at most n_slots *
 * max_seq_len and at least per_mb (the sequences of a micro-batch: a decode
 * step's token each). */
int pb_stage_batch_tokens(int requested, int per_mb, int n_slots, int max_seq_len);

/* What pb_stage_create on a backend of these ops will allocate for stage sp,
 * from the config and the checkpoint's index (dtypes and shapes) only. */
pb_status pb_stage_estimate(const pb_model_config *cfg, const pb_ckpt *ck, const pb_backend_ops *ops,
                            const pb_stage_plan *sp, const pb_stage_opts *opts, pb_stage_mem *out);
/* Fills mem_weights, mem_kv, mem_act and mem_total of every stage of plan
 * (activations for base->max_batch_tokens tokens a micro-batch, or where 0 the default's)
 * (made by pb_plan_make) with pb_stage_estimate, for plan->batch_size slots of
 * plan->max_seq_len tokens and the default batch token budget; the threads,
 * weights_dtype and kv_dtype of o (its other fields are not read). */
pb_status pb_stage_plan_memory(pb_plan *plan, const pb_model_config *cfg, const pb_ckpt *ck,
                               const pb_backend_ops *ops, const pb_stage_opts *o);

#endif
