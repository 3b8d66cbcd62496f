/* Parity with HF `tokenizers` on the committed corpus: for each tokenizer,
 * encode with and without special tokens, decode with and without skipping
 * special tokens, and stream-detokenize (prompt split at varying points)
 * must give exactly the fixture's values (tests/tok/make-fixtures.py).
 * Usage: test_parity [NAME...]   (default: every tokenizer with fixtures) */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/util.h"
#include "tok/tok_internal.h"
#include "tok/tokenizer.h"

static const char *const ALL[] = {"gpt2", "llama2", "llama3", "small-nfkc-digits",
                                  "small-metaspace-fallback", "small-bert", "small-strip-split",
                                  "small-ws-fallback", "small-split-bytelevel",
                                  "small-bloom-split", "small-qwen2-style"};

static char *read_zst(const char *path, size_t *len)
{
    char *out;
    if (tk_read_maybe_zstd(path, &out, len) != PB_OK) {
        fprintf(stderr, "%s\n", pb_last_error());
        return NULL;
    }
    return out;
}

/* Split a buffer into lines in place ('\n' only: texts hold U+2028 raw). */
static size_t split_lines(char *buf, size_t len, char ***lines)
{
    size_t n = 0, cap = 1024;
    char **v = malloc(cap * sizeof *v);
    char *p = buf, *end = buf + len;
    while (v && p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl)
            nl = end;
        *nl = '\0';
        if (n == cap) {
            cap *= 2;
            char **nv = realloc(v, cap * sizeof *v);
            if (!nv) { free(v); v = NULL; break; }
            v = nv;
        }
        if (nl > p)
            v[n++] = p;
        p = nl + 1;
    }
    *lines = v;
    return v ? n : 0;
}

static bool ids_equal(const int32_t *a, size_t na, const cJSON *arr)
{
    if (!cJSON_IsArray(arr) || (size_t)cJSON_GetArraySize(arr) != na)
        return false;
    size_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e) || (int32_t)e->valuedouble != a[i++])
            return false;
    }
    return true;
}

static size_t get_ids(const cJSON *arr, int32_t **out)
{
    size_t n = (size_t)cJSON_GetArraySize(arr), i = 0;
    *out = malloc((n ? n : 1) * sizeof **out);
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) (*out)[i++] = (int32_t)e->valuedouble;
    return n;
}

