/* Input records and generation settings.
 *
 * A record is one JSONL line: native {"prompt" (a string, or a list of token ids; in the OpenAI shape's
 * completions also a list of several), "id", max_tokens, temperature,
 * top_p, top_k, min_p, repetition_penalty, frequency_penalty, presence_penalty,
 * seed, stop, stop_token_ids, min_tokens, ignore_eos, n, logprobs, top_logprobs,
 * logit_bias, prompt_logprobs, include_stop_str_in_output, skip_special_tokens,
 * truncate_prompt_tokens, allowed_token_ids, bad_words, guided_json, guided_regex, guided_choice,
 * guided_whitespace_pattern, structured_outputs, response_format, echo, use_beam_search, best_of,
 * length_penalty, early_stopping}
 * or the OpenAI batch
 * shape {"custom_id", "method": "POST", "url": "/v1/completions", "body":
 * {...the same fields...}}; chat records may add "tools" and "documents" (for
 * the template) and max_completion_tokens (max_tokens). A line that is not a
 * valid record gives a record with `error` set (the run writes an error record
 * naming the line), as does a field of OpenAI's or vLLM's requests that is not
 * done here (a sampled best_of, suffix, ...) unless it holds its "off" value.
 *
 * Settings resolve record > CLI > generation_config.json > built-in
 * (greedy, max_tokens 64, filters off, seed 0). */
#ifndef PB_GEN_RECORD_H
#define PB_GEN_RECORD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "gen/jbuf.h"
#include "gen/sample.h"
#include "model/config.h"
#include "tok/tokenizer.h"

#define PB_GEN_MAX_STOPS 16
#define PB_GEN_MAX_STOP_LEN 1024
#define PB_GEN_MAX_N 128 /* completions a record may ask for (OpenAI's limit) */
#define PB_GEN_MAX_PROMPTS 2048 /* prompts in the list of one completions record (OpenAI batch shape) */

typedef struct pb_gen_settings {
    int max_tokens;
    pb_sample_params sample;
    uint64_t seed;
    bool own_seed;      /* the record gave its seed: the RNG key ignores its position */
    int min_tokens;     /* EOS cannot end the completion before this many tokens (vLLM) */
    bool ignore_eos;    /* EOS never ends the completion (vLLM) */
    bool include_stop;  /* include_stop_str_in_output: the stop string, EOS or stop id that ended it in the text */
    bool keep_special;  /* skip_special_tokens false: special tokens' text in the completion */
    int truncate;       /* truncate_prompt_tokens: the prompt's last this many tokens (-1: the context's less 1) */
    bool embed;         /* the run embeds (--task embed): records are inputs whose embeddings are returned */
    int pooling;        /* embeddings: PB_POOL_* (the run's) */
    bool normalize;     /* embeddings: L2-normalized (the run's; a record's "normalize" overrides) */
    int dimensions;     /* embeddings: only the first this many (then normalized), 0 = all ("dimensions") */
    bool emb_base64;    /* embeddings: "encoding_format": "base64" (little-endian f32), else a list of floats */
    bool trunc_right;   /* truncation_side "right" (vLLM's): its first this many instead */
    int n;              /* completions of the prompt (OpenAI's and vLLM's n), 1..PB_GEN_MAX_N */
    int beams;          /* use_beam_search (vLLM's): beam search of this many beams (best_of, else n), its n best
                         * returned, as HF's generate(num_beams, num_return_sequences=n, do_sample=False); 0 = off */
    float length_penalty; /* beam search: HF's length_penalty (default 1) */
    int early_stopping; /* beam search: HF's early_stopping, a pb_beam_early (false, true, "never") */
    bool logprobs;      /* return each completion token's log probability (pb_sample_logprobs) */
    int top_logprobs;   /* with logprobs: and those of the most likely ids, 0..PB_MAX_LOGPROBS */
    bool prompt_logprobs; /* the prompt tokens' log probabilities too (vLLM's prompt_logprobs) */
    int prompt_top;     /* with prompt_logprobs: and the most likely ids at each, 0..PB_MAX_LOGPROBS */
    int n_lp_ids;       /* logprob_token_ids (vLLM's): logprobs lists these ids' instead of the most likely */
    int32_t lp_ids[PB_MAX_LOGPROBS];
    bool echo;          /* echo: the prompt's text before each completion's (a chat: the last assistant message's) */
    bool return_ids;    /* return_token_ids (vLLM's): the prompt's and each completion's token ids in the output */
    bool ids_as_tokens; /* return_tokens_as_token_ids (vLLM's): logprobs name tokens "token_id:ID" */
    bool has_add_special, add_special; /* add_special_tokens given: the tokenizer's BOS/EOS around a text prompt
                                        * (unless given: a completion's yes, a chat's rendered prompt no, as vLLM) */
    int n_bias;         /* logit_bias: n_bias entries, ids ascending, each once */
    pb_id_bias *bias;   /* owned (pb_gen_settings_clear) */
    int n_allow;        /* allowed_token_ids: only these may be sampled (ids ascending, each once; 0 = any) */
    int32_t *allow;     /* owned (pb_gen_settings_clear) */
    char *guide;        /* constrained decoding: the regex, grammar or JSON mode's whitespace pattern (guide_kind) the
                         * completion must match (gen/guide.h), owned; or NULL */
    const char *guide_field; /* the field that asked it (static), for messages */
    int guide_kind;     /* pb_guide_kind (gen/guide.h): PB_GUIDE_REGEX, _GRAMMAR or _JSON_OBJECT */
    char *tool_name;    /* a named tool_choice: the function the completion calls (its arguments), owned */
    bool tool_required; /* tool_choice "required": the completion is a JSON list of {name, parameters} calls */
    int n_stop_ids;     /* stop_token_ids: sampling one ends the completion ("stop"; as EOS, its text left out) */
    int32_t stop_ids[PB_MAX_STOP_IDS];
    int n_stops;
    char *stops[PB_GEN_MAX_STOPS]; /* owned (pb_gen_settings_clear) */
    int n_bad;          /* bad_words (vLLM's): never generated, alone or after a space (the engine tokenizes them) */
    char *bad[PB_MAX_BAD_WORDS]; /* owned (pb_gen_settings_clear) */
} pb_gen_settings;
/* Embeddings' pooling over the prompt's final hidden states (sentence-transformers' and vLLM's): the last
 * token's, their mean, the first token's. */
