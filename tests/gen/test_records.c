/* Record parsing, settings resolution, JSON escaping and the line reader. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "gen/beam.h"
#include "gen/guide.h"
#include "gen/jbuf.h"
#include "gen/reader.h"
#include "gen/record.h"

static int failures;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

static pb_gen_settings base;

static void parse(const char *line, pb_record *r)
{
    pb_status st = pb_record_parse(line, strlen(line), 7, &base, r);
    CHECK(st == PB_OK);
}

static pb_status parse_with(const char *line, const pb_gen_settings *g, pb_record *r)
{
    return pb_record_parse(line, strlen(line), 1, g, r);
}

/* want somewhere in got (an output line), else both printed under `what` */
static void expect_in(const char *got, const char *want, const char *what)
{
    if (!strstr(got, want)) {
        fprintf(stderr, "%s:\n%s\nexpected in it\n%s\n", what, got, want);
        failures++;
    }
}

static void expect_error(const char *line, const char *needle)
{
    pb_record r;
    parse(line, &r);
    if (!r.error || !strstr(r.error, needle)) {
        fprintf(stderr, "line %s: error '%s', expected '%s'\n", line, r.error ? r.error : "(none)", needle);
        failures++;
    }
    pb_record_clear(&r);
}

static void test_records(void)
{
    pb_gen_cli cli = {0};
    const char *stops[] = {"###"};
    cli.has_temperature = true;
    cli.temperature = 0.5f;
    cli.n_stops = 1;
    cli.stops = stops;
    pb_gen_defaults g = {0};
    g.has_max_new_tokens = true;
    g.max_new_tokens = 20;
    g.has_top_p = true;
    g.top_p = 0.9f;
    g.has_do_sample = true;
    g.do_sample = true;
    g.has_temperature = true;
    g.temperature = 0.7f;
    CHECK(pb_gen_settings_base(&cli, &g, &base) == PB_OK);
    CHECK(base.max_tokens == 20 && base.sample.temperature == 0.5f && base.sample.top_p == 0.9f);
    CHECK(base.sample.top_k == 0 && base.n_stops == 1 && strcmp(base.stops[0], "###") == 0);

    /* generation_config without do_sample stays greedy */
    pb_gen_cli none = {0};
    pb_gen_defaults g2 = {0};
    g2.has_temperature = true;
    g2.temperature = 0.7f;
    pb_gen_settings b2;
    CHECK(pb_gen_settings_base(&none, &g2, &b2) == PB_OK);
    CHECK(b2.sample.temperature == 0 && b2.max_tokens == 64 && b2.seed == 0);
    pb_gen_settings_clear(&b2);

    pb_record r;
    parse("{\"prompt\": \"Hi\\nthere\", \"id\": 1.50, \"max_tokens\": 3, \"stop\": [\"a\", \"b\"], \"seed\": 5}", &r);
    CHECK(!r.error && strcmp(r.prompt, "Hi\nthere") == 0 && strcmp(r.id_json, "1.50") == 0);
    CHECK(r.gs.max_tokens == 3 && r.gs.n_stops == 2 && strcmp(r.gs.stops[1], "b") == 0);
    CHECK(r.gs.own_seed && r.gs.seed == 5 && r.gs.sample.temperature == 0.5f && !r.openai);
    pb_record_clear(&r);

    parse("{\"id\": \"a\\\"b\", \"prompt\": \"x\", \"temperature\": null}", &r);
    CHECK(!r.error && strcmp(r.id_json, "\"a\\\"b\"") == 0 && r.gs.sample.temperature == 0.5f);
    pb_record_clear(&r);

    parse("{\"prompt\": \"x\"}", &r);
    CHECK(!r.error && strcmp(r.id_json, "7") == 0 && r.gs.n_stops == 1);
    pb_record_clear(&r);

    parse("{\"custom_id\": \"req-1\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"model\": \"m\", \"prompt\": \"Once\", \"max_tokens\": 5, \"stop\": \"\\n\"}}", &r);
    CHECK(!r.error && r.openai && strcmp(r.custom_id_json, "\"req-1\"") == 0);
    CHECK(r.gs.max_tokens == 5 && r.gs.n_stops == 1 && strcmp(r.gs.stops[0], "\n") == 0);
    pb_record_clear(&r);

    expect_error("{\"prompt\": \"x\"", "invalid JSON");
    expect_error("not json", "invalid JSON");
    expect_error("{\"prompt\": \"x\"} trailing", "unexpected text");
    expect_error("[1, 2]", "must be a JSON object");
    expect_error("{\"text\": \"x\"}", "missing field 'prompt'");
    expect_error("{\"prompt\": 5}", "'prompt' must be a string");
    expect_error("{\"prompt\": \"x\", \"max_tokens\": \"5\"}", "'max_tokens' must be a number");
    expect_error("{\"prompt\": \"x\", \"max_tokens\": 2.5}", "'max_tokens' must be an integer");
    expect_error("{\"prompt\": \"x\", \"max_tokens\": -1}", "out of range");
    expect_error("{\"prompt\": \"x\", \"temperature\": -1}", "out of range");
    expect_error("{\"prompt\": \"x\", \"top_p\": 0}", "top_p");
    expect_error("{\"prompt\": \"x\", \"stop\": [1]}", "'stop' must be a string or a list");
    expect_error("{\"prompt\": \"x\", \"stop\": \"\"}", "1 to");
    expect_error("{\"prompt\": \"x\", \"id\": [1]}", "'id' must be a string or a number");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/embeddings\", \"body\": {\"input\": \"x\"}}",
                 "needs a run with --task embed");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/moderations\", \"body\": {\"input\": \"x\"}}",
                 "not supported");
    expect_error("{\"input\": \"x\"}", "field 'input' is an embeddings request's");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/chat/completions\", \"body\": {\"prompt\": \"x\"}}",
                 "body.messages");
    expect_error("{\"prompt\": \"x\", \"messages\": []}", "not both");
    expect_error("{\"messages\": \"hi\"}", "must be a list");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {}}", "body.prompt");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"method\": \"GET\", \"body\": {\"prompt\": \"x\"}}",
                 "POST");

    /* the id survives an error after it was read */
    parse("{\"id\": \"keep\", \"prompt\": 3}", &r);
    CHECK(r.error && strcmp(r.id_json, "\"keep\"") == 0);
    pb_record_clear(&r);
    CHECK(pb_line_is_blank(" \t\r", 3) && !pb_line_is_blank(" x", 2));
    pb_gen_settings_clear(&base);
}

static void test_jbuf(void)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_jbuf_str(&b, "a\"\\\n\x01\xc3\xa9\xff" "z", 9);
    CHECK(b.len && strcmp(b.data, "\"a\\\"\\\\\\n\\u0001\xc3\xa9\xef\xbf\xbdz\"") == 0);
    pb_jbuf_reset(&b);
    pb_jbuf_str(&b, "\xe2\x82", 2); /* truncated sequence */
    CHECK(strcmp(b.data, "\"\xef\xbf\xbd\xef\xbf\xbd\"") == 0);
    pb_jbuf_free(&b);
}

static void test_reader(void)
{
    char path[] = "/tmp/pbtest_readerXXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0);
    /* long line (200000 bytes), CRLF, empty line, last line without newline */
    FILE *f = fdopen(fd, "w");
    fputs("first\r\n\n", f);
    for (int i = 0; i < 200000; i++)
        fputc('x', f);
    fputs("\nlast", f);
    fclose(f);
    pb_reader *r;
    const char *line;
    size_t len;
    uint64_t no;
    bool too_long;
    CHECK(pb_reader_open(path, 100000, &r) == PB_OK);
    CHECK(pb_reader_next(r, &line, &len, &no, &too_long) == PB_OK && line && len == 5 && no == 1 && !too_long);
    CHECK(pb_reader_next(r, &line, &len, &no, &too_long) == PB_OK && line && len == 0 && no == 2);
    CHECK(pb_reader_next(r, &line, &len, &no, &too_long) == PB_OK && line && len == 100000 && too_long && no == 3);
    CHECK(pb_reader_next(r, &line, &len, &no, &too_long) == PB_OK && line && strcmp(line, "last") == 0 && no == 4);
    CHECK(pb_reader_next(r, &line, &len, &no, &too_long) == PB_OK && !line);
    CHECK(pb_reader_offset(r) == (uint64_t)pb_reader_size(r));
    pb_reader_close(r);
    CHECK(pb_reader_open("/nonexistent/x", 10, &r) == PB_ERR_IO);
    unlink(path);
}

