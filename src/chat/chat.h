/* Chat records -> prompt text through the model's chat template, with the
 * variables HF's apply_chat_template passes (messages, add_generation_prompt,
 * the special tokens of tokenizer_config.json, the record's
 * chat_template_kwargs). */
#ifndef PB_CHAT_CHAT_H
#define PB_CHAT_CHAT_H

#include <stdbool.h>
#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/status.h"

typedef struct pb_chat pb_chat;

/* The template and special tokens of a model folder: tokenizer_config.json's
 * chat_template (string, or a list of {name, template}: "default"), else
 * chat_template.jinja or chat_template.json beside it. */
pb_status pb_chat_load_dir(const char *dir, pb_chat **out);
/* Explicit files: a template file (.jinja text, or a .json holding
 * "chat_template") and/or a tokenizer_config.json; either may be NULL. */
pb_status pb_chat_load_files(const char *template_path, const char *tokenizer_config, pb_chat **out);
void pb_chat_free(pb_chat *c);

/* Does this record look like a chat record ({"messages": ...} or an OpenAI
 * batch line for /v1/chat/completions)? */
bool pb_chat_is_chat_record(const cJSON *rec);

/* A chat record's add_generation_prompt and continue_final_message (vLLM's request fields, or its
 * chat_template_kwargs', which win): continue_final_message leaves the final message open for the model to
 * go on with (as HF's apply_chat_template), and makes add_generation_prompt false unless given; both true is
 * an error (PB_ERR_INPUT), as a value that is not true or false. */
pb_status pb_chat_flags(const cJSON *body, bool *add_generation_prompt, bool *continue_final);

/* Render one record into a prompt (malloc'ed, NUL-terminated). Errors are
 * PB_ERR_INPUT for the record, PB_ERR_UNSUPPORTED for template features. */
pb_status pb_chat_render(const pb_chat *c, const cJSON *rec, char **prompt, size_t *len);

#endif
