/* Token sampling: a pure function of one sequence's logits, its sampling
 * settings, its token history and a counter-based random number keyed by
 * (seed, record, step). Nothing depends on the other sequences of a batch or
 * on the rank that samples, so sampled output is batch- and rank-invariant.
 *
 * Semantics follow HF transformers' generate():
 *   repetition penalty (over prompt + generated ids: l > 0 ? l / r : l * r),
 *   then temperature, top-k (ties with the k-th kept), top-p (smallest set of
 *   most likely tokens whose mass reaches p, at least one), min-p (drop tokens
 *   whose probability is below min_p x the top probability), softmax, draw.
 * temperature 0 is greedy: argmax of the penalised logits, lowest id on ties. */
#ifndef PB_GEN_SAMPLE_H
#define PB_GEN_SAMPLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_sample_params {
    float temperature;        /* 0 = greedy; > 0 */
    int32_t top_k;            /* 0 = off */
    float top_p;              /* (0, 1]; 1 = off */
    float min_p;              /* [0, 1]; 0 = off */
    float repetition_penalty; /* > 0; 1 = off */
    float frequency_penalty;  /* [-2, 2]; 0 = off: minus this times an id's count in the output */
    float presence_penalty;   /* [-2, 2]; 0 = off: minus this once for an id in the output */
    int32_t prompt_len;       /* history[0..prompt_len) is the prompt, the rest the output so far */
} pb_sample_params;

/* Built-in defaults: greedy, every filter off. */
pb_sample_params pb_sample_params_default(void);
/* Whether the frequency or presence penalty is on. */
static inline bool pb_sample_output_penalties(const pb_sample_params *p)
{
    return p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f;
}
/* PB_ERR_INPUT naming the field when a value is out of range or not finite. */
pb_status pb_sample_params_check(const pb_sample_params *p);

/* Key of one random draw: the draw for token `step` (0 = first generated
 * token) of record `record` under `seed`. */
typedef struct pb_rng_key {
    uint64_t seed;
    uint64_t record;
    uint64_t step;
} pb_rng_key;

/* Philox4x32-10 (Salmon et al., SC'11): counter ctr[4], key key[2] -> out[4]. */
void pb_philox4x32_10(const uint32_t ctr[4], const uint32_t key[2], uint32_t out[4]);
/* Uniform double in [0, 1) with 53 random bits from Philox: key = seed,
 * counter = (record, step). */
double pb_rng_uniform(const pb_rng_key *k);

/* Bytes of scratch pb_sample() needs for a vocabulary of `vocab` ids. */
size_t pb_sample_scratch_bytes(int vocab);

/* Sample one id from logits[0..vocab). history[0..n_history) are the ids
 * seen so far (prompt then generated; duplicates allowed; ids outside
 * [0, vocab) ignored). scratch holds pb_sample_scratch_bytes(vocab) bytes,
 * suitably aligned for float and int32 (malloc'd memory is).
 * Logits that are NaN count as -inf; if every logit is -inf/NaN, id 0. */
int32_t pb_sample(const float *logits, int vocab, const pb_sample_params *p,
                  const int32_t *history, size_t n_history, const pb_rng_key *key,
                  void *scratch);

/* The distribution pb_sample() draws from: probs[0..vocab) (0 for filtered
 * ids; sums to 1). For greedy it is one-hot on the argmax. Used by tests and
 * by anything that wants the probabilities. */
void pb_sample_probs(const float *logits, int vocab, const pb_sample_params *p,
                     const int32_t *history, size_t n_history, float *probs, void *scratch);

/* A logit bias (OpenAI's and vLLM's logit_bias): bias is added to id's
 * logit before the penalties and the temperature; -inf bans the id (min_tokens
 * masks a record's stop_token_ids so). */
typedef struct pb_id_bias {
    int32_t id;
    float bias; /* [-100, 100], or -inf */
} pb_id_bias;
#define PB_MAX_LOGIT_BIAS 300 /* entries a record's logit_bias may hold (OpenAI's limit) */
#define PB_MAX_STOP_IDS 64    /* a record's stop_token_ids at most */
#define PB_MAX_ALLOWED_IDS 4096 /* a record's allowed_token_ids at most */
#define PB_MAX_BAD_WORDS 64   /* a record's bad_words at most (each banned as two token sequences: alone and after a
                                 space) */

/* Log probabilities a completion returns for a token (OpenAI's and vLLM's
 * logprobs): those of the model's distribution, log_softmax of the raw
 * logits, before any penalty, temperature, filter or EOS mask (vLLM's
 * "raw_logprobs"). */
#define PB_MAX_LOGPROBS 20 /* most likely ids a token may list (OpenAI's top_logprobs limit) */
typedef struct pb_logprobs {
    int32_t id;                         /* the token (sampled, or the prompt's) */
    int32_t rank;                       /* a prompt token's: 1 + the ids with a larger logit (else 0) */
    float logprob;                      /* of the token; -inf where its logit is -inf or NaN */
    int32_t n_top;                      /* 0..PB_MAX_LOGPROBS */
    int32_t top_id[PB_MAX_LOGPROBS];    /* the n_top most likely ids, most likely first, ties by id */
    float top_logprob[PB_MAX_LOGPROBS];
} pb_logprobs;

/* The log probabilities of logits[0..vocab) for the sampled id `token` and
 * the n_top (0..PB_MAX_LOGPROBS) most likely ids. Each is the logit minus
 * the log-sum-exp, that sum taken as pb_sample's weights are (the same bits
 * on every vector table). NaN logits count as -inf; where every logit is
 * -inf, every log probability is -inf. scratch as for pb_sample. */
void pb_sample_logprobs(const float *logits, int vocab, int32_t token, int n_top, pb_logprobs *out,
                        void *scratch);
/* As pb_sample_logprobs, with the n (0..PB_MAX_LOGPROBS) entries those of ids[0..n) (each in [0, vocab)), in
 * that order (vLLM's logprob_token_ids): the same log-sum-exp, so the same bits for an id in both lists. */
void pb_sample_logprobs_ids(const float *logits, int vocab, int32_t token, const int32_t *ids, int n,
                            pb_logprobs *out, void *scratch);
/* 1 + how many of logits[0..vocab) are larger than token's (NaN as -inf), as vLLM's rank. */
int32_t pb_sample_rank(const float *logits, int vocab, int32_t token);

#endif
