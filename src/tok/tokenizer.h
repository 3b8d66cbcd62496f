/* HuggingFace tokenizer.json in C: BPE model, added tokens, normalizers,
 * pre-tokenizers, post-processors and decoders, id-for-id equal to HF
 * `tokenizers` (Tokenizer.from_file(path).encode(text, add_special_tokens)).
 *
 * Text in is UTF-8 of a given length (NUL bytes allowed). Invalid UTF-8 is
 * replaced before encoding, each maximal invalid subpart by one U+FFFD (as
 * Rust's String::from_utf8_lossy and Python's bytes.decode("utf-8",
 * "replace") do), so the ids are HF's for the repaired text.
 *
 * A loaded tokenizer is immutable apart from an internal word cache guarded
 * by a lock: encode/decode may be called from several threads at once. */
#ifndef PB_TOK_TOKENIZER_H
#define PB_TOK_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_tokenizer pb_tokenizer;

/* Load tokenizer.json (plain, or zstd-compressed when the file starts with
 * the zstd magic, e.g. tokenizer.json.zst). Errors name the file and field. */
pb_status pb_tokenizer_load(const char *path, pb_tokenizer **out);
/* Same from memory (plain JSON or a zstd frame); `name` is used in messages. */
pb_status pb_tokenizer_load_buffer(const void *buf, size_t len, const char *name,
                                   pb_tokenizer **out);
void pb_tokenizer_free(pb_tokenizer *tok);

/* HF encode(text, add_special_tokens=add_special). Caller frees *ids. */
pb_status pb_tokenizer_encode(const pb_tokenizer *tok, const char *text, size_t len,
                              bool add_special, int32_t **ids, size_t *n_ids);
/* HF decode(ids, skip_special_tokens=skip_special). The text is
 * NUL-terminated; caller frees *text. An id with no token is PB_ERR_INPUT
 * (HF drops it silently; we report it). */
pb_status pb_tokenizer_decode(const pb_tokenizer *tok, const int32_t *ids, size_t n,
                              bool skip_special, char **text, size_t *len);

/* The bytes a token adds to a text where it stands inside it (neither first
 * nor last): the decoder chain on the token alone, without the rules for a
 * text's start and end (Strip, Metaspace's first space) and without making
 * its bytes valid UTF-8 (a piece of a character stays that piece), so that a
 * completion's bytes are its tokens' bytes one after another. For
 * constrained decoding (gen/guide.h). NUL-terminated; caller frees *bytes.
 * An id the tokenizer does not know is PB_ERR_INPUT. */
pb_status pb_tokenizer_token_bytes(const pb_tokenizer *tok, int32_t id, char **bytes, size_t *len);

int pb_tokenizer_vocab_size(const pb_tokenizer *tok);   /* max id + 1 incl. added tokens */
int32_t pb_tokenizer_token_to_id(const pb_tokenizer *tok, const char *token); /* -1 if absent */
/* The token string of an id (as stored in the vocabulary), NULL if none. */
const char *pb_tokenizer_id_to_token(const pb_tokenizer *tok, int32_t id);
bool pb_tokenizer_is_special(const pb_tokenizer *tok, int32_t id);

/* Streaming detokenizer for generation. Created with the prompt ids; push
 * each generated id; the text is exactly what follows the decoded prompt
 * (decode(prompt) + text == decode(prompt + generated)), and only complete
 * UTF-8 is released: pieces that split a character are held back. Only a
 * bounded window of recent ids is decoded per step (prefix/read offsets as
 * in text-generation-inference). Special tokens are rendered
 * (skip_special_tokens=False); use pb_detok_create_ex to skip them.
 * Two cases cannot hold the equality, since HF's decode of everything
 * changes text already released: a prompt that ends inside a character, and
 * an invalid byte sequence inside a run of byte-fallback tokens (HF renders
 * the whole run as U+FFFD). There the released text shows U+FFFD only for
 * the invalid bytes. */
typedef struct pb_detok pb_detok;
pb_status pb_detok_create(const pb_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                          pb_detok **out);
pb_status pb_detok_create_ex(const pb_tokenizer *tok, const int32_t *prompt, size_t n_prompt,
                             bool skip_special, pb_detok **out);
/* Text newly released by this id (may be empty); valid until the next call. */
pb_status pb_detok_push(pb_detok *d, int32_t id, const char **new_text, size_t *new_len);
/* All released completion text so far (NUL-terminated). */
const char *pb_detok_text(const pb_detok *d, size_t *len);
/* Release the rest (incomplete bytes rendered as HF decode renders them). */
pb_status pb_detok_finish(pb_detok *d, const char **new_text, size_t *new_len);
/* Stop strings across token boundaries: the earliest offset in the released
 * text where one of stops[0..n_stops) occurs, considering only occurrences
 * that end within the last `new_len` released bytes (pass the new_len of the
 * push just made). Returns true and sets *offset and *which when found. */
bool pb_detok_find_stop(const pb_detok *d, const char *const *stops, int n_stops,
                        size_t new_len, size_t *offset, int *which);
void pb_detok_free(pb_detok *d);

#endif
