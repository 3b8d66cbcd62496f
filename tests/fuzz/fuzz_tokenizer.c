/* libFuzzer target: tokenizer.json (plain or zstd) via pb_tokenizer_load_buffer,
 * then a short encode/decode round with the loaded tokenizer. */
#include "config.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tok/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char text[] = "Hello world! 123 h\xc3\xa9llo  \xe2\x82\xac\xff<|endoftext|>\n\tx";
    pb_tokenizer *tok = NULL;
    if (pb_tokenizer_load_buffer(size ? data : (const void *)"", size, "fuzz/tokenizer.json", &tok) != PB_OK)
        return 0;
    int32_t *ids = NULL;
    size_t n = 0;
    if (pb_tokenizer_encode(tok, text, sizeof text - 1, true, &ids, &n) == PB_OK) {
        char *out = NULL;
        size_t len = 0;
        if (pb_tokenizer_decode(tok, ids, n, false, &out, &len) == PB_OK)
            free(out);
        out = NULL;
        if (pb_tokenizer_decode(tok, ids, n, true, &out, &len) == PB_OK)
            free(out);
        pb_detok *d = NULL;
        if (n && pb_detok_create(tok, ids, n / 2, &d) == PB_OK) {
            const char *nt;
            size_t nl;
            for (size_t i = n / 2; i < n; i++)
                if (pb_detok_push(d, ids[i], &nt, &nl) != PB_OK)
                    break;
            (void)pb_detok_finish(d, &nt, &nl);
            pb_detok_free(d);
        }
        free(ids);
    }
    int vs = pb_tokenizer_vocab_size(tok);
    for (int32_t i = 0; i < vs && i < 64; i++)
        (void)pb_tokenizer_id_to_token(tok, i);
    (void)pb_tokenizer_token_to_id(tok, "<unk>");
    pb_tokenizer_free(tok);
    return 0;
}
