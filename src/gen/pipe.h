/* The pipe between rank 0's driver and the model: the driver submits
 * micro-batches and receives one sampled token per sequence.
 *
 * Sampling happens where the logits are (the last stage), so a micro-batch
 * carries, per sequence: KV slot, position, token ids (the prompt or a chunk
 * of it for prefill, the last sampled token for decode), flags, sampling
 * settings and the RNG key of the token to sample. The last stage keeps each
 * slot's token history (prompt + generated) for the repetition penalty:
 * pb_slot_sampler below does that on any rank.
 *
 * Micro-batches in flight: the driver submits up to pb_pipe_depth() of them,
 * then waits for the oldest result (FIFO) and resubmits. The local pipe
 * (world size 1, pipe_local.c) runs them in order; src/net/ provides the one
 * across ranks by implementing pb_pipe_ops.
 *
 * Wire format (pb_mb_pack/unpack, pb_mb_result_pack/unpack): little-endian,
 * fixed-size fields, no padding, validated on unpack:
 *   micro-batch: u32 magic "PBMB", u32 version, u64 tag, i32 n_seqs, i32 n_tokens,
 *     n_seqs x { i32 slot, i32 pos, i32 n_tokens, u32 flags,
 *                f32 temperature, i32 top_k, f32 top_p, f32 min_p, f32 rep_penalty,
 *                i32 fork_slot (PB_SEQ_FORK; else 0),
 *                u64 seed, u64 record, u64 step,
 *                f32 frequency_penalty, f32 presence_penalty, i32 prompt_len,
 *                i32 n_logprobs (PB_SEQ_LOGPROBS; else 0), i32 n_bias,
 *                i32 n_prompt_logprobs, i32 next_id (PB_SEQ_PROMPT_LOGPROBS; else 0, -1),
 *                i32 n_allow, i32 fork_from (PB_SEQ_FORK; else 0) }   (100 bytes each)
 *     n_tokens x i32 token ids (sequences concatenated in order)
 *     the sequences' n_bias x { i32 id, f32 bias } (concatenated in order)
 *     the sequences' n_allow x i32 id (concatenated in order)
 *     for each PB_SEQ_MASK sequence in order, (vocab + 31) / 32 x u32 mask words (bit i of word w: id 32 w + i)
 *     for each PB_SEQ_LP_IDS sequence in order, n_logprobs x i32 id (the ids whose log probabilities it lists)
 *   result: u32 magic "PBRS", u32 version, u64 tag, i32 n_seqs, i32 pad(0),
 *     n_seqs x i32 token (-1 where the sequence did not sample),
 *     n_seqs x i32 n_top (-1 where the sequence asked no log probabilities),
 *     for each sequence with n_top >= 0, in order: f32 logprob, n_top x { i32 id, f32 logprob },
 *     n_seqs x i32 n_plp (prompt tokens' entries: PB_SEQ_PROMPT_LOGPROBS; else 0),
 *     the sequences' entries in order: { i32 id, f32 logprob, i32 rank, i32 n_top, n_top x { i32 id, f32 } },
 *     n_seqs x i32 n_emb (PB_SEQ_EMBED: the hidden size; else 0), the sequences' n_emb x f32 in order */
#ifndef PB_GEN_PIPE_H
#define PB_GEN_PIPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/stage.h"
#include "common/status.h"
#include "gen/sample.h"

/* Per-sequence flags. */
#define PB_SEQ_NEW    0x1u /* first chunk of a new sequence (pos 0): reset the slot's history */
#define PB_SEQ_SAMPLE 0x2u /* sample a token after this chunk (clear for a non-final prefill chunk) */
#define PB_SEQ_NO_EOS 0x4u /* the sampled token may not be an EOS id (min_tokens not reached) */
#define PB_SEQ_ROPE_LONG 0x8u /* LongRoPE: the sequence is past original_max_position_embeddings: long factors
                                 for every chunk (pb_seq_batch.rope_long) */
