/* Command-line parsing and validation (getopt_long). Every usage error is
 * one line naming the option or value, returned as PB_ERR_USAGE. */
#include "config.h"
#include "cli/opts.h"
#include "cpu/kernels.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <pcre2.h>
#include <pmix.h>
#include <utf8proc.h>
#include <zstd.h>
#ifdef HAVE_OPENBLAS_GET_CONFIG
#endif

#include "common/util.h"
#include "gen/beam.h"
#include "net/addr.h"

enum {
    OPT_INDEX = 1000, OPT_METRICS, OPT_SPLIT_POLICY, OPT_SPLIT_POINTS, OPT_MAX_SEQ_LEN,
    OPT_DEVICE, OPT_IFACE, OPT_MAX_TOKENS, OPT_TEMPERATURE, OPT_TOP_K, OPT_TOP_P, OPT_MIN_P,
    OPT_REP_PENALTY, OPT_SEED, OPT_STOP, OPT_ON_ERROR, OPT_RESUME, OPT_GRACE, OPT_SHARD,
    OPT_FRAME_RECORDS, OPT_FRAME_SECONDS, OPT_RANKS, OPT_JSON, OPT_TOKENIZER, OPT_NO_SPECIAL,
    OPT_SKIP_SPECIAL, OPT_WEIGHTS_DTYPE, OPT_KV_DTYPE, OPT_TEMPLATE, OPT_TOKENIZER_CONFIG, OPT_MIN_TOKENS,
    OPT_IGNORE_EOS, OPT_MATMUL_PREC, OPT_WEIGHTS_CACHE, OPT_NO_WEIGHTS_CACHE, OPT_NO_PREFIX_SHARING,
    OPT_MAX_BATCH_TOKENS, OPT_IP_FAMILY, OPT_N, OPT_FREQ_PENALTY, OPT_PRES_PENALTY, OPT_LOGPROBS,
    OPT_PROMPT_LOGPROBS, OPT_BEAMS, OPT_LENGTH_PENALTY, OPT_EARLY_STOPPING, OPT_TASK, OPT_POOLING, OPT_NO_NORMALIZE
};

static const struct option long_opts[] = {
    {"model", required_argument, NULL, 'm'},
    {"index", required_argument, NULL, OPT_INDEX},
    {"in", required_argument, NULL, 'i'},
    {"out", required_argument, NULL, 'o'},
    {"metrics", required_argument, NULL, OPT_METRICS},
    {"split-policy", required_argument, NULL, OPT_SPLIT_POLICY},
    {"split-points", required_argument, NULL, OPT_SPLIT_POINTS},
    {"batch-size", required_argument, NULL, 'b'},
    {"chunks", required_argument, NULL, 'c'},
    {"max-seq-len", required_argument, NULL, OPT_MAX_SEQ_LEN},
    {"max-batch-tokens", required_argument, NULL, OPT_MAX_BATCH_TOKENS},
    {"threads", required_argument, NULL, 't'},
    {"device", required_argument, NULL, OPT_DEVICE},
    {"weights-dtype", required_argument, NULL, OPT_WEIGHTS_DTYPE},
    {"kv-dtype", required_argument, NULL, OPT_KV_DTYPE},
    {"matmul-precision", required_argument, NULL, OPT_MATMUL_PREC},
    {"weights-cache", required_argument, NULL, OPT_WEIGHTS_CACHE},
    {"no-weights-cache", no_argument, NULL, OPT_NO_WEIGHTS_CACHE},
    {"no-prefix-sharing", no_argument, NULL, OPT_NO_PREFIX_SHARING},
    {"iface", required_argument, NULL, OPT_IFACE},
    {"ip-family", required_argument, NULL, OPT_IP_FAMILY},
    {"max-tokens", required_argument, NULL, OPT_MAX_TOKENS},
    {"min-tokens", required_argument, NULL, OPT_MIN_TOKENS},
    {"n", required_argument, NULL, OPT_N},
    {"logprobs", required_argument, NULL, OPT_LOGPROBS},
    {"prompt-logprobs", required_argument, NULL, OPT_PROMPT_LOGPROBS},
    {"ignore-eos", no_argument, NULL, OPT_IGNORE_EOS},
    {"beams", required_argument, NULL, OPT_BEAMS},
    {"task", required_argument, NULL, OPT_TASK},
    {"pooling", required_argument, NULL, OPT_POOLING},
    {"no-normalize", no_argument, NULL, OPT_NO_NORMALIZE},
    {"length-penalty", required_argument, NULL, OPT_LENGTH_PENALTY},
    {"early-stopping", required_argument, NULL, OPT_EARLY_STOPPING},
    {"temperature", required_argument, NULL, OPT_TEMPERATURE},
    {"top-k", required_argument, NULL, OPT_TOP_K},
    {"top-p", required_argument, NULL, OPT_TOP_P},
    {"min-p", required_argument, NULL, OPT_MIN_P},
    {"frequency-penalty", required_argument, NULL, OPT_FREQ_PENALTY},
    {"presence-penalty", required_argument, NULL, OPT_PRES_PENALTY},
    {"repetition-penalty", required_argument, NULL, OPT_REP_PENALTY},
    {"seed", required_argument, NULL, OPT_SEED},
    {"stop", required_argument, NULL, OPT_STOP},
    {"on-error", required_argument, NULL, OPT_ON_ERROR},
    {"resume", no_argument, NULL, OPT_RESUME},
    {"force", no_argument, NULL, 'f'},
    {"grace", required_argument, NULL, OPT_GRACE},
    {"shard", required_argument, NULL, OPT_SHARD},
    {"frame-records", required_argument, NULL, OPT_FRAME_RECORDS},
    {"frame-seconds", required_argument, NULL, OPT_FRAME_SECONDS},
    {"ranks", required_argument, NULL, OPT_RANKS},
    {"json", no_argument, NULL, OPT_JSON},
    {"tokenizer", required_argument, NULL, OPT_TOKENIZER},
    {"no-special", no_argument, NULL, OPT_NO_SPECIAL},
    {"skip-special", no_argument, NULL, OPT_SKIP_SPECIAL},
    {"template", required_argument, NULL, OPT_TEMPLATE},
    {"tokenizer-config", required_argument, NULL, OPT_TOKENIZER_CONFIG},
    {"quiet", no_argument, NULL, 'q'},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, 'V'},
    {NULL, 0, NULL, 0},
};
static const char short_opts[] = "+m:i:o:b:c:t:fqvhV";

