/* Output records: a record's result or error as one JSON line in its own shape (see record.h). */
#include "config.h"
#include "gen/record.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/pyjson.h"

/* ---- output records --------------------------------------------------- */

/* the choices of a result: res's one completion, or its n */
static int result_choices(const pb_result *res, pb_choice *one, const pb_choice **out)
{
    if (res->n_choices > 0) {
        *out = res->choices;
        return res->n_choices;
    }
    *one = (pb_choice){.text = res->text, .len = res->len, .finish = res->finish,
                       .completion_tokens = res->completion_tokens, .n_lp = res->n_lp, .lp = res->lp,
                       .token_ids = res->token_ids};
    *out = one;
    return 1;
}

/* ---- log probabilities ---- */

/* The text of one id as HF's decode([id]) gives it, special tokens rendered
 * (owned by the caller; "" for an id the tokenizer has no token for); as_id
 * (return_tokens_as_token_ids): "token_id:ID", as vLLM. */
static char *token_text(pb_jbuf *b, const pb_tokenizer *tok, int32_t id, bool as_id, size_t *len)
{
    char *t = NULL;
    *len = 0;
    if (as_id) {
        if (!(t = malloc(24))) {
            b->err = true;
            return NULL;
        }
        *len = (size_t)snprintf(t, 24, "token_id:%d", (int)id);
        return t;
    }
    pb_status st = tok ? pb_tokenizer_decode(tok, &id, 1, false, &t, len) : PB_ERR_INPUT;
    if (st == PB_ERR_NOMEM)
        b->err = true;
    if (st != PB_OK) {
        free(t);
        *len = 0;
        return NULL;
    }
    return t;
}

static void put_logprob(pb_jbuf *b, float x)
{
    if (x == -INFINITY)
        pb_jbuf_puts(b, "-9999.0"); /* as vLLM: JSON has no infinity */
    else
        pb_jbuf_printf(b, "%.9g", (double)x);
}

/* "token": "...", "logprob": L (and chat's "bytes": [...]) */
static void put_token(pb_jbuf *b, const pb_tokenizer *tok, const pb_lp_pair *e, bool bytes, bool as_id)
{
    size_t n;
    char *t = token_text(b, tok, e->id, as_id, &n);
    pb_jbuf_puts(b, "\"token\": ");
    pb_jbuf_str(b, t ? t : "", n);
    pb_jbuf_puts(b, ", \"logprob\": ");
    put_logprob(b, e->logprob);
    if (bytes) { /* of the text as written (invalid UTF-8 as U+FFFD), as vLLM */
        pb_jbuf_puts(b, ", \"bytes\": [");
        const unsigned char *u = (const unsigned char *)t;
        for (size_t i = 0; i < n;) {
            size_t k = pb_utf8_seq_len(u + i, n - i);
            static const unsigned char fffd[3] = {0xEF, 0xBF, 0xBD};
            const unsigned char *q = k ? u + i : fffd;
            for (size_t j = 0; j < (k ? k : 3); j++)
                pb_jbuf_printf(b, "%s%u", i || j ? ", " : "", (unsigned)q[j]);
            i += k ? k : 1;
        }
        pb_jbuf_puts(b, "]");
    }
    free(t);
}

/* Code points of a token's text as written (an invalid byte: one U+FFFD). */
static int text_chars(pb_jbuf *b, const pb_tokenizer *tok, int32_t id, bool as_id)
{
    size_t n;
    char *t = token_text(b, tok, id, as_id, &n);
    int c = 0;
    for (size_t i = 0; i < n; c++) {
        size_t k = pb_utf8_seq_len((const unsigned char *)t + i, n - i);
        i += k ? k : 1;
    }
    free(t);
    return c;
}

/* Entry t of a choice's completions columns, of np echoed prompt tokens (pstep pairs each) and then the
 * completion's (step pairs each): NULL for the prompt's first, which has none. */
static const pb_lp_pair *col_entry(const pb_result *res, const pb_choice *ch, int t, int np, int pstep, int step)
{
    if (t >= np)
        return ch->lp + (size_t)(t - np) * (size_t)step;
    return t ? res->plp + (size_t)(t - 1) * (size_t)pstep : NULL;
}

