/* Bad input and API details: malformed tokenizer.json (each error names the
 * file and the JSON path), truncated files, ids out of range, invalid UTF-8
 * (ids of the U+FFFD-repaired text, as HF encodes it: invalid.jsonl.zst),
 * token lookups, stop strings across tokens, concurrent encodes. Meant to
 * run under ASan/UBSan too: nothing here may crash. */
#include "config.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/util.h"
#include "tok/tok_internal.h"
#include "tok/tokenizer.h"
#include "../check.h"


static char datadir[4096];

/* A tiny valid BPE tokenizer with the given extra top-level members. */
static char *tiny(const char *model_extra, const char *rest)
{
    char *s = malloc(8192);
    snprintf(s, 8192,
             "{\"added_tokens\": [{\"id\": 5, \"content\": \"<eos>\", \"special\": true}],"
             " \"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 1, \"ab\": 2, \"c\": 3, \"abc\": 4}"
             "%s}%s%s}",
             model_extra, rest[0] ? ", " : "", rest);
    return s;
}

static void expect_load_error(const char *what, const char *json, const char *needle1, const char *needle2)
{
    pb_tokenizer *tok = NULL;
    pb_status st = pb_tokenizer_load_buffer(json, strlen(json), "t.json", &tok);
    CHECK(st != PB_OK && tok == NULL, "%s: loaded", what);
    const char *e = pb_last_error();
    CHECK(strstr(e, "t.json") != NULL, "%s: error does not name the file: %s", what, e);
    CHECK(!needle1 || strstr(e, needle1), "%s: error lacks '%s': %s", what, needle1, e);
    CHECK(!needle2 || strstr(e, needle2), "%s: error lacks '%s': %s", what, needle2, e);
    pb_tokenizer_free(tok);
}