/* Which commands accept an option (bit per pb_command); 0 entries accept all. */
#define C_RUN (1u << PB_CMD_RUN)
#define C_PLAN (1u << PB_CMD_PLAN)
#define C_TOK (1u << PB_CMD_TOKENIZE)
#define C_DETOK (1u << PB_CMD_DETOKENIZE)
#define C_RENDER (1u << PB_CMD_RENDER)

static unsigned option_commands(int c)
{
    switch (c) {
    case OPT_RANKS: case OPT_JSON: return C_PLAN;
    case OPT_TOKENIZER: return C_TOK | C_DETOK;
    case OPT_NO_SPECIAL: return C_TOK;
    case OPT_SKIP_SPECIAL: return C_DETOK;
    case OPT_TEMPLATE: case OPT_TOKENIZER_CONFIG: return C_RENDER;
    case OPT_INDEX: case OPT_SPLIT_POLICY: case OPT_SPLIT_POINTS: case OPT_WEIGHTS_DTYPE: case OPT_KV_DTYPE: case OPT_DEVICE:
        return C_RUN | C_PLAN;
    case 'b': case OPT_MAX_SEQ_LEN: case OPT_MAX_BATCH_TOKENS: return C_RUN | C_PLAN;
    case 'm': return C_RUN | C_PLAN | C_TOK | C_DETOK | C_RENDER;
    case 'q': case 'v': case 'h': case 'V': return ~0u;
    default: return C_RUN;
    }
}

static const char *command_name(pb_command c)
{
    switch (c) {
    case PB_CMD_RUN: return "run";
    case PB_CMD_PLAN: return "plan";
    case PB_CMD_TOKENIZE: return "tokenize";
    case PB_CMD_DETOKENIZE: return "detokenize";
    case PB_CMD_RENDER: return "render";
    case PB_CMD_HELP: return "help";
    case PB_CMD_VERSION: return "version";
    }
    return "?";
}

static pb_status parse_int(const char *opt, const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (end == s || *end || errno)
        return pb_error(PB_ERR_USAGE, "%s: '%s' is not an integer", opt, s);
    if (v < lo || v > hi)
        return pb_error(PB_ERR_USAGE, "%s: %ld is out of range [%ld, %ld]", opt, v, lo, hi);
    *out = (int)v;
    return PB_OK;
}

static pb_status parse_float(const char *opt, const char *s, double lo, double hi, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end || errno || !isfinite(v))
        return pb_error(PB_ERR_USAGE, "%s: '%s' is not a number", opt, s);
    if (v < lo || v > hi)
        return pb_error(PB_ERR_USAGE, "%s: %g is out of range [%g, %g]", opt, v, lo, hi);
    *out = v;
    return PB_OK;
}

static pb_status parse_split_points(const char *s, pb_opts *o)
{
    o->n_split_points = 0;
    const char *p = s;
    int prev = 0;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v <= 0 || v > INT_MAX)
            return pb_error(PB_ERR_USAGE, "--split-points: '%s' is not a list of positive layer numbers (e.g. 8,16,24)", s);
        if (v <= prev)
            return pb_error(PB_ERR_USAGE, "--split-points: layer numbers must increase (%ld after %d)", v, prev);
        if (o->n_split_points >= PB_MAX_SPLIT_POINTS)
            return pb_error(PB_ERR_USAGE, "--split-points: more than %d points", PB_MAX_SPLIT_POINTS);
        o->split_points[o->n_split_points++] = (int)v;
        prev = (int)v;
        if (*end == ',')
            end++;
        else if (*end)
            return pb_error(PB_ERR_USAGE, "--split-points: unexpected '%c' in '%s'", *end, s);
        p = end;
    }
    if (o->n_split_points == 0)
        return pb_error(PB_ERR_USAGE, "--split-points: empty list");
    return PB_OK;
}

