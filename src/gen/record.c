/* Input record parsing and settings resolution (see record.h). */
#include "config.h"
#include "gen/record.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/chat.h"
#include "common/log.h"
#include "common/util.h"
#include "gen/beam.h"
#include "gen/guide.h"
#include "gen/schema.h"

/* ---- settings --------------------------------------------------------- */

void pb_gen_settings_clear(pb_gen_settings *s)
{
    for (int i = 0; i < s->n_stops; i++)
        free(s->stops[i]);
    s->n_stops = 0;
    for (int i = 0; i < s->n_bad; i++)
        free(s->bad[i]);
    s->n_bad = 0;
    free(s->bias);
    s->bias = NULL;
    s->n_bias = 0;
    free(s->allow);
    s->allow = NULL;
    s->n_allow = 0;
    free(s->guide);
    s->guide = NULL;
    s->guide_field = NULL;
    s->guide_kind = 0;
    free(s->tool_name);
    s->tool_name = NULL;
}

pb_status pb_gen_settings_copy(pb_gen_settings *dst, const pb_gen_settings *src)
{
    *dst = *src;
    dst->n_stops = 0;
    dst->n_bad = 0;
    dst->bias = NULL;
    dst->n_bias = 0;
    dst->allow = NULL;
    dst->n_allow = 0;
    dst->guide = dst->tool_name = NULL;
    if ((src->guide && !(dst->guide = pb_strdup(src->guide))) ||
        (src->tool_name && !(dst->tool_name = pb_strdup(src->tool_name)))) {
        pb_gen_settings_clear(dst);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    if (src->n_bias) {
        if (!(dst->bias = malloc((size_t)src->n_bias * sizeof *dst->bias))) {
            pb_gen_settings_clear(dst);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        memcpy(dst->bias, src->bias, (size_t)src->n_bias * sizeof *dst->bias);
        dst->n_bias = src->n_bias;
    }
    if (src->n_allow) {
        if (!(dst->allow = malloc((size_t)src->n_allow * sizeof *dst->allow))) {
            pb_gen_settings_clear(dst);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        memcpy(dst->allow, src->allow, (size_t)src->n_allow * sizeof *dst->allow);
        dst->n_allow = src->n_allow;
    }
    for (int i = 0; i < src->n_stops; i++) {
        dst->stops[i] = pb_strdup(src->stops[i]);
        if (!dst->stops[i]) {
            pb_gen_settings_clear(dst);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        dst->n_stops = i + 1;
    }
    for (int i = 0; i < src->n_bad; i++) {
        if (!(dst->bad[i] = pb_strdup(src->bad[i]))) {
            pb_gen_settings_clear(dst);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        dst->n_bad = i + 1;
    }
    return PB_OK;
}

/* What beam search is not done with, in words, or NULL */
static const char *beam_refusal(const pb_gen_settings *gs)
{
    const pb_sample_params *p = &gs->sample;
    return gs->n_stops ? "stop strings ('stop', --stop)"
           : gs->guide || gs->tool_name || gs->tool_required ? "constrained decoding"
           : gs->n_bias ? "'logit_bias'" : gs->n_allow ? "'allowed_token_ids'" : gs->n_bad ? "'bad_words'"
           : p->repetition_penalty != 1.0f ? "a repetition penalty"
           : p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f ? "frequency and presence penalties"
           : gs->n_lp_ids ? "'logprob_token_ids'"
           : NULL;
}

/* Beam search by default: --beams, else generation_config.json's num_beams where it does not sample (HF's
 * generate() for the model; not where --temperature samples). What it is not done with: --beams is a usage
 * error, generation_config's is dropped with a warning. */
static pb_status base_beams(const pb_gen_cli *cli, const pb_gen_defaults *g, bool model_samples, pb_gen_settings *out)
{
    const bool cli_samples = cli->has_temperature && cli->temperature > 0;
    out->length_penalty = cli->has_length_penalty ? cli->length_penalty
                          : g->has_length_penalty ? g->length_penalty : 1.0f;
    out->early_stopping = cli->has_early_stopping ? cli->early_stopping
                          : g->has_early_stopping ? g->early_stopping : PB_BEAM_EARLY_HEURISTIC;
    int beams = 1;
    if (cli->has_beams) {
        beams = cli->beams;
    } else if (g->has_num_beams && g->num_beams > 1) {
        if (model_samples || cli_samples)
            pb_log_warn("generation_config.json: num_beams %d with %s: beam sampling is not done; records sample "
                        "without beams", g->num_beams, model_samples ? "do_sample" : "--temperature");
        else
            beams = g->num_beams;
    }
    if (beams <= 1)
        return PB_OK;
    const char *from = cli->has_beams ? "--beams" : "generation_config.json: num_beams";
    if (beams > PB_BEAM_MAX)
        return pb_error(cli->has_beams ? PB_ERR_USAGE : PB_ERR_CONFIG, "%s %d: beam search here takes at most %d "
                        "beams%s", from, beams, PB_BEAM_MAX, cli->has_beams ? "" : " (--beams N chooses others)");
    if (out->n > beams)
        return pb_error(PB_ERR_USAGE, "--n %d is more than the %d beams of %s", out->n, beams, from);
    const char *no = beam_refusal(out);
    if (no && cli->has_beams)
        return pb_error(PB_ERR_USAGE, "--beams %d: beam search is not done with %s", beams, no);
    if (no) {
        pb_log_warn("generation_config.json: num_beams %d, but beam search is not done with %s: records run "
                    "without beams (--beams N refuses them instead)", beams, no);
        return PB_OK;
    }
    out->beams = beams;
    return PB_OK;
}

pb_status pb_gen_settings_base(const pb_gen_cli *cli, const pb_gen_defaults *model,
                               pb_gen_settings *out)
{
    memset(out, 0, sizeof *out);
    pb_gen_defaults none;
    memset(&none, 0, sizeof none);
    none.st_pooling = -1;
    const pb_gen_defaults *g = model ? model : &none;
    if (cli->embed) { /* embeddings: pooled final hidden states; nothing is generated */
        const bool gen = cli->has_max_tokens || cli->has_temperature || cli->has_top_k || cli->has_top_p ||
                         cli->has_min_p || cli->has_repetition_penalty || cli->has_seed || cli->has_min_tokens ||
                         cli->has_logprobs || cli->has_prompt_logprobs || cli->n > 1 || cli->ignore_eos ||
                         cli->has_beams || cli->has_length_penalty || cli->has_early_stopping || cli->n_stops ||
                         cli->frequency_penalty != 0 || cli->presence_penalty != 0;
        if (gen)
            return pb_error(PB_ERR_USAGE, "--task embed generates nothing: --max-tokens, --temperature and the "
                            "other generation options do not apply");
        out->embed = true;
        out->n = 1;
        out->sample = pb_sample_params_default();
        if (cli->pooling > 0) {
            out->pooling = cli->pooling - 1;
        } else if (g->st_pooling == 3) {
            return pb_error(PB_ERR_CONFIG, "the model's sentence-transformers Pooling (%s) is not done: --pooling "
                            "last, mean or cls chooses one", g->st_pooling_name);
        } else {
            out->pooling = g->st_pooling >= 0 ? g->st_pooling : PB_POOL_LAST;
        }
        out->normalize = !cli->no_normalize && (!g->has_st_modules || g->st_normalize);
        return PB_OK;
    }
    if (cli->pooling > 0 || cli->no_normalize)
        return pb_error(PB_ERR_USAGE, "--pooling and --no-normalize are --task embed's");
    out->max_tokens = cli->has_max_tokens ? cli->max_tokens
                      : g->has_max_new_tokens ? g->max_new_tokens : 64;
    pb_sample_params *p = &out->sample;
    *p = pb_sample_params_default();
    /* As in transformers: generation_config samples only with do_sample. */
    bool model_samples = g->has_do_sample && g->do_sample;
    if (cli->has_temperature)
        p->temperature = cli->temperature;
    else if (model_samples)
        p->temperature = g->has_temperature ? g->temperature : 1.0f;
    p->top_k = cli->has_top_k ? cli->top_k : g->has_top_k ? g->top_k : 0;
    p->top_p = cli->has_top_p ? cli->top_p : g->has_top_p ? g->top_p : 1.0f;
    p->min_p = cli->has_min_p ? cli->min_p : g->has_min_p ? g->min_p : 0.0f;
    p->repetition_penalty = cli->has_repetition_penalty ? cli->repetition_penalty
                            : g->has_repetition_penalty ? g->repetition_penalty : 1.0f;
    p->frequency_penalty = cli->frequency_penalty;
    p->presence_penalty = cli->presence_penalty;
    out->seed = cli->has_seed ? cli->seed : 0;
    out->min_tokens = cli->has_min_tokens ? cli->min_tokens : 0;
    out->n = cli->n > 0 ? cli->n : 1;
    out->length_penalty = 1.0f;
    if (out->n > PB_GEN_MAX_N)
        return pb_error(PB_ERR_USAGE, "--n %d: at most %d completions a record", out->n, PB_GEN_MAX_N);
    out->ignore_eos = cli->ignore_eos;
    if (cli->has_logprobs) {
        if (cli->logprobs < 0 || cli->logprobs > PB_MAX_LOGPROBS)
            return pb_error(PB_ERR_USAGE, "--logprobs %d: give 0 to %d most likely tokens", cli->logprobs,
                            PB_MAX_LOGPROBS);
        out->logprobs = true;
        out->top_logprobs = cli->logprobs;
    }
    if (cli->has_prompt_logprobs) {
        if (cli->prompt_logprobs < 0 || cli->prompt_logprobs > PB_MAX_LOGPROBS)
            return pb_error(PB_ERR_USAGE, "--prompt-logprobs %d: give 0 to %d most likely tokens",
                            cli->prompt_logprobs, PB_MAX_LOGPROBS);
        out->prompt_logprobs = true;
        out->prompt_top = cli->prompt_logprobs;
    }
    if (cli->has_min_tokens && out->min_tokens > out->max_tokens)
        return pb_error(PB_ERR_USAGE, "--min-tokens %d is more than max_tokens %d",
                        out->min_tokens, out->max_tokens);
    if (out->max_tokens < 0)
        return pb_error(PB_ERR_CONFIG, "generation_config.json: max_new_tokens %d is negative",
                        out->max_tokens);
    pb_status st = pb_sample_params_check(p);
    if (st != PB_OK)
        return pb_error_ctx(PB_ERR_CONFIG, "generation settings (command line or generation_config.json)");
    if (cli->n_stops > PB_GEN_MAX_STOPS)
        return pb_error(PB_ERR_USAGE, "more than %d stop strings", PB_GEN_MAX_STOPS);
    for (int i = 0; i < cli->n_stops; i++) {
        if (strlen(cli->stops[i]) > PB_GEN_MAX_STOP_LEN || !cli->stops[i][0]) {
            pb_gen_settings_clear(out);
            return pb_error(PB_ERR_USAGE, "--stop: stop strings must have 1 to %d bytes",
                            PB_GEN_MAX_STOP_LEN);
        }
        out->stops[i] = pb_strdup(cli->stops[i]);
        if (!out->stops[i]) {
            pb_gen_settings_clear(out);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        out->n_stops = i + 1;
    }
    st = base_beams(cli, g, model_samples, out);
    if (st != PB_OK)
        pb_gen_settings_clear(out);
    return st;
}

/* ---- raw member text -------------------------------------------------- */

/* Skip a JSON value starting at s[i] (the line already parsed as JSON, so
 * it is well formed); returns the index after it. */
static size_t skip_ws(const char *s, size_t n, size_t i)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}
static size_t skip_string(const char *s, size_t n, size_t i)
{
    for (i++; i < n && s[i] != '"'; i++)
        if (s[i] == '\\')
            i++;
    return i < n ? i + 1 : n;
}
static size_t skip_value(const char *s, size_t n, size_t i)
{
    if (i >= n)
        return n;
    if (s[i] == '"')
        return skip_string(s, n, i);
    if (s[i] == '{' || s[i] == '[') {
        int depth = 0;
        while (i < n) {
            char c = s[i];
            if (c == '"') {
                i = skip_string(s, n, i);
                continue;
            }
            if (c == '{' || c == '[') depth++;
            else if (c == '}' || c == ']') {
                if (--depth == 0)
                    return i + 1;
            }
            i++;
        }
        return n;
    }
    while (i < n && s[i] != ',' && s[i] != '}' && s[i] != ']' && s[i] != ' ' && s[i] != '\t' &&
           s[i] != '\r' && s[i] != '\n')
        i++;
    return i;
}

/* The text of the first top-level member `key` of the object in s[0..n)
 * (a copy), or NULL when absent or the key is written with escapes. */
static char *raw_member(const char *s, size_t n, const char *key)
{
    size_t klen = strlen(key);
    size_t i = skip_ws(s, n, 0);
    if (i >= n || s[i] != '{')
        return NULL;
    i++;
    for (;;) {
        i = skip_ws(s, n, i);
        if (i >= n || s[i] != '"')
            return NULL;
        size_t kstart = i + 1, kend = skip_string(s, n, i) - 1;
        i = skip_ws(s, n, kend + 1);
        if (i >= n || s[i] != ':')
            return NULL;
        i = skip_ws(s, n, i + 1);
        size_t vstart = i, vend = skip_value(s, n, i);
        if (kend - kstart == klen && memcmp(s + kstart, key, klen) == 0) {
            char *out = malloc(vend - vstart + 1);
            if (out) {
                memcpy(out, s + vstart, vend - vstart);
                out[vend - vstart] = '\0';
            }
            return out;
        }
        i = skip_ws(s, n, vend);
        if (i >= n || s[i] != ',')
            return NULL;
        i++;
    }
}

/* ---- records ---------------------------------------------------------- */

bool pb_line_is_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (line[i] != ' ' && line[i] != '\t' && line[i] != '\r' && line[i] != '\n')
            return false;
    return true;
}

void pb_record_clear(pb_record *rec)
{
    free(rec->id_json);
    free(rec->custom_id_json);
    free(rec->prompt);
    free(rec->prompt_ids);
    for (int i = 0; rec->prompts && i < rec->n_prompts; i++) {
        free(rec->prompts[i].text);
        free(rec->prompts[i].ids);
    }
    free(rec->prompts);
    free(rec->echo_text);
    free(rec->reply_role);
    free(rec->chat_json);
    free(rec->error);
    pb_gen_settings_clear(&rec->gs);
    memset(rec, 0, sizeof *rec);
}

/* *dst = a copy of src's len bytes and a NUL (NULL for NULL); false when out of memory */
static bool dup_or_null(const char *src, size_t len, char **dst)
{
    if (!src)
        return (*dst = NULL, true);
    if ((*dst = malloc(len + 1))) {
        memcpy(*dst, src, len);
        (*dst)[len] = '\0';
    }
    return *dst != NULL;
}

static bool dup_str(const char *src, char **dst) { return dup_or_null(src, src ? strlen(src) : 0, dst); }

pb_status pb_record_copy(pb_record *dst, const pb_record *src)
{
    *dst = *src; /* the scalars; every pointer replaced below */
    dst->id_json = dst->custom_id_json = dst->chat_json = dst->prompt = dst->echo_text = dst->error = NULL;
    dst->reply_role = NULL;
    dst->prompt_ids = NULL;
    dst->prompts = NULL;
    /* the settings first: until they are dst's own, clearing dst would free src's */
    pb_status st = pb_gen_settings_copy(&dst->gs, &src->gs); /* clears its own on failure */
    if (st != PB_OK) {
        memset(dst, 0, sizeof *dst);
        return st;
    }
    if (src->prompt_ids && (dst->prompt_ids = malloc((size_t)src->n_prompt_ids * sizeof *dst->prompt_ids)))
        memcpy(dst->prompt_ids, src->prompt_ids, (size_t)src->n_prompt_ids * sizeof *dst->prompt_ids);
    if (!dup_str(src->id_json, &dst->id_json) || !dup_str(src->custom_id_json, &dst->custom_id_json) ||
        !dup_str(src->chat_json, &dst->chat_json) || !dup_or_null(src->prompt, src->prompt_len, &dst->prompt) ||
        !dup_or_null(src->echo_text, src->echo_len, &dst->echo_text) || !dup_str(src->error, &dst->error) ||
        !dup_str(src->reply_role, &dst->reply_role) ||
        (src->prompt_ids && !dst->prompt_ids)) {
        pb_record_clear(dst);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    return PB_OK;
}

pb_status pb_record_take_prompt(pb_record *dst, pb_record *src, int i)
{
    if (!src->prompts || i < 0 || i >= src->n_prompts)
        return pb_error(PB_ERR_INTERNAL, "record: no prompt %d of %d to take", i, src->n_prompts);
    PB_CHECK(pb_record_copy(dst, src));
    pb_prompt *p = &src->prompts[i];
    dst->prompt = p->text;
    dst->prompt_len = p->len;
    dst->prompt_ids = p->ids;
    dst->n_prompt_ids = p->n_ids;
    dst->prompt_index = i;
    *p = (pb_prompt){0};
    return PB_OK;
}

pb_status pb_record_set_error(pb_record *rec, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    free(rec->error);
    rec->error = pb_strdup(msg);
    return rec->error ? PB_OK : pb_error(PB_ERR_NOMEM, "out of memory");
}

/* A setting field of obj: absent or null = not given; wrong type or range =
 * an error message in err. */
typedef struct field_ctx {
    char err[512];
} field_ctx;

static bool get_number(field_ctx *c, const cJSON *obj, const char *name, double lo, double hi,
                       bool integer, bool *given, double *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    *given = false;
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsNumber(v)) {
        snprintf(c->err, sizeof c->err, "field '%s' must be a number", name);
        return false;
    }
    double d = v->valuedouble;
    if (!isfinite(d) || (integer && d != floor(d))) {
        snprintf(c->err, sizeof c->err, "field '%s' must be %s", name,
                 integer ? "an integer" : "a finite number");
        return false;
    }
    if (d < lo || d > hi) {
        snprintf(c->err, sizeof c->err, "field '%s': %.17g is out of range [%.17g, %.17g]", name, d,
                 lo, hi);
        return false;
    }
    *given = true;
    *out = d;
    return true;
}

/* Fields of OpenAI's and vLLM's requests that change what is generated or
 * returned and that are not done here. Their "off" values pass, so that
 * records written for those servers with defaults spelled out still run;
 * anything else is an error record, never a completion quietly without it. */
typedef enum { OFF_NULL, OFF_FALSE, OFF_ZERO, OFF_ONE, OFF_EMPTY, OFF_TRUE, OFF_N, OFF_TOOL_CHOICE, OFF_MINUS_ONE } off_kind;
static const struct {
    const char *name;
    off_kind off; /* besides null, the value that asks for nothing */
    const char *what;
} UNSUPPORTED[] = {
    {"suffix", OFF_EMPTY, "insertion after a suffix is not done"},
    {"best_of", OFF_N, "only best_of = n, or with use_beam_search: sampled completions are not ranked"},
    {"tool_choice", OFF_TOOL_CHOICE, "give \"none\", \"auto\", \"required\" or {\"type\": \"function\", "
                                     "\"function\": {\"name\": ...}}"},
    {"logits_processors", OFF_EMPTY, "no custom logits processors"},
    {"prompt_embeds", OFF_EMPTY, "prompts are text or token ids"},
    {"thinking_token_budget", OFF_MINUS_ONE, "thinking is not budgeted"},
    {"repetition_detection", OFF_NULL, "repetitions do not end a completion"},
    {"watermarking", OFF_FALSE, "completions are not watermarked"},
};

static bool asks_nothing(const cJSON *v, off_kind off, int n)
{
    if (cJSON_IsNull(v))
        return true;
    switch (off) {
    case OFF_NULL: return false;
    case OFF_FALSE: return cJSON_IsFalse(v);
    case OFF_TRUE: return cJSON_IsTrue(v);
    case OFF_ZERO: return cJSON_IsNumber(v) && v->valuedouble == 0;
    case OFF_ONE: return cJSON_IsNumber(v) && v->valuedouble == 1;
    case OFF_N: return cJSON_IsNumber(v) && v->valuedouble == n;
    case OFF_EMPTY:
        return (cJSON_IsString(v) && !v->valuestring[0]) ||
               ((cJSON_IsArray(v) || cJSON_IsObject(v)) && !v->child);
    case OFF_MINUS_ONE: return cJSON_IsNumber(v) && v->valuedouble == -1;
    case OFF_TOOL_CHOICE: /* a named function: constrained decoding (get_guide) */
        return cJSON_IsObject(v) || (cJSON_IsString(v) && (!strcmp(v->valuestring, "none") ||
                                                           !strcmp(v->valuestring, "auto") ||
                                                           !strcmp(v->valuestring, "required")));
    }
    return false;
}

static bool refuse_unsupported(field_ctx *c, const cJSON *obj, int n, bool beam)
{
    for (size_t i = 0; i < sizeof UNSUPPORTED / sizeof *UNSUPPORTED; i++) {
        if (beam && !strcmp(UNSUPPORTED[i].name, "best_of"))
            continue; /* beam search's width (get_beam) */
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, UNSUPPORTED[i].name);
        if (v && !asks_nothing(v, UNSUPPORTED[i].off, n)) {
            snprintf(c->err, sizeof c->err, "field '%s' is not supported (%s); leave it out", UNSUPPORTED[i].name,
                     UNSUPPORTED[i].what);
            return false;
        }
    }
    return true;
}

/* logprobs: true/false, or (completions and vLLM) the number of most likely
 * tokens to list; top_logprobs (chat): that number, with logprobs true. */
static bool get_logprobs(field_ctx *c, const cJSON *obj, pb_gen_settings *gs)
{
    const cJSON *lp = cJSON_GetObjectItemCaseSensitive(obj, "logprobs");
    bool g;
    double d;
    bool count = false; /* logprobs gave the number */
    if (lp && !cJSON_IsNull(lp)) {
        if (cJSON_IsBool(lp)) {
            gs->logprobs = cJSON_IsTrue(lp);
            gs->top_logprobs = 0;
        } else if (cJSON_IsNumber(lp)) {
            if (!get_number(c, obj, "logprobs", 0, PB_MAX_LOGPROBS, true, &g, &d))
                return false;
            gs->logprobs = true;
            gs->top_logprobs = (int)d;
            count = true;
        } else {
            snprintf(c->err, sizeof c->err, "field 'logprobs' must be true, false or a number of most likely "
                     "tokens (0 to %d)", PB_MAX_LOGPROBS);
            return false;
        }
    }
    if (!get_number(c, obj, "top_logprobs", 0, PB_MAX_LOGPROBS, true, &g, &d))
        return false;
    if (g) {
        if (count && (int)d != gs->top_logprobs) {
            snprintf(c->err, sizeof c->err, "fields 'logprobs' (%d) and 'top_logprobs' (%d) differ",
                     gs->top_logprobs, (int)d);
            return false;
        }
        if (d > 0 && !gs->logprobs) {
            snprintf(c->err, sizeof c->err, "field 'top_logprobs' needs 'logprobs': true");
            return false;
        }
        gs->top_logprobs = (int)d;
    }
    return true;
}

/* An integer in [0, 2^31) written as a JSON number or (logit_bias's keys) a decimal string. */
static bool token_id(const char *text, double num, bool is_text, int32_t *out)
{
    double d = num;
    if (is_text) {
        char *end;
        if (!text[0] || text[0] == '-' || text[0] == '+' || text[0] == ' ')
            return false;
        errno = 0;
        unsigned long long v = strtoull(text, &end, 10);
        if (*end || errno || v > 2147483647ull)
            return false;
        d = (double)v;
    }
    if (!(d >= 0 && d <= 2147483647.0) || d != floor(d))
        return false;
    *out = (int32_t)d;
    return true;
}

/* A true/false field (absent or null: *out kept). */
static bool get_bool(field_ctx *c, const cJSON *obj, const char *name, bool *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsBool(v)) {
        snprintf(c->err, sizeof c->err, "field '%s' must be true or false", name);
        return false;
    }
    *out = cJSON_IsTrue(v);
    return true;
}

/* The distinct token ids of list v (field name), in order, into out[0..max): their count, or -1 with the message
 * set where an item is not a token id or more than max differ. */
static int distinct_ids(field_ctx *c, const cJSON *v, const char *name, int32_t *out, int max)
{
    int n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        int32_t id;
        if (!cJSON_IsNumber(it) || !token_id(NULL, it->valuedouble, false, &id)) {
            snprintf(c->err, sizeof c->err, "field '%s' must be a list of token ids (integers >= 0)", name);
            return -1;
        }
        bool seen = false;
        for (int j = 0; j < n && !seen; j++)
            seen = out[j] == id;
        if (seen)
            continue;
        if (n >= max) {
            snprintf(c->err, sizeof c->err, "field '%s': more than %d ids", name, max);
            return -1;
        }
        out[n++] = id;
    }
    return n;
}

/* logprob_token_ids (vLLM's): 1 to PB_MAX_LOGPROBS token ids (repeats once) whose log probabilities logprobs
 * lists at each step instead of the most likely; needs logprobs, and a token to list them at. */
static bool get_lp_ids(field_ctx *c, const cJSON *obj, pb_gen_settings *gs)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "logprob_token_ids");
    if (!v || cJSON_IsNull(v))
        return true;
    const int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (n < 1 || n > PB_MAX_LOGPROBS) {
        snprintf(c->err, sizeof c->err, "field 'logprob_token_ids' must be a list of 1 to %d token ids",
                 PB_MAX_LOGPROBS);
        return false;
    }
    if (!gs->logprobs) {
        snprintf(c->err, sizeof c->err, "field 'logprob_token_ids' needs 'logprobs'");
        return false;
    }
    if (gs->echo && gs->max_tokens == 0) {
        snprintf(c->err, sizeof c->err, "field 'logprob_token_ids' lists generated tokens' log probabilities; "
                 "with 'echo' and 'max_tokens' 0 none is generated");
        return false;
    }
    const int k = distinct_ids(c, v, "logprob_token_ids", gs->lp_ids, PB_MAX_LOGPROBS);
    if (k < 0)
        return false;
    gs->n_lp_ids = k;
    gs->top_logprobs = k; /* vLLM: they take the place of the most likely */
    return true;
}