/* The output shapes (record.h), read back as JSON. */
static void test_output_shapes(void)
{
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_record r;
    parse("{\"id\": \"q\\u00e9\", \"prompt\": \"Hi\"}", &r);
    pb_result res = {.text = "a\"b\n", .len = 4, .finish = "stop", .prompt_tokens = 2,
                     .completion_tokens = 3};
    pb_record_result_json(&b, &r, "m", &res);
    CHECK(pb_jbuf_status(&b) == PB_OK);
    cJSON *o = cJSON_ParseWithLength(b.data, b.len);
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "id")->valuestring, "q\xc3\xa9") == 0);
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "text")->valuestring, "a\"b\n") == 0);
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "finish_reason")->valuestring, "stop") == 0);
    CHECK(o && cJSON_GetObjectItem(o, "prompt_tokens")->valueint == 2 &&
          cJSON_GetObjectItem(o, "completion_tokens")->valueint == 3);
    cJSON_Delete(o);
    CHECK(pb_record_set_error(&r, "bad %d", 1) == PB_OK);
    pb_jbuf_reset(&b);
    pb_record_error_json(&b, &r);
    o = cJSON_ParseWithLength(b.data, b.len);
    const cJSON *e = o ? cJSON_GetObjectItem(o, "error") : NULL;
    CHECK(e && cJSON_GetObjectItem(e, "line")->valueint == 7 &&
          strcmp(cJSON_GetObjectItem(e, "message")->valuestring, "bad 1") == 0);
    cJSON_Delete(o);
    pb_record_clear(&r);

    parse("{\"custom_id\": \"c1\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\"}}", &r);
    CHECK(r.openai && !r.error);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &res);
    o = cJSON_ParseWithLength(b.data, b.len);
    const cJSON *body = o ? cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body") : NULL;
    const cJSON *ch = body ? cJSON_GetArrayItem(cJSON_GetObjectItem(body, "choices"), 0) : NULL;
    CHECK(o && strcmp(cJSON_GetObjectItem(o, "custom_id")->valuestring, "c1") == 0);
    CHECK(o && cJSON_IsNull(cJSON_GetObjectItem(o, "error")));
    CHECK(body && strcmp(cJSON_GetObjectItem(body, "model")->valuestring, "m") == 0);
    CHECK(ch && strcmp(cJSON_GetObjectItem(ch, "text")->valuestring, "a\"b\n") == 0);
    CHECK(body && cJSON_GetObjectItem(cJSON_GetObjectItem(body, "usage"), "total_tokens")->valueint == 5);
    cJSON_Delete(o);
    CHECK(pb_record_set_error(&r, "bad") == PB_OK);
    pb_jbuf_reset(&b);
    pb_record_error_json(&b, &r);
    o = cJSON_ParseWithLength(b.data, b.len);
    CHECK(o && cJSON_IsNull(cJSON_GetObjectItem(o, "response")) &&
          strcmp(cJSON_GetObjectItem(cJSON_GetObjectItem(o, "error"), "code")->valuestring,
                 "invalid_request") == 0);
    cJSON_Delete(o);
    pb_record_clear(&r);
    pb_jbuf_free(&b);
}

/* n > 1: the record's field, its deep copy (each choice's sequence owns one), and the output lines */
static void test_choices(void)
{
    pb_record r, c;
    parse("{\"id\": 5, \"prompt\": \"Hi\", \"n\": 3, \"stop\": [\"x\", \"yy\"], \"seed\": 9}", &r);
    CHECK(!r.error && r.gs.n == 3 && r.gs.own_seed);
    CHECK(pb_record_copy(&c, &r) == PB_OK);
    CHECK(c.gs.n == 3 && c.gs.n_stops == 2 && strcmp(c.gs.stops[1], "yy") == 0 && c.gs.stops[1] != r.gs.stops[1]);
    CHECK(c.prompt != r.prompt && c.prompt_len == 2 && memcmp(c.prompt, "Hi", 3) == 0);
    CHECK(strcmp(c.id_json, "5") == 0 && c.id_json != r.id_json && c.line == r.line && !c.custom_id_json);
    pb_record_clear(&c);
    CHECK(strcmp(r.prompt, "Hi") == 0 && strcmp(r.gs.stops[0], "x") == 0); /* the original stays whole */

    pb_choice ch[2] = {{.text = "a", .len = 1, .finish = "length", .completion_tokens = 4},
                       {.text = "b\"", .len = 2, .finish = "stop", .completion_tokens = 1}};
    pb_result res = {.prompt_tokens = 2, .completion_tokens = 5, .n_choices = 2, .choices = ch};
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_record_result_json(&b, &r, "m", &res);
    CHECK(pb_jbuf_status(&b) == PB_OK &&
          strcmp(b.data, "{\"id\": 5, \"choices\": [{\"index\": 0, \"text\": \"a\", \"finish_reason\": \"length\", "
                         "\"completion_tokens\": 4}, {\"index\": 1, \"text\": \"b\\\"\", \"finish_reason\": \"stop\", "
                         "\"completion_tokens\": 1}], \"prompt_tokens\": 2, \"completion_tokens\": 5}") == 0);
    /* one completion: the line as before n existed */
    pb_result one = {.text = "a", .len = 1, .finish = "length", .prompt_tokens = 2, .completion_tokens = 4};
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &one);
    CHECK(strcmp(b.data, "{\"id\": 5, \"text\": \"a\", \"finish_reason\": \"length\", \"prompt_tokens\": 2, "
                         "\"completion_tokens\": 4}") == 0);
    pb_record_clear(&r);

    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", "
          "\"body\": {\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"n\": 2}}", &r);
    CHECK(!r.error && r.chat && r.gs.n == 2);
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.chat && c.openai && strcmp(c.chat_json, r.chat_json) == 0 &&
          strcmp(c.custom_id_json, "\"c\"") == 0);
    pb_record_clear(&c);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &res);
    CHECK(strstr(b.data, "\"choices\": [{\"index\": 0, \"message\": {\"role\": \"assistant\", \"content\": \"a\"}, "
                         "\"logprobs\": null, \"finish_reason\": \"length\"}, {\"index\": 1, \"message\": "
                         "{\"role\": \"assistant\", \"content\": \"b\\\"\"}, \"logprobs\": null, \"finish_reason\": "
                         "\"stop\"}], \"usage\": {\"prompt_tokens\": 2, \"completion_tokens\": 5, \"total_tokens\": 7}}") != NULL);
    pb_record_clear(&r);
    for (int i = 0; i < 4; i++) {
        static const char *bad[] = {"0", "129", "2.5", "\"3\""};
        char line[128];
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", \"n\": %s}", bad[i]);
        parse(line, &r);
        CHECK(r.error && strstr(r.error, "field 'n'"));
        pb_record_clear(&r);
    }
    pb_jbuf_free(&b);
}

/* Constrained decoding's fields: the regex kept (schemas and choices through gen/schema.h), the field that gave
 * it; bad ones refused naming the field */
static void test_guided(void)
{
    static const struct { const char *fields, *field, *regex; } ok[] = {
        {"\"guided_regex\": \"[0-9]+\"", "guided_regex", "[0-9]+"},
        {"\"guided_choice\": [\"a.b\", \"c\"]", "guided_choice", NULL},
        {"\"guided_json\": {\"type\": \"integer\"}", "guided_json", NULL},
        {"\"guided_json\": \"{\\\"type\\\": \\\"boolean\\\"}\"", "guided_json", "true|false"},
        {"\"structured_outputs\": {\"regex\": \"x\", \"backend\": \"auto\"}", "structured_outputs.regex", "x"},
        {"\"structured_outputs\": {\"choice\": [\"y\"]}", "structured_outputs.choice", NULL},
        {"\"structured_outputs\": {\"json_object\": true}", "structured_outputs.json_object", NULL},
        {"\"response_format\": {\"type\": \"json_object\"}", "response_format", NULL},
        {"\"response_format\": {\"type\": \"json_schema\", \"json_schema\": {\"name\": \"n\", "
         "\"schema\": {\"type\": \"null\"}}}", "response_format", "null"},
        {"\"response_format\": {\"type\": \"text\"}, \"guided_json\": null", NULL, NULL},
        {"\"guided_grammar\": \"root ::= [0-9]+\"", "guided_grammar", "root ::= [0-9]+"},
        {"\"structured_outputs\": {\"grammar\": \"root ::= \\\"x\\\"\"}", "structured_outputs.grammar",
         "root ::= \"x\""},
    };
    pb_record r;
    char line[512];
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", %s}", ok[i].fields);
        parse(line, &r);
        bool good = !r.error && (ok[i].field ? r.gs.guide && !strcmp(r.gs.guide_field, ok[i].field) : !r.gs.guide);
        if (good && ok[i].regex)
            good = strstr(r.gs.guide, ok[i].regex) != NULL;
        /* a grammar is kept as its text, marked so */
        if (good && ok[i].field)
            good = r.gs.guide_kind == (strstr(ok[i].field, "grammar") ? PB_GUIDE_GRAMMAR
                                       : strstr(ok[i].field, "json_object") || (!strcmp(ok[i].field, "response_format") &&
                                         strstr(ok[i].fields, "json_object")) ? PB_GUIDE_JSON_OBJECT : PB_GUIDE_REGEX);
        if (!good) {
            fprintf(stderr, "%s: %s (%s)\n", line, r.error ? r.error : "accepted", r.gs.guide ? r.gs.guide : "none");
            failures++;
        }
        /* the settings copy (n > 1's choices) keeps its own pattern */
        pb_gen_settings c;
        CHECK(pb_gen_settings_copy(&c, &r.gs) == PB_OK &&
              (c.guide ? r.gs.guide && c.guide != r.gs.guide && !strcmp(c.guide, r.gs.guide) : !r.gs.guide) &&
              c.guide_kind == r.gs.guide_kind);
        pb_gen_settings_clear(&c);
        pb_record_clear(&r);
    }
    static const struct { const char *fields, *msg; } bad[] = {
        {"\"guided_regex\": \"\"", "field 'guided_regex' must be a non-empty string"},
        {"\"guided_regex\": 3", "field 'guided_regex' must be a non-empty string"},
        {"\"guided_choice\": [\"a\", 1]", "field 'guided_choice' must be a list of non-empty strings"},
        {"\"guided_json\": 3", "field 'guided_json' must be a JSON schema"},
        {"\"guided_json\": \"{oops\"", "field 'guided_json': the schema is not valid JSON"},
        {"\"guided_json\": {\"type\": \"string\", \"format\": \"email\"}", "field 'guided_json': at "},
        {"\"guided_regex\": \"a\", \"guided_json\": {}", "fields 'guided_json' and 'guided_regex' both"},
        {"\"guided_choice\": [\"a\"], \"response_format\": {\"type\": \"json_object\"}",
         "fields 'guided_choice' and 'response_format' both"},
        {"\"guided_regex\": \"a\", \"allowed_token_ids\": [1]", "'guided_regex' and 'allowed_token_ids' cannot"},
        {"\"response_format\": {\"type\": \"json_schema\"}", "needs json_schema.schema"},
        {"\"response_format\": {\"type\": \"yaml\"}", "type 'yaml' is not one of"},
        {"\"response_format\": \"json\"", "must be an object with a 'type'"},
        {"\"structured_outputs\": {\"structural_tag\": \"g\"}", "'structured_outputs.structural_tag' is not supported"},
        {"\"guided_grammar\": \"\"", "field 'guided_grammar' must be a non-empty string (a GBNF grammar)"},
        {"\"structured_outputs\": {\"grammar\": 1}", "'structured_outputs.grammar' must be a non-empty string"},
        {"\"guided_grammar\": \"root ::= x\", \"guided_regex\": \"a\"", "fields 'guided_regex' and "
         "'guided_grammar' both"},
        {"\"structured_outputs\": {\"colour\": 1}", "unknown key 'colour'"},
        {"\"structured_outputs\": {\"json_object\": 1}", "must be true or false"},
        {"\"structured_outputs\": 5", "must be an object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", %s}", bad[i].fields);
        parse(line, &r);
        if (!r.error || !strstr(r.error, bad[i].msg)) {
            fprintf(stderr, "%s: %s (wanted %s)\n", line, r.error ? r.error : "accepted", bad[i].msg);
            failures++;
        }
        pb_record_clear(&r);
    }
    /* bad_words: kept as written (the engine tokenizes them); not only spaces, at most PB_MAX_BAD_WORDS */
    parse("{\"prompt\": \"Hi\", \"bad_words\": [\" Paris\", \"of the\"]}", &r);
    CHECK(!r.error && r.gs.n_bad == 2 && !strcmp(r.gs.bad[0], " Paris") && !strcmp(r.gs.bad[1], "of the"));
    pb_record_clear(&r);
    static const char *const bad_bw[] = {"[\"  \"]", "[\"\"]", "\"Paris\"", "[1]"};
    for (size_t i = 0; i < sizeof bad_bw / sizeof *bad_bw; i++) {
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", \"bad_words\": %s}", bad_bw[i]);
        parse(line, &r);
        CHECK(r.error && strstr(r.error, "field 'bad_words'"));
        pb_record_clear(&r);
    }
    /* the whitespace: compact with disable_any_whitespace, the record's own pattern */
    parse("{\"prompt\": \"Hi\", \"structured_outputs\": {\"json\": {\"type\": \"array\", \"items\": "
          "{\"type\": \"null\"}}, \"disable_any_whitespace\": true}}", &r);
    CHECK(!r.error && r.gs.guide && !strchr(r.gs.guide, ' ') && !strstr(r.gs.guide, "\\t"));
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"guided_json\": {\"type\": \"array\"}, \"guided_whitespace_pattern\": \"[ ]?\"}", &r);
    CHECK(!r.error && r.gs.guide && strstr(r.gs.guide, "[ ]?") && !strstr(r.gs.guide, "\\t"));
    pb_record_clear(&r);
}

