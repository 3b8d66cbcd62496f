/* Test helper: reads a JSON document from stdin, {"schema": ..., "ws": "..."}
 * (ws absent: PB_SCHEMA_WS) or {"choices": ["...", ...]}, and prints the
 * regex of pb_schema_regex / pb_choice_regex, or "ERROR: message" (exit 1).
 * A JSON list of such documents prints one JSON line for each instead:
 * {"regex": "..."} or {"error": "..."}. Used by schema_ref.py. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gen/schema.h"

static pb_status one(const cJSON *doc, char **rx)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(doc, "choices");
    if (choices) {
        int n = cJSON_GetArraySize(choices);
        const char **v = calloc((size_t)n + 1, sizeof *v);
        if (!v)
            return pb_error(PB_ERR_NOMEM, "out of memory");
        for (int i = 0; i < n; i++) {
            const cJSON *e = cJSON_GetArrayItem(choices, i);
            v[i] = cJSON_IsString(e) ? e->valuestring : NULL;
        }
        pb_status st = pb_choice_regex(v, n, rx);
        free(v);
        return st;
    }
    const cJSON *ws = cJSON_GetObjectItemCaseSensitive(doc, "ws");
    return pb_schema_regex(cJSON_GetObjectItemCaseSensitive(doc, "schema"),
                           cJSON_IsString(ws) ? ws->valuestring : PB_SCHEMA_WS, rx);
}

int main(void)
{
    size_t len = 0, cap = 1 << 16;
    char *text = malloc(cap);
    size_t got;
    while (text && (got = fread(text + len, 1, cap - len - 1, stdin)) > 0) {
        len += got;
        if (cap - len < 2) {
            char *t = realloc(text, cap *= 2);
            if (!t)
                free(text);
            text = t;
        }
    }
    if (!text)
        return 2;
    text[len] = '\0';
    cJSON *doc = cJSON_Parse(text);
    free(text);
    if (!doc) {
        fprintf(stderr, "schema_tool: bad JSON\n");
        return 2;
    }
    int rc = 0;
    if (cJSON_IsArray(doc)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, doc) {
            char *rx = NULL;
            cJSON *o = cJSON_CreateObject();
            if (one(e, &rx) == PB_OK)
                cJSON_AddStringToObject(o, "regex", rx);
            else
                cJSON_AddStringToObject(o, "error", pb_last_error());
            char *line = cJSON_PrintUnformatted(o);
            if (!line)
                return 2;
            puts(line);
            cJSON_free(line);
            cJSON_Delete(o);
            free(rx);
        }
    } else {
        char *rx = NULL;
        if (one(doc, &rx) == PB_OK) {
            puts(rx);
        } else {
            printf("ERROR: %s\n", pb_last_error());
            rc = 1;
        }
        free(rx);
    }
    cJSON_Delete(doc);
    return rc;
}