static int32_t col_id(const pb_result *res, const pb_choice *ch, int t, int np, int pstep, int step)
{
    return t == 0 && np ? res->prompt_ids[0] : col_entry(res, ch, t, np, pstep, step)->id;
}

/* One choice's "logprobs" value in the record's shape (rec->gs.logprobs set). */
static void put_logprobs(pb_jbuf *b, const pb_record *r, const pb_choice *ch, const pb_result *res)
{
    const pb_tokenizer *tok = res->tok;
    const bool ids = r->gs.ids_as_tokens;
    const int top = r->gs.top_logprobs, step = 1 + top;
    if (!r->openai) {
        pb_jbuf_puts(b, "[");
        for (int t = 0; t < ch->n_lp; t++) {
            const pb_lp_pair *e = ch->lp + (size_t)t * (size_t)step;
            pb_jbuf_printf(b, "%s{\"id\": %d, ", t ? ", " : "", (int)e->id);
            put_token(b, tok, e, false, ids);
            pb_jbuf_puts(b, ", \"top_logprobs\": [");
            for (int k = 1; k <= top; k++) {
                pb_jbuf_printf(b, "%s{\"id\": %d, ", k > 1 ? ", " : "", (int)e[k].id);
                put_token(b, tok, e + k, false, ids);
                pb_jbuf_puts(b, "}");
            }
            pb_jbuf_puts(b, "]}");
        }
        pb_jbuf_puts(b, "]");
    } else if (r->chat) {
        pb_jbuf_puts(b, "{\"content\": [");
        for (int t = 0; t < ch->n_lp; t++) {
            const pb_lp_pair *e = ch->lp + (size_t)t * (size_t)step;
            pb_jbuf_puts(b, t ? ", {" : "{");
            put_token(b, tok, e, true, ids);
            pb_jbuf_puts(b, ", \"top_logprobs\": [");
            for (int k = 1; k <= top; k++) {
                pb_jbuf_puts(b, k > 1 ? ", {" : "{");
                put_token(b, tok, e + k, true, ids);
                pb_jbuf_puts(b, "}");
            }
            pb_jbuf_puts(b, "]}");
        }
        pb_jbuf_puts(b, "]}");
    } else { /* the completions API's columns */
        /* with echo, the prompt's tokens first, as vLLM: the first without a log probability (nothing comes
         * before it), the others from prompt_logprobs (their most likely ids at most top as well) */
        const int np = r->gs.echo && r->gs.prompt_logprobs && res->prompt_ids ? 1 + res->n_plp : 0;
        const int nt = np + ch->n_lp, pstep = 1 + r->gs.prompt_top;
        const int ptop = r->gs.prompt_top < top ? r->gs.prompt_top : top;
        pb_jbuf_puts(b, "{\"tokens\": [");
        for (int t = 0; t < nt; t++) {
            size_t n;
            char *x = token_text(b, tok, col_id(res, ch, t, np, pstep, step), ids, &n);
            if (t)
                pb_jbuf_puts(b, ", ");
            pb_jbuf_str(b, x ? x : "", n);
            free(x);
        }
        pb_jbuf_puts(b, "], \"token_logprobs\": [");
        for (int t = 0; t < nt; t++) {
            if (t)
                pb_jbuf_puts(b, ", ");
            if (t == 0 && np)
                pb_jbuf_puts(b, "null");
            else
                put_logprob(b, col_entry(res, ch, t, np, pstep, step)->logprob);
        }
        pb_jbuf_puts(b, "], \"top_logprobs\": ");
        if (top == 0) {
            pb_jbuf_puts(b, "null");
        } else {
            pb_jbuf_puts(b, "[");
            for (int t = 0; t < nt; t++) {
                const pb_lp_pair *e = col_entry(res, ch, t, np, pstep, step);
                if (t == 0 && np) {
                    pb_jbuf_puts(b, "null");
                    continue;
                }
                pb_jbuf_puts(b, t ? ", {" : "{");
                char *keys[PB_MAX_LOGPROBS];
                size_t lens[PB_MAX_LOGPROBS];
                int nk = 0;
                for (int k = 1; k <= (t < np ? ptop : top); k++) {
                    size_t n;
                    char *x = token_text(b, tok, e[k].id, ids, &n);
                    bool dup = false; /* two ids with one text: the likelier's (a JSON object's keys differ) */
                    for (int j = 0; j < nk && !dup; j++)
                        dup = lens[j] == n && (n == 0 || memcmp(keys[j], x, n) == 0);
                    if (dup) {
                        free(x);
                        continue;
                    }
                    if (nk)
                        pb_jbuf_puts(b, ", ");
                    pb_jbuf_str(b, x ? x : "", n);
                    pb_jbuf_puts(b, ": ");
                    put_logprob(b, e[k].logprob);
                    keys[nk] = x;
                    lens[nk++] = n;
                }
                for (int j = 0; j < nk; j++)
                    free(keys[j]);
                pb_jbuf_puts(b, "}");
            }
            pb_jbuf_puts(b, "]");
        }
        pb_jbuf_puts(b, ", \"text_offset\": [");
        int off = 0; /* in code points, as vLLM: each token's text after the ones before */
        for (int t = 0; t < nt; t++) {
            pb_jbuf_printf(b, "%s%d", t ? ", " : "", off);
            off += text_chars(b, tok, col_id(res, ch, t, np, pstep, step), ids);
        }
        pb_jbuf_puts(b, "]}");
    }
}