static void test_bad_json(void)
{
    const char *merges = ", \"merges\": [\"a b\", [\"ab\", \"c\"]]";
    char *ok = tiny(merges, "");
    pb_tokenizer *tok;
    CHECK(pb_tokenizer_load_buffer(ok, strlen(ok), "t.json", &tok) == PB_OK, "tiny: %s", pb_last_error());
    if (tok) {
        int32_t *ids;
        size_t n;
        CHECK(pb_tokenizer_encode(tok, "abcab<eos>", 10, true, &ids, &n) == PB_OK, "tiny encode");
        CHECK(n == 3 && ids[0] == 4 && ids[1] == 2 && ids[2] == 5, "tiny ids (n=%zu)", n);
        free(ids);
        CHECK(pb_tokenizer_vocab_size(tok) == 6, "tiny vocab size");
        pb_tokenizer_free(tok);
    }

    /* every prefix of a valid file: an error, never a crash */
    size_t len = strlen(ok);
    for (size_t k = 0; k < len; k++) {
        tok = NULL;
        pb_status st = pb_tokenizer_load_buffer(ok, k, "t.json", &tok);
        CHECK(st != PB_OK || tok, "prefix %zu", k);
        pb_tokenizer_free(tok);
    }
    free(ok);

    expect_load_error("invalid JSON", "{\"model\": ", "invalid JSON", NULL);
    expect_load_error("not an object", "[1, 2]", "object", NULL);
    char *s;
    s = tiny("", "");
    expect_load_error("missing merges", s, "model.merges", "missing");
    free(s);
    s = tiny(", \"merges\": [\"a x\"]", "");
    expect_load_error("merge with unknown token", s, "merge 0", "'x'");
    free(s);
    s = tiny(", \"merges\": [\"b c\"]", "");
    expect_load_error("merged token absent", s, "merge 0", "'bc'");
    free(s);
    s = tiny(", \"merges\": [\"abc\"]", "");
    expect_load_error("merge without space", s, "merge 0", NULL);
    free(s);
    expect_load_error("missing vocab", "{\"model\": {\"type\": \"BPE\", \"merges\": []}}", "model.vocab", NULL);
    expect_load_error("missing model", "{\"normalizer\": null}", "model", NULL);
    expect_load_error("other model", "{\"model\": {\"type\": \"Unigram\", \"vocab\": []}}", "Unigram", "BPE");
    expect_load_error("bad id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -3}, \"merges\": []}}",
                      "model.vocab", "token id");
    /* an id past 2^24 - 1: its tables would be that many entries (found by the fuzzer: 12 GB for 1.5e9) */
    expect_load_error("huge id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1500000000}, \"merges\": []}}",
                      "model.vocab", "[0, 16777215]");
    expect_load_error("huge added id", "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0}, \"merges\": []}, "
                      "\"added_tokens\": [{\"id\": 16777216, \"content\": \"<x>\"}]}", "added_tokens[0]", "16777215");
    s = tiny(", \"merges\": []", "\"normalizer\": {\"type\": \"Bogus\"}");
    expect_load_error("unknown normalizer", s, "normalizer", "'Bogus'");
    free(s);
    s = tiny(", \"merges\": []", "\"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": "
             "[{\"type\": \"ByteLevel\"}, {\"type\": \"Nope\"}]}");
    expect_load_error("unknown pre-tokenizer in a sequence", s, "pre_tokenizer.pretokenizers[1]", "'Nope'");
    free(s);
    s = tiny(", \"merges\": []", "\"decoder\": {\"type\": \"Sequence\", \"decoders\": [{\"type\": \"CTC\"}]}");
    expect_load_error("unknown decoder", s, "decoder.decoders[0]", "'CTC'");
    free(s);
    s = tiny(", \"merges\": []", "\"post_processor\": {\"type\": \"Weird\"}");
    expect_load_error("unknown post-processor", s, "post_processor", "'Weird'");
    free(s);
    s = tiny(", \"merges\": []", "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, "
             "\"behavior\": \"Isolated\"}");
    expect_load_error("bad regex", s, "pre_tokenizer", "regex");
    free(s);
    s = tiny(", \"merges\": []", "\"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"String\": \" \"}, "
             "\"behavior\": \"Sideways\"}");
    expect_load_error("bad behavior", s, "pre_tokenizer", "Sideways");
    free(s);
    s = tiny(", \"merges\": []", "\"post_processor\": {\"type\": \"TemplateProcessing\", \"single\": "
             "[{\"SpecialToken\": {\"id\": \"<x>\", \"type_id\": 0}}, {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],"
             " \"special_tokens\": {}}");
    expect_load_error("template with unknown special", s, "post_processor", "<x>");
    free(s);
    s = tiny(", \"merges\": [], \"dropout\": 0.1", "");
    expect_load_error("dropout", s, "dropout", NULL);
    free(s);
    expect_load_error("added token without id",
                      "{\"added_tokens\": [{\"content\": \"x\"}], \"model\": {\"vocab\": {}, \"merges\": []}}",
                      "added_tokens[0]", "id");
    expect_load_error("bad zstd", "\x28\xb5\x2f\xfd\x00\x00garbage", "zstd", NULL);

    /* unk_token named but absent: loads (as HF), fails when needed */
    s = tiny(", \"merges\": [], \"unk_token\": \"<unk>\"", "");
    CHECK(pb_tokenizer_load_buffer(s, strlen(s), "t.json", &tok) == PB_OK, "unk absent: %s", pb_last_error());
    if (tok) {
        int32_t *ids;
        size_t n;
        CHECK(pb_tokenizer_encode(tok, "ab", 2, false, &ids, &n) == PB_OK, "unk absent, known chars");
        free(ids);
        CHECK(pb_tokenizer_encode(tok, "az", 2, false, &ids, &n) != PB_OK &&
              strstr(pb_last_error(), "<unk>"), "unk absent, unknown char: %s", pb_last_error());
        pb_tokenizer_free(tok);
    }
    free(s);
}

