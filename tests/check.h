/* CHECK(cond, fmt, ...) for the C unit tests: where cond is false, prints
 * "FAIL file:line: " and the message to stderr and counts it in
 * check_failures, which main reports and turns into its exit status. */
#ifndef PB_TESTS_CHECK_H
#define PB_TESTS_CHECK_H

#include <stdio.h>

static int check_failures;

#define CHECK(cond, ...)                                                                                             \
    do {                                                                                                             \
        if (!(cond)) {                                                                                               \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                                     \
            fprintf(stderr, __VA_ARGS__);                                                                            \
            fputc('\n', stderr);                                                                                     \
            check_failures++;                                                                                        \
        }                                                                                                            \
    } while (0)

#endif