enum { PB_POOL_LAST, PB_POOL_MEAN, PB_POOL_CLS };

/* Token ids a record names (logit_bias, stop_token_ids, allowed_token_ids) are checked against
 * the model's vocabulary when it is admitted (the engine). */

/* Generation defaults given on the command line (pb_opts.gen); has_* tells which were given. */
typedef struct pb_gen_cli {
    bool has_max_tokens, has_temperature, has_top_k, has_top_p, has_min_p,
         has_repetition_penalty, has_seed, has_min_tokens, has_logprobs, has_prompt_logprobs;
    int max_tokens, min_tokens;
    int n;              /* --n; 0 = 1 */
    int logprobs;       /* --logprobs N (has_logprobs): log probabilities and the N most likely ids */
    int prompt_logprobs; /* --prompt-logprobs N (has_prompt_logprobs): the prompt tokens' */
    bool ignore_eos;
    bool has_beams, has_length_penalty, has_early_stopping;
    int beams;          /* --beams: beam search of this many beams (1: greedy search) */
    float length_penalty;
    int early_stopping; /* a pb_beam_early */
    float temperature, top_p, min_p, repetition_penalty;
    float frequency_penalty, presence_penalty; /* 0 = off */
    int top_k;
    uint64_t seed;
    int n_stops;
    const char *const *stops;
    bool embed;         /* --task embed */
    int pooling;        /* --pooling: 1 + a PB_POOL_*, or 0 (the model's sentence-transformers config, else last) */
    bool no_normalize;  /* --no-normalize */
} pb_gen_cli;

/* Base settings from the CLI and generation_config.json (model may be NULL). */
pb_status pb_gen_settings_base(const pb_gen_cli *cli, const pb_gen_defaults *model,
                               pb_gen_settings *out);
pb_status pb_gen_settings_copy(pb_gen_settings *dst, const pb_gen_settings *src);
void pb_gen_settings_clear(pb_gen_settings *s);