static void test_truncated_real(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/llama2.json.zst", datadir);
    char *buf = NULL;
    size_t len;
    CHECK(pb_read_file(path, 1u << 30, &buf, &len) == PB_OK, "read %s", path);
    if (!buf)
        return;
    size_t cuts[] = {4, 100, len / 3, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
        pb_tokenizer *tok = NULL;
        CHECK(pb_tokenizer_load_buffer(buf, cuts[i], "cut.zst", &tok) != PB_OK, "truncated at %zu loaded", cuts[i]);
        pb_tokenizer_free(tok);
    }
    free(buf);
    pb_tokenizer *tok = NULL;
    CHECK(pb_tokenizer_load("/nonexistent/tokenizer.json", &tok) != PB_OK &&
          strstr(pb_last_error(), "/nonexistent/tokenizer.json"), "missing file: %s", pb_last_error());
}

static pb_tokenizer *load(const char *name)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s.json.zst", datadir, name);
    pb_tokenizer *tok = NULL;
    if (pb_tokenizer_load(path, &tok) != PB_OK)
        CHECK(0, "load %s: %s", name, pb_last_error());
    return tok;
}

static void test_lookups_and_decode_errors(void)
{
    pb_tokenizer *g = load("gpt2"), *l3 = load("llama3"), *l2 = load("llama2");
    if (!g || !l3 || !l2)
        goto out;
    CHECK(pb_tokenizer_vocab_size(g) == 50257, "gpt2 vocab %d", pb_tokenizer_vocab_size(g));
    CHECK(pb_tokenizer_vocab_size(l3) == 128256, "llama3 vocab %d", pb_tokenizer_vocab_size(l3));
    CHECK(pb_tokenizer_vocab_size(l2) == 32000, "llama2 vocab %d", pb_tokenizer_vocab_size(l2));
    CHECK(pb_tokenizer_token_to_id(g, "<|endoftext|>") == 50256, "eot id");
    CHECK(pb_tokenizer_token_to_id(g, "Hello") == 15496, "Hello id");
    CHECK(pb_tokenizer_token_to_id(g, "no-such-token-here") == -1, "absent id");
    CHECK(pb_tokenizer_is_special(g, 50256) && !pb_tokenizer_is_special(g, 15496), "is_special");
    CHECK(pb_tokenizer_is_special(l3, 128009) && pb_tokenizer_token_to_id(l3, "<|eot_id|>") == 128009, "eot_id");
    CHECK(pb_tokenizer_is_special(l2, 1) && pb_tokenizer_is_special(l2, 2), "llama2 <s> </s>");
    CHECK(!pb_tokenizer_is_special(g, -1) && !pb_tokenizer_is_special(g, 1 << 30), "is_special range");
    CHECK(strcmp(pb_tokenizer_id_to_token(g, 15496), "Hello") == 0 && !pb_tokenizer_id_to_token(g, 50257),
          "id_to_token");

    /* ids past the tokenizer (padded model vocabulary rows) decode to nothing, as HF's decode */
    int32_t bad[] = {15496, 50257};
    char *t;
    size_t tl;
    CHECK(pb_tokenizer_decode(g, bad, 2, false, &t, &tl) == PB_OK && strcmp(t, "Hello") == 0,
          "decode past the vocabulary: %s", pb_last_error());
    free(t);
    int32_t bad2[] = {INT32_MAX, 15496, 50257, 50300, 15496};
    CHECK(pb_tokenizer_decode(g, bad2, 5, true, &t, &tl) == PB_OK && strcmp(t, "HelloHello") == 0,
          "decode past the vocabulary, skip special");
    free(t);
    t = NULL;
    int32_t l2ids[] = {1, 415, 32000, 5565, 32005};   /* <s> ▁The <pad row> ▁capital <pad row> (HF: "<s> The capital") */
    CHECK(pb_tokenizer_decode(l2, l2ids, 5, false, &t, &tl) == PB_OK && strcmp(t, "<s> The capital") == 0,
          "llama2 decode past the vocabulary: '%s'", t ? t : "");
    free(t);
    int32_t neg[] = {-1};
    CHECK(pb_tokenizer_decode(l2, neg, 1, false, &t, &tl) == PB_ERR_INPUT &&
          strstr(pb_last_error(), "negative"), "decode negative");
    CHECK(pb_tokenizer_decode(g, NULL, 0, false, &t, &tl) == PB_OK && tl == 0 && t[0] == '\0', "decode empty");
    free(t);
    int32_t sp[] = {50256, 15496, 50256};
    CHECK(pb_tokenizer_decode(g, sp, 3, true, &t, &tl) == PB_OK && strcmp(t, "Hello") == 0, "skip special");
    free(t);

    /* the detokenizer validates ids too */
    pb_detok *d;
    const char *nt;
    size_t nl;
    CHECK(pb_detok_create(g, neg, 1, &d) == PB_ERR_INPUT, "detok create with a negative id");
    CHECK(pb_detok_create(g, bad, 2, &d) == PB_OK, "detok create with an id past the vocabulary");
    pb_detok_free(d);
    CHECK(pb_detok_create(g, sp, 1, &d) == PB_OK, "detok create");
    if (d) {
        /* an unknown id is generated text of length 0; what follows is released as usual */
        CHECK(pb_detok_push(d, 99999999, &nt, &nl) == PB_OK && nl == 0, "detok push unknown id");
        CHECK(pb_detok_push(d, 15496, &nt, &nl) == PB_OK && nl == 5 && memcmp(nt, "Hello", 5) == 0,
              "detok push after an unknown id");
        CHECK(pb_detok_push(d, 50257, &nt, &nl) == PB_OK && nl == 0, "detok push unknown id 2");
        CHECK(pb_detok_push(d, -3, &nt, &nl) == PB_ERR_INPUT && nl == 0, "detok push negative id");
        CHECK(pb_detok_finish(d, &nt, &nl) == PB_OK, "detok finish");
        size_t tlen;
        const char *all = pb_detok_text(d, &tlen);
        CHECK(tlen == 5 && memcmp(all, "Hello", 5) == 0, "detok text");
        pb_detok_free(d);
    }

    /* Llama-2: decode(prompt) + text == decode(all) where the completion alone would lose its space */
    const char *prompt = "The capital of France is";
    int32_t *pids, *cids;
    size_t pn, cn;
    CHECK(pb_tokenizer_encode(l2, prompt, strlen(prompt), true, &pids, &pn) == PB_OK, "encode prompt");
    CHECK(pb_tokenizer_encode(l2, " Paris. STOP now", 16, false, &cids, &cn) == PB_OK, "encode completion");
    CHECK(pb_detok_create(l2, pids, pn, &d) == PB_OK, "detok create llama2");
    if (d) {
        const char *stops[] = {"ST", "Paris.", "OP n"};
        bool stopped = false;
        for (size_t i = 1; i < cn; i++) {   /* skip the "▁" the separate encode prepends */
            CHECK(pb_detok_push(d, cids[i], &nt, &nl) == PB_OK, "push");
            size_t at;
            int which;
            if (!stopped && pb_detok_find_stop(d, stops + 2, 1, nl, &at, &which)) {
                size_t all;
                const char *txt = pb_detok_text(d, &all);
                CHECK(which == 0 && strncmp(txt + at, "OP n", 4) == 0, "stop across tokens at %zu", at);
                stopped = true;
            }
        }
        CHECK(stopped, "stop string 'OP n' (spans tokens) found");
        CHECK(pb_detok_finish(d, &nt, &nl) == PB_OK, "finish");
        size_t all;
        const char *txt = pb_detok_text(d, &all);
        CHECK(strcmp(txt, " Paris. STOP now") == 0, "llama2 streamed text '%s'", txt);
        size_t at;
        int which;
        CHECK(pb_detok_find_stop(d, stops, 3, all, &at, &which) && at == 1 && which == 1,
              "earliest stop: at=%zu which=%d", at, which);
        pb_detok_free(d);
    }
    free(pids);
    free(cids);
out:
    pb_tokenizer_free(g);
    pb_tokenizer_free(l3);
    pb_tokenizer_free(l2);
}

