/* Loading chat templates and rendering chat records (see chat.h). */
#include "config.h"

#include "chat/chat.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja.h"
#include "common/util.h"

#define MAX_FILE ((size_t)64 << 20)
#define MAX_TEMPLATES 32

/* One of a model's chat templates: HF's "default", or a named one ("tool_use", "rag", ...). */
typedef struct named_tmpl {
    char *name;
    pb_jinja *tmpl;     /* NULL where it did not parse: err says why (the model may never use it) */
    char *err;
    bool reads_content; /* its text names "content" (continue_final_message needs it, as HF) */
} named_tmpl;

struct pb_chat {
    cJSON *tokens;      /* {"bos_token": "...", ...}: the special tokens HF passes */
    bool named;         /* HF holds a dict of templates (names resolve a record's chat_template) */
    int n;
    named_tmpl t[MAX_TEMPLATES];
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
    for (int i = 0; i < c->n; i++) {
        free(c->t[i].name);
        pb_jinja_free(c->t[i].tmpl);
        free(c->t[i].err);
    }
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

/* Parse one template into c under name (from where, for messages). The default's syntax errors fail the load;
 * a named template's are kept, to fail the records that choose it. */
static pb_status add_template(pb_chat *c, const char *name, const char *src, size_t len, const char *where)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name))
            return pb_error(PB_ERR_CONFIG, "%s: two chat templates named \"%s\"", where, name);
    if (c->n == MAX_TEMPLATES)
        return pb_error(PB_ERR_CONFIG, "%s: more than %d chat templates", where, MAX_TEMPLATES);
    named_tmpl *t = &c->t[c->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = pb_strdup(name)))
        return pb_error(PB_ERR_NOMEM, "out of memory");
    c->n++;
    t->reads_content = find_bytes(src, len, "content", 7) != NULL;
    pb_status st = pb_jinja_parse(src, len, "chat template", &t->tmpl);
    if (st == PB_OK || st == PB_ERR_NOMEM)
        return st;
    st = pb_error_ctx(st, "%s", where);
    if (!strcmp(name, "default"))
        return st;
    if (!(t->err = pb_strdup(pb_last_error())))
        return pb_error(PB_ERR_NOMEM, "out of memory");
    return PB_OK;
}

/* chat_template as HF stores it in a JSON file: a string (the default), or [{"name", "template"}] */
static pb_status add_json_templates(pb_chat *c, const cJSON *v, const char *path)
{
    if (cJSON_IsString(v))
        return add_template(c, "default", v->valuestring, strlen(v->valuestring), path);
    if (!cJSON_IsArray(v))
        return pb_error(PB_ERR_CONFIG, "%s: chat_template is neither a string nor a list of named templates", path);
    c->named = true;
    const cJSON *e;
    cJSON_ArrayForEach(e, v) {
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(e, "template");
        if (!cJSON_IsString(nm) || !cJSON_IsString(t))
            return pb_error(PB_ERR_CONFIG, "%s: chat_template: an entry without a string \"name\" and \"template\"",
                            path);
        PB_CHECK(add_template(c, nm->valuestring, t->valuestring, strlen(t->valuestring), path));
    }
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

/* A template file: .jinja text, or a .json holding "chat_template" (a string or named templates). */
static pb_status add_file(pb_chat *c, const char *name, const char *path)
{
    size_t n = strlen(path);
    if (n > 5 && !strcmp(path + n - 5, ".json")) {
        cJSON *tj;
        PB_CHECK(read_json(path, &tj));
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(tj, "chat_template");
        pb_status st = v && !cJSON_IsNull(v) ? add_json_templates(c, v, path)
                                             : pb_error(PB_ERR_CONFIG, "%s: no \"chat_template\"", path);
        cJSON_Delete(tj);
        return st;
    }
    char *text;
    PB_CHECK(pb_read_file(path, MAX_FILE, &text, &n));
    pb_status st = add_template(c, name, text, n, path);
    free(text);
    return st;
}

/* The templates of a model folder as transformers 5 finds them: chat_template.jinja (the default) and
 * additional_chat_templates/NAME.jinja win over tokenizer_config.json's chat_template; a processor's
 * chat_template.json is the last resort. */
static pb_status add_dir_templates(pb_chat *c, const char *dir, const cJSON *cfg, const char *cfg_path)
{
    char *jinja = pb_path_join(dir, "chat_template.jinja"), *extra = pb_path_join(dir, "additional_chat_templates");
    char *json = pb_path_join(dir, "chat_template.json");
    pb_status st = jinja && extra && json ? PB_OK : pb_error(PB_ERR_NOMEM, "out of memory");
    if (st == PB_OK && pb_file_exists(jinja))
        st = add_file(c, "default", jinja);
    DIR *d = st == PB_OK ? opendir(extra) : NULL;
    if (d) {
        struct dirent *e;
        while (st == PB_OK && (e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n <= 6 || strcmp(e->d_name + n - 6, ".jinja") != 0)
                continue;
            char *p = pb_path_join(extra, e->d_name), *name = pb_strdup(e->d_name);
            if (!p || !name)
                st = pb_error(PB_ERR_NOMEM, "out of memory");
            else {
                name[n - 6] = '\0';
                st = add_file(c, name, p);
                c->named = true; /* HF: a dict of templates once any besides the default exists */
            }
            free(p);
            free(name);
        }
        closedir(d);
    }
    const cJSON *v = cfg ? cJSON_GetObjectItemCaseSensitive(cfg, "chat_template") : NULL;
    if (st == PB_OK && c->n == 0 && v && !cJSON_IsNull(v))
        st = add_json_templates(c, v, cfg_path);
    if (st == PB_OK && c->n == 0 && pb_file_exists(json))
        st = add_file(c, "default", json);
    free(jinja);
    free(extra);
    free(json);
    return st;
}

static pb_status load(const char *tmpl_path, const char *cfg_path, const char *dir, pb_chat **out)
{
    *out = NULL;
    pb_status st = PB_OK;
    cJSON *cfg = NULL;
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
    }
    if (tmpl_path)
        st = add_file(c, "default", tmpl_path);
    else if (dir)
        st = add_dir_templates(c, dir, cfg, cfg_path);
    else if (cfg) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(cfg, "chat_template");
        if (v && !cJSON_IsNull(v))
            st = add_json_templates(c, v, cfg_path);
    }
    if (st == PB_OK && c->n == 0)
        st = pb_error(PB_ERR_CONFIG, "%s: the model has no chat template (no chat_template in "
                      "tokenizer_config.json, no chat_template.jinja or .json beside it)",
                      dir ? dir : cfg_path ? cfg_path : "(none)");
    if (st != PB_OK)
        goto fail;
    *out = c;
    c = NULL;
