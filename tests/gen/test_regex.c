/* The regex -> DFA compiler (gen/regex.h): syntax, UTF-8, pruning, minimization, errors and limits. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/regex.h"

static int failures;
#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: CHECK(%s) failed: %s\n", __FILE__, __LINE__, \
                                                #cond, pb_last_error()); failures++; } } while (0)

static pb_dfa *compile_n(const char *pat, size_t len, int max_states)
{
    pb_dfa *d = NULL;
    pb_status st = pb_dfa_compile(pat, len, max_states, &d);
    if (st != PB_OK) {
        fprintf(stderr, "compile of /%s/ failed: %s\n", pat, pb_last_error());
        failures++;
        return NULL;
    }
    return d;
}

static pb_dfa *compile(const char *pat) { return compile_n(pat, strlen(pat), 10000); }

/* M: s[0..n) is a whole match, P: every byte taken but no match yet, N: refused. */
static char run_n(const pb_dfa *d, const char *s, size_t n)
{
    int32_t q = pb_dfa_start(d);
    for (size_t i = 0; i < n && q >= 0; i++)
        q = pb_dfa_next(d, q, (uint8_t)s[i]);
    return q < 0 ? 'N' : pb_dfa_accepts(d, q) ? 'M' : 'P';
}

static char run(const pb_dfa *d, const char *s) { return run_n(d, s, strlen(s)); }

/* Each "want:text" of cases (want M, P or N) against the pattern. */
static void expect(const char *pat, const char *const *cases)
{
    pb_dfa *d = compile(pat);
    if (!d)
        return;
    for (; *cases; cases++) {
        char got = run(d, *cases + 2);
        if (got != (*cases)[0]) {
            fprintf(stderr, "/%s/ on \"%s\": want %c, got %c\n", pat, *cases + 2, (*cases)[0], got);
            failures++;
        }
    }
    pb_dfa_free(d);
}

static void expect_err(const char *pat, size_t len, size_t offset)
{
    pb_dfa *d = (pb_dfa *)&failures; /* must come back NULL */
    pb_status st = pb_dfa_compile(pat, len, 10000, &d);
    char want[64];
    snprintf(want, sizeof want, "at offset %zu: ", offset);
    if (st != PB_ERR_INPUT || d != NULL || strncmp(pb_last_error(), want, strlen(want)) != 0) {
        fprintf(stderr, "/%.*s/: want PB_ERR_INPUT \"%s...\", got status %d \"%s\"\n", (int)len, pat, want, (int)st,
                pb_last_error());
        failures++;
    }
    if (st == PB_OK)
        pb_dfa_free(d);
}