/* The record's prompt_logprobs: one entry a prompt token, the first null (nothing before it). Native: as
 * logprobs' entries with "rank"; OpenAI shapes: vLLM's {"id": {"logprob", "rank", "decoded_token"}, ...}, the
 * token's first, then the most likely others. */
static void put_prompt_logprobs(pb_jbuf *b, const pb_record *r, const pb_result *res)
{
    const int top = r->gs.prompt_top, step = 1 + top;
    pb_jbuf_puts(b, "[null");
    for (int t = 0; t < res->n_plp; t++) {
        const pb_lp_pair *e = res->plp + (size_t)t * (size_t)step;
        if (!r->openai) {
            pb_jbuf_printf(b, ", {\"id\": %d, ", (int)e->id);
            put_token(b, res->tok, e, false, false);
            pb_jbuf_printf(b, ", \"rank\": %d, \"top_logprobs\": [", (int)res->prank[t]);
            for (int k = 1; k <= top; k++) {
                pb_jbuf_printf(b, "%s{\"id\": %d, ", k > 1 ? ", " : "", (int)e[k].id);
                put_token(b, res->tok, e + k, false, false);
                pb_jbuf_puts(b, "}");
            }
            pb_jbuf_puts(b, "]}");
            continue;
        }
        pb_jbuf_puts(b, ", {");
        for (int k = 0; k <= top; k++) {
            if (k > 0 && e[k].id == e->id)
                continue; /* the token itself, listed first */
            size_t n;
            char *x = token_text(b, res->tok, e[k].id, false, &n);
            pb_jbuf_printf(b, "%s\"%d\": {\"logprob\": ", k ? ", " : "", (int)e[k].id);
            put_logprob(b, e[k].logprob);
            pb_jbuf_printf(b, ", \"rank\": %d, \"decoded_token\": ", k ? k : (int)res->prank[t]);
            pb_jbuf_str(b, x ? x : "", n);
            pb_jbuf_puts(b, "}");
            free(x);
        }
        pb_jbuf_puts(b, "}");
    }
    pb_jbuf_puts(b, "]");
}

/* The text echo puts before each completion (vLLM's): a chat's last assistant message, the prompt as given,
 * or a prompt of ids decoded with its special tokens (as HF's decode). NULL (*len 0) without echo; *own is
 * the caller's to free. */
static const char *echo_prefix(pb_jbuf *b, const pb_record *r, const pb_result *res, size_t *len, char **own)
{
    *own = NULL;
    *len = 0;
    if (!r->gs.echo)
        return NULL;
    if (r->chat) {
        *len = r->echo_len;
        return r->echo_text;
    }
    if (r->gs.return_ids) /* vLLM: the prompt comes back as its ids instead */
        return NULL;
    if (!r->prompt_ids) {
        *len = r->prompt_len;
        return r->prompt;
    }
    pb_status st = res->tok ? pb_tokenizer_decode(res->tok, r->prompt_ids, (size_t)r->n_prompt_ids, false, own, len)
                            : PB_ERR_INPUT;
    if (st == PB_ERR_NOMEM)
        b->err = true;
    if (st != PB_OK) {
        free(*own);
        *own = NULL;
        *len = 0;
    }
    return *own;
}

