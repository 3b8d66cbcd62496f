/* pippy-batch tokenize / detokenize: JSONL on stdin, JSONL on stdout.
 *   tokenize:   {"text": "..."} -> {"ids": [...]}   (HF encode(text, add_special_tokens))
 *   detokenize: {"ids": [...]}  -> {"text": "..."}  (HF decode(ids, skip_special_tokens))
 * Blank lines are skipped; any other bad line stops with an error naming it. */
#include "config.h"

#define _GNU_SOURCE 1   /* memmem, strcasestr */

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>

#include "cli/commands.h"
#include "common/util.h"
#include "gen/jbuf.h"
#include "ckpt/folder.h"
#include "tok/tokenizer.h"

static pb_status load_tok(const pb_opts *opts, pb_tokenizer **tok)
{
    if (opts->tokenizer)
        return pb_tokenizer_load(opts->tokenizer, tok);
    char *dir = NULL, *path = NULL;
    pb_status st = pb_model_dir_resolve(opts->model_dir, &dir);
    if (st == PB_OK)
        st = pb_model_dir_check(dir, PB_MODEL_NEED_TOKENIZER);
    if (st == PB_OK)
        st = pb_model_tokenizer_path(dir, &path);
    if (st == PB_OK)
        st = pb_tokenizer_load(path, tok);
    free(path);
    free(dir);
    return st;
}

static bool blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return false;
    return true;
}

/* cJSON ends strings at NUL, so a "\u0000" escape would cut a text short.
 * Such escapes are swapped for U+10FFFF ("\uDBFF\uDFFF", a noncharacter)
 * before parsing and swapped back after; a line that already holds U+10FFFF
 * as well is refused. *nul_escapes tells whether anything was swapped. */
static pb_status escape_nuls(char **line, size_t *len, size_t line_no, bool *nul_escapes)
{
    *nul_escapes = false;
    char *s = *line;
    size_t count = 0;
    for (size_t i = 0; i + 5 < *len; i++) {
        if (s[i] != '\\')
            continue;
        if (s[i + 1] == 'u' && strncasecmp(s + i + 2, "0000", 4) == 0)
            count++;
        i++;   /* skip the escaped character */
    }
    if (!count)
        return PB_OK;
    if (memmem(s, *len, "\xF4\x8F\xBF\xBF", 4) || strcasestr(s, "\\udbff\\udfff"))
        return pb_error(PB_ERR_FORMAT, "stdin line %zu: holds both U+0000 and U+10FFFF, which is not "
                        "supported", line_no);
    char *o = malloc(*len + count * 6 + 1);
    if (!o)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    size_t w = 0;
    for (size_t i = 0; i < *len; i++) {
        if (s[i] == '\\' && i + 5 < *len && s[i + 1] == 'u' && strncasecmp(s + i + 2, "0000", 4) == 0) {
            memcpy(o + w, "\\uDBFF\\uDFFF", 12);
            w += 12;
            i += 5;
            continue;
        }
        o[w++] = s[i];
        if (s[i] == '\\' && i + 1 < *len)
            o[w++] = s[++i];
    }
    o[w] = '\0';
    free(*line);
    *line = o;
    *len = w;
    *nul_escapes = true;
    return PB_OK;
}

/* The text of a parsed string with U+10FFFF turned back into NUL bytes. */
static size_t unescape_nuls(char *t)
{
    size_t w = 0, n = strlen(t);
    for (size_t i = 0; i < n; i++) {
        if (i + 3 < n && memcmp(t + i, "\xF4\x8F\xBF\xBF", 4) == 0) {
            t[w++] = '\0';
            i += 3;
        } else
            t[w++] = t[i];
    }
    return w;
}

typedef pb_status (*line_fn)(const pb_tokenizer *tok, const pb_opts *opts, const cJSON *rec,
                             size_t line_no, bool nul_escapes, pb_jbuf *out);