#define PB_SEQ_FORK 0x10u /* with NEW at pos > 0: the slot starts as the first pos positions of fork_slot (a
                             shared prompt prefix, already computed there): KV caches and token history copied
                             before the micro-batch runs (fork_slot == slot: a finished sequence's, kept) */
#define PB_SEQ_LOGPROBS 0x20u /* with SAMPLE: return the sampled id's log probability and those of the
                                n_logprobs most likely ids (pb_sample_logprobs) */
#define PB_SEQ_PROMPT_LOGPROBS 0x40u /* the log probabilities of this chunk's prompt tokens after its first, and
                                       of next_id (the token after the chunk, -1 for the last chunk), each from
                                       the logits of the position before, with n_prompt_logprobs most likely */
#define PB_SEQ_MASK 0x80u /* with SAMPLE: only the ids whose bits are set in the sequence's mask words
                            (pb_mb_add_mask; constrained decoding) may be sampled */
#define PB_SEQ_LP_IDS 0x100u /* with LOGPROBS: the n_logprobs ids listed are the sequence's own (pb_mb_add_lp_ids;
                               vLLM's logprob_token_ids), in their order, instead of the most likely */
/* Embeddings (--task embed): the last stage returns, instead of a token, the chunk's final hidden state (after the
 * model's final norm) of its last token (EMBED_LAST), of its first (EMBED_FIRST), or summed over its tokens
 * (EMBED_SUM, for a mean over the prompt's chunks); never with SAMPLE, and a micro-batch either samples or embeds. */
#define PB_SEQ_EMBED_LAST 0x200u
#define PB_SEQ_EMBED_FIRST 0x400u
#define PB_SEQ_EMBED_SUM 0x800u
#define PB_SEQ_EMBED (PB_SEQ_EMBED_LAST | PB_SEQ_EMBED_FIRST | PB_SEQ_EMBED_SUM)
#define PB_SEQ_FLAGS_ALL (PB_SEQ_NEW | PB_SEQ_SAMPLE | PB_SEQ_NO_EOS | PB_SEQ_ROPE_LONG | PB_SEQ_FORK | \
                          PB_SEQ_LOGPROBS | PB_SEQ_PROMPT_LOGPROBS | PB_SEQ_MASK | PB_SEQ_LP_IDS | PB_SEQ_EMBED)

typedef struct pb_mb_seq {
    int32_t slot;      /* KV-cache slot in [0, n_slots) */
    int32_t pos;       /* tokens already cached in the slot */
    int32_t n_tokens;  /* tokens of this sequence in this micro-batch (>= 1) */
    uint32_t flags;    /* PB_SEQ_* */
    int32_t fork_slot; /* PB_SEQ_FORK: the slot whose first pos positions this one starts with */
    int32_t fork_from; /* PB_SEQ_FORK: positions before it already hold the same in both slots (a beam's prompt):
                          only [fork_from, pos) is copied; 0 = all */
    int32_t n_logprobs; /* PB_SEQ_LOGPROBS: most likely ids to list, 0..PB_MAX_LOGPROBS (else 0) */
    int32_t n_bias;     /* with PB_SEQ_SAMPLE: logit biases (pb_mb_add_bias) added before sampling, ids distinct */
    int32_t n_prompt_logprobs; /* PB_SEQ_PROMPT_LOGPROBS: most likely ids to list, 0..PB_MAX_LOGPROBS (else 0) */
    int32_t next_id;    /* PB_SEQ_PROMPT_LOGPROBS: the prompt's token after this chunk, -1 after the last (else -1) */
    int32_t n_allow;    /* with PB_SEQ_SAMPLE: only these ids (pb_mb_add_allow) may be sampled; 0 = any */
    pb_sample_params sample;
    pb_rng_key key;    /* key of the token sampled after this chunk */
} pb_mb_seq;