static void test_invalid_utf8(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/invalid.jsonl.zst", datadir);
    char *buf = NULL;
    size_t len;
    CHECK(tk_read_maybe_zstd(path, &buf, &len) == PB_OK, "read %s", path);
    if (!buf)
        return;
    pb_tokenizer *cache_tok = NULL;
    char cache_name[64] = "";
    size_t n_checked = 0;
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *tn = cJSON_GetObjectItem(j, "tok"), *hx = cJSON_GetObjectItem(j, "hex"),
                    *want = cJSON_GetObjectItem(j, "ids");
        if (!cJSON_IsString(tn) || !cJSON_IsString(hx) || !cJSON_IsArray(want)) {
            CHECK(0, "bad fixture line");
            cJSON_Delete(j);
            continue;
        }
        if (strcmp(cache_name, tn->valuestring) != 0) {
            pb_tokenizer_free(cache_tok);
            cache_tok = load(tn->valuestring);
            snprintf(cache_name, sizeof cache_name, "%s", tn->valuestring);
        }
        size_t hl = strlen(hx->valuestring) / 2;
        char bytes[256];
        for (size_t i = 0; i < hl && i < sizeof bytes; i++) {
            unsigned v;
            sscanf(hx->valuestring + 2 * i, "%2x", &v);
            bytes[i] = (char)v;
        }
        int32_t *ids;
        size_t n;
        if (cache_tok && pb_tokenizer_encode(cache_tok, bytes, hl, true, &ids, &n) == PB_OK) {
            bool eq = (size_t)cJSON_GetArraySize(want) == n;
            for (size_t i = 0; eq && i < n; i++)
                eq = (int32_t)cJSON_GetArrayItem(want, (int)i)->valuedouble == ids[i];
            CHECK(eq, "%s: invalid UTF-8 %s: ids differ from HF's for the repaired text", cache_name,
                  hx->valuestring);
            free(ids);
            n_checked++;
        } else
            CHECK(0, "%s: encode of invalid UTF-8 failed", cache_name);
        cJSON_Delete(j);
    }
    CHECK(n_checked >= 100, "only %zu invalid-UTF-8 cases", n_checked);
    pb_tokenizer_free(cache_tok);
    free(buf);
}

