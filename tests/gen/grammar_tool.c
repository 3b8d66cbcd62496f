/* Test helper for grammar_ref.py: reads lines
 *   g HEX                 compile the grammar (hex of its bytes): prints "ok STATES MS" or "err MESSAGE"
 *   j HEX                 the same for JSON mode's grammar with that whitespace pattern (pb_cfg_json_object)
 *   r HEX                 a regex's guide for the masks (c then answers N)
 *   c HEX                 run the candidate (hex of its bytes, may be empty) through the last grammar: prints
 *                         M (whole match), P (every byte taken but no match yet) or N (refused); X when the
 *                         parse breaks its promises (a state that can neither go on nor accept)
 *   t TOKENIZER VOCAB EOS load tokenizer.json for the masks (EOS: the id kept out of them, -1 none)
 *   m [ID ...]            after the ids from the start (each must be allowed): prints "mask ACC N W0 W1 ..."
 *                         (the allowed ids' bits in 32-bit words, hex; ACC 1 where the text is a whole
 *                         match), or "dead K" when the K-th id is not allowed
 * one answer line per input line. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "gen/grammar.h"
#include "gen/guide.h"
#include "gen/schema.h"
#include "tok/tokenizer.h"
#include "hexline.h"

static char classify(pb_cfg *g, const unsigned char *b, long n)
{
    int32_t s = pb_cfg_start(g);
    for (long i = 0; i < n && s >= 0; i++)
        if (pb_cfg_next(g, s, b[i], &s) != PB_OK)
            return 'E';
    if (s < 0)
        return 'N';
    bool on = false;
    for (int c = 0; c < 256 && !on; c++) {
        int32_t t;
        if (pb_cfg_next(g, s, (uint8_t)c, &t) != PB_OK)
            return 'E';
        on = t >= 0;
    }
    const bool acc = pb_cfg_accepts(g, s);
    if (!acc && !on)
        return 'X';
    return acc ? 'M' : 'P';
}

int main(void)
{
    static char line[1 << 22];
    static unsigned char buf[1 << 21];
    pb_cfg *g = NULL;
    pb_tokenizer *tok = NULL;
    pb_guide_vocab *v = NULL;
    pb_guide *guide = NULL;
    int rc = 0;
    while (fgets(line, sizeof line, stdin)) {
        if ((line[0] == 'g' || line[0] == 'j' || line[0] == 'r') && line[1] == ' ') {
            long n = unhex(line + 2, buf);
            if (n < 0) {
                fprintf(stderr, "grammar_tool: bad line\n");
                rc = 1;
                break;
            }
            pb_cfg_free(g);
            pb_guide_free(guide);
            g = NULL;
            guide = NULL;
            const pb_guide_kind kind = line[0] == 'g' ? PB_GUIDE_GRAMMAR : line[0] == 'j' ? PB_GUIDE_JSON_OBJECT
                                                                                           : PB_GUIDE_REGEX;
            double t0 = pb_now();
            pb_status st = kind == PB_GUIDE_GRAMMAR ? pb_cfg_compile((const char *)buf, (size_t)n, &g)
                           : kind == PB_GUIDE_JSON_OBJECT
                               ? pb_cfg_json_object(PB_SCHEMA_RX_STRING, PB_SCHEMA_RX_NUMBER, (const char *)buf,
                                                    (size_t)n, &g)
                               : PB_OK;
            double ms = (pb_now() - t0) * 1e3;
            if (st == PB_OK && v)
                st = pb_guide_create(v, kind, (const char *)buf, (size_t)n, &guide);
            if (st != PB_OK)
                printf("err %s\n", pb_last_error());
            else
                printf("ok %d %.3f\n", g ? (int)pb_cfg_n_states(g) : 0, ms);
        } else if (line[0] == 'c' && line[1] == ' ') {
            long n = unhex(line + 2, buf);
            if (n < 0) {
                fprintf(stderr, "grammar_tool: bad line\n");
                rc = 1;
                break;
            }
            printf("%c\n", g ? classify(g, buf, n) : 'N');
        } else if (line[0] == 't' && line[1] == ' ') {
            char path[4096];
            int vocab, eos;
            if (sscanf(line + 2, "%4095s %d %d", path, &vocab, &eos) != 3) {
                fprintf(stderr, "grammar_tool: bad line\n");
                rc = 1;
                break;
            }
            if (pb_tokenizer_load(path, &tok) != PB_OK ||
                pb_guide_vocab_create(tok, vocab, &eos, eos >= 0, &v) != PB_OK) {
                fprintf(stderr, "grammar_tool: %s\n", pb_last_error());
                rc = 1;
                break;
            }
            printf("ok\n");
        } else if (line[0] == 'm' && (line[1] == ' ' || line[1] == '\n')) {
            if (!guide) {
                fprintf(stderr, "grammar_tool: no grammar with a tokenizer\n");
                rc = 1;
                break;
            }
            int32_t s = pb_guide_start(guide);
            char *p = line + 1, *end;
            int k = 0;
            bool dead = s < 0;
            for (long id; !dead && (id = strtol(p, &end, 10), end != p); p = end, k++) {
                int32_t t;
                if (pb_guide_next(guide, s, (int32_t)id, &t) != PB_OK) {
                    printf("err %s\n", pb_last_error());
                    dead = true;
                    break;
                }
                if (t < 0) {
                    printf("dead %d\n", k);
                    dead = true;
                }
                s = t;
            }
            if (dead) {
                fflush(stdout);
                continue;
            }
            const uint32_t *m;
            int n;
            if (pb_guide_mask(guide, s, &m, &n) != PB_OK) {
                printf("err %s\n", pb_last_error());
                continue;
            }
            printf("mask %d %d", pb_guide_accepts(guide, s) ? 1 : 0, n);
            for (int w = 0; w < pb_guide_vocab_words(v); w++)
                printf(" %x", m[w]);
            printf("\n");
        } else {
            fprintf(stderr, "grammar_tool: bad line\n");
            rc = 1;
            break;
        }
        fflush(stdout);
    }
    pb_guide_free(guide);
    pb_guide_vocab_free(v);
    pb_tokenizer_free(tok);
    pb_cfg_free(g);
    return rc;
}