typedef struct pb_microbatch {
    uint64_t tag;      /* chosen by the driver, returned with the result */
    int32_t n_seqs;
    int32_t n_tokens;  /* sum of seqs[i].n_tokens */
    pb_mb_seq *seqs;   /* [n_seqs] */
    int32_t *tokens;   /* [n_tokens] */
    int32_t n_bias;    /* sum of seqs[i].n_bias */
    pb_id_bias *bias;  /* [n_bias]: the sequences' logit biases in order */
    int32_t n_allow;   /* sum of seqs[i].n_allow */
    int32_t *allow;    /* [n_allow]: the sequences' allowed ids in order */
    int32_t mask_words; /* words of each PB_SEQ_MASK sequence's mask: (vocab + 31) / 32 (0 while none) */
    int32_t n_masks;   /* PB_SEQ_MASK sequences */
    uint32_t *mask;    /* [n_masks x mask_words]: their masks in order */
    int32_t n_lp_ids;  /* sum of the PB_SEQ_LP_IDS sequences' n_logprobs */
    int32_t *lp_ids;   /* [n_lp_ids]: their ids in order */
    int32_t cap_seqs, cap_tokens, cap_bias, cap_allow, cap_mask, cap_lp_ids; /* allocated capacity (owned) */
} pb_microbatch;

typedef struct pb_mb_result {
    uint64_t tag;
    int32_t n_seqs;
    int32_t *tokens;   /* [n_seqs]: sampled id, or -1 without PB_SEQ_SAMPLE */
    pb_logprobs *lps;  /* [n_seqs]: with PB_SEQ_LOGPROBS the token's log probabilities; else n_top -1 */
    int32_t cap;
    int32_t *n_plp;    /* [n_seqs]: PB_SEQ_PROMPT_LOGPROBS: the prompt tokens' entries in plp (else 0) */
    pb_logprobs *plp;  /* [sum n_plp]: the sequences' in order, each chunk's tokens in order */
    int32_t plp_cap;
    int32_t *n_emb;    /* [n_seqs]: PB_SEQ_EMBED: the hidden size (else 0) */
    float *emb;        /* [sum n_emb]: the sequences' hidden states in order */
    int32_t emb_cap;
} pb_mb_result;

/* What a micro-batch may contain; pb_mb_validate checks against it. */
typedef struct pb_mb_limits {
    int n_slots;
    int max_seq_len;
    int max_batch_tokens;
    int vocab;
    int hidden;             /* the model's hidden size (an embedding's floats) */
    const int *eos_ids;     /* the model's EOS ids, masked for PB_SEQ_NO_EOS (borrowed) */
    int n_eos;
} pb_mb_limits;

/* Allocate room for cap_seqs sequences and cap_tokens tokens (n_* = 0). */
pb_status pb_mb_init(pb_microbatch *mb, int cap_seqs, int cap_tokens);
/* Grow if needed (keeps contents). */
pb_status pb_mb_reserve(pb_microbatch *mb, int cap_seqs, int cap_tokens);
void pb_mb_clear(pb_microbatch *mb);      /* n_seqs = n_tokens = 0 */
void pb_mb_release(pb_microbatch *mb);    /* frees the arrays; NULL-safe */
/* Append a sequence with its tokens (copied); its n_bias is set by pb_mb_add_bias. */
pb_status pb_mb_add(pb_microbatch *mb, const pb_mb_seq *seq, const int32_t *tokens);
/* Append n logit biases (copied) to the last sequence added. */
pb_status pb_mb_add_bias(pb_microbatch *mb, const pb_id_bias *b, int n);
/* Append n allowed ids (copied) to the last sequence added. */
pb_status pb_mb_add_allow(pb_microbatch *mb, const int32_t *ids, int n);
/* Give the last sequence added (it samples) the mask of the ids it may sample: words = (vocab + 31) / 32 words
 * (copied), the same for every sequence of the micro-batch; sets PB_SEQ_MASK. */
pb_status pb_mb_add_mask(pb_microbatch *mb, const uint32_t *mask, int words);
/* Have the last sequence added (it samples with PB_SEQ_LOGPROBS) list the log probabilities of ids[0..n) (1 to
 * PB_MAX_LOGPROBS, copied) instead of its most likely: sets its n_logprobs and PB_SEQ_LP_IDS. */
pb_status pb_mb_add_lp_ids(pb_microbatch *mb, const int32_t *ids, int n);