static void show_ids(const char *what, const int32_t *ids, size_t n)
{
    fprintf(stderr, "    %s:", what);
    for (size_t i = 0; i < n && i < 40; i++)
        fprintf(stderr, " %d", (int)ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

static int fails;

static void fail(const char *name, size_t line, const char *text, const char *what)
{
    if (++fails <= 30)
        fprintf(stderr, "FAIL %s line %zu (%s): text=\"%.120s\"\n", name, line, what, text);
}

static int check_tokenizer(const char *dir, const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s.json.zst", dir, name);
    pb_tokenizer *tok;
    if (pb_tokenizer_load(path, &tok) != PB_OK) {
        fprintf(stderr, "FAIL load %s: %s\n", name, pb_last_error());
        return 1;
    }
    size_t clen, elen;
    snprintf(path, sizeof path, "%s/corpus.jsonl.zst", dir);
    char *cbuf = read_zst(path, &clen);
    snprintf(path, sizeof path, "%s/expected-%s.jsonl.zst", dir, name);
    char *ebuf = read_zst(path, &elen);
    if (!cbuf || !ebuf) {
        free(cbuf);
        free(ebuf);
        pb_tokenizer_free(tok);
        return 1;
    }
    char **cl, **el;
    size_t nc = split_lines(cbuf, clen, &cl), ne = split_lines(ebuf, elen, &el);
    int before = fails;
    size_t n_ids = 0, n_stream = 0, n_stream_skipped = 0;
    if (nc != ne || nc < 2000) {
        fprintf(stderr, "FAIL %s: %zu corpus lines, %zu expected lines\n", name, nc, ne);
        fails++;
    }
    for (size_t i = 0; i < nc && i < ne; i++) {
        cJSON *c = cJSON_Parse(cl[i]), *e = cJSON_Parse(el[i]);
        const cJSON *t = cJSON_GetObjectItem(c, "text");
        if (!cJSON_IsString(t) || !e) {
            fail(name, i + 1, "?", "fixture line does not parse");
            cJSON_Delete(c);
            cJSON_Delete(e);
            continue;
        }
        const char *text = t->valuestring;
        int32_t *ids;
        size_t n;
        for (int sp = 0; sp < 2; sp++) {
            const cJSON *want = cJSON_GetObjectItem(e, sp ? "sp" : "ids");
            if (pb_tokenizer_encode(tok, text, strlen(text), sp, &ids, &n) != PB_OK) {
                fail(name, i + 1, text, pb_last_error());
                continue;
            }
            n_ids += n;
            if (!ids_equal(ids, n, want)) {
                fail(name, i + 1, text, sp ? "encode" : "encode add_special_tokens=False");
                if (fails <= 30) {
                    int32_t *w;
                    size_t nw = get_ids(want, &w);
                    show_ids("want", w, nw);
                    show_ids("got ", ids, n);
                    free(w);
                }
            }
            free(ids);
        }
        /* decode the expected ids */
        const cJSON *sp_arr = cJSON_GetObjectItem(e, "sp");
        n = get_ids(sp_arr, &ids);
        for (int skip = 0; skip < 2; skip++) {
            const cJSON *want = cJSON_GetObjectItem(e, skip ? "skip" : "dec");
            char *txt;
            size_t tl;
            if (pb_tokenizer_decode(tok, ids, n, skip, &txt, &tl) != PB_OK) {
                fail(name, i + 1, text, pb_last_error());
                continue;
            }
            if (!cJSON_IsString(want) || strlen(want->valuestring) != tl ||
                memcmp(want->valuestring, txt, tl) != 0) {
                fail(name, i + 1, text, skip ? "decode skip_special" : "decode");
                if (fails <= 30)
                    fprintf(stderr, "    want \"%.200s\"\n    got  \"%.200s\"\n",
                            cJSON_IsString(want) ? want->valuestring : "?", txt);
            }
            free(txt);
        }
        /* streaming: prompt = first k ids */
        if (n > 0) {
            /* split point: moved left until the prompt ends on a whole character */
            size_t k = (i * 7) % (n + 1);
            char *whole = NULL, *pre = NULL;
            size_t wl, pl;
            bool ok_dec = pb_tokenizer_decode(tok, ids, n, false, &whole, &wl) == PB_OK;
            for (;;) {
                ok_dec = ok_dec && pb_tokenizer_decode(tok, ids, k, false, &pre, &pl) == PB_OK;
                if (!ok_dec || k == 0 || !(pl >= 3 && memcmp(pre + pl - 3, "\xEF\xBF\xBD", 3) == 0))
                    break;
                free(pre);
                pre = NULL;
                k--;
            }
            if (ok_dec) {
                bool pre_whole = !(pl >= 3 && memcmp(pre + pl - 3, "\xEF\xBF\xBD", 3) == 0);
                if (pre_whole && pl <= wl && memcmp(whole, pre, pl) == 0) {
                    pb_detok *d;
                    if (pb_detok_create(tok, ids, k, &d) != PB_OK) {
                        fail(name, i + 1, text, "detok create");
                    } else {
                        const char *nt;
                        size_t nl;
                        bool ok = true;
                        for (size_t j = k; j < n && ok; j++) {
                            ok = pb_detok_push(d, ids[j], &nt, &nl) == PB_OK;
                            if (ok && !tk_utf8_valid(nt, nl))
                                ok = false;
                            /* released text never ends inside a character */
                            if (ok && nl >= 3 && memcmp(nt + nl - 3, "\xEF\xBF\xBD", 3) == 0 &&
                                !(wl >= 3 && strstr(whole, "\xEF\xBF\xBD")))
                                ok = false;
                        }
                        ok = ok && pb_detok_finish(d, &nt, &nl) == PB_OK;
                        size_t dl;
                        const char *dt = pb_detok_text(d, &dl);
                        if (!ok || pl + dl != wl || memcmp(whole + pl, dt, dl) != 0) {
                            fail(name, i + 1, text, "streaming detokenizer");
                            if (fails <= 30)
                                fprintf(stderr, "    split at %zu of %zu; want \"%.200s\"\n    got  \"%.200s\"\n",
                                        k, n, whole + pl, dt);
                        }
                        n_stream++;
                        pb_detok_free(d);
                    }
                } else
                    n_stream_skipped++;   /* the prompt ends inside a character */
            }
            free(pre);
            free(whole);
        }
        free(ids);
        cJSON_Delete(c);
        cJSON_Delete(e);
    }
    printf("%-26s %zu texts, %zu ids, %zu streamed (%zu prompts ending in U+FFFD skipped): %s\n",
           name, nc, n_ids, n_stream, n_stream_skipped, fails == before ? "ok" : "FAIL");
    free(cl);
    free(el);
    free(cbuf);
    free(ebuf);
    pb_tokenizer_free(tok);
    return fails != before;
}

int main(int argc, char **argv)
{
    const char *td = getenv("PB_TESTDATA");
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/tokenizers", td ? td : "tests/data");
    int bad = 0;
    if (argc > 1)
        for (int i = 1; i < argc; i++)
            bad |= check_tokenizer(dir, argv[i]);
    else
        for (size_t i = 0; i < sizeof ALL / sizeof ALL[0]; i++)
            bad |= check_tokenizer(dir, ALL[i]);
    return bad ? 1 : 0;
}
