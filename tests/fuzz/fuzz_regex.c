/* libFuzzer target: a guided_regex pattern -> pb_dfa (pb_dfa_compile), and the
 * DFA walked over the pattern's own bytes (every state handed out must lead to
 * a match: pb_dfa_next never returns a state that is not live). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "gen/regex.h"

/* libFuzzer entry point */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pb_dfa *d;
    if (pb_dfa_compile(size ? (const char *)data : "", size, 5000, &d) != PB_OK)
        return 0;
    const int32_t n = pb_dfa_n_states(d);
    int32_t s = pb_dfa_start(d);
    if ((n == 0) != (s < 0))
        __builtin_trap();
    for (size_t i = 0; i < size && s >= 0; i++) {
        if (s >= n)
            __builtin_trap();
        if (pb_dfa_final(d, s) && !pb_dfa_accepts(d, s))
            __builtin_trap();
        s = pb_dfa_next(d, s, data[i]);
    }
    pb_dfa_free(d);
    return 0;
}
