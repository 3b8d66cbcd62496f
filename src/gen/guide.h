/* Constrained decoding: a regular expression (gen/regex.h; JSON schemas and
 * choice lists become one through gen/schema.h) or a context-free grammar
 * (gen/grammar.h) that the whole completion must match. A guide is the
 * pattern's DFA (or the grammar's parse states, made as reached) over the
 * model's vocabulary: in each state, the mask of the token ids whose bytes
 * (pb_tokenizer_token_bytes) keep a whole match possible, computed when the
 * state is first reached and kept. The engine sends the mask of a
 * sequence's state with each token it samples (PB_SEQ_MASK) and moves the
 * state by the token sampled; EOS may end the completion only where the
 * state accepts (the engine adds it), and a state from which no token leads
 * on ends it.
 *
 * Special tokens, EOS ids, ids the tokenizer does not know and tokens
 * without bytes are never in a mask. */
#ifndef PB_GEN_GUIDE_H
#define PB_GEN_GUIDE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "tok/tokenizer.h"

/* The vocabulary's bytes, sorted, shared by every guide of a run. */
typedef struct pb_guide_vocab pb_guide_vocab;
/* vocab: the model's ids [0, vocab) (may exceed the tokenizer's). */
pb_status pb_guide_vocab_create(const pb_tokenizer *tok, int vocab, const int *eos_ids, int n_eos,
                                pb_guide_vocab **out);
void pb_guide_vocab_free(pb_guide_vocab *v);
/* Words of a mask: (vocab + 31) / 32. */
int pb_guide_vocab_words(const pb_guide_vocab *v);

typedef struct pb_guide pb_guide;
/* What a guide's text is: a regex, a GBNF or Lark grammar, or JSON mode's whitespace pattern (any JSON
 * object, nested to any depth: pb_cfg_json_object). */
typedef enum pb_guide_kind { PB_GUIDE_REGEX, PB_GUIDE_GRAMMAR, PB_GUIDE_JSON_OBJECT } pb_guide_kind;
/* Compile text[0..len) of that kind for v (borrowed: it must outlive the guide). A bad
 * pattern is PB_ERR_INPUT. */
pb_status pb_guide_create(const pb_guide_vocab *v, pb_guide_kind kind, const char *text, size_t len,
                          pb_guide **out);
void pb_guide_free(pb_guide *g);

/* The state before any token; -1 when the pattern matches nothing. */
int32_t pb_guide_start(const pb_guide *g);
/* The ids (not EOS) that may follow state s: *mask (pb_guide_vocab_words
 * words, kept by the guide) and *n their number. A grammar's parse that
 * outgrows its bounds is PB_ERR_INPUT (grammar.h). */
pb_status pb_guide_mask(pb_guide *g, int32_t s, const uint32_t **mask, int *n);
/* *next: the state after id from s, -1 when id may not follow s. Fails as
 * pb_guide_mask. */
pb_status pb_guide_next(pb_guide *g, int32_t s, int32_t id, int32_t *next);
/* Whether the text that led to s is a whole match (EOS may end it). */
bool pb_guide_accepts(const pb_guide *g, int32_t s);
/* Memory the guide holds (its DFA or grammar and the masks made so far), in bytes. */
size_t pb_guide_bytes(const pb_guide *g);

#endif