/* Fields of OpenAI's and vLLM's requests not done here: refused when they ask for something, their
 * "off" values accepted; max_completion_tokens is max_tokens */
static void test_unsupported(void)
{
    static const char *const asks[] = {
        "\"suffix\": \"x\"", "\"best_of\": 3",
        "\"tool_choice\": \"any\"", "\"logits_processors\": [\"p\"]",
        "\"prompt_embeds\": \"AAAA\"", "\"thinking_token_budget\": 100",
        "\"repetition_detection\": {\"max_pattern_size\": 4}", "\"watermarking\": true"};
    pb_record r;
    for (size_t i = 0; i < sizeof asks / sizeof *asks; i++) {
        char line[256], name[64];
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", %s}", asks[i]);
        snprintf(name, sizeof name, "field '%.*s' is not supported", (int)(strchr(asks[i] + 1, '"') - asks[i] - 1),
                 asks[i] + 1);
        parse(line, &r);
        if (!r.error || !strstr(r.error, name)) {
            fprintf(stderr, "%s: %s\n", line, r.error ? r.error : "accepted");
            failures++;
        }
        pb_record_clear(&r);
    }
    parse("{\"prompt\": \"Hi\", \"echo\": false, \"suffix\": \"\", "
          "\"best_of\": 2, \"n\": 2, \"length_penalty\": 1, \"logit_bias\": {}, \"frequency_penalty\": 0, "
          "\"presence_penalty\": 0, \"bad_words\": [], \"response_format\": {\"type\": \"text\"}, "
          "\"tool_choice\": \"auto\", \"skip_special_tokens\": true, \"stop_token_ids\": [], "
          "\"max_completion_tokens\": 7, \"user\": \"u\", \"metadata\": {\"a\": 1}, \"logits_processors\": [], "
          "\"prompt_embeds\": null, \"thinking_token_budget\": -1, \"repetition_detection\": null}", &r);
    CHECK(!r.error && r.gs.max_tokens == 7 && r.gs.n == 2 && !r.gs.has_add_special);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"max_tokens\": 7, \"max_completion_tokens\": 7, \"tool_choice\": \"none\"}", &r);
    CHECK(!r.error && r.gs.max_tokens == 7);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"frequency_penalty\": 0.5, \"presence_penalty\": -2}", &r);
    CHECK(!r.error && r.gs.sample.frequency_penalty == 0.5f && r.gs.sample.presence_penalty == -2.0f);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"presence_penalty\": 2.5}", &r);
    CHECK(r.error && strstr(r.error, "field 'presence_penalty': 2.5 is out of range [-2, 2]"));
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"max_tokens\": 7, \"max_completion_tokens\": 8}", &r);
    CHECK(r.error && strstr(r.error, "'max_tokens' (7) and 'max_completion_tokens' (8) differ"));
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"max_completion_tokens\": 3, \"min_tokens\": 5}", &r);
    CHECK(r.error && strstr(r.error, "min_tokens"));
    pb_record_clear(&r);
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\", \"best_of\": 2}}", &r);
    CHECK(r.error && strstr(r.error, "body: field 'best_of' is not supported"));
    pb_record_clear(&r);
}

