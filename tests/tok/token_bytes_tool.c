/* Prints each id's bytes as pb_tokenizer_token_bytes gives them, for
 * tests/tok/token_bytes.py: one line an id, "ID HEX" ("ID" alone for no
 * bytes), "ID special" for special tokens, "ID -" for ids the tokenizer
 * lacks. Usage: token_bytes_tool TOKENIZER.json[.zst] */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>

#include "tok/tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s TOKENIZER\n", argv[0]);
        return 2;
    }
    pb_tokenizer *tok;
    if (pb_tokenizer_load(argv[1], &tok) != PB_OK) {
        fprintf(stderr, "%s\n", pb_last_error());
        return 1;
    }
    const int n = pb_tokenizer_vocab_size(tok);
    for (int id = 0; id < n; id++) {
        if (!pb_tokenizer_id_to_token(tok, id)) {
            printf("%d -\n", id);
            continue;
        }
        if (pb_tokenizer_is_special(tok, id)) {
            printf("%d special\n", id);
            continue;
        }
        char *b;
        size_t len;
        if (pb_tokenizer_token_bytes(tok, id, &b, &len) != PB_OK) {
            fprintf(stderr, "id %d: %s\n", id, pb_last_error());
            pb_tokenizer_free(tok);
            return 1;
        }
        printf("%d%s", id, len ? " " : "");
        for (size_t i = 0; i < len; i++)
            printf("%02x", (unsigned char)b[i]);
        putchar('\n');
        free(b);
    }
    pb_tokenizer_free(tok);
    return 0;
}