/* One prompt of a completions record's list: text, or token ids (text NULL). */
typedef struct pb_prompt {
    char *text;
    size_t len;
    int32_t *ids;
    int n_ids;
} pb_prompt;

typedef struct pb_record {
    uint64_t line;       /* 1-based line number in the input */
    char *id_json;       /* "id" exactly as written, or the line number */
    char *custom_id_json;/* OpenAI shape: "custom_id" as written (else NULL) */
    bool openai;
    bool chat;           /* "messages" record or /v1/chat/completions line: prompt is
                            NULL until rendered from chat_json (chat/chat.h) */
    char *chat_json;     /* the object holding "messages" (and chat_template_kwargs) */
    char *prompt;        /* UTF-8 as decoded from JSON */
    size_t prompt_len;
    int32_t *prompt_ids; /* a prompt given as token ids (prompt NULL), n_prompt_ids of them, each >= 0 */
    int n_prompt_ids;
    /* OpenAI's completions take a list of prompts: each is answered with n choices, all in the line's one
     * response (choice index = prompt index * n + j, usage summed, as vLLM). The runner gives each prompt a
     * record of its own (pb_record_take_prompt), all with the line's ordinal, and joins their results. */
    int n_prompts;       /* prompts of the record's line: 1, or 2..PB_GEN_MAX_PROMPTS */
    int prompt_index;    /* which of them this record holds (0..n_prompts-1) */
    pb_prompt *prompts;  /* the line's prompts until taken (prompt and prompt_ids NULL meanwhile), owned; NULL when
                            n_prompts is 1, and in a copy */
    char *echo_text;     /* a chat record's echo: its last message's content where that is the assistant's */
    size_t echo_len;
    char *reply_role;    /* a chat's reply's role where not "assistant": without add_generation_prompt, the last
                            message's (vLLM's), else NULL */
    pb_gen_settings gs;
    char *error;         /* non-NULL: this line is an error record with this message */
} pb_record;

/* Parse one line. Bad input is not a failure: rec->error is set and PB_OK is
 * returned; only allocation failures return an error. */
pb_status pb_record_parse(const char *line, size_t len, uint64_t line_no,
                          const pb_gen_settings *base, pb_record *rec);