static pb_status tokenize_line(const pb_tokenizer *tok, const pb_opts *opts, const cJSON *rec,
                               size_t line_no, bool nul_escapes, pb_jbuf *out)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(rec, "text");
    if (!cJSON_IsString(t) || !t->valuestring)
        return pb_error(PB_ERR_FORMAT, "stdin line %zu: expected {\"text\": string}", line_no);
    size_t tl = nul_escapes ? unescape_nuls(t->valuestring) : strlen(t->valuestring);
    int32_t *ids;
    size_t n;
    pb_status st = pb_tokenizer_encode(tok, t->valuestring, tl, !opts->no_special, &ids, &n);
    if (st != PB_OK)
        return pb_error_ctx(st, "stdin line %zu", line_no);
    pb_jbuf_puts(out, "{\"ids\": [");
    for (size_t i = 0; i < n; i++)
        pb_jbuf_printf(out, i ? ", %d" : "%d", (int)ids[i]);
    pb_jbuf_puts(out, "]}\n");
    free(ids);
    return pb_jbuf_status(out);
}

static pb_status detokenize_line(const pb_tokenizer *tok, const pb_opts *opts, const cJSON *rec,
                                 size_t line_no, bool nul_escapes, pb_jbuf *out)
{
    (void)nul_escapes;
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(rec, "ids");
    if (!cJSON_IsArray(a))
        return pb_error(PB_ERR_FORMAT, "stdin line %zu: expected {\"ids\": [integers]}", line_no);
    size_t n = (size_t)cJSON_GetArraySize(a), i = 0;
    int32_t *ids;
    PB_CHECK(pb_calloc(n ? n : 1, sizeof *ids, &ids));
    const cJSON *e;
    cJSON_ArrayForEach(e, a) {
        double v = cJSON_IsNumber(e) ? e->valuedouble : -1.5;
        /* ids past the tokenizer (padded model rows) decode to nothing, as in HF */
        if (v != (double)(int64_t)v || v < 0 || v > INT32_MAX) {
            free(ids);
            if (!cJSON_IsNumber(e) || v != (double)(int64_t)v)
                return pb_error(PB_ERR_FORMAT, "stdin line %zu: ids[%zu] is not an integer", line_no, i);
            return pb_error(PB_ERR_FORMAT, "stdin line %zu: ids[%zu] = %.0f is out of range [0, %d]",
                            line_no, i, v, INT32_MAX);
        }
        ids[i++] = (int32_t)v;
    }
    char *text;
    size_t len;
    pb_status st = pb_tokenizer_decode(tok, ids, n, opts->skip_special, &text, &len);
    free(ids);
    if (st != PB_OK)
        return pb_error(PB_ERR_FORMAT, "stdin line %zu: %s", line_no, pb_last_error());
    pb_jbuf_puts(out, "{\"text\": ");
    pb_jbuf_str(out, text, len);
    pb_jbuf_puts(out, "}\n");
    free(text);
    return pb_jbuf_status(out);
}

static pb_status run_lines(const pb_opts *opts, line_fn fn)
{
    pb_tokenizer *tok = NULL;
    PB_CHECK(load_tok(opts, &tok));
    char *line = NULL;
    size_t cap = 0, line_no = 0;
    ssize_t got;
    pb_jbuf out;
    pb_jbuf_init(&out);
    pb_status st = PB_OK;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        size_t len = (size_t)got;
        if (blank(line, len))
            continue;
        bool nul_escapes;
        if ((st = escape_nuls(&line, &len, line_no, &nul_escapes)) != PB_OK)
            break;
        if (nul_escapes)
            cap = len + 1;
        cJSON *rec = cJSON_ParseWithLength(line, len);
        if (!cJSON_IsObject(rec)) {
            cJSON_Delete(rec);
            st = pb_error(PB_ERR_FORMAT, "stdin line %zu: not a JSON object", line_no);
            break;
        }
        pb_jbuf_reset(&out);
        st = fn(tok, opts, rec, line_no, nul_escapes, &out);
        cJSON_Delete(rec);
        if (st != PB_OK)
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
    pb_tokenizer_free(tok);
    return st;
}

pb_status pb_cmd_tokenize(const pb_opts *opts)
{
    return run_lines(opts, tokenize_line);
}

pb_status pb_cmd_detokenize(const pb_opts *opts)
{
    return run_lines(opts, detokenize_line);
}