static pb_status parse_shard(const char *s, pb_opts *o)
{
    if (strcmp(s, "auto") == 0) {
        o->shard_auto = true;
        return PB_OK;
    }
    long i, n;
    char *end;
    errno = 0;
    i = strtol(s, &end, 10);
    if (end == s || *end != '/' || errno)
        return pb_error(PB_ERR_USAGE, "--shard: '%s' is not I/N or auto", s);
    const char *q = end + 1;
    n = strtol(q, &end, 10);
    if (end == q || *end || errno)
        return pb_error(PB_ERR_USAGE, "--shard: '%s' is not I/N or auto", s);
    if (n < 1 || n > 1000000 || i < 0 || i >= n)
        return pb_error(PB_ERR_USAGE, "--shard: need 0 <= I < N, got %ld/%ld", i, n);
    o->shard_index = (int)i;
    o->shard_count = (int)n;
    return PB_OK;
}

static void opts_defaults(pb_opts *o)
{
    memset(o, 0, sizeof *o);
    o->cmd = PB_CMD_RUN;
    o->gen.stops = o->stop_list;
    o->in_path = "-";
    o->out_path = "-";
    o->split = PB_SPLIT_EQUAL_SIZE;
    o->ranks = 1;
    o->batch_size = 16;
    o->chunks = 0;
    o->grace_seconds = 30.0;
    o->frame_records = 64;
    o->frame_seconds = 10.0;
    o->verbosity = 1;
    o->progress_tty = isatty(2);
}

pb_status pb_opts_check_batch_tokens(const pb_opts *o, int chunks)
{
    const int per_chunk = (o->batch_size + chunks - 1) / chunks;
    if (o->max_batch_tokens > 0 && o->max_batch_tokens < per_chunk)
        return pb_error(PB_ERR_USAGE, "--max-batch-tokens %d is less than a micro-batch's %d sequences (--batch-size "
                        "%d in %d chunks): a decode step needs a token for each", o->max_batch_tokens, per_chunk,
                        o->batch_size, chunks);
    return PB_OK;
}