/* stop_token_ids: a list of token ids (at most PB_MAX_STOP_IDS; repeats once). */
static bool get_stop_ids(field_ctx *c, const cJSON *obj, pb_gen_settings *gs)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "stop_token_ids");
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsArray(v)) {
        snprintf(c->err, sizeof c->err, "field 'stop_token_ids' must be a list of token ids");
        return false;
    }
    const int n = distinct_ids(c, v, "stop_token_ids", gs->stop_ids, PB_MAX_STOP_IDS);
    if (n < 0)
        return false;
    gs->n_stop_ids = n;
    return true;
}

/* bad_words: a list of words (at most PB_MAX_BAD_WORDS, each with something besides spaces, at most 1024 bytes). */
static bool get_bad_words(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool *nomem)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "bad_words");
    if (!v || cJSON_IsNull(v))
        return true;
    const int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : -1;
    if (n < 0 || n > PB_MAX_BAD_WORDS) {
        snprintf(c->err, sizeof c->err, "field 'bad_words' must be a list of at most %d strings", PB_MAX_BAD_WORDS);
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        const char *w = cJSON_IsString(it) ? it->valuestring : NULL;
        const size_t len = w ? strlen(w) : 0;
        if (!w || strspn(w, " ") == len || len > PB_GEN_MAX_STOP_LEN) {
            snprintf(c->err, sizeof c->err, "field 'bad_words' must be a list of words (strings of 1 to %d bytes, "
                     "not only spaces)", PB_GEN_MAX_STOP_LEN);
            return false;
        }
    }
    for (int i = 0; i < gs->n_bad; i++)
        free(gs->bad[i]);
    gs->n_bad = 0;
    cJSON_ArrayForEach(it, v) {
        if (!(gs->bad[gs->n_bad] = pb_strdup(it->valuestring))) {
            *nomem = true;
            return false;
        }
        gs->n_bad++;
    }
    return true;
}