/* A JSON string of pre[0..np) followed by s[0..n) */
static void put_text(pb_jbuf *b, const char *pre, size_t np, const char *s, size_t n)
{
    if (!np) {
        pb_jbuf_str(b, s, n);
        return;
    }
    char *t = malloc(np + n + 1);
    if (!t) {
        b->err = true;
        return;
    }
    memcpy(t, pre, np);
    memcpy(t + np, s, n);
    pb_jbuf_str(b, t, np + n);
    free(t);
}

/* , "name": [id, ...] (n ids; none for NULL) */
static void put_ids(pb_jbuf *b, const char *name, const int32_t *ids, int n)
{
    pb_jbuf_printf(b, ", \"%s\": [", name);
    for (int i = 0; ids && i < n; i++)
        pb_jbuf_printf(b, "%s%d", i ? ", " : "", (int)ids[i]);
    pb_jbuf_puts(b, "]");
}

/* One tool call: {"id", "type": "function", "function": {"name", "arguments"}} (the id the line's, the choice's
 * and the call's, where vLLM's is random) */
static void put_call(pb_jbuf *b, const pb_record *r, int index, int k, const char *name, size_t nl,
                     const char *args, size_t na)
{
    pb_jbuf_printf(b, "%s{\"id\": \"chatcmpl-tool-%llu-%d-%d\", \"type\": \"function\", \"function\": {\"name\": ",
                   k ? ", " : "", (unsigned long long)r->line, index, k);
    pb_jbuf_str(b, name, nl);
    pb_jbuf_puts(b, ", \"arguments\": ");
    pb_jbuf_str(b, args, na);
    pb_jbuf_puts(b, "}}");
}

/* , "tool_calls": [...]: a named tool_choice's one call, the completion its arguments; "required"'s calls, the
 * completion parsed as vLLM parses it (a list of {"name", "parameters"}, each parameters written back as
 * Python's json.dumps(..., ensure_ascii=False)), none where it is not such a list (a completion cut short) */
static void put_tool_calls(pb_jbuf *b, const pb_record *r, int index, const char *text, size_t len)
{
    pb_jbuf_puts(b, ", \"tool_calls\": [");
    if (r->gs.tool_name) {
        put_call(b, r, index, 0, r->gs.tool_name, strlen(r->gs.tool_name), text, len);
        pb_jbuf_puts(b, "]");
        return;
    }
    pb_jnode *v = NULL;
    pb_status st = pb_jnode_parse(text, len, &v);
    if (st == PB_ERR_NOMEM)
        b->err = true;
    bool ok = st == PB_OK && pb_jnode_kind(v) == 'a';
    for (int i = 0; ok && i < pb_jnode_count(v); i++) { /* pydantic's list[FunctionDefinition]: all or none */
        const pb_jnode *call = pb_jnode_item(v, i), *name = pb_jnode_get(call, "name");
        const pb_jnode *params = pb_jnode_get(call, "parameters");
        ok = pb_jnode_kind(call) == 'o' && name && pb_jnode_kind(name) == 's' &&
             (!params || pb_jnode_kind(params) == 'o' || pb_jnode_kind(params) == 'z');
    }
    pb_jbuf args;
    pb_jbuf_init(&args);
    for (int i = 0; ok && i < pb_jnode_count(v); i++) {
        const pb_jnode *call = pb_jnode_item(v, i), *params = pb_jnode_get(call, "parameters");
        size_t nl;
        const char *name = pb_jnode_str(pb_jnode_get(call, "name"), &nl);
        pb_jbuf_reset(&args);
        if (params)
            pb_jnode_dumps(params, &args);
        else
            pb_jbuf_puts(&args, "null");
        if (args.err)
            b->err = true;
        put_call(b, r, index, i, name, nl, args.data ? args.data : "", args.len);
    }
    pb_jbuf_free(&args);
    pb_jnode_free(v);
    pb_jbuf_puts(b, "]");
}