pb_status pb_opts_parse(int argc, char **argv, pb_opts *o)
{
    opts_defaults(o);
    int first = 1;
    if (argc > 1 && argv[1][0] != '-') {
        static const struct { const char *name; pb_command cmd; } cmds[] = {
            {"run", PB_CMD_RUN}, {"plan", PB_CMD_PLAN}, {"tokenize", PB_CMD_TOKENIZE},
            {"detokenize", PB_CMD_DETOKENIZE}, {"render", PB_CMD_RENDER}, {"help", PB_CMD_HELP}, {"version", PB_CMD_VERSION},
        };
        size_t k;
        for (k = 0; k < sizeof cmds / sizeof cmds[0]; k++)
            if (strcmp(argv[1], cmds[k].name) == 0)
                break;
        if (k == sizeof cmds / sizeof cmds[0])
            return pb_error(PB_ERR_USAGE, "unknown command '%s' (commands: run, plan, tokenize, detokenize, render; see --help)", argv[1]);
        o->cmd = cmds[k].cmd;
        first = 2;
    }
    if (o->cmd == PB_CMD_HELP || o->cmd == PB_CMD_VERSION)
        return PB_OK;

    bool no_wcache = false; /* --no-weights-cache: not PB_WEIGHTS_CACHE either */
    /* getopt_long over argv[first..]: build a shifted view keeping argv[0]. */
    int nargc = argc - first + 1;
    char **nargv = argv + first - 1;
    char *saved0 = nargv[0];
    nargv[0] = argv[0];
    optind = 1;
    opterr = 0;
    pb_status st = PB_OK;
    int c, longidx;
    double d;
    for (;;) {
        longidx = -1;
        c = getopt_long(nargc, nargv, short_opts, long_opts, &longidx);
        if (c == -1)
            break;
        if (c == '?' || c == ':') {
            const char *bad = nargv[optind - 1];
            if (optopt && optopt < 256 && strchr("mioobct", optopt) && c == '?' &&
                bad && bad[0] == '-' && bad[1] == optopt && !bad[2])
                st = pb_error(PB_ERR_USAGE, "option -%c needs a value", optopt);
            else if (bad && strncmp(bad, "--", 2) == 0 && optopt)
                st = pb_error(PB_ERR_USAGE, "option %s needs a value", bad);
            else if (bad && strncmp(bad, "--", 2) == 0)
                st = pb_error(PB_ERR_USAGE, "unknown option '%s' (see --help)", bad);
            else
                st = pb_error(PB_ERR_USAGE, "unknown option '-%c' (see --help)", optopt ? optopt : '?');
            goto out;
        }
        const char *name = longidx >= 0 ? long_opts[longidx].name : NULL;
        char optname[64];
        if (name)
            snprintf(optname, sizeof optname, "--%s", name);
        else
            snprintf(optname, sizeof optname, "-%c", c);
        if (!(option_commands(c) & (1u << o->cmd))) {
            st = pb_error(PB_ERR_USAGE, "option %s does not apply to the '%s' command", optname, command_name(o->cmd));
            goto out;
        }
        switch (c) {
        case 'm': o->model_dir = optarg; break;
        case OPT_INDEX: o->index_path = optarg; break;
        case 'i': o->in_path = optarg; break;
        case 'o': o->out_path = optarg; break;
        case OPT_METRICS: o->metrics_path = optarg; break;
        case OPT_SPLIT_POLICY:
            if (strcmp(optarg, "equal_size") == 0) {
                o->split = PB_SPLIT_EQUAL_SIZE;
            } else if (strcmp(optarg, "balanced") == 0) {
                o->split = PB_SPLIT_BALANCED;
            } else if (strncmp(optarg, "threshold:", 10) == 0) {
                uint64_t v;
                if (pb_parse_size(optarg + 10, &v) != PB_OK || v == 0) {
                    st = pb_error(PB_ERR_USAGE, "--split-policy: bad size in '%s' (e.g. threshold:490M)", optarg);
                    goto out;
                }
                o->split = PB_SPLIT_THRESHOLD;
                o->split_threshold = v;
            } else {
                st = pb_error(PB_ERR_USAGE, "--split-policy: '%s' is not equal_size, balanced or threshold:SIZE", optarg);
                goto out;
            }
            break;
        case OPT_SPLIT_POINTS:
            PB_CHECK_GOTO(parse_split_points(optarg, o), st, out);
            o->split = PB_SPLIT_POINTS;
            break;
        case 'b': PB_CHECK_GOTO(parse_int(optname, optarg, 1, 65536, &o->batch_size), st, out); break;
        case 'c': PB_CHECK_GOTO(parse_int(optname, optarg, 1, 4096, &o->chunks), st, out); break;
        case OPT_MAX_SEQ_LEN: PB_CHECK_GOTO(parse_int(optname, optarg, 1, 1 << 24, &o->max_seq_len), st, out); break;
        case OPT_MAX_BATCH_TOKENS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 1, 1 << 20, &o->max_batch_tokens), st, out);
            break;
        case 't': PB_CHECK_GOTO(parse_int(optname, optarg, 1, 4096, &o->threads), st, out); break;
        case OPT_DEVICE:
            if (strcmp(optarg, "cpu") == 0) o->backend = PB_BACKEND_CPU;
            else if (strcmp(optarg, "cuda") == 0) o->backend = PB_BACKEND_CUDA;
            else if (strcmp(optarg, "auto") == 0) o->backend = PB_BACKEND_AUTO;
            else { st = pb_error(PB_ERR_USAGE, "--device: '%s' is not cpu, cuda or auto", optarg); goto out; }
            break;
        case OPT_WEIGHTS_DTYPE:
            if (pb_wdtype_parse(optarg, &o->weights_dtype) != 0) {
                st = pb_error(PB_ERR_USAGE, "--weights-dtype: '%s' is not stored, f32, bf16 or int8", optarg);
                goto out;
            }
            break;
        case OPT_KV_DTYPE:
            if (pb_kvdtype_parse(optarg, &o->kv_dtype) != 0) {
                st = pb_error(PB_ERR_USAGE, "--kv-dtype: '%s' is not auto, f32, f16 or bf16", optarg);
                goto out;
            }
            break;
        case OPT_MATMUL_PREC:
            if (pb_mmprec_parse(optarg, &o->matmul) != 0) {
                st = pb_error(PB_ERR_USAGE, "--matmul-precision: '%s' is not f32, bf16 or bf16-amx", optarg);
                goto out;
            }
            break;
        case OPT_WEIGHTS_CACHE:
            if (!*optarg) {
                st = pb_error(PB_ERR_USAGE, "--weights-cache: an empty directory name");
                goto out;
            }
            o->weights_cache = optarg;
            no_wcache = false;
            break;
        case OPT_NO_WEIGHTS_CACHE:
            o->weights_cache = NULL;
            no_wcache = true;
            break;
        case OPT_NO_PREFIX_SHARING: o->no_prefix_sharing = true; break;
        case OPT_IFACE: o->iface = optarg; break;
        case OPT_IP_FAMILY: PB_CHECK_GOTO(pb_ip_family_parse(optarg, &o->ip_family), st, out); break;
        case OPT_MAX_TOKENS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 0, 1 << 24, &o->gen.max_tokens), st, out);
            o->gen.has_max_tokens = true;
            break;
        case OPT_N: PB_CHECK_GOTO(parse_int(optname, optarg, 1, PB_GEN_MAX_N, &o->gen.n), st, out); break;
        case OPT_LOGPROBS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 0, PB_MAX_LOGPROBS, &o->gen.logprobs), st, out);
            o->gen.has_logprobs = true;
            break;
        case OPT_PROMPT_LOGPROBS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 0, PB_MAX_LOGPROBS, &o->gen.prompt_logprobs), st, out);
            o->gen.has_prompt_logprobs = true;
            break;
        case OPT_MIN_TOKENS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 0, 1 << 24, &o->gen.min_tokens), st, out);
            o->gen.has_min_tokens = true;
            break;
        case OPT_IGNORE_EOS: o->gen.ignore_eos = true; break;
        case OPT_TASK:
            if (strcmp(optarg, "generate") && strcmp(optarg, "embed")) {
                st = pb_error(PB_ERR_USAGE, "--task %s: give generate or embed", optarg);
                goto out;
            }
            o->gen.embed = !strcmp(optarg, "embed");
            break;
        case OPT_POOLING:
            o->gen.pooling = !strcmp(optarg, "last") ? 1 + PB_POOL_LAST : !strcmp(optarg, "mean") ? 1 + PB_POOL_MEAN
                             : !strcmp(optarg, "cls") ? 1 + PB_POOL_CLS : 0;
            if (!o->gen.pooling) {
                st = pb_error(PB_ERR_USAGE, "--pooling %s: give last, mean or cls", optarg);
                goto out;
            }
            break;
        case OPT_NO_NORMALIZE: o->gen.no_normalize = true; break;
        case OPT_BEAMS:
            PB_CHECK_GOTO(parse_int(optname, optarg, 1, PB_BEAM_MAX, &o->gen.beams), st, out);
            o->gen.has_beams = true;
            break;
        case OPT_LENGTH_PENALTY:
            PB_CHECK_GOTO(parse_float(optname, optarg, -100, 100, &d), st, out);
            o->gen.length_penalty = (float)d;
            o->gen.has_length_penalty = true;
            break;
        case OPT_EARLY_STOPPING:
            if (!strcmp(optarg, "false"))
                o->gen.early_stopping = PB_BEAM_EARLY_HEURISTIC;
            else if (!strcmp(optarg, "true"))
                o->gen.early_stopping = PB_BEAM_EARLY_TRUE;
            else if (!strcmp(optarg, "never"))
                o->gen.early_stopping = PB_BEAM_EARLY_NEVER;
            else {
                st = pb_error(PB_ERR_USAGE, "--early-stopping %s: give false, true or never", optarg);
                goto out;
            }
            o->gen.has_early_stopping = true;
            break;
        case OPT_TEMPERATURE:
            PB_CHECK_GOTO(parse_float(optname, optarg, 0, 100, &d), st, out);
            o->gen.temperature = (float)d; o->gen.has_temperature = true;
            break;
        case OPT_TOP_K:
            PB_CHECK_GOTO(parse_int(optname, optarg, 0, INT_MAX, &o->gen.top_k), st, out);
            o->gen.has_top_k = true;
            break;
        case OPT_TOP_P:
            PB_CHECK_GOTO(parse_float(optname, optarg, 0, 1, &d), st, out);
            if (d == 0) { st = pb_error(PB_ERR_USAGE, "--top-p: must be in (0, 1]"); goto out; }
            o->gen.top_p = (float)d; o->gen.has_top_p = true;
            break;
        case OPT_MIN_P:
            PB_CHECK_GOTO(parse_float(optname, optarg, 0, 1, &d), st, out);
            o->gen.min_p = (float)d; o->gen.has_min_p = true;
            break;
        case OPT_REP_PENALTY:
            PB_CHECK_GOTO(parse_float(optname, optarg, 0, 100, &d), st, out);
            if (d == 0) { st = pb_error(PB_ERR_USAGE, "--repetition-penalty: must be > 0"); goto out; }
            o->gen.repetition_penalty = (float)d; o->gen.has_repetition_penalty = true;
            break;
        case OPT_FREQ_PENALTY:
            PB_CHECK_GOTO(parse_float(optname, optarg, -2, 2, &d), st, out);
            o->gen.frequency_penalty = (float)d;
            break;
        case OPT_PRES_PENALTY:
            PB_CHECK_GOTO(parse_float(optname, optarg, -2, 2, &d), st, out);
            o->gen.presence_penalty = (float)d;
            break;
        case OPT_SEED: {
            char *end;
            errno = 0;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (end == optarg || *end || errno || optarg[0] == '-') {
                st = pb_error(PB_ERR_USAGE, "--seed: '%s' is not a non-negative integer", optarg);
                goto out;
            }
            o->gen.seed = v; o->gen.has_seed = true;
            break;
        }
        case OPT_STOP:
            if (!optarg[0]) { st = pb_error(PB_ERR_USAGE, "--stop: empty stop string"); goto out; }
            if (o->gen.n_stops >= PB_MAX_STOPS) { st = pb_error(PB_ERR_USAGE, "--stop: more than %d stop strings", PB_MAX_STOPS); goto out; }
            o->stop_list[o->gen.n_stops++] = optarg;
            break;
        case OPT_ON_ERROR:
            if (strcmp(optarg, "abort") == 0) o->on_error = PB_ON_ERROR_ABORT;
            else if (strcmp(optarg, "record") == 0) o->on_error = PB_ON_ERROR_RECORD;
            else { st = pb_error(PB_ERR_USAGE, "--on-error: '%s' is not record or abort", optarg); goto out; }
            break;
        case OPT_RESUME: o->resume = true; break;
        case 'f': o->force = true; break;
        case OPT_GRACE: PB_CHECK_GOTO(parse_float(optname, optarg, 0, 86400, &o->grace_seconds), st, out); break;
        case OPT_SHARD: PB_CHECK_GOTO(parse_shard(optarg, o), st, out); break;
        case OPT_FRAME_RECORDS: PB_CHECK_GOTO(parse_int(optname, optarg, 1, 1 << 24, &o->frame_records), st, out); break;
        case OPT_FRAME_SECONDS: PB_CHECK_GOTO(parse_float(optname, optarg, 0.001, 86400, &o->frame_seconds), st, out); break;
        case OPT_RANKS: PB_CHECK_GOTO(parse_int(optname, optarg, 1, 65536, &o->ranks), st, out); break;
        case OPT_JSON: o->json = true; break;
        case OPT_TOKENIZER: o->tokenizer = optarg; break;
        case OPT_NO_SPECIAL: o->no_special = true; break;
        case OPT_SKIP_SPECIAL: o->skip_special = true; break;
        case OPT_TEMPLATE: o->template_path = optarg; break;
        case OPT_TOKENIZER_CONFIG: o->tokenizer_config = optarg; break;
        case 'q': o->verbosity = 0; break;
        case 'v': o->verbosity = o->verbosity < 1 ? 2 : o->verbosity + 1; break;
        case 'h': o->cmd = PB_CMD_HELP; goto out;
        case 'V': o->cmd = PB_CMD_VERSION; goto out;
        default:
            st = pb_error(PB_ERR_INTERNAL, "unhandled option %s", optname);
            goto out;
        }
    }
    if (optind < nargc) {
        st = pb_error(PB_ERR_USAGE, "unexpected argument '%s' (see --help)", nargv[optind]);
        goto out;
    }
    if (o->cmd == PB_CMD_RUN && !o->weights_cache && !no_wcache) {
        /* the default --weights-cache, as HF_HOME is HF's: an empty value is none */
        const char *env = getenv("PB_WEIGHTS_CACHE");
        if (env && *env) {
            o->weights_cache = env;
            o->weights_cache_env = true;
        }
    }
    if (o->model_dir && (o->template_path || o->tokenizer_config)) {
        st = pb_error(PB_ERR_USAGE, "--model and --template/--tokenizer-config are exclusive: give one");
        goto out;
    }
    if (o->model_dir && o->tokenizer) {
        st = pb_error(PB_ERR_USAGE, "--model and --tokenizer are exclusive: give one");
        goto out;
    }
    if (o->cmd == PB_CMD_RUN && o->chunks > 0)
        PB_CHECK_GOTO(pb_opts_check_batch_tokens(o, o->chunks), st, out);
    if (o->cmd == PB_CMD_RUN && o->chunks > o->batch_size) {
        st = pb_error(PB_ERR_USAGE, "--chunks %d is more than --batch-size %d: each micro-batch needs at least one sequence", o->chunks, o->batch_size);
        goto out;
    }
    if (o->cmd == PB_CMD_RUN && o->resume && strcmp(o->out_path, "-") == 0) {
        st = pb_error(PB_ERR_USAGE, "--resume needs --out FILE (standard output cannot be resumed)");
        goto out;
    }
    if (o->cmd == PB_CMD_RUN && o->resume && o->force) {
        st = pb_error(PB_ERR_USAGE, "--force and --resume are exclusive: --resume continues "
                      "FILE.partial, --force starts afresh");
        goto out;
    }