static int cmp_id(const void *a, const void *b)
{
    const int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* allowed_token_ids: a non-empty list of token ids (at most PB_MAX_ALLOWED_IDS), kept ascending, each once. */
static bool get_allowed_ids(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool *nomem)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "allowed_token_ids");
    if (!v || cJSON_IsNull(v))
        return true;
    const int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    if (n < 1 || n > PB_MAX_ALLOWED_IDS) {
        snprintf(c->err, sizeof c->err, "field 'allowed_token_ids' must be a list of 1 to %d token ids",
                 PB_MAX_ALLOWED_IDS);
        return false;
    }
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids) {
        *nomem = true;
        return false;
    }
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        if (!cJSON_IsNumber(it) || !token_id(NULL, it->valuedouble, false, &ids[k])) {
            snprintf(c->err, sizeof c->err, "field 'allowed_token_ids' must be a list of token ids (integers >= 0)");
            free(ids);
            return false;
        }
        k++;
    }
    qsort(ids, (size_t)k, sizeof *ids, cmp_id);
    int m = 0;
    for (int i = 0; i < k; i++)
        if (m == 0 || ids[i] != ids[m - 1])
            ids[m++] = ids[i];
    free(gs->allow);
    gs->allow = ids;
    gs->n_allow = m;
    return true;
}