/* prompts given as token ids, echo, and a chat's echo text (add_generation_prompt, continue_final_message) */
static void test_echo_ids(void)
{
    pb_record r;
    parse("{\"prompt\": [15496, 0, 2147483647]}", &r);
    CHECK(!r.error && !r.prompt && r.n_prompt_ids == 3 && r.prompt_ids[0] == 15496 && r.prompt_ids[1] == 0 &&
          r.prompt_ids[2] == 2147483647 && !r.gs.echo);
    pb_record c;
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.n_prompt_ids == 3 && c.prompt_ids != r.prompt_ids &&
          c.prompt_ids[2] == 2147483647);
    pb_record_clear(&c);
    pb_record_clear(&r);
    parse("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": [[7, 8]]}}", &r);
    CHECK(!r.error && r.n_prompt_ids == 2 && r.prompt_ids[1] == 8);
    pb_record_clear(&r);
    parse("{\"prompt\": [\"one string\"], \"echo\": true}", &r);
    CHECK(!r.error && r.prompt && !strcmp(r.prompt, "one string") && !r.prompt_ids && r.gs.echo &&
          !r.gs.prompt_logprobs);
    pb_record_clear(&r);
    expect_error("{\"prompt\": []}", "field 'prompt' is an empty list");
    expect_error("{\"prompt\": [[1], [2]]}", "field 'prompt' holds 2 prompts; a record takes one (a line each");
    expect_error("{\"prompt\": [\"a\", \"b\", \"c\"]}", "field 'prompt' holds 3 prompts");
    expect_error("{\"prompt\": [[[1]]]}", "field 'prompt': item 0 is not a token id");
    expect_error("{\"prompt\": [1, 2.5]}", "field 'prompt': item 1 is not a token id");
    expect_error("{\"prompt\": [-1]}", "field 'prompt': item 0 is not a token id");
    expect_error("{\"prompt\": [2147483648]}", "item 0 is not a token id");
    expect_error("{\"prompt\": [1, null]}", "item 1 is not a token id");
    expect_error("{\"prompt\": [[]]}", "field 'prompt' is an empty list");
    expect_error("{\"prompt\": {\"ids\": [1]}}", "field 'prompt' must be a string or a list of token ids");
    expect_error("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": 5}}",
                 "field 'body.prompt' must be a string or a list of token ids");
    expect_error("{\"prompt\": \"x\", \"echo\": 1}", "field 'echo' must be true or false");
    parse("{\"prompt\": \"x\", \"return_token_ids\": true, \"return_tokens_as_token_ids\": true}", &r);
    CHECK(!r.error && r.gs.return_ids && r.gs.ids_as_tokens);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"x\", \"return_token_ids\": 1}", "field 'return_token_ids' must be true or false");
    parse("{\"prompt\": \"x\", \"truncate_prompt_tokens\": 5, \"truncation_side\": \"right\"}", &r);
    CHECK(!r.error && r.gs.truncate == 5 && r.gs.trunc_right);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"x\", \"truncation_side\": \"middle\"}", "field 'truncation_side' must be");
    /* a named tool_choice: guided by the function's parameters (none: only {}), its name kept for the output */
    parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tools\": [{\"type\": \"function\", "
          "\"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": "
          "{\"type\": \"integer\"}}}}}, {\"type\": \"function\", \"function\": {\"name\": \"g\"}}], "
          "\"tool_choice\": {\"type\": \"function\", \"function\": {\"name\": \"f\"}}}", &r);
    CHECK(!r.error && r.gs.tool_name && !strcmp(r.gs.tool_name, "f") && r.gs.guide &&
          !strcmp(r.gs.guide_field, "tool_choice") && strstr(r.gs.guide, "\"a\""));
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.gs.tool_name && c.gs.tool_name != r.gs.tool_name);
    pb_record_clear(&c);
    pb_record_clear(&r);
    parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tools\": [{\"type\": \"function\", "
          "\"function\": {\"name\": \"g\"}}], \"tool_choice\": {\"type\": \"function\", "
          "\"function\": {\"name\": \"g\"}}}", &r);
    CHECK(!r.error && r.gs.guide && !strcmp(r.gs.guide, "\\{[ \\t\\n]*\\}"));
    if (r.gs.guide && strcmp(r.gs.guide, "\\{[ \\t\\n]*\\}"))
        fprintf(stderr, "tool without parameters: %s\n", r.gs.guide);
    pb_record_clear(&r);
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tool_choice\": {\"type\": \"function\", "
                 "\"function\": {\"name\": \"g\"}}}", "names function 'g', which 'tools' does not define");
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tool_choice\": {\"type\": \"fn\"}}",
                 "field 'tool_choice' must be");
    /* "required": a list of calls, each {"name": a tool's, "parameters": its} (the $defs gathered at the root) */
    parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tools\": [{\"type\": \"function\", "
          "\"function\": {\"name\": \"f\", \"parameters\": {\"type\": \"object\", \"properties\": {\"a\": "
          "{\"$ref\": \"#/$defs/A\"}}, \"$defs\": {\"A\": {\"type\": \"integer\"}}}}}, {\"type\": \"function\", "
          "\"function\": {\"name\": \"g\"}}], \"tool_choice\": \"required\"}", &r);
    CHECK(!r.error && r.gs.tool_required && !r.gs.tool_name && r.gs.guide && strstr(r.gs.guide, "\"f\"") &&
          strstr(r.gs.guide, "\"g\"") && strstr(r.gs.guide, "\"a\""));
    if (r.error)
        fprintf(stderr, "required: %s\n", r.error);
    pb_record_clear(&r);
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"tool_choice\": \"required\"}",
                 "'tools' lists no function");
    expect_error("{\"prompt\": \"q\", \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"g\"}}], "
                 "\"tool_choice\": \"required\"}", "give 'messages'");
        /* logprob_token_ids: their log probabilities instead of the most likely (repeats once), with logprobs */
    parse("{\"prompt\": \"x\", \"logprobs\": 5, \"logprob_token_ids\": [7, 3, 7, 0]}", &r);
    CHECK(!r.error && r.gs.logprobs && r.gs.n_lp_ids == 3 && r.gs.top_logprobs == 3 && r.gs.lp_ids[0] == 7 &&
          r.gs.lp_ids[1] == 3 && r.gs.lp_ids[2] == 0);
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.gs.n_lp_ids == 3 && c.gs.lp_ids[1] == 3);
    pb_record_clear(&c);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"x\", \"logprob_token_ids\": [1]}", "field 'logprob_token_ids' needs 'logprobs'");
    expect_error("{\"prompt\": \"x\", \"logprobs\": 1, \"logprob_token_ids\": [-1]}", "must be a list of token ids");
    expect_error("{\"prompt\": \"x\", \"logprobs\": 1, \"logprob_token_ids\": "
                 "[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21]}", "1 to 20 token ids");
        parse("{\"prompt\": \"x\", \"add_special_tokens\": false}", &r);
    CHECK(!r.error && r.gs.has_add_special && !r.gs.add_special);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"x\", \"add_special_tokens\": \"no\"}", "field 'add_special_tokens' must be true or false");
    /* echo with logprobs: the prompt's at the same count, unless the record gives prompt_logprobs (vLLM) */
    parse("{\"prompt\": \"x\", \"echo\": true, \"logprobs\": 3}", &r);
    CHECK(!r.error && r.gs.prompt_logprobs && r.gs.prompt_top == 3);
    pb_record_clear(&r);
    parse("{\"prompt\": \"x\", \"echo\": true, \"logprobs\": 3, \"prompt_logprobs\": 1}", &r);
    CHECK(!r.error && r.gs.prompt_logprobs && r.gs.prompt_top == 1);
    pb_record_clear(&r);
    parse("{\"prompt\": \"x\", \"logprobs\": 3}", &r);
    CHECK(!r.error && !r.gs.prompt_logprobs);
    pb_record_clear(&r);
    /* a chat's echo: the last message's content where it is the assistant's (text parts joined by newlines);
     * without add_generation_prompt (or with continue_final_message), whoever's it is */
    static const struct {
        const char *fields, *want;
    } chats[] = {
        {"\"messages\": [{\"role\": \"user\", \"content\": \"q\"}, {\"role\": \"assistant\", \"content\": \"So \"}]",
         "So "},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]", NULL},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"add_generation_prompt\": false", "q"},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"continue_final_message\": true", "q"},
        {"\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], "
         "\"chat_template_kwargs\": {\"add_generation_prompt\": false}", "q"},
        {"\"messages\": [{\"role\": \"assistant\", \"content\": [{\"type\": \"text\", \"text\": \"a\"}, "
         "{\"type\": \"image_url\"}, {\"type\": \"text\", \"text\": \"b\"}]}]", "a\nb"},
        {"\"messages\": [{\"role\": \"assistant\", \"content\": null}]", NULL},
        {"\"messages\": [{\"role\": \"assistant\", \"content\": \"\"}]", NULL},
    };
    for (size_t i = 0; i < sizeof chats / sizeof *chats; i++) {
        char line[512];
        snprintf(line, sizeof line, "{%s, \"echo\": true}", chats[i].fields);
        parse(line, &r);
        const bool ok = !r.error && r.chat && r.gs.echo &&
                        (chats[i].want ? r.echo_text && r.echo_len == strlen(chats[i].want) &&
                                             !memcmp(r.echo_text, chats[i].want, r.echo_len)
                                       : !r.echo_text);
        if (!ok) {
            fprintf(stderr, "%s: echo '%.*s' (error %s), expected '%s'\n", line, (int)r.echo_len,
                    r.echo_text ? r.echo_text : "", r.error ? r.error : "none", chats[i].want ? chats[i].want : "");
            failures++;
        }
        pb_record_clear(&r);
    }
    /* the reply's role: the assistant, or without add_generation_prompt the last message's (vLLM's) */
    parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"continue_final_message\": true}", &r);
    CHECK(!r.error && r.reply_role && !strcmp(r.reply_role, "user"));
    pb_record_clear(&r);
    parse("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}]}", &r);
    CHECK(!r.error && !r.reply_role);
    pb_record_clear(&r);
    parse("{\"messages\": [{\"role\": \"assistant\", \"content\": \"q\"}], \"add_generation_prompt\": false}", &r);
    CHECK(!r.error && !r.reply_role);
    pb_record_clear(&r);
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"echo\": true, "
                 "\"continue_final_message\": true, \"add_generation_prompt\": true}", "cannot both be true");
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"echo\": true, "
                 "\"continue_final_message\": \"yes\"}", "\"continue_final_message\" must be true or false");
}

/* logprobs and top_logprobs: the fields, the CLI default, and the three output shapes (token texts from a
 * small tokenizer: HF decode of each id alone) */