#ifndef PB_HAVE_CUDA
    /* with CUDA built, the rank checks for its GPU (cli/device.c) */
    if (o->cmd == PB_CMD_RUN && o->backend == PB_BACKEND_CUDA) {
        st = pb_error(PB_ERR_NOT_AVAILABLE, "--device cuda: this build has no CUDA support (configure --with-cuda)");
        goto out;
    }
#endif
out:
    nargv[0] = saved0;
    return st;
}

void pb_opts_print_help(FILE *fp)
{
    fputs(
"Usage: pippy-batch [run] [OPTIONS] [--in PROMPTS.jsonl] [--out RESULTS.jsonl[.zst]]\n"
"       pippy-batch plan --model DIR --ranks N [--split-policy P] [--json]\n"
"       pippy-batch tokenize   (--model DIR | --tokenizer FILE) [--no-special]\n"
"       pippy-batch detokenize (--model DIR | --tokenizer FILE) [--skip-special]\n"
"       pippy-batch render     (--model DIR | --template FILE | --tokenizer-config FILE)\n"
"\n"
"Offline batch text generation with a HuggingFace checkpoint split into pipeline\n"
"stages, one per rank. Launch alone, with mpirun, or with srun --mpi=pmix.\n"
"\n"
"Model:\n"
"  -m, --model DIR            HF model folder (config.json, tokenizer.json, weights);\n"
"                             default: the demo model shipped with pippy-batch\n"
"      --index FILE           checkpoint index file (default: found in DIR)\n"
"      --device cpu|cuda|auto compute device; auto (default): cuda when built with it and a\n"
"                             GPU is visible, else cpu. Rank r uses GPU (local rank % GPUs)\n"
"  -t, --threads N            compute threads per rank (default: cores / local ranks)\n"
"      --weights-dtype D      stored (default: as in the checkpoint), f32, bf16 or int8\n"
"                             (int8: a scale per 64 weights, 1.06 bytes a weight; inexact)\n"
"      --kv-dtype D           KV cache elements: auto (default: f32 on cpu, bf16 on cuda),\n"
"                             f32, f16 (half the memory of f32) or bf16 (as f16; with\n"
"                             --matmul-precision bf16 or bf16-amx, attention's products\n"
"                             take the bf16 dots or the tile unit too)\n"
"      --matmul-precision P   f32 (default: exact products), bf16 (activations rounded to\n"
"                             bf16 for bf16 weights: inexact, the same bits on every cpu)\n"
"                             or bf16-amx (those on Intel's AMX tile unit: bits of its own;\n"
"                             f16 and f32 weights too, split exactly into bf16 pieces);\n"
"                             cuda: the tensor cores for bf16/f16 weights (default, bf16)\n"
"                             or exact f32 products (f32)\n"
"      --weights-cache DIR    keep each stage's packed weights in DIR (made if missing) and\n"
"                             map them from there in later runs of the same settings (cpu;\n"
"                             default: $PB_WEIGHTS_CACHE; --no-weights-cache: none)\n"
"\n"
"Pipeline:\n"
"      --split-policy P       equal_size (default: equal parameter bytes), balanced (equal\n"
"                             compute per token, LM head counted) or threshold:SIZE\n"
"      --split-points L       manual split: stage i begins at decoder layer L[i], e.g. 8,16,24\n"
"  -b, --batch-size B         sequences in flight (default 16)\n"
"  -c, --chunks C             micro-batches the batch is split into (default: ranks, at most --batch-size)\n"
"      --max-seq-len T        KV cache length per sequence (default: model context)\n"
"      --max-batch-tokens N   tokens a micro-batch carries at most: prompt chunks and decode steps (default 512)\n"
"      --no-prefix-sharing    compute every prompt whole; by default a prompt starts as a\n"
"                             copy of the KV cache of the longest prefix it shares with a\n"
"                             sequence in flight or just finished: the same output bits\n"
"      --iface NAME           network interface for stage-to-stage TCP (default: routable)\n"
"      --ip-family auto|4|6   IPv4 or IPv6 between stages (default auto: IPv4 where there is one)\n"
"\n"
"Generation defaults (a record's own fields win; then generation_config.json):\n"
"      --max-tokens N         tokens to generate (default 64)\n"
"      --n N                  completions of each prompt (default 1; at most 128): sampled\n"
"                             from streams of their own, written in one record\n"
"      --logprobs N           each completion token's log probability, and those of the N\n"
"                             most likely tokens (0-20), in the output record\n"
"      --prompt-logprobs N    each prompt token's log probability and the N most likely\n"
"                             (0-20); with --max-tokens 0, a scoring run\n"
"      --min-tokens N         EOS and stop strings cannot end a completion before N tokens\n"
"      --ignore-eos           EOS never ends a completion: max_tokens are generated\n"
"      --beams B              beam search of B beams (at most 10), its --n best returned, as HF's\n"
"                             generate(num_beams=B, do_sample=False); 1 = greedy; default:\n"
"                             generation_config.json's num_beams (a record: \"use_beam_search\")\n"
"      --length-penalty X     beam search: scores over length ** X (default 1)\n"
"      --early-stopping false|true|never  beam search's end, as HF's (default false)\n"
"      --task embed           embeddings instead of completions: each record's input (or\n"
"                             /v1/embeddings line) gets its final hidden states pooled\n"
"      --pooling last|mean|cls  --task embed's pooling (default: the model's sentence-\n"
"                             transformers config, else last); --no-normalize: no L2 norm\n"
"      --temperature T        0 = greedy (default 0)\n"
"      --top-k K              keep the K most likely tokens (0 = off)\n"
"      --top-p P              nucleus sampling mass in (0, 1] (1 = off)\n"
"      --min-p P              drop tokens below P x the top probability (0 = off)\n"
"      --repetition-penalty R penalise tokens already seen (1 = off)\n"
"      --frequency-penalty F  minus F x a token's count in the completion from its logit (0 = off)\n"
"      --presence-penalty P   minus P from the logit of a token in the completion (0 = off)\n"
"      --seed S               sampling seed (default 0)\n"
"      --stop STR             stop string (repeatable, up to 16)\n"
"\n"
"Files and records:\n"
"  -i, --in FILE              prompts, JSONL (default: - = standard input)\n"
"  -o, --out FILE             results, JSONL; zstd-compressed when FILE ends in .zst;\n"
"                             written to FILE.partial, renamed when complete (default: -);\n"
"                             an existing FILE is refused, and FILE is never the input\n"
"  -f, --force                replace an existing --out FILE (and a leftover FILE.partial)\n"
"      --on-error record|abort  a bad line gives an error record (default) or stops the run\n"
"      --resume               continue an interrupted FILE.partial\n"
"      --shard I/N|auto       take every N-th record starting at I; auto = Slurm job array;\n"
"                             %a and %A in --out become the array task and job ids\n"
"      --frame-records N      end a zstd frame every N records (default 64)\n"
"      --frame-seconds T      ... or every T seconds (default 10)\n"
"      --grace SECONDS        on SIGTERM/SIGUSR1, time to flush before exit 75 (default 30)\n"
"      --metrics FILE         write the end summary as JSON\n"
"\n"
"plan:\n"
"      --ranks N              number of stages to plan for (default 1)\n"
"      --json                 machine-readable plan\n"
"\n"
"tokenize / detokenize (JSONL on stdin, JSONL on stdout):\n"
"      --tokenizer FILE       a tokenizer.json instead of --model\n"
"      --no-special           tokenize without BOS/EOS (add_special_tokens=False)\n"
"      --skip-special         detokenize dropping special tokens\n"
"\n"
"render (chat records on stdin -> {\"prompt\": text} on stdout, the chat template applied):\n"
"      --template FILE        a chat template (.jinja, or .json with chat_template)\n"
"      --tokenizer-config FILE  tokenizer_config.json: its chat_template and special tokens\n"
"\n"
"General:\n"
"  -q, --quiet                no progress or summary on stderr\n"
"  -v, --verbose              more detail on stderr (repeat for debug)\n"
"  -h, --help                 this help\n"
"  -V, --version              version and build features\n"
"\n"
"Examples:\n"
"  pippy-batch --model ./opt-1.3b --in prompts.jsonl --out out.jsonl.zst\n"
"  mpirun -np 4 pippy-batch --model /ckpt/llama --in p.jsonl --out out.jsonl.zst\n"
"  srun -N2 --ntasks-per-node=4 --mpi=pmix pippy-batch --model M --in p.jsonl --out o.jsonl.zst\n"
"  sbatch --array=0-15 --wrap 'srun pippy-batch --model M --in p.jsonl --shard auto --out out-%a.jsonl.zst --resume'\n"
"  jq -c '{prompt: .q}' questions.jsonl | pippy-batch --model M --out - | jq -r .text\n"
"  pippy-batch plan --model /ckpt/bloom-7b1 --ranks 4\n"
"  echo '{\"text\": \"Hello world!\"}' | pippy-batch tokenize --model M\n"
"\n"
"Exit status: 0 all records done; 1 runtime error; 2 usage or configuration error;\n"
"3 finished with error records; 75 interrupted (resumable with --resume).\n"
"See pippy-batch(1) for record formats, signals and files.\n", fp);
}

