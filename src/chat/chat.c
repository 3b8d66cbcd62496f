/* Loading chat templates and rendering chat records (see chat.h). */
#include "config.h"

#include "chat/chat.h"

#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "common/util.h"

#define MAX_FILE ((size_t)64 << 20)

struct pb_chat {
    pb_jinja *tmpl;
    cJSON *tokens;   /* {"bos_token": "...", ...}: the special tokens HF passes */
    bool reads_content; /* the template's text names "content" (continue_final_message needs it, as HF) */
};

/* The first place needle[0..m) occurs in hay[0..n) (m > 0), or NULL. */
static const char *find_bytes(const char *hay, size_t n, const char *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (hay[i] == needle[0] && !memcmp(hay + i, needle, m))
            return hay + i;
    return NULL;
}

void pb_chat_free(pb_chat *c)
{
    if (!c)
        return;
    pb_jinja_free(c->tmpl);
    cJSON_Delete(c->tokens);
    free(c);
}

static pb_status read_json(const char *path, cJSON **out)
{
    char *buf;
    size_t n;
    PB_CHECK(pb_read_file(path, MAX_FILE, &buf, &n));
    *out = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!*out)
        return pb_error(PB_ERR_FORMAT, "%s: not valid JSON", path);
    return PB_OK;
}

/* chat_template as HF stores it: a string, or [{"name", "template"}] */
static pb_status template_of(const cJSON *v, const char *path, const char **out)
{
    *out = NULL;
    if (cJSON_IsString(v)) {
        *out = v->valuestring;
        return PB_OK;
    }
    if (cJSON_IsArray(v)) {
        const cJSON *e;
        cJSON_ArrayForEach(e, v) {
            const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
            if (cJSON_IsString(nm) && !strcmp(nm->valuestring, "default") && cJSON_IsString(t)) {
                *out = t->valuestring;
                return PB_OK;
            }
        }
        return pb_error(PB_ERR_CONFIG, "%s: chat_template is a list without a template named \"default\"", path);
    }
    if (v && !cJSON_IsNull(v))
        return pb_error(PB_ERR_CONFIG, "%s: chat_template is neither a string nor a list of named templates", path);
    return PB_OK;
}

/* Special tokens of tokenizer_config.json: strings or {"content": ...} objects. */
static pb_status collect_tokens(const cJSON *cfg, const char *path, cJSON *tokens)
{
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                        "sep_token", "cls_token", "mask_token", NULL};
    for (int i = 0; names[i]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, names[i]);
        if (cJSON_IsObject(v))
            v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (!v || cJSON_IsNull(v))
            continue;
        if (!cJSON_IsString(v))
            return pb_error(PB_ERR_CONFIG, "%s: %s is not a string", path, names[i]);
        if (!cJSON_AddStringToObject(tokens, names[i], v->valuestring))
            return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    return PB_OK;
}

