/* A small Jinja2 interpreter for chat templates, configured as HF transformers
 * configures its environment (trim_blocks, lstrip_blocks, loop controls, the
 * globals raise_exception / strftime_now / namespace / dict, HF's tojson).
 * Values are none/bool/int/float/string/list/dict (+ namespace, loop, macro);
 * the variables come in as a cJSON object. A construct that is not supported
 * is an error naming it and its template line, never a silently wrong text. */
#ifndef PB_CHAT_JINJA_H
#define PB_CHAT_JINJA_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "common/status.h"

typedef struct pb_jinja pb_jinja;

/* Limits against runaway templates (0 in a field = the default). */
typedef struct pb_jinja_limits {
    size_t max_output;      /* bytes of rendered text (default 16 MiB) */
    size_t max_memory;      /* bytes of values made while rendering (default 256 MiB) */
    size_t max_iterations;  /* loop iterations and macro calls in all (default 200,000) */
    int max_depth;          /* nested macro calls (default 64) */
} pb_jinja_limits;

/* Parse a template. `name` names it in messages ("chat template"). Syntax
 * errors and unknown filters/tests/statements fail here with the line. */
pb_status pb_jinja_parse(const char *src, size_t len, const char *name, pb_jinja **out);
void pb_jinja_free(pb_jinja *t);

/* Render with the variables of `vars` (a cJSON object; NULL = none). *out is
 * malloc'ed, NUL-terminated, *out_len bytes. lim may be NULL. */
pb_status pb_jinja_render(const pb_jinja *t, const cJSON *vars, const pb_jinja_limits *lim,
                          char **out, size_t *out_len);

/* Python's str.lstrip() / str.rstrip() on UTF-8 text: the length of the leading whitespace run / of the text
 * without its trailing whitespace (str.isspace()'s code points). */
size_t pb_py_lstrip_len(const char *p, size_t n);
size_t pb_py_rstrip_len(const char *p, size_t n);

#endif