static int cmp_bias(const void *a, const void *b)
{
    const pb_id_bias *x = a, *y = b;
    return (x->id > y->id) - (x->id < y->id);
}

/* logit_bias: {"token id": bias in [-100, 100], ...} (OpenAI's, vLLM's). */
static bool get_logit_bias(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool *nomem)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, "logit_bias");
    if (!v || cJSON_IsNull(v))
        return true;
    if (!cJSON_IsObject(v)) {
        snprintf(c->err, sizeof c->err, "field 'logit_bias' must be an object of token ids to biases");
        return false;
    }
    int n = cJSON_GetArraySize(v);
    if (n > PB_MAX_LOGIT_BIAS) {
        snprintf(c->err, sizeof c->err, "field 'logit_bias': %d entries, at most %d", n, PB_MAX_LOGIT_BIAS);
        return false;
    }
    pb_id_bias *b = n ? malloc((size_t)n * sizeof *b) : NULL;
    if (n && !b) {
        *nomem = true;
        return false;
    }
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        int32_t id;
        if (!token_id(it->string, 0, true, &id)) {
            snprintf(c->err, sizeof c->err, "field 'logit_bias': key '%.40s' is not a token id", it->string);
            free(b);
            return false;
        }
        if (!cJSON_IsNumber(it) || !(it->valuedouble >= -100 && it->valuedouble <= 100)) {
            snprintf(c->err, sizeof c->err, "field 'logit_bias': the bias of token %d must be a number from -100 "
                     "to 100", (int)id);
            free(b);
            return false;
        }
        b[k++] = (pb_id_bias){id, (float)it->valuedouble};
    }
    if (k > 1)
        qsort(b, (size_t)k, sizeof *b, cmp_bias);
    for (int i = 1; i < k; i++)
        if (b[i].id == b[i - 1].id) {
            snprintf(c->err, sizeof c->err, "field 'logit_bias': token %d given twice", (int)b[i].id);
            free(b);
            return false;
        }
    free(gs->bias);
    gs->bias = b;
    gs->n_bias = k;
    return true;
}

/* How a prompt becomes tokens: add_special_tokens, truncate_prompt_tokens, truncation_side. */
static bool get_truncation(field_ctx *c, const cJSON *obj, pb_gen_settings *gs)
{
    const cJSON *ast = cJSON_GetObjectItemCaseSensitive(obj, "add_special_tokens");
    if (ast && !cJSON_IsNull(ast)) {
        if (!get_bool(c, obj, "add_special_tokens", &gs->add_special)) return false;
        gs->has_add_special = true;
    }
    bool g;
    double d;
    if (!get_number(c, obj, "truncate_prompt_tokens", -1, 1 << 24, true, &g, &d)) return false;
    if (g) {
        if (d == 0) {
            snprintf(c->err, sizeof c->err, "field 'truncate_prompt_tokens' must be -1 (the context) or at least 1");
            return false;
        }
        gs->truncate = (int)d;
    }
    const cJSON *side = cJSON_GetObjectItemCaseSensitive(obj, "truncation_side");
    if (side && !cJSON_IsNull(side)) {
        if (!cJSON_IsString(side) || (strcmp(side->valuestring, "left") && strcmp(side->valuestring, "right"))) {
            snprintf(c->err, sizeof c->err, "field 'truncation_side' must be \"left\" or \"right\"");
            return false;
        }
        gs->trunc_right = !strcmp(side->valuestring, "right");
    }
    return true;
}

/* An embeddings request's fields (OpenAI's and vLLM's): encoding_format, dimensions, normalize and the prompt's
 * tokens; the rest (model, user, ...) asks nothing of the embeddings. */
static bool get_embed_settings(field_ctx *c, const cJSON *obj, pb_gen_settings *gs)
{
    if (!get_truncation(c, obj, gs)) return false;
    if (!get_bool(c, obj, "normalize", &gs->normalize)) return false;
    bool g;
    double d;
    if (!get_number(c, obj, "dimensions", 1, 1 << 20, true, &g, &d)) return false;
    if (g)
        gs->dimensions = (int)d;
    const cJSON *ef = cJSON_GetObjectItemCaseSensitive(obj, "encoding_format");
    if (ef && !cJSON_IsNull(ef)) {
        if (!cJSON_IsString(ef) || (strcmp(ef->valuestring, "float") && strcmp(ef->valuestring, "base64"))) {
            snprintf(c->err, sizeof c->err, "field 'encoding_format' must be \"float\" or \"base64\"");
            return false;
        }
        gs->emb_base64 = !strcmp(ef->valuestring, "base64");
    }
    return true;
}

/* Apply the settings fields of obj over rec->gs; false with c->err on error. */
/* ---- constrained decoding ----
 * One constraint a record: vLLM's guided_json / guided_regex / guided_choice (with
 * guided_whitespace_pattern), its newer structured_outputs {json, regex, choice, json_object,
 * whitespace_pattern, disable_any_whitespace}, or OpenAI's response_format {type: json_object |
 * json_schema}. Kept as the regex the completion must match (gen/schema.h, gen/guide.h). */
typedef struct guide_src {
    const char *field;       /* the field that gave it, for messages */
    const cJSON *schema;     /* a JSON schema (object or boolean) */
    cJSON *parsed;           /* a schema given as JSON text, parsed (owned) */
    const char *regex;
    const char *grammar;
    const cJSON *choice;
    bool json_object;
} guide_src;

/* A schema given as a value or as JSON text (vLLM takes both). */
static bool guide_schema(field_ctx *c, const char *field, const cJSON *v, guide_src *g)
{
    if (cJSON_IsString(v)) {
        if (!(g->parsed = cJSON_Parse(v->valuestring))) {
            snprintf(c->err, sizeof c->err, "field '%s': the schema is not valid JSON", field);
            return false;
        }
        v = g->parsed;
    }
    if (!cJSON_IsObject(v) && !cJSON_IsBool(v)) {
        snprintf(c->err, sizeof c->err, "field '%s' must be a JSON schema (an object)", field);
        return false;
    }
    g->schema = v;
    return true;
}

/* The schema of a function without parameters: an empty object (vLLM's '{}') */
#define NO_PARAMETERS "{\"type\": \"object\", \"additionalProperties\": false}"

/* A named tool_choice ({"type": "function", "function": {"name": N}}): the completion is the arguments of the
 * function of obj's tools named N, constrained by its parameters' schema (none: an empty object), as vLLM. */
static bool guide_tool(field_ctx *c, const cJSON *obj, const cJSON *v, guide_src *g, pb_gen_settings *gs,
                       bool *nomem)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(v, "type");
    const cJSON *fn = cJSON_GetObjectItemCaseSensitive(v, "function");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
    if (!cJSON_IsString(type) || strcmp(type->valuestring, "function") || !cJSON_IsString(name)) {
        snprintf(c->err, sizeof c->err, "field 'tool_choice' must be \"none\", \"auto\" or {\"type\": \"function\", "
                 "\"function\": {\"name\": ...}}");
        return false;
    }
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(obj, "tools"), *t, *def = NULL;
    if (!cJSON_IsArray(tools))
        tools = NULL;
    cJSON_ArrayForEach(t, tools) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *n = cJSON_GetObjectItemCaseSensitive(f, "name");
        if (cJSON_IsString(n) && !strcmp(n->valuestring, name->valuestring))
            def = f;
    }
    if (!def) {
        snprintf(c->err, sizeof c->err, "field 'tool_choice' names function '%.200s', which 'tools' does not define",
                 name->valuestring);
        return false;
    }
    const cJSON *params = cJSON_GetObjectItemCaseSensitive(def, "parameters");
    if (!params || cJSON_IsNull(params) || (cJSON_IsObject(params) && !params->child)) {
        if (!(g->parsed = cJSON_Parse(NO_PARAMETERS))) {
            *nomem = true;
            return false;
        }
        g->schema = g->parsed;
    } else if (!guide_schema(c, "tool_choice", params, g)) {
        return false;
    }
    free(gs->tool_name);
    if (!(gs->tool_name = pb_strdup(name->valuestring))) {
        *nomem = true;
        return false;
    }
    return true;
}

