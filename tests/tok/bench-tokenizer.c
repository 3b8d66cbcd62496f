/* Tokenizer throughput on one core (driven by contrib/bench/tokenizer.py,
 * which runs HF `tokenizers` on the same chunks beside it).
 *   bench-tokenizer TOKENIZER TEXT [CHUNK_BYTES [REPEATS]]
 * The text is cut at newlines into chunks of about CHUNK_BYTES; each chunk
 * is one encode(add_special_tokens=False) and one decode call. Prints one
 * line of key=value figures: the first (cold cache) pass and the best pass. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "tok/tok_internal.h"
#include "tok/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s TOKENIZER TEXT [CHUNK_BYTES [REPEATS]]\n", argv[0]);
        return 2;
    }
    size_t chunk = argc > 3 ? (size_t)atol(argv[3]) : 4096;
    int reps = argc > 4 ? atoi(argv[4]) : 5;
    if (chunk == 0 || reps <= 0)
        return 2;
    double t0 = pb_now();
    pb_tokenizer *tok;
    if (pb_tokenizer_load(argv[1], &tok) != PB_OK) {
        fprintf(stderr, "%s\n", pb_last_error());
        return 1;
    }
    double t_load = pb_now() - t0;
    char *text;
    size_t len;
    if (tk_read_maybe_zstd(argv[2], &text, &len) != PB_OK) {
        fprintf(stderr, "%s\n", pb_last_error());
        return 1;
    }
    /* chunk boundaries */
    size_t nch = 0, cap = 1024;
    size_t *off = malloc((cap + 1) * sizeof *off);
    for (size_t p = 0; off && p < len;) {
        size_t e = p + chunk < len ? p + chunk : len;
        while (e < len && text[e - 1] != '\n')
            e++;
        if (nch == cap) {
            cap *= 2;
            off = realloc(off, (cap + 1) * sizeof *off);
            if (!off)
                break;
        }
        off[nch++] = p;
        p = e;
    }
    if (!off)
        return 1;
    off[nch] = len;
    int32_t **ids = calloc(nch, sizeof *ids);
    size_t *nids = calloc(nch, sizeof *nids);
    double enc_first = 0, enc_best = 1e30, dec_best = 1e30;
    size_t tokens = 0, dec_bytes = 0;
    for (int r = 0; r < reps; r++) {
        tokens = 0;
        double t = pb_now();
        for (size_t c = 0; c < nch; c++) {
            free(ids[c]);
            if (pb_tokenizer_encode(tok, text + off[c], off[c + 1] - off[c], false, &ids[c], &nids[c]) != PB_OK) {
                fprintf(stderr, "%s\n", pb_last_error());
                return 1;
            }
            tokens += nids[c];
        }
        t = pb_now() - t;
        if (r == 0)
            enc_first = t;
        if (t < enc_best)
            enc_best = t;
    }
    for (int r = 0; r < reps; r++) {
        dec_bytes = 0;
        double t = pb_now();
        for (size_t c = 0; c < nch; c++) {
            char *s;
            size_t sl;
            if (pb_tokenizer_decode(tok, ids[c], nids[c], false, &s, &sl) != PB_OK) {
                fprintf(stderr, "%s\n", pb_last_error());
                return 1;
            }
            dec_bytes += sl;
            free(s);
        }
        t = pb_now() - t;
        if (t < dec_best)
            dec_best = t;
    }
    printf("load_s=%.4f bytes=%zu chunks=%zu tokens=%zu encode_first_s=%.4f encode_best_s=%.4f "
           "decode_best_s=%.4f decode_bytes=%zu\n", t_load, len, nch, tokens, enc_first, enc_best,
           dec_best, dec_bytes);
    for (size_t c = 0; c < nch; c++)
        free(ids[c]);
    free(ids);
    free(nids);
    free(off);
    free(text);
    pb_tokenizer_free(tok);
    return 0;
}