static void test_logprobs(void)
{
    pb_record r;
    static const struct { const char *fields; bool on; int top; } ok[] = {
        {"\"logprobs\": 3", true, 3}, {"\"logprobs\": 0", true, 0}, {"\"logprobs\": true", true, 0},
        {"\"logprobs\": true, \"top_logprobs\": 20", true, 20}, {"\"logprobs\": 4, \"top_logprobs\": 4", true, 4},
        {"\"logprobs\": false, \"top_logprobs\": 0", false, 0}, {"\"logprobs\": null", false, 0},
        {"\"top_logprobs\": 0", false, 0}};
    for (size_t i = 0; i < sizeof ok / sizeof *ok; i++) {
        char line[256];
        snprintf(line, sizeof line, "{\"prompt\": \"Hi\", %s}", ok[i].fields);
        parse(line, &r);
        if (r.error || r.gs.logprobs != ok[i].on || r.gs.top_logprobs != ok[i].top) {
            fprintf(stderr, "%s: %s, logprobs %d top %d\n", line, r.error ? r.error : "", r.gs.logprobs,
                    r.gs.top_logprobs);
            failures++;
        }
        pb_record_clear(&r);
    }
    expect_error("{\"prompt\": \"Hi\", \"top_logprobs\": 2}", "field 'top_logprobs' needs 'logprobs': true");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": false, \"top_logprobs\": 2}", "needs 'logprobs': true");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": 21}", "field 'logprobs': 21 is out of range [0, 20]");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": 2.5}", "field 'logprobs' must be an integer");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": \"3\"}", "field 'logprobs' must be true, false or a number");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": true, \"top_logprobs\": -1}", "field 'top_logprobs'");
    expect_error("{\"prompt\": \"Hi\", \"logprobs\": 3, \"top_logprobs\": 2}",
                 "fields 'logprobs' (3) and 'top_logprobs' (2) differ");
    /* --logprobs N: every record's default; a record's own field wins */
    pb_gen_cli cli = {.has_logprobs = true, .logprobs = 4};
    pb_gen_settings g;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_OK && g.logprobs && g.top_logprobs == 4);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"Hi\"}", &g, &r) == PB_OK && r.gs.logprobs && r.gs.top_logprobs == 4);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"Hi\", \"logprobs\": false}", &g, &r) == PB_OK && !r.gs.logprobs);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"Hi\", \"top_logprobs\": 1}", &g, &r) == PB_OK && r.gs.logprobs &&
          r.gs.top_logprobs == 1);
    pb_record_clear(&r);
    pb_gen_settings_clear(&g);
    cli.logprobs = 21;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_ERR_USAGE);

    /* output: ids 0 "a", 1 "\"q", 2 "\xc3\xa9" (2 bytes, 1 code point), 3 "b", 4 "<eos>" (special, rendered),
     * 9 (no token: "") */
    static const char tj[] =
        "{\"added_tokens\": [{\"id\": 4, \"content\": \"<eos>\", \"special\": true}], \"model\": {\"type\": "
        "\"BPE\", \"vocab\": {\"a\": 0, \"\\\"q\": 1, \"\xc3\xa9\": 2, \"b\": 3}, \"merges\": []}}";
    pb_tokenizer *tok = NULL;
    CHECK(pb_tokenizer_load_buffer(tj, sizeof tj - 1, "t.json", &tok) == PB_OK);
    /* two tokens, top 2: token 1 (lp -0.5; top 1, 0), token 2 (-inf; top 3, then 9 with 3's text ""...) */
    const pb_lp_pair lp[6] = {{1, -0.5f}, {1, -0.5f}, {0, -1.25f}, {2, -INFINITY}, {9, -0.125f}, {4, -3.0f}};
    pb_result one = {.text = "\"q\xc3\xa9", .len = 4, .finish = "length", .prompt_tokens = 1, .completion_tokens = 2,
                     .n_lp = 2, .lp = lp, .tok = tok};
    pb_jbuf b;
    pb_jbuf_init(&b);
    parse("{\"id\": 1, \"prompt\": \"Hi\", \"logprobs\": 2}", &r);
    pb_record_result_json(&b, &r, "m", &one);
    const char *want_native =
        "{\"id\": 1, \"text\": \"\\\"q\xc3\xa9\", \"finish_reason\": \"length\", \"prompt_tokens\": 1, "
        "\"completion_tokens\": 2, \"logprobs\": [{\"id\": 1, \"token\": \"\\\"q\", \"logprob\": -0.5, "
        "\"top_logprobs\": [{\"id\": 1, \"token\": \"\\\"q\", \"logprob\": -0.5}, {\"id\": 0, \"token\": \"a\", "
        "\"logprob\": -1.25}]}, {\"id\": 2, \"token\": \"\xc3\xa9\", \"logprob\": -9999.0, \"top_logprobs\": "
        "[{\"id\": 9, \"token\": \"\", \"logprob\": -0.125}, {\"id\": 4, \"token\": \"<eos>\", \"logprob\": -3}]}]}";
    CHECK(pb_jbuf_status(&b) == PB_OK);
    expect_in(b.data, want_native, "native logprobs");
    CHECK(strlen(b.data) == strlen(want_native));
    /* n = 2: each choice its own */
    pb_choice ch[2] = {{.text = "a", .len = 1, .finish = "length", .completion_tokens = 1, .n_lp = 1, .lp = lp},
                       {.text = "", .len = 0, .finish = "stop", .completion_tokens = 1, .n_lp = 1, .lp = lp + 3}};
    pb_result two = {.prompt_tokens = 1, .completion_tokens = 2, .n_choices = 2, .choices = ch, .tok = tok};
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &two);
    CHECK(strstr(b.data, "\"completion_tokens\": 1, \"logprobs\": [{\"id\": 1, \"token\": \"\\\"q\", "
                         "\"logprob\": -0.5, \"top_logprobs\": [{\"id\": 1,") &&
          strstr(b.data, "{\"index\": 1, \"text\": \"\", \"finish_reason\": \"stop\", \"completion_tokens\": 1, "
                         "\"logprobs\": [{\"id\": 2, \"token\": \"\xc3\xa9\", \"logprob\": -9999.0,"));
    pb_record_clear(&r);
    /* completions: columns; a top list's repeated text once (the likelier); offsets in code points */
    const pb_lp_pair lp3[9] = {{2, -0.5f}, {2, -0.5f}, {9, -1.0f}, {0, -0.75f}, {0, -0.75f}, {3, -2.0f},
                               {4, -0.0625f}, {4, -0.0625f}, {9, -5.0f}};
    pb_result three = {.text = "\xc3\xa9" "a", .len = 3, .finish = "stop", .prompt_tokens = 1, .completion_tokens = 3,
                       .n_lp = 3, .lp = lp3, .tok = tok};
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\", \"logprobs\": 2}}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &three);
    const char *want_cmpl =
        "\"choices\": [{\"index\": 0, \"text\": \"\xc3\xa9" "a\", \"logprobs\": {\"tokens\": [\"\xc3\xa9\", \"a\", "
        "\"<eos>\"], \"token_logprobs\": [-0.5, -0.75, -0.0625], \"top_logprobs\": [{\"\xc3\xa9\": -0.5, \"\": -1}, "
        "{\"a\": -0.75, \"b\": -2}, {\"<eos>\": -0.0625, \"\": -5}], \"text_offset\": [0, 1, 2]}, "
        "\"finish_reason\": \"stop\"}]";
    expect_in(b.data, want_cmpl, "completions logprobs");
    pb_record_clear(&r);
    /* top 0: top_logprobs null; a repeated text within one top list once */
    const pb_lp_pair lp4[3] = {{0, -0.5f}, {9, -0.75f}, {9, -0.875f}};
    pb_result four = {.text = "a", .len = 1, .finish = "length", .prompt_tokens = 1, .completion_tokens = 1,
                      .n_lp = 1, .lp = lp4, .tok = tok};
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\", \"logprobs\": 0}}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &four);
    CHECK(strstr(b.data, "\"logprobs\": {\"tokens\": [\"a\"], \"token_logprobs\": [-0.5], \"top_logprobs\": null, "
                         "\"text_offset\": [0]}"));
    pb_record_clear(&r);
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\", \"logprobs\": 2}}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &four);
    CHECK(strstr(b.data, "\"top_logprobs\": [{\"\": -0.75}]"));
    pb_record_clear(&r);
    /* chat: content with bytes */
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": "
          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"logprobs\": true, \"top_logprobs\": 2}}", &r);
    CHECK(!r.error && r.gs.logprobs && r.gs.top_logprobs == 2);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &one);
    const char *want_chat =
        "\"logprobs\": {\"content\": [{\"token\": \"\\\"q\", \"logprob\": -0.5, \"bytes\": [34, 113], "
        "\"top_logprobs\": [{\"token\": \"\\\"q\", \"logprob\": -0.5, \"bytes\": [34, 113]}, {\"token\": \"a\", \"logprob\": -1.25, "
        "\"bytes\": [97]}]}, {\"token\": \"\xc3\xa9\", \"logprob\": -9999.0, \"bytes\": [195, 169], \"top_logprobs\": "
        "[{\"token\": \"\", \"logprob\": -0.125, \"bytes\": []}, {\"token\": \"<eos>\", \"logprob\": -3, \"bytes\": "
        "[60, 101, 111, 115, 62]}]}]}, \"finish_reason\": \"length\"}";
    expect_in(b.data, want_chat, "chat logprobs");
    /* every line is JSON */
    cJSON *j = cJSON_Parse(b.data);
    CHECK(j != NULL);
    cJSON_Delete(j);
    pb_record_clear(&r);

    /* prompt_logprobs: 0..20; one entry a prompt token, the first null; native with ranks, completions per
     * choice in vLLM's {id: {logprob, rank, decoded_token}} (the token first, once), chat in the body */
    parse("{\"prompt\": \"Hi\", \"prompt_logprobs\": 0}", &r);
    CHECK(!r.error && r.gs.prompt_logprobs && r.gs.prompt_top == 0);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"Hi\", \"prompt_logprobs\": 21}", "field 'prompt_logprobs': 21 is out of range");
    expect_error("{\"prompt\": \"Hi\", \"prompt_logprobs\": true}", "field 'prompt_logprobs' must be a number");
    cli = (pb_gen_cli){.has_prompt_logprobs = true, .prompt_logprobs = 2};
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_OK && g.prompt_logprobs && g.prompt_top == 2);
    pb_gen_settings_clear(&g);
    cli.prompt_logprobs = -1;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_ERR_USAGE);
    /* two prompt tokens after the first: 3 ("b", rank 1; top 3, 0), 1 ("\"q", rank 7; top 0, 3) */
    const pb_lp_pair plp[6] = {{3, -0.5f}, {3, -0.5f}, {0, -1.5f}, {1, -6.0f}, {0, -0.25f}, {3, -2.0f}};
    const int32_t prank[2] = {1, 7};
    pb_result pr = {.text = "a", .len = 1, .finish = "length", .prompt_tokens = 3, .completion_tokens = 1,
                    .n_plp = 2, .plp = plp, .prank = prank, .tok = tok};
    parse("{\"id\": 2, \"prompt\": \"Hi\", \"prompt_logprobs\": 2}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &pr);
    const char *want_pn =
        "\"completion_tokens\": 1, \"prompt_logprobs\": [null, {\"id\": 3, \"token\": \"b\", \"logprob\": -0.5, "
        "\"rank\": 1, \"top_logprobs\": [{\"id\": 3, \"token\": \"b\", \"logprob\": -0.5}, {\"id\": 0, \"token\": "
        "\"a\", \"logprob\": -1.5}]}, {\"id\": 1, \"token\": \"\\\"q\", \"logprob\": -6, \"rank\": 7, "
        "\"top_logprobs\": [{\"id\": 0, \"token\": \"a\", \"logprob\": -0.25}, {\"id\": 3, \"token\": \"b\", "
        "\"logprob\": -2}]}]}";
    expect_in(b.data, want_pn, "native prompt_logprobs");
    pb_record_clear(&r);
    /* n = 2: once, after the choices */
    pb_result pr2 = {.prompt_tokens = 3, .completion_tokens = 2, .n_choices = 2, .choices = ch, .tok = tok,
                     .n_plp = 2, .plp = plp, .prank = prank};
    parse("{\"id\": 2, \"prompt\": \"Hi\", \"prompt_logprobs\": 2, \"n\": 2}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &pr2);
    const char *at_pl = strstr(b.data, "\"prompt_logprobs\"");
    CHECK(strstr(b.data, "], \"prompt_tokens\": 3, \"completion_tokens\": 2, \"prompt_logprobs\": [null, "
                         "{\"id\": 3,") &&
          at_pl && !strstr(at_pl + 1, "\"prompt_logprobs\""));
    pb_record_clear(&r);
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/completions\", "
          "\"body\": {\"prompt\": \"Hi\", \"prompt_logprobs\": 2, \"n\": 2}}", &r);
    pb_jbuf_reset(&b);
    pb_record_result_json(&b, &r, "m", &pr2);
    const char *want_pc =
        "\"prompt_logprobs\": [null, {\"3\": {\"logprob\": -0.5, \"rank\": 1, "
        "\"decoded_token\": \"b\"}, \"0\": {\"logprob\": -1.5, \"rank\": 2, \"decoded_token\": \"a\"}}, {\"1\": "
        "{\"logprob\": -6, \"rank\": 7, \"decoded_token\": \"\\\"q\"}, \"0\": {\"logprob\": -0.25, \"rank\": 1, "
        "\"decoded_token\": \"a\"}, \"3\": {\"logprob\": -2, \"rank\": 2, \"decoded_token\": \"b\"}}]}";
    at_pl = strstr(b.data, want_pc);
    if (!at_pl || !strstr(at_pl + 1, want_pc)) { /* in each choice */
        fprintf(stderr, "completions prompt_logprobs:\n%s\nexpected in it\n%s\n", b.data, want_pc);
        failures++;
    }
    pb_record_clear(&r);
    parse("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/chat/completions\", \"body\": "
          "{\"messages\": [{\"role\": \"user\", \"content\": \"Hi\"}], \"prompt_logprobs\": 0}}", &r);
    pb_jbuf_reset(&b);
    const pb_lp_pair plp0[2] = {{3, -0.5f}, {1, -6.0f}};
    pb_result pr3 = {.text = "a", .len = 1, .finish = "length", .prompt_tokens = 3, .completion_tokens = 1,
                     .n_plp = 2, .plp = plp0, .prank = prank, .tok = tok};
    pb_record_result_json(&b, &r, "m", &pr3);
    CHECK(strstr(b.data, "\"total_tokens\": 4}, \"prompt_logprobs\": [null, {\"3\": {\"logprob\": -0.5, \"rank\": 1, "
                         "\"decoded_token\": \"b\"}}, {\"1\": {\"logprob\": -6, \"rank\": 7, \"decoded_token\": "
                         "\"\\\"q\"}}]}}, \"error\": null}"));
    j = cJSON_Parse(b.data);
    CHECK(j != NULL);
    cJSON_Delete(j);
    pb_record_clear(&r);
    pb_jbuf_free(&b);
    pb_tokenizer_free(tok);
}