/* tool_choice "required" (vLLM's): the completion is a list of at least one call, each {"name": one of the
 * tools' names, "parameters": its parameters (none: an empty object)}; the parameters' $defs gathered at the
 * root, as vLLM gathers them. */
static bool guide_tools_required(field_ctx *c, const cJSON *obj, guide_src *g, pb_gen_settings *gs, bool *nomem)
{
    const cJSON *tools = cJSON_GetObjectItemCaseSensitive(obj, "tools"), *t;
    if (!cJSON_IsArray(tools) || !tools->child) {
        snprintf(c->err, sizeof c->err, "field 'tool_choice' is \"required\" but 'tools' lists no function");
        return false;
    }
    cJSON *root = cJSON_Parse("{\"type\": \"array\", \"minItems\": 1, \"items\": {\"anyOf\": []}, \"$defs\": {}}");
    cJSON *any = root ? cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "items"), "anyOf")
                      : NULL;
    cJSON *defs = cJSON_GetObjectItemCaseSensitive(root, "$defs");
    bool ok = any != NULL;
    const cJSON *list = ok ? tools : NULL;
    cJSON_ArrayForEach(t, list) {
        const cJSON *f = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(f, "name");
        const cJSON *params = cJSON_GetObjectItemCaseSensitive(f, "parameters");
        if (!cJSON_IsString(name)) {
            snprintf(c->err, sizeof c->err, "field 'tool_choice' is \"required\" but a tool has no function name");
            cJSON_Delete(root);
            return false;
        }
        cJSON *branch = cJSON_Parse("{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\", "
                                    "\"enum\": []}}, \"required\": [\"name\", \"parameters\"]}");
        cJSON *props = cJSON_GetObjectItemCaseSensitive(branch, "properties");
        cJSON *en = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(props, "name"), "enum");
        cJSON *p = cJSON_IsObject(params) && params->child
                       ? cJSON_Duplicate(params, true)
                       : cJSON_Parse(NO_PARAMETERS);
        cJSON *pd = p ? cJSON_DetachItemFromObjectCaseSensitive(p, "$defs") : NULL;
        ok = branch && en && p && cJSON_AddItemToArray(en, cJSON_CreateString(name->valuestring)) &&
             cJSON_AddItemToObject(props, "parameters", p);
        if (!ok)
            cJSON_Delete(p);
        for (const cJSON *d = pd ? pd->child : NULL; ok && d; d = d->next) {
            const cJSON *had = cJSON_GetObjectItemCaseSensitive(defs, d->string);
            if (had && !cJSON_Compare(had, d, true)) {
                snprintf(c->err, sizeof c->err, "field 'tool_choice' is \"required\" but two tools define "
                         "$defs '%.100s' differently", d->string);
                cJSON_Delete(pd);
                cJSON_Delete(branch);
                cJSON_Delete(root);
                return false;
            }
            if (!had)
                ok = cJSON_AddItemToObject(defs, d->string, cJSON_Duplicate(d, true));
        }
        cJSON_Delete(pd);
        if (ok)
            ok = cJSON_AddItemToArray(any, branch);
        else
            cJSON_Delete(branch);
        if (!ok)
            break;
    }
    if (ok && !defs->child)
        cJSON_DeleteItemFromObjectCaseSensitive(root, "$defs");
    if (!ok) {
        cJSON_Delete(root);
        *nomem = true;
        return false;
    }
    g->parsed = root;
    g->schema = root;
    gs->tool_required = true;
    return true;
}

/* Sets g from one of obj's fields; a second constraint is refused. */
static bool guide_take(field_ctx *c, const char *field, guide_src *g)
{
    if (g->field) {
        snprintf(c->err, sizeof c->err, "fields '%s' and '%s' both constrain the output; give one", g->field, field);
        return false;
    }
    g->field = field;
    return true;
}

static bool guide_regex_field(field_ctx *c, const char *field, const cJSON *v, guide_src *g)
{
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        snprintf(c->err, sizeof c->err, "field '%s' must be a non-empty string (a regular expression)", field);
        return false;
    }
    g->regex = v->valuestring;
    return true;
}

static bool guide_grammar_field(field_ctx *c, const char *field, const cJSON *v, guide_src *g)
{
    if (!cJSON_IsString(v) || !v->valuestring[0]) {
        snprintf(c->err, sizeof c->err, "field '%s' must be a non-empty string (a GBNF grammar)", field);
        return false;
    }
    g->grammar = v->valuestring;
    return true;
}

static bool guide_choice_field(field_ctx *c, const char *field, const cJSON *v, guide_src *g)
{
    const int n = cJSON_IsArray(v) ? cJSON_GetArraySize(v) : 0;
    const cJSON *it;
    bool ok = n > 0;
    cJSON_ArrayForEach(it, v)
        ok = ok && cJSON_IsString(it) && it->valuestring[0];
    if (!ok) {
        snprintf(c->err, sizeof c->err, "field '%s' must be a list of non-empty strings", field);
        return false;
    }
    g->choice = v;
    return true;
}

/* structured_outputs: vLLM's StructuredOutputsParams. */
static bool guide_structured(field_ctx *c, const cJSON *v, guide_src *g, const char **ws)
{
    if (!cJSON_IsObject(v)) {
        snprintf(c->err, sizeof c->err, "field 'structured_outputs' must be an object");
        return false;
    }
    const cJSON *it;
    cJSON_ArrayForEach(it, v) {
        const char *k = it->string;
        if (cJSON_IsNull(it))
            continue;
        if (!strcmp(k, "json")) {
            if (!guide_take(c, "structured_outputs.json", g) || !guide_schema(c, "structured_outputs.json", it, g))
                return false;
        } else if (!strcmp(k, "regex")) {
            if (!guide_take(c, "structured_outputs.regex", g) ||
                !guide_regex_field(c, "structured_outputs.regex", it, g))
                return false;
        } else if (!strcmp(k, "choice")) {
            if (!guide_take(c, "structured_outputs.choice", g) ||
                !guide_choice_field(c, "structured_outputs.choice", it, g))
                return false;
        } else if (!strcmp(k, "json_object")) {
            if (!cJSON_IsBool(it)) {
                snprintf(c->err, sizeof c->err, "field 'structured_outputs.json_object' must be true or false");
                return false;
            }
            if (cJSON_IsTrue(it) && !guide_take(c, "structured_outputs.json_object", g))
                return false;
            g->json_object = g->json_object || cJSON_IsTrue(it);
        } else if (!strcmp(k, "whitespace_pattern")) {
            if (!cJSON_IsString(it)) {
                snprintf(c->err, sizeof c->err, "field 'structured_outputs.whitespace_pattern' must be a string");
                return false;
            }
            *ws = it->valuestring;
        } else if (!strcmp(k, "disable_any_whitespace")) {
            if (!cJSON_IsBool(it)) {
                snprintf(c->err, sizeof c->err, "field 'structured_outputs.disable_any_whitespace' must be true or "
                         "false");
                return false;
            }
            if (cJSON_IsTrue(it))
                *ws = "";
        } else if (!strcmp(k, "grammar")) {
            if (!guide_take(c, "structured_outputs.grammar", g) ||
                !guide_grammar_field(c, "structured_outputs.grammar", it, g))
                return false;
        } else if (!strcmp(k, "structural_tag")) {
            snprintf(c->err, sizeof c->err, "field 'structured_outputs.structural_tag' is not supported (json, "
                     "regex, choice, grammar and json_object are done); leave it out");
            return false;
        } else if (strcmp(k, "disable_fallback") && strcmp(k, "disable_additional_properties") &&
                   strcmp(k, "backend")) { /* those are the serving engine's own choices: ignored */
            snprintf(c->err, sizeof c->err, "field 'structured_outputs' has an unknown key '%.64s'", k);
            return false;
        }
    }
    return true;
}

/* response_format: OpenAI's {type: text | json_object | json_schema, json_schema: {name, schema, strict}}. */
static bool guide_response_format(field_ctx *c, const cJSON *v, guide_src *g)
{
    const cJSON *t = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "type") : NULL;
    if (!cJSON_IsString(t)) {
        snprintf(c->err, sizeof c->err, "field 'response_format' must be an object with a 'type'");
        return false;
    }
    if (!strcmp(t->valuestring, "text"))
        return true;
    if (!strcmp(t->valuestring, "json_object")) {
        if (!guide_take(c, "response_format", g))
            return false;
        g->json_object = true;
        return true;
    }
    if (strcmp(t->valuestring, "json_schema")) {
        snprintf(c->err, sizeof c->err, "field 'response_format': type '%.64s' is not one of text, json_object, "
                 "json_schema", t->valuestring);
        return false;
    }
    const cJSON *js = cJSON_GetObjectItemCaseSensitive(v, "json_schema");
    const cJSON *schema = cJSON_IsObject(js) ? cJSON_GetObjectItemCaseSensitive(js, "schema") : NULL;
    if (!schema) {
        snprintf(c->err, sizeof c->err, "field 'response_format': type json_schema needs json_schema.schema");
        return false;
    }
    return guide_take(c, "response_format", g) && guide_schema(c, "response_format", schema, g);
}