typedef struct job {
    const pb_tokenizer *tok;
    int ok;
} job;

static void *worker(void *arg)
{
    job *jb = arg;
    const char *texts[] = {"Hello world, this is thread-safe.", "Les élèves étudient à l'école.",
                           "数字 1234567 and emoji 👩‍💻"};
    int32_t *first[3] = {0};
    size_t nfirst[3] = {0};
    jb->ok = 1;
    for (int r = 0; r < 300; r++) {
        for (int k = 0; k < 3; k++) {
            int32_t *ids;
            size_t n;
            if (pb_tokenizer_encode(jb->tok, texts[k], strlen(texts[k]), true, &ids, &n) != PB_OK) {
                jb->ok = 0;
                continue;
            }
            if (!first[k]) {
                first[k] = ids;
                nfirst[k] = n;
                continue;
            }
            if (n != nfirst[k] || memcmp(ids, first[k], n * sizeof *ids) != 0)
                jb->ok = 0;
            free(ids);
        }
    }
    for (int k = 0; k < 3; k++)
        free(first[k]);
    return NULL;
}

static void test_threads(void)
{
    pb_tokenizer *tok = load("llama3");
    if (!tok)
        return;
    pthread_t th[3];
    job jobs[3];
    for (int i = 0; i < 3; i++) {
        jobs[i] = (job){tok, 0};
        pthread_create(&th[i], NULL, worker, &jobs[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK(jobs[i].ok, "thread %d saw different ids", i);
    }
    pb_tokenizer_free(tok);
}

/* Deterministic mutations of a real small tokenizer.json: load must either
 * fail cleanly or give a tokenizer that encodes and decodes without crashing. */
static void test_mutations(void)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/small-nfkc-digits.json.zst", datadir);
    char *orig = NULL;
    size_t len;
    CHECK(tk_read_maybe_zstd(path, &orig, &len) == PB_OK, "read %s", path);
    if (!orig)
        return;
    char *buf = malloc(len + 1);
    uint64_t x = 0x9E3779B97F4A7C15ull;
    const char junk[] = "{}[]\",:0123456789-e.\\u\xff\xc3 abtnrfl";
    int loaded = 0;
    for (int m = 0; m < 200; m++) {
        memcpy(buf, orig, len + 1);
        int edits = 1 + m % 4;
        for (int e = 0; e < edits; e++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            /* mutations near the structure (the head holds every component) */
            size_t at = (m % 2 ? (x >> 8) % (len < 4000 ? len : 4000) : (x >> 8) % len);
            buf[at] = junk[(x >> 40) % (sizeof junk - 1)];
        }
        pb_tokenizer *tok = NULL;
        if (pb_tokenizer_load_buffer(buf, len, "mut.json", &tok) == PB_OK) {
            loaded++;
            const char *t = "Hello <bos> world 123 caf\xc3\xa9 hello world [MARK] cat";
            int32_t *ids;
            size_t n;
            if (pb_tokenizer_encode(tok, t, strlen(t), true, &ids, &n) == PB_OK) {
                char *d;
                size_t dl;
                if (pb_tokenizer_decode(tok, ids, n, false, &d, &dl) == PB_OK)
                    free(d);
                free(ids);
            }
        } else
            CHECK(strstr(pb_last_error(), "mut.json") != NULL, "mutation %d: error without the file name: %s", m,
                  pb_last_error());
        pb_tokenizer_free(tok);
    }
    printf("mutations: %d of 200 still loaded\n", loaded);
    free(buf);
    free(orig);
}

/* A very long word (one BPE word of 200,000 characters) and NUL bytes. */
static void test_long_and_nul(void)
{
    pb_tokenizer *g = load("gpt2"), *l2 = load("llama2");
    size_t n = 200000;
    char *w = malloc(n);
    for (size_t i = 0; i < n; i++)
        w[i] = "abcab"[i % 5];
    const pb_tokenizer *toks[] = {g, l2};
    for (int k = 0; k < 2; k++) {
        if (!toks[k])
            continue;
        int32_t *ids;
        size_t ni;
        char *d;
        size_t dl;
        CHECK(pb_tokenizer_encode(toks[k], w, n, false, &ids, &ni) == PB_OK && ni > 0, "long word");
        CHECK(pb_tokenizer_decode(toks[k], ids, ni, false, &d, &dl) == PB_OK &&
              dl == n && memcmp(d, w, n) == 0, "long word round trip");
        free(ids);
        free(d);
    }
    if (g) {
        int32_t *ids;
        size_t ni;
        CHECK(pb_tokenizer_encode(g, "a\0b", 3, false, &ids, &ni) == PB_OK && ni == 3 && ids[1] == 188,
              "NUL byte encodes as its byte-level token");
        free(ids);
    }
    free(w);
    pb_tokenizer_free(g);
    pb_tokenizer_free(l2);
}

int main(void)
{
    const char *td = getenv("PB_TESTDATA");
    snprintf(datadir, sizeof datadir, "%s/tokenizers", td ? td : "tests/data");
    test_bad_json();
    test_truncated_real();
    test_lookups_and_decode_errors();
    test_invalid_utf8();
    test_threads();
    test_mutations();
    test_long_and_nul();
    if (check_failures)
        fprintf(stderr, "%d failure(s)\n", check_failures);
    else
        printf("ok\n");
    return check_failures ? 1 : 0;
}