/* logit_bias and stop_token_ids: parsed, sorted, checked; deep copies */
static void test_bias(void)
{
    pb_record r, c;
    parse("{\"prompt\": \"Hi\", \"logit_bias\": {\"50\": -100, \"7\": 2.5, \"0\": 100}, "
          "\"stop_token_ids\": [9, 4, 9, 0]}", &r);
    CHECK(!r.error && r.gs.n_bias == 3 && r.gs.bias[0].id == 0 && r.gs.bias[0].bias == 100.0f && r.gs.bias[1].id == 7 &&
          r.gs.bias[1].bias == 2.5f && r.gs.bias[2].id == 50 && r.gs.n_stop_ids == 3 && r.gs.stop_ids[0] == 9 &&
          r.gs.stop_ids[1] == 4 && r.gs.stop_ids[2] == 0);
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.gs.bias != r.gs.bias && c.gs.n_bias == 3 && c.gs.bias[2].id == 50 &&
          c.gs.n_stop_ids == 3);
    pb_record_clear(&c);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"logit_bias\": {}, \"stop_token_ids\": [], \"stop\": \"x\"}", &r);
    CHECK(!r.error && r.gs.n_bias == 0 && !r.gs.bias && r.gs.n_stop_ids == 0 && r.gs.n_stops == 1);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": [1]}", "field 'logit_bias' must be an object");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"a\": 1}}", "key 'a' is not a token id");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"-3\": 1}}", "key '-3' is not a token id");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"1.5\": 1}}", "key '1.5' is not a token id");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"99999999999\": 1}}", "is not a token id");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"5\": 100.5}}", "bias of token 5 must be a number from -100");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"5\": \"1\"}}", "bias of token 5 must be a number");
    expect_error("{\"prompt\": \"Hi\", \"logit_bias\": {\"5\": 1, \"05\": 2}}", "token 5 given twice");
    expect_error("{\"prompt\": \"Hi\", \"stop_token_ids\": 5}", "field 'stop_token_ids' must be a list");
    /* allowed_token_ids: sorted, once each; not empty */
    parse("{\"prompt\": \"Hi\", \"allowed_token_ids\": [9, 3, 9, 0]}", &r);
    CHECK(!r.error && r.gs.n_allow == 3 && r.gs.allow[0] == 0 && r.gs.allow[1] == 3 && r.gs.allow[2] == 9);
    CHECK(pb_record_copy(&c, &r) == PB_OK && c.gs.allow != r.gs.allow && c.gs.n_allow == 3 && c.gs.allow[2] == 9);
    pb_record_clear(&c);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"Hi\", \"allowed_token_ids\": []}", "must be a list of 1 to 4096 token ids");
    expect_error("{\"prompt\": \"Hi\", \"allowed_token_ids\": [1, -1]}", "must be a list of token ids");
    expect_error("{\"prompt\": \"Hi\", \"allowed_token_ids\": 3}", "must be a list of 1 to 4096");
    /* include_stop_str_in_output, skip_special_tokens (default true), truncate_prompt_tokens (-1 or >= 1) */
    parse("{\"prompt\": \"Hi\"}", &r);
    CHECK(!r.error && !r.gs.include_stop && !r.gs.keep_special && r.gs.truncate == 0);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"include_stop_str_in_output\": true, \"skip_special_tokens\": false, "
          "\"truncate_prompt_tokens\": 7}", &r);
    CHECK(!r.error && r.gs.include_stop && r.gs.keep_special && r.gs.truncate == 7);
    pb_record_clear(&r);
    parse("{\"prompt\": \"Hi\", \"skip_special_tokens\": true, \"truncate_prompt_tokens\": -1}", &r);
    CHECK(!r.error && !r.gs.keep_special && r.gs.truncate == -1);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"Hi\", \"include_stop_str_in_output\": 1}", "'include_stop_str_in_output' must be");
    expect_error("{\"prompt\": \"Hi\", \"truncate_prompt_tokens\": 0}", "must be -1 (the context) or at least 1");
    expect_error("{\"prompt\": \"Hi\", \"truncate_prompt_tokens\": -2}", "out of range");
    expect_error("{\"prompt\": \"Hi\", \"stop_token_ids\": [-1]}", "field 'stop_token_ids' must be a list");
    expect_error("{\"prompt\": \"Hi\", \"stop_token_ids\": [\"5\"]}", "field 'stop_token_ids' must be a list");
    char line[8192];
    int at = snprintf(line, sizeof line, "{\"prompt\": \"Hi\", \"logit_bias\": {");
    for (int i = 0; i <= PB_MAX_LOGIT_BIAS; i++)
        at += snprintf(line + at, sizeof line - (size_t)at, "%s\"%d\": 1", i ? ", " : "", i);
    snprintf(line + at, sizeof line - (size_t)at, "}}");
    expect_error(line, "301 entries, at most 300");
    at = snprintf(line, sizeof line, "{\"prompt\": \"Hi\", \"stop_token_ids\": [");
    for (int i = 0; i <= PB_MAX_STOP_IDS; i++)
        at += snprintf(line + at, sizeof line - (size_t)at, "%s%d", i ? ", " : "", i);
    snprintf(line + at, sizeof line - (size_t)at, "]}");
    expect_error(line, "more than 64 ids");
}