static bool get_guide(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool *nomem)
{
    guide_src g = {0};
    const char *ws = PB_SCHEMA_WS;
    bool ok = true;
    const cJSON *v;
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "guided_json")) && !cJSON_IsNull(v))
        ok = guide_take(c, "guided_json", &g) && guide_schema(c, "guided_json", v, &g);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "guided_regex")) && !cJSON_IsNull(v))
        ok = guide_take(c, "guided_regex", &g) && guide_regex_field(c, "guided_regex", v, &g);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "guided_choice")) && !cJSON_IsNull(v))
        ok = guide_take(c, "guided_choice", &g) && guide_choice_field(c, "guided_choice", v, &g);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "guided_grammar")) && !cJSON_IsNull(v))
        ok = guide_take(c, "guided_grammar", &g) && guide_grammar_field(c, "guided_grammar", v, &g);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "guided_whitespace_pattern")) && !cJSON_IsNull(v)) {
        if (!cJSON_IsString(v)) {
            snprintf(c->err, sizeof c->err, "field 'guided_whitespace_pattern' must be a string");
            ok = false;
        } else
            ws = v->valuestring;
    }
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "structured_outputs")) && !cJSON_IsNull(v))
        ok = guide_structured(c, v, &g, &ws);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "response_format")) && !cJSON_IsNull(v))
        ok = guide_response_format(c, v, &g);
    if (ok && (v = cJSON_GetObjectItemCaseSensitive(obj, "tool_choice")) && cJSON_IsObject(v))
        ok = guide_take(c, "tool_choice", &g) && guide_tool(c, obj, v, &g, gs, nomem);
    else if (ok && cJSON_IsString(v) && !strcmp(v->valuestring, "required"))
        ok = guide_take(c, "tool_choice", &g) && guide_tools_required(c, obj, &g, gs, nomem);
    if (ok && g.field && gs->n_allow) {
        snprintf(c->err, sizeof c->err, "fields '%s' and 'allowed_token_ids' cannot be combined", g.field);
        ok = false;
    }
    if (!ok || !g.field) {
        cJSON_Delete(g.parsed);
        return ok;
    }
    char *re = NULL;
    pb_status st;
    if (g.regex || g.grammar) {
        st = (re = pb_strdup(g.regex ? g.regex : g.grammar)) ? PB_OK : PB_ERR_NOMEM;
    } else if (g.choice) {
        const int n = cJSON_GetArraySize(g.choice);
        const char **list = malloc((size_t)n * sizeof *list);
        st = list ? PB_OK : PB_ERR_NOMEM;
        int k = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, g.choice)
            if (list)
                list[k++] = it->valuestring;
        if (st == PB_OK)
            st = pb_choice_regex(list, n, &re);
        free(list);
    } else if (g.json_object) { /* JSON mode: any object, nested to any depth (a grammar of the whitespace) */
        st = (re = pb_strdup(ws ? ws : PB_SCHEMA_WS)) ? PB_OK : PB_ERR_NOMEM;
    } else {
        st = pb_schema_regex(g.schema, ws, &re);
    }
    cJSON_Delete(g.parsed);
    if (st != PB_OK) {
        if (st == PB_ERR_NOMEM)
            *nomem = true;
        else
            snprintf(c->err, sizeof c->err, "field '%s': %s", g.field, pb_last_error());
        free(re);
        return false;
    }
    free(gs->guide);
    gs->guide = re;
    gs->guide_field = g.field;
    gs->guide_kind = g.grammar ? PB_GUIDE_GRAMMAR : g.json_object ? PB_GUIDE_JSON_OBJECT : PB_GUIDE_REGEX;
    return true;
}

/* Beam search (vLLM's use_beam_search, HF's num_beams with do_sample=False), by the record or by default (--beams,
 * generation_config's num_beams; "use_beam_search": false samples instead): its width (best_of, else the default's,
 * else n), HF's length_penalty and early_stopping; deterministic, so the sampling settings do not apply, and one
 * beam is greedy search (HF's). What would change its choices and is not done with it is refused (beam_refusal);
 * logprobs are each hypothesis's, from its beams' steps (vLLM's).
 * Without it, length_penalty and early_stopping ask for nothing else. */
static bool get_beam(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool beam)
{
    bool g, gl, ge = false;
    double d, lpv = 1.0;
    if (!get_number(c, obj, "length_penalty", -100, 100, false, &gl, &lpv)) return false;
    if (gl) gs->length_penalty = (float)lpv;
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(obj, "early_stopping");
    if (es && !cJSON_IsNull(es)) {
        ge = true;
        if (cJSON_IsBool(es)) {
            gs->early_stopping = cJSON_IsTrue(es) ? PB_BEAM_EARLY_TRUE : PB_BEAM_EARLY_HEURISTIC;
        } else if (cJSON_IsString(es) && !strcmp(es->valuestring, "never")) {
            gs->early_stopping = PB_BEAM_EARLY_NEVER;
        } else {
            snprintf(c->err, sizeof c->err, "field 'early_stopping' must be true, false or \"never\"");
            return false;
        }
    }
    if (!beam) { /* their "off" values (vLLM's defaults) ask for nothing */
        const bool lp = gl && lpv != 1.0, es_on = ge && gs->early_stopping != PB_BEAM_EARLY_HEURISTIC;
        if (lp || es_on) {
            snprintf(c->err, sizeof c->err, "field '%s' is for beam search: give use_beam_search true",
                     lp ? "length_penalty" : "early_stopping");
            return false;
        }
        gs->beams = 0;
        return true;
    }
    const int n = gs->n > 1 ? gs->n : 1;
    int width = gs->beams > 0 ? gs->beams : n;
    if (!get_number(c, obj, "best_of", 1, PB_BEAM_MAX, true, &g, &d)) return false;
    if (g)
        width = (int)d;
    if (n > width) {
        snprintf(c->err, sizeof c->err, g ? "field 'best_of' (%d) is less than 'n' (%d)"
                                          : "beam search of %d beams (--beams, generation_config.json) returns at "
                                            "most as many: 'n' is %d", width, n);
        return false;
    }
    if (width > PB_BEAM_MAX) {
        snprintf(c->err, sizeof c->err, "use_beam_search: %d beams; at most %d", width, PB_BEAM_MAX);
        return false;
    }
    gs->sample.temperature = 0; /* deterministic: one beam is greedy search, as HF's num_beams=1 */
    gs->beams = width > 1 ? width : 0;
    const char *no = gs->beams ? beam_refusal(gs) : NULL;
    if (no) {
        snprintf(c->err, sizeof c->err, "beam search is not done with %s (\"use_beam_search\": false samples "
                 "instead)", no);
        return false;
    }
    return true;
}