/* The OpenAI shape's line up to its choices' first */
static void put_openai_head(pb_jbuf *b, const pb_record *r, const char *model)
{
    unsigned long long line = (unsigned long long)r->line;
    pb_jbuf_printf(b, "{\"id\": \"batch_req_%llu\", \"custom_id\": %s, \"response\": "
                   "{\"status_code\": 200, \"request_id\": \"req_%llu\", \"body\": "
                   "{\"id\": \"%s-%llu\", \"object\": \"%s\", \"model\": ",
                   line, r->custom_id_json ? r->custom_id_json : "null", line,
                   r->chat ? "chatcmpl" : "cmpl", line, r->chat ? "chat.completion" : "text_completion");
    const char *m = model ? model : "";
    pb_jbuf_str(b, m, strlen(m));
    pb_jbuf_puts(b, ", \"choices\": [");
}

/* ---- embeddings ---- */

/* Byte k of the floats e as little-endian f32. */
static unsigned f32_byte(const float *e, size_t k)
{
    uint32_t u;
    memcpy(&u, &e[k / 4], 4);
    return u >> (8 * (k % 4)) & 0xffu;
}

static void put_embedding(pb_jbuf *b, const pb_record *r, const pb_result *res)
{
    if (r->gs.emb_base64) { /* base64 of the little-endian f32 bytes (OpenAI's, vLLM's) */
        static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        const size_t n = (size_t)res->dim * 4;
        char q[4];
        pb_jbuf_puts(b, "\"");
        for (size_t i = 0; i < n; i += 3) {
            const uint32_t v = f32_byte(res->embedding, i) << 16 |
                               (i + 1 < n ? f32_byte(res->embedding, i + 1) << 8 : 0) |
                               (i + 2 < n ? f32_byte(res->embedding, i + 2) : 0);
            q[0] = A[v >> 18];
            q[1] = A[v >> 12 & 63];
            q[2] = i + 1 < n ? A[v >> 6 & 63] : '=';
            q[3] = i + 2 < n ? A[v & 63] : '=';
            pb_jbuf_put(b, q, 4);
        }
        pb_jbuf_puts(b, "\"");
        return;
    }
    char f[PB_PY_FLOAT_MAX];
    pb_jbuf_puts(b, "[");
    for (int i = 0; i < res->dim; i++)
        pb_jbuf_printf(b, "%s%s", i ? ", " : "", pb_py_float_repr((double)res->embedding[i], f));
    pb_jbuf_puts(b, "]");
}

/* One input's entry in a list of embeddings (after ", " but the line's first). */
static void put_embed_entry(pb_jbuf *b, const pb_record *r, const pb_result *res)
{
    pb_jbuf_printf(b, "%s{%s\"index\": %d, \"embedding\": ", r->prompt_index ? ", " : "",
                   r->openai ? "\"object\": \"embedding\", " : "", r->prompt_index);
    put_embedding(b, r, res);
    pb_jbuf_puts(b, "}");
}

static void put_embed_head(pb_jbuf *b, const pb_record *r)
{
    if (!r->openai) {
        pb_jbuf_printf(b, "{\"id\": %s, \"data\": [", r->id_json);
        return;
    }
    unsigned long long line = (unsigned long long)r->line;
    pb_jbuf_printf(b, "{\"id\": \"batch_req_%llu\", \"custom_id\": %s, \"response\": {\"status_code\": 200, "
                   "\"request_id\": \"req_%llu\", \"body\": {\"id\": \"embd-%llu\", \"object\": \"list\", \"data\": [",
                   line, r->custom_id_json ? r->custom_id_json : "null", line, line);
}

static void put_embed_tail(pb_jbuf *b, const pb_record *r, const char *model, int prompt_tokens)
{
    if (!r->openai) {
        pb_jbuf_printf(b, "], \"prompt_tokens\": %d}", prompt_tokens);
        return;
    }
    const char *m = model ? model : "";
    pb_jbuf_puts(b, "], \"model\": ");
    pb_jbuf_str(b, m, strlen(m));
    pb_jbuf_printf(b, ", \"usage\": {\"prompt_tokens\": %d, \"total_tokens\": %d}}}, \"error\": null}",
                   prompt_tokens, prompt_tokens);
}