static pb_status load(const char *tmpl_path, const char *cfg_path, bool side_files, pb_chat **out)
{
    *out = NULL;
    pb_status st = PB_OK;
    cJSON *cfg = NULL, *tj = NULL;
    char *text = NULL, *side = NULL;
    const char *src = NULL, *src_name = NULL;
    size_t src_len = 0;
    pb_chat *c = calloc(1, sizeof *c);
    if (!c || !(c->tokens = cJSON_CreateObject())) {
        st = pb_error(PB_ERR_NOMEM, "out of memory");
        goto fail;
    }
    if (cfg_path) {
        PB_CHECK_GOTO(read_json(cfg_path, &cfg), st, fail);
        if (!cJSON_IsObject(cfg)) {
            st = pb_error(PB_ERR_CONFIG, "%s: not a JSON object", cfg_path);
            goto fail;
        }
        PB_CHECK_GOTO(collect_tokens(cfg, cfg_path, c->tokens), st, fail);
        PB_CHECK_GOTO(template_of(cJSON_GetObjectItemCaseSensitive(cfg, "chat_template"), cfg_path, &src), st, fail);
        if (src) {
            src_name = cfg_path;
            src_len = strlen(src);
        }
    }
    if (!tmpl_path && !src && side_files && cfg_path) {
        /* chat_template.jinja / chat_template.json beside tokenizer_config.json */
        const char *slash = strrchr(cfg_path, '/');
        size_t dl = slash ? (size_t)(slash - cfg_path) : 1;
        char dir[4096];
        if (dl >= sizeof dir) {
            st = pb_error(PB_ERR_CONFIG, "%s: path too long", cfg_path);
            goto fail;
        }
        memcpy(dir, slash ? cfg_path : ".", dl);
        dir[dl] = '\0';
        side = pb_path_join(dir, "chat_template.jinja");
        if (side && !pb_file_exists(side)) {
            free(side);
            side = pb_path_join(dir, "chat_template.json");
            if (side && !pb_file_exists(side)) {
                free(side);
                side = NULL;
            }
        }
        tmpl_path = side;
    }
    if (tmpl_path) {
        size_t n = strlen(tmpl_path);
        if (n > 5 && !strcmp(tmpl_path + n - 5, ".json")) {
            PB_CHECK_GOTO(read_json(tmpl_path, &tj), st, fail);
            PB_CHECK_GOTO(template_of(cJSON_GetObjectItemCaseSensitive(tj, "chat_template"), tmpl_path, &src), st, fail);
            if (!src) {
                st = pb_error(PB_ERR_CONFIG, "%s: no \"chat_template\"", tmpl_path);
                goto fail;
            }
            src_len = strlen(src);
        } else {
            PB_CHECK_GOTO(pb_read_file(tmpl_path, MAX_FILE, &text, &src_len), st, fail);
            src = text;
        }
        src_name = tmpl_path;
    }
    if (!src) {
        st = pb_error(PB_ERR_CONFIG, "%s: the model has no chat template (no chat_template in "
                      "tokenizer_config.json, no chat_template.jinja or .json beside it)",
                      cfg_path ? cfg_path : "chat");
        goto fail;
    }
    (void)src_name;
    PB_CHECK_GOTO(pb_jinja_parse(src, src_len, "chat template", &c->tmpl), st, fail);
    c->reads_content = find_bytes(src, src_len, "content", 7) != NULL;
    *out = c;
    c = NULL;
fail:
    if (st != PB_OK && src_name)
        st = pb_error_ctx(st, "%s", src_name);
    cJSON_Delete(cfg);
    cJSON_Delete(tj);
    free(text);
    free(side);
    pb_chat_free(c);
    return st;
}

pb_status pb_chat_load_files(const char *template_path, const char *tokenizer_config, pb_chat **out)
{
    return load(template_path, tokenizer_config, false, out);
}

pb_status pb_chat_load_dir(const char *dir, pb_chat **out)
{
    char *cfg = pb_path_join(dir, "tokenizer_config.json");
    if (!cfg)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    pb_status st;
    if (pb_file_exists(cfg))
        st = load(NULL, cfg, true, out);
    else {
        char *j = pb_path_join(dir, "chat_template.jinja");
        if (j && !pb_file_exists(j)) {
            free(j);
            j = pb_path_join(dir, "chat_template.json");
        }
        if (j && pb_file_exists(j))
            st = load(j, NULL, false, out);
        else
            st = pb_error(PB_ERR_CONFIG, "%s: no tokenizer_config.json and no chat_template.jinja/.json", dir);
        free(j);
    }
    free(cfg);
    return st;
}

static const cJSON *chat_body(const cJSON *rec)
{
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(rec, "url");
    const cJSON *body = cJSON_GetObjectItemCaseSensitive(rec, "body");
    if (cJSON_IsString(url) && cJSON_IsObject(body))
        return body;
    return rec;
}

bool pb_chat_is_chat_record(const cJSON *rec)
{
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(rec, "url");
    if (cJSON_IsString(url) && !strcmp(url->valuestring, "/v1/chat/completions"))
        return true;
    return cJSON_GetObjectItemCaseSensitive(rec, "messages") != NULL;
}

pb_status pb_chat_flags(const cJSON *body, bool *add_generation_prompt, bool *continue_final)
{
    static const char *const names[2] = {"add_generation_prompt", "continue_final_message"};
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(body, "chat_template_kwargs");
    int val[2] = {-1, -1};
    for (int k = 0; k < 2; k++) {
        const cJSON *v = cJSON_IsObject(kw) ? cJSON_GetObjectItemCaseSensitive(kw, names[k]) : NULL;
        const char *in = "chat_template_kwargs.";
        if (!v || cJSON_IsNull(v)) {
            v = cJSON_GetObjectItemCaseSensitive(body, names[k]);
            in = "";
        }
        if (!v || cJSON_IsNull(v))
            continue;
        if (!cJSON_IsBool(v))
            return pb_error(PB_ERR_INPUT, "\"%s%s\" must be true or false", in, names[k]);
        val[k] = cJSON_IsTrue(v);
    }
    if (val[0] == 1 && val[1] == 1)
        return pb_error(PB_ERR_INPUT, "\"add_generation_prompt\" and \"continue_final_message\" cannot both be "
                        "true (one starts a new assistant message, the other goes on with the final one)");
    *continue_final = val[1] == 1;
    *add_generation_prompt = val[0] == -1 ? !*continue_final : val[0] == 1;
    return PB_OK;
}