/* OpenAI's list of several prompts: parsed, each taken into a record of its own, the line's answer joined */
static void test_prompt_list(void)
{
    pb_record r, a, b;
    parse("{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": [\"one\", \"\", \"three\"], "
          "\"n\": 2, \"echo\": true, \"stop\": [\"x\"]}}", &r);
    CHECK(!r.error && r.n_prompts == 3 && r.prompts && !r.prompt && !r.prompt_ids && r.prompt_index == 0);
    CHECK(r.prompts && !strcmp(r.prompts[0].text, "one") && r.prompts[1].len == 0 && r.prompts[2].len == 5);
    CHECK(pb_record_copy(&a, &r) == PB_OK && !a.prompts && a.n_prompts == 3 && a.gs.n_stops == 1);
    pb_record_clear(&a);
    CHECK(pb_record_take_prompt(&a, &r, 2) == PB_OK && a.prompt && !strcmp(a.prompt, "three") &&
          a.prompt_len == 5 && a.prompt_index == 2 && a.n_prompts == 3 && !a.prompts && a.gs.n == 2 &&
          a.gs.echo && a.gs.n_stops == 1 && a.gs.stops[0] != r.gs.stops[0] && !r.prompts[2].text);
    CHECK(pb_record_take_prompt(&b, &r, 0) == PB_OK && !strcmp(b.prompt, "one") && b.prompt_index == 0);
    /* prompt 0's choices first, then prompt 2's, indices 0..1 and 4..5, usage summed */
    pb_jbuf parts[2], line;
    pb_jbuf_init(&parts[0]);
    pb_jbuf_init(&parts[1]);
    pb_jbuf_init(&line);
    pb_choice c0[2] = {{.text = "A", .len = 1, .finish = "stop", .completion_tokens = 1},
                       {.text = "B", .len = 1, .finish = "length", .completion_tokens = 2}};
    pb_result res = {.prompt_tokens = 1, .completion_tokens = 3, .n_choices = 2, .choices = c0};
    pb_record_choices_json(&parts[0], &b, &res);
    res.prompt_tokens = 2;
    pb_record_choices_json(&parts[1], &a, &res);
    pb_record_joined_json(&line, &r, "m", parts, 2, 3, 6);
    CHECK(pb_jbuf_status(&line) == PB_OK);
    cJSON *o = cJSON_ParseWithLength(line.data, line.len);
    const cJSON *body = o ? cJSON_GetObjectItem(cJSON_GetObjectItem(o, "response"), "body") : NULL;
    const cJSON *chs = body ? cJSON_GetObjectItem(body, "choices") : NULL;
    CHECK(chs && cJSON_GetArraySize(chs) == 4);
    const int want_index[4] = {0, 1, 4, 5};
    const char *want_text[4] = {"oneA", "oneB", "threeA", "threeB"};
    for (int i = 0; chs && i < 4; i++) {
        const cJSON *c = cJSON_GetArrayItem(chs, i);
        CHECK(cJSON_GetObjectItem(c, "index")->valueint == want_index[i]);
        CHECK(!strcmp(cJSON_GetObjectItem(c, "text")->valuestring, want_text[i]));
    }
    const cJSON *u = body ? cJSON_GetObjectItem(body, "usage") : NULL;
    CHECK(u && cJSON_GetObjectItem(u, "prompt_tokens")->valueint == 3 &&
          cJSON_GetObjectItem(u, "completion_tokens")->valueint == 6 &&
          cJSON_GetObjectItem(u, "total_tokens")->valueint == 9);
    CHECK(o && !strcmp(cJSON_GetObjectItem(o, "custom_id")->valuestring, "c"));
    cJSON_Delete(o);
    pb_jbuf_free(&parts[0]);
    pb_jbuf_free(&parts[1]);
    pb_jbuf_free(&line);
    pb_record_clear(&a);
    pb_record_clear(&b);
    pb_record_clear(&r);
    CHECK(pb_record_take_prompt(&a, &r, 0) != PB_OK); /* a cleared record has none */

    parse("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [[1, 2], [3]]}}", &r);
    CHECK(!r.error && r.n_prompts == 2 && !r.prompts[0].text && r.prompts[0].n_ids == 2 && r.prompts[1].ids[0] == 3);
    CHECK(pb_record_take_prompt(&a, &r, 1) == PB_OK && !a.prompt && a.n_prompt_ids == 1 && a.prompt_ids[0] == 3);
    pb_record_clear(&a);
    pb_record_clear(&r);
    /* a list of one is one prompt, as before */
    parse("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [[1, 2]]}}", &r);
    CHECK(!r.error && r.n_prompts == 1 && !r.prompts && r.n_prompt_ids == 2);
    pb_record_clear(&r);
    expect_error("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [\"a\", [1]]}}",
                 "field 'body.prompt': prompt 1 is not a string, as prompt 0 is");
    expect_error("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [[1], \"a\"]}}",
                 "field 'body.prompt': prompt 1 is not a list of token ids, as prompt 0 is");
    expect_error("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [[1], [2, -1]]}}",
                 "field 'body.prompt' (prompt 1): item 1 is not a token id");
    expect_error("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [[1], []]}}",
                 "field 'body.prompt' (prompt 1) is an empty list");
    expect_error("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [\"a\", \"b\"], \"n\": 128, "
                 "\"echo\": 3}}", "field 'echo' must be true or false");
    char *big = malloc(8 * (PB_GEN_MAX_PROMPTS + 1) + 128);
    CHECK(big != NULL);
    if (big) {
        char *q = big + sprintf(big, "{\"url\": \"/v1/completions\", \"body\": {\"prompt\": [");
        for (int i = 0; i <= PB_GEN_MAX_PROMPTS; i++)
            q += sprintf(q, "%s\"p\"", i ? ", " : "");
        strcpy(q, "]}}");
        expect_error(big, "holds 2049 prompts; a record takes at most 2048");
        strcpy(q - 5, "]}}"); /* 2048 of them: taken */
        parse(big, &r);
        CHECK(!r.error && r.n_prompts == PB_GEN_MAX_PROMPTS);
        pb_record_clear(&r);
        /* prompts x n over 16 x 2048 choices */
        q = big + sprintf(big, "{\"url\": \"/v1/completions\", \"body\": {\"n\": 128, \"prompt\": [");
        for (int i = 0; i < 257; i++)
            q += sprintf(q, "%s\"p\"", i ? ", " : "");
        strcpy(q, "]}}");
        expect_error(big, "holds 257 prompts of n = 128 completions each; a record asks at most 32768");
        free(big);
    }
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": \"q\"}], \"prompt\": [\"a\", \"b\"]}",
                 "give 'prompt' or 'messages', not both");
}

