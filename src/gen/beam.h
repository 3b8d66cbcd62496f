/* Beam search's choices, apart from the model: HF transformers 5's generate(num_beams=B, do_sample=False,
 * num_return_sequences=n) step for step (GenerationMixin._beam_search), so that its output is HF's on the same
 * log probabilities.
 *
 * Each step every running beam's most likely next tokens come in (pb_beam_put: the log_softmax of its logits, most
 * likely first); pb_beam_step keeps the K = max(2, 1 + stop ids) x B best continuations over all beams (summed log
 * probabilities, f32 as HF's), moves those of the first B that end (a stop id, or the length limit) into the B
 * finished hypotheses (score: the sum over (tokens generated) ** length_penalty), and continues the B best that do
 * not. It ends where HF's loop ends: no running beam can beat the finished ones (early_stopping false: HF's
 * heuristic on the current length; "never": on the longest with a positive length_penalty), every finished slot
 * is full (early_stopping true), or every continuation ends. At the first step only beam 0 runs (the prompt once).
 * Under min_tokens the stop ids are banned (HF's MinNewTokensLengthLogitsProcessor), so that step asks for as many
 * more log probabilities as there are stop ids. With logprobs each hypothesis also keeps, a token, the log
 * probability its beam gave it and that beam's most likely ids' (vLLM's logprobs of a beam search). */
#ifndef PB_GEN_BEAM_H
#define PB_GEN_BEAM_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/record.h"

#define PB_BEAM_MAX 10 /* beams at most (each step keeps 2 candidates a beam or more, of 20 log probabilities) */

typedef enum { PB_BEAM_EARLY_HEURISTIC = 0, PB_BEAM_EARLY_TRUE = 1, PB_BEAM_EARLY_NEVER = 2 } pb_beam_early;

typedef struct pb_beam_opts {
    int beams;              /* B, 1..PB_BEAM_MAX */
    int n_return;           /* hypotheses returned, 1..B */
    int max_new;            /* most tokens generated (the length limit; >= 1) */
    int min_new;            /* stop ids banned until this many are generated */
    float length_penalty;   /* HF's, 1.0 by default */
    pb_beam_early early;
    const int32_t *stop_ids; /* ids that end a beam (EOS unless ignored, stop_token_ids), distinct */
    int n_stop;
    int top;                /* >= 0: each hypothesis keeps its tokens' log probabilities and those of the top most
                               likely at each step (logprobs); -1: none */
} pb_beam_opts;

typedef struct pb_beam pb_beam;

/* PB_ERR_INPUT (message set) when a step would need more than max_logprobs log probabilities of a beam. */
pb_status pb_beam_create(const pb_beam_opts *o, int max_logprobs, pb_beam **out);
void pb_beam_free(pb_beam *b);

int pb_beam_running(const pb_beam *b);     /* beams computed this step: 1 at the first, then B */
int pb_beam_want(const pb_beam *b);        /* log probabilities to ask of each this step */
int pb_beam_generated(const pb_beam *b);   /* tokens each running beam has generated */
/* Running beam r's step: the n >= 1 most likely ids, most likely first, and their log probabilities. */
pb_status pb_beam_put(pb_beam *b, int r, const int32_t *ids, const float *lp, int n);
/* After every running beam's put: *done, or the next B running beams, beam j continuing beam parent[j] (this
 * step's numbering) with token[j]. */
pb_status pb_beam_step(pb_beam *b, bool *done, int *parent, int32_t *token);
/* Once done: the hypotheses returned, best first: hypothesis i's tokens (the last one a stop id where *stopped);
 * with top >= 0 its log probabilities, 1 + top pairs a token (the token's, then the most likely), else NULL. */
int pb_beam_results(const pb_beam *b);
const int32_t *pb_beam_result(const pb_beam *b, int i, int *n, bool *stopped);
const pb_lp_pair *pb_beam_result_lp(const pb_beam *b, int i);

#endif
