/* libFuzzer target: a guided_grammar (GBNF) -> pb_cfg (pb_cfg_compile), and the parse walked over the grammar's
 * own bytes: every state handed out must be a state made so far, and must either accept or lead on by some byte
 * (grammar.h's promise); the parse's bounds may be met (PB_ERR_INPUT), never anything else. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "gen/grammar.h"

/* libFuzzer entry point */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pb_cfg *g;
    pb_status st = pb_cfg_compile(size ? (const char *)data : "", size, &g);
    if (st != PB_OK) {
        if (st != PB_ERR_INPUT && st != PB_ERR_NOMEM)
            __builtin_trap();
        return 0;
    }
    int32_t s = pb_cfg_start(g);
    for (size_t i = 0; i <= size && s >= 0; i++) {
        if (s >= pb_cfg_n_states(g))
            __builtin_trap();
        bool on = false;
        for (int b = 0; b < 256 && !on; b++) {
            int32_t t;
            st = pb_cfg_next(g, s, (uint8_t)b, &t);
            if (st != PB_OK && st != PB_ERR_INPUT)
                __builtin_trap();
            on = st == PB_OK && t >= 0;
        }
        if (!on && !pb_cfg_accepts(g, s) && st == PB_OK)
            __builtin_trap();
        if (i == size)
            break;
        st = pb_cfg_next(g, s, data[i], &s);
        if (st != PB_OK)
            break;
    }
    pb_cfg_free(g);
    return 0;
}