/* Make rec an error record (keeps id); message printf-style. */
pb_status pb_record_set_error(pb_record *rec, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void pb_record_clear(pb_record *rec);
/* A deep copy (dst is overwritten; cleared again on failure). A list of prompts is not copied. */
pb_status pb_record_copy(pb_record *dst, const pb_record *src);
/* *dst = a copy of src (which holds a list of prompts) with its prompt i moved in (prompt_index i). */
pb_status pb_record_take_prompt(pb_record *dst, pb_record *src, int i);

/* ---- output records ----
 * Each answers one input record in its own shape (native or OpenAI batch),
 * as one JSON line without the newline, appended to b.
 *
 * native:  {"id": ID, "text": "...", "finish_reason": "stop"|"length",
 *           "prompt_tokens": P, "completion_tokens": C}; with logprobs also
 *           "logprobs": [{"id": I, "token": "...", "logprob": L, "top_logprobs":
 *           [{"id": I, "token": "...", "logprob": L}, ...]}, ...] (one a token)
 *          n > 1: {"id": ID, "choices": [{"index": 0, "text": "...", "finish_reason":
 *           ..., "completion_tokens": C0, "logprobs" as above if asked}, ...], "prompt_tokens": P,
 *           "completion_tokens": C0 + C1 + ...}
 *          {"id": ID, "error": {"line": L, "message": "..."}}
 * OpenAI:  {"id": "batch_req_L", "custom_id": ..., "response": {"status_code": 200,
 *           "request_id": "req_L", "body": {"id": "cmpl-L", "object": "text_completion",
 *           "model": M, "choices": [{"index": 0, "text": "...", "logprobs": null,
 *           "finish_reason": ...}], "usage": {...}}}, "error": null}; with logprobs,
 *           "logprobs": {"tokens": [...], "token_logprobs": [...], "top_logprobs":
 *           [{"token": L, ...}, ...] (null for 0), "text_offset": [...]}
 *          a /v1/chat/completions line gets "object": "chat.completion", "id":
 *          "chatcmpl-L" and choices [{"index": 0, "message": {"role": "assistant",
 *          "content": "..."}, "logprobs": null, "finish_reason": ...}] (with logprobs
 *          {"content": [{"token": "...", "logprob": L, "bytes": [...], "top_logprobs":
 *          [{"token", "logprob", "bytes"}, ...]}, ...]}); n > 1: n
 *          choices, index 0..n-1, and usage's completion_tokens their sum
 *          {"id": "batch_req_L", "custom_id": ..., "response": null,
 *           "error": {"code": "invalid_request", "line": L, "message": "..."}}
 * embeddings (gs.embed): native {"id": ID, "embedding": E, "prompt_tokens": P}, a list of inputs
 *          {"id": ID, "data": [{"index": 0, "embedding": E}, ...], "prompt_tokens": P}; OpenAI
 *          {"id": "batch_req_L", "custom_id": ..., "response": {"status_code": 200, "request_id": "req_L",
 *           "body": {"id": "embd-L", "object": "list", "data": [{"object": "embedding", "index": 0,
 *           "embedding": E}, ...], "model": M, "usage": {"prompt_tokens": P, "total_tokens": P}}}, "error": null};
 *          E a list of floats (each float32 as Python writes it) or, with encoding_format "base64", the base64
 *          of its little-endian float32 bytes */
/* An id and its log probability. */
typedef struct pb_lp_pair {
    int32_t id;
    float logprob;       /* <= 0; -inf written as -9999.0 (as vLLM) */
} pb_lp_pair;

/* one completion of a record */
typedef struct pb_choice {
    const char *text;    /* UTF-8 */
    size_t len;
    const char *finish;  /* "stop" or "length" */
    int completion_tokens;
    /* the record's logprobs: for each of the n_lp tokens, 1 + top pairs: the token's, then the top most
     * likely ids' (top = the record's top_logprobs) */
    int n_lp;
    const pb_lp_pair *lp;
    const int32_t *token_ids; /* with return_token_ids: the completion_tokens ids generated */
} pb_choice;

typedef struct pb_result {
    const char *text;    /* the completion, UTF-8 (n_choices 0) */
    size_t len;
    const char *finish;  /* "stop" or "length" (n_choices 0) */
    int prompt_tokens, completion_tokens; /* completion_tokens: over every choice */
    int n_lp;            /* the logprobs of the one completion (n_choices 0), as in pb_choice */
    const pb_lp_pair *lp;
    const int32_t *token_ids; /* its ids, with return_token_ids (n_choices 0) */
    /* the record's prompt_logprobs: for each prompt token after the first (n_plp), 1 + prompt_top pairs as
     * lp's, its rank in prank[] (vLLM's: 1 + the ids more likely) */
    int n_plp;
    const pb_lp_pair *plp;
    const int32_t *prank;
    const pb_tokenizer *tok; /* the tokens' texts for logprobs and echo (an id it has no token for: "") */
    const int32_t *prompt_ids; /* the prompt_tokens ids generated after (echo's logprobs name them) */
    int n_choices;       /* 0: one completion, text/len/finish; else choices[n_choices] (n > 1) */
    const pb_choice *choices;
    const float *embedding; /* an embeddings record's (gs.embed): dim floats, pooled, cut and normalized */
    int dim;
} pb_result;

/* rec->error must be NULL; model: the model's name for the OpenAI shape. */
void pb_record_result_json(pb_jbuf *b, const pb_record *rec, const char *model,
                           const pb_result *res);
/* A completions line of several prompts (OpenAI shape), in two steps: each prompt's choices (index
 * rec->prompt_index * n + j), JSON objects each after ", " but the line's first, appended to b; then the whole
 * line from those parts in prompt order, and the usage summed over the prompts. */
void pb_record_choices_json(pb_jbuf *b, const pb_record *rec, const pb_result *res);
void pb_record_joined_json(pb_jbuf *b, const pb_record *rec, const char *model, const pb_jbuf *parts, int n_parts,
                           int prompt_tokens, int completion_tokens);
/* rec->error must be set. */
void pb_record_error_json(pb_jbuf *b, const pb_record *rec);

/* True when the line holds only whitespace (not a record). */
bool pb_line_is_blank(const char *line, size_t len);

#endif
