/* pb_pyjson_dumps on JSON texts, for tests/gen/pyjson_ref.py: each stdin line is a JSON string literal holding
 * one text; each stdout line the result as a JSON string literal, or the word ERROR. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "gen/jbuf.h"
#include "gen/pyjson.h"

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t n;
    pb_jbuf b, o;
    pb_jbuf_init(&b);
    pb_jbuf_init(&o);
    int rc = 0;
    while ((n = getline(&line, &cap, stdin)) > 0) {
        cJSON *s = cJSON_ParseWithLength(line, (size_t)n);
        if (!cJSON_IsString(s)) {
            fprintf(stderr, "pyjson_tool: a line is not a JSON string\n");
            cJSON_Delete(s);
            rc = 2;
            break;
        }
        pb_jbuf_reset(&b);
        pb_jbuf_reset(&o);
        pb_status st = pb_pyjson_dumps(s->valuestring, strlen(s->valuestring), &b);
        if (st == PB_OK) {
            pb_jbuf_str(&o, b.data, b.len);
            fwrite(o.data, 1, o.len, stdout);
            fputc('\n', stdout);
        } else if (st == PB_ERR_INPUT) {
            puts("ERROR");
        } else {
            rc = 1;
        }
        cJSON_Delete(s);
        if (rc)
            break;
    }
    free(line);
    pb_jbuf_free(&b);
    pb_jbuf_free(&o);
    return rc;
}
