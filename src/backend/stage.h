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
 * Memory (CPU backend): weights converted to f32 at load (numel * 4 bytes);
 * KV cache f32 [n_slots][layers][2][max_seq_len][n_kv_heads * head_dim];
 * activations from one arena sized from max_batch_tokens up front. See
 * pb_stage_memory() for the exact formula the planner uses.
 *
 * Threads: `threads` compute threads run the stage's own kernels; OpenBLAS is
 * set to the same count and is only ever called from the calling thread, so
 * at most `threads` threads compute at any time (no oversubscription). */
#ifndef PB_STAGE_H
#define PB_STAGE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/config.h"

/* Defined in ckpt/plan.h and ckpt/weights.h (repeating a typedef is valid C11). */
typedef struct pb_stage_plan pb_stage_plan;
typedef struct pb_weights pb_weights;

typedef struct pb_stage pb_stage;

typedef struct pb_stage_opts {
    int n_slots;          /* KV-cache slots (sequences alive at once) */
    int max_seq_len;      /* tokens per slot (prompt + generated); <= cfg->max_position */
    int max_batch_tokens; /* most tokens (sum n_tokens) one pb_stage_forward call takes */
    int threads;          /* compute threads (>= 1; 0 = 1) */
} pb_stage_opts;

/* Per sequence: KV slot, tokens already cached in it, tokens this step. */
typedef struct pb_seq_batch {
    int n_seqs;
    const int *slot;
    const int *pos;
    const int *n_tokens;
} pb_seq_batch;

/* Copies/converts what it needs from w: w may be freed afterwards. Tensor
 * shapes contradicting the config give PB_ERR_CONFIG naming tensor and field;
 * unhandled variants PB_ERR_UNSUPPORTED. */
pb_status pb_stage_create(const pb_model_config *cfg, const pb_stage_plan *sp,
                          const pb_weights *w, const pb_stage_opts *opts, pb_stage **out);

/* in: int32 token ids [T] on the first stage (sp->has_embed), else f32 hidden
 * [T, hidden]; T = sum n_tokens, sequences concatenated in order.
 * out: f32 hidden [T, hidden]; on the last stage (sp->has_head) logits
 * [n_seqs, vocab] of each sequence's last token, or [T, vocab] when all_logits.
 * The batch is validated (slots in range and distinct, pos + n_tokens <=
 * max_seq_len, T <= max_batch_tokens, token ids < vocab): PB_ERR_INPUT. */
pb_status pb_stage_forward(pb_stage *st, const pb_seq_batch *b, const void *in, float *out,
                           bool all_logits);

int pb_stage_hidden_size(const pb_stage *st);
int pb_stage_vocab_size(const pb_stage *st);
void pb_stage_free(pb_stage *st);

/* Bytes the stage allocates for layers [layer_begin, layer_end) with these
 * options, apart from weights: KV cache and activation arena. Used by the
 * planner (ckpt/plan.c) so its estimate matches the real allocation. */
typedef struct pb_stage_mem {
    uint64_t kv;
    uint64_t act;
} pb_stage_mem;
/* max_batch_tokens the planner assumes (and `run` uses with one chunk):
 * max(n_slots, 512), at most n_slots * max_seq_len. */
int pb_stage_default_batch_tokens(int n_slots, int max_seq_len);
pb_stage_mem pb_stage_memory(const pb_model_config *cfg, int layer_begin, int layer_end,
                             bool has_embed, bool has_head, const pb_stage_opts *opts);

#endif