pb_status pb_mb_result_init(pb_mb_result *r, int cap);
pb_status pb_mb_result_reserve(pb_mb_result *r, int cap);
/* Room for n prompt tokens' entries (keeps them). */
pb_status pb_mb_result_reserve_plp(pb_mb_result *r, int n);
/* Room for n embedding floats. */
pb_status pb_mb_result_reserve_emb(pb_mb_result *r, int n);
/* dst = src (grown as needed). */
pb_status pb_mb_result_copy(pb_mb_result *dst, const pb_mb_result *src);
void pb_mb_result_release(pb_mb_result *r);

/* Slots in range and distinct, n_tokens >= 1 and summing to mb->n_tokens,
 * pos >= 0, pos + n_tokens <= max_seq_len, NEW only at pos 0 (or with FORK
 * at pos > 0, fork_slot in range, 0 <= fork_from < pos), total tokens
 * <= max_batch_tokens, ids in [0, vocab), sampling settings valid, logit
 * biases only where the sequence samples, their ids distinct and in [0, vocab),
 * each bias in [-100, 100] or -inf; allowed ids likewise ascending, distinct,
 * in range, only where the sequence samples; a mask only where the sequence samples, of
 * (vocab + 31) / 32 words, no bit set at or past vocab and some set; prompt log probabilities only for prefill
 * chunks, next_id -1 or in [0, vocab), and -1 where the chunk samples.
 * PB_ERR_INPUT naming the sequence and field. */
pb_status pb_mb_validate(const pb_microbatch *mb, const pb_mb_limits *lim);

size_t pb_mb_packed_size(const pb_microbatch *mb);
/* The most a micro-batch of n_seqs sequences and n_tokens tokens packs into (every logit bias a record may give,
 * a mask for each sequence over a vocabulary of vocab ids). */
size_t pb_mb_max_size(int n_seqs, int n_tokens, int vocab);
/* Write into dst (capacity cap); *written = bytes used. */
pb_status pb_mb_pack(const pb_microbatch *mb, void *dst, size_t cap, size_t *written);
/* Parse src[0..len) into mb (grown as needed) and validate against lim. */
pb_status pb_mb_unpack(const void *src, size_t len, const pb_mb_limits *lim, pb_microbatch *mb);

size_t pb_mb_result_packed_size(const pb_mb_result *r);
/* The most a result of a micro-batch of n_seqs sequences and n_tokens tokens packs into. */
size_t pb_mb_result_max_size(int n_seqs, int n_tokens, int hidden);
pb_status pb_mb_result_pack(const pb_mb_result *r, void *dst, size_t cap, size_t *written);
/* Parse; tokens must be -1 or in [0, vocab), log probabilities <= 0 (or -inf) with ids in [0, vocab) and
 * only for sampled tokens, embeddings of hidden finite floats and only for sequences that sampled none. */
pb_status pb_mb_result_unpack(const void *src, size_t len, int vocab, int hidden, pb_mb_result *r);

/* A micro-batch as a stage's batch: per-sequence arrays of n_slots. */
typedef struct pb_mb_batch {
    int *slot, *pos, *ntok, *fork, *fork_from;
    bool *rope_long;
} pb_mb_batch;
pb_status pb_mb_batch_init(pb_mb_batch *a, int n_slots);
void pb_mb_batch_free(pb_mb_batch *a); /* NULL arrays allowed */
/* Fills a from mb (validated, n_seqs <= n_slots); the batch points into a. */
pb_seq_batch pb_mb_batch_of(pb_mb_batch *a, const pb_microbatch *mb);

/* Last-stage sampling state: each slot's token history. */
typedef struct pb_slot_sampler pb_slot_sampler;
pb_status pb_slot_sampler_create(int n_slots, int max_seq_len, int vocab, pb_slot_sampler **out);
/* The ids a PB_SEQ_NO_EOS sequence may not sample (copied; ids outside the
 * vocabulary are ignored). As HF's min_new_tokens: their logits become -inf. */
