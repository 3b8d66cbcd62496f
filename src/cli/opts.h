/* The whole command-line surface of pippy-batch, parsed and validated in
 * one place (opts.c). Commands receive a const pb_opts. */
#ifndef PB_CLI_OPTS_H
#define PB_CLI_OPTS_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "backend/backend.h"
#include "common/status.h"
#include "gen/record.h"

typedef enum pb_command {
    PB_CMD_RUN = 0,    /* default: batch generation */
    PB_CMD_PLAN,       /* who loads what, memory per rank */
    PB_CMD_TOKENIZE,   /* {"text"} -> {"ids"} */
    PB_CMD_DETOKENIZE, /* {"ids"} -> {"text"} */
    PB_CMD_RENDER,     /* chat records -> {"prompt"} */
    PB_CMD_HELP,
    PB_CMD_VERSION
} pb_command;

typedef enum pb_split_kind {
    PB_SPLIT_EQUAL_SIZE = 0, PB_SPLIT_THRESHOLD, PB_SPLIT_POINTS, PB_SPLIT_BALANCED
} pb_split_kind;
typedef enum pb_on_error { PB_ON_ERROR_RECORD = 0, PB_ON_ERROR_ABORT } pb_on_error;
typedef enum pb_backend_kind { PB_BACKEND_AUTO = 0, PB_BACKEND_CPU, PB_BACKEND_CUDA } pb_backend_kind;

#define PB_MAX_STOPS PB_GEN_MAX_STOPS
#define PB_MAX_SPLIT_POINTS 1024


typedef struct pb_opts {
    pb_command cmd;
    const char *model_dir;   /* --model; NULL = the demo model */
    const char *index_path;  /* --index */
    const char *tokenizer;   /* --tokenizer (tokenize/detokenize) */
    const char *template_path;    /* render --template FILE */
    const char *tokenizer_config; /* render --tokenizer-config FILE */
    const char *in_path;     /* --in; "-" = stdin (default "-") */
    const char *out_path;    /* --out; "-" = stdout (default "-") */
    const char *metrics_path;/* --metrics */

    /* split */
    pb_split_kind split;
    uint64_t split_threshold;          /* threshold:SIZE in bytes */
    int n_split_points;
    int split_points[PB_MAX_SPLIT_POINTS];
    int ranks;                         /* plan --ranks N */
    bool json;                         /* plan --json */

    /* batching */
    int batch_size;          /* sequences in flight (default 16) */
    int chunks;              /* micro-batches (default: world size, at least 1) ; 0 = auto */
    int max_seq_len;         /* KV cache length per sequence; 0 = model context */
    int max_batch_tokens;    /* tokens a micro-batch carries at most; 0 = 512 (or the micro-batch's sequences) */
    int threads;             /* compute threads per rank; 0 = auto */
    pb_backend_kind backend; /* --device cpu|cuda|auto */
    pb_wdtype weights_dtype; /* --weights-dtype stored|f32|bf16|int8 */
    pb_kvdtype kv_dtype;     /* --kv-dtype auto|f32|f16|bf16 */
    pb_mmprec matmul;        /* --matmul-precision f32|bf16 (DEFAULT when not given) */
    const char *weights_cache; /* --weights-cache DIR, else PB_WEIGHTS_CACHE, or NULL */
    bool weights_cache_env;    /* weights_cache came from PB_WEIGHTS_CACHE (a default:
                                * a backend without a cache ignores it) */
    bool no_prefix_sharing;  /* --no-prefix-sharing: no prompt starts from another slot's cache */
    const char *iface;       /* --iface NAME for TCP transport */
    int ip_family;           /* --ip-family: PB_IP_AUTO (0), PB_IP_4, PB_IP_6 */

    /* Generation settings given on the command line; has_* tells which were given
     * (the rest fall back to generation_config.json, then to the built-in
     * defaults: pb_gen_settings_base). gen.stops points at stop_list. */
    pb_gen_cli gen;
    const char *stop_list[PB_MAX_STOPS];

    /* records and files */
    pb_on_error on_error;
    bool resume;
    bool force;              /* --force: replace an existing --out FILE */
    double grace_seconds;    /* --grace (default 30) */
    int shard_index, shard_count; /* --shard I/N; count 0 = no sharding */
    bool shard_auto;         /* --shard auto */
    int frame_records;       /* --frame-records N (default 64) */
    double frame_seconds;    /* --frame-seconds T (default 10) */

    /* tokenize/detokenize */
    bool no_special;         /* tokenize --no-special */
    bool skip_special;       /* detokenize --skip-special */

    int verbosity;           /* 0 quiet, 1 normal, 2 verbose (-v), 3 debug (-vv) */
    bool progress_tty;       /* decided at start: stderr is a TTY */
} pb_opts;

/* Parse argv into opts. On a usage error returns PB_ERR_USAGE with a one-line
 * detail naming the bad option or value (pb_last_error()). */
pb_status pb_opts_parse(int argc, char **argv, pb_opts *opts);
/* --max-batch-tokens against a micro-batch's sequences (--batch-size in `chunks`): PB_ERR_USAGE below them. */
pb_status pb_opts_check_batch_tokens(const pb_opts *o, int chunks);

void pb_opts_print_help(FILE *fp);
void pb_opts_print_version(FILE *fp);

#endif