static void test_syntax(void)
{
    expect("abc", (const char *[]){"M:abc", "P:ab", "P:", "N:abd", "N:abcd", NULL});
    expect("[a-c]x[-.]", (const char *[]){"M:bx-", "M:cx.", "N:dx-", "N:ax,", NULL});
    expect("[]a]+", (const char *[]){"M:]", "M:a]a", "N:b", NULL});
    expect("a+b?c*", (const char *[]){"M:a", "M:aabccc", "N:bc", "P:", "N:abb", NULL});
    expect("a{2,3}", (const char *[]){"P:a", "M:aa", "M:aaa", "N:aaaa", NULL});
    expect("a{2}", (const char *[]){"M:aa", "N:aaa", NULL});
    expect("a{,2}b", (const char *[]){"M:b", "M:aab", "N:aaab", NULL});
    expect("a{2,}", (const char *[]){"P:a", "M:aaaaaaa", NULL});
    expect("(a{1,2}b){2}", (const char *[]){"M:abaab", "N:abaaab", "P:aab", NULL});
    expect("a{,}", (const char *[]){"M:", "M:aaa", NULL});
    expect("a{x}", (const char *[]){"M:a{x}", "P:a", "N:ax", NULL});
    expect("a{}", (const char *[]){"M:a{}", NULL});
    expect("cat|dog|", (const char *[]){"M:", "M:cat", "M:dog", "N:cd", "P:ca", NULL});
    expect("(|b)c", (const char *[]){"M:c", "M:bc", "N:bbc", NULL});
    expect("()*x(?:)", (const char *[]){"M:x", NULL});
    expect("^ab$", (const char *[]){"M:ab", "N:ab$", NULL});
    expect("a\\$\\^", (const char *[]){"M:a$^", NULL});
    expect("^$", (const char *[]){"M:", "N:a", NULL});
    expect("", (const char *[]){"M:", "N:a", NULL});
    expect("a*?b+?c??d{1,2}?e{2}?", (const char *[]){"M:bdee", "M:aabbcddee", "N:bdeee", NULL});
    expect("(?P<first>a)(?<second>b)", (const char *[]){"M:ab", NULL});
    expect("\\d\\w\\s", (const char *[]){"M:1_ ", "M:9Z\t", "N:a1 ", "N:1\xc3\xa9 ", NULL});
    expect("\\D\\W\\S", (const char *[]){"M:a-b", "M:\xc3\xa9\xc3\xa9\xc3\xa9", "N:1-b", "N:a_b", "N:a- ", NULL});
    expect(".", (const char *[]){"M:x", "N:\n", "M:\r", "M:\xf0\x9f\x98\x80", "P:\xf0\x9f\x98", NULL});
    expect("\\n\\t\\r\\f\\v", (const char *[]){"M:\n\t\r\f\v", NULL});
    expect("\\x41\\u00e9\\U0001F600", (const char *[]){"M:A\xc3\xa9\xf0\x9f\x98\x80", NULL});
    expect("\\.\\*\\[\\]\\{\\}\\(\\)\\|\\\\\\-\\ ", (const char *[]){"M:.*[]{}()|\\- ", NULL});
    expect("[\\b][\\]\\\\]", (const char *[]){"M:\b]", "M:\b\\", NULL});
    expect("caf\xc3\xa9|\xe6\x97\xa5\xe6\x9c\xac",
           (const char *[]){"M:caf\xc3\xa9", "P:caf\xc3", "M:\xe6\x97\xa5\xe6\x9c\xac", "N:cafe", NULL});
    expect("[\xc3\xa0-\xc3\xbf]+", (const char *[]){"M:\xc3\xa0\xc3\xbf", "N:\xc3\x9f", "N:\xc3\x80", "P:\xc3", NULL});
    /* lone surrogates in a range are dropped: U+D7FF and U+E000 stay */
    expect("[\\ud000-\\ue000]", (const char *[]){"M:\xed\x9f\xbf", "N:\xed\xa0\x80", "M:\xee\x80\x80", NULL});
}

static void test_utf8(void)
{
    /* a negated class matches every scalar value outside it, in valid UTF-8 only */
    pb_dfa *d = compile("[^a]");
    if (!d)
        return;
    CHECK(run(d, "a") == 'N');
    CHECK(run(d, "b") == 'M');
    CHECK(run(d, "\xc3\xa9") == 'M');
    CHECK(run(d, "\xc3") == 'P');
    CHECK(run(d, "\xc3\x28") == 'N');
    CHECK(run(d, "\xc0\x80") == 'N'); /* overlong */
    CHECK(run(d, "\xc1") == 'N');
    CHECK(run(d, "\xe0\x80\x80") == 'N'); /* overlong */
    CHECK(run(d, "\xe0\xa0\x80") == 'M');
    CHECK(run(d, "\xed\x9f\xbf") == 'M'); /* U+D7FF */
    CHECK(run(d, "\xed\xa0\x80") == 'N'); /* U+D800 */
    CHECK(run(d, "\xef\xbf\xbf") == 'M');
    CHECK(run(d, "\xf0\x8f\xbf\xbf") == 'N'); /* overlong */
    CHECK(run(d, "\xf0\x90\x80\x80") == 'M');
    CHECK(run(d, "\xf4\x8f\xbf\xbf") == 'M'); /* U+10FFFF */
    CHECK(run(d, "\xf4\x90\x80\x80") == 'N');
    CHECK(run(d, "\xf5") == 'N');
    CHECK(run(d, "\xff") == 'N');
    CHECK(run(d, "\x80") == 'N');
    CHECK(run_n(d, "\0", 1) == 'M');
    pb_dfa_free(d);
    /* NUL: written \x00 or \0, or raw in the pattern */
    d = compile_n("a\0b", 3, 100);
    if (d) {
        CHECK(run_n(d, "a\0b", 3) == 'M');
        CHECK(run_n(d, "a\0", 2) == 'P');
        pb_dfa_free(d);
    }
    d = compile("a\\x00\\0[\\x00-\\x01]");
    if (d) {
        CHECK(run_n(d, "a\0\0\1", 4) == 'M');
        CHECK(run_n(d, "a\0\0\2", 4) == 'N');
        pb_dfa_free(d);
    }
}

