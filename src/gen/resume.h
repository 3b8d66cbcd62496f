/* Resume state: the sidecar NAME.partial.state written at every durable
 * frame end of NAME.partial (write + fsync + rename, so it is always whole),
 * and the fingerprints a continuing run must match.
 *
 *   {"version": 1, "records": N, "bytes": B, "input_line": L,
 *    "compressed": true, "model": "...", "input": "...", "settings": "..."}
 *
 * records/bytes: the first B bytes of NAME.partial hold the first N output
 * records (complete zstd frames for .zst); input_line: the input line of
 * record N (0 when none). The fingerprints are readable strings compared as a
 * whole: model = hashes of config.json, generation_config.json,
 * tokenizer.json and the checkpoint index; input = path, size and hashes of
 * its first and last bytes; settings = everything that changes an output
 * record (generation defaults, context, shard, --on-error). Batch size,
 * chunks and the number of ranks do not change outputs and may differ. */
#ifndef PB_GEN_RESUME_H
#define PB_GEN_RESUME_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/record.h"

typedef struct pb_resume_state {
    uint64_t records, bytes, input_line;
    bool compressed;
    char *model, *input, *settings; /* owned */
} pb_resume_state;

void pb_resume_state_clear(pb_resume_state *s);
/* Read path into *s; *exists = false (and PB_OK) when there is no such file.
 * PB_ERR_USAGE naming the file when it is not a valid state. */
pb_status pb_resume_load(const char *path, pb_resume_state *s, bool *exists);
/* Replace path atomically and durably with s. */
pb_status pb_resume_save(const char *path, const pb_resume_state *s);

/* Fingerprints (caller frees *out). index_path: --index or NULL. */
pb_status pb_resume_model_fp(const char *dir, const char *index_path, char **out);
pb_status pb_resume_input_fp(const char *in_path, char **out);
pb_status pb_resume_settings_fp(const pb_gen_settings *base, int context, int shard_index,
                                int shard_count, bool abort_on_error, char **out);

#endif
