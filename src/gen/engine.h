/* The engine: takes records, gives results. It tokenizes each prompt, admits
 * it into a KV slot, keeps `chunks` micro-batches cycling through a pb_pipe
 * (continuous batching: a finished sequence's slot takes the next prompt at
 * once, its prefill riding along with the others' decode steps),
 * detokenizes, and checks EOS, stop strings and lengths.
 *
 * It knows no files: records come from, and results go to, the callbacks
 * of pb_engine_io (the runner, gen/runner.h, which reads, orders, writes and
 * resumes). Results come in completion order, each with the ordinal its
 * record was given. */
#ifndef PB_GEN_ENGINE_H
#define PB_GEN_ENGINE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/pipe.h"
#include "gen/record.h"
#include "tok/tokenizer.h"

typedef struct pb_engine_opts {
    int batch_size;        /* sequences in flight = KV slots of the pipe */
    int chunks;            /* micro-batches cycling */
    int context;           /* most tokens per sequence (prompt + completion) */
    const int *eos_ids;
    int n_eos;
    double grace_seconds;  /* after a stop signal, time to finish records in flight */
    /* LongRoPE (Phi-3): original_max_position_embeddings, else 0. As HF's
     * Phi-3 generate(), a sequence growing past it is fed again whole (its
     * cache recomputed with the long factors), and a sequence longer than it
     * uses the long factors in every prefill chunk. */
    int rope_long_after;
    /* A new prompt whose first tokens another sequence in flight has
     * computed (a shared system prompt, few-shot examples) starts as a copy
     * of that slot's cache for the longest such prefix (PB_SEQ_FORK): the
     * same output bits, fewer tokens computed. --no-prefix-sharing: false. */
    bool share_prefixes;
} pb_engine_opts;

typedef struct pb_engine_io {
    /* The next record (rec->error NULL), moved into *rec, and its output
     * ordinal. *got = false: none now (the output cannot take more yet);
     * *ended = true: none ever (the input is done). */
    pb_status (*next)(void *ctx, pb_record *rec, uint64_t *seq, bool *got, bool *ended);
    /* The answer to rec: res, or NULL when rec->error is set (a prompt that
     * cannot be generated for: too long, no tokens). */
    pb_status (*result)(void *ctx, const pb_record *rec, uint64_t seq, const pb_result *res);
    /* After each micro-batch's results (frame timers, progress); may be NULL. */
    pb_status (*tick)(void *ctx);
    void *ctx;
} pb_engine_io;

typedef struct pb_engine_stats {
    double prefill_seconds, decode_seconds; /* micro-batch time shared by token count */
    double ttft_mean, ttft_max;             /* admission to first token, seconds */
    double first_token_seconds;             /* engine start to the first token of any record */
    uint64_t micro_batches;
    uint64_t prompt_tokens_shared;          /* prompt tokens copied from another slot, not computed */
    pb_pipe_stats pipe;
    bool stopped;  /* a stop signal (gen/stop.h) left records unread or dropped */
} pb_engine_stats;

/* Runs until the input is done and every record answered, or after a stop
 * signal: admission stops, records in flight finish within grace_seconds (or
 * are dropped) and st->stopped tells whether anything was left. */
pb_status pb_engine_run(const pb_engine_opts *o, pb_pipe *pipe, const pb_tokenizer *tok,
                        const pb_engine_io *io, pb_engine_stats *st);

#endif