fail:
    cJSON_Delete(cfg);
    pb_chat_free(c);
    return st;
}

pb_status pb_chat_load_files(const char *template_path, const char *tokenizer_config, pb_chat **out)
{
    return load(template_path, tokenizer_config, NULL, out);
}

pb_status pb_chat_load_dir(const char *dir, pb_chat **out)
{
    char *cfg = pb_path_join(dir, "tokenizer_config.json");
    if (!cfg)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    pb_status st = load(NULL, pb_file_exists(cfg) ? cfg : NULL, dir, out);
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
static pb_status mark_final(bool reads_content, cJSON *messages, char **final)
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
    if (!reads_content)
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

/* The model's template named name, or NULL. */
static const named_tmpl *find_template(const pb_chat *c, const char *name)
{
    for (int i = 0; i < c->n; i++)
        if (!strcmp(c->t[i].name, name))
            return &c->t[i];
    return NULL;
}

/* The template a record renders with, as HF's get_chat_template: the record's chat_template (the name of one of
 * the model's named templates, or a template's text, parsed into *own), else with tools the model's
 * "tool_use", else its default. */
static pb_status pick_template(const pb_chat *c, const cJSON *body, bool tools, pb_jinja **own,
                               const pb_jinja **tmpl, bool *reads_content)
{
    *own = NULL;
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(body, "chat_template");
    const named_tmpl *t = NULL;
    if (ct && !cJSON_IsNull(ct)) {
        if (!cJSON_IsString(ct))
            return pb_error(PB_ERR_INPUT, "\"chat_template\" is not a string");
        if (c->named)
            t = find_template(c, ct->valuestring);
        if (!t) {
            const size_t n = strlen(ct->valuestring);
            PB_CHECK(pb_jinja_parse(ct->valuestring, n, "the record's chat_template", own));
            *tmpl = *own;
            *reads_content = find_bytes(ct->valuestring, n, "content", 7) != NULL;
            return PB_OK;
        }
    } else if (!(tools && (t = find_template(c, "tool_use"))) && !(t = find_template(c, "default"))) {
        char names[512] = "";
        for (int i = 0; i < c->n; i++)
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s\"%s\"", i ? ", " : "", c->t[i].name);
        return pb_error(PB_ERR_INPUT, "the model has several chat templates and none named \"default\": give the "
                        "record's \"chat_template\" one of their names (%s)", names);
    }
    if (!t->tmpl)
        return pb_error(PB_ERR_INPUT, "chat template \"%s\": %s", t->name, t->err);
    *tmpl = t->tmpl;
    *reads_content = t->reads_content;
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
    pb_jinja *own = NULL;
    const pb_jinja *tmpl = NULL;
    bool reads_content = false;
    pb_status st = pick_template(c, body, given[0] != NULL, &own, &tmpl, &reads_content);
    if (st == PB_OK && cont)
        st = mark_final(reads_content, mcopy, &final);
    if (st == PB_OK)
        st = pb_jinja_render(tmpl, vars, NULL, prompt, len);
    if (st == PB_OK && cont && (st = cut_at_tag(final, *prompt, len)) != PB_OK) {
        free(*prompt);
        *prompt = NULL;
        *len = 0;
    }
    free(final);
    pb_jinja_free(own);
    cJSON_Delete(vars);
    return st;
}
