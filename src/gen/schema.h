/* JSON schemas and choice lists as regular expressions (gen/regex.h), for
 * constrained decoding: the text the model writes must be a whole match.
 *
 * A schema's instances are written as JSON with the whitespace the caller
 * allows between tokens (ws: a pattern such as "[ \t\n]*" or ""),
 * object properties in the schema's order. Supported: type (a name or a
 * list), properties / required / additionalProperties (false, absent or a
 * schema for objects without properties), items / prefixItems / minItems /
 * maxItems, enum, const, anyOf / oneOf (as anyOf), allOf of one schema,
 * $ref to #/$defs/... or #/definitions/... (not recursive), string
 * minLength / maxLength / pattern / format (date, time, date-time, uuid),
 * integer minimum / maximum / exclusiveMinimum / exclusiveMaximum, and the
 * annotations (title, description, default, examples, $schema, $id,
 * $comment, deprecated, readOnly, writeOnly), which are ignored. {} or a
 * schema without type is any JSON value; objects and arrays of any content
 * nest at most PB_SCHEMA_ANY_DEPTH deep. Anything else is refused
 * (PB_ERR_INPUT naming the place: "at /properties/age: keyword 'multipleOf'
 * is not supported").
 *
 * Whitespace: ws after { [ , : and before } ] , : (so json.dumps output,
 * compact, default or indented, matches with PB_SCHEMA_WS); empty {ws} [ws].
 * Stricter than JSON Schema: properties come in the schema's order and no
 * others (additionalProperties absent counts as false beside properties);
 * strings (keys, enum, const) as json.dumps(ensure_ascii=False) writes them;
 * a pattern matches the raw characters between the quotes whole (a leading
 * ^ and trailing $ dropped); integers in plain form (an integral const or
 * enum number also as N.0); time and date-time offsets optional, fractions
 * of at most 9 digits. oneOf is taken as anyOf; numbers take no bounds;
 * integer bounds must be integers within +-1e15. The pattern is at most
 * 1 MiB (PB_ERR_INPUT beyond). */
#ifndef PB_GEN_SCHEMA_H
#define PB_GEN_SCHEMA_H

#include <cjson/cJSON.h>

#include "common/status.h"

#define PB_SCHEMA_ANY_DEPTH 5

/* The default whitespace between JSON tokens: any run of spaces, tabs and newlines, as vLLM's default
 * (xgrammar's any_whitespace). A bounded run ({0,N}) needs a DFA state per count at every place. */
#define PB_SCHEMA_WS "[ \\t\\n]*"

/* JSON strings and numbers as the instances' regexes write them. */
#define PB_SCHEMA_RX_STRING "\"(?:[^\"\\\\\\x00-\\x1f]|\\\\[\"\\\\/bfnrt]|\\\\u[0-9a-fA-F]{4})*\"" /* STR_CHAR* */
#define PB_SCHEMA_RX_NUMBER "-?(?:0|[1-9][0-9]*)(?:\\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"

/* *out (malloc'd, NUL-terminated): the regex of the schema's instances.
 * ws: the pattern between tokens (NULL: PB_SCHEMA_WS; "" for compact). */
pb_status pb_schema_regex(const cJSON *schema, const char *ws, char **out);
/* *out: one of the n strings exactly (each escaped as a literal). n >= 1;
 * each must be valid UTF-8 (else PB_ERR_INPUT naming its index). */
pb_status pb_choice_regex(const char *const *choices, int n, char **out);

#endif