/* use_beam_search: its width (n, or best_of), length_penalty, early_stopping; what it is not done with */
static void test_beam(void)
{
    pb_record r;
    parse("{\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 3, \"temperature\": 0.8, \"length_penalty\": 0.5, "
          "\"early_stopping\": \"never\"}", &r);
    CHECK(!r.error && r.gs.beams == 3 && r.gs.n == 3 && r.gs.length_penalty == 0.5f &&
          r.gs.early_stopping == PB_BEAM_EARLY_NEVER && r.gs.sample.temperature == 0.0f);
    pb_record_clear(&r);
    parse("{\"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 2, "
          "\"best_of\": 6, \"early_stopping\": true, \"min_tokens\": 2, \"stop_token_ids\": [5], \"echo\": true}}", &r);
    CHECK(!r.error && r.gs.beams == 6 && r.gs.n == 2 && r.gs.early_stopping == PB_BEAM_EARLY_TRUE &&
          r.gs.length_penalty == 1.0f);
    pb_record_clear(&r);
    parse("{\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 2, \"logprobs\": 3, \"prompt_logprobs\": 1}", &r);
    CHECK(!r.error && r.gs.beams == 2 && r.gs.logprobs && r.gs.top_logprobs == 3 && r.gs.prompt_logprobs);
    pb_record_clear(&r);
    /* one beam: greedy search (HF's num_beams=1), with whatever greedy search takes */
    parse("{\"prompt\": \"x\", \"use_beam_search\": true, \"temperature\": 1.0, \"stop\": \"y\"}", &r);
    CHECK(!r.error && r.gs.beams == 0 && r.gs.sample.temperature == 0.0f && r.gs.n_stops == 1);
    pb_record_clear(&r);
    parse("{\"prompt\": \"x\", \"use_beam_search\": false, \"best_of\": 1, \"length_penalty\": 1}", &r);
    CHECK(!r.error && r.gs.beams == 0);
    pb_record_clear(&r);
    parse("{\"prompt\": \"x\", \"length_penalty\": 1.0, \"early_stopping\": false}", &r); /* vLLM's defaults */
    CHECK(!r.error && r.gs.beams == 0);
    pb_record_clear(&r);
    expect_error("{\"prompt\": \"x\", \"length_penalty\": 0.5}", "field 'length_penalty' is for beam search");
    expect_error("{\"prompt\": \"x\", \"early_stopping\": true}", "field 'early_stopping' is for beam search");
    expect_error("{\"prompt\": \"x\", \"use_beam_search\": true, \"early_stopping\": \"soon\"}",
                 "field 'early_stopping' must be true, false or \"never\"");
    expect_error("{\"prompt\": \"x\", \"use_beam_search\": 1}", "field 'use_beam_search' must be true or false");
    expect_error("{\"prompt\": \"x\", \"best_of\": 3}", "field 'best_of' is not supported");
    expect_error("{\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 3, \"best_of\": 2}",
                 "field 'best_of' (2) is less than 'n' (3)");
    expect_error("{\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 11}", "use_beam_search: 11 beams; at most 10");
    expect_error("{\"prompt\": \"x\", \"use_beam_search\": true, \"best_of\": 11}", "field 'best_of'");
    static const char *const refused[][2] = {
        {"\"stop\": [\"a\"]", "stop strings"},
        {"\"guided_regex\": \"a+\"", "constrained decoding"},
        {"\"logit_bias\": {\"5\": 1}", "'logit_bias'"},
        {"\"allowed_token_ids\": [5, 6]", "'allowed_token_ids'"},
        {"\"bad_words\": [\"a\"]", "'bad_words'"},
        {"\"repetition_penalty\": 1.2", "a repetition penalty"},
        {"\"presence_penalty\": 0.5", "frequency and presence penalties"},
        {"\"logprobs\": 2, \"logprob_token_ids\": [5]", "'logprob_token_ids'"},
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        char line[256];
        snprintf(line, sizeof line, "{\"prompt\": \"x\", \"use_beam_search\": true, \"n\": 2, %s}", refused[i][0]);
        char want[128];
        snprintf(want, sizeof want, "beam search is not done with %s", refused[i][1]);
        expect_error(line, want);
    }

    /* by default: --beams, else generation_config.json's num_beams where it does not sample */
    pb_gen_cli cli = {0};
    cli.has_beams = true;
    cli.beams = 4;
    cli.n = 2;
    pb_gen_settings g;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_OK && g.beams == 4 && g.n == 2 && g.length_penalty == 1.0f);
    CHECK(parse_with("{\"prompt\": \"x\", \"temperature\": 0.9}", &g, &r) == PB_OK && !r.error && r.gs.beams == 4 &&
          r.gs.n == 2 && r.gs.sample.temperature == 0.0f);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"x\", \"use_beam_search\": false, \"temperature\": 0.9}", &g, &r) == PB_OK &&
          !r.error && r.gs.beams == 0 && r.gs.sample.temperature == 0.9f);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"x\", \"best_of\": 6, \"length_penalty\": 2}", &g, &r) == PB_OK && !r.error &&
          r.gs.beams == 6 && r.gs.length_penalty == 2.0f);
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"x\", \"n\": 5}", &g, &r) == PB_OK && r.error &&
          strstr(r.error, "beam search of 4 beams (--beams, generation_config.json) returns at most as many"));
    pb_record_clear(&r);
    CHECK(parse_with("{\"prompt\": \"x\", \"stop\": \".\"}", &g, &r) == PB_OK && r.error &&
          strstr(r.error, "beam search is not done with stop strings"));
    pb_record_clear(&r);
    pb_gen_settings_clear(&g);
    cli.n = 5;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_ERR_USAGE); /* more returned than beams */
    cli.n = 1;
    const char *stops[] = {"."};
    cli.n_stops = 1;
    cli.stops = stops;
    CHECK(pb_gen_settings_base(&cli, NULL, &g) == PB_ERR_USAGE);
    cli = (pb_gen_cli){0};
    pb_gen_defaults gd = {.has_num_beams = true, .num_beams = 3, .has_length_penalty = true, .length_penalty = 0.5f,
                          .has_early_stopping = true, .early_stopping = PB_BEAM_EARLY_TRUE};
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_OK && g.beams == 3 && g.length_penalty == 0.5f &&
          g.early_stopping == PB_BEAM_EARLY_TRUE);
    pb_gen_settings_clear(&g);
    cli.has_temperature = true; /* sampling asked for: no beams */
    cli.temperature = 0.7f;
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_OK && g.beams == 0);
    pb_gen_settings_clear(&g);
    cli = (pb_gen_cli){0};
    gd.has_do_sample = gd.do_sample = true; /* HF's beam sampling: not done, records sample */
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_OK && g.beams == 0);
    pb_gen_settings_clear(&g);
    gd.do_sample = false;
    gd.has_repetition_penalty = true; /* not done with beams: dropped with a warning */
    gd.repetition_penalty = 1.2f;
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_OK && g.beams == 0);
    pb_gen_settings_clear(&g);
    gd.has_repetition_penalty = false;
    gd.num_beams = 12;
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_ERR_CONFIG);
    cli.has_beams = true; /* --beams 1: greedy search, whatever the model's */
    cli.beams = 1;
    CHECK(pb_gen_settings_base(&cli, &gd, &g) == PB_OK && g.beams == 0);
    pb_gen_settings_clear(&g);
}

/* --task embed: inputs (native, OpenAI /v1/embeddings, lists), the embeddings' fields, their output shapes */
static void test_embed(void)
{
    pb_gen_cli cli = {.embed = true};
    pb_gen_settings eb;
    CHECK(pb_gen_settings_base(&cli, NULL, &eb) == PB_OK && eb.embed && eb.pooling == PB_POOL_LAST && eb.normalize);
    pb_gen_cli bad = {.embed = true, .has_temperature = true};
    pb_gen_settings x;
    CHECK(pb_gen_settings_base(&bad, NULL, &x) == PB_ERR_USAGE);
    pb_gen_cli pool = {.pooling = 1 + PB_POOL_MEAN};
    CHECK(pb_gen_settings_base(&pool, NULL, &x) == PB_ERR_USAGE); /* --pooling without --task embed */
    pb_gen_defaults st = {.has_st_modules = true, .st_pooling = PB_POOL_CLS};
    CHECK(pb_gen_settings_base(&cli, &st, &x) == PB_OK && x.pooling == PB_POOL_CLS && !x.normalize);
    pb_gen_settings_clear(&x);
    st.st_pooling = 3;
    CHECK(pb_gen_settings_base(&cli, &st, &x) == PB_ERR_CONFIG);
    pb_record r;
    CHECK(parse_with("{\"id\": \"a\", \"input\": \"Hi\", \"dimensions\": 3, \"normalize\": false, "
                     "\"encoding_format\": \"base64\", \"max_tokens\": 5}", &eb, &r) == PB_OK);
    CHECK(!r.error && r.gs.embed && r.prompt && !strcmp(r.prompt, "Hi") && r.gs.dimensions == 3 && !r.gs.normalize &&
          r.gs.emb_base64);
    /* output: native, then the OpenAI shape */
    const float v[3] = {0.5f, -0.25f, 1.0f};
    pb_result res = {.prompt_tokens = 2, .embedding = v, .dim = 3};
    pb_jbuf b;
    pb_jbuf_init(&b);
    pb_record_result_json(&b, &r, "m", &res);
    expect_in(b.data, "{\"id\": \"a\", \"embedding\": \"AAAAPwAAgL4AAIA/\", \"prompt_tokens\": 2}", "native base64");
    pb_record_clear(&r);
    CHECK(parse_with("{\"custom_id\": \"c\", \"method\": \"POST\", \"url\": \"/v1/embeddings\", \"body\": {\"model\": "
                     "\"m\", \"input\": [[1, 2], [3]]}}", &eb, &r) == PB_OK);
    CHECK(!r.error && r.openai && r.n_prompts == 2 && r.prompts[0].n_ids == 2 && r.prompts[1].ids[0] == 3);
    pb_record one[2];
    pb_jbuf part[2];
    for (int i = 0; i < 2; i++) {
        CHECK(pb_record_take_prompt(&one[i], &r, i) == PB_OK && one[i].gs.embed && one[i].prompt_index == i);
        pb_jbuf_init(&part[i]);
        pb_record_choices_json(&part[i], &one[i], &res);
    }
    pb_jbuf_reset(&b);
    pb_record_joined_json(&b, &one[1], "m", part, 2, 3, 0);
    expect_in(b.data, "{\"id\": \"batch_req_1\", \"custom_id\": \"c\", \"response\": {\"status_code\": 200, "
              "\"request_id\": \"req_1\", \"body\": {\"id\": \"embd-1\", \"object\": \"list\", \"data\": "
              "[{\"object\": \"embedding\", \"index\": 0, \"embedding\": [0.5, -0.25, 1.0]}, {\"object\": "
              "\"embedding\", \"index\": 1, \"embedding\": [0.5, -0.25, 1.0]}], \"model\": \"m\", "
              "\"usage\": {\"prompt_tokens\": 3, \"total_tokens\": 3}}}, \"error\": null}", "OpenAI list");
    for (int i = 0; i < 2; i++) {
        pb_jbuf_free(&part[i]);
        pb_record_clear(&one[i]);
    }
    pb_jbuf_free(&b);
    pb_record_clear(&r);
    static const struct { const char *line, *msg; } errs[] = {
        {"{\"input\": \"x\", \"dimensions\": 0}", "field 'dimensions': 0 is out of range"},
        {"{\"input\": \"x\", \"encoding_format\": \"int8\"}", "'encoding_format' must be \"float\" or \"base64\""},
        {"{\"input\": \"x\", \"prompt\": \"y\"}", "not both"},
        {"{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}", "this run embeds text"},
        {"{\"custom_id\": \"c\", \"url\": \"/v1/completions\", \"body\": {\"prompt\": \"x\"}}", "this run embeds"},
        {"{\"custom_id\": \"c\", \"url\": \"/v1/embeddings\", \"body\": {\"prompt\": \"x\"}}", "missing field 'body.input'"},
        {"{\"input\": 3}", "'input' must be a string or a list of token ids"},
    };
    for (size_t i = 0; i < sizeof errs / sizeof *errs; i++) {
        CHECK(parse_with(errs[i].line, &eb, &r) == PB_OK);
        if (!r.error || !strstr(r.error, errs[i].msg)) {
            fprintf(stderr, "%s: %s, expected %s\n", errs[i].line, r.error ? r.error : "accepted", errs[i].msg);
            failures++;
        }
        pb_record_clear(&r);
    }
    pb_gen_settings_clear(&eb);
}

int main(void)
{
    test_records();
    test_embed();
    test_output_shapes();
    test_choices();
    test_prompt_list();
    test_beam();
    test_unsupported();
    test_echo_ids();
    test_guided();
    test_logprobs();
    test_bias();
    test_jbuf();
    test_reader();
    if (failures)
        fprintf(stderr, "%d failures\n", failures);
    return failures ? 1 : 0;
}
