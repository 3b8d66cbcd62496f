/* pippy-batch render: chat records on stdin -> {"prompt": "<text>"} per line
 * on stdout, the text the model is given (the chat template rendered as HF's
 * apply_chat_template(messages, tokenize=False, add_generation_prompt=True)).
 * Records: {"messages": [...], "chat_template_kwargs": {...}} or OpenAI batch
 * lines {"url": "/v1/chat/completions", "body": {"messages": [...]}}.
 * Blank lines are skipped; any other bad line stops with an error naming it. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "chat/chat.h"
#include "ckpt/folder.h"
#include "cli/commands.h"
#include "gen/jbuf.h"

static pb_status load_chat(const pb_opts *opts, pb_chat **c)
{
    if (opts->template_path || opts->tokenizer_config)
        return pb_chat_load_files(opts->template_path, opts->tokenizer_config, c);
    char *dir = NULL;
    pb_status st = pb_model_dir_resolve(opts->model_dir, &dir);
    if (st == PB_OK)
        st = pb_model_dir_check(dir, 0);
    if (st == PB_OK)
        st = pb_chat_load_dir(dir, c);
    free(dir);
    return st;
}

pb_status pb_cmd_render(const pb_opts *opts)
{
    pb_chat *c = NULL;
    PB_CHECK(load_chat(opts, &c));
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t got;
    pb_jbuf out;
    pb_jbuf_init(&out);
    pb_status st = PB_OK;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        size_t len = (size_t)got, k = 0;
        while (k < len && strchr(" \t\r\n", line[k]))
            k++;
        if (k == len)
            continue;
        cJSON *rec = cJSON_ParseWithLength(line, len);
        if (!cJSON_IsObject(rec)) {
            cJSON_Delete(rec);
            st = pb_error(PB_ERR_FORMAT, "stdin line %zu: not a JSON object", line_no);
            break;
        }
        char *prompt;
        size_t plen;
        st = pb_chat_render(c, rec, &prompt, &plen);
        cJSON_Delete(rec);
        if (st != PB_OK) {
            st = pb_error_ctx(st, "stdin line %zu", line_no);
            break;
        }
        pb_jbuf_reset(&out);
        pb_jbuf_puts(&out, "{\"prompt\": ");
        pb_jbuf_str(&out, prompt, plen);
        pb_jbuf_puts(&out, "}\n");
        free(prompt);
        if ((st = pb_jbuf_status(&out)) != PB_OK)
            break;
        if (fwrite(out.data, 1, out.len, stdout) != out.len) {
            st = pb_error(PB_ERR_IO, "stdout: write failed");
            break;
        }
    }
    if (st == PB_OK && ferror(stdin))
        st = pb_error(PB_ERR_IO, "stdin: read error");
    if (fflush(stdout) != 0 && st == PB_OK)
        st = pb_error(PB_ERR_IO, "stdout: write failed");
    free(line);
    pb_jbuf_free(&out);
    pb_chat_free(c);
    return st;
}
