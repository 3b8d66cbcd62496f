/* Regular expressions compiled to a DFA over UTF-8 bytes, for constrained
 * decoding (gen/guide.h): a pattern describes the whole completion, so the
 * DFA matches whole strings (as Python's re.fullmatch), and every state it
 * hands out can still reach a match: a byte that would leave no way to
 * finish is refused at once (pb_dfa_next gives -1).
 *
 * Syntax: the common subset of Python's `re` (with re.ASCII) and
 * ECMAScript that JSON schemas and vLLM's guided_regex use:
 *   literals (any UTF-8 character), `.` (any character but \n), classes
 *   [...] / [^...] with ranges and escapes (non-ASCII ranges too; a negated
 *   class matches any Unicode scalar value not in it), groups (...), (?:...),
 *   (?P<name>...), (?<name>...), alternation |, quantifiers * + ? {n} {n,}
 *   {,m} {n,m} (a lazy `?` after them is accepted: the language is the
 *   same; as in Python, `{,}` is `*` and a `{` that starts no count is
 *   itself), escapes \d \D \w \W \s \S (ASCII: [0-9],
 *   [A-Za-z0-9_], [ \t\n\r\f\v]), \n \t \r \f \v \0 \xHH \uHHHH \U0010FFFF,
 *   a backslash before any other punctuation for itself; `^` at the very
 *   start and `$` at the very end (the match is whole anyway).
 * Refused with the offset: back references, look-around, \b \B \A \Z
 * (in a class \b is a backspace), possessive quantifiers (a*+a matches
 * nothing: not the language of a*a), atomic groups, octal escapes,
 * inline flags, a `^`/`$` elsewhere, repetition counts over 1000, an
 * unbalanced group or class, invalid UTF-8 in the pattern. */
#ifndef PB_GEN_REGEX_H
#define PB_GEN_REGEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_dfa pb_dfa;

/* Compile pat[0..len) (may hold NUL bytes written as \x00; raw NULs are
 * literals too). At most max_states DFA states (a pattern needing more is
 * PB_ERR_INPUT "pattern needs more than N states"; max_states <= 0: no
 * bound). The bound counts the states of the subset construction, before
 * equivalent ones are merged. A bad pattern is
 * PB_ERR_INPUT with pb_error's detail "at offset N: what is wrong"; no
 * allocation failure is reported as PB_ERR_INPUT. A pattern that matches
 * nothing compiles (pb_dfa_start gives -1). */
pb_status pb_dfa_compile(const char *pat, size_t len, int max_states, pb_dfa **out);
void pb_dfa_free(pb_dfa *d); /* NULL-safe */

/* States are numbered 0 .. n_states-1, the start first (0), so callers can
 * keep per-state tables. The start state, or -1 when no string matches. */
int32_t pb_dfa_start(const pb_dfa *d);
/* The state after byte b from state s (s >= 0), or -1 when no match can
 * follow (or s is not a state). O(1): a byte class, then a table row. */
int32_t pb_dfa_next(const pb_dfa *d, int32_t s, uint8_t b);
/* Whether the bytes that led to s are a whole match. */
bool pb_dfa_accepts(const pb_dfa *d, int32_t s);
/* Whether s accepts and no byte leads on (the match can only end here). */
bool pb_dfa_final(const pb_dfa *d, int32_t s);
int32_t pb_dfa_n_states(const pb_dfa *d);
/* Memory the DFA holds, in bytes. */
size_t pb_dfa_bytes(const pb_dfa *d);

#endif