/* The OpenAI shape's choices of res, each after ", " but the line's first; index: prompt_index * n + i */
void pb_record_choices_json(pb_jbuf *b, const pb_record *r, const pb_result *res)
{
    if (r->gs.embed) {
        put_embed_entry(b, r, res);
        return;
    }
    pb_choice one;
    const pb_choice *ch;
    const int n = result_choices(res, &one, &ch);
    const int first = r->prompt_index * n;
    char *own;
    size_t np;
    const char *pre = echo_prefix(b, r, res, &np, &own);
    for (int i = 0; i < n; i++) {
        const char *sep = first + i ? ", " : "";
        if (r->chat) {
            pb_jbuf_printf(b, "%s{\"index\": %d, \"message\": {\"role\": ", sep, first + i);
            const char *role = r->reply_role ? r->reply_role : "assistant"; /* vLLM's */
            pb_jbuf_str(b, role, strlen(role));
            pb_jbuf_puts(b, ", \"content\": ");
            if (r->gs.tool_name || r->gs.tool_required) { /* vLLM: the calls, the content empty */
                put_text(b, pre, np, "", 0);
                put_tool_calls(b, r, first + i, ch[i].text, ch[i].len);
            } else {
                put_text(b, pre, np, ch[i].text, ch[i].len);
            }
            pb_jbuf_puts(b, "}");
        } else {
            pb_jbuf_printf(b, "%s{\"index\": %d, \"text\": ", sep, first + i);
            put_text(b, pre, np, ch[i].text, ch[i].len);
        }
        pb_jbuf_puts(b, ", \"logprobs\": ");
        if (r->gs.logprobs)
            put_logprobs(b, r, &ch[i], res);
        else
            pb_jbuf_puts(b, "null");
        /* vLLM: "tool_calls" for a required call that ended, "stop" for a named one */
        const bool called = r->chat && r->gs.tool_required && !strcmp(ch[i].finish, "stop");
        pb_jbuf_printf(b, ", \"finish_reason\": \"%s\"", called ? "tool_calls" : ch[i].finish);
        if (r->gs.return_ids) { /* vLLM: the prompt's in each choice of a completion, in a chat's body */
            if (!r->chat)
                put_ids(b, "prompt_token_ids", res->prompt_ids, res->prompt_tokens);
            put_ids(b, "token_ids", ch[i].token_ids, ch[i].completion_tokens);
        }
        if (r->gs.prompt_logprobs && !r->chat) { /* vLLM: the completions API's in each choice */
            pb_jbuf_puts(b, ", \"prompt_logprobs\": ");
            put_prompt_logprobs(b, r, res);
        }
        pb_jbuf_puts(b, "}");
    }
    free(own);
}

static void put_usage(pb_jbuf *b, int prompt_tokens, int completion_tokens)
{
    pb_jbuf_printf(b, "], \"usage\": {\"prompt_tokens\": %d, \"completion_tokens\": %d, "
                   "\"total_tokens\": %d}", prompt_tokens, completion_tokens, prompt_tokens + completion_tokens);
}

void pb_record_joined_json(pb_jbuf *b, const pb_record *r, const char *model, const pb_jbuf *parts, int n_parts,
                           int prompt_tokens, int completion_tokens)
{
    if (r->gs.embed) {
        put_embed_head(b, r);
        for (int i = 0; i < n_parts; i++)
            pb_jbuf_put(b, parts[i].data, parts[i].len);
        put_embed_tail(b, r, model, prompt_tokens);
        return;
    }
    put_openai_head(b, r, model);
    for (int i = 0; i < n_parts; i++)
        pb_jbuf_put(b, parts[i].data, parts[i].len);
    put_usage(b, prompt_tokens, completion_tokens);
    pb_jbuf_puts(b, "}}, \"error\": null}");
}

