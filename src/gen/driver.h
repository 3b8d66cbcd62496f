/* The rank-0 driver: reads records, tokenizes, admits prompts into KV slots,
 * keeps `chunks` micro-batches cycling through a pb_pipe (continuous
 * batching: a finished sequence's slot takes the next prompt at once, its
 * prefill riding along with the others' decode steps), detokenizes, checks
 * EOS, stop strings and lengths, and writes results in input order. */
#ifndef PB_GEN_DRIVER_H
#define PB_GEN_DRIVER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/pipe.h"
#include "gen/record.h"
#include "tok/tokenizer.h"

typedef struct pb_driver_opts {
    const char *in_path;      /* "-" = stdin */
    const char *out_path;     /* "-" = stdout */
    const char *metrics_path; /* NULL = none */
    const char *model_name;   /* for the OpenAI output shape */
    int batch_size;           /* sequences in flight = KV slots of the pipe */
    int chunks;               /* micro-batches cycling */
    int context;              /* most tokens per sequence (prompt + completion) */
    bool abort_on_error;
    int shard_index, shard_count; /* count 0 = all records */
    int frame_records;
    double frame_seconds;
    int verbosity;            /* 0 = no progress or summary */
    bool progress_tty;
    const int *eos_ids;
    int n_eos;
    const pb_gen_settings *base;
    /* Resume (gen/resume.h): a file output keeps OUT.partial.state at every
     * durable frame end. resume: continue OUT.partial from its state. */
    bool resume;
    const char *model_fp;     /* pb_resume_model_fp() of the model folder */
    double grace_seconds;     /* after a stop signal, time to finish records in flight */
} pb_driver_opts;

typedef struct pb_driver_stats {
    uint64_t records, errors;
    uint64_t prompt_tokens, completion_tokens;
    double wall_seconds;
    double prefill_seconds, decode_seconds; /* micro-batch time shared by token count */
    double ttft_mean, ttft_max;             /* admission to first token, seconds */
    double first_token_seconds;             /* run start to the first token of any record */
    uint64_t micro_batches;
    pb_pipe_stats pipe;
    uint64_t resumed_records;  /* already in OUT.partial when this run started */
    uint64_t resumed_errors;   /* ... of which error records */
    bool already_complete;     /* --resume found OUT complete: nothing done */
} pb_driver_stats;

/* PB_ERR_INTERRUPTED after a stop signal (gen/stop.h): admission stopped,
 * records in flight finished within grace_seconds (or dropped), what was in
 * order written and made durable; continue with resume. */
pb_status pb_driver_run(const pb_driver_opts *o, pb_pipe *pipe, const pb_tokenizer *tok,
                        pb_driver_stats *stats);

/* Write stats as JSON to path. */
pb_status pb_driver_write_metrics(const char *path, const pb_driver_stats *s);

#endif