pb_status pb_slot_sampler_set_eos(pb_slot_sampler *s, const int *ids, int n);
/* Append mb's tokens to the slots' histories (reset on PB_SEQ_NEW), then
 * sample for every sequence with PB_SEQ_SAMPLE from logits [n_seqs, vocab]
 * (row i = sequence i's last token) into res (tag copied). The sampled ids
 * are not added to the history here: they come back as the next decode
 * token. mb must have passed pb_mb_validate and ask no prompt log
 * probabilities (those need every position's logits: pb_slot_sampler_stage). */
pb_status pb_slot_sampler_run(pb_slot_sampler *s, const pb_microbatch *mb, const float *logits,
                              pb_mb_result *res);
/* The last stage's forward and sampling of mb (b its batch, in its input as
 * for pb_stage_forward). Prompt tokens' log probabilities
 * (PB_SEQ_PROMPT_LOGPROBS) take the logits of every position of the
 * micro-batch (pb_stage_forward's all_logits; a buffer of n_tokens x vocab
 * floats, kept). Where no sequence asks log probabilities or has
 * logit biases, allowed ids or a mask, and the
 * stage's backend can, the picks are made there and only the ids come back
 * (the host sampler's ids): by its argmax where every sampling sequence is
 * greedy without penalties, else by its sample op. Otherwise the logits come
 * back into logits [n_seqs, vocab] (host) and are sampled as by
 * pb_slot_sampler_run. */
pb_status pb_slot_sampler_stage(pb_slot_sampler *s, pb_stage *stage, const pb_seq_batch *b, const void *in,
                                const pb_microbatch *mb, float *logits, pb_mb_result *res);
void pb_slot_sampler_free(pb_slot_sampler *s);

/* Busy time per stage, for the end summary. A stage's busy share is
 * busy_seconds / wall_seconds, one definition for the summary, --metrics and
 * the pipeline report. */
#define PB_PIPE_MAX_STAGES 64
typedef struct pb_pipe_stats {
    int n_stages;
    double busy_seconds[PB_PIPE_MAX_STAGES]; /* time each stage spent computing */
    double wall_seconds;                     /* first submit to last result */
} pb_pipe_stats;

/* An implementation of the pipe. */
typedef struct pb_pipe_ops {
    const char *name;
    /* Queue mb (already validated by pb_pipe_submit); the implementation
     * copies what it keeps before returning. */
    pb_status (*submit)(void *self, const pb_microbatch *mb);
    /* Block until the oldest submitted micro-batch's result; fill res. */
    pb_status (*wait)(void *self, pb_mb_result *res);
    /* Optional (NULL = unknown). */
    pb_status (*stats)(void *self, pb_pipe_stats *out);
    void (*destroy)(void *self);
} pb_pipe_ops;

typedef struct pb_pipe pb_pipe;

/* Wrap an implementation. depth = micro-batches it accepts in flight (>= 1);
 * lim = what the stages accept. Takes ownership of self (destroyed by
 * pb_pipe_free, also when this call fails). */
pb_status pb_pipe_create(const pb_pipe_ops *ops, void *self, int depth, const pb_mb_limits *lim,
                         pb_pipe **out);
/* Validate and queue; PB_ERR_INTERNAL when depth micro-batches are in flight. */
pb_status pb_pipe_submit(pb_pipe *p, const pb_microbatch *mb);
/* Result of the oldest in-flight micro-batch (PB_ERR_INTERNAL if none).
 * Checks the tag and the number of sequences. */
pb_status pb_pipe_wait(pb_pipe *p, pb_mb_result *res);
int pb_pipe_depth(const pb_pipe *p);
int pb_pipe_in_flight(const pb_pipe *p);
const pb_mb_limits *pb_pipe_limits(const pb_pipe *p);
pb_status pb_pipe_stats_get(pb_pipe *p, pb_pipe_stats *out);
void pb_pipe_free(pb_pipe *p);

/* World size 1: stage forward + sampling in this process. `stage` (a
 * pb_stage with embeddings and head) is borrowed and must outlive the pipe;
 * n_slots/max_seq_len/max_batch_tokens as it was created with. */
typedef struct pb_stage pb_stage;
pb_status pb_pipe_local_create(pb_stage *stage, const pb_mb_limits *lim, int depth, pb_pipe **out);

#endif