static void test_errors(void)
{
    static const struct {
        const char *pat;
        size_t off;
    } cases[] = {
        {"ab\\1", 2}, {"a(?=b)", 1}, {"a(?!b)", 1}, {"(?<=a)b", 0}, {"(?P=x)", 0}, {"a\\b", 1}, {"\\Ba", 0},
        {"a\\Z", 1}, {"a\\A", 1}, {"a(b", 1}, {"a(b))", 4}, {"a)", 1}, {"x[ab", 1}, {"[", 0}, {"[]", 0},
        {"a{2,1}", 1}, {"a{1001}", 2}, {"a{0,1001}", 4}, {"a{99999999999999999999}", 2}, {"ab\\", 2},
        {"a^b", 1}, {"(^a)", 1}, {"a$b", 1}, {"(a$)", 2}, {"*a", 0}, {"a|+", 2}, {"(?)", 0}, {"a**", 2},
        {"a{2}{3}", 4}, {"a*?+", 3}, {"a*+a", 2}, {"a{2}+", 4}, {"(?>a)", 0}, {"{1}", 0}, {"(?i)a", 0},
        {"(?#c)", 0}, {"(?P<1>a)", 0},
        {"(?P<>a)", 0}, {"\\u12", 0}, {"\\xg0", 0}, {"\\U00110000", 0}, {"\\ud800", 0}, {"[\\udfff]", 1},
        {"\\q", 0}, {"\\01", 0}, {"[z-a]", 1}, {"[\\d-z]", 1}, {"[a-\\w]", 1}, {"ab[c\\", 4},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        expect_err(cases[i].pat, strlen(cases[i].pat), cases[i].off);
    /* invalid UTF-8: a stray continuation, a truncated lead, an encoded surrogate, an overlong, 0xFF */
    expect_err("a\x80", 2, 1);
    expect_err("ab\xc3", 3, 2);
    expect_err("\xed\xa0\x80", 3, 0);
    expect_err("x\xc0\xaf", 3, 1);
    expect_err("[a\xff]", 4, 2);
    expect_err("\\\xc3", 2, 1);
    /* nesting: 400 groups deep is fine, 600 is refused */
    char deep[1300];
    size_t n = 0;
    for (int i = 0; i < 400; i++) deep[n++] = '(';
    deep[n++] = 'a';
    for (int i = 0; i < 400; i++) deep[n++] = ')';
    pb_dfa *d = compile_n(deep, n, 100);
    if (d)
        CHECK(run(d, "a") == 'M');
    pb_dfa_free(d);
    n = 0;
    for (int i = 0; i < 600; i++) deep[n++] = '(';
    for (int i = 0; i < 600; i++) deep[n++] = ')';
    expect_err(deep, n, 500);
    /* the NFA cap: a thousand times a thousand times a thousand */
    const char *big = "((a{1000}){1000}){1000}";
    d = NULL;
    CHECK(pb_dfa_compile(big, strlen(big), 10000, &d) == PB_ERR_INPUT && !d && strstr(pb_last_error(), "too large"));
}

static void test_states(void)
{
    /* dead ends are refused at once */
    pb_dfa *d = compile("ab|ac");
    if (d) {
        int32_t s = pb_dfa_next(d, pb_dfa_start(d), 'a');
        CHECK(s >= 0 && !pb_dfa_accepts(d, s));
        CHECK(pb_dfa_next(d, s, 'd') == -1);
        CHECK(pb_dfa_next(d, s, 'b') >= 0 && pb_dfa_final(d, pb_dfa_next(d, s, 'b')));
        CHECK(pb_dfa_n_states(d) == 3);
        pb_dfa_free(d);
    }
    d = compile("a*b");
    if (d) {
        CHECK(pb_dfa_start(d) == 0);
        CHECK(pb_dfa_next(d, 0, 'c') == -1);
        CHECK(pb_dfa_next(d, 0, 'a') == 0);
        CHECK(pb_dfa_next(d, -1, 'a') == -1);
        CHECK(pb_dfa_next(d, pb_dfa_n_states(d), 'a') == -1);
        pb_dfa_free(d);
    }
    /* a branch that can never finish is cut off */
    d = compile("a[^\\x00-\\U0010FFFF]|b");
    if (d) {
        CHECK(pb_dfa_next(d, pb_dfa_start(d), 'a') == -1);
        CHECK(run(d, "b") == 'M');
        CHECK(pb_dfa_n_states(d) == 2);
        pb_dfa_free(d);
    }
    /* the empty language */
    d = compile("[^\\x00-\\U0010FFFF]");
    if (d) {
        CHECK(pb_dfa_start(d) == -1);
        CHECK(pb_dfa_n_states(d) == 0);
        CHECK(!pb_dfa_accepts(d, -1) && !pb_dfa_final(d, 0));
        CHECK(pb_dfa_bytes(d) > 0);
        pb_dfa_free(d);
    }
    /* final: accepts and nothing follows */
    d = compile("ab*");
    if (d) {
        int32_t s = pb_dfa_next(d, pb_dfa_start(d), 'a');
        CHECK(pb_dfa_accepts(d, s) && !pb_dfa_final(d, s));
        pb_dfa_free(d);
    }
    d = compile("(ab)?");
    if (d) {
        int32_t s = pb_dfa_start(d);
        CHECK(pb_dfa_accepts(d, s) && !pb_dfa_final(d, s));
        s = pb_dfa_next(d, pb_dfa_next(d, s, 'a'), 'b');
        CHECK(pb_dfa_accepts(d, s) && pb_dfa_final(d, s));
        pb_dfa_free(d);
    }
    /* minimal: equal suffixes are shared */
    static const struct {
        const char *pat;
        int32_t n;
    } sizes[] = {{"abc|dbc", 4}, {"[0-9]{4}", 5}, {"(a|b)*a(a|b){3}", 16}, {"(foo|bar)(foo|bar)", 11},
                 {"x{0,1000}", 1001}, {".", 9}, {"[^a]*", 8}};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) {
        d = compile(sizes[i].pat);
        if (d && pb_dfa_n_states(d) != sizes[i].n) {
            fprintf(stderr, "/%s/: %d states, want %d\n", sizes[i].pat, (int)pb_dfa_n_states(d), (int)sizes[i].n);
            failures++;
        }
        pb_dfa_free(d);
    }
    /* the state cap: 2^10 subsets are needed here */
    const char *wide = "(a|b)*a(a|b){9}";
    d = NULL;
    CHECK(pb_dfa_compile(wide, strlen(wide), 100, &d) == PB_ERR_INPUT && !d &&
          strcmp(pb_last_error(), "pattern needs more than 100 states") == 0);
    d = compile_n(wide, strlen(wide), 5000);
    if (d)
        CHECK(pb_dfa_n_states(d) == 1024);
    pb_dfa_free(d);
    pb_dfa_free(NULL);
}

int main(void)
{
    test_syntax();
    test_utf8();
    test_errors();
    test_states();
    if (failures) {
        fprintf(stderr, "test_regex: %d failures\n", failures);
        return 1;
    }
    printf("test_regex: ok\n");
    return 0;
}