static bool apply_settings(field_ctx *c, const cJSON *obj, pb_gen_settings *gs, bool *nomem)
{
    bool g;
    double d;
    if (!get_number(c, obj, "max_tokens", 0, 1 << 24, true, &g, &d)) return false;
    if (g) gs->max_tokens = (int)d;
    /* the chat API's newer name for it */
    bool g2;
    double d2;
    if (!get_number(c, obj, "max_completion_tokens", 0, 1 << 24, true, &g2, &d2)) return false;
    if (g2) {
        if (g && d2 != d) {
            snprintf(c->err, sizeof c->err, "fields 'max_tokens' (%d) and 'max_completion_tokens' (%d) differ",
                     (int)d, (int)d2);
            return false;
        }
        gs->max_tokens = (int)d2;
    }
    if (!get_number(c, obj, "temperature", 0, 100, false, &g, &d)) return false;
    if (g) gs->sample.temperature = (float)d;
    if (!get_number(c, obj, "top_k", -1, 2147483647.0, true, &g, &d)) return false;
    if (g) gs->sample.top_k = d < 0 ? 0 : (int32_t)d; /* -1 = off, as in vLLM */
    if (!get_number(c, obj, "top_p", 0, 1, false, &g, &d)) return false;
    if (g) {
        if (d == 0) {
            snprintf(c->err, sizeof c->err, "field 'top_p' must be in (0, 1]");
            return false;
        }
        gs->sample.top_p = (float)d;
    }
    if (!get_number(c, obj, "min_p", 0, 1, false, &g, &d)) return false;
    if (g) gs->sample.min_p = (float)d;
    if (!get_number(c, obj, "repetition_penalty", 0, 100, false, &g, &d)) return false;
    if (g) {
        if (d == 0) {
            snprintf(c->err, sizeof c->err, "field 'repetition_penalty' must be > 0");
            return false;
        }
        gs->sample.repetition_penalty = (float)d;
    }
    if (!get_number(c, obj, "frequency_penalty", -2, 2, false, &g, &d)) return false;
    if (g) gs->sample.frequency_penalty = (float)d;
    if (!get_number(c, obj, "presence_penalty", -2, 2, false, &g, &d)) return false;
    if (g) gs->sample.presence_penalty = (float)d;
    bool has_max = cJSON_GetObjectItemCaseSensitive(obj, "max_tokens") != NULL ||
                   cJSON_GetObjectItemCaseSensitive(obj, "max_completion_tokens") != NULL;
    if (!get_number(c, obj, "min_tokens", 0, 1 << 24, true, &g, &d)) return false;
    if (g) {
        /* as vLLM: a record asking for more than its own max_tokens is refused */
        if (has_max && (int)d > gs->max_tokens) {
            snprintf(c->err, sizeof c->err, "field 'min_tokens' (%d) is more than 'max_tokens' (%d)",
                     (int)d, gs->max_tokens);
            return false;
        }
        gs->min_tokens = (int)d;
    }
    if (!get_bool(c, obj, "ignore_eos", &gs->ignore_eos)) return false;
    if (!get_number(c, obj, "n", 1, PB_GEN_MAX_N, true, &g, &d)) return false;
    if (g) gs->n = (int)d;
    bool beam = gs->beams > 0; /* by default (--beams, generation_config.json), unless the record says */
    if (!get_bool(c, obj, "use_beam_search", &beam)) return false;
    if (!refuse_unsupported(c, obj, gs->n > 1 ? gs->n : 1, beam)) return false;
    if (!get_logprobs(c, obj, gs)) return false;
    if (!get_number(c, obj, "prompt_logprobs", 0, PB_MAX_LOGPROBS, true, &g, &d)) return false;
    if (g) {
        gs->prompt_logprobs = true;
        gs->prompt_top = (int)d;
    }
    if (!get_bool(c, obj, "echo", &gs->echo)) return false;
    if (!get_lp_ids(c, obj, gs)) return false;
    if (!get_bool(c, obj, "return_token_ids", &gs->return_ids)) return false;
    if (!get_bool(c, obj, "return_tokens_as_token_ids", &gs->ids_as_tokens)) return false;
    if (!get_truncation(c, obj, gs)) return false;
    if (!get_stop_ids(c, obj, gs)) return false;
    if (!get_bad_words(c, obj, gs, nomem)) return false;
    if (!get_allowed_ids(c, obj, gs, nomem)) return false;
    if (!get_bool(c, obj, "include_stop_str_in_output", &gs->include_stop)) return false;
    bool skip = !gs->keep_special;
    if (!get_bool(c, obj, "skip_special_tokens", &skip)) return false;
    gs->keep_special = !skip;
    if (!get_logit_bias(c, obj, gs, nomem)) return false;
    if (!get_guide(c, obj, gs, nomem)) return false;
    if (!get_number(c, obj, "seed", 0, 9007199254740992.0, true, &g, &d)) return false;
    if (g) {
        gs->seed = (uint64_t)d;
        gs->own_seed = true;
    }
    const cJSON *stop = cJSON_GetObjectItemCaseSensitive(obj, "stop");
    if (stop && !cJSON_IsNull(stop)) {
        const cJSON *items[PB_GEN_MAX_STOPS];
        int n = 0;
        if (cJSON_IsString(stop)) {
            items[n++] = stop;
        } else if (cJSON_IsArray(stop)) {
            const cJSON *it;
            cJSON_ArrayForEach(it, stop) {
                if (!cJSON_IsString(it)) {
                    snprintf(c->err, sizeof c->err, "field 'stop' must be a string or a list of strings");
                    return false;
                }
                if (n >= PB_GEN_MAX_STOPS) {
                    snprintf(c->err, sizeof c->err, "field 'stop': more than %d strings", PB_GEN_MAX_STOPS);
                    return false;
                }
                items[n++] = it;
            }
        } else {
            snprintf(c->err, sizeof c->err, "field 'stop' must be a string or a list of strings");
            return false;
        }
        for (int i = 0; i < n; i++) {
            size_t l = strlen(items[i]->valuestring);
            if (l == 0 || l > PB_GEN_MAX_STOP_LEN) {
                snprintf(c->err, sizeof c->err, "field 'stop': stop strings must have 1 to %d bytes",
                         PB_GEN_MAX_STOP_LEN);
                return false;
            }
        }
        for (int i = 0; i < gs->n_stops; i++)
            free(gs->stops[i]);
        gs->n_stops = 0;
        for (int i = 0; i < n; i++) {
            gs->stops[i] = pb_strdup(items[i]->valuestring);
            if (!gs->stops[i]) {
                *nomem = true;
                return false;
            }
            gs->n_stops = i + 1;
        }
    }
    return get_beam(c, obj, gs, beam);
}

static pb_status fail_record(pb_record *rec, const char *msg)
{
    return pb_record_set_error(rec, "%s", msg);
}

/* A prompt given as token ids (OpenAI's and vLLM's completions): a list of 1 or more integers >= 0 (the
 * model's vocabulary is checked when the record is admitted); what: "" or " (prompt K)", for messages. */
static pb_status get_ids(pb_record *rec, const cJSON *pv, const char *field, const char *what, int32_t **out,
                         int *n_out)
{
    const int n = cJSON_GetArraySize(pv);
    if (n == 0)
        return pb_record_set_error(rec, "field '%s'%s is an empty list", field, what);
    int32_t *ids = malloc((size_t)n * sizeof *ids);
    if (!ids)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, pv) {
        if (!cJSON_IsNumber(it) || !token_id(NULL, it->valuedouble, false, &ids[k])) {
            free(ids);
            return pb_record_set_error(rec, "field '%s'%s: item %d is not a token id (an integer >= 0)", field,
                                       what, k);
        }
        k++;
    }
    *out = ids;
    *n_out = n;
    return PB_OK;
}

/* OpenAI's list of several prompts (its completions API's, vLLM's): all text, or all lists of token ids; each
 * answered in the line's one response. The native shape takes one prompt a line. */
static pb_status get_prompt_list(pb_record *rec, const cJSON *pv, const char *field)
{
    const int n = cJSON_GetArraySize(pv);
    if (!rec->openai && !rec->gs.embed)
        return pb_record_set_error(rec, "field '%s' holds %d prompts; a record takes one (a line each, or the "
                                   "OpenAI batch shape's list)", field, n);
    if (n > PB_GEN_MAX_PROMPTS)
        return pb_record_set_error(rec, "field '%s' holds %d prompts; a record takes at most %d", field, n,
                                   PB_GEN_MAX_PROMPTS);
    if (rec->gs.n > 1 && (long)n * rec->gs.n > 16 * PB_GEN_MAX_PROMPTS)
        return pb_record_set_error(rec, "field '%s' holds %d prompts of n = %d completions each; a record asks "
                                   "at most %d", field, n, rec->gs.n, 16 * PB_GEN_MAX_PROMPTS);
    if (!(rec->prompts = calloc((size_t)n, sizeof *rec->prompts)))
        return pb_error(PB_ERR_NOMEM, "out of memory");
    rec->n_prompts = n;
    const bool text = cJSON_IsString(pv->child);
    int k = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, pv) {
        pb_prompt *p = &rec->prompts[k];
        if (text ? !cJSON_IsString(it) : !cJSON_IsArray(it))
            return pb_record_set_error(rec, "field '%s': prompt %d is not %s, as prompt 0 is (give every prompt as "
                                       "text, or every one as a list of token ids)", field, k,
                                       text ? "a string" : "a list of token ids");
        if (text) {
            p->len = strlen(it->valuestring);
            if (!(p->text = pb_strdup(it->valuestring)))
                return pb_error(PB_ERR_NOMEM, "out of memory");
        } else {
            char what[32];
            snprintf(what, sizeof what, " (prompt %d)", k);
            PB_CHECK(get_ids(rec, it, field, what, &p->ids, &p->n_ids));
            if (rec->error)
                return PB_OK;
        }
        k++;
    }
    return PB_OK;
}

/* A chat record's reply role and echo (vLLM's): the role answering is the assistant, or without
 * add_generation_prompt the last message's own; echo is the content of the last message where it is that
 * role's, a string or its text parts joined by newlines. */
static pb_status get_chat_reply(pb_record *rec, const cJSON *body, const cJSON *messages)
{
    bool add_gen, cont;
    if (pb_chat_flags(body, &add_gen, &cont) != PB_OK)
        return pb_record_set_error(rec, "%s", pb_last_error());
    const cJSON *last = NULL, *it;
    cJSON_ArrayForEach(it, messages)
        last = it;
    const cJSON *role = cJSON_GetObjectItemCaseSensitive(last, "role");
    const cJSON *content = cJSON_GetObjectItemCaseSensitive(last, "content");
    if (!add_gen && cJSON_IsString(role) && strcmp(role->valuestring, "assistant") != 0 &&
        !(rec->reply_role = pb_strdup(role->valuestring)))
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!rec->gs.echo || (add_gen && (!cJSON_IsString(role) || strcmp(role->valuestring, "assistant") != 0)))
        return PB_OK;
    pb_jbuf b;
    pb_jbuf_init(&b);
    if (cJSON_IsString(content)) {
        pb_jbuf_puts(&b, content->valuestring);
    } else if (cJSON_IsArray(content)) {
        bool first = true;
        cJSON_ArrayForEach(it, content) {
            const cJSON *type = cJSON_GetObjectItemCaseSensitive(it, "type");
            const cJSON *text = cJSON_GetObjectItemCaseSensitive(it, "text");
            if (cJSON_IsString(type) && !strcmp(type->valuestring, "text") && cJSON_IsString(text)) {
                pb_jbuf_puts(&b, first ? "" : "\n");
                pb_jbuf_puts(&b, text->valuestring);
                first = false;
            }
        }
    }
    pb_status st = pb_jbuf_status(&b);
    if (st == PB_OK && b.len) {
        rec->echo_text = b.data;
        rec->echo_len = b.len;
        pb_jbuf_init(&b);
    }
    pb_jbuf_free(&b);
    return st;
}

