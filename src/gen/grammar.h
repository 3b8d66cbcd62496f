/* Context-free grammars for constrained decoding (gen/guide.h): vLLM's guided_grammar and
 * structured_outputs.grammar, written in GBNF/EBNF as llama.cpp and xgrammar read it, or in Lark's syntax.
 * The grammar describes the whole completion from its rule `root` (Lark: `start`).
 *
 * Syntax:
 *   name ::= alternatives       a rule; names are letters, digits, '-' and '_'; a rule goes on over
 *                               newlines until the next `name ::=` (or the end)
 *   a b | c                     sequence and alternation; ( ... ) groups
 *   "text"                      a literal (UTF-8); "" is the empty string
 *   [a-z0-9_] [^"\\]            a character class, or its complement (any Unicode scalar value not in it)
 *   .                           any character (llama.cpp's)
 *   x?  x*  x+  x{m}  x{m,}  x{m,n}  x{,n}   repetition (counts at most 1000)
 *   # ...                       a comment to the end of the line
 * Escapes in literals and classes: \n \r \t \\ \" \' \[ \] \- \^ \/ \xHH \uHHHH \UHHHHHHHH.
 *
 * A grammar with no `::=` (outside comments) is Lark's, as vLLM tells them apart and converts it:
 *   [?!]name[.priority]: expansions      a rule (an UPPERCASE name: a terminal); alternatives may go on with
 *                                        `|` on the next lines; the rule `start` (else the first) is the root
 *   "text"  'text'  "a".."z"  /regex/    literals, a range, a regex (gen/regex.h's syntax; no flags, never empty)
 *   [x]  x?  x*  x+  x ~ n  x ~ n..m  x{m,n}  ( ... )  -> alias (ignored)
 *   %import common.NAME [-> ALIAS], %import common (A, B)   Lark's common terminals (INT, NUMBER,
 *                                        ESCAPED_STRING, WS, CNAME, ...)
 *   %ignore X ...                        X may come before every lexeme of the rules (a string, regex or
 *                                        terminal within a lowercase rule) and at the end
 *   // comments
 * Terminals are matched at every length they can take (no lexer's longest match: lark's Earley parse with
 * lexer='dynamic_complete'). Refused: templates, %declare and other directives, case-insensitive strings.
 * A rule that begins with itself (`expr ::= expr "+" term | term`) is rewritten to repeat on the right;
 * other left recursion (through another rule, a group or a rule that can be empty) is refused, naming the
 * rules. Refused with the line and column: undefined rules, a rule defined twice, no `root`, token
 * references <...>, lookahead (= ...), surrogates and code points past U+10FFFF, invalid UTF-8.
 *
 * Running it: the parse's states are the sets of rule stacks (llama.cpp's way, with shared stack tails)
 * that the bytes so far leave, each set interned when first reached and numbered 0, 1, ... (0 the
 * start), so a guide can keep per-state tables as for a regex's DFA. Moving by a byte is cached per
 * (state, byte); a regex terminal's state may both end it and go on. Every state handed out can still reach a whole match: a byte that would leave none is
 * refused (-1). */
#ifndef PB_GEN_GRAMMAR_H
#define PB_GEN_GRAMMAR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_cfg pb_cfg;

/* Compile text[0..len). A bad grammar is PB_ERR_INPUT with pb_error's detail "line L, column C: what is
 * wrong" (or naming the rules). */
pb_status pb_cfg_compile(const char *text, size_t len, pb_cfg **out);
void pb_cfg_free(pb_cfg *g); /* NULL-safe */
/* JSON mode (response_format json_object): any JSON object, nested to any depth, strings and numbers as the
 * regexes string_re and number_re, ws[0..ws_len) (a regex, may match the empty string) between tokens as a
 * JSON schema's instances have it (gen/schema.h). A bad ws is PB_ERR_INPUT. */
pb_status pb_cfg_json_object(const char *string_re, const char *number_re, const char *ws, size_t ws_len,
                             pb_cfg **out);

/* The start state (0), or -1 when the grammar matches no text. */
int32_t pb_cfg_start(const pb_cfg *g);
/* *next: the state after byte b from s, or -1 when no whole match can follow. Fails (PB_ERR_INPUT) only
 * when the parse outgrows its bounds (a state of more than 65536 stacks, more than 4M stack frames or 1M
 * states), or with PB_ERR_NOMEM. */
pb_status pb_cfg_next(pb_cfg *g, int32_t s, uint8_t b, int32_t *next);
/* Whether the bytes that led to s are a whole match. */
bool pb_cfg_accepts(const pb_cfg *g, int32_t s);
/* States made so far. */
int32_t pb_cfg_n_states(const pb_cfg *g);
/* Memory the grammar and its states hold, in bytes. */
size_t pb_cfg_bytes(const pb_cfg *g);

#endif