void pb_record_result_json(pb_jbuf *b, const pb_record *r, const char *model,
                           const pb_result *res)
{
    if (r->gs.embed && !r->openai) {
        pb_jbuf_printf(b, "{\"id\": %s, \"embedding\": ", r->id_json);
        put_embedding(b, r, res);
        pb_jbuf_printf(b, ", \"prompt_tokens\": %d}", res->prompt_tokens);
        return;
    }
    if (r->gs.embed) {
        put_embed_head(b, r);
        put_embed_entry(b, r, res);
        put_embed_tail(b, r, model, res->prompt_tokens);
        return;
    }
    pb_choice one;
    const pb_choice *ch;
    const int n = result_choices(res, &one, &ch);
    char *own = NULL;
    size_t np = 0;
    const char *pre = r->openai ? NULL : echo_prefix(b, r, res, &np, &own);
    if (r->openai) {
        put_openai_head(b, r, model);
        pb_record_choices_json(b, r, res);
        put_usage(b, res->prompt_tokens, res->completion_tokens);
        if (r->gs.return_ids && r->chat)
            put_ids(b, "prompt_token_ids", res->prompt_ids, res->prompt_tokens);
        if (r->gs.prompt_logprobs && r->chat) { /* vLLM: the chat API's in the body */
            pb_jbuf_puts(b, ", \"prompt_logprobs\": ");
            put_prompt_logprobs(b, r, res);
        }
        pb_jbuf_puts(b, "}}, \"error\": null}");
    } else if (res->n_choices == 0) {
        pb_jbuf_printf(b, "{\"id\": %s, \"text\": ", r->id_json);
        put_text(b, pre, np, res->text, res->len);
        if (r->gs.tool_name || r->gs.tool_required)
            put_tool_calls(b, r, 0, res->text, res->len);
        pb_jbuf_printf(b, ", \"finish_reason\": \"%s\", \"prompt_tokens\": %d, "
                       "\"completion_tokens\": %d", res->finish, res->prompt_tokens,
                       res->completion_tokens);
        if (r->gs.return_ids) {
            put_ids(b, "prompt_token_ids", res->prompt_ids, res->prompt_tokens);
            put_ids(b, "token_ids", res->token_ids, res->completion_tokens);
        }
        if (r->gs.logprobs) {
            pb_jbuf_puts(b, ", \"logprobs\": ");
            put_logprobs(b, r, ch, res);
        }
        if (r->gs.prompt_logprobs) {
            pb_jbuf_puts(b, ", \"prompt_logprobs\": ");
            put_prompt_logprobs(b, r, res);
        }
        pb_jbuf_puts(b, "}");
    } else {
        pb_jbuf_printf(b, "{\"id\": %s, \"choices\": [", r->id_json);
        for (int i = 0; i < n; i++) {
            pb_jbuf_printf(b, "%s{\"index\": %d, \"text\": ", i ? ", " : "", i);
            put_text(b, pre, np, ch[i].text, ch[i].len);
            if (r->gs.tool_name || r->gs.tool_required)
                put_tool_calls(b, r, i, ch[i].text, ch[i].len);
            pb_jbuf_printf(b, ", \"finish_reason\": \"%s\", \"completion_tokens\": %d", ch[i].finish,
                           ch[i].completion_tokens);
            if (r->gs.return_ids)
                put_ids(b, "token_ids", ch[i].token_ids, ch[i].completion_tokens);
            if (r->gs.logprobs) {
                pb_jbuf_puts(b, ", \"logprobs\": ");
                put_logprobs(b, r, &ch[i], res);
            }
            pb_jbuf_puts(b, "}");
        }
        pb_jbuf_printf(b, "], \"prompt_tokens\": %d, \"completion_tokens\": %d", res->prompt_tokens,
                       res->completion_tokens);
        if (r->gs.return_ids)
            put_ids(b, "prompt_token_ids", res->prompt_ids, res->prompt_tokens);
        if (r->gs.prompt_logprobs) {
            pb_jbuf_puts(b, ", \"prompt_logprobs\": ");
            put_prompt_logprobs(b, r, res);
        }
        pb_jbuf_puts(b, "}");
    }
    free(own);
}

void pb_record_error_json(pb_jbuf *b, const pb_record *r)
{
    unsigned long long line = (unsigned long long)r->line;
    if (r->openai)
        pb_jbuf_printf(b, "{\"id\": \"batch_req_%llu\", \"custom_id\": %s, \"response\": null, "
                       "\"error\": {\"code\": \"invalid_request\", \"line\": %llu, \"message\": ",
                       line, r->custom_id_json ? r->custom_id_json : "null", line);
    else
        pb_jbuf_printf(b, "{\"id\": %s, \"error\": {\"line\": %llu, \"message\": ", r->id_json, line);
    const char *e = r->error ? r->error : "";
    pb_jbuf_str(b, e, strlen(e));
    pb_jbuf_puts(b, "}}");
}