#define CONTINUE_TAG "CONTINUE_FINAL_MESSAGE_TAG "

/* continue_final_message, as HF's apply_chat_template: the final message's content (or the last text part of
 * it) marked with a tag (*final: its text before), to cut the rendered chat where the tag begins. */
static pb_status mark_final(const pb_chat *c, cJSON *messages, char **final)
{
    *final = NULL;
    cJSON *last = NULL, *it;
    cJSON_ArrayForEach(it, messages)
        last = it;
    if (!last)
        return pb_error(PB_ERR_INPUT, "continue_final_message: the conversation is empty");
    cJSON *content = cJSON_GetObjectItemCaseSensitive(last, "content"), *holder = last;
    const char *key = "content";
    if (!content || cJSON_IsNull(content))
        return pb_error(PB_ERR_INPUT, "continue_final_message: the final message has no \"content\" to continue");
    if (!c->reads_content)
        return pb_error(PB_ERR_INPUT, "continue_final_message: the chat template does not read \"content\"");
    if (cJSON_IsArray(content)) {
        cJSON *part = NULL;
        cJSON_ArrayForEach(it, content)
            if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(it, "text")))
                part = it; /* the last */
        if (!part)
            return pb_error(PB_ERR_INPUT, "continue_final_message: the final message has no text to continue");
        holder = part;
        key = "text";
        content = cJSON_GetObjectItemCaseSensitive(part, "text");
    }
    if (!cJSON_IsString(content))
        return pb_error(PB_ERR_INPUT, "continue_final_message: the final message's content is not text");
    const size_t n = strlen(content->valuestring);
    char *marked = malloc(n + sizeof CONTINUE_TAG);
    *final = pb_strdup(content->valuestring);
    if (!marked || !*final) {
        free(marked);
        free(*final);
        *final = NULL;
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    memcpy(marked, content->valuestring, n);
    memcpy(marked + n, CONTINUE_TAG, sizeof CONTINUE_TAG);
    cJSON *v = cJSON_CreateString(marked);
    free(marked);
    if (!v || !cJSON_ReplaceItemInObjectCaseSensitive(holder, key, v)) {
        cJSON_Delete(v);
        free(*final);
        *final = NULL;
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    return PB_OK;
}

/* The rendered chat cut where the tag begins (and, where the template trimmed the space after it, its trailing
 * whitespace too), as HF; the final message (stripped) must be there. */
static pb_status cut_at_tag(const char *final, char *out, size_t *len)
{
    const size_t fl = strlen(final), lead = pb_py_lstrip_len(final, fl);
    const size_t core = lead < fl ? pb_py_rstrip_len(final + lead, fl - lead) : 0;
    const size_t tl = sizeof CONTINUE_TAG - 2; /* the tag without its space */
    const char *at = NULL;
    for (const char *p = out; (p = find_bytes(p, *len - (size_t)(p - out), CONTINUE_TAG, tl)); p++)
        at = p;
    if (!at || (core && !find_bytes(out, *len, final + lead, core)))
        return pb_error(PB_ERR_INPUT, "continue_final_message: the final message does not appear in the rendered "
                        "chat (the template changes it)");
    const size_t tag_at = (size_t)(at - out);
    *len = *len - tag_at > tl && out[tag_at + tl] == ' ' ? tag_at : pb_py_rstrip_len(out, tag_at);
    out[*len] = '\0';
    return PB_OK;
}

pb_status pb_chat_render(const pb_chat *c, const cJSON *rec, char **prompt, size_t *len)
{
    *prompt = NULL;
    *len = 0;
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(rec, "url");
    if (url && (!cJSON_IsString(url) || strcmp(url->valuestring, "/v1/chat/completions")))
        return pb_error(PB_ERR_INPUT, "\"url\" is not \"/v1/chat/completions\"");
    const cJSON *body = chat_body(rec);
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(body, "messages");
    if (!cJSON_IsArray(msgs))
        return pb_error(PB_ERR_INPUT, "\"messages\" is missing or not a list");
    int i = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, msgs) {
        if (!cJSON_IsObject(m))
            return pb_error(PB_ERR_INPUT, "messages[%d] is not an object", i);
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
        if (!cJSON_IsString(role))
            return pb_error(PB_ERR_INPUT, "messages[%d]: \"role\" is missing or not a string", i);
        i++;
    }
    const cJSON *kw = cJSON_GetObjectItemCaseSensitive(body, "chat_template_kwargs");
    if (kw && !cJSON_IsObject(kw))
        return pb_error(PB_ERR_INPUT, "\"chat_template_kwargs\" is not an object");
    bool add_gen, cont;
    PB_CHECK(pb_chat_flags(body, &add_gen, &cont));
    /* tools (OpenAI's function definitions) and documents: to the template as
     * apply_chat_template(tools=..., documents=...) passes JSON schemas */
    static const char *const lists[] = {"tools", "documents"};
    const cJSON *given[2];
    for (int k = 0; k < 2; k++) {
        given[k] = cJSON_GetObjectItemCaseSensitive(body, lists[k]);
        if (given[k] && cJSON_IsNull(given[k]))
            given[k] = NULL;
        if (given[k] && !cJSON_IsArray(given[k]))
            return pb_error(PB_ERR_INPUT, "\"%s\" is not a list", lists[k]);
        int j = 0;
        const cJSON *t;
        cJSON_ArrayForEach(t, given[k]) {
            if (!cJSON_IsObject(t))
                return pb_error(PB_ERR_INPUT, "%s[%d] is not an object", lists[k], j);
            j++;
        }
    }
    /* variables: special tokens, then messages / add_generation_prompt, then
     * the record's kwargs (which win, as in apply_chat_template(**kwargs)) */
    cJSON *vars = cJSON_Duplicate(c->tokens, true);
    cJSON *mcopy = vars ? cJSON_CreateArray() : NULL;
    if (!mcopy) {
        cJSON_Delete(vars);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    cJSON_AddItemToObject(vars, "messages", mcopy);
    cJSON_ArrayForEach(m, msgs) {
        /* HF aliases reasoning fields: reasoning_content from thinking/reasoning, thinking too */
        cJSON *d = cJSON_Duplicate(m, true);
        if (!d)
            break;
        const cJSON *r = NULL;
        static const char *const rf[] = {"reasoning_content", "thinking", "reasoning", NULL};
        for (int k = 0; rf[k] && !r; k++) {
            const cJSON *x = cJSON_GetObjectItemCaseSensitive(m, rf[k]);
            if (x && !cJSON_IsNull(x))
                r = x;
        }
        if (r) {
            cJSON *t = cJSON_Duplicate(r, true), *t2 = cJSON_Duplicate(r, true);
            if (!cJSON_GetObjectItemCaseSensitive(d, "thinking"))
                cJSON_AddItemToObject(d, "thinking", t);
            else
                cJSON_Delete(t);
            cJSON_DeleteItemFromObjectCaseSensitive(d, "reasoning_content");
            cJSON_AddItemToObject(d, "reasoning_content", t2);
        }
        cJSON_AddItemToArray(mcopy, d);
    }
    /* as transformers passes them: None unless given */
    for (int k = 0; k < 2; k++) {
        cJSON *v = given[k] ? cJSON_Duplicate(given[k], true) : cJSON_CreateNull();
        if (!v) {
            cJSON_Delete(vars);
            return pb_error(PB_ERR_NOMEM, "out of memory");
        }
        cJSON_AddItemToObject(vars, lists[k], v);
    }
    /* vLLM's reasoning_effort reaches the template as apply_chat_template(reasoning_effort=...) would pass it */
    const cJSON *effort = cJSON_GetObjectItemCaseSensitive(body, "reasoning_effort");
    if (effort && !cJSON_IsNull(effort) && !cJSON_IsString(effort)) {
        cJSON_Delete(vars);
        return pb_error(PB_ERR_INPUT, "\"reasoning_effort\" is not a string");
    }
    if (cJSON_IsString(effort) && !cJSON_AddStringToObject(vars, "reasoning_effort", effort->valuestring)) {
        cJSON_Delete(vars);
        return pb_error(PB_ERR_NOMEM, "out of memory");
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, kw) {
        if (!strcmp(e->string, "continue_final_message")) /* apply_chat_template's, not the template's */
            continue;
        cJSON_DeleteItemFromObjectCaseSensitive(vars, e->string);
        cJSON_AddItemToObject(vars, e->string, cJSON_Duplicate(e, true));
    }
    cJSON_DeleteItemFromObjectCaseSensitive(vars, "add_generation_prompt");
    cJSON_AddBoolToObject(vars, "add_generation_prompt", add_gen);
    char *final = NULL;
    pb_status st = cont ? mark_final(c, mcopy, &final) : PB_OK;
    if (st == PB_OK)
        st = pb_jinja_render(c->tmpl, vars, NULL, prompt, len);
    if (st == PB_OK && cont && (st = cut_at_tag(final, *prompt, len)) != PB_OK) {
        free(*prompt);
        *prompt = NULL;
        *len = 0;
    }
    free(final);
    cJSON_Delete(vars);
    return st;
}
