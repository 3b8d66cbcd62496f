/* The runner: the files of a run around the engine (gen/engine.h), as
 * zstd's programs/fileio.c is around its library.
 *
 *   pb_runner_open     checks needing no model: --in exists and is readable,
 *                      --out is not a directory, not the input, not an
 *                      existing file (unless --force), its folder is
 *                      writable, no leftover OUT.partial (unless --resume or
 *                      --force), the state file of --resume; opens the input.
 *   pb_runner_prepare  the --resume rules needing the model folder's and the
 *                      settings' fingerprints (small files, no weights): the
 *                      kept prefix is checked and cut, or OUT is complete and
 *                      there is nothing to do.
 *   pb_runner_run      reads records (sharding, skipping what OUT.partial
 *                      already holds), feeds the engine, writes its results in
 *                      input order (record.h shapes), keeps the resume state
 *                      at every durable frame end, and renames OUT.partial to
 *                      OUT when complete.
 *
 * Both checking steps run before the engine (model, stages, pipeline) is
 * built, so a mistake costs no load time; nothing is created or removed on
 * disk before pb_runner_run. */
#ifndef PB_GEN_RUNNER_H
#define PB_GEN_RUNNER_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/engine.h"
#include "gen/record.h"

typedef struct pb_runner pb_runner;

typedef struct pb_runner_opts {
    const char *in_path;      /* "-" = stdin */
    const char *out_path;     /* "-" = stdout */
    const char *metrics_path; /* NULL = none */
    bool force;               /* replace an existing OUT (and a leftover OUT.partial) */
    bool resume;              /* continue OUT.partial from its state (gen/resume.h) */
    bool abort_on_error;
    int shard_index, shard_count; /* count 0 = all records */
    int batch_size;           /* sizes the reorder buffer */
    int frame_records;
    double frame_seconds;
    int verbosity;            /* 0 = no progress */
    bool progress_tty;
} pb_runner_opts;

/* What the run needs from the model folder, known before the weights load. */
typedef struct pb_runner_model {
    const char *dir, *index_path;  /* fingerprinted for --resume */
    const char *variant;           /* also fingerprinted when not NULL: what else changes the output
                                      (e.g. "weights=bf16" for --weights-dtype) */
    const char *name;              /* for the OpenAI output shape */
    const pb_gen_settings *base;   /* CLI > generation_config.json > built-in */
    int context;
} pb_runner_model;

typedef struct pb_run_stats {
    uint64_t records, errors;
    uint64_t prompt_tokens, completion_tokens;
    double wall_seconds;
    pb_engine_stats engine;
    uint64_t resumed_records;  /* already in OUT.partial when this run started */
    uint64_t resumed_errors;   /* ... of which error records */
    bool already_complete;     /* --resume found OUT complete: nothing done */
} pb_run_stats;

/* The options are kept by reference until pb_runner_free. */
pb_status pb_runner_open(const pb_runner_opts *o, pb_runner **out);
/* m is kept by reference. *done: --resume found OUT complete (the stats
 * count its error records); skip pb_runner_run. */
pb_status pb_runner_prepare(pb_runner *r, const pb_runner_model *m, bool *done);
/* PB_ERR_INTERRUPTED after a stop signal: what was in order is written and
 * durable; continue with --resume. */
pb_status pb_runner_run(pb_runner *r, const pb_engine_opts *eo, pb_pipe *pipe,
                        const pb_tokenizer *tok);
const pb_run_stats *pb_runner_stats(const pb_runner *r);
void pb_runner_free(pb_runner *r);

/* Write stats as JSON to path. */
pb_status pb_run_write_metrics(const char *path, const pb_run_stats *s);
/* Prefill tokens/s: the prompt tokens computed (not those copied from a
 * shared prefix) over the prefill time; 0 without one. */
double pb_run_prefill_rate(const pb_run_stats *s);

#endif