pb_status pb_record_parse(const char *line, size_t len, uint64_t line_no,
                          const pb_gen_settings *base, pb_record *rec)
{
    memset(rec, 0, sizeof *rec);
    rec->line = line_no;
    rec->n_prompts = 1;
    char num[32];
    snprintf(num, sizeof num, "%llu", (unsigned long long)line_no);
    rec->id_json = pb_strdup(num);
    if (!rec->id_json)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    PB_CHECK(pb_gen_settings_copy(&rec->gs, base));

    if (memchr(line, '\0', len))
        return fail_record(rec, "invalid JSON: NUL byte in the line");
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(line, len, &end, false);
    if (!root) {
        size_t at = end && end >= line && end <= line + len ? (size_t)(end - line) : 0;
        return pb_record_set_error(rec, "invalid JSON near byte %zu", at + 1);
    }
    /* only whitespace may follow the value */
    if (end && !pb_line_is_blank(end, len - (size_t)(end - line))) {
        cJSON_Delete(root);
        return pb_record_set_error(rec, "invalid JSON: unexpected text after the object at byte %zu",
                                   (size_t)(end - line) + 1);
    }
    pb_status st = PB_OK;
    field_ctx c = {{0}};
    bool nomem = false;
    if (!cJSON_IsObject(root)) {
        st = fail_record(rec, "a record must be a JSON object");
        goto out;
    }
    const cJSON *idv = cJSON_GetObjectItemCaseSensitive(root, "id");
    if (idv && !cJSON_IsNull(idv)) {
        if (!cJSON_IsString(idv) && !cJSON_IsNumber(idv)) {
            st = fail_record(rec, "field 'id' must be a string or a number");
            goto out;
        }
        char *raw = raw_member(line, len, "id");
        if (!raw)
            raw = cJSON_PrintUnformatted(idv); /* escaped key: cJSON's spelling */
        if (!raw) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto out;
        }
        free(rec->id_json);
        rec->id_json = raw;
    }
    const cJSON *body = root;
    const cJSON *cid = cJSON_GetObjectItemCaseSensitive(root, "custom_id");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(root, "url");
    const cJSON *jbody = cJSON_GetObjectItemCaseSensitive(root, "body");
    if (cid || url || jbody) {
        rec->openai = true;
        if (cid && !cJSON_IsNull(cid)) {
            if (!cJSON_IsString(cid) && !cJSON_IsNumber(cid)) {
                st = fail_record(rec, "field 'custom_id' must be a string");
                goto out;
            }
            rec->custom_id_json = raw_member(line, len, "custom_id");
            if (!rec->custom_id_json)
                rec->custom_id_json = cJSON_PrintUnformatted(cid);
            if (!rec->custom_id_json) {
                st = pb_error(PB_ERR_NOMEM, "out of memory");
                goto out;
            }
        }
        const cJSON *method = cJSON_GetObjectItemCaseSensitive(root, "method");
        if (method && (!cJSON_IsString(method) || strcmp(method->valuestring, "POST") != 0)) {
            st = fail_record(rec, "field 'method' must be \"POST\"");
            goto out;
        }
        if (!cJSON_IsString(url)) {
            st = fail_record(rec, rec->gs.embed ? "OpenAI batch shape: field 'url' must be \"/v1/embeddings\""
                                                : "OpenAI batch shape: field 'url' must be \"/v1/completions\" or "
                                                  "\"/v1/chat/completions\"");
            goto out;
        }
        const bool emb_url = !strcmp(url->valuestring, "/v1/embeddings");
        if (emb_url != rec->gs.embed && (emb_url || !strcmp(url->valuestring, "/v1/completions") ||
                                         !strcmp(url->valuestring, "/v1/chat/completions"))) {
            st = pb_record_set_error(rec, emb_url ? "url '/v1/embeddings' needs a run with --task embed (this one "
                                                    "generates)"
                                                  : "url '%.100s' asks for generation, but this run embeds (--task "
                                                    "embed): give /v1/embeddings lines", url->valuestring);
            goto out;
        }
        if (strcmp(url->valuestring, "/v1/chat/completions") == 0)
            rec->chat = true;
        else if (strcmp(url->valuestring, "/v1/completions") != 0 && !emb_url) {
            st = pb_record_set_error(rec, "OpenAI batch shape: url '%.200s' is not supported (only "
                                     "/v1/completions, /v1/chat/completions and /v1/embeddings)", url->valuestring);
            goto out;
        }
        if (!cJSON_IsObject(jbody)) {
            st = fail_record(rec, "OpenAI batch shape: field 'body' must be an object");
            goto out;
        }
        body = jbody;
        const cJSON *stream = cJSON_GetObjectItemCaseSensitive(body, "stream");
        if (stream && cJSON_IsTrue(stream)) {
            st = fail_record(rec, "field 'body.stream': streaming is not supported in batch mode");
            goto out;
        }
    }
    const cJSON *pv = cJSON_GetObjectItemCaseSensitive(body, "prompt");
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(body, "messages");
    const cJSON *iv = cJSON_GetObjectItemCaseSensitive(body, "input");
    if (rec->gs.embed) { /* an embeddings request: its input (OpenAI's), or a native record's prompt */
        if (mv && !cJSON_IsNull(mv)) {
            st = pb_record_set_error(rec, "field '%s' is a chat; this run embeds text (give 'input')",
                                     rec->openai ? "body.messages" : "messages");
            goto out;
        }
        if (iv && !cJSON_IsNull(iv) && pv && !cJSON_IsNull(pv)) {
            st = pb_record_set_error(rec, "give 'input' or 'prompt', not both");
            goto out;
        }
        if (rec->openai || (iv && !cJSON_IsNull(iv)))
            pv = iv;
        if (!get_embed_settings(&c, body, &rec->gs)) {
            st = pb_record_set_error(rec, "%s%s", rec->openai ? "body: " : "", c.err);
            goto out;
        }
    } else if (!rec->openai && iv && !cJSON_IsNull(iv) && (!pv || cJSON_IsNull(pv))) {
        st = pb_record_set_error(rec, "field 'input' is an embeddings request's; this run generates (--task embed "
                                 "embeds)");
        goto out;
    }
    if (!rec->openai && mv && !cJSON_IsNull(mv))
        rec->chat = true;
    if (rec->chat) {
        /* rendered later by the model's chat template (the runner) */
        if (pv && !cJSON_IsNull(pv)) {
            st = fail_record(rec, rec->openai ? "a chat completion takes 'body.messages', not 'body.prompt'"
                                              : "give 'prompt' or 'messages', not both");
            goto out;
        }
        if (!cJSON_IsArray(mv)) {
            st = fail_record(rec, rec->openai ? "field 'body.messages' must be a list"
                                              : "field 'messages' must be a list");
            goto out;
        }
        if (!apply_settings(&c, body, &rec->gs, &nomem)) {
            if (nomem)
                st = pb_error(PB_ERR_NOMEM, "out of memory");
            else
                st = pb_record_set_error(rec, "%s%s", rec->openai ? "body: " : "", c.err);
            goto out;
        }
        if ((st = get_chat_reply(rec, body, mv)) != PB_OK || rec->error)
            goto out;
        rec->chat_json = cJSON_PrintUnformatted(body);
        if (!rec->chat_json)
            st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    const char *pfield = rec->gs.embed ? (rec->openai ? "body.input" : pv == iv ? "input" : "prompt")
                                       : rec->openai ? "body.prompt" : "prompt";
    if (!pv || cJSON_IsNull(pv)) {
        st = pb_record_set_error(rec, "missing field '%s'", pfield);
        goto out;
    }
    if (cJSON_IsArray(pv) && cJSON_GetArraySize(pv) == 1 && !cJSON_IsNumber(pv->child))
        pv = pv->child; /* OpenAI's list of prompts, of one: a string or a list of ids */
    if (!cJSON_IsString(pv) && !cJSON_IsArray(pv)) {
        st = pb_record_set_error(rec, "field '%s' must be a string or a list of token ids", pfield);
        goto out;
    }
    /* several prompts: a list of strings or of lists (a list of anything else: the ids' messages) */
    const bool several = cJSON_IsArray(pv) && cJSON_GetArraySize(pv) > 1 &&
                         (cJSON_IsString(pv->child) || cJSON_IsArray(pv->child));
    if (rec->gs.embed)
        goto prompt_value;
    if (!apply_settings(&c, body, &rec->gs, &nomem)) {
        if (nomem)
            st = pb_error(PB_ERR_NOMEM, "out of memory");
        else
            st = pb_record_set_error(rec, "%s%s", rec->openai ? "body: " : "", c.err);
        goto out;
    }
    if (rec->gs.tool_name || rec->gs.tool_required) {
        st = pb_record_set_error(rec, "field 'tool_choice' calls a function of a chat's 'tools': give 'messages'");
        goto out;
    }
    /* vLLM's completions: echo with logprobs lists the prompt's tokens too, at the same count */
    const cJSON *plv = cJSON_GetObjectItemCaseSensitive(body, "prompt_logprobs");
    if (rec->gs.echo && rec->gs.logprobs && (!plv || cJSON_IsNull(plv))) {
        rec->gs.prompt_logprobs = true;
        rec->gs.prompt_top = rec->gs.top_logprobs;
    }
prompt_value:
    if (cJSON_IsString(pv)) {
        rec->prompt_len = strlen(pv->valuestring);
        rec->prompt = pb_strdup(pv->valuestring);
        if (!rec->prompt)
            st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto out;
    }
    st = several ? get_prompt_list(rec, pv, pfield)
                 : get_ids(rec, pv, pfield, "", &rec->prompt_ids, &rec->n_prompt_ids);
out:
    cJSON_Delete(root);
    return st;
}
