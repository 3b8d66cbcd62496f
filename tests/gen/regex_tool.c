/* Test helper for regex_ref.py: reads lines
 *   p MAX_STATES HEX   compile the pattern (hex of its bytes): prints "ok STATES BYTES MS" or "err MESSAGE"
 *   c HEX              run the candidate (hex of its bytes, may be empty) through the last pattern: prints
 *                      M (whole match), P (every byte taken but no match yet: a proper prefix of a match)
 *                      or N (refused); X when the DFA breaks its own promises (a state reached that cannot
 *                      go on and does not accept, or a final state with a way on)
 * one answer line per input line. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/regex.h"
#include "hexline.h"

static char classify(const pb_dfa *d, const unsigned char *b, long n)
{
    int32_t s = pb_dfa_start(d);
    if (s < 0)
        return 'N';
    for (long i = 0; i < n; i++) {
        s = pb_dfa_next(d, s, b[i]);
        if (s < 0)
            return 'N';
    }
    bool on = false;
    for (int c = 0; c < 256 && !on; c++)
        on = pb_dfa_next(d, s, (uint8_t)c) >= 0;
    bool acc = pb_dfa_accepts(d, s);
    if ((!acc && !on) || pb_dfa_final(d, s) != (acc && !on))
        return 'X';
    return acc ? 'M' : 'P';
}

int main(void)
{
    static char line[1 << 22];
    static unsigned char buf[1 << 21];
    pb_dfa *d = NULL;
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'p' && line[1] == ' ') {
            char *end;
            long max = strtol(line + 2, &end, 10);
            long n = *end == ' ' ? unhex(end + 1, buf) : -1;
            if (n < 0) {
                fprintf(stderr, "regex_tool: bad line\n");
                return 1;
            }
            pb_dfa_free(d);
            d = NULL;
            double t0 = pb_now();
            pb_status st = pb_dfa_compile((const char *)buf, (size_t)n, (int)max, &d);
            double ms = (pb_now() - t0) * 1e3;
            if (st != PB_OK)
                printf("err %s\n", pb_last_error());
            else
                printf("ok %d %zu %.3f\n", (int)pb_dfa_n_states(d), pb_dfa_bytes(d), ms);
        } else if (line[0] == 'c' && line[1] == ' ') {
            long n = unhex(line + 2, buf);
            if (n < 0) {
                fprintf(stderr, "regex_tool: bad line\n");
                return 1;
            }
            printf("%c\n", d ? classify(d, buf, n) : 'N');
        } else {
            fprintf(stderr, "regex_tool: bad line\n");
            return 1;
        }
    }
    pb_dfa_free(d);
    return 0;
}
