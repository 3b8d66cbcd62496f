/* libFuzzer target: chat template text -> parse, then render with a fixed
 * conversation under small limits (pb_jinja_parse / pb_jinja_render). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"

/* libFuzzer entry point */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char VARS[] =
    "{\"messages\": [{\"role\": \"system\", \"content\": \" Be brief. \"},"
    " {\"role\": \"user\", \"content\": \"H\\u00e9llo \\ud83d\\ude42\"},"
    " {\"role\": \"assistant\", \"content\": \"<think>x</think>Hi\", \"reasoning_content\": \"r\"},"
    " {\"role\": \"user\", \"content\": \"\"}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\","
    " \"tools\": null, \"documents\": null, \"n\": 3, \"f\": 0.5, \"l\": [3, 1, 2], \"d\": {\"a\": [1, null]}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cJSON *vars;
    if (!vars && !(vars = cJSON_Parse(VARS)))
        __builtin_trap();
    pb_jinja *t;
    if (pb_jinja_parse(size ? (const char *)data : "", size, "fuzz template", &t) != PB_OK)
        return 0;
    pb_jinja_limits lim = {.max_output = 1 << 20, .max_memory = 64 << 20, .max_iterations = 20000,
                           .max_depth = 32};
    char *out;
    size_t n;
    if (pb_jinja_render(t, vars, &lim, &out, &n) == PB_OK) {
        if (n > lim.max_output || out[n] != '\0')
            __builtin_trap();
        free(out);
    }
    pb_jinja_free(t);
    return 0;
}