void pb_opts_print_version(FILE *fp)
{
    fprintf(fp, "pippy-batch %s\n", PACKAGE_VERSION);
#ifdef PB_HAVE_CUDA
    fprintf(fp, "cuda: yes (%s)\n", pb_backend_ops_of("cuda") ? "backend built" : "built; backend not yet available");
#else
    fputs("cuda: no\n", fp);
#endif
#ifdef PB_HAVE_NCCL
    fputs("nccl: yes\n", fp);
#else
    fputs("nccl: no\n", fp);
#endif
    fprintf(fp, "pmix: %s\n", PMIx_Get_version());
    fprintf(fp, "zstd: %s\n", ZSTD_versionString());
    fprintf(fp, "cjson: %s\n", cJSON_Version());
    fprintf(fp, "pcre2: %d.%d\n", PCRE2_MAJOR, PCRE2_MINOR);
    fprintf(fp, "utf8proc: %s\n", utf8proc_version());
    /* the CPU kernels are the project's own; their path is chosen at run time */
    fprintf(fp, "cpu kernels: %s (best on this CPU: %s; AVX512-BF16: %s; --matmul-precision bf16: %s; "
            "AMX-BF16: %s)\n",
            pb_cpu_isa_name(pb_cpu_isa_active()), pb_cpu_isa_name(pb_cpu_isa_best()),
            pb_cpu_isa_available(PB_ISA_AVX512BF16) ? "yes" : "no",
            pb_kdpbf16_preferred() ? "vdpbf16ps" : "emulated with fmas",
            pb_cpu_amx_available() ? "yes (--matmul-precision bf16-amx)" : "no");
}
